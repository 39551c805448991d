"""Risk limits and decisions in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from trader.config import Settings
from trader.domain.enums import OrderSide, OrderStatus
from trader.risk import (
    Holding,
    Limit,
    PortfolioSnapshot,
    ProposedOrder,
    RiskError,
    RiskLimits,
    check_orders,
    combine_limits,
    delete_limits,
    list_limits,
    load_limits,
    record_decisions,
    resolve_limits,
    upsert_limits,
)
from trader.store.db import session_factory, transaction
from trader.store.models import Order
from trader.store.models import RiskDecision as RiskDecisionRow

T0 = datetime(2024, 3, 1, 15, 30, tzinfo=UTC)
NO_LIMITS = combine_limits("alpha_baseline", None, None, None)


def test_limits_round_trip_exactly(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    strategy = RiskLimits(
        "alpha_baseline",
        max_order_notional=Decimal("12345.678901"),
        max_position_notional=Decimal(25_000),
        daily_loss_limit=Decimal("0.01"),
        max_drawdown_pct=Decimal("0.05"),
        blacklist=frozenset({"GME", "BRK.B"}),
        enabled=False,
    )
    with transaction(factory) as session:
        assert load_limits(session, "alpha_baseline") is None
        upsert_limits(session, strategy, updated_by="ops")
        upsert_limits(session, RiskLimits("*", max_gross_exposure=Decimal(50_000)))
    with transaction(factory) as session:
        assert load_limits(session, "alpha_baseline") == strategy
        assert [row.strategy_id for row in list_limits(session)] == ["*", "alpha_baseline"]


def test_upsert_replaces_the_row(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        upsert_limits(
            session, RiskLimits("momentum", max_order_notional=Decimal(1_000), blacklist=frozenset({"X"}))
        )
    with transaction(factory) as session:
        upsert_limits(
            session, RiskLimits("momentum", max_gross_exposure=Decimal(9_000)), updated_by="risk-desk"
        )
    with transaction(factory) as session:
        assert load_limits(session, "momentum") == RiskLimits("momentum", max_gross_exposure=Decimal(9_000))
        assert len(list_limits(session)) == 1
        assert delete_limits(session, "momentum") is True
        assert delete_limits(session, "momentum") is False
        assert load_limits(session, "momentum") is None


def test_resolve_limits_combines_rows_and_settings(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        upsert_limits(
            session,
            RiskLimits("alpha_baseline", max_order_notional=Decimal(5_000), blacklist=frozenset({"GME"})),
        )
        upsert_limits(
            session, RiskLimits("*", max_order_notional=Decimal(8_000), max_gross_exposure=Decimal(0))
        )
    with transaction(factory) as session:
        limits = resolve_limits(session, "alpha_baseline", Settings())
        other = resolve_limits(session, "momentum", Settings())
    assert limits.max_order_notional == Limit("max_order_notional", Decimal(5_000), "strategy alpha_baseline")
    assert limits.max_position_notional == Limit("max_position_notional", Decimal(25_000), "settings")
    assert limits.max_gross_exposure is None
    assert dict(limits.blacklist) == {"GME": "strategy alpha_baseline"}
    assert other.max_order_notional == Limit("max_order_notional", Decimal(8_000), "global")


def test_upsert_validates_before_writing(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    with pytest.raises(RiskError, match="must be ≥ 0"):
        RiskLimits("alpha_baseline", max_order_notional=Decimal(-5))
    with transaction(factory) as session, pytest.raises(RiskError, match="needs a RiskLimits"):
        upsert_limits(session, {"strategy_id": "x"})  # type: ignore[arg-type]


def _order_row(
    client_order_id: str, symbol: str, side: OrderSide, qty: Decimal, status: OrderStatus
) -> Order:
    return Order(
        client_order_id=client_order_id,
        strategy_id="alpha_baseline",
        trading_date=date(2024, 3, 1),
        symbol=symbol,
        side=side.value,
        qty=qty,
        status=status.value,
    )


def test_decisions_are_recorded_after_their_orders(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    snapshot = PortfolioSnapshot(
        equity=Decimal(100_000),
        cash=Decimal(100_000),
        buying_power=Decimal(100_000),
        positions={"GME": Holding(Decimal(10), Decimal(20))},
    )
    orders = [
        ProposedOrder(
            "GME", OrderSide.SELL, Decimal(10), Decimal(20), client_order_id="ab-20240301-gme-sell"
        ),
        ProposedOrder(
            "AAPL", OrderSide.BUY, Decimal(125), Decimal(100), client_order_id="ab-20240301-aapl-buy"
        ),
    ]
    with transaction(factory) as session:
        limits = resolve_limits(session, "alpha_baseline", Settings())
        verdicts = check_orders(orders, snapshot, limits)
        session.add_all(
            [
                _order_row(
                    "ab-20240301-gme-sell", "GME", OrderSide.SELL, Decimal(10), OrderStatus.PENDING_SUBMIT
                ),
                _order_row(
                    "ab-20240301-aapl-buy", "AAPL", OrderSide.BUY, Decimal(125), OrderStatus.RISK_REJECTED
                ),
            ]
        )
        session.flush()
        assert record_decisions(session, verdicts, at=T0) == 2
    with transaction(factory) as session:
        rows = session.scalars(select(RiskDecisionRow).order_by(RiskDecisionRow.id)).all()
        got = [(r.client_order_id, r.symbol, r.approved, r.rule, r.ts) for r in rows]
        assert got == [
            ("ab-20240301-gme-sell", "GME", True, "all_rules", T0),
            ("ab-20240301-aapl-buy", "AAPL", False, "max_order_notional", T0),
        ]
        assert rows[1].reason == "order notional 12,500.00 > max_order_notional 10,000.00 (settings)"
        assert rows[1].details["limit"] == "10000" and rows[1].details["notional"] == "12500"
        assert rows[0].strategy_id == "alpha_baseline" and rows[0].details["risk_reducing"] is True


def test_decision_needs_its_order_row_and_id(migrated_engine: Engine) -> None:
    factory = session_factory(migrated_engine)
    snapshot = PortfolioSnapshot(equity=Decimal(1_000), cash=Decimal(1_000), buying_power=Decimal(1_000))
    no_id = check_orders([ProposedOrder("AAPL", OrderSide.BUY, Decimal(1), Decimal(10))], snapshot, NO_LIMITS)
    with transaction(factory) as session, pytest.raises(RiskError, match="has no client_order_id"):
        record_decisions(session, no_id)
    unknown = check_orders(
        [ProposedOrder("AAPL", OrderSide.BUY, Decimal(1), Decimal(10), client_order_id="never-written")],
        snapshot,
        NO_LIMITS,
    )
    with pytest.raises(IntegrityError), transaction(factory) as session:
        record_decisions(session, unknown)
    with transaction(factory) as session:
        assert session.scalars(select(RiskDecisionRow)).all() == []
