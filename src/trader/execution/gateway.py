"""The execution gateway: an HTTP API (FastAPI) over :class:`~trader.execution.service.ExecutionService`.

``create_gateway_app(settings, broker=..., risk_inputs=...)`` builds the app; ``trader serve gateway``
runs it with uvicorn. Routes (JSON; see ``docs/gateway.md``):

- ``POST /orders`` — record → risk → send (or ``dry_run``) one order under its deterministic
  ``client_order_id``: 201 when this request created it, 200 when it was recorded before (nothing is
  sent again), 202 when its fate at the broker is unknown (recorded, not confirmed: retry the same
  request), 409 when the id is recorded for a *different* order, 422 for bad input (the message names
  the field), 503 when the account or a price cannot be read (nothing recorded). A risk refusal is an
  answer, not an error: 201/200 with ``status: risk_rejected`` and the reason.
- ``GET /orders`` (filters, ``limit`` ≤ 1000), ``GET /orders/{client_order_id}`` (404 when unknown),
  ``GET /positions`` — from the database.
- ``POST /webhooks/trade-updates`` — one Alpaca ``trade_updates`` ``data`` object, applied exactly once
  (a repeat is harmless).
- ``GET /health`` — no key needed: database and broker reachable, stream connected, version.
- ``GET /metrics`` — Prometheus metrics (:mod:`trader.observability.metrics`).

Every route but ``/health`` needs the API key (``TRADER_API_KEY``) in ``X-API-Key`` or
``Authorization: Bearer``, compared in constant time; without it the answer is 401, even for a
malformed body. The key is never logged or echoed.

While the app runs, a :class:`TradeUpdateConsumer` applies the broker's ``trade_updates`` stream (it
reconnects and catches up from REST by itself) through the same service.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from trader import __version__
from trader.broker.base import Broker, OrderRequest, TradeUpdate, UpdateStream
from trader.broker.errors import BrokerError
from trader.broker.stream import StreamStats, parse_trade_update
from trader.config import Settings
from trader.data.calendar import trading_calendar
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce
from trader.domain.ids import STRATEGY_ID_PATTERN
from trader.domain.json import plain_decimal
from trader.errors import ConfigError, TraderError
from trader.execution.client_ids import InvalidOrderIdError
from trader.execution.orders import (
    InvalidOrderIntentError,
    OrderConflictError,
    OrderIntent,
    get_order,
    same_request,
)
from trader.execution.service import ExecutionService, SubmitOutcome
from trader.execution.snapshots import (
    BrokerRiskInputs,
    RiskInputsProvider,
    RiskInputsUnavailableError,
    default_trading_date,
)
from trader.execution.state_machine import OPEN_BROKER
from trader.observability.metrics import (
    CONTENT_TYPE_LATEST,
    GatewayMetrics,
    GatewayStateCollector,
    RequestMetricsMiddleware,
    render,
)
from trader.ops.breakers import CircuitBreaker, breaker_from_settings
from trader.portfolio.ledger import FillConflictError, FillResult, InvalidFillError
from trader.risk.checks import RiskOptions
from trader.store.db import make_engine
from trader.store.models import Order, Position

log = logging.getLogger(__name__)

#: How long after a session change a request without ``trading_date`` may still be a retry of an
#: order recorded under the previous session (see :meth:`GatewayState._default_trading_date`).
RETRY_WINDOW = timedelta(minutes=30)

API_KEY_HEADER = "X-API-Key"
#: ``intent`` of an order posted without one.
MANUAL_INTENT = "manual"
MAX_LIST_LIMIT = 1000
#: Seconds ``/health`` waits for each probe before calling it unreachable.
HEALTH_PROBE_SECONDS = 2.0
#: Seconds startup waits for the trade-update stream's first connect and catch-up.
STREAM_CONNECT_SECONDS = 10.0
#: The stream also re-reads open orders this often (covers events lost on a live connection).
STREAM_RESYNC_SECONDS = 30.0

_STRATEGY_PATTERN = STRATEGY_ID_PATTERN
_SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9./-]{0,15}$"
_INTENT_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
#: Up to 9 decimals (Alpaca's fractional shares), 24 digits in all.
Amount = Annotated[Decimal, Field(gt=0, max_digits=24, decimal_places=9, allow_inf_nan=False)]
#: A number in an answer: plain decimal text (``"10"``, ``"31.7838"``), never ``"0E-9"``.
Exact = Annotated[Decimal, PlainSerializer(plain_decimal, return_type=str)]


# ------------------------------------------------------------------------------------------ API key


def presented_key(headers: Any) -> str | None:
    """The key a request presents: ``X-API-Key``, else ``Authorization: Bearer <key>``."""
    key = headers.get(API_KEY_HEADER)
    if key:
        return str(key)
    scheme, _, credentials = str(headers.get("authorization", "")).partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def key_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison (the time taken does not tell how much of the key was right)."""
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode(), expected.encode())


