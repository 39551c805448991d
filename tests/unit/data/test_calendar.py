"""The exchange calendar's fast session lookup agrees with a binary search over the sessions."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.data.calendar import trading_calendar

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
