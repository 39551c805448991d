"""``DryRunBroker``: records what would be sent, sends nothing, and never pretends an order filled.

Under ``DRY_RUN=true`` the order path runs end to end, but writes stop here: every order request is
recorded and answered with a :class:`~trader.broker.base.BrokerOrder` in status ``dry_run`` (a
terminal status of ours: it will never fill, so nothing downstream books a fill that did not happen).
Reads (account, clock, positions, open orders at the broker) go to an optional real ``reader``, e.g.
the :class:`~trader.broker.alpaca.AlpacaBroker` of the same keys; without one they are empty, and
account/clock raise.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from trader.broker.base import (
    Account,
    Broker,
    BrokerOrder,
    CancelResult,
    Clock,
    ClosePositionResult,
    OrderQuery,
    OrderRequest,
    Position,
    TradeUpdateHandler,
    UpdateStream,
    new_client_order_id,
    replacement_problems,
    same_order,
)
from trader.broker.errors import BrokerError, DuplicateClientOrderIdError, InvalidOrderError, NotFoundError
from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce


@dataclass(frozen=True)
class DryRunAction:
    """One thing the dry-run broker was asked to do, in order.

    A ``replace`` carries the replaced ``order_id`` and, as ``order``, the ``dry_run`` order it answered
    with (its fields are the replacement's).
    """

    kind: Literal["submit", "replace", "cancel", "cancel_all", "close_position", "close_all_positions"]
    at: datetime
    request: OrderRequest | None = None
    order_id: str | None = None
    symbol: str | None = None
    qty: Decimal | None = None
    order: BrokerOrder | None = None


class _NullStream:
    """A stream with nothing to say: dry-run orders never change."""

    def run(self) -> None:
        """Nothing to deliver: returns at once."""

    def start(self, timeout: float = 10.0) -> bool:
        """Nothing to start: always "connected"."""
        return True

    def stop(self, timeout: float = 10.0) -> None:
        """Nothing to stop."""


class DryRunBroker:
    """A :class:`~trader.broker.base.Broker` that records instead of sending (see the module doc)."""

    def __init__(self, reader: Broker | None = None) -> None:
        self.reader = reader
        self.actions: list[DryRunAction] = []
        self._orders: dict[str, BrokerOrder] = {}  # by client_order_id
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DryRunBroker(recorded={len(self.actions)}, reader={self.reader!r})"

    @property
    def submitted(self) -> list[OrderRequest]:
        """The order requests recorded so far, in order."""
        return [action.request for action in self.actions if action.request is not None]

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        """Record ``request``; the same request again returns the same order (as Alpaca would)."""
        now = datetime.now(UTC)
        with self._lock:
            existing = self._orders.get(request.client_order_id)
            if existing is not None:
                if not same_order(existing, request):
                    raise DuplicateClientOrderIdError(
                        f"dry run: client_order_id {request.client_order_id} already used for another order",
                        operation="submit order",
                        client_order_id=request.client_order_id,
                    )
                return existing
            order = _dry_order(request, now)
            self._orders[request.client_order_id] = order
            self.actions.append(DryRunAction("submit", now, request=request))
            return order

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
        """Record the replacement; answer with a new ``dry_run`` order whose ``replaces`` is ``order_id``.

        ``order_id`` is a recorded order or an open one at the reader. Nothing is sent, so the old
        order does not change (a reader's order stays open at the broker; a recorded one stays
        ``dry_run``). The same ``client_order_id`` again returns the same new order, as Alpaca would.
        """
        coid = client_order_id if client_order_id is not None else new_client_order_id()
        problems = replacement_problems(
            coid, qty=qty, limit_price=limit_price, stop_price=stop_price, time_in_force=time_in_force
        )
        old = self.get_order(order_id)
        problems += _replace_refusals(old, limit_price, stop_price)
        if problems:
            raise InvalidOrderError(
                f"dry run: replace order {order_id}: {'; '.join(problems)}",
                operation="replace order",
                client_order_id=coid,
            )
        now = datetime.now(UTC)
        with self._lock:
            existing = self._orders.get(coid)
            if existing is not None:
                if existing.replaces != old.id:
                    raise DuplicateClientOrderIdError(
                        f"dry run: client_order_id {coid} already used for another order",
                        operation="replace order",
                        client_order_id=coid,
                    )
                return existing
            remaining = old.qty - old.filled_qty if old.qty is not None else None
            order = dataclasses.replace(
                old,
                id=str(uuid.uuid4()),
                client_order_id=coid,
                status=OrderStatus.DRY_RUN,
                qty=qty if qty is not None else remaining,
                filled_qty=Decimal(0),
                filled_avg_price=None,
                limit_price=limit_price if limit_price is not None else old.limit_price,
                stop_price=stop_price if stop_price is not None else old.stop_price,
                time_in_force=time_in_force if time_in_force is not None else old.time_in_force,
                created_at=now,
                updated_at=now,
                submitted_at=now,
                filled_at=None,
                canceled_at=None,
                replaces=old.id,
                replaced_by=None,
            )
            self._orders[coid] = order
            self.actions.append(DryRunAction("replace", now, order_id=old.id, qty=qty, order=order))
            return order

    def get_order(self, order_id: str) -> BrokerOrder:
        """A recorded order by its (made-up) id, else the reader's."""
        for order in self._orders.values():
            if order.id == order_id:
                return order
        if self.reader is not None:
            return self.reader.get_order(order_id)
        raise NotFoundError(f"dry run: no order {order_id}", operation="get order")

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """A recorded order, else the reader's, else ``None``."""
        order = self._orders.get(client_order_id)
        if order is None and self.reader is not None:
            return self.reader.get_order_by_client_id(client_order_id)
        return order

    def cancel_order(self, order_id: str) -> None:
        """Record the cancel. Recorded orders are already final (``dry_run``) and do not change."""
        self._record(DryRunAction("cancel", datetime.now(UTC), order_id=order_id))

    def cancel_all_orders(self) -> list[CancelResult]:
        """Record the cancel-all; report what it would cancel at the reader."""
        self._record(DryRunAction("cancel_all", datetime.now(UTC)))
        return [CancelResult(order.id, 200) for order in self.list_open_orders()]

    def list_orders(
        self,
        status: OrderQuery = OrderQuery.OPEN,
        *,
        after: datetime | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[BrokerOrder]:
        """The reader's orders plus, for ``closed``/``all``, the recorded ones (which are final)."""
        found = self.reader.list_orders(status, after=after, symbols=symbols) if self.reader else []
        if status != OrderQuery.OPEN:
            wanted = {symbol.upper() for symbol in symbols} if symbols else None
            found += [
                order
                for order in self._orders.values()
                if (after is None or order.submitted_at > after)
                and (wanted is None or order.symbol.upper() in wanted)
            ]
        return sorted(found, key=lambda order: (order.submitted_at, order.id))

    def list_open_orders(self) -> list[BrokerOrder]:
        """The reader's open orders (recorded orders are never open)."""
        return self.list_orders(OrderQuery.OPEN)

    def get_positions(self) -> list[Position]:
        """The reader's positions (dry-run orders never change them)."""
        return self.reader.get_positions() if self.reader else []

    def get_position(self, symbol: str) -> Position | None:
        """The reader's position in ``symbol``."""
        return self.reader.get_position(symbol) if self.reader else None

    def close_position(self, symbol: str, *, qty: Decimal | None = None) -> BrokerOrder:
        """Record the close and answer with the ``dry_run`` market order that would close it."""
        position = self.get_position(symbol)
        if position is None:
            raise NotFoundError(f"dry run: no position in {symbol}", operation="close position")
        now = datetime.now(UTC)
        self._record(DryRunAction("close_position", now, symbol=symbol, qty=qty))
        return _dry_order(_closing_request(position, qty), now)

    def close_all_positions(self, *, cancel_orders: bool = True) -> list[ClosePositionResult]:
        """Record the close-all and answer with the ``dry_run`` orders that would close each position."""
        now = datetime.now(UTC)
        self._record(DryRunAction("close_all_positions", now))
        return [
            ClosePositionResult(position.symbol, 200, _dry_order(_closing_request(position, None), now))
            for position in self.get_positions()
        ]

    def get_account(self) -> Account:
        """The reader's account."""
        return self._require_reader("account").get_account()

    def get_clock(self) -> Clock:
        """The reader's market clock."""
        return self._require_reader("clock").get_clock()

    def trade_updates(self, handler: TradeUpdateHandler, *, since: datetime | None = None) -> UpdateStream:
        """A stream that delivers nothing: dry-run orders never change."""
        return _NullStream()

    def _record(self, action: DryRunAction) -> None:
        with self._lock:
            self.actions.append(action)

    def _require_reader(self, what: str) -> Broker:
        if self.reader is None:
            raise BrokerError(f"dry run without a broker to read from: no {what}", operation=f"get {what}")
        return self.reader


def _dry_order(request: OrderRequest, now: datetime) -> BrokerOrder:
    return BrokerOrder(
        id=str(uuid.uuid4()),
        client_order_id=request.client_order_id,
        symbol=request.symbol.upper(),
        side=request.side,
        type=request.type,
        time_in_force=request.time_in_force,
        status=OrderStatus.DRY_RUN,
        qty=request.qty,
        notional=request.notional,
        filled_qty=Decimal(0),
        filled_avg_price=None,
        limit_price=request.limit_price,
        stop_price=request.stop_price,
        created_at=now,
        updated_at=now,
        submitted_at=now,
        extended_hours=request.extended_hours,
    )


def _replace_refusals(old: BrokerOrder, limit_price: Decimal | None, stop_price: Decimal | None) -> list[str]:
    """Why Alpaca would refuse to replace ``old`` with these prices (a recorded ``dry_run`` order counts
    as open: it stands for an order that would be resting)."""
    problems: list[str] = []
    if old.status is not OrderStatus.DRY_RUN and old.is_terminal:
        problems.append(f"the order is already {old.status.value}")
    if old.qty is None:
        problems.append("notional orders cannot be replaced")
    if limit_price is not None and old.type not in (OrderType.LIMIT, OrderType.STOP_LIMIT):
        problems.append(f"limit_price is not allowed for {old.type.value} orders")
    if stop_price is not None and old.type not in (OrderType.STOP, OrderType.STOP_LIMIT):
        problems.append(f"stop_price is not allowed for {old.type.value} orders")
    return problems


def _closing_request(position: Position, qty: Decimal | None) -> OrderRequest:
    side = OrderSide.SELL if position.side == PositionSide.LONG else OrderSide.BUY
    return OrderRequest(
        client_order_id=f"dryrun-close-{uuid.uuid4().hex}",
        symbol=position.symbol,
        side=side,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
        qty=qty if qty is not None else abs(position.qty),
    )
