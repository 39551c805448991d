"""``same_order``: is the order found under a ``client_order_id`` the one a request asked for?"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from trader.broker.base import BrokerOrder, OrderRequest, same_order
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce

NOW = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
QTY = OrderRequest("coid-1", "AAPL", OrderSide.BUY, OrderType.MARKET, TimeInForce.DAY, qty=Decimal(3))
NOTIONAL = replace(QTY, qty=None, notional=Decimal(100))


def placed(request: OrderRequest, **changes: Any) -> BrokerOrder:
    """The order a broker reports for ``request`` (filled), with ``changes``."""
    order = BrokerOrder(
        id="b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        client_order_id=request.client_order_id,
        symbol=request.symbol,
        side=request.side,
        type=request.type,
        time_in_force=request.time_in_force,
        status=OrderStatus.FILLED,
        qty=request.qty,
        notional=request.notional,
        filled_qty=Decimal("3.146256898"),
        filled_avg_price=Decimal("31.7839"),
        limit_price=None,
        stop_price=None,
        created_at=NOW,
        updated_at=NOW,
        submitted_at=NOW,
    )
    return replace(order, **changes)


def test_a_notional_order_is_matched_on_its_notional_whatever_qty_is_reported() -> None:
    assert same_order(placed(NOTIONAL), NOTIONAL)  # qty null, as Alpaca reports it
    assert same_order(placed(NOTIONAL, qty=Decimal("3.146256898")), NOTIONAL)  # qty = what it filled
    assert not same_order(placed(NOTIONAL, notional=Decimal(99)), NOTIONAL)


@pytest.mark.parametrize(
    "changes",
    [{"qty": Decimal(4)}, {"notional": Decimal(100)}, {"symbol": "MSFT"}, {"side": OrderSide.SELL}],
)
def test_a_qty_order_must_match_qty_and_have_no_notional(changes: dict[str, Any]) -> None:
    assert same_order(placed(QTY), QTY)
    assert same_order(placed(QTY, symbol="aapl"), QTY)
    assert not same_order(placed(QTY, **changes), QTY)
