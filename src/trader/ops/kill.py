"""The kill switch: stop trading now and get flat.

In this order, so nothing new can start while the account is being emptied:

1. trip the circuit breaker with reason ``kill`` (new entries are blocked from this moment on, until
   an operator approves and clears it: ``trader circuit approve`` then ``trader circuit clear``);
2. cancel every open order at the broker (and apply each cancel to our ``orders`` rows);
3. close every position. Where our books explain the broker's position exactly (the strategies that
   hold the symbol all hold it on the same side, and their quantities add up to the broker's), each
   of those strategies gets its own market order for its own quantity, through the ordinary money
   path: the row is written (intent ``kill``) before the order is sent under its deterministic
   ``client_order_id``, so a lost response is resolved by lookup and the fill empties that strategy's
   book. Any other position (nothing of ours holds it, or the books and the broker disagree) is
   closed as a whole by the broker's close-position, and the reconciler books that order under its
   adopt strategy; the report names the symbol (``unattributed``);
4. write the outcome to ``audit_log`` (``kill.executed``), failures included.

The closing orders fill when the market is open; outside market hours they wait at the broker and the
report says so (``positions_left``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from trader.broker.base import Broker, BrokerOrder, CancelResult, ClosePositionResult, Position
from trader.broker.errors import BrokerError, DuplicateClientOrderIdError, InvalidOrderError
from trader.domain.enums import OrderSide, OrderStatus
from trader.errors import TraderError, UsageError, first_line
from trader.execution.orders import (
    OrderIntent,
    UnknownOrderError,
    apply_broker_update,
    record_intent,
    record_status,
)
from trader.execution.state_machine import OPEN_BROKER
from trader.ops.breakers import BreakerStatus, BreakerStoreError, CircuitBreaker, TripReason
from trader.store.models import AuditLog, Order
from trader.store.models import Position as BookPosition
from trader.store.types import as_number

log = logging.getLogger(__name__)

SOURCE = "kill"
NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True)
class KillReport:
    """What the kill switch did. ``ok``: every cancel and close was accepted and nothing is left."""

    #: The breaker after the trip; ``None`` when the trip could not be stored (see ``failures``).
    breaker: BreakerStatus | None
    canceled: tuple[CancelResult, ...]
    closed: tuple[ClosePositionResult, ...]
    failures: tuple[str, ...]
    open_orders_left: tuple[str, ...]
    positions_left: tuple[str, ...]
    #: ``client_order_id`` of the closing orders sent for one strategy's position each.
    booked: tuple[str, ...] = ()
    #: Symbols closed as a whole, not matched to our books (their orders are left to the reconciler).
    unattributed: tuple[str, ...] = ()
    #: ``client_order_id`` of an earlier kill's closing orders still working: kept, not sent again.
    working: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures and not self.open_orders_left and not self.positions_left


@dataclass(frozen=True)
class Share:
    """One strategy's part of a broker position, as our books hold it (``qty`` signed: < 0 short)."""

    strategy_id: str
    symbol: str
    qty: Decimal

    def closing_side(self) -> OrderSide:
        return OrderSide.SELL if self.qty > 0 else OrderSide.BUY


@dataclass(frozen=True)
class ClosingPlan:
    """How each broker position is closed: per strategy (``shares``) or as a whole (``whole``)."""

    shares: tuple[Share, ...]
    whole: tuple[str, ...]


def plan_closing(positions: list[Position], books: list[Share] | None) -> ClosingPlan:
    """Split each broker position between the strategies whose books explain it exactly.

    A position is split when every strategy holding the symbol holds it on the broker's side and their
    quantities add up to the broker's quantity; anything else (``books`` unreadable, no holder, a
    holder on the other side, a sum that differs) is closed as a whole, so that what we send never
    adds up to more or less than the broker holds.
    """
    holders: dict[str, list[Share]] = defaultdict(list)
    for share in books or ():
        if share.qty != 0:
            holders[share.symbol.upper()].append(share)
    shares: list[Share] = []
    whole: list[str] = []
    for position in positions:
        if position.qty == 0:
            continue
        mine = holders.get(position.symbol.upper(), [])
        same_side = all((share.qty > 0) == (position.qty > 0) for share in mine)
        if mine and same_side and sum(share.qty for share in mine) == position.qty:
            shares.extend(sorted(mine, key=lambda share: share.strategy_id))
        else:
            whole.append(position.symbol)
    return ClosingPlan(tuple(shares), tuple(whole))


