"""Fixtures of the ops tests: the breaker on Redis and on the database (each engine)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.integration.broker.conftest import alpaca_broker
from tests.integration.ops.support import ManualClock, make_breaker, make_store, move_broker_clock
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.broker import RetryPolicy
from trader.broker.alpaca import AlpacaBroker
from trader.ops.breakers import CircuitBreaker
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import FaultSettings
from trader.store import migrate
from trader.store.db import make_engine

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


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[RunningBroker]:
    """The built-in paper broker, clock frozen at :data:`T0` (market open), no faults."""
    settings = PaperBrokerSettings(
        data_dir=tmp_path / "empty-data", start_at=T0, faults=FaultSettings(rate_limit_per_minute=0)
    )
    with running_paper_broker(settings) as running:
        move_broker_clock(running, T0)
        yield running


@pytest.fixture
def broker(paper: RunningBroker) -> AlpacaBroker:
    """An ``AlpacaBroker`` on the paper broker, without retries (a fault is seen at once)."""
    return alpaca_broker(paper, policy=RetryPolicy(max_retries=0))


@pytest.fixture
def cli_engine(paper: RunningBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for name, value in {
        "DATABASE_URL": url,
        "ALPACA_BASE_URL": paper.url,
        "ALPACA_API_KEY_ID": paper.key_id,
        "ALPACA_API_SECRET_KEY": paper.secret_key,
    }.items():
        monkeypatch.setenv(name, value)
    engine = make_engine(url)
    migrate.upgrade(engine)
    return engine
