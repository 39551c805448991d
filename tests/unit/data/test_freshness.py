"""Freshness is measured in exchange sessions: weekends and holidays are never staleness."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from trader.data.bars import LISTING_SCHEMA
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import STALE_SCHEMA, StalenessError, check_freshness, judge_symbols, stale_symbols

ET = ZoneInfo("America/New_York")
FRIDAY = date(2024, 11, 15)


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return trading_calendar()


def et(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ET)


def test_a_friday_bar_is_fresh_on_monday_morning(calendar: TradingCalendar) -> None:
    check_freshness(FRIDAY, et(2024, 11, 18, 9), calendar)
    check_freshness(FRIDAY, et(2024, 11, 16, 12), calendar)  # and all weekend


def test_a_friday_bar_is_stale_once_monday_has_closed(calendar: TradingCalendar) -> None:
    with pytest.raises(StalenessError) as raised:
        check_freshness(FRIDAY, et(2024, 11, 18, 16, 5), calendar)
    assert raised.value.sessions_behind == 1
    assert raised.value.expected == date(2024, 11, 18)


def test_a_friday_bar_is_two_sessions_stale_on_tuesday_after_the_close(calendar: TradingCalendar) -> None:
    with pytest.raises(StalenessError) as raised:
        check_freshness(FRIDAY, et(2024, 11, 19, 17), calendar, symbol="AAPL")
    error = raised.value
    assert (error.latest, error.expected, error.sessions_behind, error.symbol) == (
        FRIDAY,
        date(2024, 11, 19),
        2,
        "AAPL",
    )
    assert str(error) == (
        "stale data: AAPL: newest bar is 2024-11-15, 2 session(s) behind the last closed session "
        "2024-11-19 (allowed: 0)"
    )
    # Allowing two sessions of delay makes the same bar acceptable.
    check_freshness(FRIDAY, et(2024, 11, 19, 17), calendar, max_sessions_behind=2)


def test_the_independence_day_holiday_is_not_a_gap(calendar: TradingCalendar) -> None:
    # 2024-07-04 (Thursday) is a holiday and 2024-07-03 a half day closing at 13:00 ET.
    check_freshness(date(2024, 7, 3), et(2024, 7, 4, 20), calendar)
    check_freshness(date(2024, 7, 3), et(2024, 7, 5, 9), calendar)  # the morning after the holiday
    with pytest.raises(StalenessError) as raised:
        check_freshness(date(2024, 7, 3), et(2024, 7, 5, 16, 30), calendar)
    assert raised.value.sessions_behind == 1  # Friday 5th only, not the 4th


def test_a_half_day_counts_from_its_early_close(calendar: TradingCalendar) -> None:
    # 2024-11-29, the day after Thanksgiving, closes at 13:00 ET; Thanksgiving itself is a holiday.
    wednesday = date(2024, 11, 27)
    check_freshness(wednesday, et(2024, 11, 29, 12, 59), calendar)
    with pytest.raises(StalenessError) as raised:
        check_freshness(wednesday, et(2024, 11, 29, 13, 0), calendar)
    assert raised.value.expected == date(2024, 11, 29)
    assert raised.value.sessions_behind == 1


def test_a_bar_newer_than_the_last_closed_session_is_fresh(calendar: TradingCalendar) -> None:
    check_freshness(date(2024, 11, 18), et(2024, 11, 18, 12), calendar)


def test_a_naive_now_is_refused(calendar: TradingCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_freshness(FRIDAY, datetime(2024, 11, 18, 9), calendar)
    with pytest.raises(ValueError, match="timezone-aware"):
        stale_symbols(
            pl.DataFrame(schema={"symbol": pl.String, "date": pl.Date}), datetime(2024, 1, 2), calendar
        )


def test_staleness_error_survives_pickling() -> None:
    error = StalenessError(FRIDAY, date(2024, 11, 19), 2, "AAPL")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.latest, copy.sessions_behind, copy.symbol, str(copy)) == (
        FRIDAY,
        2,
        "AAPL",
        str(error),
    )


def test_stale_symbols_lists_only_lagging_listed_symbols(calendar: TradingCalendar) -> None:
    bars = pl.DataFrame(
        {
            "symbol": ["FRESH", "FRESH", "LAG", "GONE", "GAPPY", "UNLISTED"],
            "date": [
                date(2024, 11, 14),
                FRIDAY,
                date(2024, 11, 13),
                date(2024, 11, 8),  # delisted after that day
                date(2024, 11, 6),  # delisted on the 8th but bars stop on the 6th
                date(2024, 11, 14),
            ],
        }
    )
    listings = pl.DataFrame(
        [
            ("FRESH", date(2000, 1, 1), None, True, "tech"),
            ("LAG", date(2000, 1, 1), None, True, "tech"),
            ("GONE", date(2000, 1, 1), date(2024, 11, 8), False, "tech"),
            ("GAPPY", date(2000, 1, 1), date(2024, 11, 9), False, "tech"),  # a Saturday
        ],
        schema=LISTING_SCHEMA,
        orient="row",
    )
    monday_morning = et(2024, 11, 18, 9)
    stale = stale_symbols(bars, monday_morning, calendar, listings=listings)

    assert stale.schema == pl.Schema(STALE_SCHEMA)
    assert stale.rows() == [
        ("GAPPY", date(2024, 11, 6), date(2024, 11, 8), 2),
        ("LAG", date(2024, 11, 13), FRIDAY, 2),
        ("UNLISTED", date(2024, 11, 14), FRIDAY, 1),
    ]
    # Without listings a delisted symbol cannot be told apart from a lagging one.
    assert stale_symbols(bars, monday_morning, calendar).get_column("symbol").to_list() == [
        "GAPPY",
        "GONE",
        "LAG",
        "UNLISTED",
    ]
    assert stale_symbols(bars, monday_morning, calendar, max_sessions_behind=1, listings=listings).get_column(
        "symbol"
    ).to_list() == ["GAPPY", "LAG"]


# -- per symbol, on clean bars (what an ingest judges) -------------------------------------------------


def test_each_symbol_is_judged_by_its_own_newest_clean_bar(calendar: TradingCalendar) -> None:
    clean = pl.DataFrame(
        {
            "symbol": ["FRESH", "FRESH", "LAG", "LAG"],
            "date": [date(2024, 11, 14), FRIDAY, date(2024, 11, 12), date(2024, 11, 13)],
        }
    )
    verdict = judge_symbols(clean, ["FRESH", "LAG", "NONE"], et(2024, 11, 18, 9), calendar)

    assert not verdict.fresh
    assert verdict.expected == FRIDAY and verdict.newest == FRIDAY
    # No clean bar at all comes first, then the most sessions behind.
    assert verdict.stale.rows() == [("NONE", None, FRIDAY, None), ("LAG", date(2024, 11, 13), FRIDAY, 2)]
    error = verdict.error()
    assert error is not None
    assert (error.symbol, error.latest, error.sessions_behind, error.symbols) == (
        "NONE",
        None,
        None,
        ("NONE", "LAG"),
    )
    assert str(error) == (
        "stale data: NONE: no clean bar at all, the last closed session is 2024-11-15 (allowed: 0) "
        "(and 1 more stale symbol(s): LAG)"
    )
    assert verdict.describe() == str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.symbols, copy.latest, str(copy)) == (error.symbols, None, str(error))


def test_a_delisted_symbol_is_not_judged_but_a_future_delisting_is(calendar: TradingCalendar) -> None:
    clean = pl.DataFrame(
        {"symbol": ["GONE", "LEAVING", "OK"], "date": [date(2024, 6, 3), date(2024, 11, 13), FRIDAY]}
    )
    listings = pl.DataFrame(
        [
            ("GONE", date(2000, 1, 1), date(2024, 6, 28), False, None),  # bars stop before it, too
            ("LEAVING", date(2000, 1, 1), date(2024, 12, 20), True, None),  # still listed today
            ("OK", date(2000, 1, 1), None, True, None),
            ("EMPTY", date(2000, 1, 1), date(2024, 1, 31), False, None),  # delisted, no clean bar
        ],
        schema=LISTING_SCHEMA,
        orient="row",
    )
    verdict = judge_symbols(
        clean, ["GONE", "LEAVING", "OK", "EMPTY"], et(2024, 11, 18, 9), calendar, listings=listings
    )

    assert verdict.delisted == ("EMPTY", "GONE")
    assert verdict.stale.get_column("symbol").to_list() == ["LEAVING"]
    assert verdict.stale.item(0, "sessions_behind") == 2
    # Allowing two sessions makes it fresh; only symbols asked about are judged.
    assert judge_symbols(
        clean, ["GONE", "LEAVING", "OK"], et(2024, 11, 18, 9), calendar, listings, max_sessions_behind=2
    ).fresh
    fresh = judge_symbols(clean, ["OK"], et(2024, 11, 18, 9), calendar, listings)
    assert fresh.fresh and fresh.error() is None
    assert fresh.describe().startswith("fresh: every listed symbol has a clean bar on 2024-11-15")


TOKYO = ZoneInfo("Asia/Tokyo")


@pytest.mark.parametrize(
    ("latest", "now", "expected", "behind"),
    [
        # A Friday bar: Saturday, Monday before the open, Monday after the close.
        (FRIDAY, et(2024, 11, 16, 12), FRIDAY, 0),
        (FRIDAY, et(2024, 11, 18, 8), FRIDAY, 0),
        (FRIDAY, et(2024, 11, 18, 16, 30), date(2024, 11, 18), 1),
        # The day after a holiday (Martin Luther King Jr. Day, 2025-01-20).
        (date(2025, 1, 17), et(2025, 1, 21, 9), date(2025, 1, 17), 0),
        (date(2025, 1, 17), et(2025, 1, 21, 16, 5), date(2025, 1, 21), 1),
        # Christmas: the 24th closes at 13:00, the 25th is a holiday.
        (date(2024, 12, 23), et(2024, 12, 24, 14), date(2024, 12, 24), 1),
        (date(2024, 12, 24), et(2024, 12, 25, 12), date(2024, 12, 24), 0),
        (date(2024, 12, 24), et(2024, 12, 26, 15), date(2024, 12, 24), 0),
        (date(2024, 12, 24), et(2024, 12, 26, 16, 1), date(2024, 12, 26), 1),
        # Unscheduled closures: Carter's day of mourning (2025-01-09), Hurricane Sandy (2012-10-29/30).
        (date(2025, 1, 8), et(2025, 1, 10, 9), date(2025, 1, 8), 0),
        (date(2025, 1, 8), et(2025, 1, 10, 16, 30), date(2025, 1, 10), 1),
        (date(2012, 10, 26), et(2012, 10, 31, 9), date(2012, 10, 26), 0),
        (date(2012, 10, 26), et(2012, 10, 31, 17), date(2012, 10, 31), 1),
        # Just after midnight UTC it is still the evening before in New York.
        (date(2024, 11, 14), datetime(2024, 11, 15, 0, 30, tzinfo=UTC), date(2024, 11, 14), 0),
        (date(2024, 11, 13), datetime(2024, 11, 15, 0, 30, tzinfo=UTC), date(2024, 11, 14), 1),
        (FRIDAY, datetime(2024, 11, 18, 0, 30, tzinfo=UTC), FRIDAY, 0),  # Sunday evening in New York
        (FRIDAY, datetime(2024, 11, 18, 20, 59, tzinfo=UTC), FRIDAY, 0),  # Monday 15:59 ET
        (FRIDAY, datetime(2024, 11, 18, 21, 0, tzinfo=UTC), date(2024, 11, 18), 1),  # its close
        # Tuesday morning in Tokyo is Monday afternoon in New York.
        (FRIDAY, datetime(2024, 11, 19, 5, 30, tzinfo=TOKYO), FRIDAY, 0),
        (FRIDAY, datetime(2024, 11, 19, 6, 30, tzinfo=TOKYO), date(2024, 11, 18), 1),
    ],
)
def test_real_calendar_edges(
    calendar: TradingCalendar, latest: date, now: datetime, expected: date, behind: int
) -> None:
    assert calendar.last_closed_session(now) == expected
    bars = pl.DataFrame({"symbol": ["AAA"], "date": [latest]})
    stale = stale_symbols(bars, now, calendar)
    judged = judge_symbols(bars, ["AAA"], now, calendar)
    if behind == 0:
        check_freshness(latest, now, calendar)
        assert stale.is_empty()
        assert judged.fresh
    else:
        with pytest.raises(StalenessError) as raised:
            check_freshness(latest, now, calendar)
        assert (raised.value.expected, raised.value.sessions_behind) == (expected, behind)
        assert stale.rows() == [("AAA", latest, expected, behind)]
        assert not judged.fresh
