"""Stress scenarios of the post-trade monitor against the built-in paper broker: a drawdown breach, a
data feed that stops, a broker that fails. The breaker lives in Redis here (the store-level tests cover
the database store); the audit log and snapshots in each engine."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import set_faults
from tests.integration.ops.support import ManualClock, market, move_broker_clock, send, wait_for
from tests.support.paper_broker import RunningBroker
from tests.support.services import RedisKeySpace
from trader.broker.alpaca import AlpacaBroker
from trader.data.calendar import trading_calendar
from trader.domain.enums import OrderSide
from trader.ops.breakers import BreakerState, CircuitBreaker, RedisBreakerStore, TripReason, is_risk_reducing
from trader.ops.monitor import MonitorLimits, PostTradeMonitor
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Snapshot

#: SYN036 falls 2.1% from open to close on 2024-03-05 in the default synthetic market.
LOSER = "SYN036"
QTY = 500
#: 15:30 New York: still open, well below the morning price.
AFTERNOON = datetime(2024, 3, 5, 20, 30, tzinfo=UTC)
#: Wednesday 10:00 and 12:00 New York.
NEXT_MORNING = datetime(2024, 3, 6, 15, 0, tzinfo=UTC)
NEXT_NOON = datetime(2024, 3, 6, 17, 0, tzinfo=UTC)


@pytest.fixture
def redis_breaker(
    redis_keyspace: RedisKeySpace, migrated_engine: Engine, clock: ManualClock
) -> CircuitBreaker:
    store = RedisBreakerStore(redis_keyspace.client, redis_keyspace.prefix)
    # A long quiet period: the trip is at 15:30, so recovery may come no earlier than 11:30 the next day.
    return CircuitBreaker(store, migrated_engine, clock=clock, quiet_period=timedelta(hours=20))


def both(paper: RunningBroker, clock: ManualClock, at: datetime) -> None:
    move_broker_clock(paper, at)
    clock.now = at


def position_qty(broker: AlpacaBroker, symbol: str) -> Decimal:
    position = broker.get_position(symbol)
    return position.qty if position else Decimal(0)


def test_drawdown_trips_exits_pass_and_recovery_waits_for_approval_and_quiet_period(
    paper: RunningBroker,
    broker: AlpacaBroker,
    redis_breaker: CircuitBreaker,
    clock: ManualClock,
    migrated_engine: Engine,
) -> None:
    monitor = PostTradeMonitor(
        broker, redis_breaker, limits=MonitorLimits(max_drawdown_pct=Decimal("0.005")), clock=clock,
        engine=migrated_engine,
    )  # fmt: skip
    # The monitor runs from the start of the day (the paper broker takes last_equity at the first
    # account read after a close, valuing the positions held at that read).
    start = monitor.check()
    send(migrated_engine, broker, market(LOSER, OrderSide.BUY, QTY))
    wait_for(lambda: position_qty(broker, LOSER) == QTY)
    morning = monitor.check()
    assert morning.breaker is BreakerState.OPEN and morning.drawdown_pct == 0
    assert morning.start_equity == start.equity == morning.equity
    price_then = broker.get_position(LOSER).current_price  # type: ignore[union-attr]
    assert price_then is not None
    assert morning.gross_exposure == morning.net_exposure == QTY * price_then

    both(paper, clock, AFTERNOON)
    afternoon = monitor.check()
    price_now = broker.get_position(LOSER).current_price  # type: ignore[union-attr]
    assert price_now is not None and price_now < price_then
    # Only the position moved: the equity fell by exactly its loss, measured from the morning's peak.
    assert afternoon.peak_equity == morning.equity
    peak, equity, drawdown = afternoon.peak_equity, afternoon.equity, afternoon.drawdown_pct
    assert peak is not None and equity is not None and drawdown is not None
    assert equity == peak - QTY * (price_then - price_now)
    assert drawdown == (peak - equity) / peak and drawdown > Decimal("0.005")
    assert afternoon.breaker is BreakerState.TRIPPED
    assert redis_breaker.status().kind is TripReason.DRAWDOWN

    # SAFE mode: a new entry is refused by the gate, the exit passes and flattens the position.
    assert not redis_breaker.allows(is_risk_reducing(OrderSide.BUY, Decimal(10), Decimal(QTY)))
    assert redis_breaker.allows(is_risk_reducing(OrderSide.SELL, Decimal(QTY), Decimal(QTY)))
    send(migrated_engine, broker, market(LOSER, OrderSide.SELL, QTY, intent="exit"))
    wait_for(lambda: position_qty(broker, LOSER) == 0)

    # The loss is realised: the drawdown from today's peak lasts, so nothing recovers today.
    assert monitor.check().breaker is BreakerState.TRIPPED

    # Next morning the drawdown is gone (a new day, a new peak) but no one approved yet.
    both(paper, clock, NEXT_MORNING)
    reading = monitor.check()
    assert reading.drawdown_pct == 0 and not reading.breaches
    assert reading.breaker is BreakerState.TRIPPED
    redis_breaker.approve("alice")
    # Approved and clear, but the 20-hour quiet period since 15:30 runs until 11:30.
    assert monitor.check().breaker is BreakerState.TRIPPED
    assert any("quiet period" in b for b in redis_breaker.blockers(conditions_clear=True))

    both(paper, clock, NEXT_NOON)
    assert monitor.check().breaker is BreakerState.OPEN
    assert redis_breaker.allows(risk_reducing=False)
    with Session(migrated_engine) as session:
        assert (
            session.scalar(select(func.count()).select_from(Snapshot).where(Snapshot.kind == "account")) == 7
        )


def _account_tick(engine: Engine, at: datetime, equity: Decimal, source: str = "monitor") -> None:
    """An ``account`` snapshot as a monitor's tick writes it (what an earlier process left behind)."""
    with Session(engine) as session, session.begin():
        details = {"peak_equity": str(equity), "source": source}
        session.add(Snapshot(ts=at, kind="account", nav=equity, details=details))


