"""Model artifacts: one folder per trained model version, written atomically, read by everything after.

Layout (``ARTIFACTS_DIR/models/<name>/<version>/``)::

    model.pkl             the fitted model (pickle; absent for a model-free strategy such as momentum)
    predictions.parquet   date (Date), symbol (Utf8), score (Float64), segment ('valid' | 'test')
    strategy.yaml         the exact strategy configuration used (loads with load_strategy_config)
    train.json            version, strategy, MLflow run id, segments, features and importance, IC,
                          rows per segment, timings, data fingerprint, library versions

The version is the UTC time of saving, ``YYYYMMDDTHHMMSSZ``, with ``-2``, ``-3``... appended when
that second is taken, so versions sort in time order as text. The folder is written under a
temporary name in the same parent (each file fsynced) and renamed into place, so a crash leaves no
half artifact, only a ``.tmp-*`` folder that readers ignore.
"""

from __future__ import annotations

import hashlib
import json
import math
import pickle
import platform
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import polars as pl

from trader.data.store import fsync_dir, fsync_file, write_synced
from trader.errors import TraderError
from trader.research.qlib_export import MANIFEST
from trader.research.scores import PREDICTION_SCHEMA, ICStats, TrainOutput
from trader.strategies.config import StrategyConfig, load_strategy_config

MODELS_FOLDER = "models"
MODEL_FILE = "model.pkl"
PREDICTIONS_FILE = "predictions.parquet"
STRATEGY_FILE = "strategy.yaml"
TRAIN_FILE = "train.json"
TRAIN_FORMAT = 1
VERSION_FORMAT = "%Y%m%dT%H%M%SZ"
#: Distributions whose versions are recorded with each model (what produced it).
LIBRARIES = ("qlib-alpaca-trader", "pyqlib", "lightgbm", "mlflow", "pandas", "numpy", "polars", "pyarrow")


class ArtifactError(TraderError):
    """A model artifact is missing, incomplete or has no model to load."""


@dataclass(frozen=True)
class DataInfo:
    """Which data a model was trained on: the Qlib export and the digest of its manifest."""

    provider_uri: str
    fingerprint: str
    first_day: str | None
    last_day: str | None


def export_fingerprint(provider_uri: Path) -> DataInfo:
    """Fingerprint of the export in ``provider_uri``: SHA-256 of its manifest (``.trader-export.json``),
    which holds a digest of every file, so any change to the data changes it."""
    path = provider_uri / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} is missing: {provider_uri} is not an export made by 'trader research export'"
        ) from None
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = {}
    return DataInfo(
        provider_uri=str(provider_uri.resolve()),
        fingerprint=hashlib.sha256(raw).hexdigest(),
        first_day=manifest.get("first_day") if isinstance(manifest, dict) else None,
        last_day=manifest.get("last_day") if isinstance(manifest, dict) else None,
    )


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def version_at(moment: datetime) -> str:
    """The version string of a model saved at ``moment`` (UTC): ``YYYYMMDDTHHMMSSZ``."""
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(UTC).strftime(VERSION_FORMAT)


def free_folder(root: Path, base: str) -> Path:
    """``root/base``, or ``root/base-2``, ``-3``... when taken (not created: the caller writes it)."""
    candidate, number = root / base, 1
    while candidate.exists():
        number += 1
        candidate = root / f"{base}-{number}"
    return candidate


def models_root(artifacts_dir: Path, name: str) -> Path:
    """``ARTIFACTS_DIR/models/<name>``: where the versions of strategy ``name`` live."""
    return artifacts_dir / MODELS_FOLDER / name


def list_versions(artifacts_dir: Path, name: str) -> list[str]:
    """The complete versions of ``name``, oldest first (temporary folders of unfinished saves skipped)."""
    root = models_root(artifacts_dir, name)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / TRAIN_FILE).is_file()
    )


