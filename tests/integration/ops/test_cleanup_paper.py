"""Stale-order cleanup against the built-in paper broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.conftest import T0
from tests.integration.ops.support import T0_DAY, limit, market, move_broker_clock, send, wait_for
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.domain.enums import OrderSide, OrderStatus
from trader.errors import UsageError
from trader.execution.orders import OrderIntent
from trader.ops.breakers import CircuitBreaker, DatabaseBreakerStore
from trader.ops.cleanup import ANOMALY, cancel_stale_orders
from trader.ops.kill import KillReport, kill_switch
from trader.reconcile import Reconciler
from trader.store.models import Event, Order


def test_orders_open_longer_than_the_limit_are_canceled_and_recorded(
    paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    old = send(migrated_engine, broker, limit("SYN001", OrderSide.BUY, 10, "1.00"))
    # An order placed by hand at the broker (unknown to our database) is canceled too, and flagged.
    stranger = broker.submit_order(limit("SYN003", OrderSide.BUY, 5, "1.00", sequence=9).to_request())
    move_broker_clock(paper, T0 + timedelta(minutes=10))
    young = send(migrated_engine, broker, limit("SYN002", OrderSide.BUY, 10, "1.00"))
    move_broker_clock(paper, T0 + timedelta(minutes=20))

    report = cancel_stale_orders(broker, migrated_engine)

    assert report.checked == 3 and report.failed == ()
    by_id = {s.client_order_id: s for s in report.canceled}
    assert set(by_id) == {old.client_order_id, stranger.client_order_id}
    assert by_id[old.client_order_id].age == timedelta(minutes=20)
    assert by_id[old.client_order_id].recorded and not by_id[stranger.client_order_id].recorded
    assert all(s.status is OrderStatus.CANCELED for s in report.canceled)
    assert [o.client_order_id for o in broker.list_open_orders()] == [young.client_order_id]
    with Session(migrated_engine) as session:
        statuses = {
            cid: status for cid, status in session.execute(select(Order.client_order_id, Order.status))
        }
        events = session.scalars(select(Event).where(Event.kind == ANOMALY).order_by(Event.id)).all()
    assert statuses == {old.client_order_id: "canceled", young.client_order_id: "new"}
    assert sorted(e.correlation_id or "" for e in events) == sorted(by_id)
    old_event = next(e for e in events if e.correlation_id == old.client_order_id)
    assert old_event.payload["age_s"] == 1200 and old_event.payload["max_age_s"] == 900
    assert old_event.payload["canceled"] is True and old_event.source == "cleanup"

    # A second pass finds nothing stale.
    again = cancel_stale_orders(broker, migrated_engine)
    assert again.checked == 1 and again.stale == ()


def test_the_age_limit_is_configurable(
    paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    order = send(migrated_engine, broker, limit("SYN001", OrderSide.BUY, 10, "1.00"))
    move_broker_clock(paper, T0 + timedelta(minutes=3))
    assert cancel_stale_orders(broker, migrated_engine).stale == ()
    report = cancel_stale_orders(broker, migrated_engine, max_age=timedelta(minutes=2))
    assert [s.client_order_id for s in report.canceled] == [order.client_order_id]
    with pytest.raises(UsageError, match="max_age must be positive"):
        cancel_stale_orders(broker, migrated_engine, max_age=timedelta(0))


#: Tuesday 2024-03-05 17:00 New York (closed), and the next open (Wednesday 09:30 New York).
AFTER_CLOSE = datetime(2024, 3, 5, 22, 0, tzinfo=UTC)
NEXT_OPEN = datetime(2024, 3, 6, 14, 30, tzinfo=UTC)


def _kill_after_the_close(paper: RunningBroker, broker: AlpacaBroker, engine: Engine) -> KillReport:
    """SYN001 in our books, SYN002 bought by hand (closed whole); the kill at 17:00 New York."""
    send(engine, broker, market("SYN001", OrderSide.BUY, 40))
    wait_for(lambda: len(broker.get_positions()) == 1)
    Reconciler(engine, broker).run_once()  # the fill into the books, so its closing order is booked
    broker.submit_order(OrderIntent("manual", T0_DAY, "SYN002", OrderSide.BUY, qty=Decimal(3)).to_request())
    wait_for(lambda: len(broker.get_positions()) == 2)
    move_broker_clock(paper, AFTER_CLOSE)
    breaker = CircuitBreaker(DatabaseBreakerStore(engine), engine)
    report = kill_switch(broker, breaker, engine, reason="evening", actor="carol")
    assert report.failures == () and len(report.booked) == 1 and report.unattributed == ("SYN002",)
    return report


def test_the_kill_switchs_closing_orders_wait_for_the_open_and_evening_orders_age_from_it(
    paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    kill = _kill_after_the_close(paper, broker, migrated_engine)
    closing = {r.order.id for r in kill.closed if r.order is not None}
    move_broker_clock(paper, AFTER_CLOSE + timedelta(minutes=5))
    evening = send(migrated_engine, broker, limit("SYN003", OrderSide.BUY, 10, "1.00"))

    move_broker_clock(paper, AFTER_CLOSE + timedelta(minutes=20))
    report = cancel_stale_orders(broker, migrated_engine)
    assert (report.checked, report.stale, report.kept) == (3, (), ())

    # At the open the closing orders fill; the evening limit order is 5 minutes old, not 15 hours.
    move_broker_clock(paper, NEXT_OPEN + timedelta(minutes=5))
    wait_for(lambda: not broker.get_positions())
    assert cancel_stale_orders(broker, migrated_engine).stale == ()
    assert {broker.get_order(order_id).status for order_id in closing} == {OrderStatus.FILLED}
    assert [o.id for o in broker.list_open_orders()] == [evening.id]

    move_broker_clock(paper, NEXT_OPEN + timedelta(minutes=16))
    report = cancel_stale_orders(broker, migrated_engine)
    assert [(s.broker_order_id, s.age) for s in report.canceled] == [(evening.id, timedelta(minutes=16))]


def test_the_kill_switchs_closing_orders_are_never_canceled_however_old(
    paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    kill = _kill_after_the_close(paper, broker, migrated_engine)
    evening = send(migrated_engine, broker, limit("SYN003", OrderSide.BUY, 10, "1.00"))
    # An hour into the next session, judged at that instant while the broker still holds them open
    # (the booked one by its intent 'kill', the whole close by the kill.executed audit entry).
    report = cancel_stale_orders(broker, migrated_engine, now=NEXT_OPEN + timedelta(hours=1))

    closing = {r.order.client_order_id for r in kill.closed if r.order is not None}
    assert len(closing) == 2 and set(report.kept) == closing
    assert [(s.client_order_id, s.age) for s in report.canceled] == [
        (evening.client_order_id, timedelta(hours=1))
    ]
    assert {o.client_order_id for o in broker.list_open_orders()} == closing
    # Once the reconciler adopted the whole close (intent 'adopted'), the audit entry still names it.
    Reconciler(migrated_engine, broker).run_once()
    again = cancel_stale_orders(broker, migrated_engine, now=NEXT_OPEN + timedelta(hours=2))
    assert again.stale == () and set(again.kept) == closing
