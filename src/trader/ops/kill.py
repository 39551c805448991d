"""The kill switch: stop trading now and get flat.

In this order, so nothing new can start while the account is being emptied:

1. trip the circuit breaker with reason ``kill`` (new entries are blocked from this moment on, until
   an operator approves and clears it: ``trader circuit approve`` then ``trader circuit clear``);
2. cancel every open order at the broker (and apply each cancel to our ``orders`` rows);
3. close every position (market orders sent by the broker's close-all), and book each closing order
   in ``orders`` under the strategy whose position it closes, so that its fill empties that
   strategy's book (when no single strategy's position matches the closing order, say two strategies
   share the symbol, the order is left to the reconciler, which books it under its adopt strategy,
   and the report names the symbol);
4. write the outcome to ``audit_log`` (``kill.executed``), failures included.

The closing orders fill when the market is open; outside market hours they wait at the broker and the
report says so (``positions_left``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trader.broker.base import Broker, BrokerOrder, CancelResult, ClosePositionResult
from trader.broker.errors import BrokerError
from trader.domain.enums import OrderSide
from trader.errors import UsageError
from trader.execution.orders import OrderConflictError, UnknownOrderError, apply_broker_update
from trader.execution.sql import insert_if_absent
from trader.ops.breakers import BreakerStatus, CircuitBreaker, TripReason
from trader.reconcile.reconciler import adopted_order_values
from trader.store.models import AuditLog, Order, Position

log = logging.getLogger(__name__)

SOURCE = "kill"


@dataclass(frozen=True)
class KillReport:
    """What the kill switch did. ``ok``: every cancel and close was accepted and nothing is left."""

    breaker: BreakerStatus
    canceled: tuple[CancelResult, ...]
    closed: tuple[ClosePositionResult, ...]
    failures: tuple[str, ...]
    open_orders_left: tuple[str, ...]
    positions_left: tuple[str, ...]
    #: ``client_order_id`` of the closing orders booked under the strategy whose position they close.
    booked: tuple[str, ...] = ()
    #: Symbols whose closing order no single strategy's position matched (left to the reconciler).
    unattributed: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures and not self.open_orders_left and not self.positions_left


def kill_switch(
    broker: Broker, breaker: CircuitBreaker, engine: Engine, *, reason: str, actor: str
) -> KillReport:
    """Trip, cancel everything, flatten everything, audit (see the module doc). Never raises for a
    broker failure after the trip: the failure is in the report and the audit log, and the breaker
    stays tripped either way."""
    if not reason.strip():
        raise UsageError("the kill switch needs a reason (--reason)")
    status = breaker.trip(TripReason.KILL, reason, actor)
    failures: list[str] = []
    canceled = _cancel_all(broker, engine, failures)
    closed = _close_all(broker, failures)
    booked, unattributed = _book_closing_orders(engine, closed, failures)
    open_left, positions_left = _leftovers(broker, failures)
    report = KillReport(
        status, canceled, closed, tuple(failures), open_left, positions_left, booked, unattributed
    )
    _audit(engine, actor, reason, report)
    return report


def _cancel_all(broker: Broker, engine: Engine, failures: list[str]) -> tuple[CancelResult, ...]:
    try:
        results = tuple(broker.cancel_all_orders())
    except BrokerError as exc:
        failures.append(f"cancel all orders: {exc}")
        return ()
    for result in results:
        if not result.ok:
            failures.append(f"cancel {result.order_id}: HTTP {result.status} {result.message}".strip())
            continue
        order = _fetch(broker, result.order_id)
        if order is not None:
            _apply(engine, order)
    return results


def _close_all(broker: Broker, failures: list[str]) -> tuple[ClosePositionResult, ...]:
    try:
        results = tuple(broker.close_all_positions(cancel_orders=True))
    except BrokerError as exc:
        failures.append(f"close all positions: {exc}")
        return ()
    failures.extend(f"close {r.symbol}: HTTP {r.status} {r.message}".strip() for r in results if not r.ok)
    return results


def _book_closing_orders(
    engine: Engine, closed: tuple[ClosePositionResult, ...], failures: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Book each accepted closing order under the one strategy whose position it closes exactly.

    Returns the booked ``client_order_id`` values and the symbols left to the reconciler. A closing
    order matches a strategy when that strategy is the only one holding the symbol and the order
    sells (buys back) exactly its long (short) quantity; anything else would book the wrong amount
    to someone. The broker's report is applied at once; the fills follow through the trade-update
    stream or the reconciler, like those of any order of ours.
    """
    orders = [r.order for r in closed if r.ok and r.order is not None]
    booked: list[str] = []
    unattributed: list[str] = []
    if not orders:
        return (), ()
    try:
        with Session(engine) as session:
            held = session.execute(
                select(Position.strategy_id, Position.symbol, Position.qty).where(Position.qty != 0)
            ).all()
        holders: dict[str, list[tuple[str, Decimal]]] = {}
        for strategy_id, symbol, qty in held:
            holders.setdefault(symbol.upper(), []).append((strategy_id, qty))
        for order in orders:
            owner = _owner(order, holders.get(order.symbol.upper(), []))
            if owner is None:
                unattributed.append(order.symbol)
                continue
            with Session(engine) as session, session.begin():
                values = adopted_order_values(order, owner, intent=SOURCE)
                insert_if_absent(session, Order, values, ["client_order_id"])
                apply_broker_update(session, order, source=SOURCE)
            booked.append(order.client_order_id)
    except (SQLAlchemyError, OrderConflictError) as exc:
        # What is not booked here is the reconciler's to adopt; the kill itself goes on.
        failures.append(f"booking the closing orders: {type(exc).__name__}: {exc}")
    return tuple(booked), tuple(unattributed)


