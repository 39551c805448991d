"""The model registry with release gates, on SQLite and PostgreSQL: register, list, promote (refused
with reasons, or approved and archiving the previous version), roll back, change counter, NOTIFY."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from tests.support.checks import all_passed
from trader.domain.enums import ModelStage
from trader.errors import UsageError
from trader.research.leakage import (
    FEATURES_CHECK,
    LABELS_CHECK,
    SEGMENTS_CHECK,
    UNIVERSE_CHECK,
    CheckReport,
    CheckResult,
)
from trader.research.registry import (
    NOTIFY_CHANNEL,
    ModelRegistry,
    NothingToRollBackError,
    PromotionRefusedError,
    UnknownModelError,
    artifact_path,
    release_gate,
)
from trader.store.db import session_factory
from trader.store.models import AuditLog, ModelRegistryEntry
from trader.store.registry import latest_production_model
from trader.strategies.config import PromotionThresholds

NAME = "alpha_baseline"
T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
PASSED = all_passed(T0)
LEAKY = all_passed(T0, failed={FEATURES_CHECK: "TOMORROW reads the future"})
GOOD = {"sharpe": 1.3, "max_drawdown": -0.12, "ic": 0.035, "turnover": 0.18, "annualized_return": 0.21}
GATE = PromotionThresholds(min_sharpe=0.5, max_drawdown=0.3, min_ic=0.01, max_turnover=0.5)


class Clock:
    """A clock that moves one minute per reading, so every change has its own time."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def registry(migrated_engine: Engine) -> ModelRegistry:
    return ModelRegistry(migrated_engine, clock=Clock())


def audit(engine: Engine, action: str | None = None) -> list[AuditLog]:
    query = select(AuditLog).order_by(AuditLog.id)
    if action is not None:
        query = query.where(AuditLog.action == action)
    with session_factory(engine)() as session:
        return list(session.scalars(query))


def register(
    registry: ModelRegistry, version: str, metrics: dict[str, Any] | None = None, checks: Any = PASSED
) -> None:
    registry.register(
        NAME, version, f"/artifacts/models/{NAME}/{version}", f"run-{version}", metrics or GOOD, checks
    )


# --------------------------------------------------------------------------------------------------
# Register and read
# --------------------------------------------------------------------------------------------------


def test_register_then_list_and_get(registry: ModelRegistry, migrated_engine: Engine) -> None:
    entry = registry.register(NAME, "v1", "/artifacts/v1", "run-1", {**GOOD, "ic": float("nan")}, PASSED)
    registry.register("momentum", "m1", "file:///artifacts/m1", None, {"sharpe": 0.4}, None)

    assert entry.stage is ModelStage.STAGING and entry.approved_by is None
    assert entry.metrics["ic"] is None  # NaN is not JSON: stored as null, and the gate sees "missing"
    assert entry.checks_passed is True and entry.checks["summary"] == "4/4 checks passed"
    assert [(e.model_name, e.version) for e in registry.list()] == [(NAME, "v1"), ("momentum", "m1")]
    assert [e.version for e in registry.list("momentum")] == ["m1"]
    got = registry.get(NAME, "v1")
    assert got == entry
    assert got.created_at == T0 + timedelta(minutes=1)
    assert registry.get("momentum", "m1").checks_passed is None  # none recorded
    assert [(a.action, a.target, a.details["version"]) for a in audit(migrated_engine)] == [
        ("model.register", NAME, "v1"),
        ("model.register", "momentum", "m1"),
    ]


def test_register_is_idempotent_and_updates_metrics_and_checks(
    registry: ModelRegistry, migrated_engine: Engine
) -> None:
    register(registry, "v1")
    register(registry, "v1")  # the same again: nothing changes, nothing is audited
    assert len(registry.list()) == 1 and len(audit(migrated_engine)) == 1

    updated = registry.register(
        NAME, "v1", f"/artifacts/models/{NAME}/v1", "run-v1", {**GOOD, "sharpe": 0.9}, LEAKY
    )
    assert updated.metric("sharpe") == 0.9 and updated.checks_passed is False
    assert len(registry.list()) == 1
    (update,) = audit(migrated_engine, "model.update")
    assert update.details == {"version": "v1", "changed": ["checks", "metrics"]}


