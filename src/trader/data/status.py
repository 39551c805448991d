"""``trader data status``: what the data store holds and whether it is fresh enough to trade on.

Per symbol: listing, first and newest clean bar, clean bars, gaps (missing sessions inside the
listing), rows still quarantined (a refused bar that a later delivery replaced with a clean one no
longer counts), and a freshness verdict judged against the exchange calendar (a delisted symbol is
measured against its last listed session). For the whole store: rows still quarantined, by rule,
and the corporate actions that look wrong (:func:`suspect_actions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import polars as pl
from rich import box
from rich.console import Console
from rich.table import Table

from trader.data.bars import ADJ_BAR_SCHEMA, QUARANTINE_SCHEMA, empty, listing_spans
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import stale_symbols
from trader.data.paths import DataPaths
from trader.data.quality import GateConfig
from trader.data.raw import RawRecorder
from trader.data.store import (
    ActionStore,
    AdjustedStore,
    GapStore,
    QuarantineStore,
    UniverseStore,
    scan,
)

#: The quality gate's default outlier threshold (``GateConfig.outlier_threshold``, 0.30 = 30 %).
DEFAULT_OUTLIER_THRESHOLD: float = GateConfig().outlier_threshold

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

#: One row per suspect corporate action of :attr:`DataStatus.suspect_actions` (see
#: :func:`suspect_actions`). ``prev_*`` is the last clean bar before the ex-date, ``next_*`` the
#: first clean bar on or after it; ``adj_return`` is ``next_close / prev_close - 1`` (null when
#: either bar is missing); ``outliers`` counts the bars quarantined as outliers between the two.
SUSPECT_ACTION_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ex_date": pl.Date(),
    "split_ratio": pl.Float64(),
    "cash_dividend": pl.Float64(),
    "prev_date": pl.Date(),
    "prev_close": pl.Float64(),
    "next_date": pl.Date(),
    "next_close": pl.Float64(),
    "adj_return": pl.Float64(),
    "outliers": pl.Int64(),
    "reason": pl.String(),
    "hint": pl.String(),
}

#: What to do about a suspect corporate action.
SUSPECT_HINT = (
    "the ex-date or the ratio may be wrong: check the action, fix the actions file and ingest again"
)


@dataclass(frozen=True)
class DataStatus:
    """The state of one ``DATA_DIR`` as of a moment."""

    as_of: datetime
    last_closed_session: date
    raw_rows: int
    symbols: pl.DataFrame  # SYMBOL_STATUS_SCHEMA, sorted by symbol
    quarantine_by_rule: dict[str, int]
    #: Corporate actions that look wrong (:data:`SUSPECT_ACTION_SCHEMA`, sorted by symbol and ex_date).
    suspect_actions: pl.DataFrame = field(default_factory=lambda: empty(SUSPECT_ACTION_SCHEMA))

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
    threshold: float = DEFAULT_OUTLIER_THRESHOLD,
) -> DataStatus:
    """Summarise the stores under ``paths`` at ``as_of`` (timezone-aware), optionally for ``symbols``.

    ``threshold`` is the quality gate's outlier threshold (``DATA_OUTLIER_THRESHOLD``): a corporate
    action across which the adjusted return is still beyond it is reported as suspect
    (:func:`suspect_actions`).
    """
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
        suspect_actions=suspect_actions(
            scan(adjusted.files(), ADJ_BAR_SCHEMA),
            ActionStore(paths).read(wanted),
            threshold,
            quarantined=quarantine.filter(pl.col("rule") == "outlier"),
        ),
    )


def suspect_actions(
    clean_bars: pl.DataFrame | pl.LazyFrame,
    actions: pl.DataFrame,
    threshold: float = DEFAULT_OUTLIER_THRESHOLD,
    *,
    quarantined: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The corporate actions in ``actions`` that look wrong, as :data:`SUSPECT_ACTION_SCHEMA`.

    ``clean_bars`` are adjusted bars that passed the quality gate (``symbol, date, close`` are used;
    the adjustment for ``actions`` is already in them), ``actions`` has
    :data:`~trader.data.bars.ACTION_SCHEMA`'s ``symbol, ex_date, split_ratio, cash_dividend``.

    The gate excuses any return across a recorded action, so a wrong action is never quarantined.
    But a correct split or dividend leaves a small adjusted return from the last clean bar before
    its ex-date to the first clean bar on or after it; an action is suspect when that return is
    still beyond ``threshold`` in absolute value (a split dated a day early: the real jump is one
    bar later, now quarantined, and the bar on the wrong ex-date is left at the unadjusted level;
    an inverted ratio: history scaled by ratio squared). With ``quarantined`` (``symbol, date`` of
    bars still quarantined as outliers) an action is also suspect when such a bar lies between
    those two clean bars (a split dated a day late: the real ex-date's bar is quarantined as a
    spike and the return across the recorded ex-date looks fine).

    Rows that change nothing (split 1, no dividend) are ignored, an absent split or dividend counts
    as none, and an action without a clean bar before it or without one after it has no return.
    Several actions between the same two bars share one return. A genuine move beyond
    ``threshold`` on an ex-date is reported too: the result is a list to check, not a verdict.
    Sorted by symbol and ex_date.
    """
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    events = (
        actions.select(
            pl.col("symbol").cast(pl.String),
            pl.col("ex_date").cast(pl.Date),
            pl.col("split_ratio").cast(pl.Float64).fill_null(1.0),
            pl.col("cash_dividend").cast(pl.Float64).fill_null(0.0),
        )
        .drop_nulls(["symbol", "ex_date"])
        .filter((pl.col("split_ratio") != 1.0) | (pl.col("cash_dividend") != 0.0))
        .sort("symbol", "ex_date")
    )
    if events.is_empty():
        return empty(SUSPECT_ACTION_SCHEMA)
    # One sorted integer key per bar, (symbol, date), over the symbols with actions only: sorting one
    # integer column is several times faster than sorting by a string and a date, and a binary search
    # of that column finds each action's neighbours at once (no join over the whole store).
    symbols = pl.Enum(events.get_column("symbol").unique().sort())
    bars = (
        clean_bars.lazy()
        .select(
            pl.col("symbol").cast(pl.String).cast(symbols, strict=False).to_physical().alias("sid"),
            pl.col("date").cast(pl.Date),
            pl.col("close").cast(pl.Float64),
        )
        .drop_nulls()
        .with_columns(_day_key(pl.col("sid"), "date").alias("key"))
        .sort("key")
        .collect()
    )
    sid = events.get_column("symbol").cast(symbols).to_physical()
    keys = events.select(_day_key(pl.lit(sid), "ex_date")).to_series()
    # Position of the first bar on or after each ex-date in key order; the bar before it is the last
    # one before the ex-date. Either is the action's neighbour only when it has the action's symbol.
    first = bars.get_column("key").search_sorted(keys, side="left").cast(pl.Int64)

    def neighbour(position: pl.Series, side: str) -> pl.DataFrame:
        inside = pl.select(pl.when(position.is_between(0, bars.height - 1)).then(position)).to_series()
        rows = bars.gather(inside)
        same = rows.get_column("sid") == sid
        return rows.select(
            pl.when(same).then(pl.col("date")).alias(f"{side}_date"),
            pl.when(same).then(pl.col("close")).alias(f"{side}_close"),
        )

    joined = pl.concat([events, neighbour(first - 1, "prev"), neighbour(first, "next")], how="horizontal")
    joined = joined.with_columns(adj_return=pl.col("next_close") / pl.col("prev_close") - 1)
    outliers = _outliers_between(joined, quarantined)
    big = (pl.col("adj_return").abs() > threshold).fill_null(False)
    near = pl.col("outliers") > 0
    return (
        joined.join(outliers, on=["symbol", "ex_date"], how="left")
        .with_columns(pl.col("outliers").fill_null(0).cast(pl.Int64))
        .filter(big | near)
        .with_columns(
            reason=pl.when(big)
            .then(pl.lit(f"adjusted return beyond {threshold:.1%}"))
            .otherwise(
                pl.format(
                    "{} bar(s) from {} quarantined as outlier(s) next to the ex-date",
                    pl.col("outliers"),
                    pl.col("first_outlier").cast(pl.String),
                )
            ),
            hint=pl.lit(SUSPECT_HINT),
        )
        .select(*SUSPECT_ACTION_SCHEMA)
        .sort("symbol", "ex_date")
    )


