"""Column types that keep money exact and time in UTC on both PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Dialect, Numeric, String, cast
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator, TypeEngine


class ExactDecimal(TypeDecorator[Decimal]):
    """A ``Decimal`` that round-trips exactly.

    PostgreSQL stores it as unconstrained ``NUMERIC`` (any precision, never rounded). SQLite has no
    decimal type and would turn ``NUMERIC`` into a binary float, so there the canonical decimal text is
    stored instead. Check constraints compare with ``CAST(col AS NUMERIC)`` so one constraint text
    works on both engines; on SQLite that comparison is a double's (about 15 significant digits), which
    is why the application validates quantities before writing them.

    Floats are refused on purpose: a float has already lost the exact value it was meant to carry.
    """

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = to_decimal(value)
        if dialect.name == "sqlite":
            return format(number, "f")
        return number

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(str(value)) if not isinstance(value, Decimal) else value


def as_number(column: InstrumentedAttribute[Decimal]) -> ColumnElement[float]:
    """An :class:`ExactDecimal` column for comparing in SQL: as a number on both engines.

    On SQLite the column holds text, and ``qty > 0`` would compare text: ``'0.0' > '0'`` is true, so a
    position closed by fractional fills would count as held. ``as_number(Position.qty) > 0`` compares
    ``CAST(qty AS NUMERIC)``, like the check constraints (a double's precision on SQLite, which is
    exact for comparing with zero).
    """
    return cast(column, Numeric(asdecimal=False))


def to_decimal(value: Any) -> Decimal:
    """Convert ``Decimal``, ``int`` or a decimal string to a finite ``Decimal``; refuse everything else."""
    if isinstance(value, bool | float):
        raise TypeError(f"money and quantities must be Decimal, int or str, not {type(value).__name__}")
    try:
        number = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite decimal number")
    return number


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime``; naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: attach a timezone (UTC)")
        as_utc = value.astimezone(UTC)
        # SQLite stores text without an offset; everything in it is UTC by this rule.
        return as_utc.replace(tzinfo=None) if dialect.name == "sqlite" else as_utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
