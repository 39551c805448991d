"""Comparing ExactDecimal columns in SQL: as numbers on both engines (on SQLite they are text)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.signal.service import held_symbols
from trader.store.models import Position
from trader.store.types import as_number

BOOKS = [
    ("a", "FLAT1", "0.0", "0"),  # closed by fractional fills: 10.5 bought, 10.5 sold
    ("a", "FLAT2", "0.000000000", "0"),
    ("a", "FLAT3", "-0", "0"),
    ("a", "LONG", "2.50", "10"),
    ("a", "TINY", "0.000001", "10"),
    ("a", "SHORT", "-0.5", "10"),
    ("b", "LONG", "1", "10"),
]


def _fill(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        for strategy, symbol, qty, price in BOOKS:
            session.add(
                Position(strategy_id=strategy, symbol=symbol, qty=Decimal(qty), avg_price=Decimal(price))
            )


def test_a_position_closed_by_fractional_fills_is_not_held(migrated_engine: Engine) -> None:
    _fill(migrated_engine)
    with Session(migrated_engine) as session:
        assert held_symbols(session, "a") == ["LONG", "TINY"]
        assert held_symbols(session, "b") == ["LONG"]


def test_as_number_compares_quantities_as_numbers(migrated_engine: Engine) -> None:
    _fill(migrated_engine)
    with Session(migrated_engine) as session:

        def symbols(condition: object) -> set[tuple[str, str]]:
            rows = session.execute(select(Position.strategy_id, Position.symbol).where(condition)).all()  # type: ignore[arg-type]
            return {(strategy, symbol) for strategy, symbol in rows}

        qty = as_number(Position.qty)
        assert symbols(qty != 0) == {("a", "LONG"), ("a", "TINY"), ("a", "SHORT"), ("b", "LONG")}
        assert symbols(qty < 0) == {("a", "SHORT")}
        assert symbols(qty == 0) == {("a", "FLAT1"), ("a", "FLAT2"), ("a", "FLAT3")}
        # Not only against zero: text would put "10" before "2.50".
        assert symbols(qty > Decimal("2")) == {("a", "LONG")}
