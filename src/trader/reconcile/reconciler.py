"""The reconciler: the broker's orders and positions against our database, healed and journaled.

One :meth:`Reconciler.run_once` does, in this order (each correction in its own transaction, so one
bad order cannot roll back the others):

1. **pull** the broker: its clock, every order submitted within ``lookback`` of its clock plus every
   open order, its positions (and its account, for the P&L snapshot);
2. **orders** — every order row still open on our side (``pending_submit`` or a live broker status)
   and every row the listing names:

   - found at the broker: fills we missed are adopted through the ledger as one *catch-up* fill
     (``catchup:<broker id>:<cumulative qty>``, exactly once, whoever applies it first: this, the
     stream's own catch-up or a late real event), then the status moves to the broker's
     (``reconcile.fill_adopted``, ``reconcile.status_healed``); a ``pending_submit`` row is linked to
     the broker's order this way (the sender died between sending and recording);
   - a ``pending_submit`` row the broker does not know (looked up by ``client_order_id``): left alone
     for ``pending_grace`` after it was recorded, then ``submit_failed`` (``reconcile.submit_failed``).
     **The reconciler never sends an order**: re-sending is the sender's decision (a restarted batch
     re-sends its ``pending_submit`` rows under the same id; the broker adapter resolves a late landing);
   - a row in a live broker status the broker does not know: ``reconcile.order_missing`` (once);
   - a row we ended ourselves (``submit_failed``...) that the broker does hold:
     ``reconcile.order_conflict`` (once), left for a person;
3. **orders we never recorded** (placed by hand at the broker, or by a process that lost its
   database): booked under ``adopt_strategy`` with their fills (``reconcile.order_adopted``);
4. **positions** — every (strategy, symbol) rebuilt from its executions; a ``positions`` row that
   differs (edited by hand) is set back (``reconcile.position_healed``); then per symbol the broker's
   quantity against the table as found and against the executions: beyond the thresholds a
   ``reconcile.drift`` event and a warning in the log;
5. **snapshots** of positions, open orders, P&L and the run itself into ``snapshots``.

The run is safe to repeat and to run beside the live trade-update consumer: the ledger and the order
state machine take the same per-position locks and dedupe every fill, so a second run finds nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session, sessionmaker

from trader.broker.base import Account, Broker, BrokerOrder, OrderQuery
from trader.broker.base import Position as BrokerPosition
from trader.broker.errors import BrokerError
from trader.domain.enums import OrderSide, OrderStatus
from trader.domain.json import json_ready
from trader.execution.orders import (
    OrderConflictError,
    StatusOutcome,
    apply_broker_update,
    get_order,
    record_status,
)
from trader.execution.sql import insert_if_absent, lock_position
from trader.execution.state_machine import LOCAL_TERMINAL, OPEN_BROKER
from trader.portfolio.ledger import (
    Fill,
    LedgerError,
    PositionState,
    apply_fill,
    catch_up_id,
    market_date,
    realized_pnl,
)
from trader.reconcile.drift import (
    ZERO,
    DriftAlert,
    ExecutionFact,
    ReconcileConfig,
    drift_alert,
    rebuild_position,
    same_position,
)
from trader.store.db import session_factory, transaction
from trader.store.models import ALL_STRATEGIES, Event, Execution, Order, Position, Snapshot
from trader.store.types import as_number

log = logging.getLogger(__name__)

SOURCE = "reconciler"
FILL_ADOPTED = "reconcile.fill_adopted"
STATUS_HEALED = "reconcile.status_healed"
SUBMIT_FAILED = "reconcile.submit_failed"
ORDER_MISSING = "reconcile.order_missing"
ORDER_CONFLICT = "reconcile.order_conflict"
ORDER_ADOPTED = "reconcile.order_adopted"
POSITION_HEALED = "reconcile.position_healed"
DRIFT = "reconcile.drift"
#: Kinds journaled once per order, however many runs see the same anomaly.
_ONCE = frozenset({ORDER_MISSING, ORDER_CONFLICT})
#: Our statuses of an order that may still change at the broker.
_OPEN_HERE = frozenset({OrderStatus.PENDING_SUBMIT}) | OPEN_BROKER


@dataclass(frozen=True)
class Correction:
    """One thing a run changed or flagged: its ``events`` kind, what it is about, and details."""

    kind: str
    subject: str
    detail: dict[str, Any]


@dataclass
class ReconcileReport:
    """What one run saw and did. ``clean`` is True when it found nothing to heal and no drift."""

    started_at: datetime
    finished_at: datetime | None = None
    broker_orders: int = 0
    orders_checked: int = 0
    positions_checked: int = 0
    pending_waiting: int = 0
    corrections: list[Correction] = field(default_factory=list)
    drift: list[DriftAlert] = field(default_factory=list)
    snapshots: int = 0

    @property
    def clean(self) -> bool:
        return not self.corrections and not self.drift

    @property
    def seconds(self) -> float:
        end = self.finished_at or self.started_at
        return (end - self.started_at).total_seconds()

    def count(self, kind: str) -> int:
        """How many corrections of ``kind`` (e.g. ``reconcile.fill_adopted``) this run made."""
        return sum(1 for c in self.corrections if c.kind == kind)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for correction in self.corrections:
            out[correction.kind] += 1
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (what the ``reconcile`` snapshot stores and the CLI prints)."""
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": None if self.finished_at is None else self.finished_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "clean": self.clean,
            "broker_orders": self.broker_orders,
            "orders_checked": self.orders_checked,
            "positions_checked": self.positions_checked,
            "pending_waiting": self.pending_waiting,
            "corrections": self.counts(),
            "drift": [json_ready(asdict(alert)) for alert in self.drift],
        }


