"""Order use cases on the ``orders`` table: the row written before sending, then the broker's word.

Every function works inside the caller's transaction and does not commit: one use case, one
transaction (``trader.store.db.transaction``), so the order row and its journal entries in ``events``
are written together or not at all.

- :func:`record_intent` writes the order in ``pending_submit`` *before* anything is sent, under its
  deterministic ``client_order_id``. Recording the same intent again returns the row already there;
  two processes recording it at once still end with one row.
- :func:`apply_broker_update` moves the status along :mod:`trader.execution.state_machine` from a
  trade update (or an order the broker returned) and journals the transition. A repeat changes
  nothing, a late (stale) report is journaled and ignored, an impossible one is journaled as a
  conflict for the reconciler and leaves the row as it was: the broker's reports are facts we cannot
  refuse, so they never raise for being out of order.
- :func:`record_status` makes our own decisions (``dry_run``, ``risk_rejected``, ``submit_failed``);
  a forbidden one is a bug in the caller and raises :class:`InvalidTransition`.

Fills are not applied here: quantities, positions and P&L are the ledger's
(:mod:`trader.portfolio.ledger`), keyed by execution id so each fill counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trader.broker.base import BrokerOrder, OrderRequest, TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from trader.domain.json import json_ready
from trader.errors import TraderError
from trader.execution.client_ids import DEFAULT_INTENT, make_client_order_id
from trader.execution.sql import insert_if_absent, lock_position
from trader.execution.state_machine import RANK, InvalidTransition, Move, classify
from trader.store.models import Event, Order

SOURCE = "execution"
INTENT_EVENT = "order.intent"
STATUS_EVENT = "order.status"
STALE_EVENT = "order.status_stale"
CONFLICT_EVENT = "order.status_conflict"


class InvalidOrderIntentError(TraderError):
    """An order intent that cannot be sent as it is (the message names the field)."""

    exit_code = 2


class UnknownOrderError(TraderError):
    """No order row has this ``client_order_id`` (it was not recorded before it was sent)."""


class OrderConflictError(TraderError):
    """The broker's report contradicts the order row in a way no status change can explain."""


@dataclass(frozen=True)
class OrderIntent:
    """An order we mean to send: what, and why (the ``client_order_id`` comes from these)."""

    strategy_id: str
    trading_date: date
    symbol: str
    side: OrderSide
    qty: Decimal | None = None
    notional: Decimal | None = None
    intent: str = DEFAULT_INTENT
    order_type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    sequence: int = 0
    parent_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("qty", "notional", "limit_price", "stop_price"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, Decimal | int)):
                raise InvalidOrderIntentError(f"{name} must be a Decimal, not {type(value).__name__}")
        try:
            self.to_request()
        except ValueError as exc:
            raise InvalidOrderIntentError(str(exc)) from None

    @property
    def client_order_id(self) -> str:
        """The deterministic id (:func:`~trader.execution.client_ids.make_client_order_id`)."""
        return make_client_order_id(
            self.strategy_id, self.trading_date, self.symbol, self.side, self.intent, self.sequence
        )

    def to_request(self) -> OrderRequest:
        """The broker request for this intent, under its ``client_order_id``."""
        return OrderRequest(
            client_order_id=self.client_order_id,
            symbol=self.symbol.strip().upper(),
            side=OrderSide(self.side),
            type=OrderType(self.order_type),
            time_in_force=TimeInForce(self.time_in_force),
            qty=_dec(self.qty),
            notional=_dec(self.notional),
            limit_price=_dec(self.limit_price),
            stop_price=_dec(self.stop_price),
        )


def _dec(value: Decimal | int | None) -> Decimal | None:
    return None if value is None else Decimal(value)


@dataclass(frozen=True)
class IntentResult:
    """The order row for an intent; ``created`` is False when it was already recorded.

    ``matches`` says whether the row already there asks for the same thing (symbol, side, size, type,
    prices) as this intent: a rerun that computed a different size still gets the first row back.
    """

    order: Order
    created: bool
    matches: bool


