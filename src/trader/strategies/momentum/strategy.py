"""Model-free momentum: the score of (t, symbol) is its past return, computed by Qlib's expressions.

``score = close(t - skip) / close(t - skip - lookback) - 1`` in sessions of the export's calendar
(Qlib's ``Ref``), on back-adjusted closes, so splits and dividends do not show as returns. There is
nothing to fit: :func:`train` computes the scores of the valid and test segments (and counts the
train segment's rows) and their IC against Alpha158's label, and returns the same
:class:`~trader.research.scores.TrainOutput` as the LightGBM baseline, without a model. A (date,
symbol) whose lookback reaches before the symbol's first bar, or onto a session without a bar, has
no score and is left out of the predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl

from trader.research.qlib_runtime import init_qlib
from trader.research.scores import TrainOutput, ic_stats, require_rows, tidy_scores
from trader.strategies.config import LABEL_EXPRESSION, MomentumParams, StrategyConfig, StrategyKind

#: The one feature of this strategy.
FEATURE_NAME = "MOMENTUM"


def momentum_expression(params: MomentumParams) -> str:
    """Qlib's expression of the score for ``params`` (``$close/Ref($close, 20) - 1`` by default)."""
    recent = "$close" if params.skip == 0 else f"Ref($close, {params.skip})"
    return f"{recent}/Ref($close, {params.skip + params.lookback}) - 1"


def compute_scores(config: StrategyConfig, start: str, end: str) -> pd.DataFrame:
    """``score`` and ``label`` per (datetime, instrument) of ``config``'s market from start to end.

    Qlib must be initialised. Qlib reads the history a window needs before ``start`` by itself.
    """
    from qlib.data import D

    frame = D.features(
        D.instruments(config.market),
        [momentum_expression(config.momentum), LABEL_EXPRESSION],
        start_time=start,
        end_time=end,
        freq="day",
    )
    frame.columns = ["score", "label"]
    # Qlib returns (instrument, datetime); the rest of the system reads (datetime, instrument).
    return frame.swaplevel().sort_index().astype("float64")


def train(
    config: StrategyConfig,
    provider_uri: Path,
    *,
    mlflow_uri: str | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> TrainOutput:
    """Scores of the valid and test segments (training is a no-op); same shape as the baseline's."""
    if config.kind is not StrategyKind.MOMENTUM:
        raise ValueError(f"strategy {config.name!r} is of kind {config.kind.value}, not momentum")
    init_qlib(provider_uri, mlflow_uri=mlflow_uri)
    say = on_stage or (lambda _stage: None)
    timings: dict[str, float] = {}
    segments = {"train": config.segments.train, "valid": config.segments.valid, "test": config.segments.test}

    say("features")
    began = time.perf_counter()
    every = compute_scores(config, segments["train"].start.isoformat(), segments["test"].end.isoformat())
    every = every[every["score"].notna()]
    days = every.index.get_level_values(0)
    frames: dict[str, pd.DataFrame] = {}
    for name, span in segments.items():
        frames[name] = every[(days >= pd.Timestamp(span.start)) & (days <= pd.Timestamp(span.end))]
        require_rows(name, len(frames[name]), span.as_tuple(), config.market)
    timings["features"] = time.perf_counter() - began

    say("predict")
    began = time.perf_counter()
    scored = ("valid", "test")
    ic = {name: ic_stats(frames[name]["score"], frames[name]["label"]) for name in scored}
    predictions = pl.concat([tidy_scores(frames[name]["score"], name) for name in scored])
    timings["predict"] = time.perf_counter() - began

    return TrainOutput(
        model=None,
        predictions=predictions,
        feature_names=[FEATURE_NAME],
        feature_importance={},
        ic=ic,
        rows={name: len(frame) for name, frame in frames.items()},
        timings=timings,
        extra_metrics={"lookback": float(config.momentum.lookback), "skip": float(config.momentum.skip)},
    )