class _UnauthorizedError(Exception):
    pass


def _unauthorized_response() -> JSONResponse:
    detail = f"missing or wrong API key: send it in the {API_KEY_HEADER} header (or Authorization: Bearer)"
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


# ------------------------------------------------------------------------------------ request models


def _field_error(field: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("order_field", "{field}: {message}", {"field": field, "message": message})


class OrderBody(BaseModel):
    """``POST /orders``: one order. Exactly one of ``qty`` and ``notional``; prices as the type needs."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    strategy_id: Annotated[str, Field(pattern=_STRATEGY_PATTERN, description="e.g. alpha_baseline")]
    symbol: Annotated[str, Field(pattern=_SYMBOL_PATTERN, description="ticker, e.g. AAPL")]
    side: OrderSide
    qty: Amount | None = None
    notional: Amount | None = None
    type: OrderType = OrderType.MARKET
    time_in_force: TimeInForce = TimeInForce.DAY
    limit_price: Amount | None = None
    stop_price: Amount | None = None
    intent: Annotated[str, Field(pattern=_INTENT_PATTERN)] = MANUAL_INTENT
    trading_date: date | None = None
    sequence: Annotated[int, Field(ge=0, le=1_000_000)] = 0

    @field_validator("symbol")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("trading_date")
    @classmethod
    def _a_session(cls, value: date | None) -> date | None:
        # The date names the order (its client_order_id): a Saturday would make an order no day
        # of trading ever repeats, so a retry on the real session would send it twice.
        calendar = trading_calendar()
        if value is not None and not (calendar.knows(value) and calendar.is_session(value)):
            raise _field_error(
                "trading_date",
                f"{value} is not an XNYS session; give the session the order is for, or leave it out "
                "for the current one",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OrderBody:
        if (self.qty is None) == (self.notional is None):
            raise _field_error("qty", "give exactly one of qty and notional")
        if self.type is OrderType.TRAILING_STOP:
            raise _field_error("type", "trailing_stop orders are not supported by the gateway")
        needs = {
            OrderType.LIMIT: ("limit_price",),
            OrderType.STOP: ("stop_price",),
            OrderType.STOP_LIMIT: ("limit_price", "stop_price"),
        }.get(self.type, ())
        for name in needs:
            if getattr(self, name) is None:
                raise _field_error(name, f"a {self.type.value} order needs {name}")
        for name in ("limit_price", "stop_price"):
            if name not in needs and getattr(self, name) is not None:
                raise _field_error(name, f"a {self.type.value} order takes no {name}")
        return self

    def to_intent(self, trading_date: date) -> OrderIntent:
        return OrderIntent(
            strategy_id=self.strategy_id,
            trading_date=trading_date,
            symbol=self.symbol,
            side=self.side,
            qty=self.qty,
            notional=self.notional,
            intent=self.intent,
            order_type=self.type,
            time_in_force=self.time_in_force,
            limit_price=self.limit_price,
            stop_price=self.stop_price,
            sequence=self.sequence,
        )


# ----------------------------------------------------------------------------------- response models


class OrderOut(BaseModel):
    """An order row. Money and quantities are decimal strings (exact)."""

    client_order_id: str
    strategy_id: str
    trading_date: date
    intent: str
    symbol: str
    side: str
    qty: Exact | None
    notional: Exact | None
    type: str
    time_in_force: str
    limit_price: Exact | None
    stop_price: Exact | None
    status: str
    broker_order_id: str | None
    filled_qty: Exact
    filled_avg_price: Exact | None
    reject_reason: str | None
    submitted_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def from_row(cls, order: Order) -> OrderOut:
        return cls(
            client_order_id=order.client_order_id,
            strategy_id=order.strategy_id,
            trading_date=order.trading_date,
            intent=order.intent,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            notional=order.notional,
            type=order.order_type,
            time_in_force=order.time_in_force,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            status=order.status,
            broker_order_id=order.broker_order_id,
            filled_qty=order.filled_qty,
            filled_avg_price=order.filled_avg_price,
            reject_reason=order.reject_reason,
            submitted_at=order.submitted_at,
            created_at=order.created_at,
            updated_at=order.updated_at,
        )


class OrderAnswer(OrderOut):
    """``POST /orders``: the order, whether this request created it and sent it, and why if it stopped."""

    created: bool
    sent: bool
    message: str | None = None


class OrderList(BaseModel):
    orders: list[OrderOut]


class PositionOut(BaseModel):
    strategy_id: str
    symbol: str
    qty: Exact
    avg_price: Exact
    realized_pnl: Exact
    updated_at: datetime | None


class PositionList(BaseModel):
    positions: list[PositionOut]


class TradeUpdateAnswer(BaseModel):
    """``POST /webhooks/trade-updates``: what the update did.

    ``fill`` is ``applied``, ``duplicate`` (this execution was applied before), ``covered`` (a catch-up
    already counted it) or null (the update carried no fill). ``known_order`` is false for an order this
    system never recorded: the update is skipped (the reconciler adopts such orders).
    """

    client_order_id: str
    event: str
    known_order: bool
    fill: str | None
    status: str | None


class Probe(BaseModel):
    configured: bool = True
    reachable: bool | None


class StreamState(BaseModel):
    running: bool
    connected: bool


class HealthOut(BaseModel):
    status: str
    version: str
    dry_run: bool
    database: Probe
    broker: Probe
    trade_updates: StreamState


# ------------------------------------------------------------------------------ trade-update consumer


class TradeUpdateConsumer:
    """The broker's ``trade_updates`` stream, applied through the service, while the gateway runs.

    It resumes where the books stand: the broker orders the database holds as open are caught up by
    id, and everything that changed since the oldest of them was submitted (else since the broker
    clock's now) is delivered again — each change is applied once however often it arrives.
    """

    def __init__(
        self,
        broker: Broker,
        service: ExecutionService,
        engine: Engine,
        *,
        connect_timeout: float = STREAM_CONNECT_SECONDS,
        resync_interval: float | None = STREAM_RESYNC_SECONDS,
    ) -> None:
        self._broker = broker
        self._service = service
        self._engine = engine
        self._connect_timeout = connect_timeout
        self._resync_interval = resync_interval
        self._stream: UpdateStream | None = None
        self.applied = 0

    @property
    def running(self) -> bool:
        return self._stream is not None

    @property
    def connected(self) -> bool:
        event = getattr(self._stream, "connected", None)
        return bool(event is not None and event.is_set())

    @property
    def stats(self) -> StreamStats | None:
        """The stream's counters (delivered, duplicates filtered, catch-ups...), when it keeps them."""
        stats = getattr(self._stream, "stats", None)
        return stats if isinstance(stats, StreamStats) else None

    def start(self) -> bool:
        """Subscribe; return whether the first connect and catch-up finished within the timeout
        (if not, the stream keeps trying in the background)."""
        since, open_ids = self._resume_point()
        self._stream = self._subscribe(since, open_ids)
        connected = self._stream.start(self._connect_timeout)
        if not connected:
            log.warning("trade-update stream not connected yet; it keeps retrying in the background")
        return connected

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def handle(self, update: TradeUpdate) -> None:
        """Apply one update; a known refusal is logged in one line (the stream logs anything else)."""
        try:
            result = self._service.on_trade_update(update)
        except TraderError as exc:
            log.warning(
                "trade update %s of %s not applied: %s", update.event, update.order.client_order_id, exc
            )
            return
        if result is not None and result.applied:
            self.applied += 1

    def _subscribe(self, since: datetime | None, open_ids: Sequence[str]) -> UpdateStream:
        from trader.broker.alpaca import AlpacaBroker

        if isinstance(self._broker, AlpacaBroker):
            return self._broker.trade_updates(
                self.handle, since=since, open_order_ids=open_ids, resync_interval=self._resync_interval
            )
        return self._broker.trade_updates(self.handle, since=since)

    def _resume_point(self) -> tuple[datetime | None, list[str]]:
        with Session(self._engine) as session:
            rows = session.execute(
                select(Order.broker_order_id, Order.submitted_at).where(
                    Order.broker_order_id.is_not(None), Order.status.in_([s.value for s in OPEN_BROKER])
                )
            ).all()
        open_ids = [str(order_id) for order_id, _ in rows]
        submitted = [at for _, at in rows if at is not None]
        if submitted:
            return min(submitted), open_ids
        try:
            return self._broker.get_clock().timestamp, open_ids
        except BrokerError as exc:
            log.warning("broker clock unreadable (%s): the stream starts from what it sees first", exc)
            return None, open_ids


# --------------------------------------------------------------------------------------- use cases


@dataclass
class Gateway:
    """The gateway's parts and its use cases (the routes are thin wrappers around these)."""

    settings: Settings
    engine: Engine
    service: ExecutionService
    broker: Broker | None
    risk_inputs: RiskInputsProvider
    consumer: TradeUpdateConsumer | None
    clock: Callable[[], datetime]
    metrics: GatewayMetrics
    #: Set once the boot reconciliation finished (at once without a broker): no order before that.
    ready: threading.Event = field(default_factory=threading.Event)

    def submit(self, body: OrderBody) -> tuple[int, OrderAnswer]:
        """``POST /orders``: the HTTP status and the answer."""
        if not self.ready.is_set():
            raise NotReconciledError(
                "the boot reconciliation with the broker has not finished: no new order until our "
                "books and the broker's agree; retry shortly"
            )
        trading_date = body.trading_date or self._default_trading_date(body)
        intent = body.to_intent(trading_date)
        request = intent.to_request()
        with Session(self.engine) as session:
            existing = get_order(session, request.client_order_id)
        if existing is not None and existing.status != OrderStatus.PENDING_SUBMIT:
            if not same_request(existing, request):
                return 409, _answer(existing, created=False, sent=False, message=_conflict(request))
            return 200, _answer(existing, created=False, sent=False, message=existing.reject_reason)
        inputs = self.risk_inputs.risk_inputs()
        # Read now (may raise 503); a buy limit is valued at its limit and needs no market price.
        capped = intent.side == OrderSide.BUY and intent.limit_price is not None
        reference = None if capped else inputs.price_of(intent.symbol)
        outcome = self.service.submit_batch([intent], inputs.snapshot, lambda _symbol: reference)[0]
        log.info("order %s: %s (created=%s, sent=%s)", outcome.client_order_id, outcome.status,
                 outcome.created, outcome.sent)  # fmt: skip
        with Session(self.engine) as session:
            order = get_order(session, outcome.client_order_id)
        assert order is not None  # recorded by submit_batch
        answer = _answer(order, created=outcome.created, sent=outcome.sent, message=outcome.reason)
        return _status_code(outcome), answer

    def _default_trading_date(self, body: OrderBody) -> date:
        """The session of an order posted now without ``trading_date``, the same for its retries.

        The session is part of the ``client_order_id``: a retry a few minutes after the close of an
        order posted before it would otherwise name the next session, a new id, and be sent a
        second time. Within :data:`RETRY_WINDOW` after a session change, the same order (same id and
        request) recorded under the previous session is taken to be this one (post ``trading_date`` to
        place it again then).
        """
        now = self.clock()
        current = default_trading_date(now)
        earlier = default_trading_date(now - RETRY_WINDOW)
        if earlier != current:
            request = body.to_intent(earlier).to_request()
            with Session(self.engine) as session:
                recorded = get_order(session, request.client_order_id)
                if recorded is not None and same_request(recorded, request):
                    return earlier
        return current

    def list_orders(
        self,
        strategy_id: str | None,
        trading_date: date | None,
        status: OrderStatus | None,
        symbol: str | None,
        limit: int,
    ) -> OrderList:
        stmt = select(Order)
        if strategy_id is not None:
            stmt = stmt.where(Order.strategy_id == strategy_id)
        if trading_date is not None:
            stmt = stmt.where(Order.trading_date == trading_date)
        if status is not None:
            stmt = stmt.where(Order.status == status.value)
        if symbol is not None:
            stmt = stmt.where(Order.symbol == symbol.strip().upper())
        stmt = stmt.order_by(Order.created_at.desc(), Order.client_order_id).limit(limit)
        with Session(self.engine) as session:
            return OrderList(orders=[OrderOut.from_row(row) for row in session.execute(stmt).scalars()])

    def get_order(self, client_order_id: str) -> OrderOut | None:
        with Session(self.engine) as session:
            order = get_order(session, client_order_id)
        return None if order is None else OrderOut.from_row(order)

    def positions(self, strategy_id: str | None, symbol: str | None, include_flat: bool) -> PositionList:
        stmt = select(Position).order_by(Position.strategy_id, Position.symbol)
        if strategy_id is not None:
            stmt = stmt.where(Position.strategy_id == strategy_id)
        if symbol is not None:
            stmt = stmt.where(Position.symbol == symbol.strip().upper())
        with Session(self.engine) as session:
            rows = [row for row in session.execute(stmt).scalars() if include_flat or row.qty != 0]
        return PositionList(
            positions=[
                PositionOut(
                    strategy_id=row.strategy_id,
                    symbol=row.symbol,
                    qty=row.qty,
                    avg_price=row.avg_price,
                    realized_pnl=row.realized_pnl,
                    updated_at=row.updated_at,
                )
                for row in rows
            ]
        )

    def trade_update(self, update: TradeUpdate) -> TradeUpdateAnswer:
        result: FillResult | None = self.service.on_trade_update(update)
        cid = update.order.client_order_id
        with Session(self.engine) as session:
            order = get_order(session, cid)
        return TradeUpdateAnswer(
            client_order_id=cid,
            event=update.event,
            known_order=order is not None,
            fill=None if result is None else result.outcome.value,
            status=None if order is None else order.status,
        )

    def database_reachable(self) -> bool:
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except DBAPIError:
            return False
        return True

    def broker_reachable(self) -> bool:
        assert self.broker is not None
        try:
            self.broker.get_clock()
        except BrokerError:
            return False
        return True


def _conflict(request: OrderRequest) -> str:
    return (
        f"client_order_id {request.client_order_id} is already recorded for a different order (size, "
        "type or prices differ); it was left as it is. Use another intent or sequence for a new order"
    )


def _answer(order: Order, *, created: bool, sent: bool, message: str | None) -> OrderAnswer:
    return OrderAnswer(**OrderOut.from_row(order).model_dump(), created=created, sent=sent, message=message)


def _status_code(outcome: SubmitOutcome) -> int:
    if not outcome.matches:
        return 409
    if outcome.status is OrderStatus.PENDING_SUBMIT:
        return 202  # recorded; the broker's answer is unknown: the same request again resolves it
    return 201 if outcome.created else 200


# ------------------------------------------------------------------------------------------- errors


def _validation_detail(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI/Pydantic errors as ``{"field", "message", "type"}``; the message starts with the field."""
    detail = []
    for error in errors:
        ctx = error.get("ctx") or {}
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        if error.get("type") == "json_invalid":
            loc = []  # its loc holds the character position, not a field
        field = str(ctx.get("field") or ".".join(loc) or "body")
        message = str(error.get("msg", "invalid"))
        if not message.startswith(f"{field}:"):
            message = f"{field}: {message}"
        detail.append({"field": field, "message": message, "type": error.get("type", "value_error")})
    return detail


def _install_error_handlers(app: FastAPI, api_key: str) -> None:
    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(_request: Request, _exc: _UnauthorizedError) -> JSONResponse:
        return _unauthorized_response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Validation runs before the key dependency on a malformed body: keep 401 first.
        if request.url.path != "/health" and not key_matches(presented_key(request.headers), api_key):
            return _unauthorized_response()
        return JSONResponse({"detail": _validation_detail(exc.errors())}, status_code=422)

    @app.exception_handler(TraderError)
    async def trader_error(_request: Request, exc: TraderError) -> JSONResponse:
        status = _status_of(exc)
        if status >= 500:
            log.warning("request failed: %s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(DBAPIError)
    async def database_error(_request: Request, exc: DBAPIError) -> JSONResponse:
        log.error("database error: %s", type(exc.orig).__name__ if exc.orig is not None else exc)
        detail = "the database is unavailable or refused the change; retry the same request"
        return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": "1"})


class NotReconciledError(TraderError):
    """The gateway has not finished its boot reconciliation, so it takes no order yet."""


def _status_of(exc: TraderError) -> int:
    if isinstance(exc, RiskInputsUnavailableError | NotReconciledError):
        return 503
    if isinstance(exc, InvalidOrderIntentError | InvalidOrderIdError | InvalidFillError):
        return 422
    if isinstance(exc, FillConflictError | OrderConflictError):
        return 409
    return 500


# -------------------------------------------------------------------------------------------- routes


class TradeUpdateBody(BaseModel):
    """The envelope of a webhook body (Alpaca's ``trade_updates`` ``data``); ``order`` is read by the SDK."""

    model_config = ConfigDict(extra="allow")

    event: Annotated[str, Field(min_length=1)]
    order: dict[str, Any]
    timestamp: datetime | None = None
    execution_id: str | None = None
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None


def _webhook_update(payload: dict[str, Any]) -> TradeUpdate:
    """The :class:`TradeUpdate` of a webhook body (the ``data`` object, or the whole stream message)."""
    data = payload.get("data") if payload.get("stream") == "trade_updates" else payload
    if not isinstance(data, dict):
        raise _BadUpdateError([{"field": "data", "message": "data: must be an object", "type": "dict_type"}])
    try:
        TradeUpdateBody.model_validate(data)
    except ValidationError as exc:
        raise _BadUpdateError(_validation_detail(exc.errors())) from None
    try:
        return parse_trade_update(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("order", *error.get("loc", ())), "ctx": None} for error in exc.errors()]
        raise _BadUpdateError(_validation_detail(errors)) from None
    except (KeyError, TypeError, ValueError) as exc:
        problem = {"field": "order", "message": f"order: {exc}", "type": "value_error"}
        raise _BadUpdateError([problem]) from None


class _BadUpdateError(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("unreadable trade update")
        self.detail = detail


def _routes(gateway: Gateway, api_key: str, app: FastAPI) -> APIRouter:
    def require_key(request: Request) -> None:
        if not key_matches(presented_key(request.headers), api_key):
            raise _UnauthorizedError

    router = APIRouter(dependencies=[Depends(require_key)])

    @router.post("/orders", response_model=OrderAnswer, status_code=201)
    def post_order(body: OrderBody, response: Response) -> Any:
        """Record, risk-check and send (or dry-run) one order; see the module doc for the status codes."""
        status, answer = gateway.submit(body)
        if status == 409:
            return JSONResponse({"detail": answer.message, "order": answer.model_dump(mode="json")}, 409)
        response.status_code = status
        return answer

    @router.get("/orders", response_model=OrderList)
    def list_orders(
        strategy_id: Annotated[str | None, Query(pattern=_STRATEGY_PATTERN)] = None,
        trading_date: date | None = None,
        status: OrderStatus | None = None,
        symbol: Annotated[str | None, Query(pattern=_SYMBOL_PATTERN)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 100,
    ) -> OrderList:
        """The newest orders first."""
        return gateway.list_orders(strategy_id, trading_date, status, symbol, limit)

    @router.get("/orders/{client_order_id}", response_model=OrderOut)
    def get_one(client_order_id: str) -> Any:
        order = gateway.get_order(client_order_id)
        if order is None:
            return JSONResponse({"detail": f"no order with client_order_id {client_order_id!r}"}, 404)
        return order

    @router.get("/positions", response_model=PositionList)
    def positions(
        strategy_id: Annotated[str | None, Query(pattern=_STRATEGY_PATTERN)] = None,
        symbol: Annotated[str | None, Query(pattern=_SYMBOL_PATTERN)] = None,
        include_flat: bool = False,
    ) -> PositionList:
        """Positions per (strategy, symbol) as the ledger holds them; flat ones only on request."""
        return gateway.positions(strategy_id, symbol, include_flat)

    @router.post("/webhooks/trade-updates", response_model=TradeUpdateAnswer)
    def trade_update(payload: Annotated[dict[str, Any], Body()]) -> Any:
        """Apply one Alpaca ``trade_updates`` event (its ``data`` object); repeats are harmless."""
        try:
            update = _webhook_update(payload)
        except _BadUpdateError as exc:
            return JSONResponse({"detail": exc.detail}, 422)
        return gateway.trade_update(update)

    @router.get("/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus' text format (see docs/observability.md); scrape it with the key as a Bearer token."""
        return Response(render(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _health_route(gateway: Gateway) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=HealthOut)
    async def health() -> JSONResponse:
        """No key needed. 200 when the database (and the broker, if any) answer, else 503."""
        database = await _probe(gateway.database_reachable)
        broker = None if gateway.broker is None else await _probe(gateway.broker_reachable)
        consumer = gateway.consumer
        healthy = database and broker is not False
        body = HealthOut(
            status="ok" if healthy else "degraded",
            version=__version__,
            dry_run=gateway.settings.dry_run,
            database=Probe(reachable=database),
            broker=Probe(configured=gateway.broker is not None, reachable=broker),
            trade_updates=StreamState(
                running=consumer is not None and consumer.running,
                connected=consumer is not None and consumer.connected,
            ),
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if healthy else 503)

    return router


async def _probe(check: Callable[[], bool]) -> bool:
    try:
        return await asyncio.wait_for(asyncio.to_thread(check), HEALTH_PROBE_SECONDS)
    except TimeoutError:
        return False


# ------------------------------------------------------------------------------------------ factory


def _reconcile_until_ready(
    gateway: Gateway, broker: Broker, stop: threading.Event, retry_seconds: float
) -> None:
    """The boot reconciliation: once now; if the broker cannot be read, again in the background until
    it can (orders are refused with 503 meanwhile)."""
    from trader.reconcile import Reconciler

    reconciler = Reconciler(gateway.engine, broker)

    def attempt() -> bool:
        try:
            report = reconciler.run_once()
        except BrokerError as exc:
            log.warning("boot reconciliation failed (%s); orders refused until it succeeds", exc)
            return False
        log.warning("boot reconciliation: %s", report.summary())
        gateway.ready.set()
        return True

    if attempt():
        return

    def retry() -> None:
        while not stop.wait(retry_seconds) and not attempt():
            pass

    threading.Thread(target=retry, name="gateway-boot-reconcile", daemon=True).start()


def create_gateway_app(
    settings: Settings,
    *,
    broker: Broker | None = None,
    engine: Engine | None = None,
    risk_inputs: RiskInputsProvider | None = None,
    risk_options: RiskOptions | None = None,
    consume_trade_updates: bool = True,
    stream_resync_seconds: float | None = STREAM_RESYNC_SECONDS,
    clock: Callable[[], datetime] | None = None,
    boot_reconcile: bool = True,
    reconcile_retry_seconds: float = 5.0,
    breaker: CircuitBreaker | None = None,
) -> FastAPI:
    """The gateway app.

    - ``settings``: ``TRADER_API_KEY`` (required), ``DRY_RUN``, ``DATABASE_URL`` (used when no
      ``engine`` is given; the app then disposes it at shutdown) and the risk limits.
    - ``broker``: where orders go (required unless ``DRY_RUN``); also the default source of the risk
      inputs (:class:`~trader.execution.snapshots.BrokerRiskInputs`) and of the trade-update stream,
      which runs while the app runs when ``consume_trade_updates``.
    - ``risk_inputs``: the account snapshot and reference prices (e.g.
      :class:`~trader.execution.snapshots.StaticRiskInputs` to keep the broker out of the loop).
    - ``boot_reconcile``: with a broker, run the reconciler (:mod:`trader.reconcile`) at start-up and
      answer ``POST /orders`` with 503 until it has finished once (retried every
      ``reconcile_retry_seconds`` while the broker cannot be read).
    - ``breaker``: the circuit breaker (default: Redis when ``REDIS_URL`` is set, else the database);
      while it is TRIPPED only risk-reducing orders are accepted.
    - ``clock``: now, for the default ``trading_date`` (wall clock; the paper broker's simulated clock
      is not consulted: post ``trading_date`` when you drive one).

    Raises :class:`~trader.errors.ConfigError` without ``TRADER_API_KEY``, or without a broker when
    ``DRY_RUN`` is off or no ``risk_inputs`` are given.
    """
    if settings.trader_api_key is None or not settings.trader_api_key.get_secret_value():
        raise ConfigError(
            "TRADER_API_KEY is not set: the gateway refuses to start without an API key; set it to a "
            "long random secret (e.g. the output of: openssl rand -hex 32)"
        )
    if broker is None and not settings.dry_run:
        raise ConfigError("DRY_RUN is off, so the gateway needs a broker to send orders to")
    if risk_inputs is None:
        if broker is None:
            raise ConfigError("the gateway needs a broker or risk inputs (account snapshot and prices)")
        risk_inputs = BrokerRiskInputs(broker)
    owns_engine = engine is None
    db = engine if engine is not None else make_engine(settings.database_url)
    breaker = breaker if breaker is not None else breaker_from_settings(settings, db)
    metrics = GatewayMetrics()
    service = ExecutionService(
        db, broker, settings, risk_options=risk_options, source="gateway", breaker=breaker, metrics=metrics
    )
    consumer = (
        TradeUpdateConsumer(broker, service, db, resync_interval=stream_resync_seconds)
        if broker is not None and consume_trade_updates
        else None
    )
    gateway = Gateway(
        settings=settings,
        engine=db,
        service=service,
        broker=broker,
        risk_inputs=risk_inputs,
        consumer=consumer,
        clock=clock or (lambda: datetime.now(UTC)),
        metrics=metrics,
    )
    metrics.registry.register(GatewayStateCollector(gateway))

    stop_reconciling = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if consumer is not None:
            await asyncio.to_thread(consumer.start)
        if broker is not None and boot_reconcile:
            await asyncio.to_thread(
                _reconcile_until_ready, gateway, broker, stop_reconciling, reconcile_retry_seconds
            )
        else:
            gateway.ready.set()
        try:
            yield
        finally:
            stop_reconciling.set()
            if consumer is not None:
                await asyncio.to_thread(consumer.stop)
            if owns_engine:
                db.dispose()

    app = FastAPI(
        title="trader execution gateway",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served behind the key by the router
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    api_key = settings.trader_api_key.get_secret_value()
    _install_error_handlers(app, api_key)
    app.include_router(_health_route(gateway))
    app.include_router(_routes(gateway, api_key, app))
    return app
