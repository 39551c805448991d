"""The whole relational schema of the platform (SQLAlchemy 2 declarative models).

The Alembic migrations under ``trader/store/migrations`` create exactly this schema (a test compares
them), plus what SQLAlchemy models cannot say: the append-only triggers of ``events`` and
``audit_log`` and the ``v_latest_prod`` view.

Conventions: money and quantities are :class:`ExactDecimal`; times are :class:`UTCDateTime`; status
and side columns are strings checked against the enums in :mod:`trader.domain.enums`, whose values are
Alpaca's own spelling.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from trader.domain.enums import ModelStage, OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce
from trader.store.types import ExactDecimal, UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSONB on PostgreSQL, JSON (text) on SQLite. ``None`` is SQL NULL (not the JSON literal ``null``), so
#: NOT NULL really refuses a missing payload.
JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
#: 64-bit surrogate keys; SQLite only auto-increments an ``INTEGER PRIMARY KEY``.
BigId = BigInteger().with_variant(Integer(), "sqlite")
#: Symbols as Alpaca spells them (``BRK.B``); crypto pairs are longer.
SYMBOL_LEN = 32
STRATEGY_LEN = 64
#: Alpaca's limit for ``client_order_id``.
CLIENT_ORDER_ID_LEN = 128
#: The ``strategy_id`` of rows that hold account-wide totals or global limits.
ALL_STRATEGIES = "*"

# A money or quantity column compared as a number on both engines (see ExactDecimal).
_N = "CAST({} AS NUMERIC)"


def num(column: str) -> str:
    return _N.format(column)


def one_of(column: str, values: type[StrEnum] | tuple[str, ...]) -> str:
    allowed = ", ".join(
        f"'{v}'" for v in (tuple(m.value for m in values) if isinstance(values, type) else values)
    )
    return f"{column} IN ({allowed})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 - SQLAlchemy's own class attribute
        Decimal: ExactDecimal(),
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


def created_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now(), nullable=False)


class Order(Base):
    """One order as we intend it, written before it is sent, then updated from the broker."""

    __tablename__ = "orders"

    client_order_id: Mapped[str] = mapped_column(String(CLIENT_ORDER_ID_LEN), primary_key=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN))
    trading_date: Mapped[date] = mapped_column(Date)
    #: Why the order exists (``rebalance``, ``exit``, ``kill``, ``manual``); part of the deterministic id.
    intent: Mapped[str] = mapped_column(String(32), server_default="rebalance")
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN), index=True)
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[Decimal | None]
    notional: Mapped[Decimal | None]
    order_type: Mapped[str] = mapped_column(String(16), server_default=OrderType.MARKET.value)
    limit_price: Mapped[Decimal | None]
    stop_price: Mapped[Decimal | None]
    time_in_force: Mapped[str] = mapped_column(String(8), server_default=TimeInForce.DAY.value)
    status: Mapped[str] = mapped_column(String(32), index=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: The parent order of a child slice (TWAP); NULL for an order that is not a slice.
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("orders.client_order_id", ondelete="RESTRICT"), index=True
    )
    filled_qty: Mapped[Decimal] = mapped_column(server_default="0")
    filled_avg_price: Mapped[Decimal | None]
    reject_reason: Mapped[str | None] = mapped_column(Text)
    submitted_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint(one_of("side", OrderSide), name="side_valid"),
        CheckConstraint(one_of("order_type", OrderType), name="order_type_valid"),
        CheckConstraint(one_of("time_in_force", TimeInForce), name="time_in_force_valid"),
        CheckConstraint(one_of("status", OrderStatus), name="status_valid"),
        CheckConstraint(
            f"(qty IS NOT NULL AND notional IS NULL AND {num('qty')} > 0) OR "
            f"(qty IS NULL AND notional IS NOT NULL AND {num('notional')} > 0)",
            name="qty_xor_notional_positive",
        ),
        CheckConstraint(f"limit_price IS NULL OR {num('limit_price')} > 0", name="limit_price_positive"),
        CheckConstraint(f"stop_price IS NULL OR {num('stop_price')} > 0", name="stop_price_positive"),
        CheckConstraint(
            "order_type NOT IN ('limit', 'stop_limit') OR limit_price IS NOT NULL",
            name="limit_price_required",
        ),
        CheckConstraint(
            "order_type NOT IN ('stop', 'stop_limit') OR stop_price IS NOT NULL", name="stop_price_required"
        ),
        CheckConstraint(f"{num('filled_qty')} >= 0", name="filled_qty_nonnegative"),
        CheckConstraint(f"qty IS NULL OR {num('filled_qty')} <= {num('qty')}", name="filled_qty_le_qty"),
        CheckConstraint(
            f"filled_avg_price IS NULL OR {num('filled_avg_price')} > 0", name="filled_avg_price_positive"
        ),
        CheckConstraint("parent_id IS NULL OR parent_id <> client_order_id", name="not_own_parent"),
        CheckConstraint("length(client_order_id) > 0", name="client_order_id_nonempty"),
        Index(None, "strategy_id", "trading_date"),
    )


class Execution(Base):
    """One fill (execution) reported by the broker; ``execution_id`` makes applying it idempotent."""

    __tablename__ = "executions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    execution_id: Mapped[str] = mapped_column(String(128), unique=True)
    client_order_id: Mapped[str] = mapped_column(
        ForeignKey("orders.client_order_id", ondelete="RESTRICT"), index=True
    )
    broker_order_id: Mapped[str | None] = mapped_column(String(64))
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN), index=True)
    side: Mapped[str] = mapped_column(String(4))
    qty: Mapped[Decimal]
    price: Mapped[Decimal]
    fee: Mapped[Decimal] = mapped_column(server_default="0")
    executed_at: Mapped[datetime]
    received_at: Mapped[datetime] = created_at()

    __table_args__ = (
        CheckConstraint(one_of("side", OrderSide), name="side_valid"),
        CheckConstraint(f"{num('qty')} > 0", name="qty_positive"),
        CheckConstraint(f"{num('price')} > 0", name="price_positive"),
        CheckConstraint(f"{num('fee')} >= 0", name="fee_nonnegative"),
    )


class Position(Base):
    """Current holding per strategy and symbol; ``qty`` is signed (negative is short)."""

    __tablename__ = "positions"

    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN), primary_key=True)
    qty: Mapped[Decimal]
    avg_price: Mapped[Decimal]
    realized_pnl: Mapped[Decimal] = mapped_column(server_default="0")
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint(f"{num('avg_price')} >= 0", name="avg_price_nonnegative"),
        CheckConstraint(f"{num('qty')} = 0 OR {num('avg_price')} > 0", name="open_position_has_price"),
    )


class Snapshot(Base):
    """Periodic copy of positions, open orders and P&L (reconciler, post-trade monitor)."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = mapped_column(index=True)
    kind: Mapped[str] = mapped_column(String(32))
    strategy_id: Mapped[str | None] = mapped_column(String(STRATEGY_LEN))
    nav: Mapped[Decimal | None]
    cash: Mapped[Decimal | None]
    pnl: Mapped[Decimal | None]
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        CheckConstraint(
            one_of("kind", ("positions", "open_orders", "pnl", "account", "reconcile")), name="kind_valid"
        ),
    )


