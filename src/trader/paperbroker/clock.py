"""The paper broker's clock (real time, or a simulated instant that runs on or stands still) and the
NYSE regular-hours calendar it trades on (holidays and half days from ``exchange-calendars``)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from trader.data.calendar import TradingCalendar, trading_calendar


class SimClock:
    """``now()`` is real time, or ``start_at`` plus the real time elapsed since (``frozen``: no time
    passes until :meth:`set` or :meth:`advance`). Thread-safe."""

    def __init__(self, start_at: datetime | None = None, *, frozen: bool = False) -> None:
        self._lock = threading.Lock()
        self._anchor: datetime | None = None
        self._anchored_at = 0.0
        self._frozen = False
        if start_at is not None:
            self.set(start_at, frozen=frozen)

    @property
    def simulated(self) -> bool:
        return self._anchor is not None

    @property
    def frozen(self) -> bool:
        return self._frozen

    def now(self) -> datetime:
        """The broker's current instant (UTC)."""
        with self._lock:
            if self._anchor is None:
                return datetime.now(UTC)
            if self._frozen:
                return self._anchor
            return self._anchor + timedelta(seconds=time.monotonic() - self._anchored_at)

    def set(self, at: datetime, *, frozen: bool | None = None) -> None:
        """Jump to ``at`` (aware); ``frozen`` keeps or changes whether time then runs on."""
        if at.tzinfo is None:
            raise ValueError("the clock needs a timezone-aware instant")
        with self._lock:
            self._anchor = at.astimezone(UTC)
            self._anchored_at = time.monotonic()
            if frozen is not None:
                self._frozen = frozen

    def advance(self, seconds: float) -> datetime:
        """Move a simulated clock forward by ``seconds``; returns the new instant."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        current = self.now()
        if self._anchor is None:
            raise ValueError("a real-time clock cannot be advanced; start the broker with --at")
        self.set(current + timedelta(seconds=seconds))
        return self.now()

    def use_real_time(self) -> None:
        with self._lock:
            self._anchor = None
            self._frozen = False


@dataclass(frozen=True)
class Session:
    """One regular trading session: its date, open and close (UTC; close is 13:00 ET on half days)."""

    day: date
    open: datetime
    close: datetime


class MarketHours:
    """Regular trading hours of an exchange (NYSE by default)."""

    def __init__(self, calendar: TradingCalendar | None = None) -> None:
        self.calendar = calendar or trading_calendar("XNYS")

    @lru_cache(maxsize=4096)  # noqa: B019 - one instance per broker; sessions never change
    def session(self, day: date) -> Session | None:
        """The session on ``day``, or ``None`` on weekends and holidays."""
        if not self.calendar.is_session(day):
            return None
        return Session(day, self.calendar.session_open(day), self.calendar.session_close(day))

    def session_at(self, moment: datetime) -> Session | None:
        """The session open at ``moment`` (open ≤ moment < close), if any."""
        found = self.session(moment.astimezone(UTC).date())
        if found is not None and found.open <= moment < found.close:
            return found
        return None

    def is_open(self, moment: datetime) -> bool:
        return self.session_at(moment) is not None

    def next_session(self, moment: datetime) -> Session:
        """The session that is open at ``moment``, or else the next one to open."""
        day = moment.astimezone(UTC).date()
        for offset in range(0, 15):
            found = self.session(day + timedelta(days=offset))
            if found is not None and moment < found.close:
                return found
        raise ValueError(f"no session within two weeks after {moment}")

    def last_close(self, moment: datetime) -> datetime | None:
        """The newest close at or before ``moment`` (``None`` when none within two weeks)."""
        day = moment.astimezone(UTC).date()
        for offset in range(0, 15):
            found = self.session(day - timedelta(days=offset))
            if found is not None and found.close <= moment:
                return found.close
        return None

    def next_open(self, moment: datetime) -> datetime:
        """The next open strictly after ``moment`` (Alpaca's clock: while open, tomorrow's open)."""
        upcoming = self.next_session(moment)
        if upcoming.open > moment:
            return upcoming.open
        return self.next_session(upcoming.close).open

    def next_close(self, moment: datetime) -> datetime:
        """The close of the session open now, or of the next session."""
        return self.next_session(moment).close

    def sessions(self, first: date, last: date) -> list[Session]:
        """Every session from ``first`` to ``last`` inclusive."""
        days = self.calendar.sessions(first, last).to_list()
        return [found for day in days if (found := self.session(day)) is not None]
