"""Helpers of the ops tests: a hand-moved clock and a breaker on either store."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.support.services import RedisKeySpace
from trader.ops.breakers import BreakerStore, CircuitBreaker, DatabaseBreakerStore, RedisBreakerStore
from trader.store.models import AuditLog

QUIET = timedelta(minutes=15)


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