class Event(Base):
    """The append-only journal: every signal, order transition, fill and correction, in order.

    Updates and deletes are refused by a database trigger (see the initial migration).
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = created_at()
    kind: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    strategy_id: Mapped[str | None] = mapped_column(String(STRATEGY_LEN))
    #: What the event is about (a client_order_id, a symbol, a run id), for lookups.
    correlation_id: Mapped[str | None] = mapped_column(String(CLIENT_ORDER_ID_LEN), index=True)
    payload: Mapped[dict[str, Any]]

    __table_args__ = (
        CheckConstraint("length(kind) > 0", name="kind_nonempty"),
        Index(None, "kind", "ts"),
    )


class AuditLog(Base):
    """Who did what and why: circuit trips, approvals, kill switch, promotions, manual orders.

    Append-only, like ``events``.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = created_at()
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(256))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)

    __table_args__ = (
        CheckConstraint("length(actor) > 0", name="actor_nonempty"),
        CheckConstraint("length(action) > 0", name="action_nonempty"),
    )


class RiskLimit(Base):
    """Pre-trade limits of one strategy, or of all (``strategy_id = '*'``). NULL means no limit."""

    __tablename__ = "risk_limits"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN), unique=True)
    max_order_notional: Mapped[Decimal | None]
    max_position_notional: Mapped[Decimal | None]
    max_gross_exposure: Mapped[Decimal | None]
    daily_loss_limit: Mapped[Decimal | None]
    #: Intraday drawdown (fraction of start-of-day equity) that trips the breaker.
    max_drawdown_pct: Mapped[Decimal | None]
    blacklist: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())
    updated_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        CheckConstraint("length(strategy_id) > 0", name="strategy_id_nonempty"),
        *(
            CheckConstraint(f"{col} IS NULL OR {num(col)} >= 0", name=f"{col}_nonnegative")
            for col in (
                "max_order_notional",
                "max_position_notional",
                "max_gross_exposure",
                "daily_loss_limit",
            )
        ),
        CheckConstraint(
            f"max_drawdown_pct IS NULL OR ({num('max_drawdown_pct')} > 0 AND {num('max_drawdown_pct')} <= 1)",
            name="max_drawdown_pct_fraction",
        ),
    )