class StatusOutcome(StrEnum):
    CHANGED = "changed"
    UNCHANGED = "unchanged"  # a repeat of the status held
    STALE = "stale"  # a report older than the status held: ignored
    CONFLICT = "conflict"  # a report the lifecycle forbids: journaled, row unchanged


@dataclass(frozen=True)
class StatusChange:
    """What a status report did to one order."""

    client_order_id: str
    previous: OrderStatus
    status: OrderStatus
    outcome: StatusOutcome
    message: str = ""


def record_intent(session: Session, intent: OrderIntent, *, source: str = SOURCE) -> IntentResult:
    """Write ``intent``'s order row in ``pending_submit`` (and an ``order.intent`` event), once.

    Idempotent: the same intent again — in this process or another, even at the same moment —
    returns the existing row with ``created=False`` and writes nothing.
    """
    request = intent.to_request()
    values = {
        "client_order_id": request.client_order_id,
        "strategy_id": intent.strategy_id.strip(),
        "trading_date": intent.trading_date,
        "intent": intent.intent.strip().lower(),
        "symbol": request.symbol,
        "side": request.side.value,
        "qty": request.qty,
        "notional": request.notional,
        "order_type": request.type.value,
        "limit_price": request.limit_price,
        "stop_price": request.stop_price,
        "time_in_force": request.time_in_force.value,
        "status": OrderStatus.PENDING_SUBMIT.value,
        "parent_id": intent.parent_id,
        "filled_qty": Decimal(0),
    }
    created = insert_if_absent(session, Order, values, ["client_order_id"])
    order = _load(session, request.client_order_id, lock=False)
    if created:
        _journal(session, INTENT_EVENT, order, {**json_ready(values), "sequence": intent.sequence}, source)
    return IntentResult(order=order, created=created, matches=same_request(order, request))


def same_request(order: Order, request: OrderRequest) -> bool:
    """Whether the order row asks for what ``request`` asks (symbol, side, size, type, prices)."""
    return (
        order.symbol == request.symbol
        and order.side == request.side.value
        and order.qty == request.qty
        and order.notional == request.notional
        and order.order_type == request.type.value
        and order.time_in_force == request.time_in_force.value
        and order.limit_price == request.limit_price
        and order.stop_price == request.stop_price
    )


def get_order(session: Session, client_order_id: str) -> Order | None:
    """The order row, or ``None``."""
    stmt = select(Order).where(Order.client_order_id == client_order_id)
    return session.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()


def record_status(
    session: Session,
    client_order_id: str,
    status: OrderStatus,
    *,
    reason: str | None = None,
    source: str = SOURCE,
) -> StatusChange:
    """Move the order to ``status`` by our own decision (e.g. ``dry_run``, ``risk_rejected``).

    ``reason`` is stored as the order's ``reject_reason``. Raises :class:`InvalidTransition` when the
    lifecycle forbids the move (e.g. ``risk_rejected`` after the order reached the broker).
    """
    order = _load(session, client_order_id, lock=True)
    previous = OrderStatus(order.status)
    move = classify(previous, OrderStatus(status))
    if move is Move.STALE:
        raise InvalidTransition(previous, status, "our own decision cannot be older than the order")
    if move is Move.SAME:
        return StatusChange(client_order_id, previous, previous, StatusOutcome.UNCHANGED)
    order.status = OrderStatus(status).value
    if reason is not None:
        order.reject_reason = reason
    payload = {"from": previous.value, "to": order.status, "event": order.status, "reason": reason}
    _journal(session, STATUS_EVENT, order, payload, source)
    return StatusChange(client_order_id, previous, OrderStatus(status), StatusOutcome.CHANGED)


