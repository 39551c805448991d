"""The broker interface the rest of the system uses, and the small typed values it speaks.

Everything here is broker-neutral: money and quantities are ``Decimal``, times are UTC-aware
datetimes, statuses and sides are :mod:`trader.domain.enums` values. Adapters
(:class:`~trader.broker.alpaca.AlpacaBroker`, :class:`~trader.broker.dryrun.DryRunBroker`) translate
their SDK's models into these.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Protocol, runtime_checkable

from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce

#: Alpaca's limit on ``client_order_id`` length.
MAX_CLIENT_ORDER_ID_LENGTH = 128

#: Statuses after which an order never changes again.
TERMINAL_STATUSES = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REPLACED,
        OrderStatus.REJECTED,
        OrderStatus.DRY_RUN,
    }
)


def new_client_order_id(prefix: str = "") -> str:
    """A fresh, unique ``client_order_id``: ``prefix`` + 32 hex digits.

    The id must be chosen (and stored) *before* the first send: it is what makes a resend after a lost
    response safe, because the broker refuses a second order with the same id.
    """
    return f"{prefix}{uuid.uuid4().hex}"


class OrderQuery(StrEnum):
    """Which orders a listing returns (Alpaca's ``status`` query parameter)."""

    OPEN = "open"
    CLOSED = "closed"
    ALL = "all"


@dataclass(frozen=True)
class OrderRequest:
    """An order to send. Exactly one of ``qty`` and ``notional``; prices as the order type needs them.

    ``client_order_id`` is mandatory: it is our idempotency key (see :func:`new_client_order_id`).
    Only simple orders are supported (no bracket/OCO/OTO legs).
    """

    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_percent: Decimal | None = None
    extended_hours: bool = False

    def __post_init__(self) -> None:
        for problem in _order_request_problems(self):
            raise ValueError(f"invalid order {self.client_order_id!r}: {problem}")


def _order_request_problems(req: OrderRequest) -> list[str]:
    problems: list[str] = []
    if not req.client_order_id or len(req.client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
        problems.append(f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LENGTH} characters")
    if not req.symbol.strip():
        problems.append("symbol is empty")
    if (req.qty is None) == (req.notional is None):
        problems.append("give exactly one of qty and notional")
    for name in ("qty", "notional", "limit_price", "stop_price", "trail_price", "trail_percent"):
        value = getattr(req, name)
        if value is not None and not value > 0:
            problems.append(f"{name} must be positive")
    needs = {
        OrderType.LIMIT: ("limit_price",),
        OrderType.STOP: ("stop_price",),
        OrderType.STOP_LIMIT: ("limit_price", "stop_price"),
    }.get(req.type, ())
    problems.extend(f"a {req.type} order needs {name}" for name in needs if getattr(req, name) is None)
    if req.type == OrderType.TRAILING_STOP and (req.trail_price is None) == (req.trail_percent is None):
        problems.append("a trailing_stop order needs exactly one of trail_price and trail_percent")
    return problems


def replacement_problems(
    client_order_id: str,
    *,
    qty: Decimal | None,
    limit_price: Decimal | None,
    stop_price: Decimal | None,
    time_in_force: TimeInForce | None,
) -> list[str]:
    """What is wrong with a replacement (``Broker.replace_order``) before it is sent; empty when fine.

    Alpaca replaces whole-share quantities only, and something must change.
    """
    problems: list[str] = []
    if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID_LENGTH:
        problems.append(f"client_order_id must be 1 to {MAX_CLIENT_ORDER_ID_LENGTH} characters")
    if qty is None and limit_price is None and stop_price is None and time_in_force is None:
        problems.append("nothing to change: give qty, limit_price, stop_price or time_in_force")
    for name, value in (("qty", qty), ("limit_price", limit_price), ("stop_price", stop_price)):
        if value is not None and not value > 0:
            problems.append(f"{name} must be positive")
    if qty is not None and qty > 0 and qty != qty.to_integral_value():
        problems.append("qty must be a whole number of shares")
    return problems


@dataclass(frozen=True)
class BrokerOrder:
    """An order as the broker knows it. ``filled_qty`` is cumulative; ``filled_avg_price`` its average.

    ``replaces`` is the id of the order this one replaced (see ``Broker.replace_order``);
    ``replaced_by`` the id of the order that replaced this one (its status is then ``replaced``).
    """

    id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    status: OrderStatus
    qty: Decimal | None
    notional: Decimal | None
    filled_qty: Decimal
    filled_avg_price: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_at: datetime
    updated_at: datetime
    submitted_at: datetime
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    extended_hours: bool = False
    replaces: str | None = None
    replaced_by: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the order cannot change any more (filled, canceled, expired, replaced...)."""
        return self.status in TERMINAL_STATUSES


def same_order(order: BrokerOrder, request: OrderRequest) -> bool:
    """Whether ``order`` is what ``request`` asked for (symbol, side, type, size, prices)."""
    return (
        order.client_order_id == request.client_order_id
        and order.symbol.upper() == request.symbol.upper()
        and order.side == request.side
        and order.type == request.type
        and _same_size(order, request)
        and order.limit_price == request.limit_price
        and order.stop_price == request.stop_price
    )


def _same_size(order: BrokerOrder, request: OrderRequest) -> bool:
    """A notional request is sized by its notional alone: the shares it buys are only known once it
    fills, and a broker may report them as ``qty`` (Alpaca keeps ``qty`` null, see reference §3.2)."""
    if request.notional is not None:
        return order.notional == request.notional
    return order.qty == request.qty and order.notional is None


@dataclass(frozen=True)
class Position:
    """An open position. ``qty`` is signed (negative when short), as Alpaca reports it."""

    symbol: str
    asset_id: str
    side: PositionSide
    qty: Decimal
    avg_entry_price: Decimal
    cost_basis: Decimal
    market_value: Decimal | None = None
    current_price: Decimal | None = None
    unrealized_pl: Decimal | None = None
    qty_available: Decimal | None = None


@dataclass(frozen=True)
class Account:
    """The account's balances and flags (Alpaca's ``/v2/account``, the fields we use)."""

    id: str
    account_number: str
    status: str
    currency: str
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    long_market_value: Decimal = Decimal(0)
    short_market_value: Decimal = Decimal(0)
    last_equity: Decimal | None = None
    multiplier: Decimal | None = None
    trading_blocked: bool = False
    account_blocked: bool = False
    shorting_enabled: bool = False


@dataclass(frozen=True)
class Clock:
    """The market clock, in UTC."""

    timestamp: datetime
    is_open: bool
    next_open: datetime
    next_close: datetime


@dataclass(frozen=True)
class CancelResult:
    """One order of a cancel-all: its id and the HTTP status of its cancel (200/204 ok, else failed)."""

    order_id: str
    status: int
    message: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class ClosePositionResult:
    """One position of a close-all: the closing order when it worked, else the error message."""

    symbol: str
    status: int
    order: BrokerOrder | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class TradeEvent(StrEnum):
    """Event names of Alpaca's ``trade_updates`` stream (the ones we act on; others pass as text)."""

    NEW = "new"
    ACCEPTED = "accepted"
    PENDING_NEW = "pending_new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    DONE_FOR_DAY = "done_for_day"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REPLACED = "replaced"
    REJECTED = "rejected"
    PENDING_CANCEL = "pending_cancel"
    PENDING_REPLACE = "pending_replace"
    STOPPED = "stopped"
    SUSPENDED = "suspended"
    CALCULATED = "calculated"
    RESTATED = "restated"
    ORDER_CANCEL_REJECTED = "order_cancel_rejected"
    ORDER_REPLACE_REJECTED = "order_replace_rejected"


@dataclass(frozen=True)
class TradeUpdate:
    """One change of one order.

    ``price``/``qty`` are *this execution's* price and quantity on fills (cumulative values are on
    ``order``). ``synthetic`` updates come from the REST catch-up after a reconnect, not from the
    stream: they carry the order's state and, for fills, the quantity filled since the last update we
    delivered (several missed executions arrive as one), with their average price.
    """

    event: str
    order: BrokerOrder
    timestamp: datetime
    execution_id: str | None = None
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None
    synthetic: bool = False


#: A trade-update handler: sync or async. Exceptions it raises are logged and swallowed.
TradeUpdateHandler = Callable[[TradeUpdate], Awaitable[None] | None]


@runtime_checkable
class UpdateStream(Protocol):
    """A running (or startable) trade-update subscription."""

    def run(self) -> None:
        """Block, delivering updates, until :meth:`stop` is called (from another thread)."""

    def start(self, timeout: float = 10.0) -> bool:
        """Run in a background thread; return whether it connected within ``timeout`` seconds."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """Stop delivering and close the connection. Safe to call more than once."""


@runtime_checkable
class Broker(Protocol):
    """What the rest of the system needs from a broker. All calls are synchronous and bounded in time.

    Failures raise :class:`~trader.broker.errors.BrokerError` subclasses that say whether a retry is
    safe; an adapter has already spent its own bounded retries when one escapes.
    """

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        """Send an order once and only once, even across lost responses; return the broker's order."""
        ...

    def replace_order(
        self,
        order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        client_order_id: str | None = None,
    ) -> BrokerOrder:
        """Replace an open order by a new one with the given changes; return the new order.

        The new order has its own id and ``replaces == order_id``; the old one ends ``replaced``.
        Exactly once like :meth:`submit_order`: the new order's ``client_order_id`` (generated when
        not given) resolves a lost response. Unchanged fields keep the old order's values; ``qty``
        defaults to what the old order had left to fill.
        """
        ...

    def get_order(self, order_id: str) -> BrokerOrder:
        """The order with the broker's ``order_id`` (``NotFoundError`` if none)."""
        ...

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order with our ``client_order_id``, or ``None`` if the broker has none."""
        ...

    def cancel_order(self, order_id: str) -> None:
        """Ask the broker to cancel; the final state arrives as a trade update."""
        ...

    def cancel_all_orders(self) -> list[CancelResult]:
        """Ask the broker to cancel every open order."""
        ...

    def list_orders(
        self,
        status: OrderQuery = OrderQuery.OPEN,
        *,
        after: datetime | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[BrokerOrder]:
        """Every order matching (all pages), oldest submission first. ``after``: submitted after."""
        ...

    def list_open_orders(self) -> list[BrokerOrder]:
        """Every open order."""
        ...

    def get_positions(self) -> list[Position]:
        """Every open position."""
        ...

    def get_position(self, symbol: str) -> Position | None:
        """The open position in ``symbol``, or ``None``."""
        ...

    def close_position(self, symbol: str, *, qty: Decimal | None = None) -> BrokerOrder:
        """Send the order that closes ``symbol`` (all of it, or ``qty``)."""
        ...

    def close_all_positions(self, *, cancel_orders: bool = True) -> list[ClosePositionResult]:
        """Send closing orders for every position (cancelling open orders first by default)."""
        ...

    def get_account(self) -> Account:
        """The account's balances."""
        ...

    def get_clock(self) -> Clock:
        """The market clock."""
        ...

    def trade_updates(self, handler: TradeUpdateHandler, *, since: datetime | None = None) -> UpdateStream:
        """A subscription delivering every order change to ``handler`` (see :mod:`trader.broker.stream`)."""
        ...
