"""The session grid Alpha158 is computed on: one row per symbol and session, as Qlib sees the data.

Qlib reads a symbol's fields as one value per calendar session from its first bar to its last, NaN
in a session without a bar (a halt, a missing day, a bar the quality gate refused), and computes
every rolling window over those sessions: a window of 5 is the last 5 *sessions*, not the last 5
bars. The grid reproduces that: every session in each symbol's span, a null row where there is no
bar, and ``PADDING`` null rows before the span so that looking back (``shift``) never reaches the
previous symbol's rows.

Values are float32, as Qlib stores and reads them; ``vwap`` is derived from the float64 bars before
the cast, exactly as :mod:`trader.research.qlib_export` writes ``$vwap``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from trader.errors import TraderError
from trader.strategies.alpha_baseline.alpha158_spec import HISTORY_SESSIONS

#: Columns the input bars must have (``factor`` and others are ignored: Alpha158 does not use them).
REQUIRED = ("symbol", "date", "open", "high", "low", "close", "volume")
PRICE_FIELDS = ("open", "high", "low", "close", "volume")
#: Null rows before each symbol's span: at least the longest look-back of any feature.
PADDING = HISTORY_SESSIONS
SLOT = "_slot"
IN_SPAN = "_in"


class Alpha158InputError(TraderError):
    """The bars or the day given to the Alpha158 features cannot be used as they are."""

    exit_code = 2


def as_frame(bars: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The columns Alpha158 needs, checked: present, one bar per (symbol, date), float64 prices."""
    names = bars.collect_schema().names()
    missing = [column for column in REQUIRED if column not in names]
    if missing:
        raise Alpha158InputError(
            f"bars lack the column(s) {missing}; Alpha158 needs {list(REQUIRED)} (adjusted bars)"
        )
    lazy = bars.lazy().select(
        pl.col("symbol").cast(pl.String),
        pl.col("date").cast(pl.Date),
        *(pl.col(field).cast(pl.Float64) for field in PRICE_FIELDS),
    )
    frame = lazy.collect()
    if frame.select(pl.col("symbol").is_null().any() | pl.col("date").is_null().any()).item():
        raise Alpha158InputError("bars have a null symbol or date; every bar needs both")
    if frame.select(pl.struct("symbol", "date").is_duplicated().any()).item():
        raise Alpha158InputError("bars hold more than one row for a (symbol, date); keep one bar per day")
    return frame


def session_series(sessions: Sequence[date] | pl.Series) -> pl.Series:
    """``sessions`` as a sorted, unique Polars ``Date`` series."""
    series = pl.Series("date", sessions, dtype=pl.Date) if not isinstance(sessions, pl.Series) else sessions
    return series.cast(pl.Date).alias("date").unique().sort()


def with_slots(bars: pl.DataFrame, sessions: pl.Series) -> pl.DataFrame:
    """``bars`` with ``_slot``, the index of its date in ``sessions``; refuses dates not in it."""
    slots = pl.DataFrame({"date": sessions, SLOT: pl.int_range(sessions.len(), dtype=pl.Int64, eager=True)})
    slotted = bars.join(slots, on="date", how="left")
    off = slotted.filter(pl.col(SLOT).is_null())
    if not off.is_empty():
        example = off.select("symbol", "date").head(3).rows()
        raise Alpha158InputError(
            f"{off.height} bar(s) fall on days that are not sessions of the calendar, e.g. {example}; "
            "pass the exchange's sessions (sessions=...) or drop those bars"
        )
    return slotted


def spans(slotted: pl.DataFrame) -> pl.DataFrame:
    """Per symbol, the slots of its first and last bar (``_first``, ``_last``)."""
    return slotted.group_by("symbol").agg(
        pl.col(SLOT).min().alias("_first"), pl.col(SLOT).max().alias("_last")
    )


def build_grid(slotted: pl.DataFrame, ranges: pl.DataFrame) -> pl.DataFrame:
    """The grid of the rows ``ranges`` asks for, sorted by symbol and slot.

    ``ranges`` has ``symbol``, ``_from`` (first row's slot: padding starts there), ``_start`` (first
    slot of the span) and ``_end`` (last slot). Columns: ``symbol``, ``_slot``, ``_in`` (the row is
    in the span, not padding) and the float32 fields ``open high low close volume vwap`` (null where
    there is no bar).
    """
    rows = (
        ranges.sort("symbol")
        .select("symbol", "_start", pl.int_ranges("_from", pl.col("_end") + 1, dtype=pl.Int64).alias(SLOT))
        .explode(SLOT)
    )
    fields = slotted.select(
        "symbol",
        SLOT,
        *(pl.col(field).fill_nan(None).cast(pl.Float32) for field in PRICE_FIELDS),
        # Qlib's $vwap as the exporter writes it: the typical price of the float64 bar, then float32.
        ((pl.col("high") + pl.col("low") + pl.col("close")) / 3.0)
        .fill_nan(None)
        .cast(pl.Float32)
        .alias("vwap"),
    )
    grid = rows.join(fields, on=["symbol", SLOT], how="left", maintain_order="left")
    return grid.with_columns((pl.col(SLOT) >= pl.col("_start")).alias(IN_SPAN)).drop("_start")
