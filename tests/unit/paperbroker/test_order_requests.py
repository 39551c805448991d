"""Checking order bodies as Alpaca does (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from trader.domain.enums import OrderType, TimeInForce
from trader.paperbroker.errors import AlpacaError
from trader.paperbroker.order_requests import parse_new_order, parse_replacement

BASE: dict[str, Any] = {"symbol": "aapl", "side": "buy", "type": "limit", "time_in_force": "gtc", "qty": "10"}


def test_a_good_body_is_normalised() -> None:
    order = parse_new_order(BASE | {"limit_price": 101.5, "qty": 10.0})
    assert order.symbol == "AAPL"
    assert order.type is OrderType.LIMIT and order.time_in_force is TimeInForce.GTC
    assert order.qty == Decimal(10) and str(order.qty) == "10"
    assert order.limit_price == Decimal("101.5")
    assert not order.fractional


def test_sub_dollar_prices_may_have_four_places() -> None:
    assert parse_new_order(BASE | {"limit_price": "0.1234"}).limit_price == Decimal("0.1234")
    with pytest.raises(AlpacaError, match="sub-penny"):
        parse_new_order(BASE | {"limit_price": "0.12345"})


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ([1, 2], 400, 40010000),
        (BASE | {"limit_price": 1, "qty": "1.1234567891"}, 422, 42210000),
        (BASE | {"limit_price": 1, "qty": "abc"}, 422, 42210000),
        (BASE | {"limit_price": 1, "order_class": "bracket"}, 422, 42210000),
        (BASE | {"limit_price": 1, "type": "trailing_stop"}, 422, 42210000),
        (BASE | {"limit_price": 1, "client_order_id": 5}, 422, 40010001),
        (BASE | {"limit_price": 1, "extended_hours": "yes"}, 422, 42210000),
    ],
)
def test_bad_bodies(body: Any, status: int, code: int) -> None:
    with pytest.raises(AlpacaError) as caught:
        parse_new_order(body)
    assert (caught.value.status, caught.value.code) == (status, code)


def test_replacement_needs_whole_positive_qty() -> None:
    assert parse_replacement({"qty": "3", "limit_price": "9.5"}).qty == Decimal(3)
    with pytest.raises(AlpacaError, match="whole number"):
        parse_replacement({"qty": "2.5"})
