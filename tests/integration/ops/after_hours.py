"""A broker outside market hours, as Alpaca behaves then: a cancel stays ``pending_cancel`` until the
open with the shares still held (so a new closing order for them is refused), and nothing fills until
:meth:`AfterHoursBroker.open_market`. The built-in paper broker cancels at once, so the kill switch's
after-hours re-runs are tested against this."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from trader.broker.base import BrokerOrder, CancelResult, Clock, OrderRequest, Position
from trader.broker.errors import NotCancelableError, RejectedOrderError
from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce

NOW = datetime(2024, 3, 5, 23, 0, tzinfo=UTC)  # 18:00 in New York: closed
OPEN = frozenset(
    {
        OrderStatus.NEW,
        OrderStatus.ACCEPTED,
        OrderStatus.PENDING_NEW,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.PENDING_CANCEL,
        OrderStatus.PENDING_REPLACE,
        OrderStatus.HELD,
    }
)


class AfterHoursBroker:
    """Positions and orders in memory; see the module doc. ``log`` lists the orders sent."""

    def __init__(self, positions: dict[str, Decimal]) -> None:
        self.positions = dict(positions)
        self.orders: dict[str, BrokerOrder] = {}
        self.log: list[str] = []

    def add_order(self, client_order_id: str, symbol: str, side: OrderSide, qty: Decimal) -> BrokerOrder:
        order = BrokerOrder(
            str(uuid.uuid4()), client_order_id, symbol, side, OrderType.MARKET, TimeInForce.DAY,
            OrderStatus.ACCEPTED, qty, None, Decimal(0), None, None, None, NOW, NOW,
            NOW + timedelta(microseconds=len(self.orders)),
        )  # fmt: skip
        self.orders[order.id] = order
        return order

    def _held(self, symbol: str, side: OrderSide) -> Decimal:
        return sum(
            (o.qty - o.filled_qty for o in self.orders.values() if o.status in OPEN and o.qty is not None
             and o.symbol == symbol and o.side == side),
            Decimal(0),
        )  # fmt: skip

    def _refuse_beyond_available(self, symbol: str, side: OrderSide, qty: Decimal) -> None:
        held = self.positions.get(symbol, Decimal(0))
        if (side is OrderSide.SELL and held > 0) or (side is OrderSide.BUY and held < 0):
            available = abs(held) - self._held(symbol, side)
            if qty > available:
                raise RejectedOrderError(
                    f"insufficient qty available for order (requested: {qty}, available: {available})",
                    status=403,
                )

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        assert request.qty is not None
        self._refuse_beyond_available(request.symbol, request.side, request.qty)
        self.log.append(f"submit {request.symbol} {request.side.value} {request.qty}")
        return self.add_order(request.client_order_id, request.symbol, request.side, request.qty)

    def close_position(self, symbol: str, *, qty: Decimal | None = None) -> BrokerOrder:
        held = self.positions[symbol]
        side = OrderSide.SELL if held > 0 else OrderSide.BUY
        amount = qty if qty is not None else abs(held)
        self._refuse_beyond_available(symbol, side, amount)
        self.log.append(f"close_position {symbol} {amount}")
        return self.add_order(f"close-{uuid.uuid4().hex[:8]}", symbol, side, amount)

    def get_order(self, order_id: str) -> BrokerOrder:
        return self.orders[order_id]

    def list_open_orders(self) -> list[BrokerOrder]:
        return sorted((o for o in self.orders.values() if o.status in OPEN), key=lambda o: o.submitted_at)

    def cancel_order(self, order_id: str) -> None:
        order = self.orders[order_id]
        if order.status not in OPEN or order.status is OrderStatus.PENDING_CANCEL:
            raise NotCancelableError("order is not cancelable", status=422)
        self.orders[order_id] = replace(order, status=OrderStatus.PENDING_CANCEL)

    def cancel_all_orders(self) -> list[CancelResult]:
        results = []
        for order in self.list_open_orders():
            try:
                self.cancel_order(order.id)
                results.append(CancelResult(order.id, 200))
            except NotCancelableError as exc:
                results.append(CancelResult(order.id, 422, str(exc)))
        return results

    def get_positions(self) -> list[Position]:
        return [
            Position(
                s, f"a-{s}", PositionSide.LONG if q > 0 else PositionSide.SHORT, q, Decimal(10), abs(q) * 10
            )
            for s, q in self.positions.items()
            if q != 0
        ]

    def get_clock(self) -> Clock:
        return Clock(NOW, False, NOW + timedelta(hours=15), NOW + timedelta(hours=22))

    def open_market(self) -> None:
        """The open: pending cancels complete, every other open order fills."""
        for order_id, order in list(self.orders.items()):
            if order.status is OrderStatus.PENDING_CANCEL:
                self.orders[order_id] = replace(order, status=OrderStatus.CANCELED)
            elif order.status in OPEN and order.qty is not None:
                rest = order.qty - order.filled_qty
                change = rest if order.side is OrderSide.BUY else -rest
                self.positions[order.symbol] = self.positions.get(order.symbol, Decimal(0)) + change
                self.orders[order_id] = replace(order, status=OrderStatus.FILLED, filled_qty=order.qty)
