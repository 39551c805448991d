"""The circuit breaker in the money path: while TRIPPED only risk-reducing orders pass, and the kill
switch blocks new signals."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.integration.execution.gateway_support import settings
from trader.data.paths import DataPaths
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import OrderIntent, record_intent
from trader.execution.service import ExecutionService
from trader.ops.breakers import CircuitBreaker, DatabaseBreakerStore, TripReason
from trader.risk.checks import RiskOptions
from trader.risk.snapshot import Holding, PortfolioSnapshot
from trader.signal.service import SignalBlockedError, SignalService

D = Decimal
DAY = date(2024, 3, 5)
SNAPSHOT = PortfolioSnapshot(D(100_000), D(50_000), D(50_000), positions={"AAA": Holding(D(10), D(100))})
PRICES = {"AAA": D(100), "BBB": D(50)}


def _service(engine: Engine, breaker: CircuitBreaker) -> ExecutionService:
    return ExecutionService(engine, None, settings(dry_run=True), source="test", breaker=breaker)


def _intent(symbol: str, side: OrderSide, qty: int) -> OrderIntent:
    return OrderIntent("gate", DAY, symbol, side, qty=D(qty), intent="rebalance")


def test_tripped_breaker_refuses_entries_and_lets_exits_through(migrated_engine: Engine) -> None:
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    service = _service(migrated_engine, breaker)
    open_day = service.submit_batch([_intent("BBB", OrderSide.BUY, 5)], SNAPSHOT, PRICES.get)
    assert open_day[0].status is OrderStatus.DRY_RUN  # OPEN breaker: the risk check decides

    breaker.trip(TripReason.DRAWDOWN, "intraday drawdown 3% > 2%", "test")
    entry, grow, exit_ = service.submit_batch(
        [
            _intent("BBB", OrderSide.SELL, 7),
            _intent("AAA", OrderSide.BUY, 1),
            _intent("AAA", OrderSide.SELL, 10),
        ],
        SNAPSHOT,
        PRICES.get,
    )
    assert entry.status is OrderStatus.RISK_REJECTED  # opening a short is an entry
    assert grow.status is OrderStatus.RISK_REJECTED
    assert grow.reason is not None and "circuit breaker TRIPPED (drawdown" in grow.reason
    assert exit_.status is OrderStatus.DRY_RUN  # selling the long down to zero is an exit


def test_a_flip_through_zero_is_not_an_exit(migrated_engine: Engine) -> None:
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    breaker.trip(TripReason.MANUAL, "operator", "test")
    (flip,) = _service(migrated_engine, breaker).submit_batch(
        [_intent("AAA", OrderSide.SELL, 11)], SNAPSHOT, PRICES.get
    )
    assert flip.status is OrderStatus.RISK_REJECTED


def test_the_second_leg_of_a_flip_in_one_batch_is_an_entry(migrated_engine: Engine) -> None:
    # Each leg alone looks like an exit against the snapshot (sell at most the long of 10); together
    # the second opens a short. With shorting allowed, only the breaker stands in the way.
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    breaker.trip(TripReason.KILL, "kill switch", "test")
    service = ExecutionService(
        migrated_engine, None, settings(dry_run=True), source="test", breaker=breaker,
        risk_options=RiskOptions(allow_short=True),
    )  # fmt: skip
    close, open_, again = service.submit_batch(
        [
            _intent("AAA", OrderSide.SELL, 10),
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(10), sequence=1),
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(4), sequence=2),
        ],
        SNAPSHOT,
        PRICES.get,
    )
    assert close.status is OrderStatus.DRY_RUN
    assert open_.status is OrderStatus.RISK_REJECTED and "circuit breaker TRIPPED" in (open_.reason or "")
    # A refused order does not move the projection: the next one is judged against flat as well.
    assert again.status is OrderStatus.RISK_REJECTED


def test_partial_exits_in_one_batch_stay_exits_until_the_position_is_gone(migrated_engine: Engine) -> None:
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    breaker.trip(TripReason.MANUAL, "operator", "test")
    outcomes = _service(migrated_engine, breaker).submit_batch(
        [
            _intent("AAA", OrderSide.SELL, 6),
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(4), sequence=1),
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(1), sequence=2),
        ],
        SNAPSHOT,
        PRICES.get,
    )
    assert [o.status for o in outcomes] == [
        OrderStatus.DRY_RUN,
        OrderStatus.DRY_RUN,
        OrderStatus.RISK_REJECTED,
    ]


@pytest.mark.parametrize("reason", [TripReason.KILL])
def test_the_kill_switch_blocks_new_signals(
    migrated_engine: Engine, tmp_path: Path, reason: TripReason
) -> None:
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    breaker.trip(reason, "kill switch", "test")
    service = SignalService(migrated_engine, DataPaths(tmp_path), strategy="gate", breaker=breaker)
    with pytest.raises(SignalBlockedError, match="kill switch"):
        service.run(DAY)


def test_an_unreachable_breaker_refuses_entries_with_a_reason_and_lets_exits_through(
    migrated_engine: Engine,
) -> None:
    import redis

    from trader.ops.breakers import RedisBreakerStore

    gone = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)  # nothing listens
    breaker = CircuitBreaker(RedisBreakerStore(gone, "gate-test:"), migrated_engine)
    entry, exit_ = _service(migrated_engine, breaker).submit_batch(
        [_intent("BBB", OrderSide.BUY, 5), _intent("AAA", OrderSide.SELL, 10)], SNAPSHOT, PRICES.get
    )
    assert entry.status is OrderStatus.RISK_REJECTED
    assert entry.reason is not None and entry.reason.startswith("circuit breaker state unreadable")
    assert exit_.status is OrderStatus.DRY_RUN


def test_an_exit_counts_the_open_orders_of_earlier_requests_on_its_side(migrated_engine: Engine) -> None:
    # Two requests, each selling the whole long of 10: the first is an exit; with it still open, the
    # second would flip the position if both filled, so it is an entry. A buy on the other side
    # does not make room for more selling (it may never fill).
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine)
    breaker.trip(TripReason.KILL, "kill switch", "test")
    service = _service(migrated_engine, breaker)
    (first,) = service.submit_batch([_intent("AAA", OrderSide.SELL, 10)], SNAPSHOT, PRICES.get)
    assert first.status is OrderStatus.DRY_RUN  # dry_run rows are final: not open, not counted
    with Session(migrated_engine) as session, session.begin():
        # An open sell of 6 from an earlier request (sent, not filled yet).
        record_intent(session, OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(6), sequence=5))
        record_intent(session, OrderIntent("gate", DAY, "AAA", OrderSide.BUY, qty=D(50), sequence=6))
    four, five = service.submit_batch(
        [
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(4), sequence=1),
            OrderIntent("gate", DAY, "AAA", OrderSide.SELL, qty=D(5), sequence=2),
        ],
        SNAPSHOT,
        PRICES.get,
    )
    assert four.status is OrderStatus.DRY_RUN  # 6 open + 4 = the whole long
    assert five.status is OrderStatus.RISK_REJECTED  # 6 + 4 + 5 > 10
    assert five.reason is not None and five.reason.endswith("(10 sell already on its way in open orders)")
