"""The model registry with release gates, over the ``model_registry`` table.

A trained model is registered as ``staging`` with its test metrics and its leakage-check report.
:meth:`ModelRegistry.promote` moves it to ``production`` only when every check passed and every
metric meets the strategy's :class:`~trader.strategies.config.PromotionThresholds`; otherwise it is
refused with the reasons, which are stored on the row (``decision_reason``) and in ``audit_log``, and
the stages do not change. A successful promotion archives the previous production version;
:meth:`ModelRegistry.rollback` puts the most recently approved archived version back.

Every change is one transaction that also appends its ``audit_log`` row. The schema allows one
production row per model name and demands ``approved_by``/``approved_at`` on it.

Services notice a new production model cheaply with :meth:`ModelRegistry.revision`: the production
version and a counter of promotions and rollbacks of that model (counted from the append-only audit
log, so it only grows). On PostgreSQL each promotion and rollback also sends
``NOTIFY model_registry, '<model name>'`` inside its transaction (delivered on commit only).
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Real
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from sqlalchemy import Engine, Select, func, select, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from trader.domain.enums import ModelStage
from trader.errors import DatabaseError, TraderError, UsageError
from trader.research.leakage import ALL_CHECKS, CheckReport, LeakageCheckError
from trader.store.db import session_factory, transaction
from trader.store.models import AuditLog, ModelRegistryEntry
from trader.strategies.config import PromotionThresholds

#: The PostgreSQL channel of promotion and rollback notifications; the payload is the model name.
NOTIFY_CHANNEL = "model_registry"

#: ``audit_log.action`` of each registry change (``target`` is the model name, ``details`` the rest).
REGISTER = "model.register"
UPDATE = "model.update"
PROMOTE = "model.promote"
PROMOTE_REFUSED = "model.promote_refused"
ROLLBACK = "model.rollback"
#: The actions that change which version is in production (what :meth:`ModelRegistry.revision` counts).
PRODUCTION_CHANGES = (PROMOTE, ROLLBACK)

#: Metric keys the release gate reads from a row's ``metrics`` (the first key present wins).
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "sharpe": ("sharpe", "sharpe_ratio"),
    "max_drawdown": ("max_drawdown", "mdd"),
    "ic": ("ic", "IC"),
    "turnover": ("turnover", "mean_daily_turnover"),
}

_NAME_MAX, _VERSION_MAX, _ACTOR_MAX = 128, 64, 128


class RegistryError(TraderError):
    """A registry operation failed."""


class UnknownModelError(RegistryError, UsageError):
    """No such model name or version in the registry (bad usage: exit code 2)."""


class PromotionRefusedError(RegistryError):
    """The release gate refused a promotion; ``reasons`` says why. The stages did not change."""

    def __init__(self, model_name: str, version: str, reasons: Sequence[str]) -> None:
        self.model_name, self.version, self.reasons = model_name, version, tuple(reasons)
        super().__init__(f"promotion of {model_name} {version} refused: {'; '.join(reasons)}")


class NothingToRollBackError(RegistryError):
    """There is no production version, or no earlier approved version to go back to."""


@dataclass(frozen=True)
class RegistryEntry:
    """One row of the registry, detached from the database."""

    id: int
    model_name: str
    version: str
    stage: ModelStage
    artifact_uri: str
    mlflow_run_id: str | None
    metrics: dict[str, Any]
    checks: dict[str, Any]
    created_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    decision_reason: str | None

    @property
    def checks_passed(self) -> bool | None:
        """Whether the recorded checks passed; ``None`` when none were recorded."""
        if not self.checks:
            return None
        return self.checks.get("passed") is True

    def metric(self, name: str) -> float | None:
        """A gate metric (see :data:`METRIC_KEYS`) as a finite float, or ``None``."""
        return _metric(self.metrics, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601, the stage as its value."""
        return {
            "id": self.id,
            "model_name": self.model_name,
            "version": self.version,
            "stage": self.stage.value,
            "artifact_uri": self.artifact_uri,
            "mlflow_run_id": self.mlflow_run_id,
            "metrics": self.metrics,
            "checks": self.checks,
            "checks_passed": self.checks_passed,
            "created_at": self.created_at.isoformat(),
            "approved_by": self.approved_by,
            "approved_at": self.approved_at.isoformat() if self.approved_at else None,
            "decision_reason": self.decision_reason,
        }

    @classmethod
    def of(cls, row: ModelRegistryEntry) -> RegistryEntry:
        return cls(
            id=row.id,
            model_name=row.model_name,
            version=row.version,
            stage=ModelStage(row.stage),
            artifact_uri=row.artifact_uri,
            mlflow_run_id=row.mlflow_run_id,
            metrics=dict(row.metrics or {}),
            checks=dict(row.checks or {}),
            created_at=row.created_at,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
            decision_reason=row.decision_reason,
        )


