"""Alpaca's order statuses → ours. One exhaustive table; a unit test fails if the SDK gains a status."""

from __future__ import annotations

from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus

from trader.domain.enums import OrderStatus

#: Every ``alpaca.trading.enums.OrderStatus`` member and the status we store for it.
STATUS_MAP: dict[AlpacaOrderStatus, OrderStatus] = {
    AlpacaOrderStatus.NEW: OrderStatus.NEW,
    AlpacaOrderStatus.PARTIALLY_FILLED: OrderStatus.PARTIALLY_FILLED,
    AlpacaOrderStatus.FILLED: OrderStatus.FILLED,
    AlpacaOrderStatus.DONE_FOR_DAY: OrderStatus.DONE_FOR_DAY,
    AlpacaOrderStatus.CANCELED: OrderStatus.CANCELED,
    AlpacaOrderStatus.EXPIRED: OrderStatus.EXPIRED,
    AlpacaOrderStatus.REPLACED: OrderStatus.REPLACED,
    AlpacaOrderStatus.PENDING_CANCEL: OrderStatus.PENDING_CANCEL,
    AlpacaOrderStatus.PENDING_REPLACE: OrderStatus.PENDING_REPLACE,
    AlpacaOrderStatus.PENDING_REVIEW: OrderStatus.PENDING_REVIEW,
    AlpacaOrderStatus.ACCEPTED: OrderStatus.ACCEPTED,
    AlpacaOrderStatus.PENDING_NEW: OrderStatus.PENDING_NEW,
    AlpacaOrderStatus.ACCEPTED_FOR_BIDDING: OrderStatus.ACCEPTED_FOR_BIDDING,
    AlpacaOrderStatus.STOPPED: OrderStatus.STOPPED,
    AlpacaOrderStatus.REJECTED: OrderStatus.REJECTED,
    AlpacaOrderStatus.SUSPENDED: OrderStatus.SUSPENDED,
    AlpacaOrderStatus.CALCULATED: OrderStatus.CALCULATED,
    AlpacaOrderStatus.HELD: OrderStatus.HELD,
}


def to_order_status(value: AlpacaOrderStatus | str) -> OrderStatus:
    """Our status for an SDK status or its text; ``ValueError`` for a status Alpaca never documented."""
    return STATUS_MAP[AlpacaOrderStatus(value)]
