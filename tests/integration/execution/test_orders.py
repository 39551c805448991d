"""Order rows on both engines: written once before sending, moved by the broker's reports, journaled."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select

from trader.broker.base import BrokerOrder, TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from trader.execution.orders import (
    CONFLICT_EVENT,
    INTENT_EVENT,
    STALE_EVENT,
    STATUS_EVENT,
    InvalidOrderIntentError,
    OrderConflictError,
    OrderIntent,
    StatusOutcome,
    UnknownOrderError,
    apply_broker_update,
    get_order,
    record_intent,
    record_status,
)
from trader.execution.state_machine import InvalidTransition
from trader.store.db import session_factory, transaction
from trader.store.models import Event, Order

D = Decimal

DAY = date(2024, 3, 5)
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def intent(**changes: object) -> OrderIntent:
    fields: dict[str, object] = {
        "strategy_id": "alpha",
        "trading_date": DAY,
        "symbol": "AAPL",
        "side": OrderSide.BUY,
        "qty": D(10),
    }
    return OrderIntent(**(fields | changes))  # type: ignore[arg-type]


def count(engine: Engine, model: type[Event] | type[Order], **where: object) -> int:
    with session_factory(engine)() as session:
        stmt = select(func.count()).select_from(model)
        for name, value in where.items():
            stmt = stmt.where(getattr(model, name) == value)
        return int(session.execute(stmt).scalar_one())


def broker_order(coid: str, status: OrderStatus, *, order_id: str = "b-1", filled: str = "0") -> BrokerOrder:
    return BrokerOrder(
        id=order_id,
        client_order_id=coid,
        symbol="AAPL",
        side=OrderSide.BUY,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
        status=status,
        qty=D(10),
        notional=None,
        filled_qty=D(filled),
        filled_avg_price=None,
        limit_price=None,
        stop_price=None,
        created_at=T0,
        updated_at=T0,
        submitted_at=T0 + timedelta(seconds=1),
    )


def update(coid: str, event: str, status: OrderStatus, **kw: object) -> TradeUpdate:
    return TradeUpdate(event, broker_order(coid, status, **kw), T0)  # type: ignore[arg-type]


def test_record_intent_writes_pending_submit_once(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        first = record_intent(session, intent())
        assert first.created and first.matches
        assert first.order.status == OrderStatus.PENDING_SUBMIT
        assert first.order.client_order_id == intent().client_order_id
        assert first.order.qty == 10 and first.order.filled_qty == 0
    with transaction(factory) as session:
        again = record_intent(session, intent())
        assert not again.created and again.matches
        assert again.order.client_order_id == first.order.client_order_id
    # a rerun that computed another size gets the first row back, flagged, and changes nothing
    with transaction(factory) as session:
        other = record_intent(session, intent(qty=D(12)))
        assert not other.created and not other.matches
        assert other.order.qty == 10
    assert count(migrated_engine, Order) == 1
    assert count(migrated_engine, Event, kind=INTENT_EVENT) == 1


def test_different_intents_are_different_orders(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        ids = {
            record_intent(session, i).order.client_order_id
            for i in (intent(), intent(side=OrderSide.SELL), intent(intent="exit"), intent(sequence=1))
        }
    assert len(ids) == 4
    assert count(migrated_engine, Order, status=OrderStatus.PENDING_SUBMIT.value) == 4


def test_notional_and_limit_orders_are_recorded_as_given(migrated_engine: Engine) -> None:
    with transaction(session_factory(migrated_engine)) as session:
        notional = record_intent(session, intent(qty=None, notional=D("1500.50"))).order
        limit = record_intent(
            session, intent(symbol="MSFT", order_type=OrderType.LIMIT, limit_price=D("401.25"))
        ).order
    assert (notional.qty, notional.notional) == (None, D("1500.50"))
    assert (limit.order_type, limit.limit_price) == ("limit", D("401.25"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"order_type": OrderType.LIMIT}, "needs limit_price"),
        ({"qty": None}, "exactly one of qty and notional"),
        ({"qty": D(0)}, "qty must be positive"),
        ({"qty": 10.0}, "qty must be a Decimal"),
    ],
)
def test_an_invalid_intent_is_refused_before_any_row(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidOrderIntentError, match=message):
        intent(**changes)


def test_broker_reports_move_the_status_and_are_journaled(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        coid = record_intent(session, intent()).order.client_order_id
    steps = [
        ("new", OrderStatus.NEW, StatusOutcome.CHANGED),
        ("partial_fill", OrderStatus.PARTIALLY_FILLED, StatusOutcome.CHANGED),
        ("partial_fill", OrderStatus.PARTIALLY_FILLED, StatusOutcome.UNCHANGED),
        ("fill", OrderStatus.FILLED, StatusOutcome.CHANGED),
        ("new", OrderStatus.NEW, StatusOutcome.STALE),  # late: must not move it back
        ("partial_fill", OrderStatus.PARTIALLY_FILLED, StatusOutcome.STALE),
        ("canceled", OrderStatus.CANCELED, StatusOutcome.CONFLICT),  # impossible after filled
    ]
    for event, status, outcome in steps:
        with transaction(factory) as session:
            change = apply_broker_update(session, update(coid, event, status))
        assert change.outcome is outcome, (event, change)
    with factory() as session:
        order = get_order(session, coid)
        assert order is not None
        assert order.status == OrderStatus.FILLED
        assert order.broker_order_id == "b-1"
        assert order.submitted_at == T0 + timedelta(seconds=1)
        moves = session.execute(
            select(Event.payload)
            .where(Event.kind == STATUS_EVENT, Event.correlation_id == coid)
            .order_by(Event.id)
        ).scalars()
        assert [(p["from"], p["to"]) for p in moves] == [
            ("pending_submit", "new"),
            ("new", "partially_filled"),
            ("partially_filled", "filled"),
        ]
    assert count(migrated_engine, Event, kind=STALE_EVENT) == 2
    assert count(migrated_engine, Event, kind=CONFLICT_EVENT) == 1


def test_a_move_back_needs_a_report_newer_than_the_status_held(migrated_engine: Engine) -> None:
    # pending_cancel -> new is real when the cancel is rejected (a later report), but a repeated
    # partial_fill or a late new from before the cancel request must not undo the pending cancel.
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        coid = record_intent(session, intent()).order.client_order_id

    def at(seconds: int, event: str, status: OrderStatus) -> TradeUpdate:
        return TradeUpdate(event, broker_order(coid, status), T0 + timedelta(seconds=seconds))  # type: ignore[arg-type]

    steps = [
        (at(1, "new", OrderStatus.NEW), StatusOutcome.CHANGED),
        (at(2, "partial_fill", OrderStatus.PARTIALLY_FILLED), StatusOutcome.CHANGED),
        (at(3, "pending_cancel", OrderStatus.PENDING_CANCEL), StatusOutcome.CHANGED),
        (at(2, "partial_fill", OrderStatus.PARTIALLY_FILLED), StatusOutcome.STALE),  # a repeat
        (at(1, "new", OrderStatus.NEW), StatusOutcome.STALE),  # late
        (at(3, "new", OrderStatus.NEW), StatusOutcome.STALE),  # not newer either
        (at(4, "order_cancel_rejected", OrderStatus.PARTIALLY_FILLED), StatusOutcome.CHANGED),
    ]
    for report, outcome in steps:
        with transaction(factory) as session:
            change = apply_broker_update(session, report)
        assert change.outcome is outcome, (report.event, report.timestamp, change)
    with factory() as session:
        order = get_order(session, coid)
        assert order is not None and order.status == OrderStatus.PARTIALLY_FILLED


def test_the_submit_response_links_the_broker_order(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        coid = record_intent(session, intent()).order.client_order_id
        change = apply_broker_update(session, broker_order(coid, OrderStatus.ACCEPTED, order_id="b-9"))
    assert (change.previous, change.status) == (OrderStatus.PENDING_SUBMIT, OrderStatus.ACCEPTED)
    with transaction(factory) as session, pytest.raises(OrderConflictError, match="b-9"):
        apply_broker_update(session, update(coid, "new", OrderStatus.NEW, order_id="b-other"))
    with factory() as session:
        order = get_order(session, coid)
        assert order is not None and (order.broker_order_id, order.status) == ("b-9", "accepted")


def test_an_unknown_order_is_an_error(migrated_engine: Engine) -> None:
    with transaction(session_factory(migrated_engine)) as session, pytest.raises(UnknownOrderError):
        apply_broker_update(session, update("never-recorded", "new", OrderStatus.NEW))


def test_our_own_decisions_follow_the_lifecycle(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        dry = record_intent(session, intent()).order.client_order_id
        refused = record_intent(session, intent(symbol="MSFT")).order.client_order_id
        sent = record_intent(session, intent(symbol="NVDA")).order.client_order_id
        assert record_status(session, dry, OrderStatus.DRY_RUN).outcome is StatusOutcome.CHANGED
        record_status(session, refused, OrderStatus.RISK_REJECTED, reason="max_order_notional: 12000 > 10000")
        apply_broker_update(session, update(sent, "new", OrderStatus.NEW, order_id="b-7"))
    with transaction(factory) as session, pytest.raises(InvalidTransition):
        record_status(session, sent, OrderStatus.RISK_REJECTED)  # it already reached the broker
    with transaction(factory) as session:
        # a dry-run order showing up at the broker is a conflict, journaled, not applied
        change = apply_broker_update(session, update(dry, "new", OrderStatus.NEW, order_id="b-8"))
        assert change.outcome is StatusOutcome.CONFLICT
    with factory() as session:
        refused_row = get_order(session, refused)
        assert refused_row is not None
        assert (refused_row.status, refused_row.reject_reason) == (
            "risk_rejected",
            "max_order_notional: 12000 > 10000",
        )
        dry_row = get_order(session, dry)
        assert dry_row is not None and dry_row.status == "dry_run"


@pytest.mark.postgres
def test_two_processes_recording_the_same_intent_make_one_row(postgres_url: str) -> None:
    from trader.store import migrate
    from trader.store.db import make_engine

    engine = make_engine(postgres_url)
    migrate.upgrade(engine)
    factory = session_factory(engine)
    strategy = f"s{uuid.uuid4().hex[:6]}"
    barrier = threading.Barrier(2)
    created: list[bool] = []

    def worker() -> None:
        with transaction(factory) as session:
            barrier.wait()
            created.append(record_intent(session, intent(strategy_id=strategy)).created)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False, True]
    assert count(engine, Order) == 1
    assert count(engine, Event, kind=INTENT_EVENT) == 1
    engine.dispose()