def apply_broker_update(
    session: Session, update: TradeUpdate | BrokerOrder, *, source: str = "broker"
) -> StatusChange:
    """Apply the broker's report of an order (a trade update, or the order a REST call returned).

    Links the row to the broker's order id and submission time the first time they are seen, then
    moves the status as :func:`~trader.execution.state_machine.classify` says, journaling the change
    (``order.status``), a stale report (``order.status_stale``) or an impossible one
    (``order.status_conflict``). Raises :class:`UnknownOrderError` for an order we never recorded and
    :class:`OrderConflictError` when the row is already linked to a different broker order.
    """
    report = update.order if isinstance(update, TradeUpdate) else update
    event = update.event if isinstance(update, TradeUpdate) else "order"
    at = update.timestamp if isinstance(update, TradeUpdate) else report.updated_at
    order = _load(session, report.client_order_id, lock=True)
    _link(order, report)
    previous, target = OrderStatus(order.status), OrderStatus(report.status)
    payload: dict[str, Any] = {
        "from": previous.value,
        "to": target.value,
        "event": event,
        "broker_order_id": report.id,
        "reported_filled_qty": str(report.filled_qty),
        "at": at.isoformat(),
    }
    if report.replaced_by:
        payload["replaced_by"] = report.replaced_by
    try:
        move = classify(previous, target)
    except InvalidTransition as exc:
        _journal(session, CONFLICT_EVENT, order, payload | {"error": str(exc)}, source)
        return StatusChange(order.client_order_id, previous, previous, StatusOutcome.CONFLICT, str(exc))
    if move is Move.SAME:
        return StatusChange(order.client_order_id, previous, previous, StatusOutcome.UNCHANGED)
    if move is Move.STALE or (RANK[target] < RANK[previous] and not _newer_than_held(session, order, at)):
        _journal(session, STALE_EVENT, order, payload, source)
        return StatusChange(order.client_order_id, previous, previous, StatusOutcome.STALE)
    order.status = target.value
    _journal(session, STATUS_EVENT, order, payload, source)
    return StatusChange(order.client_order_id, previous, target, StatusOutcome.CHANGED)


def _newer_than_held(session: Session, order: Order, at: datetime) -> bool:
    """Whether a report timed ``at`` is newer than the one that set the status held.

    Asked only for a move back (a rejected cancel puts ``pending_cancel`` back to ``new``): a late or
    repeated ``new`` or ``partial_fill`` from before the cancel request would make the same move, and
    only its time tells them apart. Without a time for the status held, the move is allowed (the
    table allows it).
    """
    held_at = session.scalar(
        select(Event.payload)
        .where(Event.correlation_id == order.client_order_id, Event.kind == STATUS_EVENT)
        .order_by(Event.id.desc())
        .limit(1)
    )
    if not held_at or "at" not in held_at:
        return True
    return at > datetime.fromisoformat(str(held_at["at"]))


def _link(order: Order, report: BrokerOrder) -> None:
    if order.broker_order_id is None:
        order.broker_order_id = report.id
    elif order.broker_order_id != report.id:
        raise OrderConflictError(
            f"order {order.client_order_id!r} is linked to broker order {order.broker_order_id!r}, "
            f"but the broker reports {report.id!r} under the same client_order_id: reconcile it by hand"
        )
    if order.submitted_at is None:
        order.submitted_at = report.submitted_at


def _load(session: Session, client_order_id: str, *, lock: bool) -> Order:
    """The order row, fresh from the database; ``lock`` holds it until the transaction ends.

    The position lock comes first and the row lock second, in the same order as the ledger takes
    them, so a status update and a fill of the same order cannot deadlock.
    """
    order = _select(session, client_order_id, for_update=False)
    if lock:
        lock_position(session, order.strategy_id, order.symbol)
        order = _select(session, client_order_id, for_update=True)
    return order


def _select(session: Session, client_order_id: str, *, for_update: bool) -> Order:
    stmt = select(Order).where(Order.client_order_id == client_order_id)
    if for_update:
        stmt = stmt.with_for_update()  # PostgreSQL; SQLite already holds its write lock
    order = session.execute(stmt.execution_options(populate_existing=True)).scalar_one_or_none()
    if order is None:
        raise UnknownOrderError(
            f"no order with client_order_id {client_order_id!r}: orders must be recorded "
            "(record_intent) before they are sent"
        )
    return order


def _journal(session: Session, kind: str, order: Order, payload: dict[str, Any], source: str) -> None:
    session.add(
        Event(
            kind=kind,
            source=source,
            strategy_id=order.strategy_id,
            correlation_id=order.client_order_id,
            payload=payload,
        )
    )
