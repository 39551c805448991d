"""One paper-trading day, end to end, on the code path live trading uses.

``trader paper-run --date D`` runs :meth:`PaperDay.run`:

1. **data** — ingest the previous session's bars from the broker's market data (the same
   ``alpaca-py`` path as real Alpaca) through raw → adjust → gate → store, then refuse to trade
   (:class:`~trader.data.freshness.StalenessError`) unless the store holds a clean bar of that
   session;
2. **signal** — the production model's target weights (:class:`~trader.signal.service.SignalService`,
   recorded once per day);
3. **open** — with the built-in paper broker, move its simulated clock to the open of ``D``;
4. **orders** — target weights × account equity − current positions → orders
   (:func:`~trader.portfolio.allocator.allocate`, priced at the previous close from the raw
   recorded bars that passed the quality gate: a symbol whose bar was quarantined has no price and
   is not traded that day), pre-trade risk, and the execution service (record → risk → send). The inputs
   of the allocation are journaled (``events`` kind ``paper.plan``) for ``trader replay``;
5. **fills** — the broker's trade-update stream is consumed while it waits (with a timeout) for
   every sent order to finish; each fill is applied to executions, positions and P&L exactly once;
6. **close** — with the built-in broker, move the clock past the close (unfilled day orders expire);
7. **P&L** — the ``pnl`` rows of the day and the report in ``ARTIFACTS_DIR/reports/<D>/``.

Running a day again sends nothing new: the day's orders exist (deterministic ``client_order_id``),
so only orders still ``pending_submit`` (a crash before the broker answered) are sent, and the
broker adapter looks those up by ``client_order_id`` before sending.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import polars as pl
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from trader.broker.base import Broker, TradeUpdate
from trader.config import Settings
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import StalenessError
from trader.data.paths import DataPaths
from trader.data.raw import RawRecorder
from trader.data.store import AdjustedStore
from trader.domain.enums import OrderSide, OrderStatus
from trader.errors import TraderError, first_line
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService, SubmitOutcome
from trader.execution.state_machine import is_terminal
from trader.ops.breakers import BreakerState, BreakerStoreError, TripReason, breaker_from_settings
from trader.paperbroker.runner import PaperBrokerAdmin
from trader.portfolio.allocator import AllocationOptions, IntentReason, allocate
from trader.portfolio.allocator import OrderIntent as AllocatorIntent
from trader.portfolio.ledger import ACCOUNT, daily_pnl_rows, market_day_bounds
from trader.portfolio.report import build_daily_report, write_daily_report
from trader.risk.limits import EffectiveLimits, Limit
from trader.risk.snapshot import Holding, PortfolioSnapshot
from trader.risk.store import resolve_limits
from trader.signal.service import SignalOutcome, SignalService
from trader.store.models import Event, Execution, Order, Pnl

#: ``orders.intent`` of the day's rebalance orders (part of their ``client_order_id``).
REBALANCE = "rebalance"
#: ``events.kind`` of the journaled allocation inputs.
PLAN_EVENT = "paper.plan"
#: An exit is sliced into at most this many orders (see :func:`order_intents`).
MAX_EXIT_SLICES = 20
#: Minutes after the open at which the day's orders are sent (the built-in broker's clock).
SEND_AFTER_OPEN = timedelta(minutes=5)

StageCallback = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """Everything the allocation and the risk check of a day saw, as journaled for ``trader replay``."""

    trading_date: date
    as_of: date
    signal_run_id: int
    snapshot: PortfolioSnapshot
    prices: dict[str, Decimal]
    options: AllocationOptions
    orders: list[tuple[str, str, Decimal]]
    #: The risk limits the day's orders were checked against (``None`` in plans journaled before
    #: they were: a replay then uses today's).
    limits: EffectiveLimits | None = None
    #: The circuit breaker's reason when it was TRIPPED (or could not be read) as the orders were
    #: checked; ``None`` when it was OPEN.
    breaker: str | None = None
    #: The quality gate's outlier threshold (``DATA_OUTLIER_THRESHOLD``) the day's data was checked
    #: with (``None`` in plans journaled before it was: a replay then uses today's).
    outlier_threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "trading_date": self.trading_date.isoformat(),
            "as_of": self.as_of.isoformat(),
            "signal_run_id": self.signal_run_id,
            "snapshot": {
                "equity": str(snap.equity),
                "cash": str(snap.cash),
                "buying_power": str(snap.buying_power),
                "day_pnl": str(snap.day_pnl),
                "market_open": snap.market_open,
                "as_of": snap.as_of.isoformat() if snap.as_of else None,
                "positions": {s: [str(h.qty), str(h.price)] for s, h in sorted(snap.positions.items())},
            },
            "prices": {s: str(p) for s, p in self.prices.items()},
            "options": {k: str(v) for k, v in vars(self.options).items()},
            "orders": [[symbol, side, str(qty)] for symbol, side, qty in self.orders],
            "limits": None if self.limits is None else _limits_json(self.limits),
            "breaker": self.breaker,
            "outlier_threshold": self.outlier_threshold,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        snap = data["snapshot"]
        snapshot = PortfolioSnapshot(
            equity=Decimal(snap["equity"]),
            cash=Decimal(snap["cash"]),
            buying_power=Decimal(snap["buying_power"]),
            positions={s: Holding(Decimal(q), Decimal(p)) for s, (q, p) in snap["positions"].items()},
            day_pnl=Decimal(snap["day_pnl"]),
            market_open=bool(snap["market_open"]),
            as_of=datetime.fromisoformat(snap["as_of"]) if snap["as_of"] else None,
        )
        raw = data["options"]
        options = AllocationOptions(
            fractional=raw["fractional"] == "True",
            min_order_notional=Decimal(raw["min_order_notional"]),
            cash_buffer=Decimal(raw["cash_buffer"]),
            close_absent=raw["close_absent"] == "True",
            allow_short=raw["allow_short"] == "True",
            max_gross_weight=Decimal(raw["max_gross_weight"]),
            weight_tolerance=Decimal(raw["weight_tolerance"]),
        )
        return cls(
            trading_date=date.fromisoformat(data["trading_date"]),
            as_of=date.fromisoformat(data["as_of"]),
            signal_run_id=int(data["signal_run_id"]),
            snapshot=snapshot,
            prices={s: Decimal(p) for s, p in data["prices"].items()},
            options=options,
            orders=[(symbol, side, Decimal(qty)) for symbol, side, qty in data["orders"]],
            limits=None if data.get("limits") is None else _limits_from_json(data["limits"]),
            breaker=data.get("breaker"),
            outlier_threshold=data.get("outlier_threshold"),
        )


_MONEY_LIMITS = ("max_order_notional", "max_position_notional", "max_gross_exposure", "daily_loss_limit")


def _limits_json(limits: EffectiveLimits) -> dict[str, Any]:
    money = {name: getattr(limits, name) for name in _MONEY_LIMITS}
    return {
        "strategy_id": limits.strategy_id,
        **{name: None if lim is None else [str(lim.value), lim.source] for name, lim in money.items()},
        "blacklist": dict(limits.blacklist),
        "disabled_by": limits.disabled_by,
    }


def _limits_from_json(data: dict[str, Any]) -> EffectiveLimits:
    money = {
        name: None if data[name] is None else Limit(name, Decimal(data[name][0]), data[name][1])
        for name in _MONEY_LIMITS
    }
    return EffectiveLimits(
        strategy_id=data["strategy_id"],
        **money,
        blacklist=dict(data["blacklist"]),
        disabled_by=data["disabled_by"],
    )


class PaperDayError(TraderError):
    """A paper day could not run (not a session, no data, no model...)."""


@dataclass
class DayResult:
    """What a paper day did."""

    trading_date: date
    signal: SignalOutcome | None = None
    orders: list[SubmitOutcome] = field(default_factory=list)
    reused_orders: bool = False
    fills: int = 0
    unfinished: list[str] = field(default_factory=list)
    equity: Decimal | None = None
    realized: Decimal = Decimal(0)
    unrealized: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    report_dir: str | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rejected(self) -> list[SubmitOutcome]:
        bad = {OrderStatus.RISK_REJECTED, OrderStatus.REJECTED, OrderStatus.SUBMIT_FAILED}
        return [o for o in self.orders if o.status in bad]

    @property
    def sent(self) -> int:
        return sum(1 for o in self.orders if o.sent)


def raw_closes(paths: DataPaths, day: date) -> dict[str, Decimal]:
    """The raw (traded, unadjusted) close of every symbol on ``day`` from the raw recorded bars,
    whether or not the quality gate accepted the bar (what the store has received)."""
    raw = RawRecorder(paths).read(start=day, end=day)
    valid = raw.filter(pl.col("close").is_finite() & (pl.col("close") > 0))
    newest = valid.group_by("symbol", maintain_order=True).last()
    return {row["symbol"]: Decimal(repr(row["close"])) for row in newest.iter_rows(named=True)}


def clean_closes(paths: DataPaths, day: date) -> dict[str, Decimal]:
    """:func:`raw_closes` of the symbols whose bar on ``day`` passed the quality gate (is in the
    adjusted store): the prices orders are valued at and positions marked at. A quarantined bar
    (a bad tick, a conflict) gives no price, so the allocator leaves that symbol alone that day
    instead of trading it at a price the gate refused. The raw close must also be the one the
    adjusted bar was made from (close × factor): a newer raw version an ingest recorded but then
    refused as a whole was never checked, so that symbol gets no price either."""
    clean = AdjustedStore(paths).read(start=day, end=day)
    closes = raw_closes(paths, day)
    return {
        symbol: closes[symbol]
        for symbol, close, factor in clean.select("symbol", "close", "factor").iter_rows()
        if symbol in closes and math.isclose(float(closes[symbol]) * factor, close, rel_tol=1e-9)
    }


class PaperDay:
    """Runs paper days for one strategy against one broker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        broker: Broker,
        *,
        strategy: str,
        admin: PaperBrokerAdmin | None = None,
        ingest: Callable[[date], None] | None = None,
        fill_timeout: float = 60.0,
        allocation: AllocationOptions | None = None,
        calendar: TradingCalendar | None = None,
        redis: Any | None = None,
        on_stage: StageCallback | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._broker = broker
        self.strategy = strategy
        self._admin = admin
        self._ingest = ingest
        self._fill_timeout = fill_timeout
        self._allocation = allocation or AllocationOptions(cash_buffer=Decimal("0.02"))
        self._calendar = calendar or trading_calendar()
        self._paths = DataPaths(settings.data_dir)
        # While the breaker is TRIPPED only exits are sent; after a kill no signal is computed.
        breaker = breaker_from_settings(settings, engine)
        self._signals = SignalService(
            engine,
            self._paths,
            strategy=strategy,
            redis=redis,
            redis_prefix=settings.redis_key_prefix,
            calendar=self._calendar,
            breaker=breaker,
        )
        self._execution = ExecutionService(engine, broker, settings, source="paper-run", breaker=breaker)
        self._on_stage = on_stage or (lambda _message: None)

    # ------------------------------------------------------------------ the day

    def run(self, day: date) -> DayResult:
        if not self._calendar.is_session(day):
            raise PaperDayError(
                f"{day} is not a trading session (XNYS); pick a weekday that is not a holiday"
            )
        self._check_not_behind(day)
        result = DayResult(day)
        as_of = self._calendar.previous_session(day)
        closes: dict[str, Decimal] = self._stage(result, "data", lambda: self._data(as_of))
        result.signal = self._stage(result, "signal", lambda: self._signals.run(day))
        admin = self._admin
        if admin is not None:
            opening = self._calendar.session_open(day) + SEND_AFTER_OPEN
            self._stage(result, "open", lambda: admin.set_clock(opening))
        stream = self._broker.trade_updates(self._on_trade_update)
        stream.start()
        try:
            self._stage(result, "orders", lambda: self._orders(result, as_of, closes))
            self._stage(result, "fills", lambda: self._wait_for_fills(result))
            if admin is not None:
                closing = self._calendar.session_close(day) + timedelta(minutes=1)
                self._stage(result, "close", lambda: admin.set_clock(closing))
                self._wait_for_fills(result, timeout=min(self._fill_timeout, 10.0))
        finally:
            stream.stop()
        self._stage(result, "pnl", lambda: self._pnl(result))
        return result

    def _check_not_behind(self, day: date) -> None:
        """Refuse a day never run that lies before a day this strategy already ran: its orders would
        be sized on today's positions and P&L, and its fills land after the later days' in the books.
        Running a day again (it has orders, P&L or a journaled plan) is fine: it sends nothing new."""
        orders = select(Order.trading_date).where(
            Order.strategy_id == self.strategy, Order.intent == REBALANCE
        )
        pnl = select(Pnl.trading_date).where(Pnl.strategy_id == self.strategy)
        days = orders.union(pnl).subquery()
        mark = f"{self.strategy}:"  # a plan's correlation id is "<strategy>:<day>"
        plans = select(Event.correlation_id).where(
            Event.kind == PLAN_EVENT, Event.correlation_id.startswith(mark, autoescape=True)
        )
        with Session(self._engine) as session:
            ran = set(session.scalars(select(days.c.trading_date).where(days.c.trading_date >= day)))
            planned = {_day_of(text.removeprefix(mark)) for text in session.scalars(plans) if text}
        ran |= {planned_day for planned_day in planned if planned_day is not None and planned_day >= day}
        if ran and day not in ran:
            later = max(ran)
            raise PaperDayError(
                f"{day} comes before {later}, which strategy {self.strategy} has already traded: running "
                f"it now would trade on the positions of {later}; run days in order (see a recorded day "
                f"again with 'trader replay --date')"
            )

    def _on_trade_update(self, update: TradeUpdate) -> None:
        self._execution.on_trade_update(update)

    def _stage(self, result: DayResult, name: str, work: Callable[[], Any]) -> Any:
        self._on_stage(name)
        started = time.perf_counter()
        try:
            return work()
        finally:
            result.stage_seconds[name] = round(time.perf_counter() - started, 3)

    def _data(self, as_of: date) -> dict[str, Decimal]:
        """Ingest ``as_of`` if needed; the raw closes of its clean bars (the prices the day's orders
        are valued at)."""
        if self._ingest is not None:
            self._ingest(as_of)
        closes = clean_closes(self._paths, as_of)
        if not closes:
            # Fail closed: without the previous session's bars there is no signal to trust.
            raise StalenessError(latest=None, expected=as_of, sessions_behind=None)
        return closes

    def _orders(self, result: DayResult, as_of: date, prices: dict[str, Decimal]) -> None:
        existing = self._day_orders(result.trading_date)
        snapshot = self._snapshot()
        # Resolved once: the orders are sliced and checked against the limits the plan journals.
        with Session(self._engine) as session:
            limits = resolve_limits(session, self.strategy, self._settings)
        if existing:
            result.reused_orders = True
            intents = [_intent_of(order) for order in existing]
        else:
            intents = self._plan(result, as_of, snapshot, prices, limits)
        result.orders = self._execution.submit_batch(intents, snapshot, prices.get, limits)

    def _plan(
        self,
        result: DayResult,
        as_of: date,
        snapshot: PortfolioSnapshot,
        prices: dict[str, Decimal],
        limits: EffectiveLimits,
    ) -> list[OrderIntent]:
        """Target weights → orders, journaling every input so ``trader replay`` can redo it."""
        assert result.signal is not None
        positions = {symbol: holding.qty for symbol, holding in snapshot.positions.items()}
        weights = dict(result.signal.result.weights)
        allocation = allocate(weights, snapshot.equity, positions, prices, self._allocation)
        plan = Plan(
            trading_date=result.trading_date,
            as_of=as_of,
            signal_run_id=result.signal.run_id,
            snapshot=snapshot,
            prices={s: prices[s] for s in sorted(set(weights) | set(positions)) if s in prices},
            options=self._allocation,
            orders=[(o.symbol, o.side.value, o.qty) for o in allocation.orders],
            limits=limits,
            breaker=self._breaker_reason(),
            outlier_threshold=self._settings.data_outlier_threshold,
        )
        with Session(self._engine) as session, session.begin():
            session.add(
                Event(
                    kind=PLAN_EVENT,
                    source="paper-run",
                    strategy_id=self.strategy,
                    correlation_id=f"{self.strategy}:{result.trading_date}",
                    payload=plan.to_json(),
                )
            )
        return rebalance_intents(
            self._engine, self._settings, self.strategy, result.trading_date, allocation.orders, limits
        )

    def _breaker_reason(self) -> str | None:
        breaker = self._execution.breaker
        if breaker is None:
            return None
        try:
            status = breaker.status()
        except BreakerStoreError as exc:  # the execution service then lets only exits through
            return f"{TripReason.MANUAL.value}: state unreadable ({first_line(exc)})"
        return status.reason or "unknown" if status.state is BreakerState.TRIPPED else None

    def _snapshot(self) -> PortfolioSnapshot:
        account = self._broker.get_account()
        return PortfolioSnapshot.from_broker(account, self._broker.get_positions(), self._broker.get_clock())

    def _day_orders(self, day: date) -> list[Order]:
        with Session(self._engine) as session:
            return list(
                session.scalars(
                    select(Order)
                    .where(
                        Order.strategy_id == self.strategy,
                        Order.trading_date == day,
                        Order.intent == REBALANCE,
                    )
                    .order_by(Order.created_at, Order.client_order_id)
                )
            )

    def _wait_for_fills(self, result: DayResult, timeout: float | None = None) -> None:
        """Until every order of the day reached a final status, or the timeout."""
        deadline = time.monotonic() + (self._fill_timeout if timeout is None else timeout)
        while True:
            open_orders = [
                o.client_order_id
                for o in self._day_orders(result.trading_date)
                if not is_terminal(OrderStatus(o.status)) and o.status != OrderStatus.PENDING_SUBMIT
            ]
            if not open_orders or time.monotonic() > deadline:
                result.unfinished = open_orders
                return
            time.sleep(0.1)

    def _pnl(self, result: DayResult) -> None:
        if self._later_day_recorded(result.trading_date):
            # The ledger's positions are now those of a later day: rewriting this day's rows and report
            # would value the wrong holdings. A closed day keeps what it recorded.
            self._recorded_pnl(result)
            return
        account = self._broker.get_account()
        marks = {
            p.symbol: p.current_price for p in self._broker.get_positions() if p.current_price is not None
        }
        with Session(self._engine) as session, session.begin():
            rows = daily_pnl_rows(session, result.trading_date, marks, equity=account.equity)
            account_row = next(row for row in rows if row.strategy_id == "*")
            result.equity = account.equity
            result.realized, result.unrealized, result.fees = (
                account_row.realized, account_row.unrealized, account_row.fees,
            )  # fmt: skip
        with Session(self._engine) as session:
            report = build_daily_report(session, result.trading_date, marks)
            result.fills = len(report.executions)
        result.report_dir = str(write_daily_report(report, self._settings.artifacts_dir / "reports"))

    def _later_day_recorded(self, day: date) -> bool:
        with Session(self._engine) as session:
            later = session.scalar(
                select(Pnl.trading_date).where(Pnl.strategy_id == ACCOUNT, Pnl.trading_date > day).limit(1)
            )
        return later is not None

    def _recorded_pnl(self, result: DayResult) -> None:
        """The day's numbers as recorded when it was run (its ``'*'`` pnl row and its executions)."""
        start, end = market_day_bounds(result.trading_date)
        with Session(self._engine) as session:
            row = session.get(Pnl, (result.trading_date, ACCOUNT))
            result.fills = (
                session.scalar(
                    select(func.count())
                    .select_from(Execution)
                    .where(Execution.executed_at >= start, Execution.executed_at < end)
                )
                or 0
            )
        if row is not None:
            result.equity, result.realized, result.unrealized, result.fees = (
                row.equity, row.realized, row.unrealized, row.fees,
            )  # fmt: skip
        folder = self._settings.artifacts_dir / "reports" / result.trading_date.isoformat()
        result.report_dir = str(folder) if folder.is_dir() else None