def _owner(order: BrokerOrder, holders: list[tuple[str, Decimal]]) -> str | None:
    """The strategy whose whole position ``order`` closes, if exactly one holds the symbol."""
    if len(holders) != 1 or order.qty is None:
        return None
    strategy_id, qty = holders[0]
    closes = -order.qty if order.side is OrderSide.SELL else order.qty
    return strategy_id if closes == -qty else None


def _leftovers(broker: Broker, failures: list[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What is still open at the broker: orders other than our closing ones, and positions."""
    try:
        orders = broker.list_open_orders()
        positions = broker.get_positions()
    except BrokerError as exc:
        failures.append(f"checking what is left: {exc}")
        return (), ()
    return (
        tuple(f"{o.symbol} {o.side.value} {o.qty or o.notional} ({o.status.value})" for o in orders),
        tuple(f"{p.symbol} {p.qty}" for p in positions if p.qty != 0),
    )


def _fetch(broker: Broker, order_id: str) -> BrokerOrder | None:
    try:
        return broker.get_order(order_id)
    except BrokerError as exc:
        log.warning("kill: could not read canceled order %s back: %s", order_id, exc)
        return None


def _apply(engine: Engine, order: BrokerOrder) -> None:
    try:
        with Session(engine) as session, session.begin():
            apply_broker_update(session, order, source=SOURCE)
    except UnknownOrderError:
        pass  # placed outside the system; the reconciler adopts it


def _audit(engine: Engine, actor: str, reason: str, report: KillReport) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            AuditLog(
                actor=actor,
                action="kill.executed",
                target="account",
                reason=reason,
                details={
                    "canceled": [r.order_id for r in report.canceled if r.ok],
                    "closed": [r.symbol for r in report.closed if r.ok],
                    "closing_orders": [r.order.client_order_id for r in report.closed if r.order],
                    "booked": list(report.booked),
                    "unattributed": list(report.unattributed),
                    "failures": list(report.failures),
                    "open_orders_left": list(report.open_orders_left),
                    "positions_left": list(report.positions_left),
                },
            )
        )
