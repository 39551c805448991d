"""The intraday price path through a daily bar (pure)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from trader.paperbroker.prices import DayBar, asset_id, asset_key, bar_so_far, path_price, path_range

UP = DayBar(date(2024, 3, 5), Decimal("10"), Decimal("13"), Decimal("9"), Decimal("12"))
DOWN = DayBar(date(2024, 3, 5), Decimal("10"), Decimal("11"), Decimal("7"), Decimal("8"))


def test_an_up_day_walks_open_low_high_close() -> None:
    assert [path_price(UP, f) for f in (0, 1 / 3, 2 / 3, 1)] == [Decimal(v) for v in ("10", "9", "13", "12")]
    assert path_price(UP, 1 / 6) == Decimal("9.5000")


def test_a_down_day_walks_open_high_low_close() -> None:
    assert [path_price(DOWN, f) for f in (0, 1 / 3, 2 / 3, 1)] == [Decimal(v) for v in ("10", "11", "7", "8")]


def test_range_includes_the_knots_inside_the_stretch() -> None:
    assert path_range(UP, 0.0, 1.0) == (Decimal("9"), Decimal("13"))
    assert path_range(UP, 0.0, 0.1) == (path_price(UP, 0.1), Decimal("10"))
    assert path_range(DOWN, 0.5, 0.9) == (Decimal("7"), path_price(DOWN, 0.5))


prices = st.decimals(min_value=Decimal("1"), max_value=Decimal("1000"), places=2)


@given(prices, prices, prices, prices, st.floats(0, 1), st.floats(0, 1))
def test_the_path_never_leaves_the_bar_and_the_range_brackets_it(
    a: Decimal, b: Decimal, c: Decimal, d: Decimal, first: float, last: float
) -> None:
    low, high = min(a, b, c, d), max(a, b, c, d)
    bar = DayBar(date(2024, 1, 2), b, high, low, c)
    first, last = min(first, last), max(first, last)
    lowest, highest = path_range(bar, first, last)
    assert low <= lowest <= highest <= high
    for point in (first, (first + last) / 2, last):
        assert lowest <= path_price(bar, point) <= highest


def test_asset_ids_are_stable_uuids() -> None:
    assert asset_id("SYN001") == asset_id("SYN001") != asset_id("SYN002")
    assert len(asset_id("SYN001")) == 36


def test_a_bar_so_far_is_the_open_the_range_so_far_and_the_price_now() -> None:
    assert bar_so_far(UP, 1 / 6) == DayBar(
        UP.day, Decimal("10"), Decimal("10"), Decimal("9.5000"), Decimal("9.5000")
    )
    assert bar_so_far(UP, 0.5) == DayBar(
        UP.day, Decimal("10"), Decimal("11.0000"), Decimal("9"), Decimal("11.0000")
    )
    assert bar_so_far(UP, 1.0) == UP


def test_asset_keys_are_capital_symbols_or_lower_case_ids() -> None:
    assert asset_key(" syn001 ") == "SYN001"
    assert asset_key(asset_id("SYN001").upper()) == asset_id("SYN001")