def _exit_slices(qty: Decimal, price: Decimal, max_notional: Decimal | None) -> list[Decimal]:
    """``qty`` in whole-share slices each worth at most ``max_notional`` at ``price`` (one slice when it
    fits, or when even one share is above the limit: the risk check then refuses it with its reason)."""
    if max_notional is None or max_notional <= 0 or qty * price <= max_notional:
        return [qty]
    per_slice = (max_notional / price).to_integral_value(rounding=ROUND_FLOOR)
    if per_slice < 1 or qty / per_slice > MAX_EXIT_SLICES:
        return [qty]
    full, rest = divmod(qty, per_slice)
    return [per_slice] * int(full) + ([rest] if rest else [])


def order_intents(
    strategy: str, day: date, orders: Sequence[AllocatorIntent], max_order_notional: Decimal | None
) -> list[OrderIntent]:
    """The allocator's orders as execution intents (``intent`` ``rebalance``).

    An exit (a reduce or a close) worth more than ``max_order_notional`` at its reference price is
    sent as whole-share slices within the limit (``sequence`` 0, 1, ...): an exit must never be
    blocked by its size. Entries are not sliced: the limit caps them and the risk check says so.
    The sequence counts on across the orders of one symbol and side, so that the two legs of a side
    change (sell 10 to close a long, then sell 100 to open a short) get two ``client_order_id`` values
    instead of one that would drop the second leg as "already recorded".
    """
    intents: list[OrderIntent] = []
    next_sequence: dict[tuple[str, OrderSide], int] = {}
    for order in orders:
        exit_ = order.reason in {IntentReason.REDUCE, IntentReason.CLOSE}
        limit = max_order_notional if exit_ else None
        key = (order.symbol.strip().upper(), OrderSide(order.side))
        for qty in _exit_slices(order.qty, order.reference_price, limit):
            sequence = next_sequence.get(key, 0)
            next_sequence[key] = sequence + 1
            intents.append(
                OrderIntent(
                    strategy, day, order.symbol, order.side, qty=qty, intent=REBALANCE, sequence=sequence
                )
            )
    return intents