@dataclass(frozen=True)
class GateDecision:
    """The release gate's verdict: ``reasons`` lists every failure; ``summary`` what was compared."""

    passed: bool
    reasons: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class PromotionResult:
    promoted: RegistryEntry
    #: The version that was in production before (now archived), if any.
    replaced: RegistryEntry | None
    reason: str


@dataclass(frozen=True)
class RollbackResult:
    #: The version back in production.
    restored: RegistryEntry
    #: The version that was in production (now archived).
    retired: RegistryEntry
    reason: str


@dataclass(frozen=True)
class RegistryRevision:
    """What a polling service compares: a changed ``changes`` count means production changed."""

    model_name: str
    production_version: str | None
    changes: int
    changed_at: datetime | None


# --------------------------------------------------------------------------------------------------
# The release gate (pure)
# --------------------------------------------------------------------------------------------------


def _metric(metrics: Mapping[str, Any], name: str) -> float | None:
    for key in METRIC_KEYS[name]:
        value = metrics.get(key)
        if isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value)):
            return float(value)
    return None


def _check_problems(checks: Mapping[str, Any]) -> str:
    """What keeps a check report (:meth:`CheckReport.to_dict`) from passing, or ``""``: each failed
    check, each of :data:`ALL_CHECKS` it lacks (a report that left one out proves nothing about it),
    or a report marked failed."""
    results = [c for c in checks.get("checks", []) if isinstance(c, Mapping)]
    problems = [
        f"{c.get('name')}: {_short(str(c.get('detail', '')))}" for c in results if c.get("passed") is not True
    ]
    recorded = {c.get("name") for c in results}
    problems += [f"{name}: not recorded" for name in ALL_CHECKS if name not in recorded]
    if not problems and checks.get("passed") is not True:
        problems.append("the report is marked failed")
    return "; ".join(problems)


def release_gate(
    metrics: Mapping[str, Any], checks: Mapping[str, Any], thresholds: PromotionThresholds
) -> GateDecision:
    """Whether a model with these ``metrics`` and ``checks`` (a :meth:`CheckReport.to_dict`) may go to
    production under ``thresholds``. A missing check report, check or metric is a failure."""
    reasons: list[str] = []
    parts: list[str] = []
    if not checks:
        reasons.append("no leakage checks recorded (run them with the backtest and register again)")
    elif problems := _check_problems(checks):
        reasons.append(f"leakage checks failed: {problems}")
    else:
        parts.append(str(checks.get("summary") or "checks passed"))

    def compare(
        name: str, label: str, limit: float | None, *, at_least: bool, absolute: bool = False
    ) -> None:
        if limit is None:
            parts.append(f"{label} not limited")
            return
        value = _metric(metrics, name)
        if value is None:
            reasons.append(
                f"metric {name} is missing (needed: {label} {'>=' if at_least else '<='} {limit:g})"
            )
            return
        shown = abs(value) if absolute else value
        ok = shown >= limit if at_least else shown <= limit
        if ok:
            parts.append(f"{label} {shown:.4g} {'>=' if at_least else '<='} {limit:g}")
        elif at_least:
            reasons.append(f"{label} {shown:.4g} is below the minimum {limit:g}")
        else:
            reasons.append(f"{label} {shown:.4g} exceeds the maximum {limit:g}")

    compare("sharpe", "sharpe", thresholds.min_sharpe, at_least=True)
    compare("max_drawdown", "|max drawdown|", thresholds.max_drawdown, at_least=False, absolute=True)
    compare("ic", "IC", thresholds.min_ic, at_least=True)
    compare("turnover", "turnover", thresholds.max_turnover, at_least=False)
    return GateDecision(not reasons, tuple(reasons), "; ".join(parts))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------


