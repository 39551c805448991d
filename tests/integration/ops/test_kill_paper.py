"""Kill switch against the built-in paper broker: nothing open, flat, new signals blocked until cleared."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.support import QUIET, ManualClock, audit_actions, limit, market, send, wait_for
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.domain.enums import OrderSide, OrderStatus
from trader.ops.breakers import BreakerError, BreakerState, CircuitBreaker, TripReason
from trader.ops.kill import kill_switch
from trader.ops.monitor import PostTradeMonitor
from trader.store.models import AuditLog, Order


def test_kill_cancels_flattens_and_blocks_until_cleared(
    paper: RunningBroker,
    broker: AlpacaBroker,
    breaker: CircuitBreaker,
    clock: ManualClock,
    migrated_engine: Engine,
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 25))
    resting = send(migrated_engine, broker, limit("SYN003", OrderSide.BUY, 10, "1.00"))
    wait_for(lambda: len(broker.get_positions()) == 2)
    assert [o.client_order_id for o in broker.list_open_orders()] == [resting.client_order_id]

    report = kill_switch(broker, breaker, migrated_engine, reason="runaway strategy", actor="carol")

    assert report.breaker.kind is TripReason.KILL
    assert [r.order_id for r in report.canceled] == [resting.id]
    assert sorted(r.symbol for r in report.closed) == ["SYN001", "SYN002"]
    wait_for(lambda: not broker.get_positions() and not broker.list_open_orders())
    assert report.failures == () and report.open_orders_left == ()
    # The canceled order's row learned it; the closing orders were the broker's (the reconciler adopts them).
    with Session(migrated_engine) as session:
        status = session.scalar(select(Order.status).where(Order.client_order_id == resting.client_order_id))
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "kill.executed")).one()
    assert status == OrderStatus.CANCELED
    assert audit.actor == "carol" and audit.reason == "runaway strategy"
    assert audit.details["canceled"] == [resting.id]
    assert sorted(audit.details["closed"]) == ["SYN001", "SYN002"]

    # New signals blocked; exits still pass; the monitor never lifts a kill by itself.
    assert not breaker.allows(risk_reducing=False) and breaker.allows(risk_reducing=True)
    clock.advance(QUIET + timedelta(minutes=1))
    breaker.approve("dave")
    PostTradeMonitor(broker, breaker, clock=clock).check()
    assert breaker.state() is BreakerState.TRIPPED

    breaker.clear("dave")
    assert breaker.allows(risk_reducing=False)
    assert audit_actions(migrated_engine) == [
        ("circuit.trip", "carol"),
        ("kill.executed", "carol"),
        ("circuit.approve", "dave"),
        ("circuit.clear", "dave"),
    ]


def test_kill_on_an_empty_account_still_trips(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    report = kill_switch(broker, breaker, migrated_engine, reason="drill", actor="erin")
    assert report.ok and report.canceled == () and report.closed == ()
    assert breaker.state() is BreakerState.TRIPPED
    with pytest.raises(BreakerError, match="no approval since the trip"):
        breaker.clear("erin")
    assert Decimal(broker.get_account().equity) == Decimal("100000")
