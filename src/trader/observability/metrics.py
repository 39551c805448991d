"""Prometheus metrics of the execution gateway, served at ``GET /metrics`` (behind the API key).

Two kinds, both in one :class:`~prometheus_client.CollectorRegistry` per app (never the process-wide
default, so two apps in one process, as in tests, do not share or clash):

- **counted as they happen** (:class:`GatewayMetrics`): HTTP requests and their latency, order
  decisions, broker calls and their latency, trade updates, fills and their slippage;
- **read when scraped** (:class:`GatewayStateCollector`): what the books and the switches say now —
  orders per status, open positions, realized P&L per strategy, the circuit breaker, readiness,
  ``DRY_RUN``, the trade-update stream. A value that cannot be read is left out of that scrape
  (Prometheus' ``absent()`` alerts on it) and counted in ``trader_metrics_read_errors_total``.

Labels take values from closed sets (statuses, event names, route templates, HTTP methods) or from
the strategies in the books, never from a path or event name a caller makes up, so a scan of random
URLs cannot grow the number of series. The names are listed in
``docs/observability.md``; ``infra/grafana`` charts them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trader.broker.base import TradeEvent
from trader.broker.errors import (
    AmbiguousBrokerError,
    BrokerError,
    DuplicateClientOrderIdError,
    InvalidOrderError,
    TemporaryBrokerError,
)
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import StatusChange, StatusOutcome
from trader.execution.state_machine import BROKER_STATUSES, BROKER_TERMINAL
from trader.ops.breakers import BreakerState
from trader.store.models import Order, Position
from trader.store.types import as_number

if TYPE_CHECKING:
    from trader.execution.gateway import Gateway

log = logging.getLogger(__name__)

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics", "GatewayStateCollector", "render"]

#: Seconds: from a fast database read to a slow broker round trip.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Basis points, signed: positive is a cost (bought above / sold below the reference price).
SLIPPAGE_BUCKETS = (-100.0, -50.0, -20.0, -10.0, -5.0, -2.0, 0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
#: The ``route`` label of a request that matched no route (a scan for /admin must not add series).
UNMATCHED_ROUTE = "unmatched"
_KNOWN_EVENTS = frozenset(event.value for event in TradeEvent)
#: HTTP methods kept as labels; anything else (a client may send any token) is ``other``.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_FILL_OUTCOMES = ("applied", "duplicate", "covered")
#: (status, sent) of the decisions POST /orders can make.
_DECISIONS = (
    (OrderStatus.DRY_RUN, "false"),
    (OrderStatus.RISK_REJECTED, "false"),
    (OrderStatus.SUBMIT_FAILED, "true"),
    (OrderStatus.PENDING_SUBMIT, "true"),
    *((status, "true") for status in sorted(BROKER_STATUSES)),
)


def broker_outcome(exc: BaseException | None) -> str:
    """The ``outcome`` label of a broker call: ``ok`` or the kind of failure (the error hierarchy's)."""
    if exc is None:
        return "ok"
    if isinstance(exc, DuplicateClientOrderIdError):
        return "duplicate"
    if isinstance(exc, InvalidOrderError):
        return "invalid"
    if isinstance(exc, TemporaryBrokerError):
        return "temporary"
    if isinstance(exc, AmbiguousBrokerError):
        return "ambiguous"
    return "error"


def shortfall(side: OrderSide, fill_price: Decimal, reference: Decimal) -> Decimal:
    """Dollars per share a fill was worse than ``reference`` (negative: better): paid above it on a
    buy, received below it on a sell.

    The reference is the price the pre-trade risk check valued the order at (the previous close, or
    the limit price), so this is implementation shortfall against the decision price.
    """
    move = fill_price - reference
    return move if side is OrderSide.BUY else -move


def slippage_bps(side: OrderSide, fill_price: Decimal, reference: Decimal) -> float:
    """:func:`shortfall` in basis points of ``reference``."""
    return float(shortfall(side, fill_price, reference) / reference * 10_000)


class GatewayMetrics:
    """The gateway's counters and histograms, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "trader_http_requests", "HTTP requests answered, by route template and status code.",
            ["method", "route", "status"], registry=r,
        )  # fmt: skip
        self.request_seconds = Histogram(
            "trader_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.orders = Counter(
            "trader_orders_decided", "Orders decided by POST /orders, by the status the decision left "
            "them in and whether it sent them to the broker (each order once; a repeated request is "
            "answered from the books and not counted, a re-send of an order of unknown fate is).",
            ["status", "sent"], registry=r,
        )  # fmt: skip
        self.orders_ended = Counter(
            "trader_orders_ended", "Orders that reached a final status at the broker (filled, canceled, "
            "expired, replaced, rejected), seen by this gateway.", ["status"], registry=r,
        )  # fmt: skip
        self.broker_requests = Counter(
            "trader_broker_requests", "Calls to the broker, by operation and outcome "
            "(ok, duplicate, invalid, temporary, ambiguous, error).",
            ["operation", "outcome"], registry=r,
        )  # fmt: skip
        self.broker_seconds = Histogram(
            "trader_broker_request_duration_seconds", "Time a broker call took, retries included.",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.trade_updates = Counter(
            "trader_trade_updates", "Trade updates handled (stream and webhook), by event and by what "
            "became of their fill (applied, duplicate, covered, none).",
            ["event", "fill"], registry=r,
        )  # fmt: skip
        self.fills = Counter("trader_fills", "Fills applied to the books, by side.", ["side"], registry=r)
        self.filled_notional = Counter(
            "trader_filled_notional_dollars", "Dollar value of the fills applied, by side.", ["side"],
            registry=r,
        )  # fmt: skip
        self.slippage = Histogram(
            "trader_fill_slippage_bps", "Slippage of each applied fill against the price the risk check "
            "valued its order at, in basis points; positive is a cost. (No _sum: with negative "
            "buckets Prometheus leaves it out; the _cost_ and _gain_dollars counters give totals.)",
            ["side"], buckets=SLIPPAGE_BUCKETS, registry=r,
        )  # fmt: skip
        # Two counters rather than one signed total: a restart resets counters, which increase()
        # handles, while delta() on a gauge would read the reset as a large gain.
        self.slippage_cost = Counter(
            "trader_fill_slippage_cost_dollars", "Dollars lost to slippage (quantity times the price "
            "difference) on fills worse than the risk-check price, by side.", ["side"], registry=r,
        )  # fmt: skip
        self.slippage_gain = Counter(
            "trader_fill_slippage_gain_dollars", "Dollars gained on fills better than the risk-check "
            "price, by side.", ["side"], registry=r,
        )  # fmt: skip

        self._create_series()

    def _create_series(self) -> None:
        """Create the series of the closed label sets at zero: a counter's first increment is lost to
        ``rate()`` and ``increase()`` when its series appears only then (a rare event, such as the day's
        only cancel, would never show)."""
        for side in OrderSide:
            for counter in (self.fills, self.filled_notional, self.slippage_cost, self.slippage_gain):
                counter.labels(side.value)
            self.slippage.labels(side.value)
        for event in _KNOWN_EVENTS:
            self.trade_updates.labels(event, "none")
        for event in ("fill", "partial_fill"):
            for outcome in _FILL_OUTCOMES:
                self.trade_updates.labels(event, outcome)
        for status in BROKER_TERMINAL:
            self.orders_ended.labels(status.value)
        for status, sent in _DECISIONS:
            self.orders.labels(status.value, sent)

    # ------------------------------------------------------------------ recording

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def order_decided(self, status: OrderStatus, *, sent: bool) -> None:
        """One order this process decided (refused, recorded as ``dry_run``, or sent)."""
        self.orders.labels(status.value, "true" if sent else "false").inc()

    def status_changed(self, change: StatusChange) -> None:
        """Counts an order reaching a final status at the broker (a repeated report changes nothing)."""
        if change.outcome is StatusOutcome.CHANGED and change.status in BROKER_TERMINAL:
            self.orders_ended.labels(change.status.value).inc()

    def broker_call(self, operation: str, seconds: float, error: BaseException | None) -> None:
        self.broker_requests.labels(operation, broker_outcome(error)).inc()
        self.broker_seconds.labels(operation).observe(seconds)

    def trade_update(self, event: str, fill: str | None) -> None:
        self.trade_updates.labels(event if event in _KNOWN_EVENTS else "other", fill or "none").inc()

    def fill(self, side: OrderSide, qty: Decimal, price: Decimal, reference: Decimal | None) -> None:
        """One applied fill; ``reference`` is the order's risk-check price (``None``: not known)."""
        self.fills.labels(side.value).inc()
        self.filled_notional.labels(side.value).inc(float(qty * price))
        if reference is not None and reference > 0:
            self.slippage.labels(side.value).observe(slippage_bps(side, price, reference))
            cost = shortfall(side, price, reference) * qty
            counter = self.slippage_cost if cost > 0 else self.slippage_gain
            counter.labels(side.value).inc(float(abs(cost)))

    def timed_broker_call(self, operation: str) -> _BrokerTimer:
        """``with metrics.timed_broker_call("submit_order"): ...`` records time and outcome."""
        return _BrokerTimer(self, operation)


class _BrokerTimer:
    def __init__(self, metrics: GatewayMetrics, operation: str) -> None:
        self.metrics, self.operation = metrics, operation

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, _type: object, exc: BaseException | None, _tb: object) -> None:
        if exc is None or isinstance(exc, BrokerError):
            self.metrics.broker_call(self.operation, time.perf_counter() - self.started, exc)


