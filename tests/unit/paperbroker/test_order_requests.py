"""Checking order bodies as Alpaca does (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from trader.domain.enums import OrderSide, OrderType, TimeInForce
from trader.paperbroker.errors import AlpacaError
from trader.paperbroker.order_requests import NewOrder, check_new_order, parse_new_order, parse_replacement
from trader.paperbroker.prices import asset_id

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


def test_an_asset_id_as_symbol_is_kept_in_its_stored_lower_case_form() -> None:
    asset = asset_id("SYN001")
    body = BASE | {"limit_price": 1}
    assert parse_new_order(body | {"symbol": asset.upper()}).symbol == asset
    assert parse_new_order(body | {"symbol": f" {asset} "}).symbol == asset
    assert parse_new_order(body | {"symbol": " syn001 "}).symbol == "SYN001"


def new_order(**changes: Any) -> NewOrder:
    fields: dict[str, Any] = {
        "symbol": "AAPL",
        "side": OrderSide.BUY,
        "type": OrderType.LIMIT,
        "time_in_force": TimeInForce.DAY,
        "qty": Decimal(2),
        "notional": None,
        "limit_price": Decimal(1),
        "stop_price": None,
        "extended_hours": False,
        "client_order_id": None,
    }
    return NewOrder(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"extended_hours": True, "time_in_force": TimeInForce.IOC},
            "extended hours order must be DAY or GTC",
        ),
        ({"qty": Decimal("1.5"), "time_in_force": TimeInForce.GTC}, "fractional orders must be DAY orders"),
        ({"time_in_force": TimeInForce.CLS}, "time_in_force cls is not supported"),
        ({"stop_price": Decimal(2)}, "stop_price is not allowed for limit orders"),
    ],
)
def test_check_new_order_is_what_post_checks(changes: dict[str, Any], message: str) -> None:
    check_new_order(new_order())
    with pytest.raises(AlpacaError, match=message):
        check_new_order(new_order(**changes))