def test_a_restarted_monitor_measures_from_the_peak_its_earlier_run_recorded(
    broker: AlpacaBroker, redis_breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    limits = MonitorLimits(max_drawdown_pct=Decimal("0.005"))
    first = PostTradeMonitor(
        broker, redis_breaker, limits=limits, clock=clock, engine=migrated_engine
    ).check()
    equity = first.equity
    assert equity is not None and first.breaker is BreakerState.OPEN
    # The earlier process's last tick before it died saw equity 1% higher (a position since sold at a
    # loss, say). Yesterday's ticks and other components' account snapshots are not taken over.
    high = equity * Decimal("1.01")
    _account_tick(migrated_engine, clock.now + timedelta(hours=1), high)
    _account_tick(migrated_engine, clock.now - timedelta(days=1), high * 2)
    # 03:00 UTC of the same date is 22:00 New York the evening before: another trading day.
    _account_tick(migrated_engine, datetime(2024, 3, 5, 3, 0, tzinfo=UTC), high * 2)
    _account_tick(migrated_engine, clock.now + timedelta(hours=1), high * 3, source="reconciler")
    _account_tick(migrated_engine, clock.now + timedelta(hours=3), high * 4)  # after the restart's now

    clock.advance(timedelta(hours=2))
    restarted = PostTradeMonitor(broker, redis_breaker, limits=limits, clock=clock, engine=migrated_engine)
    reading = restarted.check()
    assert reading.equity == equity  # nothing traded: only the peak differs
    assert reading.peak_equity == high
    assert reading.drawdown_pct == (high - equity) / high
    assert reading.realized_vol is not None  # the earlier ticks' equities count too
    assert reading.breaker is BreakerState.TRIPPED
    assert redis_breaker.status().kind is TripReason.DRAWDOWN

    # Without an engine there is nothing to take over: the peak starts at the day's start equity.
    assert PostTradeMonitor(broker, redis_breaker, limits=limits, clock=clock).assess().peak_equity == equity


def test_a_failed_read_of_the_earlier_run_is_retried_on_the_next_tick(
    broker: AlpacaBroker, redis_breaker: CircuitBreaker, clock: ManualClock, tmp_path: Path
) -> None:
    """A database not readable at the first tick (here: not migrated yet) must not make the monitor
    settle for the start equity: the next tick reads the earlier run's peak."""
    engine = make_engine(f"sqlite:///{tmp_path / 'late.db'}")
    try:
        limits = MonitorLimits(max_drawdown_pct=Decimal("0.005"))
        monitor = PostTradeMonitor(broker, redis_breaker, limits=limits, clock=clock, engine=engine)
        with pytest.raises(SQLAlchemyError):
            monitor.check()
        migrate.upgrade(engine)
        equity = broker.get_account().equity
        high = equity * Decimal("1.01")
        _account_tick(engine, clock.now - timedelta(minutes=30), high)
        reading = monitor.check()
        assert reading.peak_equity == high
        assert reading.breaker is BreakerState.TRIPPED
    finally:
        engine.dispose()


def test_a_stopped_data_feed_trips_the_staleness_breaker(
    paper: RunningBroker, broker: AlpacaBroker, redis_breaker: CircuitBreaker, clock: ManualClock
) -> None:
    # The feed delivered Monday's bar, then stopped: fine on Tuesday, one session behind on Wednesday.
    ingested = [date(2024, 3, 4)]
    monitor = PostTradeMonitor(
        broker, redis_breaker, clock=clock, latest_bar=lambda: max(ingested), calendar=trading_calendar()
    )
    assert monitor.check().breaker is BreakerState.OPEN

    both(paper, clock, NEXT_MORNING)
    reading = monitor.check()
    assert reading.breaker is BreakerState.TRIPPED and reading.latest_bar == date(2024, 3, 4)
    status = redis_breaker.status()
    assert status.kind is TripReason.STALE_DATA
    assert "newest bar is 2024-03-04, 1 session(s) behind the last closed session 2024-03-05" in (
        status.reason or ""
    )
    assert not redis_breaker.allows(risk_reducing=False)

    # Past the quiet period (Thursday 07:00) the feed has caught up with Wednesday: clear, but still
    # tripped until someone approves.
    ingested.extend([date(2024, 3, 5), date(2024, 3, 6)])
    clock.advance(timedelta(hours=21))
    move_broker_clock(paper, clock.now)
    assert monitor.check().breaker is BreakerState.TRIPPED
    redis_breaker.approve("alice")
    assert monitor.check().breaker is BreakerState.OPEN


def test_a_failing_broker_trips_the_error_rate_breaker(
    paper: RunningBroker, broker: AlpacaBroker, redis_breaker: CircuitBreaker, clock: ManualClock
) -> None:
    limits = MonitorLimits(max_error_rate=0.5, min_calls=4, error_window=timedelta(minutes=5))
    monitor = PostTradeMonitor(broker, redis_breaker, limits=limits, clock=clock)
    monitor.check()  # one success
    set_faults(paper, error_rate=1.0)
    readings = []
    for _ in range(3):
        clock.advance(timedelta(seconds=30))
        readings.append(monitor.check())
    # 1 ok + 1 failed: 50% is not above the limit; 1 ok + 2 failed (3 calls) is under min_calls; the
    # fourth call makes 3 of 4 failed.
    assert [r.breaker for r in readings] == [BreakerState.OPEN, BreakerState.OPEN, BreakerState.TRIPPED]
    assert readings[-1].errors and readings[-1].equity is None
    assert redis_breaker.status().kind is TripReason.BROKER_ERRORS
    assert redis_breaker.status().reason == (
        "broker_errors: 3 of the last 4 broker calls failed (limit 50% over 0:05:00)"
    )

    set_faults(paper, error_rate=0.0)
    redis_breaker.approve("alice")
    clock.advance(timedelta(hours=21))  # past the 20-hour quiet period and the error window
    assert monitor.check().breaker is BreakerState.OPEN
