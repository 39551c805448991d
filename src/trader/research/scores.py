"""What every strategy's training produces, in one shape: scores per (date, symbol) and their quality.

Both strategies (:mod:`trader.strategies.alpha_baseline.pipeline`,
:mod:`trader.strategies.momentum.strategy`) return a :class:`TrainOutput`; the use case
(:mod:`trader.research.train`) saves it as a :class:`~trader.research.artifacts.ModelArtifact` and
tracks it in MLflow, so the backtest and the registry treat every strategy alike.

Scores leave Qlib as a pandas Series indexed ``(datetime, instrument)``; :func:`tidy_scores` turns
them into the table the rest of the system reads: ``date`` (Date), ``symbol`` (Utf8), ``score``
(Float64), ``segment`` (Utf8).

The information coefficient (IC) of a segment is the mean over its sessions of the cross-sectional
Pearson correlation between the score of date t and the label of date t (the return from t+1 to t+2,
Alpha158's label); the rank IC uses Spearman's correlation; ICIR is mean / standard deviation of the
daily values. Sessions with fewer than two scored symbols, or a constant score or label, have no IC.
One implementation serves training and the backtest: :func:`ic_stats` wraps
:func:`trader.research.metrics.signal_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from trader.errors import TraderError
from trader.research.metrics import signal_metrics

#: The columns of a predictions table, in order.
PREDICTION_SCHEMA = pl.Schema(
    {
        "date": pl.Date,
        "symbol": pl.Utf8,
        "score": pl.Float64,
        "segment": pl.Utf8,
    }
)
#: Segments whose scores are kept: valid (model selection) and test (backtest, out of sample).
SCORED_SEGMENTS = ("valid", "test")


class TrainError(TraderError):
    """A strategy cannot be trained with these settings on this data (the message says which setting)."""

    exit_code = 2


class EmptySegmentError(TrainError):
    """A date segment holds no rows of the export (no listed symbol has data in it)."""


@dataclass(frozen=True)
class ICStats:
    """IC of one segment (see the module docstring); NaN when no session has an IC."""

    ic: float
    rank_ic: float
    icir: float
    rank_icir: float
    days: int

    def as_dict(self) -> dict[str, float]:
        return {"ic": self.ic, "rank_ic": self.rank_ic, "icir": self.icir, "rank_icir": self.rank_icir}


@dataclass
class TrainOutput:
    """What a strategy's training produced, before it is saved and tracked.

    ``predictions`` follows :data:`PREDICTION_SCHEMA` (valid and test segments). ``model`` is the
    fitted object to pickle, or ``None`` for a model-free strategy. ``rows`` counts the rows each
    segment contributed (train: rows fitted on; valid, test: rows scored). ``extra_metrics`` are
    strategy-specific numbers (best iteration, ...) tracked in MLflow and saved with the artifact;
    ``curves`` are per-iteration metrics (``name -> values``) tracked with their step.
    """

    model: Any | None
    predictions: pl.DataFrame
    feature_names: list[str]
    feature_importance: dict[str, float]
    ic: dict[str, ICStats]
    rows: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    extra_metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)


def tidy_scores(scores: pd.Series, segment: str) -> pl.DataFrame:
    """Qlib's ``(datetime, instrument)``-indexed scores as a :data:`PREDICTION_SCHEMA` table, sorted."""
    frame = scores.rename("score").reset_index()
    dates, symbols = frame.columns[0], frame.columns[1]
    return (
        pl.DataFrame(
            {
                "date": pd.to_datetime(frame[dates]).to_numpy(dtype="datetime64[ns]"),
                "symbol": frame[symbols].astype(str).to_numpy(),
                "score": frame["score"].to_numpy(dtype=np.float64),
            }
        )
        .with_columns(pl.col("date").cast(pl.Date), pl.lit(segment, dtype=pl.Utf8).alias("segment"))
        .select(list(PREDICTION_SCHEMA))
        .sort("date", "symbol")
    )


def require_rows(segment: str, rows: int, span: tuple[str, str], market: str) -> None:
    """Raise :class:`EmptySegmentError` naming the segment when it has no rows."""
    if rows == 0:
        raise EmptySegmentError(
            f"segments.{segment} ({span[0]} .. {span[1]}) has no rows in the export for market "
            f"{market!r}; choose dates with data (--{segment}-start/--{segment}-end)"
        )


def ic_stats(scores: pd.Series, labels: pd.Series) -> ICStats:
    """IC, rank IC and their IRs of ``scores`` against ``labels`` (both indexed ``(datetime, instrument)``).

    Rows where either is missing are ignored. The computation is the backtest's
    (:func:`trader.research.metrics.signal_metrics`), so training and backtest report the same IC.
    """
    stats = signal_metrics(scores, labels)
    return ICStats(
        ic=stats["ic"],
        rank_ic=stats["rank_ic"],
        icir=stats["icir"],
        rank_icir=stats["rank_icir"],
        days=int(stats["ic_days"]),
    )
