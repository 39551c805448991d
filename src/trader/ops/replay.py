"""``trader replay``: a recorded paper day through the same code, in dry-run, with a parity report.

What a paper day recorded — its signal run (model version, scores, weights), its allocation inputs
(the ``paper.plan`` event: account snapshot, prices, options) and its orders with their risk
decisions — is compared with what the same code computes again from the *raw recorded bars*:

1. the raw bars up to the previous session are run through the data pipeline again, point in time
   (into a scratch folder: corporate actions after that session are not known yet);
2. the recorded model version scores them and the TopkDropout rule makes weights;
3. the allocator turns them into orders with the recorded snapshot and prices;
4. the pre-trade risk check and the execution service decide on them in ``DRY_RUN`` on a scratch
   database (with the live database's risk limits).

Weights, orders and risk verdicts must be identical; scores equal within ``SCORE_TOLERANCE``
(relative): a point-in-time replay may adjust prices with fewer corporate actions than the store
had on the day, which changes their last bits but not their ratios. Timestamps are not compared.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.config import Settings
from trader.data.bars import BarBatch
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.quality import GateConfig
from trader.data.raw import RawRecorder
from trader.data.sources import SourceHealth
from trader.data.store import AcceptedMoveStore, ActionStore, UniverseStore, write_atomic
from trader.domain.enums import OrderStatus
from trader.errors import TraderError
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.ops.breakers import (
    BreakerState,
    BreakerStatus,
    CircuitBreaker,
    DatabaseBreakerStore,
    TripReason,
)
from trader.ops.paper_day import PLAN_EVENT, REBALANCE, Plan, rebalance_intents
from trader.portfolio.allocator import allocate
from trader.research.artifacts import ModelArtifact
from trader.research.registry import ModelRegistry, artifact_path
from trader.signal.publish import find_signal_run, stored_scores, stored_weights
from trader.signal.scoring import scorer_for
from trader.signal.service import LoadedModel, SignalService
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Event, Order, RiskDecision, RiskLimit

#: Largest relative difference allowed between a recorded and a replayed score.
SCORE_TOLERANCE = 1e-9


class ReplayError(TraderError):
    """The day cannot be replayed (nothing recorded, model missing...)."""


@dataclass(frozen=True)
class Difference:
    what: str
    recorded: Any
    replayed: Any


@dataclass
class ReplayReport:
    """The parity of one replayed day; ``passed`` when nothing differs."""

    trading_date: date
    strategy: str
    model_version: str
    compared: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    inputs_hash_equal: bool = False
    max_score_rel_diff: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return {
            "trading_date": self.trading_date.isoformat(),
            "strategy": self.strategy,
            "model_version": self.model_version,
            "passed": self.passed,
            "compared": self.compared,
            "inputs_hash_equal": self.inputs_hash_equal,
            "max_score_rel_diff": self.max_score_rel_diff,
            "differences": [
                {"what": d.what, "recorded": str(d.recorded), "replayed": str(d.replayed)}
                for d in self.differences
            ],
        }

    def _hash_note(self) -> str:
        return "equal" if self.inputs_hash_equal else "differs (point-in-time adjustment)"

    def to_markdown(self) -> str:
        verdict = "PASSED: same signals, same orders" if self.passed else "FAILED: the replay differs"
        lines = [
            f"# Replay {self.trading_date} ({self.strategy}, model {self.model_version})",
            "",
            f"**{verdict}**",
            "",
            "| compared | count |",
            "|---|---:|",
            *(f"| {name} | {count} |" for name, count in self.compared.items()),
            "",
            f"Largest relative score difference: {self.max_score_rel_diff:.3g} "
            f"(allowed {SCORE_TOLERANCE:g}); inputs hash {self._hash_note()}.",
            "",
        ]
        if self.differences:
            lines += ["| what | recorded | replayed |", "|---|---|---|"]
            lines += [f"| {d.what} | {d.recorded} | {d.replayed} |" for d in self.differences]
        return "\n".join(lines) + "\n"


class _RecordedBars:
    """A bar source over what the raw recorder holds, up to ``as_of`` (point in time)."""

    name = "recorded"

    def __init__(self, paths: DataPaths, as_of: date) -> None:
        # The newest arrival of each (symbol, date), whichever source sent it, as the live ingest
        # uses: a bar two sources delivered is not a conflict here when it was none there.
        raw = RawRecorder(paths).read_newest(end=as_of)
        self.bars = raw.select("symbol", "date", "open", "high", "low", "close", "volume", "source")
        self.actions = ActionStore(paths).read().filter(pl.col("ex_date") <= as_of)
        self.listings = UniverseStore(paths).read().filter(pl.col("start_date") <= as_of)

    def health(self) -> SourceHealth:
        return SourceHealth(source=self.name, ok=True)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        return BarBatch(bars=self.bars, actions=self.actions, listings=self.listings)


def rebuild_point_in_time(
    paths: DataPaths, as_of: date, target: DataPaths, gate: GateConfig | None = None
) -> None:
    """Run the raw recorded bars up to ``as_of`` through the pipeline into ``target``, with the
    quality gate ``gate`` (the day's journaled threshold) and the moves accepted in ``paths`` now:
    like a bar a vendor corrected later, a move accepted after the day ran shows in its replay."""
    source = _RecordedBars(paths, as_of)
    if source.bars.is_empty():
        raise ReplayError(f"no raw recorded bars up to {as_of} in {paths.raw_bars}")
    first = source.bars.get_column("date").min()
    assert isinstance(first, date)
    AcceptedMoveStore(target).replace(AcceptedMoveStore(paths).read())
    DataPipeline(target, gate=gate).ingest(source, None, first, as_of)


class Replayer:
    """Replays recorded paper days of one strategy (see the module docstring)."""

    def __init__(
        self, settings: Settings, engine: Engine, *, strategy: str, calendar: TradingCalendar | None = None
    ) -> None:
        self._settings = settings
        self._engine = engine
        self.strategy = strategy
        self._calendar = calendar or trading_calendar()
        self._paths = DataPaths(settings.data_dir)

    def replay(self, day: date, workdir: Path | None = None) -> ReplayReport:
        scratch = Path(tempfile.mkdtemp(prefix="trader-replay-", dir=workdir))
        try:
            return self._replay(day, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _recorded(self, day: date) -> tuple[Any, Plan, list[Order], dict[str, bool]]:
        with Session(self._engine) as session:
            run = find_signal_run(session, self.strategy, day)
            if run is None:
                raise ReplayError(
                    f"no recorded signal for {self.strategy} on {day}: "
                    f"run 'trader paper-run --date {day}' first"
                )
            event = session.scalars(
                select(Event)
                .where(Event.kind == PLAN_EVENT, Event.correlation_id == f"{self.strategy}:{day}")
                .order_by(Event.id.desc())
            ).first()
            if event is None:
                raise ReplayError(f"no recorded allocation (event {PLAN_EVENT}) for {self.strategy} on {day}")
            orders = list(
                session.scalars(
                    select(Order).where(
                        Order.strategy_id == self.strategy,
                        Order.trading_date == day,
                        Order.intent == REBALANCE,
                    )
                )
            )
            verdicts: dict[str, bool] = {}
            for decision in session.scalars(
                select(RiskDecision)
                .where(RiskDecision.client_order_id.in_([o.client_order_id for o in orders]))
                .order_by(RiskDecision.id)
            ):
                verdicts.setdefault(decision.client_order_id, decision.approved)  # the first decision
            for order in orders:
                # Refused before the risk check (the circuit breaker, no usable price): no decision row.
                verdicts.setdefault(order.client_order_id, order.status != OrderStatus.RISK_REJECTED.value)
            session.expunge_all()
        return run, Plan.from_json(event.payload), orders, verdicts

    def _gate(self, plan: Plan) -> GateConfig:
        """The quality gate the day's data was checked with (today's for a plan that did not say)."""
        if plan.outlier_threshold is None:
            return GateConfig.from_settings(self._settings)
        return GateConfig(outlier_threshold=plan.outlier_threshold)

    def _model(self, version: str) -> LoadedModel:
        entry = ModelRegistry(self._engine).get(self.strategy, version)
        folder = artifact_path(entry.artifact_uri)
        if folder is None:
            raise ReplayError(f"model {version}: artifact {entry.artifact_uri} is not local")
        artifact = ModelArtifact.load(folder)
        return LoadedModel(entry, artifact, artifact.config(), scorer_for(artifact, self._calendar))

    def _replay(self, day: date, scratch: Path) -> ReplayReport:
        run, plan, orders, verdicts = self._recorded(day)
        report = ReplayReport(day, self.strategy, run.model_version)
        target = DataPaths(scratch / "data")
        rebuild_point_in_time(self._paths, plan.as_of, target, self._gate(plan))
        loaded = self._model(run.model_version)
        held = [s for s, holding in plan.snapshot.positions.items() if holding.qty > 0]
        signals = SignalService(self._engine, target, strategy=self.strategy, calendar=self._calendar)
        replayed, _ = signals.compute(loaded, day, held)
        report.inputs_hash_equal = replayed.inputs_hash == run.inputs_hash
        self._compare_scores(report, stored_scores(run), dict(replayed.scores))
        self._compare(report, "weight", stored_weights(run), dict(replayed.weights))

        positions = {s: h.qty for s, h in plan.snapshot.positions.items()}
        allocation = allocate(
            dict(replayed.weights), plan.snapshot.equity, positions, plan.prices, plan.options
        )
        intents = rebalance_intents(
            self._engine, self._settings, self.strategy, day, allocation.orders, plan.limits
        )
        replayed_orders = {i.client_order_id: (i.symbol, i.side.value, i.qty) for i in intents}
        recorded_orders = {o.client_order_id: (o.symbol, o.side, o.qty) for o in orders}
        self._compare(report, "order", recorded_orders, replayed_orders)

        replayed_verdicts = self._dry_run(intents, plan, scratch)
        self._compare(report, "risk verdict", verdicts, replayed_verdicts)
        return report

    def _dry_run(self, intents: list[OrderIntent], plan: Plan, scratch: Path) -> dict[str, bool]:
        """The execution service's decisions in DRY_RUN on a scratch database, with the risk limits
        and the circuit breaker of the recorded day (today's limits for a plan that did not record
        them)."""
        url = f"sqlite:///{scratch / 'replay.db'}"
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            if plan.limits is None:
                self._copy_risk_limits(engine)
            settings = self._settings.model_copy(
                update={"dry_run": True, "database_url": url, "redis_url": ""}
            )
            breaker = _breaker_as(plan, engine)
            service = ExecutionService(engine, None, settings, source="replay", breaker=breaker)
            outcomes = service.submit_batch(intents, plan.snapshot, plan.prices.get, plan.limits)
        finally:
            engine.dispose()
        return {o.client_order_id: o.status is OrderStatus.DRY_RUN for o in outcomes}

    def _copy_risk_limits(self, engine: Engine) -> None:
        with Session(self._engine) as source:
            rows = list(source.scalars(select(RiskLimit)))
            source.expunge_all()
        with Session(engine) as target, target.begin():
            for row in rows:
                target.merge(row)

    @staticmethod
    def _compare(report: ReplayReport, what: str, recorded: dict[Any, Any], replayed: dict[Any, Any]) -> None:
        report.compared[f"{what}s"] = len(set(recorded) | set(replayed))
        for key in sorted(set(recorded) | set(replayed), key=str):
            if recorded.get(key) != replayed.get(key):
                report.differences.append(Difference(f"{what} {key}", recorded.get(key), replayed.get(key)))

    @staticmethod
    def _compare_scores(report: ReplayReport, recorded: dict[str, float], replayed: dict[str, float]) -> None:
        report.compared["scores"] = len(set(recorded) | set(replayed))
        for symbol in sorted(set(recorded) | set(replayed)):
            a, b = recorded.get(symbol), replayed.get(symbol)
            if a is None or b is None:
                report.differences.append(Difference(f"score {symbol}", a, b))
                continue
            rel = abs(a - b) / max(abs(a), abs(b), 1e-300)
            report.max_score_rel_diff = max(report.max_score_rel_diff, rel)
            if rel > SCORE_TOLERANCE:
                report.differences.append(Difference(f"score {symbol}", a, b))


def write_replay_report(report: ReplayReport, reports_dir: Path) -> Path:
    """``replay.json`` and ``replay.md`` in ``reports_dir/<date>/``; returns the folder."""
    folder = reports_dir / report.trading_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "replay.json", json.dumps(report.to_json(), indent=2).encode())
    write_atomic(folder / "replay.md", report.to_markdown().encode())
    return folder


def _breaker_as(plan: Plan, engine: Engine) -> CircuitBreaker | None:
    """A breaker on the scratch database in the state the recorded day's orders met: tripped with
    the journaled reason, or ``None`` (no breaker) when it was open."""
    if plan.breaker is None:
        return None
    # The journaled reason is "<kind>: <detail>", as the breaker stores it; a kind this version
    # cannot name trips as manual with the whole reason.
    kind = BreakerStatus(BreakerState.TRIPPED, reason=plan.breaker).kind
    detail = plan.breaker.partition(":")[2].strip() if kind is not None else plan.breaker
    breaker = CircuitBreaker(DatabaseBreakerStore(engine), engine)
    breaker.trip(kind or TripReason.MANUAL, detail or plan.breaker, actor="replay")
    return breaker
