"""The exchange calendar: the fast session lookup agrees with a binary search; the last closed session
and what happens outside the calendar's range."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.data.calendar import CalendarRangeError, trading_calendar

# Dates before, inside and after the calendar's range (1990..2035), and missing ones.
DATES = st.one_of(st.none(), st.dates(min_value=date(1985, 1, 1), max_value=date(2040, 12, 31)))


@settings(max_examples=200, deadline=None)
@given(st.lists(DATES, max_size=50))
def test_session_positions_equal_a_binary_search(days: list[date | None]) -> None:
    calendar = trading_calendar()
    dates = pl.Series("date", days, dtype=pl.Date)

    positions = calendar.session_positions(dates)

    searched = calendar.all_sessions().search_sorted(dates, side="left").cast(pl.Int64)
    known = dates.is_not_null()
    assert positions.dtype == pl.Int64
    assert positions.filter(known).to_list() == searched.filter(known).to_list()
    assert positions.filter(~known).null_count() == (~known).sum()  # a missing date has no position


def test_a_session_is_found_at_its_own_position_and_a_weekend_at_the_next_session() -> None:
    calendar = trading_calendar()
    sessions = calendar.all_sessions()
    friday, saturday = date(2024, 1, 5), date(2024, 1, 6)

    at_friday, at_saturday = calendar.session_positions(pl.Series([friday, saturday])).to_list()

    assert sessions[at_friday] == friday
    assert sessions[at_saturday] == friday + timedelta(days=3)  # Monday 2024-01-08
    after_the_end = calendar.session_positions(pl.Series([date(2040, 1, 1)])).item()
    assert after_the_end == sessions.len()


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 3, 5, 16, 0, tzinfo=UTC), date(2024, 3, 4)),  # Tuesday, trading: Monday
        (datetime(2024, 3, 5, 21, 0, tzinfo=UTC), date(2024, 3, 5)),  # at the close
        (datetime(2024, 3, 9, 12, 0, tzinfo=UTC), date(2024, 3, 8)),  # Saturday: Friday
        (datetime(2024, 4, 1, 13, 0, tzinfo=UTC), date(2024, 3, 28)),  # Monday before the open, Good Friday
        (datetime(1990, 1, 2, 21, 0, tzinfo=UTC), date(1990, 1, 2)),  # the first session, closed
        (datetime(2035, 12, 31, 23, 0, tzinfo=UTC), date(2035, 12, 31)),  # the last one
    ],
)
def test_last_closed_session(now: datetime, expected: date) -> None:
    assert trading_calendar().last_closed_session(now) == expected


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (datetime(1980, 1, 1, tzinfo=UTC), "no session had closed by 1980-01-01T00:00:00+00:00"),
        (datetime(1990, 1, 2, 15, 0, tzinfo=UTC), "no session had closed by 1990-01-02T15:00:00+00:00"),
        (datetime(2036, 1, 1, tzinfo=UTC), "2036-01-01T00:00:00+00:00 is past the calendar's end"),
        (datetime(2050, 1, 1, tzinfo=UTC), "2050-01-01T00:00:00+00:00 is past the calendar's end"),
    ],
)
def test_last_closed_session_outside_the_calendar_is_a_clear_error(now: datetime, message: str) -> None:
    # Before: an IndexError at the start, and a silent answer of 2035-12-31 for any time after it.
    with pytest.raises(CalendarRangeError, match=re.escape(message)) as caught:
        trading_calendar().last_closed_session(now)
    assert str(caught.value).endswith("the calendar knows XNYS sessions 1990-01-02 to 2035-12-31")
    assert isinstance(caught.value, ValueError)


def test_previous_and_next_session_outside_the_calendar_name_its_range() -> None:
    calendar = trading_calendar()
    assert (calendar.first_session, calendar.last_session) == (date(1990, 1, 2), date(2035, 12, 31))
    with pytest.raises(
        CalendarRangeError, match=r"no session before 1990-01-02: .* 1990-01-02 to 2035-12-31"
    ):
        calendar.previous_session(date(1990, 1, 2))
    with pytest.raises(CalendarRangeError, match="no session after 2035-12-31"):
        calendar.next_session(date(2035, 12, 31))


ET = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("day", "close_et"),
    [
        (date(2001, 9, 11), None),  # 9/11, closed through the 14th
        (date(2001, 9, 17), "16:00"),
        (date(2004, 6, 11), None),  # Reagan's national day of mourning
        (date(2007, 1, 2), None),  # Ford's
        (date(2012, 10, 29), None),  # Hurricane Sandy, two days
        (date(2012, 10, 30), None),
        (date(2012, 10, 31), "16:00"),
        (date(2018, 12, 5), None),  # G.H.W. Bush's
        (date(2025, 1, 9), None),  # Carter's
        (date(2021, 6, 18), "16:00"),  # Juneteenth was first observed in 2022
        (date(2022, 6, 20), None),
        (date(2024, 6, 19), None),
        (date(2024, 3, 29), None),  # Good Friday
        (date(2024, 11, 29), "13:00"),  # the day after Thanksgiving
        (date(2024, 12, 24), "13:00"),
        (date(2024, 12, 25), None),
        (date(2024, 12, 26), "16:00"),
        (date(2025, 7, 3), "13:00"),
    ],
)
def test_real_closures_and_early_closes(day: date, close_et: str | None) -> None:
    calendar = trading_calendar()
    assert calendar.is_session(day) is (close_et is not None)
    assert (day in calendar.sessions(day, day).to_list()) is (close_et is not None)
    if close_et is not None:
        assert calendar.session_close(day).astimezone(ET).strftime("%H:%M") == close_et
