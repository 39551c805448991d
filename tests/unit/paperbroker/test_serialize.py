"""Alpaca's number formats (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.paperbroker.serialize import money, text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("-0.004"), "0.00"),
        (Decimal("-0.006"), "-0.01"),
        (Decimal("0"), "0.00"),
        (Decimal("-0"), "0.00"),
        (Decimal("1234.5"), "1234.50"),
        (Decimal("-12.346"), "-12.35"),
    ],
)
def test_money_is_to_the_cent_without_a_negative_zero(value: Decimal, shown: str) -> None:
    assert money(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"),
    [(Decimal("-0E-10"), "0"), (Decimal("-0.0"), "0"), (Decimal("10.500"), "10.5"), (Decimal("-3"), "-3")],
)
def test_decimal_text_has_no_exponent_trailing_zeros_or_negative_zero(value: Decimal, shown: str) -> None:
    assert text(value) == shown
