"""``PATCH /v2/orders/{id}`` follows Alpaca's rules, through the official alpaca-py SDK.

The spec refuses a replace while the order is ``accepted`` (not yet at the exchange), refuses a new
``qty`` for a fractional order, and the order a replace makes must be one ``POST /v2/orders`` takes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, ReplaceOrderRequest

from tests.integration.paperbroker.conftest import set_clock
from tests.integration.paperbroker.test_trading import api_error
from tests.support.paper_broker import RunningBroker

SYMBOL = "SYN005"


def resting_buy(qty: float = 2, tif: TimeInForce = TimeInForce.DAY, **kw: object) -> LimitOrderRequest:
    """A buy limit far below the market: it stays open."""
    return LimitOrderRequest(
        symbol=SYMBOL, qty=qty, side=OrderSide.BUY, time_in_force=tif, limit_price=1.0, **kw
    )


def test_an_accepted_order_cannot_be_replaced_until_it_is_sent(
    broker: RunningBroker, trading: TradingClient
) -> None:
    set_clock(broker, datetime(2024, 3, 9, 15, 0, tzinfo=UTC))  # Saturday: the order waits
    order = trading.submit_order(resting_buy())
    assert order.status == OrderStatus.ACCEPTED
    status, body = api_error(
        lambda: trading.replace_order_by_id(order.id, ReplaceOrderRequest(limit_price=1.1))
    )
    assert (status, body) == (
        422,
        {"code": 40010001, "message": "unable to replace order, order isn't sent to exchange yet"},
    )
    assert trading.get_order_by_id(order.id).status == OrderStatus.ACCEPTED
    set_clock(broker, datetime(2024, 3, 11, 13, 31, tzinfo=UTC))  # Monday, just after the open
    new = trading.replace_order_by_id(order.id, ReplaceOrderRequest(limit_price=1.1))
    assert new.replaces == order.id and Decimal(new.limit_price) == Decimal("1.1")


def test_the_qty_of_a_fractional_order_cannot_change_but_its_price_can(trading: TradingClient) -> None:
    order = trading.submit_order(resting_buy(qty=1.5))
    status, body = api_error(lambda: trading.replace_order_by_id(order.id, ReplaceOrderRequest(qty=2)))
    assert (status, body) == (
        422,
        {"code": 42210000, "message": "qty of fractional orders cannot be changed"},
    )
    repriced = trading.replace_order_by_id(order.id, ReplaceOrderRequest(limit_price=1.25))
    assert (repriced.qty, repriced.limit_price) == ("1.5", "1.25")
    status, body = api_error(
        lambda: trading.replace_order_by_id(repriced.id, ReplaceOrderRequest(time_in_force=TimeInForce.GTC))
    )
    assert (status, body["message"]) == (422, "fractional orders must be DAY orders")


def test_a_replace_keeps_the_extended_hours_rules(trading: TradingClient) -> None:
    order = trading.submit_order(resting_buy(extended_hours=True))
    for tif in (TimeInForce.IOC, TimeInForce.FOK):
        status, body = api_error(
            lambda tif=tif: trading.replace_order_by_id(order.id, ReplaceOrderRequest(time_in_force=tif))
        )
        assert (status, body["message"]) == (422, "extended hours order must be DAY or GTC limit orders")
    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW
    kept = trading.replace_order_by_id(order.id, ReplaceOrderRequest(time_in_force=TimeInForce.GTC))
    assert kept.extended_hours and kept.time_in_force == TimeInForce.GTC


def test_a_replace_is_refused_what_post_refuses(trading: TradingClient) -> None:
    order = trading.submit_order(resting_buy())
    status, body = api_error(
        lambda: trading.replace_order_by_id(order.id, ReplaceOrderRequest(time_in_force=TimeInForce.OPG))
    )
    assert (status, body["message"]) == (422, "time_in_force opg is not supported by the paper broker")
    status, body = api_error(lambda: trading.replace_order_by_id(order.id, ReplaceOrderRequest(stop_price=2)))
    assert (status, body["message"]) == (422, "stop_price is not allowed for limit orders")
    status, body = api_error(
        lambda: trading.replace_order_by_id(order.id, ReplaceOrderRequest(limit_price=10.123))
    )
    assert status == 422 and "sub-penny" in body["message"]