@dataclass(frozen=True)
class ModelArtifact:
    """One saved model version (see the module docstring); ``info`` is the content of ``train.json``."""

    path: Path
    info: dict[str, Any]

    # ---------------------------------------------------------------- reading

    @classmethod
    def load(cls, path: Path) -> ModelArtifact:
        """Open the artifact folder ``path``; :class:`ArtifactError` when it is not a complete artifact."""
        for needed in (TRAIN_FILE, PREDICTIONS_FILE, STRATEGY_FILE):
            if not (path / needed).is_file():
                raise ArtifactError(f"{path} is not a model artifact ({needed} is missing)")
        try:
            info = json.loads((path / TRAIN_FILE).read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ArtifactError(f"{path / TRAIN_FILE} is not valid JSON: {exc}") from None
        if not isinstance(info, dict) or info.get("format") != TRAIN_FORMAT:
            raise ArtifactError(f"{path / TRAIN_FILE} is not a train.json of format {TRAIN_FORMAT}")
        return cls(path, info)

    @classmethod
    def find(cls, artifacts_dir: Path, name: str, version: str | None = None) -> ModelArtifact:
        """Version ``version`` of strategy ``name`` (the latest when ``None``)."""
        versions = list_versions(artifacts_dir, name)
        if not versions:
            raise ArtifactError(
                f"no trained model {name!r} under {models_root(artifacts_dir, name)}; "
                "run 'trader research train' first"
            )
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise ArtifactError(
                f"model {name!r} has no version {chosen!r}; versions: {', '.join(versions[-5:])}"
            )
        return cls.load(models_root(artifacts_dir, name) / chosen)

    @property
    def name(self) -> str:
        return str(self.info["strategy"]["name"])

    @property
    def version(self) -> str:
        return str(self.info["version"])

    @property
    def kind(self) -> str:
        return str(self.info["strategy"]["kind"])

    @property
    def mlflow_run_id(self) -> str | None:
        run_id = self.info.get("mlflow_run_id")
        return str(run_id) if run_id else None

    @property
    def has_model(self) -> bool:
        return (self.path / MODEL_FILE).is_file()

    def ic(self, segment: str) -> ICStats:
        """The IC of ``segment`` (``valid`` or ``test``) measured at training time."""
        raw = self.info["ic"][segment]
        return ICStats(
            ic=_float(raw["ic"]),
            rank_ic=_float(raw["rank_ic"]),
            icir=_float(raw["icir"]),
            rank_icir=_float(raw["rank_icir"]),
            days=int(raw["days"]),
        )

    def config(self) -> StrategyConfig:
        """The strategy configuration the model was trained with."""
        return load_strategy_config(self.path / STRATEGY_FILE)

    def predictions(self, segment: str | None = None) -> pl.DataFrame:
        """The saved scores (all, or one segment's)."""
        frame = pl.read_parquet(self.path / PREDICTIONS_FILE)
        return frame if segment is None else frame.filter(pl.col("segment") == segment)

    def load_model(self) -> Any:
        """Unpickle the fitted model (Qlib's ``LGBModel``: ``.predict(dataset, segment)``).

        Only load artifacts you trust: a pickle runs code. Raises :class:`ArtifactError` for a
        model-free strategy, which has no model file.
        """
        path = self.path / MODEL_FILE
        if not path.is_file():
            raise ArtifactError(
                f"{self.name} {self.version} ({self.kind}) has no model: its scores are model-free"
            )
        with path.open("rb") as handle:
            return pickle.load(handle)  # noqa: S301 - our own artifact, written by save()

    # ---------------------------------------------------------------- writing

    @classmethod
    def save(
        cls,
        artifacts_dir: Path,
        config: StrategyConfig,
        output: TrainOutput,
        *,
        data: DataInfo,
        mlflow_run_id: str | None,
        now: datetime | None = None,
    ) -> ModelArtifact:
        """Write ``output`` as a new version of ``config.name`` and return it (see the module docstring)."""
        root = models_root(artifacts_dir, config.name)
        root.mkdir(parents=True, exist_ok=True)
        base = version_at(now or datetime.now(UTC))
        tmp = root / f".tmp-{base}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            for attempt in range(1, 1000):
                version = base if attempt == 1 else f"{base}-{attempt}"
                target = root / version
                if target.exists():
                    continue
                info = _train_info(version, config, output, data, mlflow_run_id)
                _write_files(tmp, config, output, info)
                try:
                    # A folder's rename fails when the target is a non-empty folder: a racing save
                    # that took this version first makes us try the next suffix.
                    tmp.rename(target)
                except OSError:
                    if target.exists():
                        continue
                    raise
                fsync_dir(root)
                return cls(target, info)
            raise ArtifactError(f"no free version for {base} under {root}")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _train_info(
    version: str, config: StrategyConfig, output: TrainOutput, data: DataInfo, run_id: str | None
) -> dict[str, Any]:
    segments = config.segments
    return {
        "format": TRAIN_FORMAT,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "strategy": {"name": config.name, "kind": config.kind.value, "market": config.market},
        "mlflow_run_id": run_id,
        "segments": {
            "train": list(segments.train.as_tuple()),
            "valid": list(segments.valid.as_tuple()),
            "test": list(segments.test.as_tuple()),
            "label_horizon": segments.label_horizon,
        },
        "has_model": output.model is not None,
        "feature_names": list(output.feature_names),
        "feature_importance": {k: _json_float(v) for k, v in output.feature_importance.items()},
        "ic": {
            segment: {**{k: _json_float(v) for k, v in stats.as_dict().items()}, "days": stats.days}
            for segment, stats in output.ic.items()
        },
        "metrics": {k: _json_float(v) for k, v in output.extra_metrics.items()},
        "rows": dict(output.rows),
        "timings": {k: round(v, 3) for k, v in output.timings.items()},
        "data": {
            "provider_uri": data.provider_uri,
            "fingerprint": data.fingerprint,
            "first_day": data.first_day,
            "last_day": data.last_day,
        },
        "library_versions": library_versions(),
    }


def _write_files(folder: Path, config: StrategyConfig, output: TrainOutput, info: dict[str, Any]) -> None:
    if output.model is not None:
        write_synced(folder / MODEL_FILE, pickle.dumps(output.model, protocol=pickle.HIGHEST_PROTOCOL))
    predictions = output.predictions.select(list(PREDICTION_SCHEMA)).cast(PREDICTION_SCHEMA)
    predictions.write_parquet(folder / PREDICTIONS_FILE)
    fsync_file(folder / PREDICTIONS_FILE)
    write_synced(folder / STRATEGY_FILE, config.to_yaml().encode("utf-8"))
    write_synced(folder / TRAIN_FILE, (json.dumps(info, indent=1, allow_nan=False) + "\n").encode("utf-8"))
    fsync_dir(folder)


def _json_float(value: float) -> float | None:
    """JSON has no NaN: an undefined number (an IC without sessions) is ``null``."""
    number = float(value)
    return number if math.isfinite(number) else None


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)