def _check_text(field: str, value: str | None, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{field} must be a non-empty string")
    if len(value) > limit:
        raise UsageError(f"{field} is {len(value)} characters long; at most {limit}")
    return value


def clean_metrics(metrics: Mapping[str, Any], where: str = "metrics") -> dict[str, Any]:
    """``metrics`` as JSON the database accepts: numbers as floats (NaN and infinities, which JSON
    cannot hold, as ``None``), strings and booleans as they are, nested mappings and lists cleaned."""
    if not isinstance(metrics, Mapping):
        raise UsageError(f"{where} must be a mapping of names to numbers, got {type(metrics).__name__}")
    return {str(key): _clean_value(value, f"{where}.{key}") for key, value in metrics.items()}


def _clean_value(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return clean_metrics(value, where)
    if isinstance(value, list | tuple):
        return [_clean_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise UsageError(f"{where}: {type(value).__name__} is not a number, string or mapping")


def _clean_checks(checks: CheckReport | Mapping[str, Any] | None) -> dict[str, Any]:
    if checks is None:
        return {}
    if isinstance(checks, CheckReport):
        return checks.to_dict()
    if not checks:
        return {}
    try:
        return CheckReport.from_dict(checks).to_dict()
    except LeakageCheckError as exc:
        raise UsageError(f"checks: {exc}") from None


# --------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRegistry:
    """Register, list, promote and roll back model versions (see the module docstring)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = _now) -> None:
        self._engine = engine
        self._factory = session_factory(engine)
        self._clock = clock

    # -- reading ------------------------------------------------------------------------------------

    def list(self, name: str | None = None) -> builtins.list[RegistryEntry]:
        """Every version (of ``name``, or of every model), by name then registration order."""
        query = select(ModelRegistryEntry).order_by(ModelRegistryEntry.model_name, ModelRegistryEntry.id)
        if name is not None:
            query = query.where(ModelRegistryEntry.model_name == name)
        with self._session() as session:
            return [RegistryEntry.of(row) for row in session.scalars(query)]

    def get(self, name: str, version: str) -> RegistryEntry:
        """One version; :class:`UnknownModelError` (exit code 2) when there is no such version."""
        with self._session() as session:
            rows = self._rows(session, name, lock=False)
            return RegistryEntry.of(_find(rows, name, version))

    def production(self, name: str) -> RegistryEntry | None:
        """The production version of ``name``, or ``None``."""
        query = select(ModelRegistryEntry).where(
            ModelRegistryEntry.model_name == name, ModelRegistryEntry.stage == ModelStage.PRODUCTION.value
        )
        with self._session() as session:
            row = session.scalars(query).first()
            return RegistryEntry.of(row) if row is not None else None

    def production_version(self, name: str) -> str | None:
        """Only the production version string of ``name`` (one indexed lookup), or ``None``."""
        with self._session() as session:
            return session.scalars(_production_version(name)).first()

    def revision(self, name: str) -> RegistryRevision:
        """The production version of ``name`` and how many times production changed (promotions and
        rollbacks, counted from the append-only audit log) and when last: poll this and reload the
        model when ``changes`` differs from what you saw."""
        count = select(func.count(AuditLog.id), func.max(AuditLog.ts)).where(
            AuditLog.target == name, AuditLog.action.in_(PRODUCTION_CHANGES)
        )
        with self._session() as session:
            changes, changed_at = session.execute(count).one()
            version = session.scalars(_production_version(name)).first()
        return RegistryRevision(name, version, int(changes), changed_at)

    # -- changing -----------------------------------------------------------------------------------

    def register(
        self,
        name: str,
        version: str,
        artifact_uri: str,
        mlflow_run_id: str | None,
        metrics: Mapping[str, Any],
        checks: CheckReport | Mapping[str, Any] | None,
        *,
        actor: str = "trader",
    ) -> RegistryEntry:
        """Add a version as ``staging``, or update the metrics and checks of an existing one.

        Idempotent: registering the same values again changes nothing and writes no audit row. An
        existing version keeps its stage; its artifact and run id may only change while it is in
        staging (a production model's files are never swapped under it).
        """
        _check_text("name", name, _NAME_MAX)
        _check_text("version", version, _VERSION_MAX)
        _check_text("artifact_uri", artifact_uri, 4096)
        _check_text("actor", actor, _ACTOR_MAX)
        values = {
            "artifact_uri": artifact_uri,
            "mlflow_run_id": mlflow_run_id or None,
            "metrics": clean_metrics(metrics),
            "checks": _clean_checks(checks),
        }
        with self._session() as session:
            rows = self._rows(session, name, lock=True)
            row = next((r for r in rows if r.version == version), None)
            if row is None:
                row = ModelRegistryEntry(
                    model_name=name,
                    version=version,
                    stage=ModelStage.STAGING.value,
                    created_at=self._clock(),
                    **values,
                )
                session.add(row)
                session.flush()
                self._audit(
                    session, actor, REGISTER, name, f"registered {version} as staging", {"version": version}
                )
                return RegistryEntry.of(row)
            changed = sorted(key for key, value in values.items() if getattr(row, key) != value)
            moved = {"artifact_uri", "mlflow_run_id"} & set(changed)
            if moved and row.stage != ModelStage.STAGING.value:
                raise UsageError(
                    f"{name} {version} is {row.stage}: its {', '.join(sorted(moved))} cannot change; "
                    "register the new model under a new version"
                )
            if changed:
                for key in changed:
                    setattr(row, key, values[key])
                session.flush()
                reason = f"updated {version}: {', '.join(changed)}"
                self._audit(session, actor, UPDATE, name, reason, {"version": version, "changed": changed})
            return RegistryEntry.of(row)

    def promote(
        self,
        name: str,
        version: str,
        *,
        to: ModelStage | str = ModelStage.PRODUCTION,
        approved_by: str,
        thresholds: PromotionThresholds,
    ) -> PromotionResult:
        """Move ``version`` to production if it passes the release gate (:func:`release_gate`).

        Refused (:class:`PromotionRefusedError`, exit code 1) when a leakage check failed or none
        was recorded, or a metric misses ``thresholds``: the stages do not change, the reasons are
        stored in the row's ``decision_reason`` and in ``audit_log``. On success the previous
        production version becomes ``archived``. :class:`UnknownModelError` for an unknown version.
        """
        if str(to) != ModelStage.PRODUCTION.value:
            raise UsageError(f"--to {to}: only promotion to 'production' is supported")
        _check_text("approved_by", approved_by, _ACTOR_MAX)
        now = self._clock()
        with self._session() as session:
            rows = self._rows(session, name, lock=True)
            target = _find(rows, name, version)
            if target.stage == ModelStage.PRODUCTION.value:
                raise UsageError(f"{name} {version} is already in production")
            gate = release_gate(target.metrics or {}, target.checks or {}, thresholds)
            details: dict[str, Any] = {
                "version": version,
                "thresholds": thresholds.model_dump(mode="json"),
                "metrics": {key: _metric(target.metrics or {}, key) for key in METRIC_KEYS},
            }
            if gate.passed:
                return self._approve(session, rows, target, approved_by, now, gate, details)
            reason = f"refused by {approved_by} at {_iso(now)}: {'; '.join(gate.reasons)}"
            target.decision_reason = reason
            details["reasons"] = list(gate.reasons)
            self._audit(session, approved_by, PROMOTE_REFUSED, name, reason, details)
        # Raised after the commit: the refusal stays on record, the stages are unchanged.
        raise PromotionRefusedError(name, version, gate.reasons)

    def _approve(
        self,
        session: Session,
        rows: Sequence[ModelRegistryEntry],
        target: ModelRegistryEntry,
        approved_by: str,
        now: datetime,
        gate: GateDecision,
        details: dict[str, Any],
    ) -> PromotionResult:
        current = next((r for r in rows if r.stage == ModelStage.PRODUCTION.value), None)
        if current is not None:
            current.stage = ModelStage.ARCHIVED.value
            current.decision_reason = (
                f"archived at {_iso(now)}: replaced by {target.version} (promoted by {approved_by})"
            )
            session.flush()  # one production row per name: the old one leaves first
        reason = f"approved by {approved_by} at {_iso(now)}: {gate.summary}"
        target.stage = ModelStage.PRODUCTION.value
        target.approved_by, target.approved_at, target.decision_reason = approved_by, now, reason
        session.flush()
        details["replaced"] = current.version if current is not None else None
        self._audit(session, approved_by, PROMOTE, target.model_name, reason, details)
        self._notify(session, target.model_name)
        replaced = RegistryEntry.of(current) if current is not None else None
        return PromotionResult(RegistryEntry.of(target), replaced, reason)

    def rollback(self, name: str, *, approved_by: str) -> RollbackResult:
        """Archive the production version of ``name`` and put the most recently approved archived
        version back in production (it keeps its original approval).

        The retired version loses its approval (``approved_by``/``approved_at`` cleared, the story in
        ``decision_reason`` and ``audit_log``), so a second rollback goes one version further back
        instead of returning to it. :class:`NothingToRollBackError` when there is no production
        version or no earlier approved one.
        """
        _check_text("approved_by", approved_by, _ACTOR_MAX)
        now = self._clock()
        with self._session() as session:
            rows = self._rows(session, name, lock=True)
            if not rows:
                raise UnknownModelError(f"no model named {name!r} in the registry")
            current = next((r for r in rows if r.stage == ModelStage.PRODUCTION.value), None)
            if current is None:
                raise NothingToRollBackError(f"{name} has no production version to roll back")
            earlier = [
                r
                for r in rows
                if r.stage == ModelStage.ARCHIVED.value and r.approved_at is not None and r is not current
            ]
            if not earlier:
                raise NothingToRollBackError(
                    f"{name} {current.version} is in production and no earlier approved version "
                    "exists to roll back to"
                )
            previous = max(earlier, key=lambda r: (r.approved_at, r.id))
            when = _iso(now)
            was = f"approved by {current.approved_by} at {_iso(current.approved_at)}"
            current.stage = ModelStage.ARCHIVED.value
            current.approved_by, current.approved_at = None, None
            current.decision_reason = (
                f"rolled back by {approved_by} at {when} ({was}); replaced by {previous.version}"
            )
            session.flush()
            previous.stage = ModelStage.PRODUCTION.value
            reason = (
                f"restored by rollback by {approved_by} at {when}, replacing {current.version} "
                f"(originally approved by {previous.approved_by} at {_iso(previous.approved_at)})"
            )
            previous.decision_reason = reason
            session.flush()
            details = {"version": previous.version, "from_version": current.version}
            self._audit(session, approved_by, ROLLBACK, name, reason, details)
            self._notify(session, name)
            return RollbackResult(RegistryEntry.of(previous), RegistryEntry.of(current), reason)

    # -- plumbing -----------------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One transaction; database errors become one-line messages instead of tracebacks."""
        try:
            with transaction(self._factory) as session:
                yield session
        except IntegrityError as exc:
            raise RegistryError(f"the registry refused the change: {_first_line(exc)}") from None
        except (OperationalError, ProgrammingError) as exc:
            raise _database_error(self._engine, exc) from None

    @staticmethod
    def _rows(session: Session, name: str, *, lock: bool) -> builtins.list[ModelRegistryEntry]:
        query = (
            select(ModelRegistryEntry)
            .where(ModelRegistryEntry.model_name == name)
            .order_by(ModelRegistryEntry.id)
        )
        if lock:
            query = query.with_for_update()  # PostgreSQL: concurrent promotions of one model queue up
        return builtins.list(session.scalars(query))

    def _audit(
        self, session: Session, actor: str, action: str, target: str, reason: str, details: Mapping[str, Any]
    ) -> None:
        session.add(
            AuditLog(
                ts=self._clock(),
                actor=actor,
                action=action,
                target=target,
                reason=reason,
                details=dict(details),
            )
        )

    @staticmethod
    def _notify(session: Session, name: str) -> None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(
                text("SELECT pg_notify(:channel, :name)"), {"channel": NOTIFY_CHANNEL, "name": name}
            )


def _production_version(name: str) -> Select[str]:
    return select(ModelRegistryEntry.version).where(
        ModelRegistryEntry.model_name == name, ModelRegistryEntry.stage == ModelStage.PRODUCTION.value
    )


def artifact_path(artifact_uri: str) -> Path | None:
    """The local folder of an artifact URI (a plain path or a ``file://`` URI); ``None`` for a remote
    one (``s3://``, ``runs:/``, ...)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and artifact_uri[1:2] == ":"):  # C:\... on Windows
        return Path(artifact_uri)
    return None


def _find(rows: Sequence[ModelRegistryEntry], name: str, version: str) -> ModelRegistryEntry:
    for row in rows:
        if row.version == version:
            return row
    if not rows:
        raise UnknownModelError(f"no model named {name!r} in the registry (see 'trader model list')")
    known = ", ".join(row.version for row in rows[-5:])
    raise UnknownModelError(f"{name} has no version {version!r}; latest versions: {known}")


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "n/a"


def _first_line(exc: Exception) -> str:
    text_ = str(getattr(exc, "orig", exc)) or type(exc).__name__
    return text_.strip().splitlines()[0]


def _database_error(engine: Engine, exc: Exception) -> DatabaseError:
    url = engine.url.render_as_string(hide_password=True)
    return DatabaseError(
        f"the model registry in {url} cannot be used ({_first_line(exc)}); run 'trader db upgrade' if the "
        "schema is missing"
    )
