"""The allocator: target weights × equity → orders, on hand-computed examples."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.domain.enums import OrderSide
from trader.portfolio.allocator import (
    AllocationError,
    AllocationOptions,
    IntentReason,
    OrderIntent,
    SkipReason,
    allocate,
)

EQUITY = Decimal(100_000)


def _summary(orders: tuple[OrderIntent, ...]) -> list[tuple[str, str, Decimal]]:
    return [(o.symbol, o.side.value, o.qty) for o in orders]


def test_hand_computed_rebalance() -> None:
    # AAPL 0.5 × 100,000 / 187.30 = 266.95 → 266; holds 100 → buy 166.
    # MSFT 0.3 × 100,000 / 410.12 = 73.15 → 73; holds none → buy 73.
    # GOOG held but absent from the targets → closed (sell 5).
    result = allocate(
        {"AAPL": Decimal("0.5"), "MSFT": Decimal("0.3")},
        EQUITY,
        {"AAPL": Decimal(100), "GOOG": Decimal(5)},
        {"AAPL": Decimal("187.30"), "MSFT": Decimal("410.12"), "GOOG": Decimal("140.00")},
    )
    assert _summary(result.orders) == [
        ("GOOG", "sell", Decimal(5)),
        ("AAPL", "buy", Decimal(166)),
        ("MSFT", "buy", Decimal(73)),
    ]
    goog, aapl, msft = result.orders
    assert (goog.reason, goog.notional, goog.target_qty) == (
        IntentReason.CLOSE,
        Decimal("700.00"),
        Decimal(0),
    )
    assert (aapl.reason, aapl.notional, aapl.position_after) == (
        IntentReason.INCREASE,
        Decimal("31091.80"),
        Decimal(266),
    )
    assert (msft.reason, msft.notional, msft.reference_price) == (
        IntentReason.OPEN,
        Decimal("29938.76"),
        Decimal("410.12"),
    )
    assert result.target_qty == {"AAPL": Decimal(266), "MSFT": Decimal(73), "GOOG": Decimal(0)}
    assert result.skipped == ()


def test_rounds_toward_zero_and_keeps_exact_quotients() -> None:
    # 10,000 / 33 = 303.03 → 303 (not 304); 10,000 / 25 = 400 exactly (not 399).
    result = allocate(
        {"A": Decimal("0.1"), "B": Decimal("0.1")}, EQUITY, {}, {"A": Decimal(33), "B": Decimal(25)}
    )
    assert result.target_qty == {"A": Decimal(303), "B": Decimal(400)}
    assert all(o.notional <= Decimal(10_000) for o in result.orders)


def test_reduce_sells_down_to_the_target() -> None:
    # 0.2 × 100,000 / 50 = 400; holds 1,000 → sell 600.
    result = allocate({"X": Decimal("0.2")}, EQUITY, {"X": Decimal(1000)}, {"X": Decimal(50)})
    assert _summary(result.orders) == [("X", "sell", Decimal(600))]
    assert result.orders[0].reason == IntentReason.REDUCE


def test_no_order_when_already_at_target() -> None:
    result = allocate({"X": Decimal("0.2")}, EQUITY, {"X": Decimal(400)}, {"X": Decimal(50)})
    assert result.orders == ()
    assert result.skipped == ()


def test_below_min_notional_is_skipped_and_reported_but_a_close_still_goes() -> None:
    # X: target 400, holds 398 → buy 2 × 50 = 100 < 500 → skipped. Y: close 3 × 20 = 60 → sent anyway.
    opts = AllocationOptions(min_order_notional=Decimal(500))
    result = allocate(
        {"X": Decimal("0.2"), "Y": Decimal(0)},
        EQUITY,
        {"X": Decimal(398), "Y": Decimal(3)},
        {"X": Decimal(50), "Y": Decimal(20)},
        opts,
    )
    assert _summary(result.orders) == [("Y", "sell", Decimal(3))]
    assert [(s.symbol, s.reason) for s in result.skipped] == [("X", SkipReason.BELOW_MIN_NOTIONAL)]
    assert "100.00" in result.skipped[0].detail and "500.00" in result.skipped[0].detail


def test_sells_come_before_buys_then_by_symbol() -> None:
    prices = {s: Decimal(10) for s in "ABCDE"}
    result = allocate(
        {"A": Decimal("0.1"), "B": Decimal("0.1"), "E": Decimal("0.1")},
        EQUITY,
        {"B": Decimal(5000), "C": Decimal(10), "D": Decimal(20)},
        prices,
    )
    assert [(o.symbol, o.side) for o in result.orders] == [
        ("B", OrderSide.SELL),
        ("C", OrderSide.SELL),
        ("D", OrderSide.SELL),
        ("A", OrderSide.BUY),
        ("E", OrderSide.BUY),
    ]


def test_same_inputs_in_another_order_give_the_same_orders() -> None:
    weights = {"Z": Decimal("0.3"), "A": Decimal("0.2"), "M": Decimal("0.1")}
    prices = {"Z": Decimal("12.5"), "A": Decimal("99.99"), "M": Decimal("7"), "Q": Decimal(3)}
    positions = {"Q": Decimal(100), "A": Decimal(5)}
    first = allocate(weights, EQUITY, positions, prices)
    second = allocate(dict(reversed(weights.items())), EQUITY, dict(reversed(positions.items())), prices)
    assert first == second


def test_fractional_mode_keeps_nine_decimals_rounded_down() -> None:
    # 0.1 × 100,000 / 7 = 1428.571428571428... → 1428.571428571.
    result = allocate(
        {"X": Decimal("0.1")}, EQUITY, {}, {"X": Decimal(7)}, AllocationOptions(fractional=True)
    )
    (order,) = result.orders
    assert order.qty == Decimal("1428.571428571")
    assert order.notional == Decimal("9999.999999997") <= Decimal(10_000)


def test_fractional_mode_trades_fractional_positions_exactly() -> None:
    result = allocate(
        {"X": Decimal("0.1")},
        EQUITY,
        {"X": Decimal("1500.25")},
        {"X": Decimal(8)},
        AllocationOptions(fractional=True),
    )
    assert _summary(result.orders) == [("X", "sell", Decimal("250.25"))]


def test_whole_share_mode_with_a_fractional_position_never_ends_above_target() -> None:
    prices = {"G": Decimal(10), "S": Decimal(10), "C": Decimal(10)}
    # G: target 100, holds 97.5 → buy 2 (97.5 + 3 would exceed). S: target 100, holds 102.5 → sell 3.
    # C: target 0, holds 4.25 → sell exactly 4.25 so nothing is left.
    result = allocate(
        {"G": Decimal("0.01"), "S": Decimal("0.01")},
        EQUITY,
        {"G": Decimal("97.5"), "S": Decimal("102.5"), "C": Decimal("4.25")},
        prices,
    )
    assert _summary(result.orders) == [
        ("C", "sell", Decimal("4.25")),
        ("S", "sell", Decimal(3)),
        ("G", "buy", Decimal(2)),
    ]
    assert [o.position_after for o in result.orders] == [Decimal(0), Decimal("99.5"), Decimal("99.5")]


def test_missing_price_is_reported_never_guessed() -> None:
    result = allocate(
        {"A": Decimal("0.1"), "NOPX": Decimal("0.1")},
        EQUITY,
        {"HELD": Decimal(10)},
        {"A": Decimal(10)},
    )
    assert _summary(result.orders) == [("A", "buy", Decimal(1000))]
    assert [(s.symbol, s.reason) for s in result.skipped] == [
        ("HELD", SkipReason.NO_PRICE),
        ("NOPX", SkipReason.NO_PRICE),
    ]
    assert "HELD" not in result.target_qty


def test_cash_buffer_leaves_part_of_equity_uninvested() -> None:
    # 98,000 investable × 0.5 / 10 = 4,900.
    result = allocate(
        {"X": Decimal("0.5")}, EQUITY, {}, {"X": Decimal(10)}, AllocationOptions(cash_buffer=Decimal("0.02"))
    )
    assert result.target_qty == {"X": Decimal(4900)}


def test_positions_absent_from_targets_are_kept_when_close_absent_is_off() -> None:
    opts = AllocationOptions(close_absent=False)
    result = allocate(
        {"X": Decimal("0.1")}, EQUITY, {"KEEP": Decimal(50)}, {"X": Decimal(10), "KEEP": Decimal(10)}, opts
    )
    assert _summary(result.orders) == [("X", "buy", Decimal(1000))]


def test_a_zero_weight_closes_even_when_close_absent_is_off() -> None:
    opts = AllocationOptions(close_absent=False)
    result = allocate({"X": Decimal(0)}, EQUITY, {"X": Decimal(50)}, {"X": Decimal(10)}, opts)
    assert _summary(result.orders) == [("X", "sell", Decimal(50))]


def test_side_change_is_two_orders_close_first() -> None:
    # Long 100 → target -0.1 × 100,000 / 20 = -500: sell 100 (close), then sell 500 (open short).
    opts = AllocationOptions(allow_short=True)
    result = allocate({"X": Decimal("-0.1")}, EQUITY, {"X": Decimal(100)}, {"X": Decimal(20)}, opts)
    assert [(o.side, o.qty, o.reason, o.position_after) for o in result.orders] == [
        (OrderSide.SELL, Decimal(100), IntentReason.CLOSE, Decimal(0)),
        (OrderSide.SELL, Decimal(500), IntentReason.OPEN, Decimal(-500)),
    ]


def test_short_to_long_cover_then_buy() -> None:
    result = allocate({"X": Decimal("0.1")}, EQUITY, {"X": Decimal(-30)}, {"X": Decimal(20)})
    assert [(o.side, o.qty, o.reason) for o in result.orders] == [
        (OrderSide.BUY, Decimal(30), IntentReason.CLOSE),
        (OrderSide.BUY, Decimal(500), IntentReason.OPEN),
    ]


def test_short_targets_stay_whole_in_fractional_mode() -> None:
    opts = AllocationOptions(allow_short=True, fractional=True)
    result = allocate({"X": Decimal("-0.1")}, EQUITY, {}, {"X": Decimal(7)}, opts)
    assert result.target_qty == {"X": Decimal(-1428)}


def test_one_third_weights_are_accepted_despite_rounding() -> None:
    third = Decimal(1) / Decimal(3)
    result = allocate(
        {"A": third, "B": third, "C": third},
        EQUITY,
        {},
        {"A": Decimal(10), "B": Decimal(20), "C": Decimal(30)},
    )
    assert result.target_qty == {"A": Decimal(3333), "B": Decimal(1666), "C": Decimal(1111)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": {"A": Decimal("0.7"), "B": Decimal("0.4")}}, "sum of weights is 1.1"),
        ({"weights": {"A": Decimal("-0.1")}}, "weights['A'] = -0.1 is negative but shorting is off"),
        ({"weights": {"A": Decimal("NaN")}}, "weights['A'] must be a finite number"),
        ({"weights": {"A": 0.1}}, "weights['A'] must be a Decimal"),
        ({"weights": {"": Decimal("0.1")}}, "empty or non-text symbol"),
        ({"prices": {"A": Decimal("-5")}}, "prices['A'] = -5: a price must be positive"),
        ({"prices": {"A": Decimal("Infinity")}}, "prices['A'] must be a finite number"),
        ({"equity": Decimal(0)}, "equity must be a positive number"),
        ({"equity": Decimal("NaN")}, "equity must be a finite number"),
        ({"positions": {"A": Decimal("sNaN")}}, "positions['A'] must be a finite number"),
    ],
)
def test_invalid_inputs_are_refused_with_the_field_named(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "weights": {"A": Decimal("0.1")},
        "equity": EQUITY,
        "positions": {},
        "prices": {"A": Decimal(10)},
        **kwargs,
    }
    with pytest.raises(AllocationError) as caught:
        allocate(**args)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_gross_weight_with_shorts_counts_absolute_values() -> None:
    opts = AllocationOptions(allow_short=True)
    with pytest.raises(AllocationError, match=r"sum of \|weights\| is 1.2"):
        allocate(
            {"A": Decimal("0.6"), "B": Decimal("-0.6")}, EQUITY, {}, {"A": Decimal(1), "B": Decimal(1)}, opts
        )
    ok = allocate(
        {"A": Decimal("0.5"), "B": Decimal("-0.5")}, EQUITY, {}, {"A": Decimal(1), "B": Decimal(1)}, opts
    )
    assert _summary(ok.orders) == [("B", "sell", Decimal(50_000)), ("A", "buy", Decimal(50_000))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cash_buffer": Decimal(1)}, "cash_buffer must be a fraction in [0, 1)"),
        ({"min_order_notional": Decimal(-1)}, "min_order_notional must be ≥ 0"),
        ({"max_gross_weight": Decimal(0)}, "max_gross_weight must be > 0"),
        ({"cash_buffer": 0.02}, "cash_buffer must be a Decimal"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(AllocationError) as caught:
        AllocationOptions(**kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)
