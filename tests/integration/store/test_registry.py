"""The latest production model query."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select, text

from trader.store.db import session_factory, transaction
from trader.store.models import ModelRegistryEntry
from trader.store.registry import latest_production_model

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _entry(name: str, version: str, stage: str, approved_at: datetime | None = None) -> ModelRegistryEntry:
    return ModelRegistryEntry(
        model_name=name,
        version=version,
        stage=stage,
        artifact_uri=f"file:///artifacts/{name}/{version}",
        approved_by="ops" if approved_at else None,
        approved_at=approved_at,
    )


def test_latest_production_model(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        assert latest_production_model(session, "alpha_baseline") is None
        session.add_all(
            [
                _entry("alpha_baseline", "1", "archived", T0),
                _entry("alpha_baseline", "2", "production", T0 + timedelta(days=1)),
                _entry("alpha_baseline", "3", "staging"),
                _entry("momentum", "7", "production", T0 + timedelta(days=5)),
            ]
        )
    with transaction(factory) as session:
        found = latest_production_model(session, "alpha_baseline")
        assert found is not None
        assert (found.version, found.approved_by, found.approved_at) == ("2", "ops", T0 + timedelta(days=1))
        assert latest_production_model(session, "unknown") is None


def test_promotion_in_one_transaction_moves_the_answer(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        session.add_all(
            [_entry("alpha_baseline", "1", "production", T0), _entry("alpha_baseline", "2", "staging")]
        )
    with transaction(factory) as session:
        old = session.scalars(select(ModelRegistryEntry).where(ModelRegistryEntry.version == "1")).one()
        new = session.scalars(select(ModelRegistryEntry).where(ModelRegistryEntry.version == "2")).one()
        old.stage = "archived"
        session.flush()  # the old production row must leave before the new one arrives (one per name)
        new.stage, new.approved_by, new.approved_at = "production", "ops", T0 + timedelta(days=2)
    with transaction(factory) as session:
        found = latest_production_model(session, "alpha_baseline")
        assert found is not None and found.version == "2"
        view = session.execute(text("SELECT version FROM v_latest_prod WHERE model_name = 'alpha_baseline'"))
        assert view.scalar_one() == "2"