def kill_switch(
    broker: Broker, breaker: CircuitBreaker, engine: Engine, *, reason: str, actor: str
) -> KillReport:
    """Trip, cancel everything, flatten everything, audit (see the module doc). Never raises for a
    broker failure after the trip: the failure is in the report and the audit log, and the breaker
    stays tripped either way."""
    if not reason.strip():
        raise UsageError("the kill switch needs a reason (--reason)")
    failures: list[str] = []
    status: BreakerStatus | None
    try:
        status = breaker.trip(TripReason.KILL, reason, actor)
    except BreakerStoreError as exc:
        # The store is unreachable: entries already fail closed while it cannot be read, and getting
        # flat must not wait for it.
        log.error("kill: the circuit breaker could not be tripped: %s", exc)
        failures.append(f"tripping the circuit breaker: {exc}")
        status = None
    open_orders = _open_orders(broker)
    working = _working_kill_orders(open_orders, engine)
    canceled = _cancel_all(broker, engine, failures, open_orders, keep=working)
    day = _today(broker)
    closing = _Closing(broker, engine, day, failures, working)
    closing.close_everything()
    open_left, positions_left = _leftovers(broker, failures, closing.order_ids())
    report = KillReport(
        status,
        canceled,
        tuple(closing.closed),
        tuple(failures),
        open_left,
        positions_left,
        tuple(closing.booked),
        tuple(closing.unattributed),
        tuple(order.client_order_id for order, _ in closing.working),
    )
    try:
        _audit(engine, actor, reason, report)
    except SQLAlchemyError as exc:
        # The kill has happened; an unwritable database must not hide that from the operator.
        log.error("kill: could not write kill.executed to the audit log: %s", exc)
        report = replace(report, failures=(*report.failures, f"writing the audit log: {_db_error(exc)}"))
    return report


def _kept_cover(working: list[tuple[BrokerOrder, str | None]]) -> dict[tuple[str | None, str], Decimal]:
    """The unfilled quantity of the kept closing orders, by (strategy or ``None``, symbol)."""
    cover: dict[tuple[str | None, str], Decimal] = defaultdict(Decimal)
    for order, owner in working:
        if order.qty is not None:
            cover[(owner, order.symbol.upper())] += max(order.qty - order.filled_qty, Decimal(0))
    return dict(cover)


def _today(broker: Broker) -> date:
    """The New York date of the kill, by the broker's clock (the built-in broker simulates time),
    else this machine's: part of the closing orders' ids, so it must be today's, not the trip's (a
    breaker still tripped by an earlier kill keeps that kill's time)."""
    try:
        now = broker.get_clock().timestamp
    except BrokerError as exc:
        log.warning("kill: broker clock unreadable (%s); the closing orders are dated by this machine", exc)
        now = datetime.now(UTC)
    return now.astimezone(NEW_YORK).date()


#: How many recent ``kill.executed`` entries name closing orders that may still be working.
KILL_AUDIT_DEPTH = 100
#: Statuses of an order that is working toward a fill (a cancel or replace in flight is not).
_LIVE = OPEN_BROKER - {OrderStatus.PENDING_CANCEL, OrderStatus.PENDING_REPLACE}


def closing_order_ids(engine: Engine, orders: list[BrokerOrder]) -> dict[str, str | None]:
    """Which of ``orders`` the kill switch sent, by ``client_order_id``: the strategy each was sent
    for (booked under intent ``kill``), or ``None`` for a position closed whole (named only in the
    ``closing_orders`` of a recent ``kill.executed`` audit entry)."""
    if not orders:
        return {}
    ids = sorted({order.client_order_id for order in orders})
    with Session(engine) as session:
        booked = dict(
            session.execute(
                select(Order.client_order_id, Order.strategy_id).where(
                    Order.client_order_id.in_(ids), Order.intent == SOURCE
                )
            ).all()
        )
        audited = session.scalars(
            select(AuditLog.details)
            .where(AuditLog.action == "kill.executed")
            .order_by(AuditLog.id.desc())
            .limit(KILL_AUDIT_DEPTH)
        ).all()
    named = {str(cid) for details in audited for cid in (details or {}).get("closing_orders") or ()}
    whole: dict[str, str | None] = {cid: None for cid in ids if cid in named and cid not in booked}
    return {**whole, **booked}


