"""Train the baseline: Alpha158 features (Qlib's handler) and LightGBM (Qlib's ``LGBModel``).

:func:`train` runs the whole research path on a Qlib export: compute the features and labels of the
train, valid and test segments, fit with early stopping on valid, score valid and test, and measure
the IC of both. The result is a :class:`~trader.research.scores.TrainOutput`, the shape every strategy
produces; :mod:`trader.research.train` saves and tracks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from trader.research.qlib_runtime import init_qlib
from trader.research.scores import TrainOutput, ic_stats, require_rows, tidy_scores
from trader.strategies.alpha_baseline.features import alpha158_feature_names, build_dataset, segments_of
from trader.strategies.alpha_baseline.model import build_model, feature_importance
from trader.strategies.config import StrategyConfig, StrategyKind

#: Called with the name of each stage as it starts: ``features``, ``fit``, ``predict``.
StageCallback = Callable[[str], None]


def train(
    config: StrategyConfig,
    provider_uri: Path,
    *,
    mlflow_uri: str | None = None,
    on_stage: StageCallback | None = None,
) -> TrainOutput:
    """Fit ``config``'s LightGBM on Alpha158 over its segments and score valid and test.

    Raises :class:`~trader.research.qlib_runtime.QlibNotReadyError` without an export and
    :class:`~trader.research.scores.EmptySegmentError` when a segment has no rows.
    """
    if config.kind is not StrategyKind.ALPHA158_LGB:
        raise ValueError(f"strategy {config.name!r} is of kind {config.kind.value}, not alpha158_lgb")
    init_qlib(provider_uri, mlflow_uri=mlflow_uri)
    timings: dict[str, float] = {}
    say = on_stage or (lambda _stage: None)
    spans = segments_of(config)

    with _timed("features", timings, say):
        dataset = build_dataset(config)
        labels = dataset.prepare(["train", "valid"], col_set="label", data_key="learn")
        learn = dict(zip(("train", "valid"), labels, strict=True))
        for segment in ("train", "valid"):
            require_rows(segment, len(learn[segment]), spans[segment], config.market)

    with _timed("fit", timings, say):
        model = build_model(config.lightgbm)
        report = model.fit(dataset)

    with _timed("predict", timings, say):
        scores = {segment: model.predict(dataset, segment) for segment in ("valid", "test")}
        require_rows("test", len(scores["test"]), spans["test"], config.market)
        ic = {segment: ic_stats(scores[segment], raw_labels(dataset, segment)) for segment in scores}

    names = alpha158_feature_names()
    return TrainOutput(
        model=model,
        predictions=pl.concat([tidy_scores(scores[s], s) for s in ("valid", "test")]),
        feature_names=names,
        feature_importance=feature_importance(model, names),
        ic=ic,
        rows={"train": len(learn["train"]), "valid": len(scores["valid"]), "test": len(scores["test"])},
        timings=timings,
        extra_metrics={
            "best_iteration": float(report.best_iteration),
            "iterations": float(report.iterations),
        },
        curves=report.curves,
    )


def predict(
    model: Any,
    config: StrategyConfig,
    provider_uri: Path,
    segment: str = "test",
    *,
    mlflow_uri: str | None = None,
) -> pl.DataFrame:
    """Score ``segment`` of ``config`` with a fitted (e.g. reloaded) ``model``; a predictions table.

    Recomputes the features through Qlib, so it reproduces what :func:`train` scored.
    """
    init_qlib(provider_uri, mlflow_uri=mlflow_uri)
    dataset = build_dataset(config)
    return tidy_scores(model.predict(dataset, segment), segment)


def raw_labels(dataset: Any, segment: str) -> pd.Series:
    """The unprocessed label (next-but-one session's return) of ``segment``, NaN where unknown."""
    frame = dataset.prepare(segment, col_set="label", data_key="raw")
    return frame.iloc[:, 0]


@contextmanager
def _timed(stage: str, timings: dict[str, float], say: StageCallback) -> Iterator[None]:
    say(stage)
    began = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - began
