"""Pure rules of the breaker and the monitor: risk-reducing orders, approvals, error windows, exposure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from trader.broker.base import Position
from trader.domain.enums import OrderSide, PositionSide
from trader.errors import UsageError
from trader.ops.breakers import BreakerState, BreakerStatus, TripReason, is_risk_reducing
from trader.ops.monitor import ErrorRateTracker, MonitorLimits, _volatility, exposures

T = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
D = Decimal


@pytest.mark.parametrize(
    ("side", "qty", "held", "expected"),
    [
        (OrderSide.SELL, 10, 10, True),  # close a long
        (OrderSide.SELL, 4, 10, True),  # trim a long
        (OrderSide.SELL, 11, 10, False),  # flips to short
        (OrderSide.SELL, 5, 0, False),  # opens a short
        (OrderSide.SELL, 5, -5, False),  # grows a short
        (OrderSide.BUY, 5, -5, True),  # covers a short
        (OrderSide.BUY, 6, -5, False),  # flips to long
        (OrderSide.BUY, 1, 10, False),  # grows a long
        (OrderSide.BUY, 0, -5, False),  # nothing is not an exit
    ],
)
def test_risk_reducing_orders(side: OrderSide, qty: int, held: int, expected: bool) -> None:
    assert is_risk_reducing(side, D(qty), D(held)) is expected


def test_status_kind_and_approval() -> None:
    tripped = BreakerStatus(BreakerState.TRIPPED, "drawdown: 6% below the peak", T)
    assert tripped.kind is TripReason.DRAWDOWN and not tripped.approved
    assert BreakerStatus(BreakerState.TRIPPED, "kill: x", T, "a", T).approved  # same instant counts
    assert not BreakerStatus(BreakerState.TRIPPED, "kill: x", T, "a", T - timedelta(seconds=1)).approved
    assert BreakerStatus(BreakerState.TRIPPED, "something else", T).kind is None
    assert BreakerStatus(BreakerState.OPEN, None, T, "a", T).kind is None
    assert [r for r in TripReason if r.automatic] == [
        TripReason.DRAWDOWN,
        TripReason.BROKER_ERRORS,
        TripReason.STALE_DATA,
    ]


def test_trip_precedence_is_kill_then_manual_then_the_automatic_kinds() -> None:
    automatic = {r.precedence for r in TripReason if r.automatic}
    assert len(automatic) == 1  # among themselves the automatic kinds replace each other
    assert TripReason.KILL.precedence > TripReason.MANUAL.precedence > automatic.pop()


def test_error_rate_counts_only_the_window() -> None:
    now = [T]
    tracker = ErrorRateTracker(timedelta(minutes=5), clock=lambda: now[0])
    for ok in (False, False, True):
        tracker.record(ok)
        now[0] += timedelta(minutes=2)
    # Calls at 0, 2 and 4 minutes; at 6 minutes the first (a failure) has left the window.
    assert tracker.counts() == (1, 2)
    now[0] += timedelta(minutes=10)
    assert tracker.counts() == (0, 0)


def _position(symbol: str, qty: str, value: str | None, price: str = "10") -> Position:
    side = PositionSide.LONG if D(qty) > 0 else PositionSide.SHORT
    return Position(symbol, symbol, side, D(qty), D(price), abs(D(qty)) * D(price),
                    market_value=None if value is None else D(value))  # fmt: skip


def test_gross_and_net_exposure() -> None:
    positions = [_position("A", "10", "1200"), _position("B", "-5", "-300"), _position("C", "2", None, "50")]
    # C has no market value: valued at its entry price (2 × 50).
    assert exposures(positions) == (D("1600"), D("1000"))
    assert exposures([]) == (D(0), D(0))


def test_volatility_is_the_stdev_of_tick_returns() -> None:
    assert _volatility([D(100), D(101)]) is None  # one return is not a spread
    # Returns +1% and -1%: sample standard deviation sqrt(2 × 0.01² / 1) = 0.014142...
    value = _volatility([D(100), D(101), D("99.99")])
    assert value == pytest.approx(0.0141421, rel=1e-4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_drawdown_pct", D(0), "max_drawdown_pct must be in"),
        ("max_drawdown_pct", D("1.5"), "max_drawdown_pct must be in"),
        ("max_error_rate", 0.0, "max_error_rate must be in"),
        ("min_calls", 0, "min_calls must be >= 1"),
        ("error_window", timedelta(0), "error_window must be positive"),
        ("max_sessions_behind", -1, "max_sessions_behind must be >= 0"),
    ],
)
def test_bad_limits_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        MonitorLimits(**{field: value})  # type: ignore[arg-type]