class RiskDecision(Base):
    """The pre-trade risk verdict on one order, with the rule and the reason."""

    __tablename__ = "risk_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = created_at()
    client_order_id: Mapped[str] = mapped_column(
        ForeignKey("orders.client_order_id", ondelete="RESTRICT"), index=True
    )
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    approved: Mapped[bool] = mapped_column(Boolean)
    rule: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Universe(Base):
    """Point-in-time listing of a symbol: a backtest on date D sees only what was listed on D."""

    __tablename__ = "universe"

    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN), primary_key=True)
    start_date: Mapped[date] = mapped_column(Date, primary_key=True)
    end_date: Mapped[date | None] = mapped_column(Date)
    tradable: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    name: Mapped[str | None] = mapped_column(String(256))
    exchange: Mapped[str | None] = mapped_column(String(16))
    sector: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("end_date IS NULL OR end_date >= start_date", name="dates_ordered"),
        CheckConstraint("length(symbol) > 0", name="symbol_nonempty"),
    )


class Quarantine(Base):
    """A data row the quality gate refused, with the rule it broke; kept, never silently dropped."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[datetime] = created_at()
    symbol: Mapped[str | None] = mapped_column(String(SYMBOL_LEN), index=True)
    date: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]]

    __table_args__ = (
        CheckConstraint("length(rule) > 0", name="rule_nonempty"),
        CheckConstraint("length(reason) > 0", name="reason_nonempty"),
    )


class ModelRegistryEntry(Base):
    """A trained model version and its stage; at most one production version per model name."""

    __tablename__ = "model_registry"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    stage: Mapped[str] = mapped_column(String(16))
    artifact_uri: Mapped[str] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: Results of the leakage / validity checks; promotion is refused when one failed.
    checks: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_at()
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("model_name", "version"),
        CheckConstraint(one_of("stage", ModelStage), name="stage_valid"),
        CheckConstraint("length(model_name) > 0 AND length(version) > 0", name="name_version_nonempty"),
        CheckConstraint("length(artifact_uri) > 0", name="artifact_uri_nonempty"),
        CheckConstraint(
            "stage <> 'production' OR (approved_by IS NOT NULL AND approved_at IS NOT NULL)",
            name="production_is_approved",
        ),
        Index(
            "uq_model_registry_one_production",
            "model_name",
            unique=True,
            postgresql_where=text("stage = 'production'"),
            sqlite_where=text("stage = 'production'"),
        ),
    )


class Pnl(Base):
    """Daily P&L per strategy (``strategy_id = '*'`` for the whole account)."""

    __tablename__ = "pnl"

    trading_date: Mapped[date] = mapped_column(Date, primary_key=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN), primary_key=True)
    realized: Mapped[Decimal]
    unrealized: Mapped[Decimal]
    fees: Mapped[Decimal] = mapped_column(server_default="0")
    equity: Mapped[Decimal | None]
    gross_exposure: Mapped[Decimal | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now(), onupdate=func.now())

    __table_args__ = (
        CheckConstraint(f"{num('fees')} >= 0", name="fees_nonnegative"),
        CheckConstraint(
            f"gross_exposure IS NULL OR {num('gross_exposure')} >= 0", name="gross_exposure_nonneg"
        ),
    )


class TaxLot(Base):
    """An open (or closed) lot: what was bought (or shorted), when, at what cost."""

    __tablename__ = "tax_lots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN))
    symbol: Mapped[str] = mapped_column(String(SYMBOL_LEN))
    side: Mapped[str] = mapped_column(String(5))
    open_execution_id: Mapped[str] = mapped_column(
        ForeignKey("executions.execution_id", ondelete="RESTRICT"), unique=True
    )
    opened_at: Mapped[datetime]
    qty: Mapped[Decimal]
    remaining_qty: Mapped[Decimal]
    cost_price: Mapped[Decimal]
    closed_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(one_of("side", PositionSide), name="side_valid"),
        CheckConstraint(f"{num('qty')} > 0", name="qty_positive"),
        CheckConstraint(
            f"{num('remaining_qty')} >= 0 AND {num('remaining_qty')} <= {num('qty')}",
            name="remaining_in_range",
        ),
        CheckConstraint(f"{num('cost_price')} > 0", name="cost_price_positive"),
        CheckConstraint(
            f"({num('remaining_qty')} = 0) = (closed_at IS NOT NULL)", name="closed_iff_nothing_remains"
        ),
        Index(None, "strategy_id", "symbol", "opened_at"),
    )


class TaxLotClosure(Base):
    """The part of a lot one closing execution consumed, with its realized gain and holding period."""

    __tablename__ = "tax_lot_closures"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("tax_lots.id", ondelete="RESTRICT"), index=True)
    close_execution_id: Mapped[str] = mapped_column(
        ForeignKey("executions.execution_id", ondelete="RESTRICT"), index=True
    )
    closed_at: Mapped[datetime]
    qty: Mapped[Decimal]
    price: Mapped[Decimal]
    realized_pnl: Mapped[Decimal]
    holding_period: Mapped[str] = mapped_column(String(10))
    wash_sale: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        UniqueConstraint("lot_id", "close_execution_id"),
        CheckConstraint(f"{num('qty')} > 0", name="qty_positive"),
        CheckConstraint(f"{num('price')} > 0", name="price_positive"),
        CheckConstraint(one_of("holding_period", ("short_term", "long_term")), name="holding_period_valid"),
    )


class CircuitBreakerState(Base):
    """Breaker state when Redis is not configured (with Redis the keys ``cb:*`` hold it)."""

    __tablename__ = "circuit_breakers"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())
    approved_by: Mapped[str | None] = mapped_column(String(128))
    approved_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(one_of("state", ("OPEN", "TRIPPED")), name="state_valid"),
        CheckConstraint("state <> 'TRIPPED' OR reason IS NOT NULL", name="trip_has_reason"),
    )


class SignalRun(Base):
    """One run of the signal service: which model, which inputs, what scores and target weights."""

    __tablename__ = "signal_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(String(STRATEGY_LEN))
    trading_date: Mapped[date] = mapped_column(Date)
    model_name: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    inputs_hash: Mapped[str] = mapped_column(String(64))
    scores: Mapped[dict[str, Any]]
    weights: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        CheckConstraint("length(inputs_hash) > 0", name="inputs_hash_nonempty"),
        Index(None, "strategy_id", "trading_date"),
    )
