"""Evaluate a trained model version: the use case behind ``trader research backtest``.

:func:`evaluate_model` takes a :class:`~trader.research.artifacts.ModelArtifact` (what ``trader
research train`` saved) and, in this order:

1. ``backtest``: runs the cost scenarios (:func:`~trader.research.backtest.run_scenarios`) on the
   artifact's **test** predictions into ``ARTIFACTS_DIR/backtests/<name>-<version>-<UTC time>/``;
2. ``checks``: runs the leakage and validity checks (:func:`~trader.research.leakage.run_checks`) on
   the artifact's segments, the strategy's feature and label expressions, its predictions and the
   point-in-time universe, and saves ``checks.json`` in the backtest folder;
3. ``card``: renders ``MODEL_CARD.md`` (and ``model_card.json``) into the artifact folder, where
   ``trader model promote`` / ``rollback`` later record their decision, and a snapshot into the
   backtest folder. The decision is ``pending``, with a preview of the release gate under the
   strategy's own promotion thresholds ("would pass" or the reasons it would be refused);
4. ``log``: adds the backtest metrics (``backtest.*``), the check verdict, the backtest folder and
   the model card to the model's MLflow run (the training run of ``train.json``);
5. ``register``: registers the version in ``model_registry`` as ``staging`` (or updates its row)
   with the backtest's ``summary`` metrics and the check report.

The registry is tried first (one cheap query), so a database without the schema fails before the
slow steps with "run 'trader db upgrade'".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine

from trader.data.paths import DataPaths
from trader.research.artifacts import ModelArtifact, export_fingerprint, free_folder, version_at
from trader.research.backtest import BacktestResult, run_scenarios
from trader.research.leakage import CheckReport, run_checks
from trader.research.model_card import (
    MODEL_CARD_FILE,
    DecisionStatus,
    DriftNotes,
    ModelCardData,
    ModelCardError,
    PromotionDecision,
    Scenario,
    ScoreStats,
    read_model_card_data,
    write_model_card,
)
from trader.research.registry import GateDecision, ModelRegistry, RegistryEntry, release_gate
from trader.research.tracking import TrackingError, log_to_run
from trader.strategies.config import LABEL_EXPRESSION, PromotionThresholds, StrategyConfig, StrategyKind

#: Where evaluations write, under ``ARTIFACTS_DIR``.
BACKTESTS_FOLDER = "backtests"
#: The check report, saved in the backtest folder.
CHECKS_FILE = "checks.json"
#: Stages reported to ``on_progress``, in order.
STAGES = ("backtest", "checks", "card", "log", "register")
#: Scenario metrics shown on the model card and stored in the registry row.
SCENARIO_METRICS = (
    "annualized_return",
    "total_return",
    "sharpe",
    "information_ratio",
    "max_drawdown",
    "mean_daily_turnover",
)


class Progress(Protocol):
    """Called with a stage name when it starts (``detail`` empty), then with details of its progress."""

    def __call__(self, stage: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class StrategyExpressions:
    """The feature and label expressions a strategy computes through Qlib (what the checks inspect)."""

    feature_exprs: list[str]
    feature_names: list[str]
    label_exprs: list[str]
    label_names: list[str]


def strategy_expressions(config: StrategyConfig) -> StrategyExpressions:
    """Alpha158's 158 expressions and ``LABEL0`` for ``alpha158_lgb``; the momentum expression for
    ``momentum`` (imported on demand: the Alpha158 list imports Qlib on first use)."""
    if config.kind is StrategyKind.ALPHA158_LGB:
        from trader.strategies.alpha_baseline.features import LABEL, alpha158_feature_config

        exprs, names = alpha158_feature_config()
        return StrategyExpressions(list(exprs), list(names), list(LABEL[0]), list(LABEL[1]))
    from trader.strategies.momentum.strategy import FEATURE_NAME, momentum_expression

    return StrategyExpressions(
        [momentum_expression(config.momentum)], [FEATURE_NAME], [LABEL_EXPRESSION], ["LABEL0"]
    )


@dataclass(frozen=True)
class EvaluationResult:
    """A finished evaluation: what was written, logged and registered."""

    artifact: ModelArtifact
    backtest: BacktestResult
    checks: CheckReport
    #: The release gate's verdict under ``thresholds`` (a preview: nothing was promoted).
    gate: GateDecision
    thresholds: PromotionThresholds
    #: The registry row after registering (stage ``staging`` for a new version).
    entry: RegistryEntry
    #: ``ARTIFACTS_DIR/backtests/<name>-<version>-<UTC time>/``.
    out_dir: Path
    #: The model card in the artifact folder (updated by promotions) and its snapshot in ``out_dir``.
    model_card: Path
    model_card_snapshot: Path
    #: The MLflow run the results were added to (``None`` when the artifact has no run).
    mlflow_run_id: str | None
    #: Remarks about the inputs (an export that changed since training, a run that was not logged).
    notes: tuple[str, ...]
    timings: dict[str, float]
    seconds: float

    @property
    def checks_path(self) -> Path:
        return self.out_dir / CHECKS_FILE


def evaluate_model(
    artifact: ModelArtifact,
    *,
    provider_uri: Path,
    data_paths: DataPaths,
    artifacts_dir: Path,
    mlflow_uri: str,
    engine: Engine,
    on_progress: Progress | None = None,
    clock: Callable[[], datetime] | None = None,
) -> EvaluationResult:
    """Backtest, check, document, track and register ``artifact`` (see the module docstring).

    ``provider_uri`` is the Qlib export, ``data_paths`` the data store (its universe is the
    point-in-time reference of the checks), ``engine`` the database of ``model_registry``.
    Raises :class:`~trader.errors.DatabaseError` when the registry's schema is missing,
    :class:`~trader.research.backtest.BacktestInputError` when the predictions cannot be backtested
    on this export, :class:`~trader.research.tracking.TrackingError` when MLflow refuses the results.
    Checks that fail do not raise: they are recorded, and block promotion.
    """
    began = time.perf_counter()
    say: Progress = on_progress or _silent
    now = (clock or _utc_now)()
    registry = ModelRegistry(engine)
    registry.list(artifact.name)  # fail fast on a database without the schema
    config = artifact.config()
    notes = _input_notes(artifact, provider_uri)
    out_dir = new_backtest_dir(artifacts_dir, artifact, now)
    timings: dict[str, float] = {}

    def stage(name: str) -> float:
        say(name)
        return time.perf_counter()

    started = stage("backtest")
    backtest = run_scenarios(
        artifact.predictions("test"),
        config,
        provider_uri=provider_uri,
        out_dir=out_dir,
        on_progress=lambda message: say("backtest", message),
        mlflow_uri=mlflow_uri,
    )
    timings["backtest"] = time.perf_counter() - started

    started = stage("checks")
    expressions = strategy_expressions(config)
    from trader.data.store import UniverseStore

    report = run_checks(
        segments=config.segments,
        feature_exprs=expressions.feature_exprs,
        feature_names=expressions.feature_names,
        label_exprs=expressions.label_exprs,
        label_names=expressions.label_names,
        provider_uri=provider_uri,
        predictions=artifact.predictions(),
        universe=UniverseStore(data_paths).read(),
    )
    report.save(out_dir / CHECKS_FILE)
    timings["checks"] = time.perf_counter() - started

    started = stage("card")
    thresholds = config.promotion
    gate = release_gate(backtest.summary, report.to_dict(), thresholds)
    card = build_model_card(artifact, config, backtest, report, gate, created_at=now, notes=notes)
    model_card, snapshot = artifact.path / MODEL_CARD_FILE, out_dir / MODEL_CARD_FILE
    write_model_card(model_card, card)
    write_model_card(snapshot, card)
    timings["card"] = time.perf_counter() - started

    started = stage("log")
    run_id = artifact.mlflow_run_id
    if run_id is None:
        notes = (*notes, "the artifact has no MLflow run id: nothing was logged to MLflow")
    else:
        _log_evaluation(run_id, mlflow_uri, backtest, report, gate, out_dir, model_card)
    timings["log"] = time.perf_counter() - started

    started = stage("register")
    entry = registry.register(
        artifact.name,
        artifact.version,
        str(artifact.path.resolve()),
        run_id,
        registry_metrics(backtest),
        report,
    )
    timings["register"] = time.perf_counter() - started

    return EvaluationResult(
        artifact=artifact,
        backtest=backtest,
        checks=report,
        gate=gate,
        thresholds=thresholds,
        entry=entry,
        out_dir=out_dir,
        model_card=model_card,
        model_card_snapshot=snapshot,
        mlflow_run_id=run_id,
        notes=notes,
        timings=timings,
        seconds=time.perf_counter() - began,
    )


def _silent(stage: str, detail: str = "") -> None:
    return None


def _utc_now() -> datetime:
    return datetime.now(UTC)


def new_backtest_dir(artifacts_dir: Path, artifact: ModelArtifact, now: datetime) -> Path:
    """``ARTIFACTS_DIR/backtests/<name>-<version>-<UTC time>``, not yet existing (``-2``, ``-3``, ...
    when that second is taken)."""
    return free_folder(
        artifacts_dir / BACKTESTS_FOLDER, f"{artifact.name}-{artifact.version}-{version_at(now)}"
    )


def _input_notes(artifact: ModelArtifact, provider_uri: Path) -> tuple[str, ...]:
    trained_on = str(artifact.info.get("data", {}).get("fingerprint") or "")
    current = export_fingerprint(provider_uri).fingerprint
    if trained_on and trained_on != current:
        return (
            f"the export changed since training (trained on data {trained_on[:12]}, evaluated on "
            f"{current[:12]}): the test segment's prices may differ from what the model was scored on",
        )
    return ()


# --------------------------------------------------------------------------------------------------
# Model card, gate preview, registry metrics
# --------------------------------------------------------------------------------------------------


def gate_preview(gate: GateDecision) -> str:
    """``would pass (...)`` or ``would be refused: reason; reason``."""
    if gate.passed:
        return f"would pass ({gate.summary})"
    return "would be refused: " + "; ".join(gate.reasons)


def pending_decision(artifact: ModelArtifact, gate: GateDecision) -> PromotionDecision:
    """The ``pending`` decision with the gate's verdict preview and the command that decides."""
    return PromotionDecision(
        status=DecisionStatus.PENDING,
        reason=(
            f"not yet reviewed. Release gate preview under the strategy's thresholds: "
            f"{gate_preview(gate)}. Decide with 'trader model promote {artifact.name} "
            f"{artifact.version} --to production'"
        ),
    )