def _open_orders(broker: Broker) -> list[BrokerOrder] | None:
    """The broker's open orders, read once for steps 2 and 3; ``None`` when they cannot be read."""
    try:
        return broker.list_open_orders()
    except BrokerError as exc:
        log.warning("kill: open orders unreadable (%s); every open order is canceled", exc)
        return None


def _working_kill_orders(
    open_orders: list[BrokerOrder] | None, engine: Engine
) -> list[tuple[BrokerOrder, str | None]]:
    """An earlier kill's closing orders still working at the broker, with the strategy of each
    (``None``: a whole close).

    Kept rather than canceled and sent again: outside market hours a cancel waits for the open with
    the shares still held, so the new closing order would be refused and nothing would close the
    position at the open. One already being canceled or replaced is not working and is not kept.
    Without the broker's open orders or our books, none are known (and every order is canceled).
    """
    live = [o for o in open_orders or () if o.status in _LIVE]
    try:
        owners = closing_order_ids(engine, live)
    except SQLAlchemyError as exc:
        log.warning("kill: earlier closing orders unknown (%s); every open order is canceled", exc)
        return []
    return [(o, owners[o.client_order_id]) for o in live if o.client_order_id in owners]


def _cancel_all(
    broker: Broker,
    engine: Engine,
    failures: list[str],
    open_orders: list[BrokerOrder] | None,
    keep: list[tuple[BrokerOrder, str | None]],
) -> tuple[CancelResult, ...]:
    # Cancel-all would also cancel the kept orders and re-cancel those already being canceled (a
    # failure at the broker); without the list of open orders it is all there is.
    pending = any(o.status is OrderStatus.PENDING_CANCEL for o in open_orders or ())
    try:
        if open_orders is not None and (keep or pending):
            results = _cancel_each_but(broker, open_orders, keep)
        else:
            results = tuple(broker.cancel_all_orders())
    except BrokerError as exc:
        failures.append(f"cancel all orders: {exc}")
        return ()
    for result in results:
        if not result.ok:
            failures.append(f"cancel {result.order_id}: HTTP {result.status} {result.message}".strip())
            continue
        order = _fetch(broker, result.order_id)
        if order is not None:
            _apply(engine, order, failures)
    return results


def _cancel_each_but(
    broker: Broker, open_orders: list[BrokerOrder], keep: list[tuple[BrokerOrder, str | None]]
) -> tuple[CancelResult, ...]:
    """Cancel every open order but those in ``keep``, one by one (cancel-all cannot spare any)."""
    kept = {order.id for order, _ in keep}
    results: list[CancelResult] = []
    for order in open_orders:
        if order.id in kept or order.status is OrderStatus.PENDING_CANCEL:
            continue  # kept, or already being canceled
        try:
            broker.cancel_order(order.id)
        except BrokerError as exc:
            results.append(CancelResult(order.id, exc.status or 500, str(exc)))
        else:
            results.append(CancelResult(order.id, 204))
    return tuple(results)


