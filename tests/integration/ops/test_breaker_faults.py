"""The breaker when its state is corrupt or partial (real Redis keys, the real table) and when the audit
log cannot be written: entries stay blocked, a trip (and so the kill switch) still works, and nothing
reopens the breaker without its audit row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from tests.integration.ops.support import QUIET, ManualClock, audit_actions
from tests.support.services import RedisKeySpace
from trader.broker.base import Account, Broker, Clock
from trader.cli.main import run
from trader.ops.breakers import (
    BreakerAuditError,
    BreakerState,
    BreakerStateUnreadableError,
    BreakerStoreError,
    CircuitBreaker,
    DatabaseBreakerStore,
    RedisBreakerStore,
    TripReason,
)
from trader.ops.kill import kill_switch
from trader.ops.monitor import PostTradeMonitor
from trader.store.db import make_engine
from trader.store.models import AuditLog

K = TripReason
Corruption = Callable[[RedisKeySpace], object]

CORRUPTIONS: dict[str, Corruption] = {
    # cb:state alone gone (eviction, a partial delete): must not read as "never tripped".
    "state deleted": lambda space: space.client.delete(space.key("cb:state")),
    "state lower case": lambda space: space.client.set(space.key("cb:state"), "tripped"),
    "state not utf-8": lambda space: space.client.set(space.key("cb:state"), b"\xff\xfe"),
    "ts garbage": lambda space: space.client.set(space.key("cb:ts"), "not-a-time"),
    "approved_at garbage": lambda space: space.client.set(space.key("cb:approved_at"), "yesterday"),
    "reason deleted": lambda space: space.client.delete(space.key("cb:reason")),
}


class EmptyBroker:
    """A broker with nothing open and nothing held, equity steady; records the calls made to it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_account(self) -> Account:
        self.calls.append("get_account")
        equity = Decimal(100_000)
        return Account("a", "1", "ACTIVE", "USD", equity, equity, equity, last_equity=equity)

    def cancel_all_orders(self) -> list[Any]:
        self.calls.append("cancel_all_orders")
        return []

    def get_positions(self) -> list[Any]:
        self.calls.append("get_positions")
        return []

    def list_open_orders(self) -> list[Any]:
        self.calls.append("list_open_orders")
        return []

    def get_clock(self) -> Clock:
        self.calls.append("get_clock")
        now = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
        return Clock(now, True, now + timedelta(days=1), now + timedelta(hours=6))


@pytest.fixture
def redis_breaker(
    redis_keyspace: RedisKeySpace, migrated_engine: Engine, clock: ManualClock
) -> CircuitBreaker:
    store = RedisBreakerStore(redis_keyspace.client, redis_keyspace.prefix)
    return CircuitBreaker(store, migrated_engine, clock=clock, quiet_period=QUIET)


@pytest.fixture
def no_audit_engine(tmp_path: Path) -> Engine:
    """The database as the breaker sees it when the audit log cannot be written: no audit_log table."""
    return make_engine(f"sqlite:///{tmp_path / 'empty.db'}")


def _corrupted(breaker: CircuitBreaker, space: RedisKeySpace, corruption: str) -> None:
    breaker.trip(K.KILL, "runaway strategy", "alice")
    breaker.approve("bob")
    CORRUPTIONS[corruption](space)


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_unreadable_redis_state_fails_closed_with_a_clear_error(
    redis_breaker: CircuitBreaker, redis_keyspace: RedisKeySpace, clock: ManualClock, corruption: str
) -> None:
    _corrupted(redis_breaker, redis_keyspace, corruption)
    with pytest.raises(BreakerStateUnreadableError, match=r"unreadable .*'trader circuit trip --reason"):
        redis_breaker.status()
    assert not redis_breaker.allows(risk_reducing=False)
    assert redis_breaker.allows(risk_reducing=True)
    with pytest.raises(BreakerStoreError):
        redis_breaker.approve("bob")
    with pytest.raises(BreakerStoreError):
        redis_breaker.clear("bob")
    # The monitor neither reopens nor repairs it, and its tick still completes.
    clock.advance(QUIET + timedelta(seconds=1))
    monitor = PostTradeMonitor(cast(Broker, EmptyBroker()), redis_breaker, clock=clock)
    assert monitor.check().breaker is None
    assert not redis_breaker.allows(risk_reducing=False)


@pytest.mark.parametrize(
    ("kind", "reason", "stored_kind"),
    [
        (K.KILL, "kill: runaway", K.KILL),
        (K.MANUAL, "manual: runaway", K.MANUAL),
        # The unreadable state may have been a kill: the monitor must not be able to lift the trip.
        (K.DRAWDOWN, "manual: drawdown over an unreadable breaker state: runaway", K.MANUAL),
    ],
)
def test_a_trip_overwrites_an_unreadable_redis_state(
    redis_breaker: CircuitBreaker,
    redis_keyspace: RedisKeySpace,
    migrated_engine: Engine,
    clock: ManualClock,
    kind: K,
    reason: str,
    stored_kind: K,
) -> None:
    _corrupted(redis_breaker, redis_keyspace, "state lower case")
    clock.advance(timedelta(minutes=1))
    status = redis_breaker.trip(kind, "runaway", "carol")
    assert status.reason == reason and status.kind is stored_kind and status.changed_at == clock.now
    assert redis_breaker.status() == status and not status.approved
    with Session(migrated_engine) as session:
        row = session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
    assert row is not None and (row.action, row.actor, row.reason) == ("circuit.trip", "carol", reason)
    assert row.details["requested_kind"] == kind.value
    assert "not a valid BreakerState" in row.details["previous"]["unreadable"]


