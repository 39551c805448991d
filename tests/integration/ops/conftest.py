"""Fixtures of the ops tests: the breaker on Redis and on the database (each engine)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine

from tests.integration.ops.support import ManualClock, make_breaker, make_store
from trader.ops.breakers import CircuitBreaker

#: Tuesday 2024-03-05, 10:00 New York (the paper broker's open in these tests).
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture(params=["redis", "database"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def breaker(
    store_kind: str, migrated_engine: Engine, clock: ManualClock, request: pytest.FixtureRequest
) -> CircuitBreaker:
    """A breaker on Redis or the database (audit log always in ``migrated_engine``)."""
    keyspace = request.getfixturevalue("redis_keyspace") if store_kind == "redis" else None
    return make_breaker(make_store(store_kind, migrated_engine, keyspace), migrated_engine, clock)
