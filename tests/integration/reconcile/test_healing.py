"""The reconciler against the built-in paper broker (through alpaca-py), on SQLite and PostgreSQL:
missed fills adopted exactly once, an edited position healed with a drift alert, orders never
recorded adopted, unsent pending orders failed after the grace period, snapshots written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as SdkSide
from alpaca.trading.enums import TimeInForce as SdkTimeInForce
from alpaca.trading.requests import MarketOrderRequest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import OPEN_TUESDAY, alpaca_broker
from tests.integration.reconcile.support import (
    ACCOUNT,
    DAY,
    SEND,
    D,
    advance,
    assert_agree,
    broker_positions,
    events,
    internal_positions,
    orders_here,
    paper_broker,
    price,
    wait_for,
)
from trader.broker.base import TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent, record_intent
from trader.execution.service import ExecutionService
from trader.reconcile import ReconcileConfig, Reconciler
from trader.reconcile.reconciler import (
    DRIFT,
    FILL_ADOPTED,
    ORDER_ADOPTED,
    POSITION_HEALED,
    STATUS_HEALED,
    SUBMIT_FAILED,
)
from trader.store.db import session_factory, transaction
from trader.store.models import Execution, Position, Snapshot

SYMBOLS = ["SYN001", "SYN002", "SYN003"]


def executions(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(Execution)).scalar_one())


def fill_events(seen: list[TradeUpdate]) -> list[TradeUpdate]:
    return [u for u in seen if u.event in ("fill", "partial_fill") and not u.synthetic]


def test_fills_missed_while_the_consumer_was_down_are_adopted_exactly_once(
    tmp_path: Path, migrated_engine: Engine
) -> None:
    with paper_broker(tmp_path, partial_fill_rate=1.0) as paper:
        broker = alpaca_broker(paper)
        service = ExecutionService(migrated_engine, broker, SEND)
        wanted = {s: D(10 + 2 * i) for i, s in enumerate(SYMBOLS)}
        intents = [OrderIntent("rec", DAY, s, OrderSide.BUY, qty=q) for s, q in wanted.items()]
        seen: list[TradeUpdate] = []  # the stream's real events, kept aside rather than applied
        stream = broker.trade_updates(seen.append)
        assert stream.start(timeout=10)
        try:
            service.submit_batch(intents, ACCOUNT, price)
            advance(paper)
            wait_for(lambda: len(fill_events(seen)) >= 2 * len(SYMBOLS), what="two fills per order")
        finally:
            stream.stop()
        updates = fill_events(seen)
        partials = [u for u in updates if u.event == "partial_fill"]
        assert len(partials) == len(SYMBOLS)
        for update in partials:  # the consumer saw the first half, then went down
            service.on_trade_update(update)
        assert internal_positions(migrated_engine) == {s: q / 2 for s, q in wanted.items()}

        reconciler = Reconciler(migrated_engine, broker)
        first = reconciler.run_once()
        assert first.count(FILL_ADOPTED) == len(SYMBOLS)
        assert first.count(STATUS_HEALED) == len(SYMBOLS)  # partially_filled -> filled
        adopted = events(migrated_engine, FILL_ADOPTED)
        assert sorted(D(e["qty"]) for e in adopted) == sorted(q / 2 for q in wanted.values())
        assert_agree(migrated_engine, broker)
        assert internal_positions(migrated_engine) == wanted
        books = executions(migrated_engine)
        assert books == 2 * len(SYMBOLS)  # one real partial and one catch-up per order

        second = reconciler.run_once()  # run again: nothing is counted twice
        assert second.clean, second.summary()
        assert executions(migrated_engine) == books

        for update in updates:  # the restarted consumer replays every event: all already counted
            service.on_trade_update(update)
        assert executions(migrated_engine) == books
        assert internal_positions(migrated_engine) == wanted == broker_positions(broker)
        assert reconciler.run_once().clean


def test_a_position_edited_in_the_database_is_healed_and_raises_a_drift_alert(
    tmp_path: Path, migrated_engine: Engine
) -> None:
    with paper_broker(tmp_path) as paper:
        broker = alpaca_broker(paper)
        service = ExecutionService(migrated_engine, broker, SEND)
        service.submit_batch(
            [OrderIntent("rec", DAY, s, OrderSide.BUY, qty=D(10)) for s in SYMBOLS], ACCOUNT, price
        )
        reconciler = Reconciler(
            migrated_engine, broker, ReconcileConfig(drift_shares=D(2), drift_notional=D(10_000))
        )
        reconciler.run_once()
        assert reconciler.run_once().clean
        truth = internal_positions(migrated_engine)

        with Session(migrated_engine) as session, session.begin():  # someone edits the books by hand
            session.execute(update(Position).where(Position.symbol == "SYN002").values(qty=D(25)))
            session.execute(update(Position).where(Position.symbol == "SYN003").values(qty=D(11)))

        report = reconciler.run_once()
        assert report.count(POSITION_HEALED) == 2
        assert internal_positions(migrated_engine) == truth == broker_positions(broker)
        # 15 shares is beyond 2 shares; 1 share (SYN003), worth under $10,000, is healed quietly
        [alert] = report.drift
        assert (alert.symbol, alert.broker_qty, alert.recorded_qty, alert.ledger_qty) == (
            "SYN002",
            D(10),
            D(25),
            D(10),
        )
        assert alert.resolved and alert.gap_shares == D(-15)
        [journaled] = events(migrated_engine, DRIFT)
        assert journaled["symbol"] == "SYN002" and journaled["recorded_qty"] == "25"
        healed = events(migrated_engine, POSITION_HEALED)
        assert sorted((h["before"]["qty"], h["after"]["qty"]) for h in healed) == [("11", "10"), ("25", "10")]
        assert reconciler.run_once().clean


def test_orders_never_recorded_are_adopted_and_unsent_pending_orders_fail_after_the_grace(
    tmp_path: Path, migrated_engine: Engine
) -> None:
    with paper_broker(tmp_path) as paper:
        broker = alpaca_broker(paper)
        client = TradingClient(paper.key_id, paper.secret_key, url_override=paper.url)
        client._retry = 0
        client.submit_order(  # placed by hand at the broker
            MarketOrderRequest(symbol="SYN004", qty=4, side=SdkSide.BUY, time_in_force=SdkTimeInForce.DAY)
        )
        unsent = OrderIntent("rec", DAY, "SYN005", OrderSide.BUY, qty=D(3))
        with transaction(session_factory(migrated_engine)) as session:
            record_intent(session, unsent)  # recorded, then the sender died before sending
        clock = {"now": datetime.now(UTC)}
        reconciler = Reconciler(migrated_engine, broker, now=lambda: clock["now"])

        young = reconciler.run_once()
        assert young.count(ORDER_ADOPTED) == 1 and young.count(FILL_ADOPTED) == 1
        assert young.pending_waiting == 1 and young.count(SUBMIT_FAILED) == 0
        assert internal_positions(migrated_engine) == broker_positions(broker) == {"SYN004": D(4)}
        with Session(migrated_engine) as session:
            adopted = session.get(Position, ("external", "SYN004"))
            assert adopted is not None and adopted.qty == D(4)

        clock["now"] += timedelta(minutes=11)
        old = reconciler.run_once()
        assert old.count(SUBMIT_FAILED) == 1 and old.count(ORDER_ADOPTED) == 0
        status, filled, broker_id = orders_here(migrated_engine)[unsent.client_order_id]
        assert (status, filled, broker_id) == (OrderStatus.SUBMIT_FAILED.value, D(0), None)
        assert broker.get_order_by_client_id(unsent.client_order_id) is None  # never sent by us
        assert_agree(migrated_engine, broker)
        assert reconciler.run_once().clean

        with Session(migrated_engine) as session:
            kinds = sorted(session.execute(select(Snapshot.kind).distinct()).scalars())
            pnl = (
                session.execute(select(Snapshot).where(Snapshot.kind == "pnl").order_by(Snapshot.id.desc()))
                .scalars()
                .first()
            )
        assert kinds == ["open_orders", "pnl", "positions", "reconcile"]
        assert (
            pnl is not None
            and pnl.nav is not None
            and pnl.details["trading_date"] == OPEN_TUESDAY.date().isoformat()
        )
