"""The shapes of bar, corporate-action and listing tables shared by every stage of the data layer.

Every stage takes and returns Polars DataFrames with exactly these columns and types, so a stage can
be tested on a hand-made frame and sources can be swapped behind :class:`~trader.data.sources.BarSource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

PRICE_COLUMNS = ("open", "high", "low", "close")
KEY = ("symbol", "date")


def bar_checks(extra: tuple[str, ...] = ()) -> list[tuple[str, pl.Expr]]:
    """The quality gate's row rules 1-4, in order, as ``(rule, condition that breaks it)``.

    Shared by the gate and by the adjuster (which must not take a dividend's previous close from a
    bar the gate will refuse). ``extra``: more numeric columns that must be present and finite (the
    adjusted bars' ``factor``).
    """
    low, high = pl.col("low"), pl.col("high")
    required = ("symbol", "date", *PRICE_COLUMNS, "volume", *extra)
    numbers = (*PRICE_COLUMNS, "volume", *extra)
    return [
        (
            "missing_value",
            pl.any_horizontal(
                *(pl.col(name).is_null() for name in required),
                *(~pl.col(name).is_finite() for name in numbers),
            ),
        ),
        ("non_positive_price", pl.any_horizontal(*(pl.col(name) <= 0 for name in PRICE_COLUMNS))),
        ("negative_volume", pl.col("volume") < 0),
        (
            "ohlc_inconsistent",
            (low > high)
            | (low > pl.min_horizontal("open", "close"))
            | (high < pl.max_horizontal("open", "close")),
        ),
    ]


def sound_bar() -> pl.Expr:
    """True for a bar that passes the row rules 1-4 (:func:`bar_checks`)."""
    return ~pl.any_horizontal(*(condition for _, condition in bar_checks())).fill_null(True)


#: A bar as a source delivers it: raw (unadjusted) daily prices, in the source's own words.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

#: A raw bar as recorded: the source's row plus which source supplied it and when we received it.
RAW_BAR_SCHEMA: dict[str, pl.DataType] = {
    **BAR_SCHEMA,
    "source": pl.String(),
    "ingested_at": pl.Datetime("us", "UTC"),
}

#: A back-adjusted bar. ``factor`` = adjusted price / raw price (Qlib's convention), 1.0 after the last
#: corporate action; volume is adjusted for splits only (``volume_raw * split ratios after the bar``).
ADJ_BAR_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
    "factor": pl.Float64(),
    "source": pl.String(),
}

#: Corporate actions: a 2-for-1 split has ``split_ratio`` 2.0 (1.0 = no split), a cash dividend is
#: per share in dollars on the ex-date (0.0 = none). One row per symbol and ex-date.
ACTION_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ex_date": pl.Date(),
    "split_ratio": pl.Float64(),
    "cash_dividend": pl.Float64(),
    "source": pl.String(),
}

#: Point-in-time listing of a symbol: listed from ``start_date`` to ``end_date`` (null = still listed).
LISTING_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "start_date": pl.Date(),
    "end_date": pl.Date(),
    "tradable": pl.Boolean(),
    "sector": pl.String(),
}

#: A row the quality gate refused: the row's key, the rule it broke, a readable reason, the row itself.
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "source": pl.String(),
    "rule": pl.String(),
    "reason": pl.String(),
    "payload": pl.String(),  # the offending row as JSON, so nothing is lost
}


def listing_spans(listings: pl.DataFrame) -> pl.DataFrame:
    """One row per symbol of ``listings`` (:data:`LISTING_SCHEMA`): ``symbol, listed_from, listed_until``.

    ``listed_from`` is the earliest start; ``listed_until`` the latest end, or null when any listing
    row of the symbol is open-ended (still listed wins over an older end date).
    """
    return listings.group_by("symbol").agg(
        pl.col("start_date").min().alias("listed_from"),
        pl.when(pl.col("end_date").is_null().any())
        .then(pl.lit(None, pl.Date))
        .otherwise(pl.col("end_date").max())
        .alias("listed_until"),
    )


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)


def conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select and cast ``frame`` to ``schema``'s columns, in order; missing columns are an error."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; expected {list(schema)}")
    return frame.select(pl.col(name).cast(dtype, strict=True) for name, dtype in schema.items())


@dataclass
class BarBatch:
    """What a source delivers for one request: bars, the corporate actions it knows, listings."""

    bars: pl.DataFrame
    actions: pl.DataFrame = field(default_factory=lambda: empty(ACTION_SCHEMA))
    listings: pl.DataFrame = field(default_factory=lambda: empty(LISTING_SCHEMA))
