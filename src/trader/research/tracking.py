"""MLflow tracking of research runs through the plain client API (no global MLflow state).

Every ``trader research train`` is one MLflow run in the experiment named after the strategy, in
the tracking store of ``MLFLOW_TRACKING_URI`` (SQLite under ``var/`` by default). The run holds the
flattened strategy configuration as params, the metrics of the training and the model artifact
folder as artifacts. Later steps (backtest, model card, leakage checks) add to the same run with
:func:`log_to_run`, given the ``mlflow_run_id`` recorded in the artifact's ``train.json``.

Where artifacts go: an experiment created here stores its artifacts under
``ARTIFACTS_DIR/mlruns/<experiment name>/<run id>/artifacts/`` (an absolute ``file://`` location set when the
experiment is created). Without it MLflow would write ``./mlruns`` in whatever folder the command
runs from (see pitfall 1 of ``shared/reference/qlib-offline.md``). An experiment that already
exists keeps the location it was created with.

Qlib's own recorder (``qlib.workflow.R``) is not used: ``R.start`` runs ``git diff`` in the working
directory and saves the output (pitfall 2), and it would be a second way to reach the same store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from trader.errors import TraderError

#: Where MLflow stores run artifacts, under ``ARTIFACTS_DIR``.
MLRUNS_FOLDER = "mlruns"
#: MLflow's limits per ``log_batch`` call.
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


class TrackingError(TraderError):
    """The MLflow tracking store cannot be reached or refused a run."""


class RunStatus(StrEnum):
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"


def _client(tracking_uri: str) -> Any:
    # A new tracking database is created with INFO lines from MLflow and alembic: keep commands quiet.
    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def artifact_location(artifacts_dir: Path) -> str:
    """``file://`` URI of ``ARTIFACTS_DIR/mlruns`` (absolute: MLflow would resolve it against the cwd)."""
    return (artifacts_dir / MLRUNS_FOLDER).expanduser().resolve().as_uri()


def ensure_experiment(tracking_uri: str, name: str, artifacts_dir: Path) -> str:
    """The id of experiment ``name``, created with its artifacts under ``ARTIFACTS_DIR/mlruns``."""
    client = _client(tracking_uri)
    try:
        existing = client.get_experiment_by_name(name)
        if existing is not None:
            if existing.lifecycle_stage == "deleted":
                client.restore_experiment(existing.experiment_id)
            return str(existing.experiment_id)
        return str(
            client.create_experiment(name, artifact_location=f"{artifact_location(artifacts_dir)}/{name}")
        )
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {_masked(tracking_uri)} refused experiment {name!r}: {exc}"
        ) from exc


def start_run(
    tracking_uri: str,
    experiment: str,
    artifacts_dir: Path,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a running MLflow run in ``experiment`` (created if needed); returns its run id."""
    experiment_id = ensure_experiment(tracking_uri, experiment, artifacts_dir)
    client = _client(tracking_uri)
    try:
        run = client.create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking store {_masked(tracking_uri)} refused a new run: {exc}"
        ) from exc
    return str(run.info.run_id)


def end_run(tracking_uri: str, run_id: str, status: RunStatus = RunStatus.FINISHED) -> None:
    """Mark the run finished (or failed); its data stays and :func:`log_to_run` can still add to it."""
    _client(tracking_uri).set_terminated(run_id, status=status.value)


def log_to_run(
    run_id: str,
    *,
    tracking_uri: str,
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    artifacts: Sequence[Path] = (),
    artifact_path: str | None = None,
    step: int = 0,
) -> None:
    """Add metrics, params, tags and files or folders (``artifacts``) to an existing run.

    Works on a finished run too (the backtest adds its report to the training's run). A folder in
    ``artifacts`` has its content logged under ``artifact_path`` (default: the folder's name), a
    file is logged under ``artifact_path`` (default: the run's artifact root). A param already
    logged with another value is refused by MLflow.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    metric_rows = [Metric(key, float(value), now, step) for key, value in (metrics or {}).items()]
    param_rows = [Param(key, _param_value(value)) for key, value in (params or {}).items()]
    tag_rows = [RunTag(key, str(value)) for key, value in (tags or {}).items()]
    for chunk in _chunks(metric_rows, _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)
    for chunk in _chunks(param_rows, _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=chunk)
    if tag_rows:
        client.log_batch(run_id, tags=tag_rows)
    for path in artifacts:
        if path.is_dir():
            client.log_artifacts(run_id, str(path), artifact_path or path.name)
        else:
            client.log_artifact(run_id, str(path), artifact_path)


def log_curves(run_id: str, *, tracking_uri: str, curves: Mapping[str, Sequence[float]]) -> None:
    """Log per-iteration values (``name -> values``, the index being the step), e.g. loss curves."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    rows = [
        Metric(name, float(value), now, step)
        for name, values in curves.items()
        for step, value in enumerate(values)
    ]
    client = _client(tracking_uri)
    for chunk in _chunks(rows, _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (a strategy config's ``model_dump(mode="json")`` as params)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _MAX_PARAM_LENGTH else text[: _MAX_PARAM_LENGTH - 3] + "..."


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _masked(uri: str) -> str:
    from trader.config import mask_url_password

    return mask_url_password(uri)
