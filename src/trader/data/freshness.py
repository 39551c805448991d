"""Is the newest bar as new as the exchange calendar allows?

A daily bar for a session exists only once that session has closed, so the yardstick is
:meth:`TradingCalendar.last_closed_session`: on Monday morning that is Friday, after a holiday it is
the session before the holiday, on a half day it moves at 13:00 ET. Staleness is counted in
*sessions*, never in calendar days, so weekends and holidays are never gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl

from trader.data.bars import listing_spans
from trader.data.calendar import TradingCalendar
from trader.data.store import sorted_by
from trader.errors import TraderError

#: Columns of :func:`stale_symbols`' result.
STALE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "latest": pl.Date(),
    "expected": pl.Date(),
    "sessions_behind": pl.Int64(),
}


class StalenessError(TraderError):
    """The newest bar is older than the calendar allows.

    ``latest``: the newest bar's date (``None``: the symbol has no usable bar at all); ``expected``:
    the newest session that has closed (the newest bar that could exist); ``sessions_behind``:
    closed sessions after ``latest`` up to ``expected`` (``None`` without a bar); ``symbol``: the
    symbol concerned, or ``None`` for a whole data set; ``symbols``: every stale symbol when several
    were judged (the other fields then describe the first, the most behind).
    """

    def __init__(
        self,
        latest: date | None,
        expected: date,
        sessions_behind: int | None,
        symbol: str | None = None,
        max_sessions_behind: int = 0,
        symbols: tuple[str, ...] = (),
    ) -> None:
        self.latest = latest
        self.expected = expected
        self.sessions_behind = sessions_behind
        self.symbol = symbol
        self.max_sessions_behind = max_sessions_behind
        self.symbols = symbols or ((symbol,) if symbol else ())
        subject = f"{symbol}: newest bar" if symbol else "newest bar"
        if latest is None:
            detail = f"{symbol or 'data'}: no clean bar at all, the last closed session is {expected}"
        else:
            detail = (
                f"{subject} is {latest}, {sessions_behind} session(s) behind the last closed "
                f"session {expected}"
            )
        others = len(self.symbols) - 1
        more = f" (and {others} more stale symbol(s): {_preview(self.symbols[1:])})" if others > 0 else ""
        super().__init__(f"stale data: {detail} (allowed: {max_sessions_behind}){more}")

    def __reduce__(
        self,
    ) -> tuple[type[StalenessError], tuple[date | None, date, int | None, str | None, int, tuple[str, ...]]]:
        # Keyword-style constructors do not survive pickling (e.g. across processes) by default.
        return (
            type(self),
            (
                self.latest,
                self.expected,
                self.sessions_behind,
                self.symbol,
                self.max_sessions_behind,
                self.symbols,
            ),
        )


def _preview(symbols: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(symbols[:limit])
    return shown + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


def check_freshness(
    latest: date,
    now: datetime,
    calendar: TradingCalendar,
    max_sessions_behind: int = 0,
    symbol: str | None = None,
) -> None:
    """Raise :class:`StalenessError` when ``latest`` is more than ``max_sessions_behind`` sessions older
    than the last session closed at ``now``.

    ``now`` must be timezone-aware (``ValueError`` otherwise): a naive time would silently be read in
    the wrong zone. A bar newer than the last closed session (today's, delivered early) is fresh.
    """
    _require_aware(now)
    if max_sessions_behind < 0:
        raise ValueError(f"max_sessions_behind must be >= 0, got {max_sessions_behind}")
    expected = calendar.last_closed_session(now)
    behind = calendar.sessions_between(latest, expected)
    if behind > max_sessions_behind:
        raise StalenessError(latest, expected, behind, symbol, max_sessions_behind)


def stale_symbols(
    bars: pl.DataFrame,
    now: datetime,
    calendar: TradingCalendar,
    max_sessions_behind: int = 0,
    listings: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The symbols of ``bars`` whose newest bar is stale at ``now`` (:data:`STALE_SCHEMA`, by symbol).

    ``bars`` needs ``symbol`` and ``date``. With ``listings``
    (:data:`~trader.data.bars.LISTING_SCHEMA`), a symbol whose listing ended is measured against its
    last listed session instead of today's: a delisted symbol is not stale for lacking bars after it
    stopped trading (but it is when its bars stop before its delisting).
    """
    _require_aware(now)
    if max_sessions_behind < 0:
        raise ValueError(f"max_sessions_behind must be >= 0, got {max_sessions_behind}")
    expected_now = calendar.last_closed_session(now)
    latest = newest_per_symbol(bars).with_columns(expected=pl.lit(expected_now, pl.Date))
    if listings is not None and not listings.is_empty():
        ended = listing_spans(listings).select("symbol", "listed_until")
        latest = latest.join(ended, on="symbol", how="left").with_columns(
            expected=pl.min_horizontal("expected", "listed_until")
        )
    sessions = calendar.all_sessions()
    # Sessions up to and including a date = its insertion point on the right; an end date that is not
    # a session therefore counts up to the last session before it.
    through_expected = sessions.search_sorted(latest.get_column("expected"), side="right").cast(pl.Int64)
    through_latest = sessions.search_sorted(latest.get_column("latest"), side="right").cast(pl.Int64)
    return (
        latest.with_columns(
            expected=sessions.gather((through_expected - 1).clip(0)),
            sessions_behind=(through_expected - through_latest).clip(0),
        )
        .filter(pl.col("sessions_behind") > max_sessions_behind)
        .select(*STALE_SCHEMA)
        .sort("symbol")
    )


@dataclass(frozen=True)
class Freshness:
    """How fresh the clean bars of a set of symbols are (see :func:`judge_symbols`)."""

    #: The last closed session: the newest daily bar that can exist.
    expected: date
    #: The newest clean bar of the symbols judged (``None`` when none has a clean bar).
    newest: date | None
    #: One row per stale symbol (:data:`STALE_SCHEMA`), those without a clean bar (``latest`` and
    #: ``sessions_behind`` null) first, then the most sessions behind.
    stale: pl.DataFrame
    #: Symbols not judged because their listing ended by ``expected`` (delisted: no new bars to wait for).
    delisted: tuple[str, ...]
    max_sessions_behind: int = 0

    @property
    def fresh(self) -> bool:
        """True when no judged symbol is stale."""
        return self.stale.is_empty()

    def error(self) -> StalenessError | None:
        """The error to raise when stale: it describes the most-behind symbol and lists them all."""
        if self.fresh:
            return None
        first = self.stale.row(0, named=True)
        return StalenessError(
            first["latest"],
            self.expected,
            first["sessions_behind"],
            symbol=first["symbol"],
            max_sessions_behind=self.max_sessions_behind,
            symbols=tuple(self.stale.get_column("symbol").to_list()),
        )

    def describe(self) -> str:
        """One line for a report: the verdict and, when stale, why."""
        error = self.error()
        if error is not None:
            return str(error)
        if self.newest is None:
            return "fresh: no listed symbol to judge"
        return f"fresh: every listed symbol has a clean bar on {self.expected} or later (or is delisted)"


def judge_symbols(
    clean: pl.DataFrame,
    symbols: Sequence[str],
    now: datetime,
    calendar: TradingCalendar,
    listings: pl.DataFrame | None = None,
    max_sessions_behind: int = 0,
) -> Freshness:
    """Judge each of ``symbols`` by its newest *clean* bar in ``clean`` (``symbol``, ``date``).

    A symbol whose newest bars were all quarantined is as stale as its newest clean bar, and one
    without any clean bar is stale outright. A symbol whose listing (``listings``,
    :data:`~trader.data.bars.LISTING_SCHEMA`) ended on or before the last closed session is
    delisted: no bar can arrive for it any more, so it is not judged at all.
    """
    _require_aware(now)
    expected = calendar.last_closed_session(now)
    wanted = pl.DataFrame({"symbol": sorted(set(symbols))}, schema={"symbol": pl.String()})
    if listings is not None and not listings.is_empty():
        ended = listing_spans(listings).filter(pl.col("listed_until") <= expected)
        delisted = wanted.join(ended.select("symbol"), on="symbol", how="semi")
        wanted = wanted.join(delisted, on="symbol", how="anti")
    else:
        delisted = wanted.clear()
    # One row per symbol first: everything after that works on a few hundred rows, not millions.
    bars = newest_per_symbol(clean).rename({"latest": "date"}).join(wanted, on="symbol", how="semi")
    newest = bars.get_column("date").max()
    lagging = stale_symbols(bars, now, calendar, max_sessions_behind, listings=listings)
    without = wanted.join(bars.select("symbol"), on="symbol", how="anti").select(
        "symbol",
        pl.lit(None, pl.Date).alias("latest"),
        pl.lit(expected, pl.Date).alias("expected"),
        pl.lit(None, pl.Int64).alias("sessions_behind"),
    )
    stale = pl.concat([without, lagging]).sort(
        "sessions_behind", "symbol", descending=[True, False], nulls_last=False
    )
    return Freshness(
        expected=expected,
        newest=newest if isinstance(newest, date) else None,
        stale=stale,
        delisted=tuple(delisted.get_column("symbol").to_list()),
        max_sessions_behind=max_sessions_behind,
    )


def newest_per_symbol(bars: pl.DataFrame) -> pl.DataFrame:
    """``symbol, latest``: the newest date of each symbol in ``bars`` (rows without either are ignored).

    Bars sorted by symbol and date (what the quality gate hands over) are read at the symbol
    boundaries, which is much cheaper than grouping a million rows by a text column.
    """
    keyed = bars.select("symbol", "date")
    if sorted_by(keyed, ("symbol", "date")):
        last_of_symbol = (pl.col("symbol") != pl.col("symbol").shift(-1)).fill_null(True)
        return keyed.filter(last_of_symbol).rename({"date": "latest"})
    return (
        keyed.filter(pl.col("symbol").is_not_null() & pl.col("date").is_not_null())
        .group_by("symbol")
        .agg(pl.col("date").max().alias("latest"))
    )


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC)); got a naive datetime")
