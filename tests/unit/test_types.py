"""Exact decimals and UTC datetimes at the database edge (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from trader.store.types import ExactDecimal, UTCDateTime, to_decimal

SQLITE = sqlite.dialect()
POSTGRES = postgresql.dialect()


@pytest.mark.parametrize("value", ["1.10", 3, Decimal("0.000000001"), "-12345678901234.123456789012"])
def test_decimals_are_accepted_exactly(value: object) -> None:
    column = ExactDecimal()
    stored = column.process_bind_param(value, SQLITE)
    assert column.process_result_value(stored, SQLITE) == Decimal(str(value))
    assert column.process_bind_param(value, POSTGRES) == Decimal(str(value))


def test_sqlite_gets_plain_decimal_text_without_exponent() -> None:
    assert ExactDecimal().process_bind_param(Decimal("1E-9"), SQLITE) == "0.000000001"


@pytest.mark.parametrize("value", [1.5, True])
def test_floats_and_bools_are_refused(value: object) -> None:
    with pytest.raises(TypeError, match="Decimal, int or str"):
        to_decimal(value)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "abc", ""])
def test_non_finite_or_garbage_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="decimal number"):
        to_decimal(value)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UTCDateTime().process_bind_param(datetime(2024, 3, 5, 15, 0), SQLITE)


def test_aware_datetime_is_stored_as_utc() -> None:
    new_york = timezone(timedelta(hours=-5))
    moment = datetime(2024, 3, 5, 10, 0, tzinfo=new_york)
    column = UTCDateTime()
    stored = column.process_bind_param(moment, SQLITE)
    assert stored == datetime(2024, 3, 5, 15, 0)
    restored = column.process_result_value(stored, SQLITE)
    assert restored == moment
    assert restored is not None and restored.tzinfo == UTC
    assert column.process_bind_param(moment, POSTGRES) == datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
