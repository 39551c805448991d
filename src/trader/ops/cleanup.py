"""Stale-order cleanup: cancel orders that have stayed open at the broker longer than allowed.

An order that has been open for more than ``max_age`` (15 minutes by default) is usually a limit that
will not fill or an order the system lost track of; either way it holds buying power and may fill at a
moment nobody chose. The job cancels it at the broker, applies the broker's answer to our ``orders``
row (``trader.execution.orders.apply_broker_update``) and records an ``anomaly.stale_order`` event.

Age is counted on the **broker's clock** by default (``Broker.get_clock``): the built-in paper broker
simulates time, so the wall clock would call every order of a replayed day ancient. And it counts only
**open-market time** (the exchange calendar's regular sessions, :func:`open_market_time`): an order
queued overnight for the next open is 0 minutes old at the open, and nothing ages while the market is
closed.

The kill switch's closing orders are never canceled: outside market hours they wait for the next open
on purpose (``trader.ops.kill``). They are recognized by the ``orders`` row's intent ``kill`` or, for
a position closed whole by the broker (no row of ours, or a row the reconciler adopted later), by the
``closing_orders`` of a ``kill.executed`` audit entry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trader.broker.base import Broker, BrokerOrder
from trader.broker.errors import BrokerError, NotCancelableError
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.domain.enums import OrderStatus
from trader.errors import UsageError
from trader.execution.orders import UnknownOrderError, apply_broker_update
from trader.ops.kill import closing_order_ids
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
    """One pass: ``checked`` open orders, the ``stale`` ones and what became of them, and ``kept``:
    the ``client_order_id`` of stale-aged kill-switch closing orders left alone on purpose."""

    checked: int
    stale: tuple[StaleOrder, ...]
    kept: tuple[str, ...] = ()

    @property
    def canceled(self) -> tuple[StaleOrder, ...]:
        return tuple(order for order in self.stale if order.canceled)

    @property
    def failed(self) -> tuple[StaleOrder, ...]:
        return tuple(order for order in self.stale if not order.canceled)


def open_market_time(start: datetime, end: datetime, calendar: TradingCalendar) -> timedelta:
    """How long the market was open (regular sessions of ``calendar``) between ``start`` and ``end``."""
    if end <= start:
        return timedelta(0)
    # A session's open and close fall on its own UTC date (the day before covers other exchanges).
    first, last = start.astimezone(UTC).date() - timedelta(days=1), end.astimezone(UTC).date()
    days: Iterable[date] = calendar.sessions(first, last).to_list()
    total = timedelta(0)
    for day in days:
        opened, closed = _session_hours(calendar, day)
        total += max(timedelta(0), min(closed, end) - max(opened, start))
    return total


@lru_cache(maxsize=4096)
def _session_hours(calendar: TradingCalendar, day: date) -> tuple[datetime, datetime]:
    # The loop runs every interval over every open order: the calendar's pandas lookups add up.
    return calendar.session_open(day), calendar.session_close(day)


def order_age(order: BrokerOrder, now: datetime, calendar: TradingCalendar | None = None) -> timedelta:
    """Open-market time since the order was submitted (created, if never submitted) until ``now``."""
    return open_market_time(order.submitted_at or order.created_at, now, calendar or trading_calendar())


def cancel_stale_orders(
    broker: Broker,
    engine: Engine,
    *,
    max_age: timedelta = DEFAULT_MAX_AGE,
    now: datetime | None = None,
    calendar: TradingCalendar | None = None,
) -> CleanupReport:
    """Cancel every open order whose open-market age exceeds ``max_age`` at ``now`` (default: the
    broker's clock), except the kill switch's closing orders."""
    if max_age <= timedelta(0):
        raise UsageError(f"max_age must be positive, got {max_age}")
    now = now or broker.get_clock().timestamp
    calendar = calendar or trading_calendar()
    open_orders = broker.list_open_orders()
    aged = [(order, order_age(order, now, calendar)) for order in open_orders]
    aged = [(order, age) for order, age in aged if age > max_age]
    kill_orders = set(closing_order_ids(engine, [order for order, _ in aged]))
    kept = tuple(order.client_order_id for order, _ in aged if order.client_order_id in kill_orders)
    if kept:
        log.info("stale-order cleanup leaves the kill switch's closing orders open: %s", ", ".join(kept))
    results = tuple(
        _cancel(broker, engine, order, age, max_age)
        for order, age in aged
        if order.client_order_id not in kill_orders
    )
    for result in results:
        _record_anomaly(engine, result, max_age)
    return CleanupReport(checked=len(open_orders), stale=results, kept=kept)


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
