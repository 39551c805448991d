"""ExecutionService directly, against the built-in paper broker: an unknown outcome stays
``pending_submit`` and a later request sends it exactly once; a broker that already holds the id for
another order is not overridden; a changed repeat is refused; trade updates apply once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as SdkSide
from alpaca.trading.enums import TimeInForce as SdkTimeInForce
from alpaca.trading.requests import MarketOrderRequest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import OPEN_TUESDAY, admin, alpaca_broker
from tests.integration.execution.gateway_support import count
from tests.support.paper_broker import RunningBroker, running_paper_broker
from tests.support.services import free_port
from tests.support.waiting import wait_until
from trader.broker import RetryPolicy
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import OrderQuery, TradeUpdate
from trader.config import Settings
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import FaultSettings
from trader.risk.snapshot import PortfolioSnapshot
from trader.store.models import Execution, Order, Position, RiskDecision

D = Decimal
DAY = date(2024, 3, 5)
ACCOUNT = PortfolioSnapshot(D(100_000), D(100_000), D(100_000))
SEND = Settings(dry_run=False)


def price(_symbol: str) -> Decimal:
    return D(30)


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[RunningBroker]:
    config = PaperBrokerSettings(
        data_dir=tmp_path / "empty-data", start_at=OPEN_TUESDAY, faults=FaultSettings(rate_limit_per_minute=0)
    )
    with running_paper_broker(config) as running:
        admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
        yield running


def status_of(engine: Engine, client_order_id: str) -> str:
    with Session(engine) as session:
        return session.execute(
            select(Order.status).where(Order.client_order_id == client_order_id)
        ).scalar_one()


def test_an_unknown_outcome_stays_pending_and_is_sent_once_later(
    paper: RunningBroker, migrated_engine: Engine
) -> None:
    down = Settings(alpaca_base_url=f"http://127.0.0.1:{free_port()}", broker_timeout_seconds=1)
    unreachable = AlpacaBroker.from_settings(down, policy=RetryPolicy(max_retries=1, base_delay=0.01))
    intent = OrderIntent("svc", DAY, "SYN001", OrderSide.BUY, qty=D(5))
    [first] = ExecutionService(migrated_engine, unreachable, SEND).submit_batch([intent], ACCOUNT, price)
    assert (first.status, first.created, first.sent) == (OrderStatus.PENDING_SUBMIT, True, True)
    assert first.reason and "submit order" in first.reason
    assert status_of(migrated_engine, intent.client_order_id) == "pending_submit"

    # a changed request under the same id never replaces the recorded one
    bigger = OrderIntent("svc", DAY, "SYN001", OrderSide.BUY, qty=D(6))
    [refused] = ExecutionService(migrated_engine, unreachable, SEND).submit_batch([bigger], ACCOUNT, price)
    assert (refused.matches, refused.sent, refused.status) == (False, False, OrderStatus.PENDING_SUBMIT)

    broker = alpaca_broker(paper)
    service = ExecutionService(migrated_engine, broker, SEND)
    [retried] = service.submit_batch([intent], ACCOUNT, price)
    assert (retried.created, retried.sent) == (False, True)
    [repeat] = service.submit_batch([intent], ACCOUNT, price)
    assert repeat.sent is False
    orders = broker.list_orders(OrderQuery.ALL)
    assert [(o.client_order_id, o.qty) for o in orders] == [(intent.client_order_id, D(5))]
    assert count(migrated_engine, RiskDecision) == 2  # checked on each attempt that could send


def test_an_id_the_broker_holds_for_another_order_is_left_to_the_reconciler(
    paper: RunningBroker, migrated_engine: Engine
) -> None:
    intent = OrderIntent("svc", DAY, "SYN001", OrderSide.BUY, qty=D(5))
    client = TradingClient(paper.key_id, paper.secret_key, url_override=paper.url)
    client._retry = 0
    client.submit_order(  # someone else used our id for 7 shares
        MarketOrderRequest(
            symbol="SYN001",
            qty=7,
            side=SdkSide.BUY,
            time_in_force=SdkTimeInForce.DAY,
            client_order_id=intent.client_order_id,
        )
    )
    [outcome] = ExecutionService(migrated_engine, alpaca_broker(paper), SEND).submit_batch(
        [intent], ACCOUNT, price
    )
    assert outcome.status is OrderStatus.PENDING_SUBMIT and outcome.sent
    assert outcome.reason and "differs" in outcome.reason
    assert status_of(migrated_engine, intent.client_order_id) == "pending_submit"
    at_broker = alpaca_broker(paper).list_orders(OrderQuery.ALL)
    assert [(o.client_order_id, o.qty) for o in at_broker] == [(intent.client_order_id, D(7))]


def test_streamed_updates_apply_once_and_unknown_orders_are_skipped(
    paper: RunningBroker, migrated_engine: Engine
) -> None:
    broker = alpaca_broker(paper)
    service = ExecutionService(migrated_engine, broker, SEND)
    seen: list[TradeUpdate] = []

    def handler(update: TradeUpdate) -> None:
        seen.append(update)
        service.on_trade_update(update)

    stream = broker.trade_updates(handler)
    assert stream.start(timeout=10)
    try:
        intent = OrderIntent("svc", DAY, "SYN002", OrderSide.BUY, qty=D(8))
        service.submit_batch([intent], ACCOUNT, price)
        wait_until(lambda: status_of(migrated_engine, intent.client_order_id) == "filled", what="the fill")
        wait_until(lambda: any(u.event == "fill" for u in seen), what="the fill event")
    finally:
        stream.stop()
    fills = [u for u in seen if u.event == "fill"]
    for update in fills + fills:  # delivered again, twice: nothing changes
        result = service.on_trade_update(update)
        assert result is not None and result.outcome.value == "duplicate"
    not_ours = replace(fills[0].order, client_order_id="placed-by-hand")
    stranger = TradeUpdate("fill", not_ours, fills[0].timestamp, "ex-x", D(1), D(1))
    assert service.on_trade_update(stranger) is None
    assert count(migrated_engine, Execution) == 1
    with Session(migrated_engine) as session:
        position = session.execute(select(Position)).scalar_one()
    assert (position.symbol, position.qty) == ("SYN002", D(8))
