"""Each pre-trade rule on a hand-made case, passing and failing, with its reason text."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.domain.enums import OrderSide
from trader.risk.checks import (
    OrderContext,
    ProposedOrder,
    RiskOptions,
    check_blacklist,
    check_buying_power,
    check_daily_loss_limit,
    check_market_hours,
    check_max_gross_exposure,
    check_max_order_notional,
    check_max_position_notional,
    check_position_flip,
    check_short_selling,
    check_strategy_enabled,
)
from trader.risk.limits import EffectiveLimits, Limit, RiskError

STRATEGY = "alpha_baseline"
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def _limits(**kwargs: object) -> EffectiveLimits:
    return EffectiveLimits(STRATEGY, **kwargs)  # type: ignore[arg-type]


def _ctx(
    side: OrderSide,
    qty: int | str,
    price: int | str = 100,
    *,
    position: int = 0,
    gross: int | None = None,
    buying_power: int = 1_000_000,
    day_pnl: int = 0,
    market_open: bool = True,
    limits: EffectiveLimits | None = None,
    options: RiskOptions | None = None,
) -> OrderContext:
    """One order on symbol AAPL; the position (if any) is marked at the order's price."""
    mark = Decimal(price) if position else None
    held = abs(Decimal(position)) * Decimal(price)
    return OrderContext(
        order=ProposedOrder("AAPL", side, Decimal(qty), Decimal(price)),
        limits=limits or _limits(),
        options=options or RiskOptions(),
        position_before=Decimal(position),
        mark_before=mark,
        gross_before=held if gross is None else Decimal(gross),
        buying_power=Decimal(buying_power),
        day_pnl=Decimal(day_pnl),
        market_open=market_open,
    )


def test_max_order_notional_names_the_limit_and_the_numbers() -> None:
    limits = _limits(max_order_notional=Limit("max_order_notional", Decimal(10_000), f"strategy {STRATEGY}"))
    refused = check_max_order_notional(_ctx(BUY, 125, limits=limits))
    assert not refused.approved
    assert refused.rule == "max_order_notional"
    assert (
        refused.reason == "order notional 12,500.00 > max_order_notional 10,000.00 (strategy alpha_baseline)"
    )
    assert refused.details["limit"] == "10000" and refused.details["value"] == "12500"
    assert check_max_order_notional(_ctx(BUY, 100, limits=limits)).approved  # exactly at the limit
    # It applies to exits too (a big exit is split into smaller orders).
    assert not check_max_order_notional(_ctx(SELL, 125, position=200, limits=limits)).approved


def test_max_position_notional_after_the_order() -> None:
    limits = _limits(max_position_notional=Limit("max_position_notional", Decimal(15_000), "settings"))
    refused = check_max_position_notional(_ctx(BUY, 100, position=100, limits=limits))
    assert not refused.approved
    assert refused.reason == (
        "AAPL position notional after the order 20,000.00 > max_position_notional 15,000.00 (settings)"
    )
    assert check_max_position_notional(_ctx(BUY, 50, position=100, limits=limits)).approved
    # Already over the limit: a sell that shrinks the position still passes.
    assert check_max_position_notional(_ctx(SELL, 10, position=300, limits=limits)).approved


def test_max_gross_exposure_after_the_order() -> None:
    limits = _limits(max_gross_exposure=Limit("max_gross_exposure", Decimal(100_000), "global"))
    refused = check_max_gross_exposure(_ctx(BUY, 250, gross=80_000, limits=limits))
    assert not refused.approved
    assert (
        refused.reason == "gross exposure after the order 105,000.00 > max_gross_exposure 100,000.00 (global)"
    )
    assert check_max_gross_exposure(_ctx(BUY, 200, gross=80_000, limits=limits)).approved
    assert check_max_gross_exposure(_ctx(SELL, 10, position=50, gross=200_000, limits=limits)).approved


def test_gross_exposure_re_marks_the_symbol_at_the_order_price() -> None:
    # Held 100 marked at 90 (9,000 of 50,000 gross); buying 10 more at 100 → 50,000 − 9,000 + 11,000.
    ctx = OrderContext(
        order=ProposedOrder("AAPL", BUY, Decimal(10), Decimal(100)),
        limits=_limits(),
        options=RiskOptions(),
        position_before=Decimal(100),
        mark_before=Decimal(90),
        gross_before=Decimal(50_000),
        buying_power=Decimal(10**6),
        day_pnl=Decimal(0),
        market_open=True,
    )
    assert ctx.gross_after == Decimal(52_000)


def test_daily_loss_limit_blocks_new_risk_but_lets_exits_out() -> None:
    limits = _limits(daily_loss_limit=Limit("daily_loss_limit", Decimal(2_000), "settings"))
    refused = check_daily_loss_limit(_ctx(BUY, 10, day_pnl=-2_500, limits=limits))
    assert not refused.approved
    assert refused.reason == (
        "today's P&L -2,500.00 < −daily_loss_limit 2,000.00 (settings); "
        "only orders that reduce a position pass"
    )
    assert check_daily_loss_limit(_ctx(SELL, 10, position=10, day_pnl=-2_500, limits=limits)).approved
    assert check_daily_loss_limit(
        _ctx(BUY, 10, position=-10, day_pnl=-2_500, limits=limits)
    ).approved  # cover
    assert check_daily_loss_limit(_ctx(BUY, 10, day_pnl=-2_000, limits=limits)).approved  # at the limit