# ------------------------------------------------------------------------------ read when scraped


#: The gauges read at each scrape: name → (help, labels).
STATE_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "trader_gateway_ready": ("1 once the boot reconciliation finished (orders are taken).", ()),
    "trader_dry_run": ("1 while DRY_RUN is on (orders recorded, never sent).", ()),
    "trader_trade_updates_connected": ("1 while the trade-update stream is connected.", ()),
    "trader_circuit_breaker_tripped": ("1 while the circuit breaker is TRIPPED.", ()),
    "trader_orders": ("Orders in the database, by status.", ("status",)),
    "trader_open_positions": ("Positions with a non-zero quantity, by strategy.", ("strategy",)),
    "trader_realized_pnl_dollars": ("Realized P&L (net of fees) in the books, by strategy.", ("strategy",)),
}
READ_ERRORS = "trader_metrics_read_errors"
_READ_ERRORS_HELP = "Scrape-time values that could not be read (left out of that scrape), by what."


def _family(name: str, value: bool | float | None = None) -> GaugeMetricFamily:
    documentation, labels = STATE_METRICS[name]
    if labels:
        return GaugeMetricFamily(name, documentation, labels=list(labels))
    return GaugeMetricFamily(name, documentation, value=None if value is None else float(value))


class GatewayStateCollector(Collector):
    """Gauges read from the gateway's books and switches at each scrape (:data:`STATE_METRICS`)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._misses: dict[str, int] = {}
        self._lock = threading.Lock()  # two scrapes may run at once

    def describe(self) -> Iterable[Metric]:
        """The families without values (the registry checks names with it, without reading anything)."""
        yield from (_family(name) for name in STATE_METRICS)
        yield CounterMetricFamily(READ_ERRORS, _READ_ERRORS_HELP, labels=["what"])

    def collect(self) -> Iterable[Metric]:
        gateway = self.gateway
        consumer = gateway.consumer
        yield _family("trader_gateway_ready", gateway.ready.is_set())
        yield _family("trader_dry_run", gateway.settings.dry_run)
        yield _family("trader_trade_updates_connected", consumer is not None and consumer.connected)
        yield from self._guarded("breaker", self._breaker)
        yield from self._guarded("database", self._books)
        misses = CounterMetricFamily(READ_ERRORS, _READ_ERRORS_HELP, labels=["what"])
        with self._lock:
            for what, count in sorted(self._misses.items()):
                misses.add_metric([what], float(count))
        yield misses

    def _guarded(self, what: str, read: Callable[[], Iterator[Metric]]) -> Iterator[Metric]:
        try:
            metrics = list(read())
        except Exception as exc:  # one unreadable value must not fail the whole scrape
            log.warning("metrics: %s not readable: %s", what, type(exc).__name__)
            with self._lock:
                self._misses[what] = self._misses.get(what, 0) + 1
            return
        yield from metrics

    def _breaker(self) -> Iterator[Metric]:
        breaker = self.gateway.service.breaker
        if breaker is not None:
            yield _family("trader_circuit_breaker_tripped", breaker.status().state is BreakerState.TRIPPED)

    def _books(self) -> Iterator[Metric]:
        with Session(self.gateway.engine) as session:
            by_status = dict(session.execute(select(Order.status, func.count()).group_by(Order.status)).all())
            by_strategy = Position.strategy_id
            held_by = session.execute(
                select(by_strategy, func.count()).where(as_number(Position.qty) != 0).group_by(by_strategy)
            ).all()
            realized = session.execute(
                select(by_strategy, func.sum(Position.realized_pnl)).group_by(by_strategy)
            ).all()
        orders = _family("trader_orders")
        for status in OrderStatus:
            orders.add_metric([status.value], float(by_status.get(status.value, 0)))
        held = _family("trader_open_positions")
        for strategy, count in held_by:
            held.add_metric([strategy], float(count))
        pnl = _family("trader_realized_pnl_dollars")
        for strategy, total in realized:
            pnl.add_metric([strategy], float(total or 0))
        yield from (orders, held, pnl)


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (serve it as :data:`CONTENT_TYPE_LATEST`)."""
    return generate_latest(registry)


# ------------------------------------------------------------------------------ HTTP middleware


class RequestMetricsMiddleware:
    """ASGI middleware: counts and times each HTTP request under its route *template*
    (``/orders/{client_order_id}``), so an id in the path does not create a series per order."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler is answered with 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            method = scope["method"] if scope["method"] in _METHODS else "other"
            self.metrics.observe_request(method, route, status, time.perf_counter() - started)
