"""The execution use cases behind the gateway: record → risk → send, and trade updates → ledger.

Order of operations for each order (one transaction per step, so a crash between two steps leaves a
state the next run continues from):

1. **record** the intent in ``orders`` as ``pending_submit`` under its deterministic
   ``client_order_id`` (a repeated request finds the row and goes no further unless it is still
   ``pending_submit``; then the broker is asked first whether an earlier attempt landed, and an order
   it has is only brought up to date);
2. **risk**: the pre-trade check, its decision written to ``risk_decisions``; a refusal sets
   ``risk_rejected`` and the order never reaches the broker;
3. **send** (unless ``DRY_RUN``: then ``dry_run``): the broker adapter submits exactly once (an
   ambiguous failure is resolved by looking the ``client_order_id`` up before any resend); the
   broker's answer moves the row along the state machine. An order the broker refuses outright (a
   4xx) is ``submit_failed`` with the broker's reason; one whose fate stays unknown remains
   ``pending_submit`` for the reconciler, and is never sent twice (a later request for it re-sends
   under the same ``client_order_id``, which the broker adapter resolves by lookup).

A repeated request whose ``client_order_id`` is recorded for a *different* order (another size, type
or price) changes nothing and is reported with ``matches=False``. A notional order is risk-checked as
the quantity it buys at the reference price.

Trade updates (the broker's stream, or the fills webhook) go through :meth:`ExecutionService.on_trade_update`:
status and fill in one transaction, each fill applied exactly once by the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.broker.base import Broker, BrokerOrder, TradeUpdate
from trader.broker.errors import BrokerError, DuplicateClientOrderIdError, InvalidOrderError
from trader.config import Settings
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import (
    OrderIntent,
    UnknownOrderError,
    apply_broker_update,
    get_order,
    record_intent,
    record_status,
)
from trader.execution.sql import lock_position
from trader.execution.state_machine import OPEN_BROKER
from trader.execution.updates import UpdateResult, handle_trade_update
from trader.observability.metrics import GatewayMetrics
from trader.ops.breakers import BreakerStoreError, CircuitBreaker, is_risk_reducing
from trader.portfolio.ledger import FillResult
from trader.risk.checks import ProposedOrder, RiskOptions
from trader.risk.engine import OrderVerdict, RiskEngine
from trader.risk.limits import EffectiveLimits
from trader.risk.snapshot import PortfolioSnapshot
from trader.risk.store import record_decisions, resolve_limits
from trader.store.models import Order, RiskDecision

log = logging.getLogger(__name__)

#: The price a risk check values an order at, by symbol (``None``: unknown, the order is refused).
PriceLookup = Callable[[str], Decimal | None]


@dataclass(frozen=True)
class SubmitOutcome:
    """What became of one requested order."""

    client_order_id: str
    symbol: str
    status: OrderStatus
    #: False when the order was recorded before (a repeated request).
    created: bool
    #: True when this call sent it to the broker.
    sent: bool
    reason: str | None = None
    #: False when the ``client_order_id`` was already recorded for a different order (other size,
    #: type or prices): the recorded order is left as it is and nothing is sent.
    matches: bool = True


class ExecutionService:
    """Records, risk-checks and sends orders; applies trade updates. Thread-safe (no shared state)."""

    def __init__(
        self,
        engine: Engine,
        broker: Broker | None,
        settings: Settings,
        *,
        risk_options: RiskOptions | None = None,
        source: str = "gateway",
        breaker: CircuitBreaker | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        if broker is None and not settings.dry_run:
            raise ValueError("a broker is needed unless DRY_RUN is on")
        self._breaker = breaker
        self._metrics = metrics
        self._engine = engine
        self._broker = broker
        self._settings = settings
        self._risk_options = risk_options or RiskOptions()
        self._source = source

    @property
    def dry_run(self) -> bool:
        return self._settings.dry_run

    @property
    def breaker(self) -> CircuitBreaker | None:
        return self._breaker

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    # ------------------------------------------------------------------ submitting

    def submit_batch(
        self,
        intents: Sequence[OrderIntent],
        snapshot: PortfolioSnapshot,
        price_of: PriceLookup,
        limits: EffectiveLimits | None = None,
    ) -> list[SubmitOutcome]:
        """Record, check and send ``intents`` (of one strategy), in order; see the module docstring.

        ``limits``: the risk limits to check against, when the caller resolved them already (a paper
        day journals them) or replays a recorded day's; else the strategy's are resolved now."""
        strategies = {intent.strategy_id for intent in intents}
        if len(strategies) > 1:
            raise ValueError(f"one strategy per batch, got {sorted(strategies)}")
        outcomes: dict[str, SubmitOutcome] = {}
        fresh: list[tuple[OrderIntent, bool]] = []
        with self._session() as session, session.begin():
            for intent in intents:
                result = record_intent(session, intent, source=self._source)
                status = OrderStatus(result.order.status)
                if status is OrderStatus.PENDING_SUBMIT and result.matches:
                    fresh.append((intent, result.created))
                else:
                    reason = result.order.reject_reason if result.matches else _mismatch(intent)
                    outcomes[intent.client_order_id] = SubmitOutcome(
                        intent.client_order_id, intent.symbol, status, created=False, sent=False,
                        reason=reason, matches=result.matches,
                    )  # fmt: skip
        for intent, created in fresh:
            landed = None if created else self._landed_earlier(intent)
            if landed is not None:
                outcomes[intent.client_order_id] = landed
        fresh = [(intent, created) for intent, created in fresh if intent.client_order_id not in outcomes]
        for intent, verdict, created in self._check(fresh, snapshot, price_of, limits):
            outcomes[intent.client_order_id] = self._decide(intent, verdict, created)
        return [outcomes[intent.client_order_id] for intent in intents]

    def _landed_earlier(self, intent: OrderIntent) -> SubmitOutcome | None:
        """For a repeated request of an order still ``pending_submit``: what the broker has of it.

        An earlier attempt may have reached the broker with its answer lost. Checking the risk again
        first would count the order's own fill against it and could mark a live order
        ``risk_rejected``; so the broker is asked first, and an order it has is only brought up to
        date (not checked, not sent). ``None``: the broker has no such order; go on as for a new one.
        """
        if self._broker is None:
            return None
        cid = intent.client_order_id
        try:
            found = self._broker.get_order_by_client_id(cid)
        except BrokerError as exc:
            log.warning("order %s: could not ask the broker whether it landed: %s", cid, exc)
            why = f"could not ask the broker whether this order landed earlier ({exc}); retry"
            return SubmitOutcome(cid, intent.symbol, OrderStatus.PENDING_SUBMIT, False, False, why)
        if found is None:
            return None
        with self._session() as session, session.begin():
            change = apply_broker_update(session, found, source=self._source)
        if self._metrics is not None:
            self._metrics.status_changed(change)
        return SubmitOutcome(cid, intent.symbol, change.status, created=False, sent=False)

    def _check(
        self,
        fresh: list[tuple[OrderIntent, bool]],
        snapshot: PortfolioSnapshot,
        price_of: PriceLookup,
        limits: EffectiveLimits | None,
    ) -> list[tuple[OrderIntent, OrderVerdict | str, bool]]:
        """Risk verdicts for the orders still to send (a missing price is a refusal, as text)."""
        if not fresh:
            return []
        strategy = fresh[0][0].strategy_id
        if limits is None:
            with self._session() as session:
                limits = resolve_limits(session, strategy, self._settings)
        checked: list[tuple[OrderIntent, OrderVerdict | str, bool]] = []
        proposed: list[ProposedOrder] = []
        priced: list[tuple[OrderIntent, bool]] = []
        # For the breaker: what is already on its way on each side of each symbol (open orders of
        # earlier requests, then this batch's earlier orders), so that two sells of a whole long
        # (in one batch, or in two requests) are not both taken for exits.
        pending = self._open_quantities(fresh) if self._breaker is not None else {}
        for intent, created in fresh:
            symbol, side = intent.symbol.strip().upper(), OrderSide(intent.side)
            already = pending.get((symbol, side), Decimal(0))
            blocked = self._blocked_by_breaker(intent, _held(snapshot, symbol), already)
            if blocked is not None:
                checked.append((intent, blocked, created))
                continue
            price = valuation_price(intent, price_of(intent.symbol))
            if price is None:
                why = f"no usable reference price for {intent.symbol}: refused (fail closed)"
                checked.append((intent, why, created))
                continue
            if intent.qty is not None:
                pending[(symbol, side)] = already + intent.qty
            # A notional order is checked as the quantity it buys at the reference price.
            qty = intent.qty if intent.qty is not None else Decimal(intent.notional or 0) / price
            proposed.append(ProposedOrder(intent.symbol, intent.side, qty, price, intent.client_order_id))
            priced.append((intent, created))
        verdicts = RiskEngine(limits, self._risk_options).check(proposed, snapshot)
        checked.extend(
            (intent, verdict, created) for (intent, created), verdict in zip(priced, verdicts, strict=True)
        )
        return checked

    def _open_quantities(self, fresh: list[tuple[OrderIntent, bool]]) -> dict[tuple[str, OrderSide], Decimal]:
        """The unfilled quantity of the open orders (``pending_submit`` included: it may be at the
        broker) in the batch's symbols, by symbol and side, this batch's own orders left out."""
        symbols = {intent.symbol.strip().upper() for intent, _ in fresh}
        own = [intent.client_order_id for intent, _ in fresh]
        live = [status.value for status in (OrderStatus.PENDING_SUBMIT, *OPEN_BROKER)]
        with self._session() as session:
            rows = session.execute(
                select(Order.symbol, Order.side, Order.qty, Order.filled_qty).where(
                    Order.symbol.in_(symbols),
                    Order.status.in_(live),
                    Order.client_order_id.not_in(own),
                    Order.qty.is_not(None),  # a notional order's size is not known in shares
                )
            ).all()
        pending: dict[tuple[str, OrderSide], Decimal] = {}
        for symbol, side, qty, filled in rows:
            key = (symbol, OrderSide(side))
            pending[key] = pending.get(key, Decimal(0)) + max((qty or Decimal(0)) - filled, Decimal(0))
        return pending

    def _blocked_by_breaker(self, intent: OrderIntent, position: Decimal, already: Decimal) -> str | None:
        """Why the circuit breaker refuses ``intent`` (only risk-reducing orders pass while TRIPPED):
        it must still only shrink ``position`` together with ``already``, the quantity on its way on
        the same side (if those fill, as they may, it must not flip the position)."""
        if self._breaker is None:
            return None
        # A notional order's size in shares is not known here: never an exit.
        side = OrderSide(intent.side)
        reducing = intent.qty is not None and is_risk_reducing(side, intent.qty + already, position)
        if self._breaker.allows(reducing):
            return None
        # An exit refused because of orders already on their way says so: the operator must see why.
        alone = intent.qty is not None and is_risk_reducing(side, intent.qty, position)
        counted = f" ({already} {side.value} already on its way in open orders)" if already and alone else ""
        try:
            status = self._breaker.status()
        except BreakerStoreError as exc:
            # allows() already failed closed; the refusal still needs its reason, not an error.
            return f"circuit breaker state unreadable ({exc}): only risk-reducing orders pass{counted}"
        return (
            f"circuit breaker TRIPPED ({status.reason}): only risk-reducing orders pass until it is "
            f"cleared{counted}"
        )

    def _decide(self, intent: OrderIntent, verdict: OrderVerdict | str, created: bool) -> SubmitOutcome:
        outcome, decided_here = self._record_decision(intent, verdict, created)
        if outcome is None:
            outcome, decided_here = self._send(intent, created), True
        if decided_here and self._metrics is not None:
            self._metrics.order_decided(outcome.status, sent=outcome.sent)
        return outcome

    def _record_decision(
        self, intent: OrderIntent, verdict: OrderVerdict | str, created: bool
    ) -> tuple[SubmitOutcome | None, bool]:
        """The outcome when the order goes no further than the books (``None``: send it), and whether
        this call decided it (``False`` when a concurrent request had)."""
        cid = intent.client_order_id
        with self._session() as session, session.begin():
            # A concurrent request for the same order may have decided it since it was recorded: the
            # position lock (taken by every writer of the order) makes this check and the write atomic.
            lock_position(session, intent.strategy_id, intent.to_request().symbol)
            order = get_order(session, cid)
            if order is not None and order.status != OrderStatus.PENDING_SUBMIT:
                status = OrderStatus(order.status)
                return SubmitOutcome(cid, intent.symbol, status, created, False, order.reject_reason), False
            if isinstance(verdict, str) or not verdict.approved:
                reason = verdict if isinstance(verdict, str) else verdict.decision.reason
                if not isinstance(verdict, str):
                    record_decisions(session, [verdict])
                record_status(session, cid, OrderStatus.RISK_REJECTED, reason=reason, source=self._source)
                refused = SubmitOutcome(cid, intent.symbol, OrderStatus.RISK_REJECTED, created, False, reason)
                return refused, True
            record_decisions(session, [verdict])
            if self.dry_run:
                record_status(session, cid, OrderStatus.DRY_RUN, source=self._source)
                return SubmitOutcome(cid, intent.symbol, OrderStatus.DRY_RUN, created, False), True
        return None, False

    def _send(self, intent: OrderIntent, created: bool) -> SubmitOutcome:
        assert self._broker is not None  # checked in __init__ for DRY_RUN off
        cid = intent.client_order_id
        try:
            report = self._submit(intent)
        except DuplicateClientOrderIdError as exc:
            # The broker holds an order under this id that it would not show or that differs: its fate
            # is the reconciler's question, not a refusal of this request.
            log.warning("order %s: the broker already has this client_order_id: %s", cid, exc)
            return SubmitOutcome(cid, intent.symbol, OrderStatus.PENDING_SUBMIT, created, True, str(exc))
        except InvalidOrderError as exc:
            # A definitive 4xx: no order exists at the broker (docs/execution.md: submit_failed).
            with self._session() as session, session.begin():
                record_status(session, cid, OrderStatus.SUBMIT_FAILED, reason=str(exc), source=self._source)
            return SubmitOutcome(cid, intent.symbol, OrderStatus.SUBMIT_FAILED, created, True, str(exc))
        except BrokerError as exc:
            # Unknown fate (or the broker is down): the row stays pending_submit; the next run or the
            # reconciler looks the client_order_id up before anything is sent again.
            log.warning("order %s not confirmed by the broker: %s", cid, exc)
            return SubmitOutcome(cid, intent.symbol, OrderStatus.PENDING_SUBMIT, created, True, str(exc))
        with self._session() as session, session.begin():
            change = apply_broker_update(session, report, source=self._source)
        if self._metrics is not None:
            self._metrics.status_changed(change)
        return SubmitOutcome(cid, intent.symbol, change.status, created, True)

    def _submit(self, intent: OrderIntent) -> BrokerOrder:
        assert self._broker is not None
        metrics = self._metrics
        with metrics.timed_broker_call("submit_order") if metrics is not None else nullcontext():
            return self._broker.submit_order(intent.to_request())

    # ------------------------------------------------------------------ trade updates

    def on_trade_update(self, update: TradeUpdate) -> FillResult | None:
        """Apply one trade update: the order's status and, for a fill, the execution (exactly once).

        Updates of orders we never recorded (placed by hand at the broker) are logged and skipped; the
        reconciler adopts them.
        """
        try:
            with self._session() as session, session.begin():
                result = handle_trade_update(session, update, source=self._source)
        except UnknownOrderError:
            log.warning(
                "trade update for unknown order %s (%s): skipped", update.order.client_order_id, update.event
            )
            return None
        if self._metrics is not None:
            try:
                self._count_update(update, result)
            except Exception:  # the update is committed: a metric must not make it look failed
                log.warning("metrics: update of %s not measured", update.order.client_order_id, exc_info=True)
        return result.fill

    def _count_update(self, update: TradeUpdate, result: UpdateResult) -> None:
        assert self._metrics is not None
        fill = result.fill
        self._metrics.trade_update(update.event, None if fill is None else fill.outcome.value)
        self._metrics.status_changed(result.status)
        if fill is None or not fill.applied or fill.price is None:
            return
        side = OrderSide(update.order.side)
        self._metrics.fill(side, fill.qty, fill.price, self._decision_price(update.order.client_order_id))

    def _decision_price(self, client_order_id: str) -> Decimal | None:
        """The price the approving risk check valued the order at (for slippage), if recorded."""
        with self._session() as session:
            details = (
                session.execute(
                    select(RiskDecision.details)
                    .where(RiskDecision.client_order_id == client_order_id, RiskDecision.approved.is_(True))
                    .order_by(RiskDecision.id.desc())  # a re-sent order has one per send: the latest
                )
                .scalars()
                .first()
            )
        price = (details or {}).get("price")
        return Decimal(str(price)) if price is not None else None


def _mismatch(intent: OrderIntent) -> str:
    return (
        f"client_order_id {intent.client_order_id} is already recorded for a different order (size, "
        "type or prices differ); it was left as it is. Use another intent or sequence for a new order"
    )


def _held(snapshot: PortfolioSnapshot, symbol: str) -> Decimal:
    holding = snapshot.positions.get(symbol)
    return holding.qty if holding is not None else Decimal(0)


def valuation_price(intent: OrderIntent, reference: Decimal | None) -> Decimal | None:
    """The price the risk limits value ``intent`` at: the highest it can be expected to fill at.

    A buy with a limit price never pays more than the limit, so the limit is its price (even without a
    reference). Anything else fills at the market or beyond its stop: a buy stop at or above the stop,
    a sell limit below the market near the market. So it is valued at the highest of the reference
    price and its own limit and stop prices, and refused (``None``) without a usable reference price
    (missing, not finite, not positive).
    """
    usable = reference if reference is not None and reference.is_finite() and reference > 0 else None
    if intent.side == OrderSide.BUY and intent.limit_price is not None:
        return intent.limit_price
    if usable is None:
        return None
    return max(p for p in (usable, intent.limit_price, intent.stop_price) if p is not None)