def _day_key(symbol_id: pl.Expr, day: str) -> pl.Expr:
    """``symbol_id`` (an unsigned integer) and the date ``day`` as one Int64 that sorts like the pair."""
    return symbol_id.cast(pl.Int64) * (1 << 32) + pl.col(day).cast(pl.Int32).cast(pl.Int64) + (1 << 31)


def _outliers_between(joined: pl.DataFrame, quarantined: pl.DataFrame | None) -> pl.DataFrame:
    """``symbol, ex_date, outliers, first_outlier``: the ``quarantined`` bars of each action's symbol
    after its ``prev_date`` (none: open) and before its ``next_date``, when any. Without a clean bar
    after the action, only bars from its ex-date on count: an action declared ahead of its ex-date
    (a dividend) is not to blame for an outlier before it."""
    schema = {"symbol": pl.String(), "ex_date": pl.Date(), "outliers": pl.Int64(), "first_outlier": pl.Date()}
    if quarantined is None or quarantined.is_empty():
        return empty(schema)
    refused = quarantined.select(pl.col("symbol").cast(pl.String), pl.col("date").cast(pl.Date)).drop_nulls()
    after_prev = pl.col("prev_date").is_null() | (pl.col("date") > pl.col("prev_date"))
    before_next = (
        pl.when(pl.col("next_date").is_null())
        .then(pl.col("date") >= pl.col("ex_date"))
        .otherwise(pl.col("date") < pl.col("next_date"))
    )
    return (
        joined.select("symbol", "ex_date", "prev_date", "next_date")
        .join(refused.unique(), on="symbol")
        .filter(after_prev & before_next)
        .group_by("symbol", "ex_date")
        .agg(pl.len().cast(pl.Int64).alias("outliers"), pl.col("date").min().alias("first_outlier"))
        .select(*schema)
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
    _render_suspects(status.suspect_actions, console, limit)


def _render_suspects(suspects: pl.DataFrame, console: Console, limit: int | None) -> None:
    """One line per suspect corporate action (at most ``limit``) and the hint; nothing when none."""
    if suspects.is_empty():
        return

    def close_on(close: float | None, day: date | None) -> str:
        return "-" if close is None or day is None else f"{close:,.2f} ({day})"

    console.print(f"suspect corporate actions: {suspects.height}", style="yellow")
    rows = suspects if limit is None else suspects.head(limit)
    for row in rows.iter_rows(named=True):
        ret = "no return" if row["adj_return"] is None else f"{row['adj_return']:+.1%}"
        console.print(
            f"  {row['symbol']} {row['ex_date']} split {row['split_ratio']:g} dividend "
            f"{row['cash_dividend']:g}: {ret} from {close_on(row['prev_close'], row['prev_date'])} to "
            f"{close_on(row['next_close'], row['next_date'])}, {row['reason']}"
        )
    if rows.height < suspects.height:
        console.print(f"  ... {suspects.height - rows.height} more; use --all to list every one")
    for hint in suspects.get_column("hint").unique(maintain_order=True).to_list():
        console.print(f"  hint: {hint}")
