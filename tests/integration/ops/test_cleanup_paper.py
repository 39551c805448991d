"""Stale-order cleanup against the built-in paper broker."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.conftest import T0
from tests.integration.ops.support import limit, move_broker_clock, send
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.domain.enums import OrderSide, OrderStatus
from trader.errors import UsageError
from trader.ops.cleanup import ANOMALY, cancel_stale_orders
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
