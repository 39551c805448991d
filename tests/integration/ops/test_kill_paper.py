"""Kill switch against the built-in paper broker: nothing open, flat, new signals blocked until cleared."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.conftest import T0
from tests.integration.ops.support import (
    QUIET,
    T0_DAY,
    ManualClock,
    audit_actions,
    limit,
    market,
    move_broker_clock,
    send,
    wait_for,
)
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import Broker, BrokerOrder, OrderRequest
from trader.broker.errors import InsufficientFundsError
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent
from trader.ops.breakers import BreakerError, BreakerState, CircuitBreaker, RedisBreakerStore, TripReason
from trader.ops.kill import kill_switch
from trader.ops.monitor import PostTradeMonitor
from trader.reconcile import Reconciler
from trader.store.db import make_engine
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


def test_closing_orders_are_booked_to_each_strategy_whose_position_they_close(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 25))
    # A second strategy in SYN002: the account holds 30, which the kill switch splits 25 + 5.
    send(migrated_engine, broker, OrderIntent("other", T0_DAY, "SYN002", OrderSide.BUY, qty=Decimal(5)))
    wait_for(lambda: {p.symbol: p.qty for p in broker.get_positions()} == {"SYN001": 40, "SYN002": 30})
    Reconciler(migrated_engine, broker).run_once()  # the fills into the books (no trade-update consumer here)
    assert positions(migrated_engine) == {
        ("alpha_baseline", "SYN001"): 40,
        ("alpha_baseline", "SYN002"): 25,
        ("other", "SYN002"): 5,
    }

    report = kill_switch(broker, breaker, migrated_engine, reason="runaway strategy", actor="carol")

    assert report.failures == () and report.unattributed == ()
    assert len(report.booked) == 3 and len(report.closed) == 3
    wait_for(lambda: not broker.get_positions())
    Reconciler(migrated_engine, broker).run_once()  # the closing fills
    with Session(migrated_engine) as session:
        closing = session.scalars(select(Order).where(Order.intent == "kill")).all()
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "kill.executed")).one()
        adopted = session.scalar(select(Order).where(Order.intent == "adopted"))
    assert {(o.strategy_id, o.symbol, o.side, o.qty, o.status, o.filled_qty) for o in closing} == {
        ("alpha_baseline", "SYN001", "sell", 40, OrderStatus.FILLED, 40),
        ("alpha_baseline", "SYN002", "sell", 25, OrderStatus.FILLED, 25),
        ("other", "SYN002", "sell", 5, OrderStatus.FILLED, 5),
    }
    assert sorted(report.booked) == sorted(o.client_order_id for o in closing)
    assert adopted is None  # every closing order was ours: nothing for the reconciler to adopt
    assert sorted(audit.details["booked"]) == sorted(report.booked) and audit.details["unattributed"] == []
    assert sorted(audit.details["closed"]) == ["SYN001", "SYN002"]
    # Every strategy's own book is flat, with nothing booked under "external".
    assert positions(migrated_engine) == {
        ("alpha_baseline", "SYN001"): 0,
        ("alpha_baseline", "SYN002"): 0,
        ("other", "SYN002"): 0,
    }


def test_a_position_the_books_do_not_explain_is_closed_whole_and_left_to_the_reconciler(
    paper: RunningBroker, broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 25))
    Reconciler(migrated_engine, broker).run_once()
    # 3 more SYN002 bought by hand at the broker, never seen by our books.
    broker.submit_order(OrderIntent("manual", T0_DAY, "SYN002", OrderSide.BUY, qty=Decimal(3)).to_request())
    wait_for(lambda: {p.symbol: p.qty for p in broker.get_positions()} == {"SYN001": 40, "SYN002": 28})

    report = kill_switch(broker, breaker, migrated_engine, reason="drift", actor="carol")

    assert report.failures == () and report.unattributed == ("SYN002",)
    assert len(report.booked) == 1
    wait_for(lambda: not broker.get_positions())
    whole = next(r.order for r in report.closed if r.symbol == "SYN002")
    assert whole is not None and whole.qty == 28  # the whole position, not our 25
    Reconciler(migrated_engine, broker).run_once()
    held = positions(migrated_engine)
    assert held[("alpha_baseline", "SYN001")] == 0
    # The account is flat; the books show our 25 and the adopted closing sale of 28 under "external"
    # (the reconciler adopted the manual buy of 3 there too).
    assert held[("alpha_baseline", "SYN002")] + held[("external", "SYN002")] == 0


def test_a_second_kill_the_same_day_sends_new_closing_orders(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    wait_for(lambda: len(broker.get_positions()) == 1)
    Reconciler(migrated_engine, broker).run_once()
    first = kill_switch(broker, breaker, migrated_engine, reason="first", actor="carol")
    wait_for(lambda: not broker.get_positions())
    Reconciler(migrated_engine, broker).run_once()

    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 10, intent="reentry"))
    wait_for(lambda: len(broker.get_positions()) == 1)
    Reconciler(migrated_engine, broker).run_once()
    second = kill_switch(broker, breaker, migrated_engine, reason="second", actor="carol")

    assert first.failures == () and second.failures == ()
    assert len(first.booked) == len(second.booked) == 1 and first.booked != second.booked
    wait_for(lambda: not broker.get_positions())
    Reconciler(migrated_engine, broker).run_once()
    with Session(migrated_engine) as session:
        kills = session.execute(
            select(Order.client_order_id, Order.qty, Order.status)
            .where(Order.intent == "kill")
            .order_by(Order.qty.desc())
        ).all()
    assert [(cid, qty, status) for cid, qty, status in kills] == [
        (first.booked[0], 40, OrderStatus.FILLED),
        (second.booked[0], 10, OrderStatus.FILLED),
    ]
    assert positions(migrated_engine) == {("alpha_baseline", "SYN001"): 0}


def test_outside_market_hours_the_closing_orders_wait_and_are_not_reported_as_stray(
    paper: RunningBroker, broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    wait_for(lambda: len(broker.get_positions()) == 1)
    Reconciler(migrated_engine, broker).run_once()
    move_broker_clock(paper, T0 + timedelta(hours=8))  # 18:00 in New York: closed
    resting = send(migrated_engine, broker, limit("SYN002", OrderSide.BUY, 10, "1.00"))

    report = kill_switch(broker, breaker, migrated_engine, reason="evening", actor="carol")

    assert report.failures == () and len(report.booked) == 1
    assert [r.order_id for r in report.canceled] == [resting.id]
    assert report.open_orders_left == ()  # the waiting closing order is ours, not a stray
    assert report.positions_left == ("SYN001 40",) and not report.ok
    with Session(migrated_engine) as session:
        waiting = session.scalars(select(Order).where(Order.intent == "kill")).one()
    assert (waiting.strategy_id, waiting.qty, waiting.filled_qty) == ("alpha_baseline", 40, 0)
    assert waiting.status in {OrderStatus.NEW, OrderStatus.ACCEPTED}


class _Refusing:
    """The broker, except that it refuses the orders of one strategy (as for too few shares held)."""

    def __init__(self, broker: AlpacaBroker, strategy: str) -> None:
        self._broker, self._strategy = broker, strategy

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        if request.client_order_id.startswith(self._strategy):
            raise InsufficientFundsError("insufficient qty available for order", status=403)
        return self._broker.submit_order(request)


def test_a_refused_closing_order_is_recorded_as_failed_and_the_rest_still_close(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 25))
    send(migrated_engine, broker, OrderIntent("other", T0_DAY, "SYN002", OrderSide.BUY, qty=Decimal(5)))
    wait_for(lambda: {p.symbol: p.qty for p in broker.get_positions()} == {"SYN002": 30})
    Reconciler(migrated_engine, broker).run_once()

    refusing = cast(Broker, _Refusing(broker, "other"))
    report = kill_switch(refusing, breaker, migrated_engine, reason="partly refused", actor="carol")

    assert len(report.failures) == 1 and "close SYN002 for other" in report.failures[0]
    assert "insufficient qty" in report.failures[0] and not report.ok
    assert len(report.booked) == 1
    wait_for(lambda: {p.symbol: p.qty for p in broker.get_positions()} == {"SYN002": 5})
    with Session(migrated_engine) as session:
        kills = {o.strategy_id: o for o in session.scalars(select(Order).where(Order.intent == "kill"))}
        audit = session.scalars(select(AuditLog).where(AuditLog.action == "kill.executed")).one()
    assert kills["other"].status == OrderStatus.SUBMIT_FAILED
    assert "insufficient qty" in (kills["other"].reject_reason or "")
    assert kills["alpha_baseline"].qty == 25 and kills["alpha_baseline"].status != OrderStatus.SUBMIT_FAILED
    assert audit.details["failures"] == list(report.failures)
    assert breaker.state() is BreakerState.TRIPPED


def test_with_the_database_unusable_the_kill_still_cancels_and_flattens(
    broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine, tmp_path: Path
) -> None:
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    resting = send(migrated_engine, broker, limit("SYN003", OrderSide.BUY, 10, "1.00"))
    wait_for(lambda: len(broker.get_positions()) == 1)
    # The kill's own database has none of our tables (say, a wrong DATABASE_URL or a failed migration);
    # the breaker keeps its state and audit where it was configured.
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")

    report = kill_switch(broker, breaker, broken, reason="database down", actor="carol")

    assert breaker.state() is BreakerState.TRIPPED
    assert [r.order_id for r in report.canceled] == [resting.id]
    assert report.unattributed == ("SYN001",) and report.booked == ()
    wait_for(lambda: not broker.get_positions() and not broker.list_open_orders())
    assert any(
        f.startswith(f"recording the cancel of {resting.client_order_id}: OperationalError")
        for f in report.failures
    )
    assert any(
        f.startswith("reading the books: OperationalError") and "no such table" in f for f in report.failures
    )
    assert report.failures[-1].startswith("writing the audit log: OperationalError")
    assert all("SELECT" not in f and "INSERT" not in f for f in report.failures)  # one line each


def test_with_the_breaker_store_unreachable_the_kill_still_flattens(
    broker: AlpacaBroker, migrated_engine: Engine, clock: ManualClock
) -> None:
    import redis

    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    wait_for(lambda: len(broker.get_positions()) == 1)
    gone = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # nothing listens
    unreachable = CircuitBreaker(RedisBreakerStore(gone, "kill-test:"), migrated_engine, clock=clock)

    report = kill_switch(broker, unreachable, migrated_engine, reason="store down", actor="carol")

    assert report.breaker is None and not report.ok
    assert report.failures[0].startswith("tripping the circuit breaker:")
    wait_for(lambda: not broker.get_positions())  # flattened all the same
    assert not unreachable.allows(risk_reducing=False)  # entries fail closed while it cannot be read


def test_a_second_kill_in_the_evening_keeps_the_first_ones_closing_orders(
    paper: RunningBroker, broker: AlpacaBroker, breaker: CircuitBreaker, migrated_engine: Engine
) -> None:
    # Outside market hours a cancel waits for the open with the shares still held: canceling the
    # first kill's closing order and sending a new one would leave nothing to close the position.
    send(migrated_engine, broker, market("SYN001", OrderSide.BUY, 40))
    send(migrated_engine, broker, market("SYN002", OrderSide.BUY, 10))
    wait_for(lambda: len(broker.get_positions()) == 2)
    Reconciler(migrated_engine, broker).run_once()
    move_broker_clock(paper, T0 + timedelta(hours=8))  # 18:00 in New York: closed
    first = kill_switch(broker, breaker, migrated_engine, reason="evening", actor="carol")
    assert first.failures == () and len(first.booked) == 2
    resting = send(migrated_engine, broker, limit("SYN003", OrderSide.BUY, 10, "1.00"))

    second = kill_switch(broker, breaker, migrated_engine, reason="again", actor="carol")

    assert second.failures == () and second.booked == () and second.closed == ()
    assert sorted(second.working) == sorted(first.booked)
    assert [r.order_id for r in second.canceled] == [resting.id]  # only the stray order
    assert second.open_orders_left == ()
    still_open = {o.client_order_id for o in broker.list_open_orders()}
    assert still_open == set(first.booked)
    with Session(migrated_engine) as session:
        audit = session.scalars(
            select(AuditLog).where(AuditLog.action == "kill.executed").order_by(AuditLog.id)
        ).all()[-1]
    assert sorted(audit.details["kept_working"]) == sorted(first.booked)
