"""``trader data status``: what the data store holds and whether it is fresh enough to trade on.

Per symbol: listing, first and newest clean bar, clean bars, gaps (missing sessions inside the
listing), rows still quarantined (a refused bar that a later delivery replaced with a clean one no
longer counts), and a freshness verdict judged against the exchange calendar (a delisted symbol is
measured against its last listed session). For the whole store: rows still quarantined, by rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

from trader.data.bars import ADJ_BAR_SCHEMA, QUARANTINE_SCHEMA, listing_spans
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import stale_symbols
from trader.data.paths import DataPaths
from trader.data.raw import RawRecorder
from trader.data.store import AdjustedStore, GapStore, QuarantineStore, UniverseStore, scan

#: One row per symbol of :attr:`DataStatus.symbols`.
SYMBOL_STATUS_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "listed_from": pl.Date(),
    "listed_until": pl.Date(),
    "first_bar": pl.Date(),
    "last_bar": pl.Date(),
    "bars": pl.Int64(),
    "gaps": pl.Int64(),
    "quarantined": pl.Int64(),
    "sessions_behind": pl.Int64(),
    "verdict": pl.String(),
}


@dataclass(frozen=True)
class DataStatus:
    """The state of one ``DATA_DIR`` as of a moment."""

    as_of: datetime
    last_closed_session: date
    raw_rows: int
    symbols: pl.DataFrame  # SYMBOL_STATUS_SCHEMA, sorted by symbol
    quarantine_by_rule: dict[str, int]

    @property
    def empty(self) -> bool:
        """True when no clean bar is stored: there is nothing to trade on."""
        return self.symbols.filter(pl.col("bars") > 0).is_empty()

    @property
    def stale(self) -> list[str]:
        """Symbols whose newest clean bar is behind the calendar (or that have none)."""
        behind = (pl.col("sessions_behind") > 0) | (pl.col("bars") == 0)
        return self.symbols.filter(behind).get_column("symbol").to_list()


def data_status(
    paths: DataPaths,
    as_of: datetime,
    symbols: Sequence[str] | None = None,
    calendar: TradingCalendar | None = None,
) -> DataStatus:
    """Summarise the stores under ``paths`` at ``as_of`` (timezone-aware), optionally for ``symbols``."""
    calendar = calendar or trading_calendar()
    wanted = None if symbols is None else [s.upper() for s in symbols]
    adjusted = AdjustedStore(paths)
    coverage = _coverage(adjusted, wanted)
    listings = UniverseStore(paths).read()
    quarantine = _still_quarantined(QuarantineStore(paths), adjusted)
    gaps = GapStore(paths).read()
    if wanted is not None:
        listings, quarantine, gaps = (
            frame.filter(pl.col("symbol").is_in(wanted)) for frame in (listings, quarantine, gaps)
        )

    names = pl.concat(
        [coverage.select("symbol"), listings.select("symbol"), quarantine.select("symbol").drop_nulls()]
    ).unique()
    listed = listing_spans(listings)
    stale = stale_symbols(
        coverage.select("symbol", pl.col("last_bar").alias("date")), as_of, calendar, listings=listings
    )
    table = (
        names.join(listed, on="symbol", how="left")
        .join(coverage, on="symbol", how="left")
        .join(_count(gaps, "gaps"), on="symbol", how="left")
        .join(_count(quarantine, "quarantined"), on="symbol", how="left")
        .join(stale.select("symbol", "sessions_behind"), on="symbol", how="left")
        .with_columns(
            pl.col("bars", "gaps", "quarantined", "sessions_behind").fill_null(0).cast(pl.Int64),
        )
        .with_columns(verdict=_verdict(calendar.last_closed_session(as_of)))
        .select(*SYMBOL_STATUS_SCHEMA)
        .sort("symbol")
    )
    return DataStatus(
        as_of=as_of,
        last_closed_session=calendar.last_closed_session(as_of),
        raw_rows=_raw_rows(paths),
        symbols=table,
        quarantine_by_rule=_by_rule(quarantine),
    )


def _coverage(store: AdjustedStore, symbols: list[str] | None) -> pl.DataFrame:
    lazy = scan(store.files(), ADJ_BAR_SCHEMA)
    if symbols is not None:
        lazy = lazy.filter(pl.col("symbol").is_in(symbols))
    return (
        lazy.group_by("symbol")
        .agg(
            pl.col("date").min().alias("first_bar"),
            pl.col("date").max().alias("last_bar"),
            pl.len().cast(pl.Int64).alias("bars"),
        )
        .collect()
    )


def _still_quarantined(quarantine: QuarantineStore, adjusted: AdjustedStore) -> pl.DataFrame:
    """Quarantined rows whose (symbol, date) has no clean bar now.

    Quarantine is an append-only record: a bar refused once stays in it after a later delivery of
    the same day passed the gate. Such a row no longer keeps anything out of the adjusted store, so
    it is not counted; a row without a symbol or date cannot have a clean twin and always counts.
    A ``duplicate`` row always counts too: it is an identical repeat of a bar whose first copy was
    kept clean, so a clean row for its day is what it looks like while it is still current.
    """
    refused = scan(quarantine.files(), QUARANTINE_SCHEMA)
    clean = scan(adjusted.files(), ADJ_BAR_SCHEMA).select("symbol", "date").unique()
    repeat = pl.col("rule").eq_missing("duplicate")
    others = refused.filter(~repeat).join(clean, on=["symbol", "date"], how="anti")
    repeats = refused.filter(repeat)
    return pl.concat([others, repeats]).collect()


def _count(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    return frame.drop_nulls("symbol").group_by("symbol").agg(pl.len().cast(pl.Int64).alias(name))


def _verdict(last_closed: date) -> pl.Expr:
    behind = pl.col("sessions_behind")
    ended = pl.col("listed_until")
    return (
        pl.when(pl.col("bars") == 0)
        .then(pl.lit("no bars"))
        .when(behind > 0)
        .then(pl.format("stale ({} behind)", behind))
        .when(ended.is_not_null() & (ended <= last_closed))
        .then(pl.format("delisted {}", ended))
        .otherwise(pl.lit("fresh"))
    )


def _by_rule(quarantine: pl.DataFrame) -> dict[str, int]:
    counts = quarantine.group_by("rule").len().sort("len", "rule", descending=[True, False])
    return {str(rule): int(n) for rule, n in counts.iter_rows()}


def _raw_rows(paths: DataPaths) -> int:
    files = RawRecorder(paths).files()
    if not files:
        return 0
    return int(pl.scan_parquet(files).select(pl.len()).collect().item())


def render_status(status: DataStatus, console: Console, limit: int | None = None) -> None:
    """Print the per-symbol table (stale symbols first when ``limit`` cuts it) and the summary."""
    rows = status.symbols
    if limit is not None and rows.height > limit:
        fine = (pl.col("sessions_behind") == 0) & (pl.col("bars") > 0)
        rows = rows.sort(fine, "symbol").head(limit)
    table = Table(
        title=f"Data status as of {status.as_of:%Y-%m-%d %H:%M %Z}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("symbol", "first bar", "last bar", "bars", "gaps", "quar.", "freshness"):
        numeric = column in {"bars", "gaps", "quar."}
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row in rows.iter_rows(named=True):
        table.add_row(
            row["symbol"],
            str(row["first_bar"] or "-"),
            str(row["last_bar"] or "-"),
            f"{row['bars']:,}",
            f"{row['gaps']:,}",
            f"{row['quarantined']:,}",
            row["verdict"],
            style="yellow" if row["sessions_behind"] or not row["bars"] else "",
        )
    console.print(table)
    if rows.height < status.symbols.height:
        console.print(
            f"... {status.symbols.height - rows.height} more symbol(s); use --all to list every one"
        )

    stale = status.stale
    rules = ", ".join(f"{rule} {n:,}" for rule, n in status.quarantine_by_rule.items()) or "none"
    console.print(
        f"symbols: {status.symbols.height}   clean bars: {int(status.symbols['bars'].sum()):,}   "
        f"raw rows: {status.raw_rows:,}   last closed session: {status.last_closed_session}"
    )
    console.print(f"quarantined by rule: {rules}")
    if status.empty:
        console.print("no clean bars stored: run `trader data synth` or `trader data ingest` first")
    elif stale:
        preview = ", ".join(stale[:10]) + (f" and {len(stale) - 10} more" if len(stale) > 10 else "")
        console.print(f"freshness: STALE for {len(stale)} symbol(s): {preview}")
    else:
        console.print("freshness: every symbol is fresh")
