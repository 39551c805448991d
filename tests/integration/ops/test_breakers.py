"""The circuit breaker on both stores (Redis keys, the circuit_breakers table), each engine."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.integration.ops.support import QUIET, ManualClock, audit_actions
from tests.support.services import RedisKeySpace
from trader.config import Settings
from trader.ops.breakers import (
    BreakerError,
    BreakerState,
    CircuitBreaker,
    DatabaseBreakerStore,
    RedisBreakerStore,
    TripReason,
    breaker_from_settings,
)


def test_a_new_breaker_is_open_and_allows_everything(breaker: CircuitBreaker) -> None:
    assert breaker.state() is BreakerState.OPEN
    assert breaker.allows(risk_reducing=False) and breaker.allows(risk_reducing=True)


def test_tripped_blocks_entries_but_lets_exits_through(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    status = breaker.trip(TripReason.DRAWDOWN, "equity 6% below the peak", "monitor")
    assert status.state is BreakerState.TRIPPED and status.kind is TripReason.DRAWDOWN
    assert status.changed_at == clock.now
    assert not breaker.allows(risk_reducing=False)
    assert breaker.allows(risk_reducing=True)
    assert breaker.status().reason == "drawdown: equity 6% below the peak"
    assert audit_actions(migrated_engine) == [("circuit.trip", "monitor")]


def test_recovery_needs_clear_conditions_approval_and_quiet_period(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    breaker.trip(TripReason.STALE_DATA, "newest bar 3 sessions behind", "monitor")
    refused = breaker.try_recover(conditions_clear=False)
    assert not refused.recovered and len(refused.blockers) == 3

    clock.advance(QUIET + timedelta(seconds=1))
    refused = breaker.try_recover(conditions_clear=True)
    assert refused.blockers == ("no approval since the trip: run 'trader circuit approve'",)
    assert breaker.state() is BreakerState.TRIPPED

    breaker.approve("alice", note="data vendor fixed")
    not_clear = breaker.try_recover(conditions_clear=False)
    assert not_clear.blockers == ("the tripping conditions are not clear yet",)
    assert breaker.state() is BreakerState.TRIPPED

    decision = breaker.try_recover(conditions_clear=True)
    assert decision.recovered and breaker.state() is BreakerState.OPEN
    assert breaker.allows(risk_reducing=False)
    assert audit_actions(migrated_engine) == [
        ("circuit.trip", "monitor"),
        ("circuit.approve", "alice"),
        ("circuit.clear", "monitor"),
    ]


def test_an_approval_does_not_shorten_the_quiet_period(breaker: CircuitBreaker, clock: ManualClock) -> None:
    breaker.trip(TripReason.MANUAL, "checking something", "bob")
    breaker.approve("alice")
    clock.advance(QUIET - timedelta(minutes=5))
    with pytest.raises(BreakerError, match=r"quiet period: 5m00s left of 15m00s"):
        breaker.clear("alice")
    clock.advance(timedelta(minutes=5))
    assert breaker.clear("alice").state is BreakerState.OPEN


def test_an_approval_given_before_a_new_trip_does_not_count(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    breaker.trip(TripReason.DRAWDOWN, "5.5%", "monitor")
    breaker.approve("alice")
    clock.advance(timedelta(minutes=1))
    # Another problem while tripped: a new reason, a new quiet period, the old approval void.
    status = breaker.trip(TripReason.BROKER_ERRORS, "9 of 10 calls failed", "monitor")
    assert status.kind is TripReason.BROKER_ERRORS and not status.approved
    clock.advance(QUIET)
    with pytest.raises(BreakerError, match="no approval since the trip"):
        breaker.clear("alice")


def test_repeating_the_same_trip_keeps_the_first_one(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    first = breaker.trip(TripReason.DRAWDOWN, "5.5%", "monitor")
    clock.advance(timedelta(minutes=10))
    again = breaker.trip(TripReason.DRAWDOWN, "5.9%", "monitor")
    assert again.changed_at == first.changed_at and again.reason == first.reason
    assert audit_actions(migrated_engine) == [("circuit.trip", "monitor")]


def test_approving_an_open_breaker_is_refused(breaker: CircuitBreaker, migrated_engine: Engine) -> None:
    with pytest.raises(BreakerError, match="nothing to approve"):
        breaker.approve("alice")
    assert audit_actions(migrated_engine) == []


def test_the_state_is_shared_by_every_breaker_on_the_same_store(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    other = CircuitBreaker(breaker.store, migrated_engine, clock=clock, quiet_period=QUIET)
    breaker.trip(TripReason.KILL, "operator", "carol")
    assert other.state() is BreakerState.TRIPPED and not other.allows(False)


def test_redis_keys_hold_the_state(
    redis_keyspace: RedisKeySpace, migrated_engine: Engine, clock: ManualClock
) -> None:
    store = RedisBreakerStore(redis_keyspace.client, redis_keyspace.prefix)
    CircuitBreaker(store, migrated_engine, clock=clock).trip(TripReason.MANUAL, "maintenance", "dave")
    get = redis_keyspace.client.get
    assert get(redis_keyspace.key("cb:state")) == b"TRIPPED"
    assert get(redis_keyspace.key("cb:reason")) == b"manual: maintenance"
    assert get(redis_keyspace.key("cb:ts")) == clock.now.isoformat().encode()


def test_deployments_with_their_own_redis_key_prefix_have_their_own_breaker(
    redis_keyspace: RedisKeySpace, redis_url: str, migrated_engine: Engine, clock: ManualClock
) -> None:
    """Paper and live sharing one Redis: a trip (or a clear) in one must not reach the other."""

    def deployment(name: str) -> CircuitBreaker:
        settings = Settings(redis_url=redis_url, redis_key_prefix=redis_keyspace.key(f"{name}:"))
        return breaker_from_settings(settings, migrated_engine, clock=clock)

    paper, live = deployment("paper"), deployment("live")
    paper.trip(TripReason.MANUAL, "testing the kill switch", "alice")
    assert paper.state() is BreakerState.TRIPPED
    assert live.state() is BreakerState.OPEN and live.allows(risk_reducing=False)
    assert redis_keyspace.client.get(redis_keyspace.key("paper:cb:state")) == b"TRIPPED"
    assert redis_keyspace.client.get(redis_keyspace.key("live:cb:state")) is None
    assert deployment("paper").state() is BreakerState.TRIPPED  # the same prefix is the same breaker


def test_an_unreadable_store_blocks_entries(migrated_engine: Engine, clock: ManualClock) -> None:
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    breaker = CircuitBreaker(RedisBreakerStore(dead), migrated_engine, clock=clock)
    assert not breaker.allows(risk_reducing=False)
    assert breaker.allows(risk_reducing=True)


def test_the_database_store_survives_a_new_process(migrated_engine: Engine, clock: ManualClock) -> None:
    CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine, clock=clock).trip(
        TripReason.STALE_DATA, "2 sessions behind", "monitor"
    )
    fresh = CircuitBreaker(DatabaseBreakerStore(migrated_engine), migrated_engine, clock=clock)
    assert fresh.status().kind is TripReason.STALE_DATA and fresh.status().changed_at == clock.now
