"""Fixtures shared by every test: databases on both engines and a Redis key space.

PostgreSQL and Redis are real servers (``TEST_DATABASE_URL``, ``TEST_REDIS_URL``), never mocks. Each
test gets its own throwaway PostgreSQL database and Redis key prefix and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text

from tests.support.research import ResearchMarket, build_research_market
from tests.support.services import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    RedisKeySpace,
    ServiceUnavailableError,
    postgres_server,
    redis_server,
    scratch_database,
)
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Base

ENGINES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's .env or trading variables, and never write into the repo."""
    from trader.config import Settings

    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    try:
        with postgres_server(url) as admin_url:
            yield admin_url
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped after the test."""
    with scratch_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'trader.db'}"


@pytest.fixture(params=ENGINES)
def database_url(request: pytest.FixtureRequest) -> str:
    """An empty database on each engine in turn."""
    fixture = "postgres_url" if request.param == "postgresql" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on an empty database (each engine in turn)."""
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def postgres_migrated_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session; tests empty it before use."""
    with scratch_database(postgres_admin_url, prefix="trader_shared") as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, copied by each test."""
    path = tmp_path_factory.mktemp("template") / "trader.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def _empty_all_tables(engine: Engine) -> None:
    # TRUNCATE does not fire the row-level append-only triggers, and resets the id sequences.
    tables = ", ".join(f'"{name}"' for name in Base.metadata.tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=ENGINES)
def migrated_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database already migrated to the newest schema (each engine in turn).

    The schema is migrated once per session (the migration tests cover migrating itself): SQLite
    tests get a copy of a migrated file, PostgreSQL tests a shared migrated database emptied first.
    Tests that change the schema itself use ``engine`` and migrate it themselves.
    """
    if request.param == "postgresql":
        eng = make_engine(request.getfixturevalue("postgres_migrated_url"))
        _empty_all_tables(eng)
    else:
        path = tmp_path / "trader.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        eng = make_engine(f"sqlite:///{path}")
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        with redis_server(url) as reachable:
            yield reachable
    except ServiceUnavailableError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def redis_keyspace(redis_url: str) -> Iterator[RedisKeySpace]:
    """A Redis client and a key prefix of this test's own; its keys are deleted afterwards."""
    client = redis.Redis.from_url(redis_url)
    space = RedisKeySpace(client=client, prefix=f"test:{uuid.uuid4().hex[:12]}:")
    try:
        yield space
    finally:
        space.clear()
        client.close()


@pytest.fixture(scope="session")
def research_market(tmp_path_factory: pytest.TempPathFactory) -> ResearchMarket:
    """The research test market (20 synthetic symbols, 2021-2023) ingested and exported for Qlib.

    Shared by the whole session: a test that writes into it must work on :func:`copy_market` instead.
    """
    return build_research_market(tmp_path_factory.mktemp("research_market"))
