"""Shares held by open orders, and notional sells, through the official alpaca-py SDK.

Alpaca counts every open closing order against a position (``qty_available``, and the 403
``insufficient qty available`` on the next sell), a notional one included, and never lets a
fractional (notional) order open a short (reference §3.5).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from tests.integration.paperbroker.conftest import StartBroker, client_of, set_clock
from tests.integration.paperbroker.test_trading import Bar, api_error, market
from tests.support.paper_broker import RunningBroker

SYMBOL = "SYN001"
#: Tuesday 2024-03-05 18:00 New York: closed, so market orders wait for Wednesday's open.
TUESDAY_EVENING = datetime(2024, 3, 5, 23, 0, tzinfo=UTC)
WEDNESDAY_OPEN = datetime(2024, 3, 6, 14, 30, tzinfo=UTC)


def notional_sell(amount: Any, symbol: str = SYMBOL) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol, notional=amount, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
    )


def far_limit(side: OrderSide, qty: int, price: float) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=SYMBOL, qty=qty, side=side, time_in_force=TimeInForce.GTC, limit_price=price
    )


def test_qty_available_is_the_position_less_open_closing_orders(trading: TradingClient) -> None:
    trading.submit_order(market(qty=10))
    assert trading.get_open_position(SYMBOL).qty_available == "10"
    trading.submit_order(far_limit(OrderSide.SELL, 4, 9999))
    position = trading.get_open_position(SYMBOL)
    assert (position.qty, position.qty_available) == ("10", "6")
    assert [p.qty_available for p in trading.get_all_positions()] == ["6"]


def test_qty_available_of_a_short_is_negative_and_counts_open_covers(trading: TradingClient) -> None:
    trading.submit_order(market(qty=5, side=OrderSide.SELL))
    trading.submit_order(far_limit(OrderSide.BUY, 2, 1))
    position = trading.get_open_position(SYMBOL)
    assert (position.qty, position.qty_available) == ("-5", "-3")


def test_an_open_notional_sell_holds_shares(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    trading.submit_order(market(qty=10))
    set_clock(broker, TUESDAY_EVENING)
    close = bar_of(SYMBOL, date(2024, 3, 5))["close"]
    pending = trading.submit_order(notional_sell(200))
    assert pending.status == OrderStatus.ACCEPTED and pending.qty is None
    held = (Decimal(200) / close).quantize(Decimal("0.000000001"), ROUND_DOWN)
    status, body = api_error(lambda: trading.submit_order(market(qty=10, side=OrderSide.SELL)))
    assert status == 403 and body["code"] == 40310000
    assert Decimal(body["available"]) == 10 - held and Decimal(body["held_for_orders"]) == held
    assert body["related_orders"] == [str(pending.id)]
    assert Decimal(trading.get_open_position(SYMBOL).qty_available) == 10 - held

    set_clock(broker, WEDNESDAY_OPEN)
    sold = trading.get_order_by_id(pending.id)
    assert sold.status == OrderStatus.FILLED
    assert Decimal(trading.get_open_position(SYMBOL).qty) == 10 - Decimal(sold.filled_qty) > 0


def test_a_notional_sell_never_sells_more_than_the_long_position(start_broker: StartBroker) -> None:
    with start_broker(slippage_bps=Decimal(50)) as running:
        client = client_of(running)
        client.submit_order(market(symbol="SYN002", qty=1))
        worth = Decimal(client.get_open_position("SYN002").current_price)
        sale = client.submit_order(notional_sell(float(worth), "SYN002"))  # filled 0.5 % lower
        sold = client.get_order_by_id(sale.id)
        assert sold.status == OrderStatus.FILLED and sold.filled_qty == "1"
        assert sold.qty is None and Decimal(sold.notional) == worth
        assert client.get_all_positions() == []


def test_a_notional_sell_after_a_gap_down_closes_the_position_without_going_short(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    symbol = "SYN000"
    assert bar_of(symbol, date(2024, 3, 6))["open"] < bar_of(symbol, date(2024, 3, 5))["close"]
    trading.submit_order(market(symbol=symbol, qty=1))
    set_clock(broker, TUESDAY_EVENING)
    worth = float(trading.get_open_position(symbol).current_price)
    sale = trading.submit_order(notional_sell(worth, symbol))
    set_clock(broker, WEDNESDAY_OPEN)
    assert trading.get_order_by_id(sale.id).filled_qty == "1"
    assert trading.get_all_positions() == []


def test_a_notional_sell_leaves_the_shares_another_open_sell_holds(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    # Ten shares; after hours a notional sell of just under five shares and a limit sell of five,
    # accepted against what was left. The gap down at the open makes the notional worth more than
    # five shares: it may only take what the limit sell does not hold, so nothing goes short.
    symbol = "SYN000"
    assert bar_of(symbol, date(2024, 3, 6))["open"] < bar_of(symbol, date(2024, 3, 5))["close"]
    trading.submit_order(market(symbol=symbol, qty=10))
    set_clock(broker, TUESDAY_EVENING)
    price = Decimal(trading.get_open_position(symbol).current_price)
    notional = (price * Decimal("4.999")).quantize(Decimal("0.01"))
    first = trading.submit_order(notional_sell(float(notional), symbol))
    second = trading.submit_order(
        LimitOrderRequest(
            symbol=symbol, qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.DAY, limit_price=1
        )
    )
    set_clock(broker, WEDNESDAY_OPEN)
    assert trading.get_order_by_id(first.id).filled_qty == "5"
    assert trading.get_order_by_id(second.id).filled_qty == "5"
    assert trading.get_all_positions() == []