class _Closing:
    """Step 3: the closing orders of one kill, and what became of them."""

    def __init__(
        self,
        broker: Broker,
        engine: Engine,
        day: date,
        failures: list[str],
        working: list[tuple[BrokerOrder, str | None]],
    ) -> None:
        self.broker, self.engine, self.day, self.failures = broker, engine, day, failures
        self.working = working
        self.closed: list[ClosePositionResult] = []
        self.booked: list[str] = []
        self.unattributed: list[str] = []

    def order_ids(self) -> set[str]:
        sent = {result.order.id for result in self.closed if result.order is not None}
        return sent | {order.id for order, _ in self.working}

    def close_everything(self) -> None:
        try:
            positions = self.broker.get_positions()
        except BrokerError as exc:
            # Without the positions nothing can be split: the broker's close-all still flattens.
            self.failures.append(f"reading the positions: {exc}")
            self._close_all()
            return
        plan = plan_closing(positions, self._books())
        held = {position.symbol.upper(): position for position in positions if position.qty != 0}
        self._cancel_stray_kept(held)
        kept = _kept_cover(self.working)
        shares: dict[str, dict[str, Decimal]] = defaultdict(dict)
        for share in plan.shares:
            shares[share.symbol.upper()][share.strategy_id] = abs(share.qty)
        # A symbol is closed whole again, for what the kept orders do not cover, when an earlier
        # kill closed it whole or its kept orders do not fit today's split (an owner that no longer
        # holds it, more than its part); otherwise each strategy sends what its kept orders do not.
        misfits = {
            sym
            for (owner, sym), cover in kept.items()
            if owner is None or owner not in shares[sym] or cover > shares[sym][owner]
        }
        whole = {s.upper() for s in plan.whole} | misfits
        for symbol in sorted(whole):
            if symbol in held:
                covered = sum((c for (_, sym), c in kept.items() if sym == symbol), Decimal(0))
                self._close_rest(held[symbol].symbol, held[symbol].qty, covered)
        for share in plan.shares:
            if share.symbol.upper() not in whole:
                covered = kept.get((share.strategy_id, share.symbol.upper()), Decimal(0))
                self._close_share_rest(share, covered)

    def _cancel_stray_kept(self, held: dict[str, Position]) -> None:
        """Cancel kept orders that no longer close a position: none left, or on the side that would
        grow it (it went flat or flipped since); filled at the open they would open one."""
        still: list[tuple[BrokerOrder, str | None]] = []
        for order, owner in self.working:
            position = held.get(order.symbol.upper())
            closing = position is not None and (order.side is OrderSide.SELL) == (position.qty > 0)
            if closing:
                still.append((order, owner))
                continue
            try:
                self.broker.cancel_order(order.id)
            except BrokerError as exc:
                self.failures.append(f"cancel {order.client_order_id}: {exc}")
            self.failures.append(
                f"an earlier closing order {order.symbol} {order.side.value} {order.qty} no longer closes a "
                "position: canceled"
            )
        self.working = still

    def _close_rest(self, symbol: str, position: Decimal, covered: Decimal) -> None:
        """Close ``position`` whole, less what working closing orders already ``cover``."""
        if covered == 0:
            self._close_whole(symbol)
        elif covered < abs(position):
            self._close_whole(symbol, abs(position) - covered)
        elif covered > abs(position):
            self.failures.append(f"close {symbol}: earlier closing orders cover {covered} of {abs(position)}")

    def _close_share_rest(self, share: Share, covered: Decimal) -> None:
        """One strategy's part, less what its working closing orders already cover."""
        rest = abs(share.qty) - covered
        if rest > 0:
            self._close_share(replace(share, qty=rest if share.qty > 0 else -rest))
        elif rest < 0:
            self.failures.append(
                f"close {share.symbol} for {share.strategy_id}: earlier closing orders cover {covered} "
                f"of {abs(share.qty)}"
            )

    def _books(self) -> list[Share] | None:
        try:
            with Session(self.engine) as session:
                rows = session.execute(
                    select(BookPosition.strategy_id, BookPosition.symbol, BookPosition.qty).where(
                        as_number(BookPosition.qty) != 0
                    )
                ).all()
        except SQLAlchemyError as exc:
            self.failures.append(f"reading the books: {_db_error(exc)}")
            return None
        return [Share(strategy_id, symbol, qty) for strategy_id, symbol, qty in rows]

    def _close_all(self) -> None:
        try:
            # The other orders are canceled already; cancel-all here would cancel the kept ones too.
            results = self.broker.close_all_positions(cancel_orders=not self.working)
        except BrokerError as exc:
            self.failures.append(f"close all positions: {exc}")
            return
        for result in results:
            self._whole_result(result)

    def _close_whole(self, symbol: str, qty: Decimal | None = None) -> None:
        try:
            order = self.broker.close_position(symbol, qty=qty)
        except BrokerError as exc:
            self.failures.append(f"close {symbol}: {exc}")
            return
        self._whole_result(ClosePositionResult(symbol, 200, order))

    def _whole_result(self, result: ClosePositionResult) -> None:
        self.closed.append(result)
        if result.ok:
            self.unattributed.append(result.symbol)
        else:
            self.failures.append(f"close {result.symbol}: HTTP {result.status} {result.message}".strip())

    def _close_share(self, share: Share) -> None:
        """One strategy's part: recorded, then sent under its own id; if it cannot be recorded, the
        broker still closes that quantity (unattributed), since getting flat comes first."""
        try:
            intent = self._record(share)
        except (SQLAlchemyError, TraderError) as exc:
            what = _db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            self.failures.append(f"booking the closing order of {share.strategy_id} {share.symbol}: {what}")
            self._close_whole(share.symbol, abs(share.qty))
            return
        cid = intent.client_order_id
        try:
            order = self.broker.submit_order(intent.to_request())
        except BrokerError as exc:
            self.failures.append(f"close {share.symbol} for {share.strategy_id}: {exc}")
            # A refusal means no order exists; a duplicate id means one does (the reconciler's then).
            if isinstance(exc, InvalidOrderError) and not isinstance(exc, DuplicateClientOrderIdError):
                failed = str(exc)
                self._write(
                    lambda session: record_status(
                        session, cid, OrderStatus.SUBMIT_FAILED, reason=failed, source=SOURCE
                    )
                )
            return
        self.closed.append(ClosePositionResult(share.symbol, 200, order))
        self.booked.append(cid)
        self._write(lambda session: apply_broker_update(session, order, source=SOURCE))

    def _record(self, share: Share) -> OrderIntent:
        with Session(self.engine) as session, session.begin():
            side = share.closing_side()
            # A new id for every kill of the day: an earlier kill's order for this position may be
            # canceled or pending a cancel, and reusing its id would only find that order again.
            earlier = session.scalar(
                select(func.count())
                .select_from(Order)
                .where(
                    Order.strategy_id == share.strategy_id,
                    Order.trading_date == self.day,
                    Order.symbol == share.symbol.upper(),
                    Order.side == side.value,
                    Order.intent == SOURCE,
                )
            )
            intent = OrderIntent(
                share.strategy_id,
                self.day,
                share.symbol,
                side,
                qty=abs(share.qty),
                intent=SOURCE,
                sequence=int(earlier or 0),
            )
            record_intent(session, intent, source=SOURCE)
        return intent

    def _write(self, change: Callable[[Session], object]) -> None:
        # The order is at the broker whatever happens here; the reconciler catches up the row.
        try:
            with Session(self.engine) as session, session.begin():
                change(session)
        except (SQLAlchemyError, UnknownOrderError) as exc:
            what = _db_error(exc) if isinstance(exc, SQLAlchemyError) else str(exc)
            self.failures.append(f"recording a closing order: {what}")


