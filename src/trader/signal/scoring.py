"""Scoring one trading date from the adjusted store with a registered model, fast enough for live use.

A signal for trading date ``D`` is computed from the bars up to the previous session's close
(``as_of``), as the research backtest does: Qlib's strategies trade on day ``t + 1`` the scores of
day ``t``. Two scorers, one per strategy kind:

- :class:`Alpha158Scorer`: the Polars implementation of Alpha158 (proven equal to Qlib's) on the last
  60 sessions, then the trained LightGBM booster;
- :class:`MomentumScorer`: the past return ``close(t - skip) / close(t - skip - lookback) - 1`` on the
  session grid (a symbol without a bar on either session gets no score, as in research).

Each returns the scores and a hash of exactly what went into them, so a replay can prove it saw the
same inputs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import numpy as np
import polars as pl

from trader.data.calendar import TradingCalendar
from trader.data.paths import DataPaths
from trader.data.store import AdjustedStore
from trader.errors import TraderError
from trader.research.artifacts import ModelArtifact
from trader.signal.publish import hash_inputs
from trader.strategies.config import StrategyKind


class ScoringError(TraderError):
    """The model or the data cannot produce scores for the date asked."""


@dataclass(frozen=True)
class Scores:
    """Scores by symbol, and the hash of the inputs (features and model) that produced them."""

    as_of: date
    values: dict[str, float]
    inputs_hash: str


class Scorer(Protocol):
    def score(self, paths: DataPaths, as_of: date) -> Scores:
        """Scores for every symbol with data on ``as_of`` (a session)."""
        ...


def _frame_digest(frame: pl.DataFrame) -> str:
    """SHA-256 of a frame's exact values: column names and order, every value's bits (nulls as NaN)."""
    digest = hashlib.sha256()
    for name in frame.columns:
        column = frame.get_column(name)
        digest.update(name.encode() + b"\0")
        if column.dtype.is_numeric():
            digest.update(column.cast(pl.Float64).fill_null(float("nan")).to_numpy().tobytes())
        else:
            digest.update("\0".join(str(value) for value in column.to_list()).encode())
    return digest.hexdigest()


class Alpha158Scorer:
    """Alpha158 features (Polars) → the artifact's LightGBM booster."""

    def __init__(self, artifact: ModelArtifact, calendar: TradingCalendar) -> None:
        from trader.strategies.alpha_baseline.features import alpha158_feature_config

        self._artifact = artifact
        self._calendar = calendar
        self._names = alpha158_feature_config()[1]
        model = artifact.load_model()
        booster: Any = getattr(model, "model", None)
        if booster is None:
            raise ScoringError(f"model {artifact.name} {artifact.version} has no fitted booster")
        self._booster = booster

    def score(self, paths: DataPaths, as_of: date) -> Scores:
        from trader.strategies.alpha_baseline.alpha158_polars import alpha158_latest_from_store

        features = alpha158_latest_from_store(paths, as_of).sort("symbol")
        if features.is_empty():
            raise ScoringError(f"no bars on {as_of} in {paths.adjusted_bars}: nothing to score")
        missing = [name for name in self._names if name not in features.columns]
        if missing:
            raise ScoringError(f"feature set lacks {missing[:5]}: the model and the features disagree")
        matrix = features.select(self._names).to_numpy().astype(np.float32)
        predictions = self._booster.predict(matrix)
        symbols = features.get_column("symbol").to_list()
        values = {s: float(p) for s, p in zip(symbols, predictions, strict=True) if np.isfinite(p)}
        digest = _frame_digest(features)
        return Scores(as_of, values, hash_inputs(self._artifact.version, digest))


class MomentumScorer:
    """Past return over ``lookback`` sessions ending ``skip`` sessions before ``as_of``."""

    def __init__(self, artifact: ModelArtifact, calendar: TradingCalendar) -> None:
        params = artifact.config().momentum
        self._lookback, self._skip = params.lookback, params.skip
        self._artifact = artifact
        self._calendar = calendar

    def _session_back(self, day: date, count: int) -> date:
        for _ in range(count):
            day = self._calendar.previous_session(day)
        return day

    def score(self, paths: DataPaths, as_of: date) -> Scores:
        end = self._session_back(as_of, self._skip)
        start = self._session_back(end, self._lookback)
        bars = AdjustedStore(paths).read(start=start, end=end).filter(pl.col("date").is_in([start, end]))
        closes = bars.pivot(on="date", index="symbol", values="close", aggregate_function="first")
        if closes.is_empty() or str(start) not in closes.columns or str(end) not in closes.columns:
            raise ScoringError(f"no closes on {start} and {end} in {paths.adjusted_bars}: nothing to score")
        scored = closes.select(
            "symbol", (pl.col(str(end)) / pl.col(str(start)) - 1.0).alias("score")
        ).filter(pl.col("score").is_finite()).sort("symbol")  # fmt: skip
        values = dict(
            zip(scored.get_column("symbol").to_list(), scored.get_column("score").to_list(), strict=True)
        )
        return Scores(
            as_of, values, hash_inputs(self._artifact.version, _frame_digest(bars.sort("symbol", "date")))
        )


def scorer_for(artifact: ModelArtifact, calendar: TradingCalendar) -> Scorer:
    """The scorer of the artifact's strategy kind."""
    kind = StrategyKind(artifact.kind)
    if kind is StrategyKind.ALPHA158_LGB:
        return Alpha158Scorer(artifact, calendar)
    return MomentumScorer(artifact, calendar)
