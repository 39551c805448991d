"""Recording a signal run once, and publishing its intent to Redis or to the events table."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.support.services import RedisKeySpace
from trader.signal.publish import (
    INTENT_EVENT,
    EventIntentPublisher,
    RedisIntentPublisher,
    SignalResult,
    find_signal_run,
    hash_inputs,
    record_signal_run,
    stored_scores,
    stored_weights,
)
from trader.store.models import Event, SignalRun

RESULT = SignalResult(
    strategy_id="alpha_baseline",
    trading_date=date(2024, 3, 5),
    model_name="alpha_baseline",
    model_version="20240301T000000Z",
    inputs_hash=hash_inputs({"AAA": [1.0, 2.0]}, "v1"),
    scores={"AAA": 0.1 + 0.2, "BBB": -1e-17},
    weights={"AAA": Decimal("0.1"), "BBB": Decimal("0.1")},
)


def test_hash_is_canonical() -> None:
    assert hash_inputs({"b": 1, "a": 2}) == hash_inputs({"a": 2, "b": 1})
    assert hash_inputs({"a": 1}) != hash_inputs({"a": 2})


def test_run_is_recorded_once_and_round_trips_exactly(migrated_engine: Engine) -> None:
    with Session(migrated_engine, expire_on_commit=False) as session, session.begin():
        first, new = record_signal_run(session, RESULT)
        again, new_again = record_signal_run(session, RESULT)
    assert (new, new_again) == (True, False)
    assert again.id == first.id
    with Session(migrated_engine) as session:
        assert session.scalar(select(func.count()).select_from(SignalRun)) == 1
        run = find_signal_run(session, "alpha_baseline", date(2024, 3, 5))
        assert run is not None
        assert stored_scores(run) == dict(RESULT.scores)  # floats survive exactly
        assert stored_weights(run) == dict(RESULT.weights)


def test_a_new_model_version_is_a_new_run(migrated_engine: Engine) -> None:
    other = SignalResult(**{**RESULT.__dict__, "model_version": "20240302T000000Z"})
    with Session(migrated_engine, expire_on_commit=False) as session, session.begin():
        record_signal_run(session, RESULT)
        _, new = record_signal_run(session, other)
        assert new
        latest = find_signal_run(session, "alpha_baseline", date(2024, 3, 5))
        assert latest is not None and latest.model_version == "20240302T000000Z"


def test_intent_goes_to_the_events_table_without_redis(migrated_engine: Engine) -> None:
    with Session(migrated_engine, expire_on_commit=False) as session, session.begin():
        run, _ = record_signal_run(session, RESULT)
        EventIntentPublisher(session).publish(RESULT, run.id)
    with Session(migrated_engine) as session:
        event = session.scalars(select(Event).where(Event.kind == INTENT_EVENT)).one()
    assert event.payload["weights"] == {"AAA": "0.1", "BBB": "0.1"}
    assert event.payload["signal_run_id"] == run.id
    assert event.strategy_id == "alpha_baseline"


@pytest.mark.redis
def test_intent_goes_to_the_redis_stream(redis_keyspace: RedisKeySpace) -> None:
    publisher = RedisIntentPublisher(redis_keyspace.client, prefix=redis_keyspace.prefix)
    entry = publisher.publish(RESULT, 7)
    ((entry_id, fields),) = redis_keyspace.client.xrange(publisher.stream)
    assert entry_id.decode() == entry
    intent = json.loads(fields[b"intent"])
    assert intent["model_version"] == "20240301T000000Z"
    assert intent["weights"]["AAA"] == "0.1"
    assert intent["signal_run_id"] == 7