@dataclass(frozen=True)
class _BrokerView:
    """The broker's side, read once per run."""

    now: datetime
    orders: dict[str, BrokerOrder]
    positions: dict[str, BrokerPosition]


class Reconciler:
    """Diffs the broker with the database and heals it; see the module docstring.

    ``is_ready`` is set once a run has completed (the gateway's boot condition: accept no order
    before it); ``last_report`` is the newest run's report. ``now`` is our clock (UTC), used for the
    pending grace period and snapshot times; the listing window uses the broker's clock.
    """

    def __init__(
        self,
        engine: Engine,
        broker: Broker,
        config: ReconcileConfig | None = None,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._factory: sessionmaker[Session] = session_factory(engine)
        self._broker = broker
        self.config = config or ReconcileConfig()
        self._now = now or (lambda: datetime.now(UTC))
        self.is_ready = threading.Event()
        self.last_report: ReconcileReport | None = None
        self._run_lock = threading.Lock()

    # ------------------------------------------------------------------------------------ runs

    def run_once(self) -> ReconcileReport:
        """One full reconciliation (one at a time per reconciler). Raises ``BrokerError`` when the
        broker cannot be read at all; nothing is changed then."""
        with self._run_lock:
            report = ReconcileReport(started_at=self._now())
            view = self._pull()
            report.broker_orders = len(view.orders)
            self._reconcile_orders(view, report)
            self._adopt_unknown(view, report)
            self._reconcile_positions(view, report)
            report.finished_at = self._now()
            if self.config.snapshots:
                report.snapshots = self._snapshot(view, report)
            self.last_report = report
            self.is_ready.set()
            _log_report(report)
            return report

    def run_forever(self, interval: float, stop: threading.Event, *, max_runs: int | None = None) -> int:
        """Run every ``interval`` seconds until ``stop`` is set (or ``max_runs`` runs); return the runs.

        A broker or database failure is logged and retried at the next tick, never fatal.
        """
        runs = 0
        while not stop.is_set() and (max_runs is None or runs < max_runs):
            started = time.monotonic()
            try:
                self.run_once()
            except Exception:  # a service loop must outlive one bad run
                log.exception("reconcile run failed; retrying in %.0f s", interval)
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            stop.wait(max(0.0, interval - (time.monotonic() - started)))
        return runs

    # ------------------------------------------------------------------------------------ pull

    def _pull(self) -> _BrokerView:
        now = self._broker.get_clock().timestamp
        listed = self._broker.list_orders(OrderQuery.ALL, after=now - self.config.lookback)
        orders = {order.client_order_id: order for order in listed}
        orders.update((order.client_order_id, order) for order in self._broker.list_open_orders())
        positions = {p.symbol.upper(): p for p in self._broker.get_positions()}
        return _BrokerView(now=now, orders=orders, positions=positions)

    # ---------------------------------------------------------------------------------- orders

    def _reconcile_orders(self, view: _BrokerView, report: ReconcileReport) -> None:
        with self._factory() as session:
            open_here = [status.value for status in _OPEN_HERE]
            rows = session.execute(
                select(Order.client_order_id, Order.status, Order.created_at).where(
                    or_(Order.status.in_(open_here), Order.client_order_id.in_(list(view.orders)))
                )
            ).all()
        for client_order_id, status, created_at in rows:
            report.orders_checked += 1
            found = view.orders.get(client_order_id)
            if found is None and OrderStatus(status) in _OPEN_HERE:
                try:
                    found = self._broker.get_order_by_client_id(client_order_id)
                except BrokerError as exc:
                    log.warning("reconcile: cannot look up %s at the broker: %s", client_order_id, exc)
                    continue
            if found is not None:
                self._heal_order(client_order_id, found, report)
            elif OrderStatus(status) is OrderStatus.PENDING_SUBMIT:
                self._resolve_unsent(client_order_id, created_at, report)
            elif OrderStatus(status) in OPEN_BROKER:
                self._flag(client_order_id, ORDER_MISSING, {"status": status}, report)

    def _heal_order(self, client_order_id: str, found: BrokerOrder, report: ReconcileReport) -> None:
        """Adopt the fills we missed, then the broker's status (one transaction)."""
        try:
            with transaction(self._factory) as session:
                order = get_order(session, client_order_id)
                assert order is not None
                if OrderStatus(order.status) in LOCAL_TERMINAL:
                    conflict = {"status": order.status, "broker_status": found.status.value}
                    self._flag_in(
                        session, client_order_id, order.strategy_id, ORDER_CONFLICT, conflict, report
                    )
                    return
                self._adopt_fills(session, order, found, report)
                change = apply_broker_update(session, found, source=SOURCE)
                detail = {
                    "from": change.previous.value,
                    "to": found.status.value,
                    "broker_order_id": found.id,
                }
                if change.outcome is StatusOutcome.CHANGED:
                    self._correct(session, STATUS_HEALED, order.strategy_id, client_order_id, detail, report)
                elif change.outcome is StatusOutcome.CONFLICT:
                    detail["error"] = change.message
                    self._flag_in(session, client_order_id, order.strategy_id, ORDER_CONFLICT, detail, report)
        except (OrderConflictError, LedgerError) as exc:
            log.warning("reconcile: order %s cannot be healed: %s", client_order_id, exc)
            self._flag(
                client_order_id, ORDER_CONFLICT, {"error": str(exc), "broker_order_id": found.id}, report
            )

    def _adopt_fills(
        self, session: Session, order: Order, found: BrokerOrder, report: ReconcileReport
    ) -> None:
        if found.filled_qty <= order.filled_qty:
            return
        if found.filled_avg_price is None or found.filled_avg_price <= 0:
            raise LedgerError(f"the broker reports {found.filled_qty} filled without an average price")
        fill = Fill(
            execution_id=catch_up_id(found.id, found.filled_qty),
            client_order_id=order.client_order_id,
            symbol=found.symbol,
            side=OrderSide(found.side),
            qty=found.filled_qty,
            price=found.filled_avg_price,
            executed_at=found.filled_at or found.updated_at,
            broker_order_id=found.id,
            order_filled_qty=found.filled_qty,
            order_filled_avg_price=found.filled_avg_price,
            catch_up=True,
        )
        before = order.filled_qty
        result = apply_fill(session, fill, source=SOURCE)
        if result.applied:
            detail = {
                "execution_id": fill.execution_id,
                "qty": str(result.qty),
                "price": str(result.price),
                "order_filled_before": str(before),
                "order_filled_after": str(found.filled_qty),
                "position_qty": str(result.position_qty),
            }
            self._correct(session, FILL_ADOPTED, order.strategy_id, order.client_order_id, detail, report)

    def _resolve_unsent(self, client_order_id: str, created_at: datetime, report: ReconcileReport) -> None:
        """A ``pending_submit`` row the broker does not have: wait out the grace, then fail it."""
        age = self._now() - created_at
        if age < self.config.pending_grace:
            report.pending_waiting += 1
            return
        reason = (
            f"never reached the broker: not found by client_order_id {age.total_seconds():.0f} s after it "
            "was recorded (reconciler); it is not re-sent automatically"
        )
        with transaction(self._factory) as session:
            change = record_status(
                session, client_order_id, OrderStatus.SUBMIT_FAILED, reason=reason, source=SOURCE
            )
            if change.outcome is StatusOutcome.CHANGED:
                order = get_order(session, client_order_id)
                strategy = order.strategy_id if order is not None else None
                detail = {"age_seconds": round(age.total_seconds(), 1)}
                self._correct(session, SUBMIT_FAILED, strategy, client_order_id, detail, report)

    def _adopt_unknown(self, view: _BrokerView, report: ReconcileReport) -> None:
        """Book broker orders we never recorded under ``adopt_strategy``, with their fills."""
        if not view.orders:
            return
        with self._factory() as session:
            known = set(
                session.execute(
                    select(Order.client_order_id).where(Order.client_order_id.in_(list(view.orders)))
                ).scalars()
            )
        for client_order_id, found in view.orders.items():
            if client_order_id in known:
                continue
            with transaction(self._factory) as session:
                values = adopted_order_values(found, self.config.adopt_strategy)
                if insert_if_absent(session, Order, values, ["client_order_id"]):
                    detail = {
                        "broker_order_id": found.id,
                        "symbol": found.symbol,
                        "side": found.side.value,
                        "qty": None if found.qty is None else str(found.qty),
                        "status": found.status.value,
                        "filled_qty": str(found.filled_qty),
                    }
                    strategy = self.config.adopt_strategy
                    self._correct(session, ORDER_ADOPTED, strategy, client_order_id, detail, report)
            self._heal_order(client_order_id, found, report)

    # ------------------------------------------------------------------------------- positions

    def _reconcile_positions(self, view: _BrokerView, report: ReconcileReport) -> None:
        with self._factory() as session:
            keys = {(r[0], r[1]) for r in session.execute(select(Position.strategy_id, Position.symbol))}
            keys |= {
                (r[0], r[1])
                for r in session.execute(select(Execution.strategy_id, Execution.symbol).distinct())
            }
        recorded: dict[str, Decimal] = defaultdict(lambda: ZERO)
        ledger: dict[str, Decimal] = defaultdict(lambda: ZERO)
        for strategy_id, symbol in sorted(keys):
            report.positions_checked += 1
            found, expected = self._heal_position(strategy_id, symbol, report)
            recorded[symbol.upper()] += found.qty
            ledger[symbol.upper()] += expected.qty
        for symbol in sorted(set(recorded) | set(view.positions)):
            at_broker = view.positions.get(symbol)
            broker_qty = at_broker.qty if at_broker is not None else ZERO
            price = _price_of(at_broker)
            alert = drift_alert(symbol, broker_qty, recorded[symbol], ledger[symbol], price, self.config)
            if alert is not None:
                report.drift.append(alert)
                log.warning(
                    "reconcile drift %s: broker %s, positions table %s, executions %s (%s)",
                    symbol, broker_qty, alert.recorded_qty, alert.ledger_qty,
                    "healed" if alert.resolved else "NOT resolved: act by hand",
                )  # fmt: skip
                with transaction(self._factory) as session:
                    session.add(
                        Event(
                            kind=DRIFT,
                            source=SOURCE,
                            correlation_id=symbol,
                            payload=json_ready(asdict(alert)),
                        )
                    )

    def _heal_position(
        self, strategy_id: str, symbol: str, report: ReconcileReport
    ) -> tuple[PositionState, PositionState]:
        """Set the ``positions`` row back to what its executions give; return (as found, expected)."""
        with transaction(self._factory) as session:
            lock_position(session, strategy_id, symbol)
            rows = session.execute(
                select(Execution).where(Execution.strategy_id == strategy_id, Execution.symbol == symbol)
            ).scalars()
            expected = rebuild_position(
                ExecutionFact(e.executed_at, e.execution_id, OrderSide(e.side), e.qty, e.price, e.fee)
                for e in rows
            )
            row = session.get(Position, (strategy_id, symbol), populate_existing=True)
            found = (
                PositionState() if row is None else PositionState(row.qty, row.avg_price, row.realized_pnl)
            )
            if same_position(found, expected):
                return found, expected
            if row is None:
                row = Position(strategy_id=strategy_id, symbol=symbol)
                session.add(row)
            row.qty, row.avg_price, row.realized_pnl = expected.qty, expected.avg_price, expected.realized
            detail = {"before": _state(found), "after": _state(expected)}
            subject = f"{strategy_id}:{symbol}"
            self._correct(session, POSITION_HEALED, strategy_id, subject, detail, report, correlation=symbol)
            return found, expected

    # ------------------------------------------------------------------------------- snapshots

    def _snapshot(self, view: _BrokerView, report: ReconcileReport) -> int:
        """Write the positions, open orders, P&L and run snapshots; return how many rows."""
        try:
            account: Account | None = self._broker.get_account()
        except BrokerError as exc:
            log.warning("reconcile: no account for the P&L snapshot: %s", exc)
            account = None
        ts = self._now()
        with transaction(self._factory) as session:
            positions = list(session.execute(select(Position).where(as_number(Position.qty) != 0)).scalars())
            open_orders = list(
                session.execute(
                    select(Order)
                    .where(Order.status.in_([s.value for s in _OPEN_HERE]))
                    .order_by(Order.created_at)
                ).scalars()
            )
            prices = {symbol: _price_of(p) for symbol, p in view.positions.items()}
            unrealized = sum(
                (p.qty * ((prices.get(p.symbol.upper()) or p.avg_price) - p.avg_price) for p in positions),
                ZERO,
            )
            realized = realized_pnl(session, ALL_STRATEGIES, market_date(view.now))
            nav = account.equity if account is not None else None
            cash = account.cash if account is not None else None
            rows = [
                Snapshot(
                    ts=ts, kind="positions", nav=nav, cash=cash, details=_positions_details(positions, view)
                ),
                Snapshot(
                    ts=ts, kind="open_orders", details={"orders": [_order_details(o) for o in open_orders]}
                ),
                Snapshot(
                    ts=ts,
                    kind="pnl",
                    strategy_id=ALL_STRATEGIES,
                    nav=nav,
                    cash=cash,
                    pnl=realized + unrealized,
                    details={
                        "trading_date": market_date(view.now).isoformat(),
                        "realized": str(realized),
                        "unrealized": str(unrealized),
                    },
                ),
                Snapshot(ts=ts, kind="reconcile", details=report.summary()),
            ]
            session.add_all(rows)
        return len(rows)

    # ------------------------------------------------------------------------------- journaling

    def _correct(
        self,
        session: Session,
        kind: str,
        strategy_id: str | None,
        subject: str,
        detail: dict[str, Any],
        report: ReconcileReport,
        *,
        correlation: str | None = None,
    ) -> None:
        session.add(
            Event(
                kind=kind,
                source=SOURCE,
                strategy_id=strategy_id,
                correlation_id=correlation or subject,
                payload=json_ready(detail),
            )
        )
        report.corrections.append(Correction(kind, subject, detail))
        log.info("reconcile %s %s: %s", kind, subject, detail)

    def _flag(self, client_order_id: str, kind: str, detail: dict[str, Any], report: ReconcileReport) -> None:
        with transaction(self._factory) as session:
            order = get_order(session, client_order_id)
            strategy = order.strategy_id if order is not None else None
            self._flag_in(session, client_order_id, strategy, kind, detail, report)

    def _flag_in(
        self,
        session: Session,
        client_order_id: str,
        strategy_id: str | None,
        kind: str,
        detail: dict[str, Any],
        report: ReconcileReport,
    ) -> None:
        """Journal an anomaly a person must look at, once per order (later runs stay quiet)."""
        if kind in _ONCE:
            seen = session.execute(
                select(Event.id).where(Event.kind == kind, Event.correlation_id == client_order_id).limit(1)
            ).first()
            if seen is not None:
                return
        log.warning("reconcile %s %s: %s", kind, client_order_id, detail)
        self._correct(session, kind, strategy_id, client_order_id, detail, report)


def boot_reconcile(
    engine: Engine, broker: Broker, config: ReconcileConfig | None = None
) -> tuple[Reconciler, ReconcileReport]:
    """Reconcile once at start-up; return the reconciler (``is_ready`` set) and its report.

    The gateway calls this before it accepts orders. It raises (and ``is_ready`` stays unset) when the
    broker cannot be read: a gateway must not trade on books it could not check.
    """
    reconciler = Reconciler(engine, broker, config)
    return reconciler, reconciler.run_once()


# ------------------------------------------------------------------------------------- helpers


def adopted_order_values(found: BrokerOrder, strategy_id: str, intent: str = "adopted") -> dict[str, Any]:
    """The ``orders`` row of a broker order we did not send ourselves, booked under ``strategy_id``:
    in ``pending_submit`` with nothing filled, so that applying the broker's report and fills (the
    reconciler's healing, the trade-update stream) moves it on like any order of ours."""
    qty, notional = (found.qty, None) if found.qty is not None else (None, found.notional)
    return {
        "client_order_id": found.client_order_id,
        "strategy_id": strategy_id,
        "trading_date": market_date(found.submitted_at),
        "intent": intent,
        "symbol": found.symbol.upper(),
        "side": found.side.value,
        "qty": qty,
        "notional": notional,
        "order_type": found.type.value,
        "limit_price": found.limit_price,
        "stop_price": found.stop_price,
        "time_in_force": found.time_in_force.value,
        "status": OrderStatus.PENDING_SUBMIT.value,
        "filled_qty": ZERO,
    }


def _price_of(position: BrokerPosition | None) -> Decimal | None:
    if position is None:
        return None
    return position.current_price or position.avg_entry_price or None


def _state(state: PositionState) -> dict[str, str]:
    return {"qty": str(state.qty), "avg_price": str(state.avg_price), "realized_pnl": str(state.realized)}


def _positions_details(positions: Iterable[Position], view: _BrokerView) -> dict[str, Any]:
    return {
        "internal": [
            {
                "strategy_id": p.strategy_id,
                "symbol": p.symbol,
                **_state(PositionState(p.qty, p.avg_price, p.realized_pnl)),
            }
            for p in positions
        ],
        "broker": [
            {
                "symbol": s,
                "qty": str(p.qty),
                "avg_entry_price": str(p.avg_entry_price),
                "price": str(_price_of(p)),
            }
            for s, p in sorted(view.positions.items())
        ],
    }


def _order_details(order: Order) -> dict[str, Any]:
    details: dict[str, Any] = json_ready(
        {
            "client_order_id": order.client_order_id,
            "strategy_id": order.strategy_id,
            "symbol": order.symbol,
            "side": order.side,
            "qty": order.qty,
            "notional": order.notional,
            "status": order.status,
            "filled_qty": order.filled_qty,
            "broker_order_id": order.broker_order_id,
        }
    )
    return details


def _log_report(report: ReconcileReport) -> None:
    if report.clean:
        log.info(
            "reconcile: clean (%d orders, %d positions checked)",
            report.orders_checked,
            report.positions_checked,
        )
    else:
        log.warning("reconcile: %s, %d drift alert(s)", report.counts(), len(report.drift))
