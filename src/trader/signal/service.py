"""The signal service: the production model's scores for a trading date, as target weights.

:class:`SignalService` is used in-process by ``trader paper-run`` and ``trader signal``, and in a
loop by ``trader serve signal``. For a trading date ``D`` it:

1. takes the registry's current production model of the strategy (reloading it when a promotion or
   rollback changed it — :meth:`SignalService.model` polls the registry's revision, one cheap query);
2. scores every symbol with bars on the session before ``D`` (:mod:`trader.signal.scoring`);
3. keeps the symbols listed and tradable on ``D`` (the point-in-time universe);
4. turns the scores into target weights with the strategy's TopkDropout rule, given what is held;
5. records the run (``signal_runs``) and publishes the intent (Redis stream or ``events``).

A second run for the same strategy, date and model returns the recorded run instead of computing
again: the weights of a day must not change because that day's fills changed the holdings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.paths import DataPaths
from trader.data.store import UniverseStore
from trader.errors import TraderError
from trader.ops.breakers import CircuitBreaker, TripReason
from trader.research.artifacts import ModelArtifact
from trader.research.registry import ModelRegistry, RegistryEntry, artifact_path
from trader.signal.publish import (
    EventIntentPublisher,
    IntentPublisher,
    RedisIntentPublisher,
    SignalResult,
    find_signal_run,
    record_signal_run,
    stored_scores,
    stored_weights,
)
from trader.signal.scoring import Scorer, scorer_for
from trader.signal.weights import target_weights
from trader.store.models import Position
from trader.store.types import as_number
from trader.strategies.config import StrategyConfig


class SignalBlockedError(TraderError):
    """The kill switch is engaged: no new signal until the circuit breaker is cleared."""


class NoProductionModelError(TraderError):
    """The strategy has no model in production."""


@dataclass(frozen=True)
class LoadedModel:
    """The production model in use: its registry row, artifact, configuration and scorer."""

    entry: RegistryEntry
    artifact: ModelArtifact
    config: StrategyConfig
    scorer: Scorer

    @property
    def version(self) -> str:
        return self.entry.version


@dataclass(frozen=True)
class SignalOutcome:
    """A signal run: what it computed, its ``signal_runs`` id, and whether it was computed now."""

    result: SignalResult
    run_id: int
    computed: bool
    as_of: date
    dropped: tuple[str, ...] = ()


def held_symbols(session: Session, strategy_id: str) -> list[str]:
    """Symbols the strategy holds long, from the ``positions`` table."""
    rows = session.scalars(
        select(Position.symbol).where(Position.strategy_id == strategy_id, as_number(Position.qty) > 0)
    ).all()
    return sorted(rows)


def tradable_on(paths: DataPaths, day: date) -> set[str]:
    """Symbols listed and tradable on ``day`` (:meth:`UniverseStore.listed_on`), as a set."""
    return set(UniverseStore(paths).listed_on(day))


class SignalService:
    """Scores → target weights for one strategy, with the production model of the registry."""

    def __init__(
        self,
        engine: Engine,
        paths: DataPaths,
        *,
        strategy: str,
        redis: Any | None = None,
        redis_prefix: str = "",
        calendar: TradingCalendar | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._breaker = breaker
        self._engine = engine
        self._paths = paths
        self.strategy = strategy
        self._registry = ModelRegistry(engine)
        self._redis, self._redis_prefix = redis, redis_prefix
        self._calendar = calendar or trading_calendar()
        self._loaded: LoadedModel | None = None
        self._seen_changes: int | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the model

    def model(self) -> LoadedModel:
        """The production model, reloaded when the registry's production changed since last asked."""
        with self._lock:
            revision = self._registry.revision(self.strategy)
            loaded = self._loaded
            if (
                loaded is not None
                and revision.changes == self._seen_changes
                and loaded.version == revision.production_version
            ):
                return loaded
            self._loaded = self._load()
            self._seen_changes = revision.changes
            return self._loaded

    def _load(self) -> LoadedModel:
        entry = self._registry.production(self.strategy)
        if entry is None:
            raise NoProductionModelError(
                f"strategy {self.strategy!r} has no production model; train, backtest and promote one "
                f"('trader research train', 'trader research backtest', 'trader model promote')"
            )
        folder = artifact_path(entry.artifact_uri)
        if folder is None:
            raise NoProductionModelError(f"model {entry.version}: artifact {entry.artifact_uri} is not local")
        artifact = ModelArtifact.load(folder)
        return LoadedModel(entry, artifact, artifact.config(), scorer_for(artifact, self._calendar))

    # ------------------------------------------------------------------ a run

    def as_of(self, trading_date: date) -> date:
        """The session whose close the signal for ``trading_date`` is computed from."""
        return self._calendar.previous_session(trading_date)

    def run(
        self, trading_date: date, held: Iterable[str] | None = None, *, publish: bool = True
    ) -> SignalOutcome:
        """The signal of ``trading_date``: recorded if this model already computed it, else computed,
        recorded and published. ``held`` defaults to the strategy's long positions in the database."""
        if not self._calendar.is_session(trading_date):
            raise TraderError(f"{trading_date} is not a trading session; pass a trading day")
        self._check_not_killed()
        loaded = self.model()
        as_of = self.as_of(trading_date)
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            existing = find_signal_run(session, self.strategy, trading_date)
            if existing is not None and existing.model_version == loaded.version:
                result = SignalResult(
                    self.strategy, trading_date, existing.model_name, existing.model_version,
                    existing.inputs_hash, stored_scores(existing), stored_weights(existing),
                )  # fmt: skip
                return SignalOutcome(result, existing.id, computed=False, as_of=as_of)
            holdings = list(held) if held is not None else held_symbols(session, self.strategy)
        result, dropped = self.compute(loaded, trading_date, holdings)
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            row, _ = record_signal_run(session, result)
            if publish and self._redis is None:
                EventIntentPublisher(session).publish(result, row.id)
        if publish and self._redis is not None:
            self._publisher().publish(result, row.id)
        return SignalOutcome(result, row.id, computed=True, as_of=as_of, dropped=dropped)

    def _check_not_killed(self) -> None:
        # Other trips still allow signals: the execution service lets only their exits through.
        if self._breaker is None:
            return
        status = self._breaker.status()
        if status.kind is TripReason.KILL:
            raise SignalBlockedError(
                f"new signals are blocked by the kill switch ({status.reason}); "
                "see 'trader circuit status' to approve and clear it"
            )

    def compute(
        self, loaded: LoadedModel, trading_date: date, held: Iterable[str]
    ) -> tuple[SignalResult, tuple[str, ...]]:
        """Scores and weights for ``trading_date`` without recording anything (``replay`` uses this)."""
        as_of = self.as_of(trading_date)
        scores = loaded.scorer.score(self._paths, as_of)
        universe = tradable_on(self._paths, trading_date)
        kept = {s: v for s, v in scores.values.items() if s in universe}
        dropped = tuple(sorted(set(scores.values) - set(kept)))
        rule = loaded.config.portfolio
        weights: dict[str, Decimal] = target_weights(
            kept, held, topk=rule.topk, n_drop=rule.n_drop, long_short=rule.long_short
        )
        result = SignalResult(
            strategy_id=self.strategy,
            trading_date=trading_date,
            model_name=loaded.entry.model_name,
            model_version=loaded.version,
            inputs_hash=scores.inputs_hash,
            scores=kept,
            weights=weights,
        )
        return result, dropped

    def _publisher(self) -> IntentPublisher:
        return RedisIntentPublisher(self._redis, prefix=self._redis_prefix)