def test_the_kill_switch_trips_over_an_unreadable_state_and_goes_on(
    redis_breaker: CircuitBreaker, redis_keyspace: RedisKeySpace, migrated_engine: Engine
) -> None:
    _corrupted(redis_breaker, redis_keyspace, "state deleted")
    broker = EmptyBroker()
    report = kill_switch(
        cast(Broker, broker), redis_breaker, migrated_engine, reason="runaway", actor="carol"
    )
    assert report.breaker.kind is K.KILL and redis_breaker.status().kind is K.KILL
    assert "cancel_all_orders" in broker.calls and "list_open_orders" in broker.calls
    assert report.failures == ()


# SQLite only: PostgreSQL's column types and constraints refuse the garbage in the first place.
@pytest.mark.parametrize("migrated_engine", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("column", "value"), [("state", "tripped"), ("changed_at", "not-a-time")])
def test_an_unreadable_database_row_fails_closed_and_a_trip_overwrites_it(
    migrated_engine: Engine, clock: ManualClock, column: str, value: str
) -> None:
    breaker = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine, clock=clock)
    breaker.trip(K.KILL, "runaway strategy", "alice")
    with migrated_engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        connection.execute(text(f"UPDATE circuit_breakers SET {column} = :value"), {"value": value})
    with pytest.raises(BreakerStateUnreadableError, match=r"database circuit_breakers.* is unreadable"):
        breaker.status()
    assert not breaker.allows(risk_reducing=False)
    assert breaker.trip(K.KILL, "again", "carol").reason == "kill: again"
    assert breaker.status().kind is K.KILL


def test_circuit_commands_report_an_unreadable_state_and_trip_still_works(
    redis_breaker: CircuitBreaker,
    redis_keyspace: RedisKeySpace,
    redis_url: str,
    migrated_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the working tree
    monkeypatch.setenv("DATABASE_URL", migrated_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("REDIS_KEY_PREFIX", redis_keyspace.prefix)
    _corrupted(redis_breaker, redis_keyspace, "ts garbage")
    capsys.readouterr()
    assert run(["circuit", "status"]) == 1
    assert "circuit breaker state in redis" in capsys.readouterr().err
    # trader status says so and still shows the rest (here: the broker, unreachable on port 1).
    monkeypatch.setenv("ALPACA_BASE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("BROKER_MAX_RETRIES", "0")
    assert run(["status"]) == 1
    out = capsys.readouterr().out
    assert "circuit breaker UNREADABLE (new entries blocked)" in out and "last reconcile" in out
    assert "broker unreachable" in out
    assert run(["circuit", "trip", "--reason", "repair", "--actor", "carol"]) == 0
    assert run(["circuit", "status"]) == 0
    assert "manual: repair" in capsys.readouterr().out


# ---------------------------------------------------------------------------- audit first


def test_a_trip_is_stored_and_logged_when_the_audit_log_cannot_be_written(
    redis_breaker: CircuitBreaker,
    no_audit_engine: Engine,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker(redis_breaker.store, no_audit_engine, clock=clock)
    with caplog.at_level(logging.ERROR, logger="trader.ops.breakers"):
        status = breaker.trip(K.MANUAL, "halt", "alice")
    assert status.kind is K.MANUAL and redis_breaker.status() == status
    assert any(
        "circuit.trip by alice" in r.message and "NOT in the audit log" in r.message for r in caplog.records
    )


def test_the_kill_switch_goes_on_when_the_audit_log_cannot_be_written(
    redis_breaker: CircuitBreaker, no_audit_engine: Engine, clock: ManualClock
) -> None:
    breaker = CircuitBreaker(redis_breaker.store, no_audit_engine, clock=clock)
    broker = EmptyBroker()
    report = kill_switch(cast(Broker, broker), breaker, no_audit_engine, reason="runaway", actor="carol")
    assert report.breaker.kind is K.KILL and redis_breaker.status().kind is K.KILL
    assert "cancel_all_orders" in broker.calls and "list_open_orders" in broker.calls
    assert any("audit log" in failure for failure in report.failures)  # kill.executed could not be written


def test_no_recovery_without_its_audit_row(
    redis_breaker: CircuitBreaker, no_audit_engine: Engine, migrated_engine: Engine, clock: ManualClock
) -> None:
    redis_breaker.trip(K.STALE_DATA, "feed stopped", "monitor")
    redis_breaker.approve("bob", "feed fixed")
    clock.advance(QUIET + timedelta(seconds=1))
    cut_off = CircuitBreaker(redis_breaker.store, no_audit_engine, clock=clock, quiet_period=QUIET)
    with pytest.raises(BreakerAuditError, match=r"cannot write circuit\.clear to the audit log"):
        cut_off.clear("bob")
    with pytest.raises(BreakerAuditError):
        cut_off.try_recover(conditions_clear=True, automatic_only=True)
    # The monitor's tick logs it and goes on; the breaker stays TRIPPED.
    monitor = PostTradeMonitor(cast(Broker, EmptyBroker()), cut_off, clock=clock)
    assert monitor.check().breaker is BreakerState.TRIPPED
    assert redis_breaker.state() is BreakerState.TRIPPED
    assert audit_actions(migrated_engine) == [("circuit.trip", "monitor"), ("circuit.approve", "bob")]
    assert redis_breaker.try_recover(conditions_clear=True).recovered  # once the audit log is back


def test_no_approval_without_its_audit_row(
    redis_breaker: CircuitBreaker, no_audit_engine: Engine, clock: ManualClock
) -> None:
    redis_breaker.trip(K.DRAWDOWN, "6% below the peak", "monitor")
    cut_off = CircuitBreaker(redis_breaker.store, no_audit_engine, clock=clock)
    with pytest.raises(BreakerAuditError, match=r"circuit\.approve"):
        cut_off.approve("bob")
    assert redis_breaker.status().approved_by is None
