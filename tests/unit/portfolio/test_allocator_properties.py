"""Allocator invariants on random portfolios (hypothesis): targets are never exceeded, and applying the
orders lands within one share of the exact target."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from trader.domain.enums import OrderSide
from trader.portfolio.allocator import AllocationOptions, allocate

SYMBOLS = ("AAA", "BBB", "CCC", "DDD", "EEE", "FFF")

prices = st.integers(min_value=50, max_value=500_000).map(lambda cents: Decimal(cents) / 100)
equities = st.integers(min_value=1_000_00, max_value=50_000_000_00).map(lambda cents: Decimal(cents) / 100)
whole_qty = st.integers(min_value=-200, max_value=5_000).map(Decimal)
fractional_qty = st.integers(min_value=-200_000_000_000, max_value=5_000_000_000_000).map(
    lambda n: Decimal(n).scaleb(-9)
)


@st.composite
def portfolios(
    draw: st.DrawFn,
) -> tuple[dict[str, Decimal], Decimal, dict[str, Decimal], dict[str, Decimal], bool]:
    fractional = draw(st.booleans())
    names = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=len(SYMBOLS), unique=True))
    raw = {name: draw(st.integers(min_value=0, max_value=1000)) for name in names}
    # Normalise to a total of at most 1 (sometimes less: part of equity stays in cash).
    total = max(sum(raw.values()), draw(st.integers(min_value=1, max_value=2000)))
    weights = {name: Decimal(n) / Decimal(total) for name, n in raw.items()}
    held = draw(st.lists(st.sampled_from(SYMBOLS), max_size=len(SYMBOLS), unique=True))
    qty = fractional_qty if fractional else whole_qty
    positions = {name: draw(qty) for name in held}
    price_of = {name: draw(prices) for name in SYMBOLS}
    return weights, draw(equities), positions, price_of, fractional


@settings(max_examples=300, deadline=None)
@given(portfolios())
def test_orders_land_on_the_targets_without_exceeding_them(
    case: tuple[dict[str, Decimal], Decimal, dict[str, Decimal], dict[str, Decimal], bool],
) -> None:
    weights, equity, positions, price_of, fractional = case
    result = allocate(weights, equity, positions, price_of, AllocationOptions(fractional=fractional))

    after = dict(positions)
    for order in result.orders:
        assert order.qty > 0
        assert order.notional == order.qty * order.reference_price
        after[order.symbol] = after.get(order.symbol, Decimal(0)) + order.signed_qty

    sides = [order.side for order in result.orders]
    assert sides == sorted(sides, key=lambda side: side != OrderSide.SELL), "sells must come first"
    assert result.skipped == ()

    step = Decimal("1e-9") if fractional else Decimal(1)
    for symbol in SYMBOLS:
        weight = weights.get(symbol, Decimal(0))
        held = after.get(symbol, Decimal(0))
        exact = weight * equity / price_of[symbol]
        assert held >= 0, f"{symbol} ends short in a long-only allocation"
        assert held * price_of[symbol] <= weight * equity, f"{symbol} exceeds its target weight"
        assert exact - held < step, f"{symbol} ends {exact - held} shares below its target"