def _day_of(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def rebalance_intents(
    engine: Engine,
    settings: Settings,
    strategy: str,
    day: date,
    orders: Sequence[AllocatorIntent],
    limits: EffectiveLimits | None = None,
) -> list[OrderIntent]:
    """:func:`order_intents` with the strategy's effective ``max_order_notional`` (paper-run and replay
    must slice exits alike): that of ``limits`` (a recorded day's), else resolved now."""
    if limits is None:
        with Session(engine) as session:
            limits = resolve_limits(session, strategy, settings)
    limit = limits.max_order_notional
    return order_intents(strategy, day, orders, limit.value if limit else None)


def _intent_of(order: Order) -> OrderIntent:
    """The intent an order row was recorded from (same fields → same ``client_order_id``)."""
    from trader.domain.enums import OrderType, TimeInForce

    # A sliced exit has sequence 0..MAX_EXIT_SLICES (full slices and a rest); the opening leg of a
    # side change comes after its closing slices.
    for sequence in range(MAX_EXIT_SLICES + 2):
        intent = OrderIntent(
            order.strategy_id,
            order.trading_date,
            order.symbol,
            OrderSide(order.side),
            qty=order.qty,
            notional=order.notional,
            intent=order.intent,
            order_type=OrderType(order.order_type),
            time_in_force=TimeInForce(order.time_in_force),
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            sequence=sequence,
        )
        if intent.client_order_id == order.client_order_id:
            return intent
    raise PaperDayError(f"order {order.client_order_id} was not recorded by paper-run; reconcile it first")