def test_a_production_models_artifact_cannot_be_swapped(registry: ModelRegistry) -> None:
    register(registry, "v1")
    registry.promote(NAME, "v1", approved_by="ops", thresholds=GATE)
    with pytest.raises(UsageError, match="v1 is production: its artifact_uri cannot change"):
        registry.register(NAME, "v1", "/somewhere/else", "run-v1", GOOD, PASSED)
    assert registry.get(NAME, "v1").artifact_uri == f"/artifacts/models/{NAME}/v1"


def test_bad_register_input_is_named(registry: ModelRegistry) -> None:
    with pytest.raises(UsageError, match="version must be a non-empty string"):
        registry.register(NAME, " ", "/a", None, GOOD, PASSED)
    with pytest.raises(UsageError, match=r"metrics.model: object is not a number"):
        registry.register(NAME, "v1", "/a", None, {"model": object()}, PASSED)
    with pytest.raises(UsageError, match="checks: not a check report"):
        registry.register(NAME, "v1", "/a", None, GOOD, {"checks": "all good"})
    assert registry.list() == []


def test_unknown_model_or_version_is_a_usage_error(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModelError, match="no model named 'nope'") as error:
        registry.get("nope", "1")
    assert error.value.exit_code == 2
    register(registry, "v1")
    with pytest.raises(UnknownModelError, match="alpha_baseline has no version 'v9'; latest versions: v1"):
        registry.promote(NAME, "v9", approved_by="ops", thresholds=GATE)


# --------------------------------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------------------------------


def test_promotion_refused_when_checks_failed(registry: ModelRegistry, migrated_engine: Engine) -> None:
    register(registry, "v1", checks=LEAKY)
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(NAME, "v1", approved_by="alice", thresholds=GATE)
    assert refused.value.exit_code == 1
    assert refused.value.reasons == (
        "leakage checks failed: features_point_in_time: TOMORROW reads the future",
    )
    entry = registry.get(NAME, "v1")
    assert entry.stage is ModelStage.STAGING and entry.approved_by is None and entry.approved_at is None
    assert entry.decision_reason == (
        "refused by alice at 2025-03-03T14:03:00+00:00: "
        "leakage checks failed: features_point_in_time: TOMORROW reads the future"
    )
    (row,) = audit(migrated_engine, "model.promote_refused")
    assert (row.actor, row.target, row.reason) == ("alice", NAME, entry.decision_reason)
    assert row.details["reasons"] == list(refused.value.reasons)
    assert row.details["thresholds"]["min_sharpe"] == 0.5
    assert registry.production(NAME) is None


def test_promotion_refused_when_sharpe_is_below_the_threshold(
    registry: ModelRegistry, migrated_engine: Engine
) -> None:
    register(registry, "v1")
    register(registry, "v2", {**GOOD, "sharpe": 0.31})
    registry.promote(NAME, "v1", approved_by="ops", thresholds=GATE)
    with pytest.raises(PromotionRefusedError, match=r"sharpe 0\.31 is below the minimum 0\.5"):
        registry.promote(NAME, "v2", approved_by="ops", thresholds=GATE)
    # The production version is untouched.
    assert registry.production_version(NAME) == "v1"
    assert registry.get(NAME, "v2").stage is ModelStage.STAGING
    assert "sharpe 0.31 is below the minimum 0.5" in (registry.get(NAME, "v2").decision_reason or "")
    assert len(audit(migrated_engine, "model.promote_refused")) == 1


def test_promotion_refused_without_checks_or_with_missing_metrics(registry: ModelRegistry) -> None:
    registry.register(NAME, "v1", "/a/v1", None, {"sharpe": 2.0}, None)
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(NAME, "v1", approved_by="ops", thresholds=GATE)
    assert refused.value.reasons == (
        "no leakage checks recorded (run them with the backtest and register again)",
        "metric max_drawdown is missing (needed: |max drawdown| <= 0.3)",
        "metric ic is missing (needed: IC >= 0.01)",
        "metric turnover is missing (needed: turnover <= 0.5)",
    )