def _numbers(values: Mapping[str, Any]) -> dict[str, float | None]:
    """Numeric entries of ``values`` (NaN and missing as ``None``), for the card."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if value is None:
            out[key] = None
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value) if math.isfinite(float(value)) else None
    return out


def scenario_metrics(backtest: BacktestResult) -> dict[str, dict[str, float | None]]:
    """Per scenario (in report order): the after-cost return metrics and the mean daily turnover."""
    table: dict[str, dict[str, float | None]] = {}
    for label, section in backtest.metrics["scenarios"].items():
        merged = {**section["after_costs"], **section["trading"]}
        table[label] = {key: _numbers(merged).get(key) for key in SCENARIO_METRICS}
    return table


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def build_model_card(
    artifact: ModelArtifact,
    config: StrategyConfig,
    backtest: BacktestResult,
    checks: CheckReport,
    gate: GateDecision,
    *,
    created_at: datetime,
    notes: tuple[str, ...] = (),
) -> ModelCardData:
    """The card of ``artifact`` after this evaluation. A decision already taken on the artifact's
    card (approved, refused, rolled back) is kept; otherwise the decision is pending with the gate
    preview."""
    decision = pending_decision(artifact, gate)
    extra_notes = list(notes)
    existing = _existing_decision(artifact.path / MODEL_CARD_FILE)
    if existing is not None and existing.status is not DecisionStatus.PENDING:
        decision = existing
        extra_notes.append(
            f"re-evaluated at {created_at.isoformat(timespec='seconds')}: {gate_preview(gate)}"
        )
    scores = artifact.predictions("test").get_column("score").to_numpy()
    info = artifact.info
    return ModelCardData(
        model_name=artifact.name,
        version=artifact.version,
        mlflow_run_id=artifact.mlflow_run_id,
        artifact_uri=str(artifact.path.resolve()),
        created_at=created_at,
        description=config.description,
        segments=config.segments,
        metrics=_numbers(backtest.summary),
        benchmark=config.backtest.benchmark,
        scenarios=[
            Scenario(name=label, metrics=values) for label, values in scenario_metrics(backtest).items()
        ],
        features=[str(name) for name in info.get("feature_names", [])],
        importance={str(k): float(v) for k, v in (info.get("feature_importance") or {}).items()},
        costs=config.costs,
        drift=DriftNotes(
            valid_ic=_finite_or_none(artifact.ic("valid").ic),
            test_ic=_finite_or_none(artifact.ic("test").ic),
            scores=ScoreStats.of(scores),
            data_fingerprint=str(info.get("data", {}).get("fingerprint") or "") or None,
            notes=extra_notes,
        ),
        checks=checks,
        decision=decision,
    )


def _existing_decision(path: Path) -> PromotionDecision | None:
    if not path.is_file():
        return None
    try:
        return read_model_card_data(path).decision
    except ModelCardError:
        return None  # an unreadable card is replaced


def registry_metrics(backtest: BacktestResult) -> dict[str, Any]:
    """What the registry row stores: the backtest ``summary`` (the keys the gate reads) and, per
    scenario, ``<scenario>.<metric>`` after costs."""
    metrics: dict[str, Any] = dict(backtest.summary)
    for label, values in scenario_metrics(backtest).items():
        metrics.update({f"{label}.{key}": value for key, value in values.items()})
    return metrics


# --------------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------------


def _log_evaluation(
    run_id: str,
    mlflow_uri: str,
    backtest: BacktestResult,
    report: CheckReport,
    gate: GateDecision,
    out_dir: Path,
    model_card: Path,
) -> None:
    metrics = {f"backtest.{key}": value for key, value in backtest.flat_metrics().items()}
    metrics["checks.passed"] = 1.0 if report.passed else 0.0
    metrics["gate.would_pass"] = 1.0 if gate.passed else 0.0
    try:
        log_to_run(
            run_id,
            tracking_uri=mlflow_uri,
            metrics=metrics,
            tags={
                "trader.backtest": str(out_dir.resolve()),
                "trader.checks": "passed" if report.passed else "failed",
                "trader.gate_preview": "pass" if gate.passed else "refuse",
            },
            artifacts=[out_dir],
            artifact_path=f"{BACKTESTS_FOLDER}/{out_dir.name}",
        )
        log_to_run(run_id, tracking_uri=mlflow_uri, artifacts=[model_card])
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises its own exception types for a missing run or store
        raise TrackingError(f"MLflow refused the evaluation results for run {run_id}: {exc}") from exc
