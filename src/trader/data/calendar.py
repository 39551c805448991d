"""The exchange calendar (NYSE by default): sessions, holidays, half days, the latest closed session."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime
from functools import lru_cache

import exchange_calendars as xcals
import pandas as pd
import polars as pl

CALENDAR_START = "1990-01-01"
CALENDAR_END = "2035-12-31"


class CalendarRangeError(ValueError):
    """A date or time the calendar cannot answer for: before its first or after its last session.

    The message names the calendar's range, so a command can pass it on as a usage error.
    """


class TradingCalendar:
    """Sessions of one exchange, as plain ``date`` values and UTC datetimes."""

    def __init__(self, name: str = "XNYS") -> None:
        self.name = name
        self._cal = _load(name)
        self._sessions = pl.Series("date", list(self._cal.sessions.date), dtype=pl.Date)
        days = pl.date_range(self._sessions[0], self._sessions[-1], eager=True)
        self._first_day = int(days.cast(pl.Int32)[0])
        self._positions_by_day = self._sessions.search_sorted(days, side="left").cast(pl.Int64)

    def sessions(self, start: date, end: date) -> pl.Series:
        """Every session from ``start`` to ``end`` inclusive, as a Polars ``Date`` series."""
        return self._sessions.filter((self._sessions >= start) & (self._sessions <= end))

    def all_sessions(self) -> pl.Series:
        return self._sessions

    @property
    def first_session(self) -> date:
        """The oldest session the calendar knows."""
        return self._sessions[0]  # type: ignore[no-any-return]

    @property
    def last_session(self) -> date:
        """The newest session the calendar knows; what lies after it is unknown, not a holiday."""
        return self._sessions[-1]  # type: ignore[no-any-return]

    def knows(self, day: date) -> bool:
        """Whether ``day`` lies inside the calendar's range (outside it, whether it is a session is
        unknown, and :meth:`is_session` raises)."""
        return self.first_session <= day <= self.last_session

    def range_text(self) -> str:
        """``"XNYS sessions 1990-01-02 to 2035-12-31"``, for messages about dates out of range."""
        return f"{self.name} sessions {self.first_session} to {self.last_session}"

    def session_positions(self, dates: pl.Series) -> pl.Series:
        """Position in :meth:`all_sessions` of the first session on or after each date (Int64).

        The same as ``all_sessions().search_sorted(dates, side="left")`` (a date after the last
        session gives the number of sessions; a null stays null), by looking each date up in a table
        of every calendar day: a million dates take ~9 ms instead of ~37 ms of binary search.
        """
        table = self._positions_by_day
        offset = dates.cast(pl.Int32).cast(pl.Int64) - self._first_day
        low, high = offset.min(), offset.max()
        if low is None or (low >= 0 and high < table.len()):  # type: ignore[operator]
            return table.gather(offset)  # every date inside the calendar: the common case
        inside = offset.clip(0, table.len() - 1)
        beyond = offset >= table.len()
        return table.gather(inside).zip_with(~beyond.fill_null(False), pl.Series([self._sessions.len()]))

    def is_session(self, day: date) -> bool:
        return bool(self._cal.is_session(pd.Timestamp(day)))

    def previous_session(self, day: date) -> date:
        """The last session strictly before ``day`` (``day`` need not be a session)."""
        earlier = self._sessions.filter(self._sessions < day)
        if earlier.is_empty():
            raise CalendarRangeError(f"no session before {day}: the calendar knows {self.range_text()}")
        return earlier[-1]  # type: ignore[no-any-return]

    def next_session(self, day: date) -> date:
        """The first session strictly after ``day``."""
        later = self._sessions.filter(self._sessions > day)
        if later.is_empty():
            raise CalendarRangeError(f"no session after {day}: the calendar knows {self.range_text()}")
        return later[0]  # type: ignore[no-any-return]

    def session_close(self, day: date) -> datetime:
        """The close of session ``day`` in UTC (13:00 ET on half days)."""
        close: datetime = self._cal.session_close(pd.Timestamp(day)).to_pydatetime()
        return close.astimezone(UTC)

    def session_open(self, day: date) -> datetime:
        opened: datetime = self._cal.session_open(pd.Timestamp(day)).to_pydatetime()
        return opened.astimezone(UTC)

    def last_closed_session(self, now: datetime) -> date:
        """The newest session whose close is at or before ``now``: the newest daily bar that can exist.

        On a Monday morning that is the previous Friday (or Thursday when Friday was a holiday).
        Raises :class:`CalendarRangeError` when ``now`` is after the calendar's last session (the
        answer would silently stop there) or before the close of its first one.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        today = now.astimezone(UTC).date()
        if today > self.last_session:
            raise CalendarRangeError(
                f"{now.isoformat()} is past the calendar's end: the calendar knows {self.range_text()}"
            )
        # A session closes within a day of its date, so only the newest few can still be open.
        for day in reversed(self._sessions.filter(self._sessions <= today).tail(3).to_list()):
            if self.session_close(day) <= now:
                return day  # type: ignore[no-any-return]
        raise CalendarRangeError(
            f"no session had closed by {now.isoformat()}: the calendar knows {self.range_text()}"
        )

    def sessions_between(self, after: date, until: date) -> int:
        """How many sessions lie in (``after``, ``until``]."""
        return int(((self._sessions > after) & (self._sessions <= until)).sum())


@lru_cache(maxsize=4)
def _load(name: str) -> xcals.ExchangeCalendar:
    with warnings.catch_warnings():
        # exchange-calendars 4.13 still reads tz-aware Series.values, which pandas 3.1 deprecates; the
        # values it reads are UTC either way. Remove once exchange-calendars no longer warns.
        warnings.filterwarnings("ignore", message="Series.values returning")
        return xcals.get_calendar(name, start=CALENDAR_START, end=CALENDAR_END)


@lru_cache(maxsize=4)
def trading_calendar(name: str = "XNYS") -> TradingCalendar:
    """A shared calendar instance (building one takes a fraction of a second)."""
    return TradingCalendar(name)
