"""Helpers for the ledger tests: orders recorded as the gateway will, fills, and reading the books back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import Engine, select

from trader.domain.enums import OrderSide
from trader.execution.orders import OrderIntent, record_intent
from trader.portfolio.ledger import Fill, FillResult, apply_fill
from trader.store.db import session_factory, transaction
from trader.store.models import Execution, Order, Position, TaxLot, TaxLotClosure

D = Decimal

DAY = date(2024, 3, 5)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def at(hour: int, minute: int = 0, day: date = DAY) -> datetime:
    """A UTC time on ``day`` (14:30-21:00 UTC is the regular session)."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def new_order(
    engine: Engine,
    strategy: str,
    side: OrderSide,
    qty: str | None,
    *,
    symbol: str = "AAPL",
    day: date = DAY,
    sequence: int = 0,
) -> str:
    """Record an order (as the gateway does before sending) and return its client_order_id."""
    intent = OrderIntent(
        strategy_id=strategy,
        trading_date=day,
        symbol=symbol,
        side=side,
        qty=None if qty is None else D(qty),
        notional=D(1000) if qty is None else None,
        sequence=sequence,
    )
    with transaction(session_factory(engine)) as session:
        return record_intent(session, intent).order.client_order_id


def fill(
    coid: str,
    execution_id: str,
    side: OrderSide,
    qty: str,
    price: str,
    when: datetime,
    *,
    fee: str = "0",
    symbol: str = "AAPL",
    cumulative: str | None = None,
    average: str | None = None,
    catch_up: bool = False,
) -> Fill:
    return Fill(
        execution_id=execution_id,
        client_order_id=coid,
        symbol=symbol,
        side=side,
        qty=D(qty),
        price=D(price),
        executed_at=when,
        fee=D(fee),
        order_filled_qty=None if cumulative is None else D(cumulative),
        order_filled_avg_price=None if average is None else D(average),
        catch_up=catch_up,
    )


def apply(engine: Engine, f: Fill) -> FillResult:
    """Apply one fill in its own transaction, as the trade-update consumer does."""
    with transaction(session_factory(engine)) as session:
        return apply_fill(session, f)


@dataclass(frozen=True)
class Books:
    """Everything the ledger keeps for one (strategy, symbol), comparable between strategies."""

    position: tuple[D, D, D] | None
    lots: list[tuple[str, str, D, D, D, bool]]
    closures: list[tuple[str, str, D, D, D, str]]
    orders: list[tuple[D, D | None]]
    executions: int


def books(engine: Engine, strategy: str, symbol: str = "AAPL") -> Books:
    """The books of ``strategy``; execution ids lose a ``<strategy>:`` prefix so strategies compare."""

    def local(execution_id: str) -> str:
        return execution_id.removeprefix(f"{strategy}:")

    with session_factory(engine)() as session:
        pos = session.get(Position, (strategy, symbol))
        lots = session.execute(
            select(TaxLot).where(TaxLot.strategy_id == strategy, TaxLot.symbol == symbol)
        ).scalars()
        lot_rows = sorted(
            (
                local(lot.open_execution_id),
                lot.side,
                lot.qty,
                lot.remaining_qty,
                lot.cost_price,
                lot.closed_at is None,
            )
            for lot in lots
        )
        closures = session.execute(
            select(TaxLot.open_execution_id, TaxLotClosure)
            .join(TaxLot, TaxLot.id == TaxLotClosure.lot_id)
            .where(TaxLot.strategy_id == strategy, TaxLot.symbol == symbol)
        ).all()
        closure_rows = sorted(
            (local(opened), local(c.close_execution_id), c.qty, c.price, c.realized_pnl, c.holding_period)
            for opened, c in closures
        )
        orders = session.execute(
            select(Order.filled_qty, Order.filled_avg_price).where(
                Order.strategy_id == strategy, Order.symbol == symbol
            )
        ).all()
        executions = session.execute(
            select(Execution.id).where(Execution.strategy_id == strategy, Execution.symbol == symbol)
        ).all()
        return Books(
            position=None if pos is None else (pos.qty, pos.avg_price, pos.realized_pnl),
            lots=lot_rows,
            closures=closure_rows,
            orders=sorted(((q, p) for q, p in orders), key=lambda o: (o[0], o[1] or D(0))),
            executions=len(executions),
        )