def _leftovers(
    broker: Broker, failures: list[str], closing_ids: set[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What is still open at the broker: orders other than our closing ones, and positions."""
    try:
        orders = broker.list_open_orders()
        positions = broker.get_positions()
    except BrokerError as exc:
        failures.append(f"checking what is left: {exc}")
        return (), ()
    return (
        tuple(
            f"{o.symbol} {o.side.value} {o.qty or o.notional} ({o.status.value})"
            for o in orders
            if o.id not in closing_ids
        ),
        tuple(f"{p.symbol} {p.qty}" for p in positions if p.qty != 0),
    )


def _fetch(broker: Broker, order_id: str) -> BrokerOrder | None:
    try:
        return broker.get_order(order_id)
    except BrokerError as exc:
        log.warning("kill: could not read canceled order %s back: %s", order_id, exc)
        return None


def _apply(engine: Engine, order: BrokerOrder, failures: list[str]) -> None:
    try:
        with Session(engine) as session, session.begin():
            apply_broker_update(session, order, source=SOURCE)
    except UnknownOrderError:
        pass  # placed outside the system; the reconciler adopts it
    except SQLAlchemyError as exc:
        # The cancel happened at the broker; the reconciler brings the row up to date. Closing the
        # positions must not wait for the database.
        failures.append(f"recording the cancel of {order.client_order_id}: {_db_error(exc)}")


def _audit(engine: Engine, actor: str, reason: str, report: KillReport) -> None:
    with Session(engine) as session, session.begin():
        session.add(
            AuditLog(
                actor=actor,
                action="kill.executed",
                target="account",
                reason=reason,
                details={
                    "canceled": [r.order_id for r in report.canceled if r.ok],
                    "closed": list(dict.fromkeys(r.symbol for r in report.closed if r.ok)),
                    "closing_orders": [r.order.client_order_id for r in report.closed if r.order],
                    "booked": list(report.booked),
                    "unattributed": list(report.unattributed),
                    "kept_working": list(report.working),
                    "failures": list(report.failures),
                    "open_orders_left": list(report.open_orders_left),
                    "positions_left": list(report.positions_left),
                },
            )
        )


def _db_error(exc: SQLAlchemyError) -> str:
    """A database error in one line, with its class: what the report shows of it."""
    name, text = type(exc).__name__, first_line(exc)
    return name if text == name else f"{name}: {text}"
