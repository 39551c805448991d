"""The price the risk limits value an order at: the highest it can be expected to fill at."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from trader.domain.enums import OrderSide, OrderType
from trader.execution.orders import OrderIntent
from trader.execution.service import valuation_price

D = Decimal


def intent(
    side: OrderSide, kind: OrderType, limit: str | None = None, stop: str | None = None
) -> OrderIntent:
    return OrderIntent(
        "s", date(2024, 3, 5), "AAA", side, qty=D(10), order_type=kind,
        limit_price=D(limit) if limit else None, stop_price=D(stop) if stop else None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("order", "reference", "expected"),
    [
        (intent(OrderSide.BUY, OrderType.MARKET), D(190), D(190)),
        (intent(OrderSide.SELL, OrderType.MARKET), D(190), D(190)),
        # A buy limit never pays more than its limit: the limit is its price, with or without a market.
        (intent(OrderSide.BUY, OrderType.LIMIT, limit="1.00"), D(190), D("1.00")),
        (intent(OrderSide.BUY, OrderType.LIMIT, limit="250"), None, D(250)),
        (intent(OrderSide.BUY, OrderType.STOP_LIMIT, limit="260", stop="250"), D(190), D(260)),
        # A buy stop fills at or above its stop, not at today's price.
        (intent(OrderSide.BUY, OrderType.STOP, stop="250"), D(190), D(250)),
        # A sell limit far below the market fills near the market.
        (intent(OrderSide.SELL, OrderType.LIMIT, limit="1.00"), D(190), D(190)),
        (intent(OrderSide.SELL, OrderType.LIMIT, limit="200"), D(190), D(200)),
        (intent(OrderSide.SELL, OrderType.STOP, stop="180"), D(190), D(190)),
    ],
)
def test_the_highest_expected_fill_price(
    order: OrderIntent, reference: Decimal | None, expected: Decimal
) -> None:
    assert valuation_price(order, reference) == expected


@pytest.mark.parametrize("reference", [None, D("NaN"), D("Infinity"), D("-Infinity"), D(0), D(-5)])
@pytest.mark.parametrize(
    "order",
    [
        intent(OrderSide.BUY, OrderType.MARKET),
        intent(OrderSide.BUY, OrderType.STOP, stop="250"),
        intent(OrderSide.SELL, OrderType.LIMIT, limit="1.00"),
        intent(OrderSide.SELL, OrderType.MARKET),
    ],
)
def test_without_a_usable_reference_only_a_buy_limit_has_a_price(
    order: OrderIntent, reference: Decimal | None
) -> None:
    assert valuation_price(order, reference) is None
