"""Is the newest bar as new as the exchange calendar allows?

A daily bar for a session exists only once that session has closed, so the yardstick is
:meth:`TradingCalendar.last_closed_session`: on Monday morning that is Friday, after a holiday it is
the session before the holiday, on a half day it moves at 13:00 ET. Staleness is counted in
*sessions*, never in calendar days, so weekends and holidays are never gaps.
"""

from __future__ import annotations

from datetime import date, datetime

import polars as pl

from trader.data.bars import listing_spans
from trader.data.calendar import TradingCalendar
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

    ``latest``: the newest bar's date; ``expected``: the newest session that has closed (the newest
    bar that could exist); ``sessions_behind``: closed sessions after ``latest`` up to ``expected``;
    ``symbol``: the symbol concerned, or ``None`` for a whole data set.
    """

    def __init__(
        self,
        latest: date,
        expected: date,
        sessions_behind: int,
        symbol: str | None = None,
        max_sessions_behind: int = 0,
    ) -> None:
        self.latest = latest
        self.expected = expected
        self.sessions_behind = sessions_behind
        self.symbol = symbol
        self.max_sessions_behind = max_sessions_behind
        subject = f"{symbol}: newest bar" if symbol else "newest bar"
        super().__init__(
            f"stale data: {subject} is {latest}, {sessions_behind} session(s) behind the last closed "
            f"session {expected} (allowed: {max_sessions_behind})"
        )

    def __reduce__(self) -> tuple[type[StalenessError], tuple[date, date, int, str | None, int]]:
        # Keyword-style constructors do not survive pickling (e.g. across processes) by default.
        return (
            type(self),
            (self.latest, self.expected, self.sessions_behind, self.symbol, self.max_sessions_behind),
        )


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
    latest = (
        bars.filter(pl.col("symbol").is_not_null() & pl.col("date").is_not_null())
        .group_by("symbol")
        .agg(pl.col("date").max().alias("latest"))
        .with_columns(expected=pl.lit(expected_now, pl.Date))
    )
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


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(UTC)); got a naive datetime")
