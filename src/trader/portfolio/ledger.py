"""The fill ledger: executions → order fill totals → positions → realized P&L → tax lots, exactly once.

:func:`apply_fill` applies one broker execution inside the caller's transaction (one use case, one
transaction: ``trader.store.db.transaction``):

1. the execution row goes into ``executions``, whose unique ``execution_id`` makes a repeat a no-op
   (``applied=False``), even from two processes at the same moment;
2. the order's ``filled_qty``/``filled_avg_price`` are recomputed from *all* its executions (a sum,
   never an increment, so order of arrival cannot corrupt them);
3. the position of (strategy, symbol), its realized P&L and its FIFO tax lots are brought to what the
   executions give when applied in execution-time order (``executed_at``, then ``execution_id``). A
   fill newer than everything applied is added incrementally; a fill older than one already applied
   (the stream reordered them, or a dropped event was replayed later) makes the ledger replay that
   position from its executions. Either way the result is the same for any arrival order;
4. ``events`` gets a ``fill.applied`` entry.

Positions use the average-cost method, as the broker reports them: buying into a long (or selling
into a short) moves the average price; reducing realizes ``(price − avg) × qty`` (long) or
``(avg − price) × qty`` (short); crossing zero closes the old side and opens the other at the fill
price. Every fee is realized when it is paid, so ``realized_pnl`` is net of fees and average prices
are pure trade prices (comparable with the broker's ``avg_entry_price``). Tax lots are FIFO, at the
fill price, with gross gains per closure; a long lot held more than one year (New York dates) closes
``long_term``, everything else — short sales included — ``short_term``. Wash sales are not detected.

Alpaca's fill events carry the order's cumulative ``filled_qty``/``filled_avg_price``; a fill rebuilt
by the stream's REST catch-up (no ``execution_id``) carries only those. Such a *catch-up* fill stands
for "everything up to this cumulative quantity": the ledger applies only the part its executions of
that order do not already cover, at the price the cumulative averages imply, and afterwards treats a
late real event that the catch-up already covered as ``covered`` (not applied).

Money and quantities are ``Decimal`` throughout, computed in a fixed 34-digit context.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext
from enum import StrEnum
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from trader.broker.base import TradeUpdate
from trader.domain.enums import OrderSide, PositionSide
from trader.errors import TraderError
from trader.execution.orders import UnknownOrderError
from trader.execution.sql import insert_if_absent, lock_position, upsert
from trader.store.models import ALL_STRATEGIES, Event, Execution, Order, Pnl, Position, TaxLot, TaxLotClosure

#: The exchange's time zone: trading days and holding periods are New York dates.
MARKET_TZ = ZoneInfo("America/New_York")
#: ``strategy_id`` of account-wide rows.
ACCOUNT = ALL_STRATEGIES
SOURCE = "ledger"
FILL_EVENT = "fill.applied"
COVERED_EVENT = "fill.covered"
#: ``execution_id`` prefix of catch-up fills: ``catchup:<broker order id>:<cumulative filled qty>``.
CATCH_UP_PREFIX = "catchup:"
MAX_EXECUTION_ID_LENGTH = 128
ZERO = Decimal(0)
_CTX = Context(prec=34, rounding=ROUND_HALF_EVEN)
_FILL_EVENTS = frozenset({"fill", "partial_fill"})


class LedgerError(TraderError):
    """A fill the ledger cannot apply."""


class InvalidFillError(LedgerError):
    """A fill with a missing or impossible field (the message names it)."""

    exit_code = 2


class FillConflictError(LedgerError):
    """A fill that contradicts its order (other symbol or side, more than the order's quantity)."""


class MissingPriceError(LedgerError):
    """An open position has no price to value it at."""


# ------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class Fill:
    """One execution reported by the broker.

    ``qty``/``price`` are this execution's; ``order_filled_qty``/``order_filled_avg_price`` the
    order's cumulative values after it, when the broker sent them (Alpaca does). A ``catch_up`` fill
    stands for everything the order had filled up to ``order_filled_qty`` (both cumulative values
    required); its own ``qty``/``price`` are informative only.
    """

    execution_id: str
    client_order_id: str
    symbol: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    executed_at: datetime
    fee: Decimal = ZERO
    broker_order_id: str | None = None
    order_filled_qty: Decimal | None = None
    order_filled_avg_price: Decimal | None = None
    catch_up: bool = False

    def __post_init__(self) -> None:
        problems = _fill_problems(self)
        if problems:
            raise InvalidFillError(f"fill {self.execution_id!r}: " + "; ".join(problems))

    @classmethod
    def from_trade_update(cls, update: TradeUpdate, *, fee: Decimal = ZERO) -> Fill | None:
        """The fill a ``trade_updates`` event reports, or ``None`` when it reports none.

        A ``fill``/``partial_fill`` with its ``execution_id``, ``qty`` and ``price`` is a real
        execution; without them (the stream's REST catch-up) it becomes a catch-up fill with the id
        ``catchup:<broker order id>:<cumulative qty>``, so the same catch-up twice is one fill.
        """
        order = update.order
        if update.event not in _FILL_EVENTS:
            return None
        common: dict[str, Any] = {
            "client_order_id": order.client_order_id,
            "symbol": order.symbol,
            "side": order.side,
            "executed_at": update.timestamp,
            "fee": fee,
            "broker_order_id": order.id,
            "order_filled_qty": order.filled_qty,
            "order_filled_avg_price": order.filled_avg_price,
        }
        if update.execution_id and update.qty and update.price:
            return cls(execution_id=update.execution_id, qty=update.qty, price=update.price, **common)
        if order.filled_qty <= 0 or order.filled_avg_price is None:
            return None
        return cls(
            execution_id=catch_up_id(order.id, order.filled_qty),
            qty=update.qty or order.filled_qty,
            price=update.price or order.filled_avg_price,
            catch_up=True,
            **common,
        )


def catch_up_id(broker_order_id: str, filled_qty: Decimal) -> str:
    """``catchup:<broker order id>:<cumulative qty>``, the quantity written without trailing zeros."""
    return f"{CATCH_UP_PREFIX}{broker_order_id}:{_plain(filled_qty)}"


def _plain(number: Decimal) -> str:
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _fill_problems(fill: Fill) -> list[str]:
    problems: list[str] = []
    if not fill.execution_id or len(fill.execution_id) > MAX_EXECUTION_ID_LENGTH:
        problems.append(f"execution_id must be 1 to {MAX_EXECUTION_ID_LENGTH} characters")
    if not fill.client_order_id:
        problems.append("client_order_id is empty")
    if not fill.symbol.strip():
        problems.append("symbol is empty")
    if fill.side not in (OrderSide.BUY, OrderSide.SELL):
        problems.append(f"side must be buy or sell, not {fill.side!r}")
    for name in ("qty", "price", "fee", "order_filled_qty", "order_filled_avg_price"):
        value = getattr(fill, name)
        if value is not None and not isinstance(value, Decimal):
            problems.append(f"{name} must be a Decimal, not {type(value).__name__}")
        elif value is not None and not value.is_finite():
            problems.append(f"{name} must be a finite number")
    if not problems:
        problems.extend(_number_problems(fill))
    if not isinstance(fill.executed_at, datetime) or fill.executed_at.utcoffset() is None:
        problems.append("executed_at must be a timezone-aware datetime (UTC)")
    return problems


def _number_problems(fill: Fill) -> list[str]:
    problems = [f"{name} must be positive" for name in ("qty", "price") if not getattr(fill, name) > 0]
    if fill.fee < 0:
        problems.append("fee must not be negative")
    if fill.catch_up and not (
        fill.order_filled_qty is not None
        and fill.order_filled_qty > 0
        and fill.order_filled_avg_price is not None
        and fill.order_filled_avg_price > 0
    ):
        problems.append("a catch-up fill needs positive order_filled_qty and order_filled_avg_price")
    return problems


class FillOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this execution_id was applied before
    COVERED = "covered"  # a catch-up fill already accounted for this quantity


@dataclass(frozen=True)
class FillResult:
    """What :func:`apply_fill` did, and the position of (strategy, symbol) afterwards.

    ``qty``/``price`` are what was applied (a catch-up fill applies only what was not covered).
    ``realized_delta`` is the change of the position's realized P&L (net of fees). ``replayed`` is
    True when the fill arrived out of order and the position was rebuilt from its executions.
    """

    execution_id: str
    outcome: FillOutcome
    strategy_id: str
    symbol: str
    qty: Decimal
    price: Decimal | None
    position_qty: Decimal
    position_avg_price: Decimal
    realized_delta: Decimal
    replayed: bool = False

    @property
    def applied(self) -> bool:
        return self.outcome is FillOutcome.APPLIED


# ------------------------------------------------------------------------------ position arithmetic


@dataclass(frozen=True)
class PositionState:
    """A position: signed quantity (negative is short), average price, realized P&L so far."""

    qty: Decimal = ZERO
    avg_price: Decimal = ZERO
    realized: Decimal = ZERO


@dataclass(frozen=True)
class Step:
    """One execution applied to a position: the new state, and what the execution did."""

    state: PositionState
    realized: Decimal  # realized by this execution, net of its fee
    closed_qty: Decimal  # quantity of the old side it closed
    opened_qty: Decimal  # quantity it opened (or added) on its own side


def position_step(state: PositionState, side: OrderSide, qty: Decimal, price: Decimal, fee: Decimal) -> Step:
    """Apply one execution to ``state`` (average-cost method; see the module docstring)."""
    with localcontext(_CTX):
        delta = qty if side == OrderSide.BUY else -qty
        held = state.qty
        if held == 0 or (held > 0) == (delta > 0):
            new_qty = held + delta
            avg = (abs(held) * state.avg_price + qty * price) / abs(new_qty)
            return Step(PositionState(new_qty, avg, state.realized - fee), -fee, ZERO, qty)
        closing = min(qty, abs(held))
        gain = (price - state.avg_price) * closing * (1 if held > 0 else -1) - fee
        new_qty = held + delta
        if new_qty == 0:
            avg = ZERO
        elif (new_qty > 0) != (held > 0):
            avg = price  # crossed zero: the rest opens the other side at the fill price
        else:
            avg = state.avg_price
        return Step(PositionState(new_qty, avg, state.realized + gain), gain, closing, qty - closing)


def holding_period(side: PositionSide | str, opened_at: datetime, closed_at: datetime) -> str:
    """``long_term`` for a long lot held more than one year (New York dates), else ``short_term``.

    Gains on short sales are short-term in general (IRS Publication 550), whatever the holding time.
    """
    if PositionSide(side) != PositionSide.LONG:
        return "short_term"
    opened, closed = market_date(opened_at), market_date(closed_at)
    try:
        anniversary = opened.replace(year=opened.year + 1)
    except ValueError:  # 29 February
        anniversary = date(opened.year + 1, 2, 28)
    return "long_term" if closed > anniversary else "short_term"


def market_date(moment: datetime) -> date:
    """The New York date of ``moment``."""
    return moment.astimezone(MARKET_TZ).date()


def market_day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of New York date ``day``, in UTC."""
    start = datetime.combine(day, time.min, MARKET_TZ)
    end = datetime.combine(day + timedelta(days=1), time.min, MARKET_TZ)
    return start.astimezone(UTC), end.astimezone(UTC)


def _execution_key(execution: Execution) -> tuple[datetime, str]:
    return (execution.executed_at, execution.execution_id)


@dataclass
class _Book:
    """One (strategy, symbol): its position and FIFO open lots, as executions are applied."""

    strategy_id: str
    symbol: str
    state: PositionState
    open_lots: list[TaxLot]
    new_lots: list[TaxLot] = field(default_factory=list)
    closures: list[tuple[TaxLot, TaxLotClosure]] = field(default_factory=list)

    def apply(self, execution: Execution) -> Step:
        step = position_step(
            self.state, OrderSide(execution.side), execution.qty, execution.price, execution.fee
        )
        self._close_lots(execution, step.closed_qty)
        if step.opened_qty > 0:
            lot = TaxLot(
                strategy_id=self.strategy_id,
                symbol=self.symbol,
                side=(PositionSide.LONG if execution.side == OrderSide.BUY else PositionSide.SHORT).value,
                open_execution_id=execution.execution_id,
                opened_at=execution.executed_at,
                qty=step.opened_qty,
                remaining_qty=step.opened_qty,
                cost_price=execution.price,
                closed_at=None,
            )
            self.open_lots.append(lot)
            self.new_lots.append(lot)
        self.state = step.state
        return step

    def _close_lots(self, execution: Execution, qty: Decimal) -> None:
        left = qty
        while left > 0:
            lot = self.open_lots[0]
            taken = min(left, lot.remaining_qty)
            sign = 1 if lot.side == PositionSide.LONG else -1
            closure = TaxLotClosure(
                close_execution_id=execution.execution_id,
                closed_at=execution.executed_at,
                qty=taken,
                price=execution.price,
                realized_pnl=(execution.price - lot.cost_price) * taken * sign,
                holding_period=holding_period(lot.side, lot.opened_at, execution.executed_at),
            )
            self.closures.append((lot, closure))
            lot.remaining_qty = lot.remaining_qty - taken
            if lot.remaining_qty == 0:
                lot.closed_at = execution.executed_at
                self.open_lots.pop(0)
            left -= taken

    def write(self, session: Session) -> None:
        """Persist the lots opened, the closures made and the position."""
        session.add_all(self.new_lots)
        session.flush()
        for lot, closure in self.closures:
            closure.lot_id = lot.id
        session.add_all(closure for _, closure in self.closures)
        position = session.get(Position, (self.strategy_id, self.symbol), populate_existing=True)
        if position is None:
            position = Position(strategy_id=self.strategy_id, symbol=self.symbol)
            session.add(position)
        position.qty = self.state.qty
        position.avg_price = self.state.avg_price
        position.realized_pnl = self.state.realized
        self.new_lots, self.closures = [], []


# -------------------------------------------------------------------------------------- apply_fill


@dataclass(frozen=True)
class _Applied:
    """An execution already applied to an order, as its ``fill.applied`` event recorded it."""

    qty: Decimal
    price: Decimal
    cumulative: Decimal | None
    catch_up: bool


def apply_fill(session: Session, fill: Fill, *, source: str = SOURCE) -> FillResult:
    """Apply one execution exactly once (see the module docstring); the caller commits.

    Raises :class:`~trader.execution.orders.UnknownOrderError` for an order never recorded and
    :class:`FillConflictError` for a fill that contradicts its order.
    """
    order = _order_for(session, fill)
    strategy_id, symbol = order.strategy_id, order.symbol
    # Serialize every fill of this position: the checks below then see all that committed before.
    lock_position(session, strategy_id, symbol)
    if _execution_exists(session, fill.execution_id):
        return _unchanged(session, fill, strategy_id, symbol, FillOutcome.DUPLICATE)
    history = _order_history(session, order.client_order_id)
    uncovered = _uncovered(fill, history)
    if uncovered is None:
        _journal(session, COVERED_EVENT, order, _fill_payload(fill), source)
        return _unchanged(session, fill, strategy_id, symbol, FillOutcome.COVERED)
    qty, price = uncovered
    values = {
        "execution_id": fill.execution_id,
        "client_order_id": order.client_order_id,
        "broker_order_id": fill.broker_order_id or order.broker_order_id,
        "strategy_id": strategy_id,
        "symbol": symbol,
        "side": OrderSide(fill.side).value,
        "qty": qty,
        "price": price,
        "fee": fill.fee,
        "executed_at": fill.executed_at.astimezone(UTC),
    }
    if not insert_if_absent(session, Execution, values, ["execution_id"]):
        return _unchanged(session, fill, strategy_id, symbol, FillOutcome.DUPLICATE)
    execution = session.execute(
        select(Execution).where(Execution.execution_id == fill.execution_id)
    ).scalar_one()
    _update_order_totals(session, order)
    before = _position_state(session, strategy_id, symbol)
    replayed = not _is_newest(session, execution)
    after = _replay(session, strategy_id, symbol) if replayed else _append(session, execution, before)
    result = FillResult(
        fill.execution_id,
        FillOutcome.APPLIED,
        strategy_id,
        symbol,
        qty,
        price,
        after.qty,
        after.avg_price,
        after.realized - before.realized,
        replayed,
    )
    _journal(session, FILL_EVENT, order, _fill_payload(fill) | _result_payload(result, fill), source)
    return result


def _order_for(session: Session, fill: Fill) -> Order:
    order = session.execute(
        select(Order)
        .where(Order.client_order_id == fill.client_order_id)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if order is None:
        raise UnknownOrderError(
            f"fill {fill.execution_id!r} is for client_order_id {fill.client_order_id!r}, which has no "
            "order row: record orders (record_intent) before sending them"
        )
    if order.symbol.upper() != fill.symbol.strip().upper() or order.side != OrderSide(fill.side).value:
        raise FillConflictError(
            f"fill {fill.execution_id!r} is a {fill.side} of {fill.symbol}, but order "
            f"{order.client_order_id!r} is a {order.side} of {order.symbol}"
        )
    return order


def _execution_exists(session: Session, execution_id: str) -> bool:
    found = session.execute(select(Execution.id).where(Execution.execution_id == execution_id)).first()
    return found is not None


def _order_history(session: Session, client_order_id: str) -> list[_Applied]:
    payloads = session.execute(
        select(Event.payload).where(Event.kind == FILL_EVENT, Event.correlation_id == client_order_id)
    ).scalars()
    return [
        _Applied(
            qty=Decimal(p["qty"]),
            price=Decimal(p["price"]),
            cumulative=Decimal(p["order_filled_qty"]) if p.get("order_filled_qty") is not None else None,
            catch_up=bool(p.get("catch_up")),
        )
        for p in payloads
    ]


def _uncovered(fill: Fill, history: Sequence[_Applied]) -> tuple[Decimal, Decimal] | None:
    """The quantity and price this fill adds to its order, or ``None`` if a catch-up covered it.

    A catch-up fill at cumulative quantity C covers the order's executions up to C. A real fill
    whose own cumulative quantity is at most the largest catch-up's C is therefore already counted.
    A catch-up fill adds C minus what the executions applied up to C hold, at the price that makes
    the order's average at C come out as the broker reported.
    """
    caught_up = max((a.cumulative for a in history if a.catch_up and a.cumulative is not None), default=None)
    reported = fill.order_filled_qty
    if caught_up is not None and reported is not None and reported <= caught_up:
        return None
    if not fill.catch_up:
        return fill.qty, fill.price
    assert reported is not None and fill.order_filled_avg_price is not None  # checked by Fill
    known = [a for a in history if a.cumulative is None or a.cumulative <= reported]
    with localcontext(_CTX):
        qty = reported - sum((a.qty for a in known), ZERO)
        if qty <= 0:
            return None
        notional = fill.order_filled_avg_price * reported - sum((a.qty * a.price for a in known), ZERO)
        price = notional / qty
    if price <= 0:
        raise FillConflictError(
            f"catch-up fill {fill.execution_id!r}: the order's reported average "
            f"{fill.order_filled_avg_price} at {reported} contradicts the executions already applied"
        )
    return qty, price


def _update_order_totals(session: Session, order: Order) -> None:
    rows = session.execute(
        select(Execution.qty, Execution.price).where(Execution.client_order_id == order.client_order_id)
    ).all()
    with localcontext(_CTX):
        total = sum((qty for qty, _ in rows), ZERO)
        notional = sum((qty * price for qty, price in rows), ZERO)
        average = notional / total if total else None
    if order.qty is not None and total > order.qty:
        raise FillConflictError(
            f"order {order.client_order_id!r} would be filled {total} of {order.qty}: an execution was "
            "reported twice under different ids, or the order row is wrong; reconcile with the broker"
        )
    order.filled_qty = total
    order.filled_avg_price = average


def _is_newest(session: Session, execution: Execution) -> bool:
    """Whether no execution of the same position sorts after ``execution`` (time, then id)."""
    later = session.execute(
        select(Execution).where(
            Execution.strategy_id == execution.strategy_id,
            Execution.symbol == execution.symbol,
            Execution.executed_at >= execution.executed_at,
            Execution.execution_id != execution.execution_id,
        )
    ).scalars()
    key = _execution_key(execution)
    return all(_execution_key(other) < key for other in later)


def _position_state(session: Session, strategy_id: str, symbol: str) -> PositionState:
    position = session.get(Position, (strategy_id, symbol), populate_existing=True)
    if position is None:
        return PositionState()
    return PositionState(position.qty, position.avg_price, position.realized_pnl)


def _open_lots(session: Session, strategy_id: str, symbol: str) -> list[TaxLot]:
    lots = session.execute(
        select(TaxLot)
        .where(TaxLot.strategy_id == strategy_id, TaxLot.symbol == symbol, TaxLot.closed_at.is_(None))
        .execution_options(populate_existing=True)
    ).scalars()
    return sorted(lots, key=lambda lot: (lot.opened_at, lot.open_execution_id))


def _append(session: Session, execution: Execution, state: PositionState) -> PositionState:
    book = _Book(execution.strategy_id, execution.symbol, state, _open_lots(session, *_pos(execution)))
    book.apply(execution)
    book.write(session)
    return book.state


def _pos(execution: Execution) -> tuple[str, str]:
    return execution.strategy_id, execution.symbol


def _replay(session: Session, strategy_id: str, symbol: str) -> PositionState:
    """Rebuild the position and its lots from every execution, in execution-time order."""
    lot_ids = select(TaxLot.id).where(TaxLot.strategy_id == strategy_id, TaxLot.symbol == symbol)
    session.execute(
        delete(TaxLotClosure).where(TaxLotClosure.lot_id.in_(lot_ids)),
        execution_options={"synchronize_session": False},
    )
    session.execute(
        delete(TaxLot).where(TaxLot.strategy_id == strategy_id, TaxLot.symbol == symbol),
        execution_options={"synchronize_session": False},
    )
    book = _Book(strategy_id, symbol, PositionState(), [])
    for execution in _executions(session, strategy_id, symbol):
        book.apply(execution)
    book.write(session)
    return book.state


def _executions(
    session: Session, strategy_id: str | None, symbol: str | None = None, before: datetime | None = None
) -> list[Execution]:
    """Executions in execution-time order, filtered by strategy (``None``: all), symbol and time."""
    stmt = select(Execution)
    if strategy_id is not None:
        stmt = stmt.where(Execution.strategy_id == strategy_id)
    if symbol is not None:
        stmt = stmt.where(Execution.symbol == symbol)
    if before is not None:
        stmt = stmt.where(Execution.executed_at < before)
    return sorted(session.execute(stmt).scalars(), key=_execution_key)


def _unchanged(
    session: Session, fill: Fill, strategy_id: str, symbol: str, outcome: FillOutcome
) -> FillResult:
    state = _position_state(session, strategy_id, symbol)
    return FillResult(
        fill.execution_id, outcome, strategy_id, symbol, ZERO, None, state.qty, state.avg_price, ZERO
    )


def _journal(session: Session, kind: str, order: Order, payload: dict[str, Any], source: str) -> None:
    session.add(
        Event(
            kind=kind,
            source=source,
            strategy_id=order.strategy_id,
            correlation_id=order.client_order_id,
            payload=payload,
        )
    )


def _fill_payload(fill: Fill) -> dict[str, Any]:
    return {
        "execution_id": fill.execution_id,
        "client_order_id": fill.client_order_id,
        "broker_order_id": fill.broker_order_id,
        "symbol": fill.symbol,
        "side": OrderSide(fill.side).value,
        "reported_qty": str(fill.qty),
        "reported_price": str(fill.price),
        "fee": str(fill.fee),
        "executed_at": fill.executed_at.astimezone(UTC).isoformat(),
        "order_filled_qty": None if fill.order_filled_qty is None else str(fill.order_filled_qty),
        "order_filled_avg_price": (
            None if fill.order_filled_avg_price is None else str(fill.order_filled_avg_price)
        ),
        "catch_up": fill.catch_up,
    }


def _result_payload(result: FillResult, fill: Fill) -> dict[str, Any]:
    return {
        "qty": str(result.qty),
        "price": str(result.price),
        "position_qty": str(result.position_qty),
        "position_avg_price": str(result.position_avg_price),
        "realized_delta": str(result.realized_delta),
        "replayed": result.replayed,
    }


# ------------------------------------------------------------------------------------------- P&L


class PositionLike(Protocol):
    """Anything with a symbol, a signed quantity and an average price (a ``positions`` row)."""

    @property
    def symbol(self) -> str: ...

    @property
    def qty(self) -> Decimal: ...

    @property
    def avg_price(self) -> Decimal: ...


def realized_pnl(session: Session, strategy_id: str, day: date) -> Decimal:
    """Realized P&L (net of fees) of executions on New York date ``day``; ``'*'``: the account.

    Computed by replaying the executions up to the end of ``day`` in execution-time order, so it
    always agrees with the positions however the fills arrived.
    """
    return sum(realized_by_position(session, strategy_id, day).values(), ZERO)


def realized_by_position(session: Session, strategy_id: str, day: date) -> dict[tuple[str, str], Decimal]:
    """:func:`realized_pnl` per (strategy, symbol) that traded on ``day``."""
    return books_at_close(session, strategy_id, day)[1]


def books_at_close(
    session: Session, strategy_id: str, day: date
) -> tuple[dict[tuple[str, str], PositionState], dict[tuple[str, str], Decimal]]:
    """Every (strategy, symbol) position as of the end of New York date ``day`` (replayed from the
    executions up to then), and the realized P&L of those that traded that day; ``'*'``: all."""
    start, end = market_day_bounds(day)
    executions = _executions(session, None if strategy_id == ACCOUNT else strategy_id, before=end)
    books: dict[tuple[str, str], PositionState] = defaultdict(PositionState)
    realized: dict[tuple[str, str], Decimal] = {}
    for execution in executions:
        key = (execution.strategy_id, execution.symbol)
        step = position_step(
            books[key], OrderSide(execution.side), execution.qty, execution.price, execution.fee
        )
        books[key] = step.state
        if execution.executed_at >= start:
            realized[key] = realized.get(key, ZERO) + step.realized
    return dict(books), realized


def traded_after(session: Session, day: date) -> bool:
    """Whether any execution is later than New York date ``day``."""
    _, end = market_day_bounds(day)
    return session.scalar(select(Execution.id).where(Execution.executed_at >= end).limit(1)) is not None


def fees_paid(session: Session, strategy_id: str, day: date) -> Decimal:
    """Fees of the executions on New York date ``day``; ``'*'``: the account."""
    start, end = market_day_bounds(day)
    stmt = select(Execution.fee).where(Execution.executed_at >= start, Execution.executed_at < end)
    if strategy_id != ACCOUNT:
        stmt = stmt.where(Execution.strategy_id == strategy_id)
    return sum(session.execute(stmt).scalars(), ZERO)


def unrealized_pnl(positions: Iterable[PositionLike], last_prices: Mapping[str, Decimal]) -> Decimal:
    """Σ qty × (last − avg) over open positions (signed qty, so shorts gain when the price falls).

    Raises :class:`MissingPriceError` naming the symbols of open positions without a price.
    """
    with localcontext(_CTX):
        return sum((p.qty * (price - p.avg_price) for p, price in _priced(positions, last_prices)), ZERO)


def gross_exposure(positions: Iterable[PositionLike], last_prices: Mapping[str, Decimal]) -> Decimal:
    """Σ |qty| × last over open positions."""
    with localcontext(_CTX):
        return sum((abs(p.qty) * price for p, price in _priced(positions, last_prices)), ZERO)


def _priced(
    positions: Iterable[PositionLike], last_prices: Mapping[str, Decimal]
) -> list[tuple[PositionLike, Decimal]]:
    open_positions = [p for p in positions if p.qty != 0]
    missing = sorted({p.symbol for p in open_positions if p.symbol not in last_prices})
    if missing:
        names = ", ".join(missing)
        raise MissingPriceError(f"no last price for open position(s) {names}: pass them in last_prices")
    return [(p, last_prices[p.symbol]) for p in open_positions]


def daily_pnl_row(
    session: Session,
    trading_date: date,
    last_prices: Mapping[str, Decimal],
    *,
    strategy_id: str = ACCOUNT,
    equity: Decimal | None = None,
) -> Pnl:
    """Write (insert or replace) the ``pnl`` row of ``trading_date`` and ``strategy_id``; return it.

    ``realized`` is the day's realized P&L net of fees, ``fees`` the day's fees (already inside
    ``realized``), ``unrealized`` and ``gross_exposure`` the *current* positions valued at
    ``last_prices`` — call it at the end of the day it describes. ``'*'`` is the whole account.
    """
    stmt = select(Position)
    if strategy_id != ACCOUNT:
        stmt = stmt.where(Position.strategy_id == strategy_id)
    positions = list(session.execute(stmt.execution_options(populate_existing=True)).scalars())
    values = {
        "trading_date": trading_date,
        "strategy_id": strategy_id,
        "realized": realized_pnl(session, strategy_id, trading_date),
        "unrealized": unrealized_pnl(positions, last_prices),
        "fees": fees_paid(session, strategy_id, trading_date),
        "equity": equity,
        "gross_exposure": gross_exposure(positions, last_prices),
    }
    upsert(session, Pnl, values, ["trading_date", "strategy_id"])
    row = session.get(Pnl, (trading_date, strategy_id), populate_existing=True)
    assert row is not None
    return row


def daily_pnl_rows(
    session: Session, trading_date: date, last_prices: Mapping[str, Decimal], *, equity: Decimal | None = None
) -> list[Pnl]:
    """The ``pnl`` rows of ``trading_date``: one per strategy with a position or an execution, then ``'*'``.

    ``equity`` (the account's) goes on the ``'*'`` row only.
    """
    strategies = set(session.execute(select(Position.strategy_id).distinct()).scalars())
    start, end = market_day_bounds(trading_date)
    strategies |= set(
        session.execute(
            select(Execution.strategy_id)
            .where(Execution.executed_at >= start, Execution.executed_at < end)
            .distinct()
        ).scalars()
    )
    rows = [daily_pnl_row(session, trading_date, last_prices, strategy_id=s) for s in sorted(strategies)]
    rows.append(daily_pnl_row(session, trading_date, last_prices, equity=equity))
    return rows
