"""The risk engine on batches: projection of earlier approvals, first refusal wins, exits always pass."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from trader.broker.base import Account, Clock, Position
from trader.config import Settings
from trader.domain.enums import OrderSide, PositionSide
from trader.portfolio.allocator import allocate
from trader.risk import (
    RULES,
    Holding,
    PortfolioSnapshot,
    ProposedOrder,
    RiskEngine,
    RiskError,
    RiskLimits,
    RiskOptions,
    check_orders,
    combine_limits,
)
from trader.risk.limits import EffectiveLimits, Limit

BUY, SELL = OrderSide.BUY, OrderSide.SELL
NOW = datetime(2024, 3, 1, 15, 0, tzinfo=UTC)


def _snapshot(
    positions: dict[str, tuple[int, int]] | None = None,
    *,
    buying_power: int = 1_000_000,
    day_pnl: int = 0,
    market_open: bool = True,
) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        equity=Decimal(100_000),
        cash=Decimal(100_000),
        buying_power=Decimal(buying_power),
        positions={s: Holding(Decimal(q), Decimal(p)) for s, (q, p) in (positions or {}).items()},
        day_pnl=Decimal(day_pnl),
        market_open=market_open,
        as_of=NOW,
    )


def _limits(**values: int) -> EffectiveLimits:
    """Limits from a strategy row (everything else unlimited)."""
    return combine_limits(
        "alpha_baseline",
        RiskLimits("alpha_baseline", **{k: Decimal(v) for k, v in values.items()}),
        None,
        None,
    )


def _order(symbol: str, side: OrderSide, qty: int, price: int = 100) -> ProposedOrder:
    return ProposedOrder(symbol, side, Decimal(qty), Decimal(price))


def test_second_order_sees_the_first_gross_exposure() -> None:
    # 80,000 held; cap 100,000; two buys of 15,000: each fits alone, not together.
    snapshot = _snapshot({"SPY": (800, 100)})
    orders = [_order("AAPL", BUY, 150), _order("MSFT", BUY, 150), _order("NVDA", BUY, 50)]
    verdicts = RiskEngine(_limits(max_gross_exposure=100_000)).check(orders, snapshot)
    assert [v.approved for v in verdicts] == [True, False, True]
    assert verdicts[1].decision.rule == "max_gross_exposure"
    assert verdicts[1].decision.reason == (
        "gross exposure after the order 110,000.00 > max_gross_exposure 100,000.00 (strategy alpha_baseline)"
    )
    # The refused order consumed nothing: 80,000 + 15,000 + 5,000 is exactly the cap and passes.
    assert verdicts[2].decision.details["gross_after"] == "100000"
    for order in orders[1:]:
        alone = RiskEngine(_limits(max_gross_exposure=100_000)).check([order], snapshot)
        assert alone[0].approved


def test_second_order_in_the_same_symbol_sees_the_first_position() -> None:
    verdicts = check_orders(
        [_order("AAPL", BUY, 80), _order("AAPL", BUY, 80)], _snapshot(), _limits(max_position_notional=15_000)
    )
    assert [v.approved for v in verdicts] == [True, False]
    assert "AAPL position notional after the order 16,000.00" in verdicts[1].decision.reason


def test_buying_power_is_spent_by_approved_orders_and_not_returned_by_sells() -> None:
    snapshot = _snapshot({"SPY": (100, 100)}, buying_power=20_000)
    orders = [_order("SPY", SELL, 100), _order("A", BUY, 80), _order("B", BUY, 80), _order("C", BUY, 80)]
    verdicts = check_orders(orders, snapshot, _limits())
    assert [v.approved for v in verdicts] == [True, True, True, False]
    assert verdicts[3].decision.reason == "order notional 8,000.00 > buying power left 4,000.00"


def test_exits_pass_while_the_daily_loss_limit_is_breached() -> None:
    snapshot = _snapshot({"AAPL": (50, 100), "TSLA": (-20, 100)}, day_pnl=-5_000)
    orders = [_order("AAPL", SELL, 50), _order("TSLA", BUY, 20), _order("MSFT", BUY, 1)]
    verdicts = check_orders(orders, snapshot, _limits(daily_loss_limit=2_000))
    assert [v.approved for v in verdicts] == [True, True, False]
    assert verdicts[2].decision.rule == "daily_loss_limit"
    assert verdicts[0].decision.reason.endswith("; risk-reducing")


def test_blacklisted_position_can_be_sold_but_not_bought() -> None:
    limits = combine_limits(
        "alpha_baseline", RiskLimits("alpha_baseline", blacklist=frozenset({"GME"})), None, None
    )
    snapshot = _snapshot({"GME": (30, 20)})
    verdicts = check_orders([_order("GME", BUY, 1, 20), _order("GME", SELL, 30, 20)], snapshot, limits)
    assert [(v.approved, v.decision.rule) for v in verdicts] == [(False, "blacklist"), (True, "all_rules")]


def test_first_failing_rule_wins() -> None:
    limits = combine_limits(
        "alpha_baseline",
        RiskLimits("alpha_baseline", max_order_notional=Decimal(1_000), blacklist=frozenset({"AAPL"})),
        None,
        None,
    )
    (verdict,) = check_orders([_order("AAPL", BUY, 100)], _snapshot(market_open=False), limits)
    assert verdict.decision.rule == "blacklist"  # also too big and outside hours, but blacklist comes first
    (verdict,) = check_orders([_order("MSFT", BUY, 100)], _snapshot(market_open=False), limits)
    assert verdict.decision.rule == "max_order_notional"


def test_rule_order_is_the_documented_one() -> None:
    assert [rule.__name__.removeprefix("check_") for rule in RULES] == [
        "strategy_enabled",
        "blacklist",
        "position_flip",
        "short_selling",
        "max_order_notional",
        "max_position_notional",
        "max_gross_exposure",
        "daily_loss_limit",
        "buying_power",
        "market_hours",
    ]


def test_approved_decision_explains_the_projection() -> None:
    (verdict,) = check_orders([_order("AAPL", BUY, 10)], _snapshot({"SPY": (100, 50)}), _limits())
    assert verdict.approved and verdict.strategy_id == "alpha_baseline"
    assert verdict.decision.rule == "all_rules"
    assert verdict.decision.reason == (
        "passed 10 rules: order notional 1,000.00, AAPL position after 1,000.00, "
        "gross exposure after 6,000.00"
    )
    assert verdict.decision.details["buying_power"] == "1000000"


def test_flip_allowed_with_shorting_consumes_buying_power() -> None:
    options = RiskOptions(allow_flip=True, allow_short=True)
    snapshot = _snapshot({"AAPL": (10, 100)}, buying_power=1_000)
    (verdict,) = RiskEngine(_limits(), options).check([_order("AAPL", SELL, 30)], snapshot)
    assert (verdict.approved, verdict.decision.rule) == (False, "buying_power")


def test_settings_limits_apply_when_there_are_no_rows() -> None:
    limits = combine_limits("alpha_baseline", None, None, Settings())
    (verdict,) = check_orders([_order("AAPL", BUY, 125)], _snapshot(), limits)
    assert verdict.decision.reason == "order notional 12,500.00 > max_order_notional 10,000.00 (settings)"


def test_allocator_orders_go_through_the_engine() -> None:
    allocation = allocate(
        {"AAPL": Decimal("0.2"), "MSFT": Decimal("0.2")},
        Decimal(100_000),
        {"GME": Decimal(30)},
        {"AAPL": Decimal(100), "MSFT": Decimal(400), "GME": Decimal(20)},
    )
    orders = [ProposedOrder.from_intent(intent, f"cid-{intent.symbol}") for intent in allocation.orders]
    limits = _limits(max_order_notional=15_000)
    verdicts = check_orders(orders, _snapshot({"GME": (30, 20)}), limits)
    assert [(v.order.symbol, v.order.client_order_id, v.approved) for v in verdicts] == [
        ("GME", "cid-GME", True),
        ("AAPL", "cid-AAPL", False),  # 200 × 100 = 20,000 > 15,000
        ("MSFT", "cid-MSFT", False),  # 50 × 400 = 20,000 > 15,000
    ]


def test_snapshot_from_broker() -> None:
    account = Account(
        id="a",
        account_number="PA1",
        status="ACTIVE",
        currency="USD",
        cash=Decimal("50000"),
        equity=Decimal("98000"),
        buying_power=Decimal("150000"),
        last_equity=Decimal("100000"),
    )
    positions = [
        Position(
            "aapl",
            "id1",
            PositionSide.LONG,
            Decimal(100),
            Decimal(150),
            Decimal(15000),
            current_price=Decimal(160),
        ),
        Position(
            "TSLA",
            "id2",
            PositionSide.SHORT,
            Decimal(-10),
            Decimal(200),
            Decimal(-2000),
            market_value=Decimal(-2100),
        ),
        Position("OLD", "id3", PositionSide.LONG, Decimal(5), Decimal(30), Decimal(150)),
    ]
    clock = Clock(timestamp=NOW, is_open=False, next_open=NOW, next_close=NOW)
    snapshot = PortfolioSnapshot.from_broker(account, positions, clock)
    assert snapshot.day_pnl == Decimal(-2000)
    assert snapshot.market_open is False and snapshot.as_of == NOW
    assert snapshot.positions == {
        "AAPL": Holding(Decimal(100), Decimal(160)),
        "TSLA": Holding(Decimal(-10), Decimal(210)),
        "OLD": Holding(Decimal(5), Decimal(30)),
    }
    assert snapshot.gross_exposure == Decimal(16000 + 2100 + 150)
    no_last = Account(
        id="a",
        account_number="1",
        status="ACTIVE",
        currency="USD",
        cash=Decimal(1),
        equity=Decimal(1),
        buying_power=Decimal(1),
    )
    with pytest.raises(RiskError, match="no last_equity; pass day_pnl"):
        PortfolioSnapshot.from_broker(no_last, [], clock)
    assert PortfolioSnapshot.from_broker(no_last, [], clock, day_pnl=Decimal(-3)).day_pnl == Decimal(-3)


def test_snapshot_validation() -> None:
    with pytest.raises(RiskError, match="equity must be a finite number"):
        PortfolioSnapshot(equity=Decimal("NaN"), cash=Decimal(0), buying_power=Decimal(0))
    with pytest.raises(RiskError, match="holding price must be positive"):
        Holding(Decimal(1), Decimal(0))
    with pytest.raises(RiskError, match="is naive"):
        PortfolioSnapshot(
            equity=Decimal(1), cash=Decimal(0), buying_power=Decimal(0), as_of=datetime(2024, 1, 1)
        )


def test_no_limit_means_the_rule_passes() -> None:
    limits = EffectiveLimits(
        "alpha_baseline", max_order_notional=Limit("max_order_notional", Decimal(1), "global")
    )
    (verdict,) = check_orders([_order("AAPL", BUY, 10_000)], _snapshot(), EffectiveLimits("alpha_baseline"))
    assert verdict.approved
    (verdict,) = check_orders([_order("AAPL", BUY, 1)], _snapshot(), limits)
    assert not verdict.approved
