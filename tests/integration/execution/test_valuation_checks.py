"""The execution service values each order at its highest expected fill price, and a batch with one
unusable reference price refuses that order only."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.execution.gateway_support import settings
from trader.domain.enums import OrderSide, OrderStatus, OrderType
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.risk.checks import RiskOptions
from trader.risk.snapshot import PortfolioSnapshot
from trader.store.models import RiskDecision

D = Decimal
DAY = date(2024, 3, 5)
FLAT = PortfolioSnapshot(D(1_000_000), D(1_000_000), D(1_000_000))


def _service(engine: Engine, **options: bool) -> ExecutionService:
    # MAX_ORDER_NOTIONAL 10,000 (the default); DRY_RUN on.
    return ExecutionService(
        engine, None, settings(dry_run=True), source="test", risk_options=RiskOptions(**options)
    )


def test_a_buy_stop_above_the_market_is_valued_at_its_stop(migrated_engine: Engine) -> None:
    stop = OrderIntent(
        "v", DAY, "AAA", OrderSide.BUY, qty=D(52), order_type=OrderType.STOP, stop_price=D(250)
    )
    (outcome,) = _service(migrated_engine).submit_batch([stop], FLAT, {"AAA": D(190)}.get)
    # 52 x 190 = 9,880 would pass; it fills at 250 or more: 13,000 > 10,000.
    assert outcome.status is OrderStatus.RISK_REJECTED
    with Session(migrated_engine) as session:
        decision = session.scalars(select(RiskDecision)).one()
    assert decision.details["price"] == "250"


def test_a_sell_limit_far_below_the_market_is_valued_at_the_market(migrated_engine: Engine) -> None:
    short = OrderIntent(
        "v", DAY, "AAA", OrderSide.SELL, qty=D(5000), order_type=OrderType.LIMIT, limit_price=D("1.00")
    )
    (outcome,) = _service(migrated_engine, allow_short=True).submit_batch([short], FLAT, {"AAA": D(190)}.get)
    assert outcome.status is OrderStatus.RISK_REJECTED  # 5,000 x 190, not 5,000 x 1.00
    assert "notional" in (outcome.reason or "")


def test_a_non_finite_reference_price_refuses_that_order_and_the_rest_go_on(migrated_engine: Engine) -> None:
    prices = {"GOOD": D(10), "NAN": D("NaN"), "INF": D("Infinity")}
    batch = [OrderIntent("v", DAY, symbol, OrderSide.BUY, qty=D(3)) for symbol in ("NAN", "GOOD", "INF")]
    nan, good, inf = _service(migrated_engine).submit_batch(batch, FLAT, prices.get)
    assert good.status is OrderStatus.DRY_RUN
    for refused in (nan, inf):
        assert refused.status is OrderStatus.RISK_REJECTED
        assert "no usable reference price" in (refused.reason or "")
