"""Kill switch against the built-in paper broker: nothing open, flat, new signals blocked until cleared."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.support import (
    QUIET,
    T0_DAY,
    ManualClock,
    audit_actions,
    limit,
    market,
    send,
    wait_for,
)
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent
from trader.ops.breakers import BreakerError, BreakerState, CircuitBreaker, TripReason
from trader.ops.kill import kill_switch
from trader.ops.monitor import PostTradeMonitor
from trader.reconcile import Reconciler
from trader.store.models import AuditLog, Order, Position


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
    # The canceled order's row learned it. (Nothing was in the books here: no fill was applied, so the
    # closing orders are the reconciler's to adopt; see the next test for booked ones.)
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


def positions(engine: Engine) -> dict[tuple[str, str], Decimal]:
    with Session(engine) as session:
        return {(p.strategy_id, p.symbol): p.qty for p in session.scalars(select(Position))}


def test_closing_orders_are_booked_to_the_strategy_whose_position_they_close(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 25))
    # A second strategy in SYN002: one closing order cannot be split between the two.
    send(migrated_engine, broker, OrderIntent("other", T0_DAY, "SYN002", OrderSide.BUY, qty=Decimal(5)))
    wait_for(lambda: {p.symbol: p.qty for p in broker.get_positions()} == {"SYN001": 40, "SYN002": 30})
    Reconciler(migrated_engine, broker).run_once()  # the fills into the books (no trade-update consumer here)
    assert positions(migrated_engine) == {
        ("alpha_baseline", "SYN001"): 40,
        ("alpha_baseline", "SYN002"): 25,
        ("other", "SYN002"): 5,
    }

    report = kill_switch(broker, breaker, migrated_engine, reason="runaway strategy", actor="carol")

    closing = {r.symbol: r.order.client_order_id for r in report.closed if r.order is not None}
    assert report.booked == (closing["SYN001"],) and report.unattributed == ("SYN002",)
    wait_for(lambda: not broker.get_positions())
    Reconciler(migrated_engine, broker).run_once()  # the closing fills
    with Session(migrated_engine) as session:
        booked = session.scalars(select(Order).where(Order.client_order_id == closing["SYN001"])).one()
        adopted = session.scalars(select(Order).where(Order.client_order_id == closing["SYN002"])).one()
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "kill.executed")).one()
    assert (booked.strategy_id, booked.intent, booked.side, booked.qty) == (
        "alpha_baseline",
        "kill",
        "sell",
        40,
    )
    assert booked.status == OrderStatus.FILLED and booked.filled_qty == 40
    assert (adopted.strategy_id, adopted.intent) == ("external", "adopted")
    assert audit.details["booked"] == [closing["SYN001"]] and audit.details["unattributed"] == ["SYN002"]
    held = positions(migrated_engine)
    assert held[("alpha_baseline", "SYN001")] == 0  # the strategy's own book is flat
    # The shared symbol is flat for the account, but the books show it under "external" (a known limit).
    assert held[("alpha_baseline", "SYN002")] + held[("other", "SYN002")] + held[("external", "SYN002")] == 0
