"""The stale-order cleanup counts an order's age in open-market time only (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from trader.data.calendar import trading_calendar
from trader.ops.cleanup import open_market_time


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "minutes"),
    [
        # Tuesday 10:00 -> 10:20 New York: all of it.
        (utc(2024, 3, 5, 15, 0), utc(2024, 3, 5, 15, 20), 20),
        # Queued at 17:00 New York: nothing until the open, 5 minutes after it.
        (utc(2024, 3, 5, 22, 0), utc(2024, 3, 6, 3, 0), 0),
        (utc(2024, 3, 5, 22, 0), utc(2024, 3, 6, 14, 35), 5),
        # Pre-market 08:00 -> 09:45 New York: from the open.
        (utc(2024, 3, 5, 13, 0), utc(2024, 3, 5, 14, 45), 15),
        # Friday 15:50 EST -> Monday 09:40 EDT (the clocks changed on Sunday): 10 + 10.
        (utc(2024, 3, 8, 20, 50), utc(2024, 3, 11, 13, 40), 20),
        # Half day 2024-07-03 (close 13:00), holiday 07-04: 12:50 -> Friday 09:35 is 10 + 5.
        (utc(2024, 7, 3, 16, 50), utc(2024, 7, 5, 13, 35), 15),
        # Two whole sessions of 6.5 hours and 5 minutes of a third.
        (utc(2024, 3, 4, 14, 30), utc(2024, 3, 6, 14, 35), 2 * 390 + 5),
        # Not after the start: no age.
        (utc(2024, 3, 5, 15, 20), utc(2024, 3, 5, 15, 0), 0),
    ],
    ids=[
        "in-session",
        "overnight",
        "next-open",
        "pre-market",
        "weekend-dst",
        "half-day-holiday",
        "sessions",
        "reversed",
    ],
)
def test_only_open_market_time_counts(start: datetime, end: datetime, minutes: int) -> None:
    assert open_market_time(start, end, trading_calendar()) == timedelta(minutes=minutes)


def test_instants_in_other_timezones_count_the_same() -> None:
    start = datetime(2024, 3, 5, 17, 0, tzinfo=ZoneInfo("America/New_York"))
    end = datetime.fromisoformat("2024-03-06T09:40:00-05:00")
    assert open_market_time(start, end, trading_calendar()) == timedelta(minutes=10)
