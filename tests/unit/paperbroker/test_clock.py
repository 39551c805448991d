"""The simulated clock and NYSE regular hours (pure apart from the bundled calendar)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from trader.paperbroker.clock import MarketHours, SimClock

AT = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def test_a_frozen_clock_stands_still_until_moved() -> None:
    clock = SimClock(AT, frozen=True)
    assert clock.now() == AT and clock.simulated
    assert clock.advance(90) == datetime(2024, 3, 5, 15, 1, 30, tzinfo=UTC)


def test_a_running_simulated_clock_moves_forward() -> None:
    clock = SimClock(AT)
    assert clock.now() >= AT


def test_real_time_cannot_be_advanced_and_naive_times_are_refused() -> None:
    clock = SimClock()
    with pytest.raises(ValueError, match="real-time clock"):
        clock.advance(1)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2024, 3, 5, 15, 0))


def test_regular_hours_holidays_and_half_days() -> None:
    hours = MarketHours()
    assert hours.is_open(AT)
    assert not hours.is_open(datetime(2024, 3, 5, 21, 0, tzinfo=UTC))  # 16:00 New York: closed
    assert hours.session(date(2024, 7, 4)) is None
    half = hours.session(date(2024, 11, 29))
    assert half is not None and half.close == datetime(2024, 11, 29, 18, 0, tzinfo=UTC)
    assert hours.next_open(AT) == datetime(2024, 3, 6, 14, 30, tzinfo=UTC)
    friday_evening = datetime(2024, 3, 8, 22, 0, tzinfo=UTC)
    assert hours.next_session(friday_evening).day == date(2024, 3, 11)


def test_the_last_close_is_the_newest_close_at_or_before_the_moment() -> None:
    hours = MarketHours()
    tuesday_close = datetime(2024, 3, 5, 21, 0, tzinfo=UTC)
    assert hours.last_close(tuesday_close) == tuesday_close
    assert hours.last_close(datetime(2024, 3, 5, 20, 59, tzinfo=UTC)) == datetime(
        2024, 3, 4, 21, 0, tzinfo=UTC
    )
    assert hours.last_close(datetime(2024, 3, 11, 13, 0, tzinfo=UTC)) == datetime(
        2024, 3, 8, 21, 0, tzinfo=UTC
    )
    assert hours.last_close(datetime(2024, 11, 29, 19, 0, tzinfo=UTC)) == datetime(
        2024, 11, 29, 18, 0, tzinfo=UTC
    )
