"""Queries on the model registry table."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from trader.domain.enums import ModelStage
from trader.store.models import ModelRegistryEntry


def latest_production_model(session: Session, model_name: str) -> ModelRegistryEntry | None:
    """The production version of ``model_name`` most recently approved, or ``None`` if there is none.

    The schema allows one production row per name; ordering by approval time keeps the answer right
    even while a promotion is rewriting the stages inside its transaction.
    """
    query = (
        select(ModelRegistryEntry)
        .where(ModelRegistryEntry.model_name == model_name, ModelRegistryEntry.stage == ModelStage.PRODUCTION)
        .order_by(ModelRegistryEntry.approved_at.desc(), ModelRegistryEntry.id.desc())
        .limit(1)
    )
    return session.scalars(query).first()
