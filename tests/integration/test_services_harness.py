"""The test harness itself: per-test PostgreSQL databases, Redis key spaces, throwaway servers."""

from __future__ import annotations

import psycopg
import pytest
import redis
from sqlalchemy import text

from tests.support.services import (
    RedisKeySpace,
    ThrowawayPostgres,
    ThrowawayRedis,
    postgres_reachable,
    redis_reachable,
    redis_server,
    scratch_database,
)
from trader.store.db import make_engine


@pytest.mark.redis
def test_redis_keyspace_is_isolated_and_cleaned(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = RedisKeySpace(client=client, prefix="test:a:")
    second = RedisKeySpace(client=client, prefix="test:b:")
    try:
        client.set(first.key("cb:state"), "TRIPPED")
        client.set(second.key("cb:state"), "OPEN")
        assert first.keys() == ["test:a:cb:state"]
        assert first.clear() == 1
        assert client.get(first.key("cb:state")) is None
        assert client.get(second.key("cb:state")) == b"OPEN"
    finally:
        second.clear()
        client.close()


@pytest.mark.redis
def test_redis_keyspace_fixture(redis_keyspace: RedisKeySpace) -> None:
    redis_keyspace.client.xadd(redis_keyspace.key("intents"), {"symbol": "AAPL"})
    assert redis_keyspace.client.xlen(redis_keyspace.key("intents")) == 1


@pytest.mark.redis
def test_throwaway_redis_starts_and_stops() -> None:
    server = ThrowawayRedis.start()
    try:
        assert redis_reachable(server.url) is None
    finally:
        server.stop()
    assert redis_reachable(server.url) is not None


@pytest.mark.redis
def test_unreachable_redis_falls_back_to_a_throwaway_server() -> None:
    with redis_server("redis://127.0.0.1:1/15") as url:
        assert url != "redis://127.0.0.1:1/15"
        assert redis_reachable(url) is None


@pytest.mark.postgres
def test_scratch_database_is_created_and_dropped(postgres_admin_url: str) -> None:
    with scratch_database(postgres_admin_url) as url:
        engine = make_engine(url)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
        engine.dispose()
        name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_admin_url.replace("+psycopg", "")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)).fetchone() == (0,)


@pytest.mark.postgres
@pytest.mark.slow
def test_throwaway_postgres_starts_and_stops() -> None:
    server = ThrowawayPostgres.start()
    try:
        assert postgres_reachable(server.url) is None
    finally:
        server.stop()
    assert postgres_reachable(server.url) is not None
