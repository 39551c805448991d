"""Stale-order cleanup: cancel orders that have stayed open at the broker longer than allowed.

An order that has been open for more than ``max_age`` (15 minutes by default) is usually a limit that
will not fill or an order the system lost track of; either way it holds buying power and may fill at a
moment nobody chose. The job cancels it at the broker, applies the broker's answer to our ``orders``
row (``trader.execution.orders.apply_broker_update``) and records an ``anomaly.stale_order`` event.

Age is counted on the **broker's clock** by default (``Broker.get_clock``): the built-in paper broker
simulates time, so the wall clock would call every order of a replayed day ancient.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trader.broker.base import Broker, BrokerOrder
from trader.broker.errors import BrokerError, NotCancelableError
from trader.domain.enums import OrderStatus
from trader.errors import UsageError
from trader.execution.orders import UnknownOrderError, apply_broker_update
from trader.store.models import Event

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = timedelta(minutes=15)
ANOMALY = "anomaly.stale_order"
SOURCE = "cleanup"


@dataclass(frozen=True)
class StaleOrder:
    """One stale order and what became of it. ``recorded``: our database knows it (else it was placed
    outside the system; the reconciler adopts those). ``error``: why the cancel failed."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    age: timedelta
    status: OrderStatus
    recorded: bool
    error: str | None = None

    @property
    def canceled(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class CleanupReport:
    checked: int
    stale: tuple[StaleOrder, ...]

    @property
    def canceled(self) -> tuple[StaleOrder, ...]:
        return tuple(order for order in self.stale if order.canceled)

    @property
    def failed(self) -> tuple[StaleOrder, ...]:
        return tuple(order for order in self.stale if not order.canceled)


def order_age(order: BrokerOrder, now: datetime) -> timedelta:
    return now - (order.submitted_at or order.created_at)


def cancel_stale_orders(
    broker: Broker,
    engine: Engine,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    now: datetime | None = None,
) -> CleanupReport:
    """Cancel every open order older than ``max_age`` at ``now`` (default: the broker's clock)."""
    if max_age <= timedelta(0):
        raise UsageError(f"max_age must be positive, got {max_age}")
    now = now or broker.get_clock().timestamp
    open_orders = broker.list_open_orders()
    stale = [order for order in open_orders if order_age(order, now) > max_age]
    results = tuple(_cancel(broker, engine, order, order_age(order, now), max_age) for order in stale)
    for result in results:
        _record_anomaly(engine, result, max_age)
    return CleanupReport(checked=len(open_orders), stale=results)


def _cancel(
    broker: Broker, engine: Engine, order: BrokerOrder, age: timedelta, max_age: timedelta
) -> StaleOrder:
    error: str | None = None
    latest = order
    try:
        broker.cancel_order(order.id)
        latest = broker.get_order(order.id)
    except NotCancelableError as exc:
        # It filled or ended meanwhile: not a failure, but its row must still learn the final state.
        latest = _refetch(broker, order)
        error = None if latest.is_terminal else f"not cancelable: {exc}"
    except BrokerError as exc:
        error = str(exc)
        log.error("stale order %s could not be canceled: %s", order.client_order_id, exc)
    recorded = _apply(engine, latest)
    return StaleOrder(order.client_order_id, order.id, order.symbol, age, latest.status, recorded, error)


def _refetch(broker: Broker, order: BrokerOrder) -> BrokerOrder:
    try:
        return broker.get_order(order.id)
    except BrokerError:
        return order


def _apply(engine: Engine, order: BrokerOrder) -> bool:
    try:
        with Session(engine) as session, session.begin():
            apply_broker_update(session, order, source=SOURCE)
    except UnknownOrderError:
        return False
    return True


def _record_anomaly(engine: Engine, result: StaleOrder, max_age: timedelta) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            Event(
                kind=ANOMALY,
                source=SOURCE,
                correlation_id=result.client_order_id,
                payload={
                    "broker_order_id": result.broker_order_id,
                    "symbol": result.symbol,
                    "age_s": int(result.age.total_seconds()),
                    "max_age_s": int(max_age.total_seconds()),
                    "status": result.status.value,
                    "recorded": result.recorded,
                    "canceled": result.canceled,
                    "error": result.error,
                },
            )
        )


def run_cleanup(
    broker: Broker,
    engine: Engine,
    stop: threading.Event,
    *,
    interval: float = 60.0,
    max_age: timedelta = DEFAULT_MAX_AGE,
    on_report: Callable[[CleanupReport], None] | None = None,
) -> None:
    """Run :func:`cancel_stale_orders` every ``interval`` seconds until ``stop`` is set (a failing pass
    is logged and the loop goes on)."""
    while not stop.is_set():
        try:
            report = cancel_stale_orders(broker, engine, max_age=max_age)
            if on_report is not None:
                on_report(report)
        except Exception:
            log.exception("stale-order cleanup pass failed")
        stop.wait(interval)