def test_promotion_archives_the_previous_production_version(
    registry: ModelRegistry, migrated_engine: Engine
) -> None:
    register(registry, "v1")
    register(registry, "v2")
    first = registry.promote(NAME, "v1", approved_by="alice", thresholds=GATE)
    assert first.replaced is None
    assert first.promoted.stage is ModelStage.PRODUCTION and first.promoted.approved_by == "alice"
    assert first.reason.startswith(
        "approved by alice at 2025-03-03T14:05:00+00:00: 4/4 checks passed; sharpe 1.3 >= 0.5"
    )

    second = registry.promote(NAME, "v2", approved_by="bob", thresholds=GATE)
    assert second.replaced is not None and second.replaced.version == "v1"
    v1, v2 = registry.get(NAME, "v1"), registry.get(NAME, "v2")
    assert (v1.stage, v2.stage) == (ModelStage.ARCHIVED, ModelStage.PRODUCTION)
    assert v1.approved_by == "alice"  # an archived version keeps its approval: it can be rolled back to
    assert v2.approved_at == T0 + timedelta(minutes=7)  # each registration and audit row reads the clock
    assert "replaced by v2 (promoted by bob)" in (v1.decision_reason or "")
    promotions = audit(migrated_engine, "model.promote")
    assert [(p.actor, p.details["version"], p.details["replaced"]) for p in promotions] == [
        ("alice", "v1", None),
        ("bob", "v2", "v1"),
    ]
    # The store's query and view agree with the registry.
    with session_factory(migrated_engine)() as session:
        latest = latest_production_model(session, NAME)
        assert latest is not None and latest.version == "v2"
        assert (
            session.scalar(
                select(func.count())
                .select_from(ModelRegistryEntry)
                .where(ModelRegistryEntry.stage == "production")
            )
            == 1
        )
    with pytest.raises(UsageError, match="v2 is already in production"):
        registry.promote(NAME, "v2", approved_by="bob", thresholds=GATE)
    with pytest.raises(UsageError, match="only promotion to 'production'"):
        registry.promote(NAME, "v1", to="archived", approved_by="bob", thresholds=GATE)


# --------------------------------------------------------------------------------------------------
# Rollback and the change counter
# --------------------------------------------------------------------------------------------------


def test_rollback_restores_the_previous_version_and_steps_further_back(
    registry: ModelRegistry, migrated_engine: Engine
) -> None:
    for version in ("v1", "v2", "v3"):
        register(registry, version)
        registry.promote(NAME, version, approved_by="alice", thresholds=GATE)
    v2_approved = registry.get(NAME, "v2").approved_at

    back = registry.rollback(NAME, approved_by="carol")
    assert (back.restored.version, back.retired.version) == ("v2", "v3")
    assert registry.production_version(NAME) == "v2"
    v2, v3 = registry.get(NAME, "v2"), registry.get(NAME, "v3")
    assert v2.approved_by == "alice" and v2.approved_at == v2_approved  # its original approval
    assert v3.stage is ModelStage.ARCHIVED and v3.approved_by is None and v3.approved_at is None
    assert (v3.decision_reason or "").startswith("rolled back by carol at ")
    assert "restored by rollback by carol" in (v2.decision_reason or "")
    (row,) = audit(migrated_engine, "model.rollback")
    assert (row.actor, row.details) == ("carol", {"version": "v2", "from_version": "v3"})

    # A second rollback goes one further back, not to the version just rolled back.
    assert registry.rollback(NAME, approved_by="carol").restored.version == "v1"
    with pytest.raises(NothingToRollBackError, match="v1 is in production and no earlier approved version"):
        registry.rollback(NAME, approved_by="carol")
    assert registry.production_version(NAME) == "v1"


def test_rollback_without_production_is_a_clear_error(registry: ModelRegistry) -> None:
    with pytest.raises(UnknownModelError, match="no model named"):
        registry.rollback(NAME, approved_by="ops")
    register(registry, "v1")
    with pytest.raises(NothingToRollBackError, match="alpha_baseline has no production version to roll back"):
        registry.rollback(NAME, approved_by="ops")


def test_revision_changes_only_when_production_changes(registry: ModelRegistry) -> None:
    empty = registry.revision(NAME)
    assert (empty.production_version, empty.changes, empty.changed_at) == (None, 0, None)
    register(registry, "v1")
    register(registry, "v2", {**GOOD, "sharpe": 0.1})
    assert registry.revision(NAME).changes == 0  # registering is not a production change
    registry.promote(NAME, "v1", approved_by="ops", thresholds=GATE)
    promoted = registry.revision(NAME)
    assert (promoted.production_version, promoted.changes) == ("v1", 1)
    with pytest.raises(PromotionRefusedError):
        registry.promote(NAME, "v2", approved_by="ops", thresholds=GATE)
    assert registry.revision(NAME) == promoted  # a refusal changes nothing a service cares about
    registry.register(NAME, "v2", f"/artifacts/models/{NAME}/v2", "run-v2", GOOD, PASSED)
    registry.promote(NAME, "v2", approved_by="ops", thresholds=GATE)
    registry.rollback(NAME, approved_by="ops")
    latest = registry.revision(NAME)
    assert (latest.production_version, latest.changes) == ("v1", 3)
    assert latest.changed_at is not None and latest.changed_at > promoted.changed_at  # type: ignore[operator]


