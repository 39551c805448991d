"""End to end against the built-in paper broker: orders recorded, sent, and their fills streamed into
the ledger while the broker drops and repeats events and fills in parts. The books must match the
broker's, and a restarted consumer that replays everything from the start must change nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from tests.integration.broker.conftest import OPEN_TUESDAY, admin, alpaca_broker, set_faults
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent, apply_broker_update, record_intent
from trader.execution.updates import handle_trade_update
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import FaultSettings
from trader.store.db import session_factory, transaction
from trader.store.models import Execution, Order, Position

D = Decimal
SYMBOLS = ["SYN001", "SYN002", "SYN003", "SYN004"]


class Consumer:
    """The trade-update consumer: each update in its own transaction; failures are kept."""

    def __init__(self, engine: Engine) -> None:
        self.factory = session_factory(engine)
        self.errors: list[BaseException] = []
        self.handled = 0
        self._lock = threading.Lock()

    def __call__(self, update: TradeUpdate) -> None:
        try:
            with transaction(self.factory) as session:
                handle_trade_update(session, update)
            with self._lock:
                self.handled += 1
        except BaseException as exc:
            self.errors.append(exc)


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[RunningBroker]:
    settings = PaperBrokerSettings(
        data_dir=tmp_path / "empty-data",
        start_at=OPEN_TUESDAY,
        partial_fill_rate=0.7,
        faults=FaultSettings(rate_limit_per_minute=0, seed=7),
    )
    with running_paper_broker(settings) as running:
        admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
        yield running


def send(engine: Engine, broker: AlpacaBroker, intent: OrderIntent) -> str:
    """Record the order, send it, record the broker's answer: as the gateway does."""
    with transaction(session_factory(engine)) as session:
        record_intent(session, intent)
    request = intent.to_request()
    sent = broker.submit_order(request)
    with transaction(session_factory(engine)) as session:
        apply_broker_update(session, sent)
    return request.client_order_id


def wait_until(check: Callable[[], bool], paper: RunningBroker, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        admin(paper, "POST", "clock", {"advance_seconds": 60})  # lets partial fills complete
        time.sleep(0.2)
    raise AssertionError("timed out waiting for the fills")


def all_filled(engine: Engine) -> bool:
    with session_factory(engine)() as session:
        orders = session.execute(select(Order)).scalars().all()
        return all(o.status == OrderStatus.FILLED and o.filled_qty == o.qty for o in orders)


def snapshot(engine: Engine) -> tuple[dict[str, tuple[D, D, D]], int]:
    with session_factory(engine)() as session:
        positions = {
            p.symbol: (p.qty, p.avg_price, p.realized_pnl)
            for p in session.execute(select(Position)).scalars()
        }
        return positions, int(session.execute(select(func.count()).select_from(Execution)).scalar_one())


def test_streamed_fills_match_the_broker_through_drops_repeats_and_a_replay(
    paper: RunningBroker, migrated_engine: Engine
) -> None:
    broker = alpaca_broker(paper)
    consumer = Consumer(migrated_engine)
    stream = broker.trade_updates(consumer, resync_interval=0.3)
    assert stream.start(timeout=10)
    try:
        set_faults(paper, drop_event_rate=0.3, duplicate_event_rate=0.3)
        day = OPEN_TUESDAY.date()
        for i, symbol in enumerate(SYMBOLS):
            send(migrated_engine, broker, OrderIntent("e2e", day, symbol, OrderSide.BUY, qty=D(10 + 2 * i)))
        wait_until(lambda: all_filled(migrated_engine), paper)
        for symbol in SYMBOLS[:2]:
            send(
                migrated_engine,
                broker,
                OrderIntent("e2e", day, symbol, OrderSide.SELL, qty=D(5), intent="exit"),
            )
        wait_until(lambda: all_filled(migrated_engine), paper)
    finally:
        stream.stop()
    assert not consumer.errors, consumer.errors
    # the faults really happened: repeats filtered, lost events recovered by the REST catch-up
    assert stream.stats.duplicates > 0 and stream.stats.synthetic > 0

    positions, executions = snapshot(migrated_engine)
    assert executions > len(SYMBOLS) + 2  # some orders filled in several parts
    at_broker = {p.symbol: p for p in broker.get_positions()}
    assert set(positions) == set(at_broker)
    for symbol, (qty, avg, _) in positions.items():
        assert qty == at_broker[symbol].qty
        assert abs(avg - at_broker[symbol].avg_entry_price) < D("0.0001")
    assert all(positions[s][2] != 0 for s in SYMBOLS[:2])  # the sells realized something

    # a consumer restarted with no memory replays every order from the start: nothing changes
    replay = Consumer(migrated_engine)
    again = broker.trade_updates(replay, since=OPEN_TUESDAY - timedelta(days=1))
    assert again.start(timeout=10)
    try:
        deadline = time.monotonic() + 10
        while replay.handled < 6 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        again.stop()
    assert not replay.errors, replay.errors
    assert replay.handled >= 6  # every order was replayed to the ledger
    assert snapshot(migrated_engine) == (positions, executions)
