"""Recording and publishing a signal run: the ``signal_runs`` row and the intent for the allocator.

Each run of the signal service is recorded once per (strategy, trading date): model version, a hash
of its inputs, every score and every target weight, so that a replay can prove it computes the same
thing. The run is then published as an *intent* — to the Redis stream ``<prefix>signals:intents``
when ``REDIS_URL`` is set, else to the ``events`` table (kind ``signal.intent``) — for whoever
allocates and executes it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from trader.store.models import Event, SignalRun

#: The Redis stream intents go to (after the key prefix).
INTENT_STREAM = "signals:intents"
#: ``events.kind`` of a published intent when there is no Redis.
INTENT_EVENT = "signal.intent"


@dataclass(frozen=True)
class SignalResult:
    """What one signal run computed for one strategy and trading date."""

    strategy_id: str
    trading_date: date
    model_name: str
    model_version: str
    inputs_hash: str
    scores: Mapping[str, float]
    weights: Mapping[str, Decimal]

    def intent(self) -> dict[str, Any]:
        """The published message: JSON-safe, weights as exact decimal strings."""
        return {
            "strategy_id": self.strategy_id,
            "trading_date": self.trading_date.isoformat(),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "inputs_hash": self.inputs_hash,
            "weights": {symbol: str(weight) for symbol, weight in sorted(self.weights.items())},
        }


def hash_inputs(*parts: Any) -> str:
    """SHA-256 of a canonical JSON form of ``parts`` (the same inputs give the same hash anywhere)."""
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_signal_run(session: Session, strategy_id: str, trading_date: date) -> SignalRun | None:
    """The recorded run of ``strategy_id`` for ``trading_date`` (the latest if several)."""
    return session.scalars(
        select(SignalRun)
        .where(SignalRun.strategy_id == strategy_id, SignalRun.trading_date == trading_date)
        .order_by(SignalRun.id.desc())
        .limit(1)
    ).first()


def record_signal_run(session: Session, result: SignalResult) -> tuple[SignalRun, bool]:
    """Store ``result`` unless the same run (model version and inputs hash) is stored already.

    Returns the row and whether it was new. Scores are stored as floats' ``repr`` (exact), weights
    as decimal strings.
    """
    existing = find_signal_run(session, result.strategy_id, result.trading_date)
    if (
        existing is not None
        and existing.model_version == result.model_version
        and existing.inputs_hash == result.inputs_hash
    ):
        return existing, False
    row = SignalRun(
        strategy_id=result.strategy_id,
        trading_date=result.trading_date,
        model_name=result.model_name,
        model_version=result.model_version,
        inputs_hash=result.inputs_hash,
        scores={symbol: repr(score) for symbol, score in sorted(result.scores.items())},
        weights={symbol: str(weight) for symbol, weight in sorted(result.weights.items())},
    )
    session.add(row)
    session.flush()
    return row, True


def stored_weights(run: SignalRun) -> dict[str, Decimal]:
    return {symbol: Decimal(value) for symbol, value in run.weights.items()}


def stored_scores(run: SignalRun) -> dict[str, float]:
    return {symbol: float(value) for symbol, value in run.scores.items()}


class IntentPublisher(Protocol):
    """Where intents go: a Redis stream or the events table."""

    def publish(self, result: SignalResult, run_id: int) -> str:
        """Publish and return an identifier of the message (stream entry id or event id)."""
        ...


class RedisIntentPublisher:
    """``XADD <prefix>signals:intents`` with the intent as one JSON field."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self._client = client
        self.stream = f"{prefix}{INTENT_STREAM}"

    def publish(self, result: SignalResult, run_id: int) -> str:
        payload = json.dumps(result.intent() | {"signal_run_id": run_id}, sort_keys=True)
        entry = self._client.xadd(self.stream, {"intent": payload}, maxlen=10_000, approximate=True)
        return entry.decode() if isinstance(entry, bytes) else str(entry)


class EventIntentPublisher:
    """An ``events`` row of kind ``signal.intent`` in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def publish(self, result: SignalResult, run_id: int) -> str:
        event = Event(
            kind=INTENT_EVENT,
            source="signal",
            strategy_id=result.strategy_id,
            correlation_id=f"signal-run-{run_id}",
            payload=result.intent() | {"signal_run_id": run_id},
        )
        self._session.add(event)
        self._session.flush()
        return str(event.id)