def test_blacklist_blocks_buys_but_allows_selling_an_existing_position() -> None:
    limits = _limits(blacklist={"AAPL": f"strategy {STRATEGY}"})
    refused = check_blacklist(_ctx(BUY, 1, limits=limits))
    assert not refused.approved
    assert refused.reason == (
        "AAPL is blacklisted (strategy alpha_baseline); only orders that reduce the position pass"
    )
    assert check_blacklist(_ctx(SELL, 40, position=40, limits=limits)).approved
    # Selling more than is held would open a short in a blacklisted name: refused.
    assert not check_blacklist(_ctx(SELL, 41, position=40, limits=limits)).approved
    assert check_blacklist(_ctx(BUY, 1, limits=_limits(blacklist={"MSFT": "global"}))).approved


def test_disabled_strategy_only_reduces() -> None:
    limits = _limits(disabled_by="global")
    refused = check_strategy_enabled(_ctx(BUY, 1, limits=limits))
    assert not refused.approved
    assert refused.reason == (
        "trading is disabled for strategy alpha_baseline (enabled = false, global); "
        "only orders that reduce a position pass"
    )
    assert check_strategy_enabled(_ctx(SELL, 1, position=5, limits=limits)).approved
    assert check_strategy_enabled(_ctx(BUY, 1)).approved


def test_position_flip_needs_allow_flip() -> None:
    refused = check_position_flip(_ctx(SELL, 15, position=10))
    assert not refused.approved
    assert refused.reason == (
        "sell 15 AAPL would take the position from 10 to -5, through zero; close it first (allow_flip is off)"
    )
    assert check_position_flip(_ctx(SELL, 10, position=10)).approved  # to exactly zero: a close
    assert check_position_flip(_ctx(SELL, 15, position=10, options=RiskOptions(allow_flip=True))).approved


def test_short_selling_needs_allow_short_but_covering_never_does() -> None:
    refused = check_short_selling(_ctx(SELL, 5))
    assert not refused.approved
    assert refused.reason == "sell 5 AAPL would leave a short position of -5; shorting is off (allow_short)"
    assert not check_short_selling(_ctx(SELL, 5, position=-5)).approved  # adding to a short
    assert check_short_selling(_ctx(BUY, 3, position=-5)).approved  # covering
    assert check_short_selling(_ctx(SELL, 5, options=RiskOptions(allow_short=True))).approved


def test_buying_power_for_orders_that_add() -> None:
    refused = check_buying_power(_ctx(BUY, 60, buying_power=5_000))
    assert not refused.approved
    assert refused.reason == "order notional 6,000.00 > buying power left 5,000.00"
    assert check_buying_power(_ctx(BUY, 50, buying_power=5_000)).approved
    assert check_buying_power(_ctx(SELL, 60, position=60, buying_power=0)).approved
    # A short sale needs buying power too.
    assert not check_buying_power(
        _ctx(SELL, 60, buying_power=5_000, options=RiskOptions(allow_short=True))
    ).approved


def test_market_hours() -> None:
    refused = check_market_hours(_ctx(BUY, 1, market_open=False))
    assert not refused.approved
    assert (
        refused.reason
        == "market is closed (broker clock) and queue_outside_hours is off; send during market hours"
    )
    assert not check_market_hours(_ctx(SELL, 1, position=1, market_open=False)).approved
    assert check_market_hours(
        _ctx(BUY, 1, market_open=False, options=RiskOptions(queue_outside_hours=True))
    ).approved
    assert check_market_hours(_ctx(BUY, 1)).approved


def test_risk_reducing_notion() -> None:
    assert _ctx(SELL, 5, position=10).risk_reducing
    assert _ctx(SELL, 10, position=10).risk_reducing
    assert _ctx(BUY, 10, position=-10).risk_reducing
    assert not _ctx(SELL, 11, position=10).risk_reducing  # flips
    assert not _ctx(BUY, 1, position=10).risk_reducing
    assert not _ctx(SELL, 1).risk_reducing


def test_decision_details_are_json_ready_strings() -> None:
    details = check_buying_power(_ctx(BUY, "1.5", "10.25")).details
    assert details == {
        "strategy_id": STRATEGY,
        "symbol": "AAPL",
        "side": "buy",
        "qty": "1.5",
        "price": "10.25",
        "notional": "15.375",
        "position_before": "0",
        "position_after": "1.5",
        "risk_reducing": False,
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("AAPL", BUY, Decimal(0), Decimal(1)), "order qty (AAPL) must be positive"),
        (("AAPL", BUY, Decimal(1), Decimal(-1)), "order price (AAPL) must be positive"),
        (("AAPL", BUY, Decimal("NaN"), Decimal(1)), "order qty (AAPL) must be a finite number"),
        (("", BUY, Decimal(1), Decimal(1)), "order symbol must be a non-empty string"),
    ],
)
def test_invalid_orders_are_refused(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(RiskError) as caught:
        ProposedOrder(*args)  # type: ignore[arg-type]
    assert message in str(caught.value)
