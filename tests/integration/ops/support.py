"""Helpers of the ops tests: a hand-moved clock and a breaker on either store."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import admin
from tests.support.paper_broker import RunningBroker
from tests.support.services import RedisKeySpace
from tests.support.waiting import wait_until
from trader.broker.base import Broker, BrokerOrder
from trader.domain.enums import OrderSide, OrderType
from trader.execution.orders import OrderIntent, apply_broker_update, record_intent
from trader.ops.breakers import BreakerStore, CircuitBreaker, DatabaseBreakerStore, RedisBreakerStore
from trader.store.models import AuditLog

#: The tests of this folder call it wait_for.
wait_for = wait_until

QUIET = timedelta(minutes=15)
#: The trading day of the paper-broker tests (Tuesday 2024-03-05).
T0_DAY = date(2024, 3, 5)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, span: timedelta) -> None:
        self.now += span


def make_store(kind: str, engine: Engine, keyspace: RedisKeySpace | None) -> BreakerStore:
    if kind == "redis":
        assert keyspace is not None
        return RedisBreakerStore(keyspace.client, keyspace.prefix)
    return DatabaseBreakerStore(engine)


def make_breaker(store: BreakerStore, engine: Engine, clock: ManualClock) -> CircuitBreaker:
    return CircuitBreaker(store, engine, clock=clock, quiet_period=QUIET)


def audit_actions(engine: Engine) -> list[tuple[str, str]]:
    """``(action, actor)`` of every audit row, oldest first."""
    with Session(engine) as session:
        rows = session.execute(select(AuditLog.action, AuditLog.actor).order_by(AuditLog.id)).all()
    return [(action, actor) for action, actor in rows]


def move_broker_clock(paper: RunningBroker, at: datetime) -> None:
    """Move the paper broker's simulated clock (frozen there); open orders are matched up to ``at``."""
    admin(paper, "POST", "clock", {"at": at.isoformat(), "frozen": True})


def send(engine: Engine, broker: Broker, intent: OrderIntent) -> BrokerOrder:
    """Record the order, send it and record the broker's answer, as the gateway does."""
    with Session(engine) as session, session.begin():
        record_intent(session, intent)
    sent = broker.submit_order(intent.to_request())
    with Session(engine) as session, session.begin():
        apply_broker_update(session, sent)
    return sent


def market(
    symbol: str, side: OrderSide, qty: int, intent: str = "rebalance", day: date = T0_DAY
) -> OrderIntent:
    return OrderIntent("alpha_baseline", day, symbol, side, qty=Decimal(qty), intent=intent)


def limit(symbol: str, side: OrderSide, qty: int, price: str, sequence: int = 0) -> OrderIntent:
    return OrderIntent(
        "alpha_baseline",
        T0_DAY,
        symbol,
        side,
        qty=Decimal(qty),
        order_type=OrderType.LIMIT,
        limit_price=Decimal(price),
        sequence=sequence,
    )
