"""Risk limits and risk decisions in the database (``risk_limits``, ``risk_decisions``).

The functions take an open SQLAlchemy session and leave the transaction to the caller (one use case,
one transaction: see :func:`trader.store.db.transaction`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from trader.config import Settings
from trader.risk.engine import OrderVerdict
from trader.risk.limits import EffectiveLimits, RiskError, RiskLimits, combine_limits
from trader.store.models import ALL_STRATEGIES, RiskLimit
from trader.store.models import RiskDecision as RiskDecisionRow

_VALUE_COLUMNS = (
    "max_order_notional",
    "max_position_notional",
    "max_gross_exposure",
    "daily_loss_limit",
    "max_drawdown_pct",
)


def load_limits(session: Session, strategy_id: str) -> RiskLimits | None:
    """The row of ``strategy_id`` (``'*'`` for the global one), or ``None`` when there is none."""
    row = session.scalars(select(RiskLimit).where(RiskLimit.strategy_id == strategy_id)).one_or_none()
    return _from_row(row) if row is not None else None


def list_limits(session: Session) -> list[RiskLimits]:
    """Every row, the global one first, then by strategy."""
    rows = session.scalars(select(RiskLimit).order_by(RiskLimit.strategy_id)).all()
    return sorted(
        (_from_row(row) for row in rows), key=lambda r: (r.strategy_id != ALL_STRATEGIES, r.strategy_id)
    )


def upsert_limits(session: Session, limits: RiskLimits, *, updated_by: str | None = None) -> None:
    """Create or replace the row of ``limits.strategy_id`` (validated by :class:`RiskLimits`).

    One ``INSERT ... ON CONFLICT`` so two writers of the same strategy cannot both insert.
    """
    if not isinstance(limits, RiskLimits):
        raise RiskError(f"upsert_limits needs a RiskLimits, not {type(limits).__name__}")
    values: dict[str, Any] = {name: getattr(limits, name) for name in _VALUE_COLUMNS}
    values.update(blacklist=sorted(limits.blacklist), enabled=limits.enabled, updated_by=updated_by)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(RiskLimit).values(strategy_id=limits.strategy_id, **values)
    statement = statement.on_conflict_do_update(
        index_elements=[RiskLimit.strategy_id], set_={**values, "updated_at": func.now()}
    )
    session.execute(statement)


def delete_limits(session: Session, strategy_id: str) -> bool:
    """Remove the row of ``strategy_id``; whether there was one."""
    result = session.execute(delete(RiskLimit).where(RiskLimit.strategy_id == strategy_id))
    return bool(getattr(result, "rowcount", 0))


def resolve_limits(session: Session, strategy_id: str, settings: Settings | None) -> EffectiveLimits:
    """The limits that apply to ``strategy_id``: its row, the global row, the settings (stricter wins)."""
    own = load_limits(session, strategy_id) if strategy_id != ALL_STRATEGIES else None
    return combine_limits(strategy_id, own, load_limits(session, ALL_STRATEGIES), settings)


def record_decisions(
    session: Session, verdicts: Iterable[OrderVerdict], *, at: datetime | None = None
) -> int:
    """Write one ``risk_decisions`` row per verdict; return how many.

    Each order needs its ``client_order_id`` and its ``orders`` row must exist already (foreign key):
    the gateway writes the order first, then the decision, in one transaction. ``at`` (UTC-aware)
    overrides the database clock, for replays.
    """
    rows: list[RiskDecisionRow] = []
    for verdict in verdicts:
        order_id = verdict.order.client_order_id
        if not order_id:
            raise RiskError(
                f"cannot record the decision on {verdict.order.symbol}: the order has no client_order_id"
            )
        row = RiskDecisionRow(
            client_order_id=order_id,
            strategy_id=verdict.strategy_id,
            symbol=verdict.order.symbol,
            approved=verdict.decision.approved,
            rule=verdict.decision.rule,
            reason=verdict.decision.reason,
            details=dict(verdict.decision.details),
        )
        if at is not None:
            row.ts = at
        rows.append(row)
    session.add_all(rows)
    session.flush()
    return len(rows)


def _from_row(row: RiskLimit) -> RiskLimits:
    return RiskLimits(
        strategy_id=row.strategy_id,
        max_order_notional=row.max_order_notional,
        max_position_notional=row.max_position_notional,
        max_gross_exposure=row.max_gross_exposure,
        daily_loss_limit=row.daily_loss_limit,
        max_drawdown_pct=row.max_drawdown_pct,
        blacklist=frozenset(row.blacklist or ()),
        enabled=row.enabled,
    )
