"""Initial schema: every table of the platform, append-only journals and the latest-production view.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import trader.store.types

APPEND_ONLY_TABLES = ("events", "audit_log")

# The latest approved production version of each model; portable (no DISTINCT ON) so SQLite has it too.
LATEST_PROD_VIEW = """
CREATE VIEW v_latest_prod AS
SELECT model_name, version, artifact_uri, mlflow_run_id, approved_by, approved_at FROM (
    SELECT model_name, version, artifact_uri, mlflow_run_id, approved_by, approved_at,
           ROW_NUMBER() OVER (PARTITION BY model_name ORDER BY approved_at DESC, id DESC) AS rank
    FROM model_registry WHERE stage = 'production'
) ranked WHERE rank = 1
"""


def _create_append_only_guards() -> None:
    """Refuse UPDATE and DELETE on the journals, whoever connects: history is never rewritten."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION trader_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
            "USING ERRCODE = 'restrict_violation'; END $$"
        )
        for table in APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION trader_refuse_change()"
            )
        return
    for table in APPEND_ONLY_TABLES:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )


def _drop_append_only_guards() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS trader_refuse_change()")
        return
    for table in APPEND_ONLY_TABLES:
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")


revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "ts", trader.store.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "details",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.CheckConstraint("length(action) > 0", name=op.f("ck_audit_log_action_nonempty")),
        sa.CheckConstraint("length(actor) > 0", name=op.f("ck_audit_log_actor_nonempty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)

    op.create_table(
        "circuit_breakers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "changed_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("approved_at", trader.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state <> 'TRIPPED' OR reason IS NOT NULL", name=op.f("ck_circuit_breakers_trip_has_reason")
        ),
        sa.CheckConstraint("state IN ('OPEN', 'TRIPPED')", name=op.f("ck_circuit_breakers_state_valid")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_circuit_breakers")),
    )
    op.create_table(
        "events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "ts", trader.store.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.CheckConstraint("length(kind) > 0", name=op.f("ck_events_kind_nonempty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_correlation_id"), ["correlation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_kind_ts"), ["kind", "ts"], unique=False)

    op.create_table(
        "model_registry",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column(
            "metrics",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column(
            "checks",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("approved_by", sa.String(length=128), nullable=True),
        sa.Column("approved_at", trader.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "stage <> 'production' OR (approved_by IS NOT NULL AND approved_at IS NOT NULL)",
            name=op.f("ck_model_registry_production_is_approved"),
        ),
        sa.CheckConstraint(
            "stage IN ('staging', 'production', 'archived')", name=op.f("ck_model_registry_stage_valid")
        ),
        sa.CheckConstraint("length(artifact_uri) > 0", name=op.f("ck_model_registry_artifact_uri_nonempty")),
        sa.CheckConstraint(
            "length(model_name) > 0 AND length(version) > 0",
            name=op.f("ck_model_registry_name_version_nonempty"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_registry")),
        sa.UniqueConstraint("model_name", "version", name=op.f("uq_model_registry_model_name_version")),
    )
    with op.batch_alter_table("model_registry", schema=None) as batch_op:
        batch_op.create_index(
            "uq_model_registry_one_production",
            ["model_name"],
            unique=True,
            postgresql_where=sa.text("stage = 'production'"),
            sqlite_where=sa.text("stage = 'production'"),
        )

    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("intent", sa.String(length=32), server_default="rebalance", nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("qty", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("notional", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("order_type", sa.String(length=16), server_default="market", nullable=False),
        sa.Column("limit_price", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("stop_price", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("time_in_force", sa.String(length=8), server_default="day", nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=True),
        sa.Column("parent_id", sa.String(length=128), nullable=True),
        sa.Column("filled_qty", trader.store.types.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("filled_avg_price", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("reject_reason", sa.Text(), nullable=True),
        sa.Column("submitted_at", trader.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint(
            "order_type IN ('market', 'limit', 'stop', 'stop_limit', 'trailing_stop')",
            name=op.f("ck_orders_order_type_valid"),
        ),
        sa.CheckConstraint(
            "order_type NOT IN ('limit', 'stop_limit') OR limit_price IS NOT NULL",
            name=op.f("ck_orders_limit_price_required"),
        ),
        sa.CheckConstraint(
            "order_type NOT IN ('stop', 'stop_limit') OR stop_price IS NOT NULL",
            name=op.f("ck_orders_stop_price_required"),
        ),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_orders_side_valid")),
        sa.CheckConstraint(
            "status IN ('pending_submit', 'dry_run', 'risk_rejected', 'submit_failed', 'accepted', 'pending_new', 'accepted_for_bidding', 'new', 'partially_filled', 'filled', 'done_for_day', 'canceled', 'expired', 'replaced', 'pending_cancel', 'pending_replace', 'pending_review', 'stopped', 'rejected', 'suspended', 'calculated', 'held')",
            name=op.f("ck_orders_status_valid"),
        ),
        sa.CheckConstraint(
            "time_in_force IN ('day', 'gtc', 'opg', 'cls', 'ioc', 'fok')",
            name=op.f("ck_orders_time_in_force_valid"),
        ),
        sa.CheckConstraint(
            "(qty IS NOT NULL AND notional IS NULL AND CAST(qty AS NUMERIC) > 0) OR (qty IS NULL AND notional IS NOT NULL AND CAST(notional AS NUMERIC) > 0)",
            name=op.f("ck_orders_qty_xor_notional_positive"),
        ),
        sa.CheckConstraint("CAST(filled_qty AS NUMERIC) >= 0", name=op.f("ck_orders_filled_qty_nonnegative")),
        sa.CheckConstraint(
            "filled_avg_price IS NULL OR CAST(filled_avg_price AS NUMERIC) > 0",
            name=op.f("ck_orders_filled_avg_price_positive"),
        ),
        sa.CheckConstraint("length(client_order_id) > 0", name=op.f("ck_orders_client_order_id_nonempty")),
        sa.CheckConstraint(
            "limit_price IS NULL OR CAST(limit_price AS NUMERIC) > 0",
            name=op.f("ck_orders_limit_price_positive"),
        ),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> client_order_id", name=op.f("ck_orders_not_own_parent")
        ),
        sa.CheckConstraint(
            "qty IS NULL OR CAST(filled_qty AS NUMERIC) <= CAST(qty AS NUMERIC)",
            name=op.f("ck_orders_filled_qty_le_qty"),
        ),
        sa.CheckConstraint(
            "stop_price IS NULL OR CAST(stop_price AS NUMERIC) > 0",
            name=op.f("ck_orders_stop_price_positive"),
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["orders.client_order_id"],
            name=op.f("fk_orders_parent_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("client_order_id", name=op.f("pk_orders")),
        sa.UniqueConstraint("broker_order_id", name=op.f("uq_orders_broker_order_id")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_orders_strategy_id_trading_date"), ["strategy_id", "trading_date"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_orders_symbol"), ["symbol"], unique=False)

    op.create_table(
        "pnl",
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("realized", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("unrealized", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("fees", trader.store.types.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("equity", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("gross_exposure", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column(
            "updated_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint("CAST(fees AS NUMERIC) >= 0", name=op.f("ck_pnl_fees_nonnegative")),
        sa.CheckConstraint(
            "gross_exposure IS NULL OR CAST(gross_exposure AS NUMERIC) >= 0",
            name=op.f("ck_pnl_gross_exposure_nonneg"),
        ),
        sa.PrimaryKeyConstraint("trading_date", "strategy_id", name=op.f("pk_pnl")),
    )
    op.create_table(
        "positions",
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("qty", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("avg_price", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("realized_pnl", trader.store.types.ExactDecimal(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint(
            "CAST(avg_price AS NUMERIC) >= 0", name=op.f("ck_positions_avg_price_nonnegative")
        ),
        sa.CheckConstraint(
            "CAST(qty AS NUMERIC) = 0 OR CAST(avg_price AS NUMERIC) > 0",
            name=op.f("ck_positions_open_position_has_price"),
        ),
        sa.PrimaryKeyConstraint("strategy_id", "symbol", name=op.f("pk_positions")),
    )
    op.create_table(
        "quarantine",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "ts", trader.store.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("symbol", sa.String(length=32), nullable=True),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.CheckConstraint("length(reason) > 0", name=op.f("ck_quarantine_reason_nonempty")),
        sa.CheckConstraint("length(rule) > 0", name=op.f("ck_quarantine_rule_nonempty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantine_symbol"), ["symbol"], unique=False)

    op.create_table(
        "risk_limits",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("max_order_notional", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("max_position_notional", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("max_gross_exposure", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("daily_loss_limit", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("max_drawdown_pct", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column(
            "blacklist",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column(
            "updated_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.Column("updated_by", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "daily_loss_limit IS NULL OR CAST(daily_loss_limit AS NUMERIC) >= 0",
            name=op.f("ck_risk_limits_daily_loss_limit_nonnegative"),
        ),
        sa.CheckConstraint("length(strategy_id) > 0", name=op.f("ck_risk_limits_strategy_id_nonempty")),
        sa.CheckConstraint(
            "max_drawdown_pct IS NULL OR (CAST(max_drawdown_pct AS NUMERIC) > 0 AND CAST(max_drawdown_pct AS NUMERIC) <= 1)",
            name=op.f("ck_risk_limits_max_drawdown_pct_fraction"),
        ),
        sa.CheckConstraint(
            "max_gross_exposure IS NULL OR CAST(max_gross_exposure AS NUMERIC) >= 0",
            name=op.f("ck_risk_limits_max_gross_exposure_nonnegative"),
        ),
        sa.CheckConstraint(
            "max_order_notional IS NULL OR CAST(max_order_notional AS NUMERIC) >= 0",
            name=op.f("ck_risk_limits_max_order_notional_nonnegative"),
        ),
        sa.CheckConstraint(
            "max_position_notional IS NULL OR CAST(max_position_notional AS NUMERIC) >= 0",
            name=op.f("ck_risk_limits_max_position_notional_nonnegative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_limits")),
        sa.UniqueConstraint("strategy_id", name=op.f("uq_risk_limits_strategy_id")),
    )
    op.create_table(
        "signal_runs",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("trading_date", sa.Date(), nullable=False),
        sa.Column("model_name", sa.String(length=128), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("inputs_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "scores",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column(
            "weights",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint("length(inputs_hash) > 0", name=op.f("ck_signal_runs_inputs_hash_nonempty")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signal_runs")),
    )
    with op.batch_alter_table("signal_runs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_signal_runs_strategy_id_trading_date"),
            ["strategy_id", "trading_date"],
            unique=False,
        )

    op.create_table(
        "snapshots",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("ts", trader.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=True),
        sa.Column("nav", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("cash", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column("pnl", trader.store.types.ExactDecimal(), nullable=True),
        sa.Column(
            "details",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.CheckConstraint(
            "kind IN ('positions', 'open_orders', 'pnl', 'account', 'reconcile')",
            name=op.f("ck_snapshots_kind_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshots")),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshots_ts"), ["ts"], unique=False)

    op.create_table(
        "universe",
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("tradable", sa.Boolean(), server_default=sa.text("(true)"), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=True),
        sa.Column("exchange", sa.String(length=16), nullable=True),
        sa.Column("sector", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            "end_date IS NULL OR end_date >= start_date", name=op.f("ck_universe_dates_ordered")
        ),
        sa.CheckConstraint("length(symbol) > 0", name=op.f("ck_universe_symbol_nonempty")),
        sa.PrimaryKeyConstraint("symbol", "start_date", name=op.f("pk_universe")),
    )
    op.create_table(
        "executions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("execution_id", sa.String(length=128), nullable=False),
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("broker_order_id", sa.String(length=64), nullable=True),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("qty", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("price", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("fee", trader.store.types.ExactDecimal(), server_default="0", nullable=False),
        sa.Column("executed_at", trader.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "received_at",
            trader.store.types.UTCDateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_executions_side_valid")),
        sa.CheckConstraint("CAST(fee AS NUMERIC) >= 0", name=op.f("ck_executions_fee_nonnegative")),
        sa.CheckConstraint("CAST(price AS NUMERIC) > 0", name=op.f("ck_executions_price_positive")),
        sa.CheckConstraint("CAST(qty AS NUMERIC) > 0", name=op.f("ck_executions_qty_positive")),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name=op.f("fk_executions_client_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executions")),
        sa.UniqueConstraint("execution_id", name=op.f("uq_executions_execution_id")),
    )
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_executions_client_order_id"), ["client_order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_executions_symbol"), ["symbol"], unique=False)

    op.create_table(
        "risk_decisions",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column(
            "ts", trader.store.types.UTCDateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("client_order_id", sa.String(length=128), nullable=False),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("approved", sa.Boolean(), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "details",
            sa.JSON(none_as_null=True).with_variant(
                postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["client_order_id"],
            ["orders.client_order_id"],
            name=op.f("fk_risk_decisions_client_order_id_orders"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_decisions")),
    )
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_risk_decisions_client_order_id"), ["client_order_id"], unique=False
        )

    op.create_table(
        "tax_lots",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("strategy_id", sa.String(length=64), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("side", sa.String(length=5), nullable=False),
        sa.Column("open_execution_id", sa.String(length=128), nullable=False),
        sa.Column("opened_at", trader.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("qty", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("remaining_qty", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("cost_price", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("closed_at", trader.store.types.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("side IN ('long', 'short')", name=op.f("ck_tax_lots_side_valid")),
        sa.CheckConstraint(
            "(CAST(remaining_qty AS NUMERIC) = 0) = (closed_at IS NOT NULL)",
            name=op.f("ck_tax_lots_closed_iff_nothing_remains"),
        ),
        sa.CheckConstraint("CAST(cost_price AS NUMERIC) > 0", name=op.f("ck_tax_lots_cost_price_positive")),
        sa.CheckConstraint("CAST(qty AS NUMERIC) > 0", name=op.f("ck_tax_lots_qty_positive")),
        sa.CheckConstraint(
            "CAST(remaining_qty AS NUMERIC) >= 0 AND CAST(remaining_qty AS NUMERIC) <= CAST(qty AS NUMERIC)",
            name=op.f("ck_tax_lots_remaining_in_range"),
        ),
        sa.ForeignKeyConstraint(
            ["open_execution_id"],
            ["executions.execution_id"],
            name=op.f("fk_tax_lots_open_execution_id_executions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_lots")),
        sa.UniqueConstraint("open_execution_id", name=op.f("uq_tax_lots_open_execution_id")),
    )
    with op.batch_alter_table("tax_lots", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tax_lots_strategy_id_symbol_opened_at"),
            ["strategy_id", "symbol", "opened_at"],
            unique=False,
        )

    op.create_table(
        "tax_lot_closures",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("lot_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("close_execution_id", sa.String(length=128), nullable=False),
        sa.Column("closed_at", trader.store.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("qty", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("price", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("realized_pnl", trader.store.types.ExactDecimal(), nullable=False),
        sa.Column("holding_period", sa.String(length=10), nullable=False),
        sa.Column("wash_sale", sa.Boolean(), server_default=sa.text("(false)"), nullable=False),
        sa.CheckConstraint(
            "holding_period IN ('short_term', 'long_term')",
            name=op.f("ck_tax_lot_closures_holding_period_valid"),
        ),
        sa.CheckConstraint("CAST(price AS NUMERIC) > 0", name=op.f("ck_tax_lot_closures_price_positive")),
        sa.CheckConstraint("CAST(qty AS NUMERIC) > 0", name=op.f("ck_tax_lot_closures_qty_positive")),
        sa.ForeignKeyConstraint(
            ["close_execution_id"],
            ["executions.execution_id"],
            name=op.f("fk_tax_lot_closures_close_execution_id_executions"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"], ["tax_lots.id"], name=op.f("fk_tax_lot_closures_lot_id_tax_lots"), ondelete="RESTRICT"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tax_lot_closures")),
        sa.UniqueConstraint(
            "lot_id", "close_execution_id", name=op.f("uq_tax_lot_closures_lot_id_close_execution_id")
        ),
    )
    with op.batch_alter_table("tax_lot_closures", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_tax_lot_closures_close_execution_id"), ["close_execution_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_tax_lot_closures_lot_id"), ["lot_id"], unique=False)

    _create_append_only_guards()
    op.execute(LATEST_PROD_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_latest_prod")
    _drop_append_only_guards()
    with op.batch_alter_table("tax_lot_closures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tax_lot_closures_lot_id"))
        batch_op.drop_index(batch_op.f("ix_tax_lot_closures_close_execution_id"))

    op.drop_table("tax_lot_closures")
    with op.batch_alter_table("tax_lots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tax_lots_strategy_id_symbol_opened_at"))

    op.drop_table("tax_lots")
    with op.batch_alter_table("risk_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_risk_decisions_client_order_id"))

    op.drop_table("risk_decisions")
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_executions_symbol"))
        batch_op.drop_index(batch_op.f("ix_executions_client_order_id"))

    op.drop_table("executions")
    op.drop_table("universe")
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_ts"))

    op.drop_table("snapshots")
    with op.batch_alter_table("signal_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signal_runs_strategy_id_trading_date"))

    op.drop_table("signal_runs")
    op.drop_table("risk_limits")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_symbol"))

    op.drop_table("quarantine")
    op.drop_table("positions")
    op.drop_table("pnl")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_symbol"))
        batch_op.drop_index(batch_op.f("ix_orders_strategy_id_trading_date"))
        batch_op.drop_index(batch_op.f("ix_orders_status"))
        batch_op.drop_index(batch_op.f("ix_orders_parent_id"))

    op.drop_table("orders")
    with op.batch_alter_table("model_registry", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_model_registry_one_production",
            postgresql_where=sa.text("stage = 'production'"),
            sqlite_where=sa.text("stage = 'production'"),
        )

    op.drop_table("model_registry")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_kind_ts"))
        batch_op.drop_index(batch_op.f("ix_events_correlation_id"))

    op.drop_table("events")
    op.drop_table("circuit_breakers")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
