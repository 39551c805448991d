"""The ledger's pure arithmetic: average cost, realized P&L with fees, flips, holding periods, values."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.broker.base import BrokerOrder, TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from trader.errors import TraderError
from trader.portfolio.ledger import (
    MARKET_TZ,
    Fill,
    InvalidFillError,
    MissingPriceError,
    PositionState,
    gross_exposure,
    holding_period,
    market_day_bounds,
    position_step,
    unrealized_pnl,
)

D = Decimal

BUY, SELL = OrderSide.BUY, OrderSide.SELL
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def run(*steps: tuple[OrderSide, str, str, str]) -> tuple[PositionState, list[D]]:
    state, realized = PositionState(), []
    for side, qty, price, fee in steps:
        step = position_step(state, side, D(qty), D(price), D(fee))
        state = step.state
        realized.append(step.realized)
    return state, realized


def test_buys_average_and_a_sell_realizes_against_the_average_net_of_fees() -> None:
    state, realized = run((BUY, "10", "100", "0"), (BUY, "10", "110", "0"), (SELL, "5", "120", "1"))
    assert state.qty == 15
    assert state.avg_price == 105  # (10*100 + 10*110) / 20, unchanged by the sale
    assert realized == [0, 0, D(74)]  # (120 - 105) * 5 - 1
    assert state.realized == 74


def test_fees_on_opening_fills_are_realized_when_paid() -> None:
    state, realized = run((BUY, "10", "100", "1.25"))
    assert (state.qty, state.avg_price, state.realized) == (10, 100, D("-1.25"))
    assert realized == [D("-1.25")]


def test_crossing_zero_closes_the_long_and_opens_a_short_at_the_fill_price() -> None:
    state, realized = run((BUY, "10", "100", "0"), (BUY, "10", "110", "0"), (SELL, "25", "90", "2"))
    assert state.qty == -5
    assert state.avg_price == 90
    assert realized[-1] == (90 - 105) * 20 - 2  # only the 20 long shares realize
    step = position_step(state, BUY, D(5), D(80), D(0))  # cover the short lower: a gain
    assert step.realized == (90 - 80) * 5
    assert step.state == PositionState(D(0), D(0), D(-302) + 50)


def test_closing_exactly_flat_resets_the_average_price() -> None:
    state, realized = run((SELL, "4", "50", "0"), (BUY, "4", "55", "0.5"))
    assert (state.qty, state.avg_price) == (0, 0)
    assert realized == [0, D("-20.5")]  # short 4 at 50, bought back at 55, fee 0.5


def test_partial_cover_of_a_short_keeps_its_average() -> None:
    state, realized = run((SELL, "10", "20", "0"), (SELL, "10", "30", "0"), (BUY, "4", "22", "0"))
    assert (state.qty, state.avg_price) == (-16, 25)
    assert realized[-1] == (25 - 22) * 4


money = st.decimals(min_value=D("0.01"), max_value=D("500"), places=2)
shares = st.integers(min_value=1, max_value=50).map(D)


@given(st.lists(st.tuples(st.sampled_from([BUY, SELL]), shares, money), min_size=1, max_size=12), money)
def test_round_trip_realized_equals_cash_flow(trades: list[tuple[OrderSide, D, D]], last: D) -> None:
    """Closing everything at ``last``: realized P&L is the net cash of all trades (no fees)."""
    state = PositionState()
    cash = D(0)
    for side, qty, price in trades:
        state = position_step(state, side, qty, price, D(0)).state
        cash += -qty * price if side == BUY else qty * price
    if state.qty:
        close = SELL if state.qty > 0 else BUY
        cash += -abs(state.qty) * last if close == BUY else abs(state.qty) * last
        state = position_step(state, close, abs(state.qty), last, D(0)).state
    assert state.qty == 0
    assert abs(state.realized - cash) < D("1e-20")


def ny(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=MARKET_TZ).astimezone(UTC)


@pytest.mark.parametrize(
    ("opened", "closed", "expected"),
    [
        (ny(2022, 1, 10), ny(2023, 1, 10), "short_term"),  # exactly one year is not more than one
        (ny(2022, 1, 10), ny(2023, 1, 11), "long_term"),
        (ny(2024, 2, 29), ny(2025, 2, 28), "short_term"),
        (ny(2024, 2, 29), ny(2025, 3, 1), "long_term"),
        # 23:30 in New York is the next day in UTC: the New York date counts
        (ny(2022, 1, 10, 23), ny(2023, 1, 11, 10), "long_term"),
        (ny(2022, 1, 11, 1), ny(2023, 1, 11, 20), "short_term"),
    ],
)
def test_holding_period_of_long_lots(opened: datetime, closed: datetime, expected: str) -> None:
    assert holding_period("long", opened, closed) == expected


def test_short_sales_are_short_term_however_long() -> None:
    assert holding_period("short", ny(2020, 1, 2), ny(2024, 1, 2)) == "short_term"


def test_market_day_bounds_are_new_york_midnights() -> None:
    start, end = market_day_bounds(date(2024, 3, 8))  # the day before the DST change
    assert start == datetime(2024, 3, 8, 5, tzinfo=UTC)
    assert end == datetime(2024, 3, 9, 5, tzinfo=UTC)
    start, end = market_day_bounds(date(2024, 3, 10))  # 23-hour day
    assert end - start == timedelta(hours=23)


@dataclass
class Pos:
    symbol: str
    qty: D
    avg_price: D


def test_unrealized_and_exposure_of_longs_and_shorts() -> None:
    positions = [Pos("AAA", D(10), D(100)), Pos("BBB", D(-5), D(40)), Pos("CCC", D(0), D(0))]
    prices = {"AAA": D("103.5"), "BBB": D(42)}
    assert unrealized_pnl(positions, prices) == D("35") - D("10")  # long +3.5*10, short -2*5
    assert gross_exposure(positions, prices) == D("1035") + D("210")


def test_an_open_position_without_a_price_is_named() -> None:
    with pytest.raises(MissingPriceError, match="BBB") as caught:
        unrealized_pnl([Pos("AAA", D(1), D(1)), Pos("BBB", D(-1), D(1))], {"AAA": D(1)})
    assert isinstance(caught.value, TraderError)


def fill(**changes: object) -> Fill:
    fields: dict[str, object] = {
        "execution_id": "e1",
        "client_order_id": "c1",
        "symbol": "AAA",
        "side": BUY,
        "qty": D(1),
        "price": D(10),
        "executed_at": T0,
    }
    return Fill(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"qty": 1.5}, "qty must be a Decimal"),
        ({"qty": D(0)}, "qty must be positive"),
        ({"price": D(-1)}, "price must be positive"),
        ({"fee": D("-0.01")}, "fee must not be negative"),
        ({"executed_at": datetime(2024, 3, 5, 15)}, "executed_at"),
        ({"execution_id": ""}, "execution_id"),
        ({"execution_id": "x" * 129}, "execution_id"),
        ({"side": "hold"}, "side"),
        ({"qty": D("NaN")}, "qty must be a finite"),
        ({"catch_up": True}, "catch-up fill needs"),
    ],
)
def test_invalid_fills_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidFillError, match=field):
        fill(**changes)


def broker_order(filled_qty: str, avg: str | None, status: OrderStatus) -> BrokerOrder:
    return BrokerOrder(
        id=str(uuid.uuid4()),
        client_order_id="c1",
        symbol="AAA",
        side=SELL,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
        status=status,
        qty=D(10),
        notional=None,
        filled_qty=D(filled_qty),
        filled_avg_price=None if avg is None else D(avg),
        limit_price=None,
        stop_price=None,
        created_at=T0,
        updated_at=T0,
        submitted_at=T0,
    )


def test_a_stream_fill_becomes_a_real_fill_with_the_cumulative_values() -> None:
    order = broker_order("6", "10.5", OrderStatus.PARTIALLY_FILLED)
    update = TradeUpdate("partial_fill", order, T0, execution_id="x-1", price=D(11), qty=D(2))
    got = Fill.from_trade_update(update, fee=D("0.02"))
    assert got is not None
    assert (got.execution_id, got.qty, got.price, got.fee, got.side) == ("x-1", 2, 11, D("0.02"), SELL)
    assert (got.order_filled_qty, got.order_filled_avg_price, got.catch_up) == (6, D("10.5"), False)
    assert got.broker_order_id == order.id


def test_a_catch_up_fill_is_keyed_by_order_and_cumulative_quantity() -> None:
    order = broker_order("6", "10.5", OrderStatus.CANCELED)
    update = TradeUpdate("partial_fill", order, T0, price=D(11), qty=D(4), synthetic=True)
    got = Fill.from_trade_update(update)
    assert got is not None and got.catch_up
    assert got.execution_id == f"catchup:{order.id}:6"
    # the same catch-up computed again (another reconnect) is the same fill
    again = Fill.from_trade_update(TradeUpdate("partial_fill", order, T0, synthetic=True))
    assert again is not None and again.execution_id == got.execution_id


def test_events_without_a_fill_give_none() -> None:
    assert Fill.from_trade_update(TradeUpdate("new", broker_order("0", None, OrderStatus.NEW), T0)) is None
    nothing = TradeUpdate("fill", broker_order("0", None, OrderStatus.FILLED), T0, synthetic=True)
    assert Fill.from_trade_update(nothing) is None