@pytest.fixture
def listener(migrated_engine: Engine) -> Iterator[Any]:
    import psycopg

    url = migrated_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        yield connection


@pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)  # NOTIFY is PostgreSQL's
def test_postgresql_notifies_promotions_and_rollbacks(registry: ModelRegistry, listener: Any) -> None:
    register(registry, "v1")
    register(registry, "v2", checks=LEAKY)
    register(registry, "v3")
    registry.promote(NAME, "v1", approved_by="ops", thresholds=GATE)
    with pytest.raises(PromotionRefusedError):
        registry.promote(NAME, "v2", approved_by="ops", thresholds=GATE)
    registry.promote(NAME, "v3", approved_by="ops", thresholds=GATE)
    registry.rollback(NAME, approved_by="ops")
    received = [(n.channel, n.payload) for n in listener.notifies(timeout=2, stop_after=3)]
    assert received == [(NOTIFY_CHANNEL, NAME)] * 3  # promote, promote, rollback; not the refusal


# --------------------------------------------------------------------------------------------------
# The gate itself and artifact paths (pure)
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "reason"),
    [
        ({**GOOD, "max_drawdown": -0.31}, "|max drawdown| 0.31 exceeds the maximum 0.3"),
        ({**GOOD, "max_drawdown": 0.31}, "|max drawdown| 0.31 exceeds the maximum 0.3"),
        ({**GOOD, "ic": 0.0099}, "IC 0.0099 is below the minimum 0.01"),
        ({**GOOD, "turnover": 0.51}, "turnover 0.51 exceeds the maximum 0.5"),
        ({**GOOD, "sharpe": None}, "metric sharpe is missing (needed: sharpe >= 0.5)"),
    ],
)
def test_each_threshold_is_enforced(metrics: dict[str, Any], reason: str) -> None:
    decision = release_gate(metrics, PASSED.to_dict(), GATE)
    assert (decision.passed, decision.reasons) == (False, (reason,))


def test_the_gate_passes_at_the_limits_and_ignores_an_unset_turnover_limit() -> None:
    at_limits = {"sharpe": 0.5, "max_drawdown": -0.3, "ic": 0.01, "turnover": 0.5}
    assert release_gate(at_limits, PASSED.to_dict(), GATE).passed
    no_turnover = PromotionThresholds(min_sharpe=0.5, max_drawdown=0.3, min_ic=0.01)
    decision = release_gate({**at_limits, "turnover": 9.0}, PASSED.to_dict(), no_turnover)
    assert decision.passed and decision.summary.endswith("turnover not limited")


def test_artifact_path() -> None:
    assert str(artifact_path("/artifacts/models/a/1")) == "/artifacts/models/a/1"
    assert str(artifact_path("file:///artifacts/models/a%201/1")) == "/artifacts/models/a 1/1"
    assert artifact_path("s3://bucket/models/a/1") is None
    assert artifact_path("runs:/abc/model") is None


def test_the_gate_reads_the_backtests_turnover_name() -> None:
    metrics = {**GOOD, "turnover": None, "mean_daily_turnover": 0.7}
    assert release_gate(metrics, PASSED.to_dict(), GATE).reasons == ("turnover 0.7 exceeds the maximum 0.5",)


def test_a_report_that_leaves_a_check_out_does_not_pass_the_gate() -> None:
    # Marked passed by whoever wrote it, but the perturbation and universe checks were never run.
    partial = CheckReport(
        (CheckResult(SEGMENTS_CHECK, True, "fine"), CheckResult(LABELS_CHECK, True, "fine"))
    )
    decision = release_gate(GOOD, partial.to_dict(), GATE)
    assert not decision.passed
    assert decision.reasons == (
        f"leakage checks failed: {FEATURES_CHECK}: not recorded; {UNIVERSE_CHECK}: not recorded",
    )
    assert release_gate(GOOD, all_passed().to_dict(), GATE).passed
