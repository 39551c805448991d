"""Train a strategy: the use case behind ``trader research train``, the same for every strategy kind.

:func:`train_strategy` checks the export and the date segments, opens an MLflow run, lets the
strategy's own code train (:data:`TRAINERS`: Alpha158 + LightGBM, or momentum), saves the
:class:`~trader.research.artifacts.ModelArtifact` and logs params, metrics, loss curves and the
artifact folder to the run. A failure marks the run ``FAILED`` and leaves no artifact.

Stages reported to ``on_progress`` as they start: ``features``, ``fit`` (LightGBM only),
``predict``, ``save``, ``log``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from trader.research.artifacts import DataInfo, ModelArtifact, export_fingerprint
from trader.research.qlib_export import FREQ, MANIFEST, require_market
from trader.research.qlib_runtime import QlibNotReadyError
from trader.research.scores import TrainError, TrainOutput
from trader.research.tracking import RunStatus, end_run, flatten, log_curves, log_to_run, start_run
from trader.strategies.config import DateRange, StrategyConfig, StrategyConfigError, StrategyKind

Progress = Callable[[str], None]
Trainer = Callable[..., TrainOutput]

#: Artifact folder name inside the MLflow run.
RUN_ARTIFACT_PATH = "model"


class SegmentError(TrainError):
    """A date segment lies (partly) outside the export's calendar or holds no session."""


@dataclass(frozen=True)
class TrainResult:
    """A finished training: the saved artifact, its MLflow run, the metrics logged, the wall time."""

    artifact: ModelArtifact
    run_id: str
    metrics: dict[str, float]
    seconds: float


def trainer_for(kind: StrategyKind) -> Trainer:
    """The training function of a strategy kind (imported on demand: Qlib and LightGBM are heavy)."""
    if kind is StrategyKind.ALPHA158_LGB:
        from trader.strategies.alpha_baseline.pipeline import train

        return train
    if kind is StrategyKind.MOMENTUM:
        from trader.strategies.momentum.strategy import train as train_momentum

        return train_momentum
    raise TrainError(f"no trainer for strategy kind {kind.value!r}")  # pragma: no cover - enum is closed


def export_sessions(provider_uri: Path) -> list[date]:
    """The sessions of the export's calendar; :class:`QlibNotReadyError` when there is no export."""
    calendar = provider_uri / "calendars" / f"{FREQ}.txt"
    if not calendar.is_file() or not (provider_uri / MANIFEST).is_file():
        raise QlibNotReadyError(
            f"no Qlib export at {provider_uri} ({calendar.name if not calendar.is_file() else MANIFEST} "
            "is missing); run 'trader research export' first"
        )
    return [date.fromisoformat(line) for line in calendar.read_text(encoding="utf-8").split()]


def check_segments(config: StrategyConfig, sessions: list[date]) -> None:
    """Refuse segments outside ``sessions`` (the export's calendar) or without a session; the
    message lists every problem with the option that fixes it."""
    if not sessions:
        raise SegmentError("the export's calendar is empty; run 'trader research export' on ingested data")
    first, last = sessions[0], sessions[-1]
    ranges: dict[str, DateRange] = {
        "train": config.segments.train,
        "valid": config.segments.valid,
        "test": config.segments.test,
    }
    problems: list[str] = []
    for name, span in ranges.items():
        if span.start < first:
            problems.append(
                f"segments.{name}.start ({span.start}) is before the export's first session {first} "
                f"(use --{name}-start {first} or later)"
            )
        if span.end > last:
            problems.append(
                f"segments.{name}.end ({span.end}) is after the export's last session {last} "
                f"(use --{name}-end {last} or earlier)"
            )
        if (
            span.start <= last
            and span.end >= first
            and not any(span.start <= d <= span.end for d in sessions)
        ):
            problems.append(
                f"segments.{name} ({span.start} .. {span.end}) holds no trading session "
                f"(widen it with --{name}-start/--{name}-end)"
            )
    if problems:
        raise SegmentError(f"the export holds {first} .. {last}: " + "; ".join(problems))


def train_strategy(
    config: StrategyConfig,
    *,
    provider_uri: Path,
    mlflow_uri: str,
    artifacts_dir: Path,
    on_progress: Progress | None = None,
) -> TrainResult:
    """Train ``config`` on the export in ``provider_uri``, save the artifact, track the run in MLflow.

    Raises :class:`QlibNotReadyError` without an export, :class:`SegmentError` for segments outside
    its calendar, :class:`~trader.research.scores.EmptySegmentError` for a segment without rows,
    :class:`~trader.research.tracking.TrackingError` when MLflow refuses the run.
    """
    began = time.perf_counter()
    say = on_progress or (lambda _stage: None)
    try:
        config.check_trainable()
    except StrategyConfigError as exc:
        raise TrainError(str(exc)) from None
    check_segments(config, export_sessions(provider_uri))
    require_market(provider_uri, config.market)
    data = export_fingerprint(provider_uri)
    trainer = trainer_for(config.kind)
    run_id = start_run(
        mlflow_uri,
        config.name,
        artifacts_dir,
        run_name=f"train-{config.name}",
        tags={"trader.stage": "train", "trader.strategy": config.name, "trader.kind": config.kind.value},
    )
    try:
        output = trainer(config, provider_uri, mlflow_uri=mlflow_uri, on_stage=say)
        say("save")
        saved = time.perf_counter()
        artifact = ModelArtifact.save(artifacts_dir, config, output, data=data, mlflow_run_id=run_id)
        output.timings["save"] = time.perf_counter() - saved
        say("log")
        metrics = run_metrics(output, seconds=time.perf_counter() - began)
        _log_training(run_id, mlflow_uri, config, output, artifact, data, metrics)
    except BaseException:
        end_run(mlflow_uri, run_id, RunStatus.FAILED)
        raise
    end_run(mlflow_uri, run_id, RunStatus.FINISHED)
    return TrainResult(artifact=artifact, run_id=run_id, metrics=metrics, seconds=time.perf_counter() - began)


def run_metrics(output: TrainOutput, *, seconds: float) -> dict[str, float]:
    """The metrics of a training as logged to MLflow: IC per segment, rows, strategy extras, timings."""
    metrics: dict[str, float] = {}
    for segment, stats in output.ic.items():
        for name, value in stats.as_dict().items():
            metrics[f"{name}.{segment}"] = value
    metrics.update({f"rows.{segment}": float(rows) for segment, rows in output.rows.items()})
    metrics.update(output.extra_metrics)
    metrics.update({f"seconds.{stage}": value for stage, value in output.timings.items()})
    metrics["seconds.total"] = seconds
    return metrics


def _log_training(
    run_id: str,
    mlflow_uri: str,
    config: StrategyConfig,
    output: TrainOutput,
    artifact: ModelArtifact,
    data: DataInfo,
    metrics: dict[str, float],
) -> None:
    log_to_run(
        run_id,
        tracking_uri=mlflow_uri,
        # MLflow stores NaN, but a missing metric reads better than NaN for "no IC could be measured".
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        params=flatten(config.model_dump(mode="json")),
        tags={
            "trader.version": artifact.version,
            "trader.artifact": str(artifact.path.resolve()),
            "trader.data_fingerprint": data.fingerprint,
        },
        artifacts=[artifact.path],
        artifact_path=RUN_ARTIFACT_PATH,
    )
    if output.curves:
        log_curves(run_id, tracking_uri=mlflow_uri, curves=output.curves)
