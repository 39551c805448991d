"""``AlpacaBroker``: the :class:`~trader.broker.base.Broker` on the official ``alpaca-py`` SDK.

The same code talks to real Alpaca (paper or live) and to our paper broker: only the base URL and the
keys differ (``TradingClient(url_override=...)``, ``TradingStream(url_override=...)``).

What it adds to the SDK, and why:

- **A timeout on every request.** ``alpaca-py`` passes none to ``requests``; a silent server would hang
  the caller forever. The client's ``requests`` session is replaced by one with a default timeout
  (the helper shared with the market-data source).
- **One retry policy: ours.** The SDK re-sends on 429/504 three times after 3 s sleeps, blindly, even
  ``POST /v2/orders`` — a 504 after the order was accepted would create a second order if the
  ``client_order_id`` were not set, and would block the caller 9 s either way. ``client._retry = 0``
  switches that off (a private attribute: ``tests/unit/broker`` fails if an SDK upgrade renames it),
  so :class:`~trader.broker.retry.Retrier` is the only thing that repeats a request, and only when
  the typed error says it is safe.
- **Exactly-once submission.** A failure whose outcome is unknown (timeout, reset, 5xx after
  ``POST /v2/orders``) is resolved by looking the order up by ``client_order_id`` before anything is
  re-sent; a re-send that meets Alpaca's 422 ``client_order_id must be unique`` means an earlier
  attempt landed, so the order is fetched and returned. Any other refusal of a re-send after an
  ambiguous attempt (403 buying power held by that very order...) is checked by the same lookup, and
  stays ambiguous when the order is not visible: never a final "no order". Replacing an order
  (``PATCH /v2/orders/{id}``) creates a new order, so it follows the same rules, keyed by the new
  order's ``client_order_id``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from alpaca.common.enums import Sort
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide as AlpacaOrderSide
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.enums import TimeInForce as AlpacaTimeInForce
from alpaca.trading.models import Clock as AlpacaClock
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.models import TradeAccount
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
    TrailingStopOrderRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest

from trader.broker.base import (
    Account,
    BrokerOrder,
    CancelResult,
    Clock,
    ClosePositionResult,
    OrderQuery,
    OrderRequest,
    Position,
    TradeUpdateHandler,
    new_client_order_id,
    replacement_problems,
    same_order,
)
from trader.broker.errors import (
    AmbiguousBrokerError,
    BrokerError,
    DuplicateClientOrderIdError,
    InvalidOrderError,
    NotFoundError,
    TemporaryBrokerError,
    UnexpectedResponseError,
    classify,
    clean,
    parse_error_body,
)
from trader.broker.retry import Retrier, RetryPolicy
from trader.broker.statuses import to_order_status
from trader.config import Settings
from trader.data.sources.alpaca_source import DEFAULT_CHUNK_SIZE, AlpacaSource, harden_session
from trader.domain.enums import OrderSide, OrderType, PositionSide, TimeInForce

if TYPE_CHECKING:
    from alpaca.data.enums import DataFeed
    from alpaca.data.timeframe import TimeFrame

    from trader.broker.stream import HookedTradingStream, TradeUpdateStream

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Alpaca's largest page of ``GET /v2/orders``.
ORDERS_PAGE_LIMIT = 500


class _NotLandedError(TemporaryBrokerError):
    """An ambiguous submit whose lookup found no order: re-sending (same client_order_id) is safe."""


@dataclass
class _SubmitAttempt:
    """One ``submit_order`` call across its retries; ``maybe_landed``: an earlier attempt was
    ambiguous, so a refusal of a re-send (e.g. 403 buying power, held by that very order) must be
    checked by lookup."""

    request: OrderRequest
    sdk_request: AlpacaOrderRequest
    maybe_landed: bool = False


@dataclass
class _ReplaceAttempt:
    """One ``replace_order`` call across its retries; ``maybe_landed``: an earlier attempt (or call) may
    have created the replacement, so a refusal must be checked by lookup."""

    order_id: str
    client_order_id: str
    request: ReplaceOrderRequest
    maybe_landed: bool = False


class AlpacaBroker:
    """A :class:`~trader.broker.base.Broker` over ``alpaca-py`` (see the module doc).

    ``client`` is a ``TradingClient`` (anything with its methods, for tests); ``stream_factory`` builds
    the ``TradingStream`` for :meth:`trade_updates`. ``secrets`` are masked in every error message.
    ``settings`` (set by :meth:`from_settings`) configure :meth:`market_data`.
    """

    def __init__(
        self,
        client: TradingClient,
        *,
        retrier: Retrier | None = None,
        stream_factory: Callable[[], HookedTradingStream] | None = None,
        secrets: Sequence[str] = (),
        url: str = "",
        settings: Settings | None = None,
    ) -> None:
        self.client = client
        self.retrier = retrier if retrier is not None else Retrier()
        self.stream_factory = stream_factory
        self.url = url
        self.settings = settings
        self._secrets = [secret for secret in secrets if secret]

    @classmethod
    def from_settings(cls, settings: Settings, *, policy: RetryPolicy | None = None) -> AlpacaBroker:
        """The broker at ``ALPACA_BASE_URL`` with the configured keys, timeout and retry count."""
        key = settings.alpaca_api_key_id.get_secret_value()
        secret = settings.alpaca_api_secret_key.get_secret_value()
        url = str(settings.alpaca_base_url).rstrip("/")
        client = make_trading_client(
            key, secret, url, timeout=settings.broker_timeout_seconds, paper=not settings.is_live
        )
        policy = policy if policy is not None else RetryPolicy(max_retries=settings.broker_max_retries)
        ws_url = stream_url(url)
        return cls(
            client,
            retrier=Retrier(policy),
            stream_factory=_stream_factory(key, secret, ws_url),
            secrets=(key, secret),
            url=url,
            settings=settings,
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker(url={self.url!r})"

    # --- market data ---

    def market_data(
        self,
        *,
        feed: DataFeed | None = None,
        timeframe: TimeFrame | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        include_actions: bool = True,
    ) -> AlpacaSource:
        """The market-data source (``StockHistoricalDataClient``) of this broker's settings.

        The data layer's :class:`~trader.data.sources.alpaca_source.AlpacaSource`, built by its own
        :meth:`~trader.data.sources.alpaca_source.AlpacaSource.from_settings` from the settings this
        broker was built from: same keys, timeout and retry count, ``ALPACA_DATA_URL`` (the paper
        broker's own URL when it is the broker). Its failures are ``SourceError``, not
        :class:`BrokerError`. A new source (new HTTP sessions) on every call.
        """
        if self.settings is None:
            raise BrokerError(
                "this AlpacaBroker was built without settings: build it with AlpacaBroker.from_settings "
                "for market data"
            )
        return AlpacaSource.from_settings(
            self.settings,
            feed=feed,
            timeframe=timeframe,
            chunk_size=chunk_size,
            include_actions=include_actions,
        )

    # --- orders ---

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        """Send ``request`` exactly once (see the module doc); retry-safe failures are retried.

        Raises :class:`AmbiguousBrokerError` when the outcome is still unknown after every retry, or
        when a re-send after an ambiguous attempt is refused and the lookup cannot see the order (the
        caller must reconcile by ``client_order_id`` later), another :class:`BrokerError` otherwise.
        """
        attempt = _SubmitAttempt(request, to_sdk_order_request(request))
        try:
            return self.retrier.call(lambda: self._submit_once(attempt), "submit order")
        except _NotLandedError as error:
            raise AmbiguousBrokerError(
                f"submit order {request.client_order_id}: outcome unknown after every retry "
                f"(the last lookup found no order; it may still appear): {error}",
                operation="submit order",
                client_order_id=request.client_order_id,
            ) from None

    def _submit_once(self, attempt: _SubmitAttempt) -> BrokerOrder:
        request, coid = attempt.request, attempt.request.client_order_id
        try:
            order = self._once(
                "submit order", lambda: self.client.submit_order(attempt.sdk_request), False, coid
            )
            return self._map(order_from_sdk, order, "submit order")
        except DuplicateClientOrderIdError as error:
            return self._existing_order(request, error)
        except InvalidOrderError as error:
            if not attempt.maybe_landed:
                raise
            return self._refused_after_ambiguous(request, error)
        except AmbiguousBrokerError as error:
            attempt.maybe_landed = True
            found = self._resolve_ambiguous(coid, error, "submit order")
            if found is not None:
                log.info("submit order %s: response lost, but the order landed (%s)", coid, found.id)
                return found
            raise _NotLandedError(f"{error}; no order {coid} at the broker", client_order_id=coid) from None

    def _refused_after_ambiguous(self, request: OrderRequest, error: InvalidOrderError) -> BrokerOrder:
        """A re-send refused after an ambiguous attempt: the earlier order may be the very reason
        (it holds the buying power or the shares), so the refusal proves nothing until the lookup
        says. Found: that order; not found (yet): :class:`AmbiguousBrokerError`, never a final 4xx."""
        coid = request.client_order_id
        found = self._resolve_ambiguous(coid, error, "submit order")
        if found is None:
            raise AmbiguousBrokerError(
                f"{error}; an earlier attempt may have landed but no order {coid} is visible yet",
                operation="submit order",
                client_order_id=coid,
            ) from None
        order = self._same_order_or_raise(request, found, error)
        log.info("submit order %s: re-send refused, but the earlier attempt landed (%s)", coid, order.id)
        return order

    def _resolve_ambiguous(self, coid: str, error: BrokerError, operation: str) -> BrokerOrder | None:
        """The order if the ambiguous attempt landed, ``None`` if not; raise ambiguous if we cannot tell."""
        try:
            return self.get_order_by_client_id(coid)
        except BrokerError as lookup_error:
            raise AmbiguousBrokerError(
                f"{error}; looking the order up failed too: {lookup_error}",
                operation=operation,
                client_order_id=coid,
            ) from None

    def _existing_order(self, request: OrderRequest, error: DuplicateClientOrderIdError) -> BrokerOrder:
        """After a 422 duplicate: the order an earlier attempt (or an earlier run) created, if it is
        the same order; a different order under the same id is a caller bug and is raised."""
        existing = self.get_order_by_client_id(request.client_order_id)
        if existing is None:
            raise error  # Alpaca keeps ids of old orders out of reach of lookups: cannot tell
        order = self._same_order_or_raise(request, existing, error)
        log.info("submit order %s: already at the broker as %s", request.client_order_id, order.id)
        return order

    def _same_order_or_raise(
        self, request: OrderRequest, existing: BrokerOrder, error: BrokerError
    ) -> BrokerOrder:
        """``existing`` (found under the request's ``client_order_id``) if it is this very order."""
        if not same_order(existing, request):
            raise DuplicateClientOrderIdError(
                f"{error}; the existing order {existing.id} differs from this request",
                operation="submit order",
                status=error.status,
                code=error.code,
                client_order_id=request.client_order_id,
            )
        return existing

    def replace_order(
        self,
        order_id: str,
        *,
        qty: Decimal | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        time_in_force: TimeInForce | None = None,
        client_order_id: str | None = None,
    ) -> BrokerOrder:
        """Replace the open order ``order_id`` (``PATCH /v2/orders/{id}``); return the new order.

        Exactly once, like :meth:`submit_order`, keyed by the *new* order's ``client_order_id``
        (generated when not given): after an ambiguous failure the new order is looked up by it before
        anything is re-sent; a re-send refused as a duplicate ``client_order_id``, or because the old
        order is no longer open, after an ambiguous attempt (or under a caller-given id, which an
        earlier call may have used) is resolved by the same lookup. So the same call twice with the
        same ``client_order_id`` returns the same new order. Raises :class:`AmbiguousBrokerError` when
        the outcome is still unknown after every retry.
        """
        if not _is_uuid(order_id):
            raise NotFoundError(
                f"replace order failed: {order_id!r} is not an order id", operation="replace order"
            )
        coid = client_order_id if client_order_id is not None else new_client_order_id()
        sdk_request = to_sdk_replace_request(
            coid, qty=qty, limit_price=limit_price, stop_price=stop_price, time_in_force=time_in_force
        )
        # A caller's own id may already have been used by an earlier call (a crash before the answer
        # was stored): then a refusal is resolved by lookup too, so calling again returns the order.
        attempt = _ReplaceAttempt(order_id, coid, sdk_request, maybe_landed=client_order_id is not None)
        try:
            return self.retrier.call(lambda: self._replace_once(attempt), "replace order")
        except _NotLandedError as error:
            raise AmbiguousBrokerError(
                f"replace order {order_id} as {coid}: outcome unknown after every retry "
                f"(the last lookup found no order; it may still appear): {error}",
                operation="replace order",
                client_order_id=coid,
            ) from None

    def _replace_once(self, attempt: _ReplaceAttempt) -> BrokerOrder:
        coid = attempt.client_order_id
        try:
            order = self._once(
                "replace order",
                lambda: self.client.replace_order_by_id(attempt.order_id, attempt.request),
                False,
                coid,
            )
            return self._map(order_from_sdk, order, "replace order")
        except DuplicateClientOrderIdError as error:
            return self._existing_replacement(attempt, error)
        except InvalidOrderError as error:
            if not attempt.maybe_landed:
                raise
            # An earlier attempt may have replaced the order already: the old order is then no longer
            # open and the broker refuses the re-send. The lookup tells.
            found = self._resolve_ambiguous(coid, error, "replace order")
            if found is None:
                raise
            return self._check_replacement(attempt, found, error)
        except AmbiguousBrokerError as error:
            attempt.maybe_landed = True
            found = self._resolve_ambiguous(coid, error, "replace order")
            if found is not None:
                log.info("replace order %s: response lost, but %s replaced it", attempt.order_id, found.id)
                return self._check_replacement(attempt, found, error)
            raise _NotLandedError(f"{error}; no order {coid} at the broker", client_order_id=coid) from None

    def _existing_replacement(
        self, attempt: _ReplaceAttempt, error: DuplicateClientOrderIdError
    ) -> BrokerOrder:
        """After a 422 duplicate: the replacement an earlier attempt created, if it replaces this order."""
        existing = self.get_order_by_client_id(attempt.client_order_id)
        if existing is None:
            raise error
        return self._check_replacement(attempt, existing, error)

    def _check_replacement(
        self, attempt: _ReplaceAttempt, found: BrokerOrder, error: BrokerError
    ) -> BrokerOrder:
        """``found`` (the order under the new ``client_order_id``) if it is the replacement of this order."""
        if found.replaces != attempt.order_id:
            raise DuplicateClientOrderIdError(
                f"{error}; the order {found.id} under client_order_id {attempt.client_order_id} does not "
                f"replace {attempt.order_id}",
                operation="replace order",
                status=error.status,
                code=error.code,
                client_order_id=attempt.client_order_id,
            )
        log.info("replace order %s: already replaced by %s", attempt.order_id, found.id)
        return found

    def get_order(self, order_id: str) -> BrokerOrder:
        """The order with the broker's id (``NotFoundError`` if none)."""
        if not _is_uuid(order_id):
            raise NotFoundError(f"get order failed: {order_id!r} is not an order id", operation="get order")
        order = self._call("get order", lambda: self.client.get_order_by_id(order_id))
        return self._map(order_from_sdk, order, "get order")

    def get_order_by_client_id(self, client_order_id: str) -> BrokerOrder | None:
        """The order with our ``client_order_id``, or ``None``."""
        try:
            order = self._call(
                "get order by client_order_id", lambda: self.client.get_order_by_client_id(client_order_id)
            )
        except NotFoundError:
            return None
        return self._map(order_from_sdk, order, "get order by client_order_id")

    def cancel_order(self, order_id: str) -> None:
        """Request the cancel (``NotCancelableError`` if the order is already final)."""
        if not _is_uuid(order_id):
            raise NotFoundError(
                f"cancel order failed: {order_id!r} is not an order id", operation="cancel order"
            )
        self._call("cancel order", lambda: self.client.cancel_order_by_id(order_id))

    def cancel_all_orders(self) -> list[CancelResult]:
        """Request the cancel of every open order; one result per order."""
        items = _expect_list(self._call("cancel all orders", self.client.cancel_orders), "cancel all orders")
        return [
            CancelResult(str(item.id), int(item.status), _body_message(item.body, self._secrets))
            for item in items
        ]

    def list_orders(
        self,
        status: OrderQuery = OrderQuery.OPEN,
        *,
        after: datetime | None = None,
        symbols: Sequence[str] | None = None,
    ) -> list[BrokerOrder]:
        """Every matching order, oldest submission first, following pages of up to 500."""
        seen: dict[str, BrokerOrder] = {}
        cursor = after
        while True:
            page = self._orders_page(status, cursor, symbols)
            fresh = [order for order in page if order.id not in seen]
            seen.update((order.id, order) for order in fresh)
            if len(page) < ORDERS_PAGE_LIMIT:
                break
            if not fresh:
                log.warning(
                    "list orders: over %d orders share one submission time; listing may be short",
                    ORDERS_PAGE_LIMIT,
                )
                break
            # ``after`` is exclusive: step back 1 µs so orders sharing the last timestamp are not
            # skipped; the ones already seen are dropped above.
            cursor = max(order.submitted_at for order in page) - timedelta(microseconds=1)
        return sorted(seen.values(), key=lambda order: (order.submitted_at, order.id))

    def _orders_page(
        self, status: OrderQuery, after: datetime | None, symbols: Sequence[str] | None
    ) -> list[BrokerOrder]:
        request = GetOrdersRequest(
            status=QueryOrderStatus(status.value),
            limit=ORDERS_PAGE_LIMIT,
            after=after,
            direction=Sort.ASC,
            symbols=list(symbols) if symbols else None,
        )
        orders = self._call("list orders", lambda: self.client.get_orders(request))
        items = _expect_list(orders, "list orders")
        return [self._map(order_from_sdk, order, "list orders") for order in items]

    def list_open_orders(self) -> list[BrokerOrder]:
        """Every open order."""
        return self.list_orders(OrderQuery.OPEN)

    # --- positions ---

    def get_positions(self) -> list[Position]:
        """Every open position."""
        positions = self._call("get positions", self.client.get_all_positions)
        return [
            self._map(position_from_sdk, position, "get positions")
            for position in _expect_list(positions, "get positions")
        ]

    def get_position(self, symbol: str) -> Position | None:
        """The open position in ``symbol``, or ``None``."""
        try:
            position = self._call("get position", lambda: self.client.get_open_position(symbol))
        except NotFoundError:
            return None
        return self._map(position_from_sdk, position, "get position")

    def close_position(self, symbol: str, *, qty: Decimal | None = None) -> BrokerOrder:
        """Send the order closing ``symbol`` (or ``qty`` of it).

        Not retried after an ambiguous failure: the closing order gets an id we did not choose, so a
        lost response cannot be resolved by lookup. The caller checks the position and open orders.
        """
        options = ClosePositionRequest(qty=str(qty)) if qty is not None else None
        order = self._call(
            "close position",
            lambda: self.client.close_position(symbol, close_options=options),
            idempotent=False,
        )
        return self._map(order_from_sdk, order, "close position")

    def close_all_positions(self, *, cancel_orders: bool = True) -> list[ClosePositionResult]:
        """Send closing orders for every position; one result per position.

        Like :meth:`close_position`, not retried after an ambiguous failure. Calling it again is
        harmless: shares already held by the first closing orders are not sold twice.
        """
        items = self._call(
            "close all positions",
            lambda: self.client.close_all_positions(cancel_orders=cancel_orders),
            idempotent=False,
        )
        return [self._close_result(item) for item in _expect_list(items, "close all positions")]

    def _close_result(self, item: Any) -> ClosePositionResult:
        status = int(item.status or 0)
        if isinstance(item.body, AlpacaOrder):
            order = self._map(order_from_sdk, item.body, "close all positions")
            return ClosePositionResult(str(item.symbol or order.symbol), status, order)
        message = clean(str(getattr(item.body, "message", "")), self._secrets)
        return ClosePositionResult(str(item.symbol or ""), status, None, message)

    # --- account ---

    def get_account(self) -> Account:
        """The account's balances."""
        return self._map(account_from_sdk, self._call("get account", self.client.get_account), "get account")

    def get_clock(self) -> Clock:
        """The market clock (UTC)."""
        return self._map(clock_from_sdk, self._call("get clock", self.client.get_clock), "get clock")

    # --- stream ---

    def trade_updates(
        self,
        handler: TradeUpdateHandler,
        *,
        since: datetime | None = None,
        open_order_ids: Sequence[str] = (),
        resync_interval: float | None = None,
        redelivery_delay: float | None = None,
    ) -> TradeUpdateStream:
        """A :class:`~trader.broker.stream.TradeUpdateStream` delivering every order change to ``handler``.

        ``since`` (broker time of the last update the caller processed) and ``open_order_ids`` (the
        orders it believes open) let the first catch-up deliver what changed while it was away.
        ``redelivery_delay`` (seconds; the stream's default when ``None``) is how soon an update the
        handler raised on is delivered again.
        """
        from trader.broker.stream import DEFAULT_REDELIVERY_DELAY, TradeUpdateStream

        if self.stream_factory is None:
            raise BrokerError("this AlpacaBroker was built without a stream factory")
        return TradeUpdateStream(
            self.stream_factory,
            self,
            handler,
            since=since,
            open_order_ids=open_order_ids,
            resync_interval=resync_interval,
            redelivery_delay=DEFAULT_REDELIVERY_DELAY if redelivery_delay is None else redelivery_delay,
        )

    # --- plumbing ---

    def _call(self, what: str, operation: Callable[[], T], *, idempotent: bool = True) -> T:
        """``operation()`` with typed errors, retried by our policy when that is safe."""
        return self.retrier.call(lambda: self._once(what, operation, idempotent), what)

    def _once(self, what: str, operation: Callable[[], T], idempotent: bool, coid: str | None = None) -> T:
        try:
            return operation()
        except Exception as exc:
            raise classify(
                exc, what, idempotent=idempotent, secrets=self._secrets, client_order_id=coid
            ) from None

    def _map(self, mapper: Callable[[Any], T], value: Any, what: str) -> T:
        try:
            return mapper(value)
        # ArithmeticError: decimal/datetime overflow a mapper did not turn into ValueError itself.
        except (ValueError, TypeError, AttributeError, KeyError, ArithmeticError) as exc:
            raise UnexpectedResponseError(
                f"{what} failed: unreadable answer: {clean(str(exc), self._secrets)}", operation=what
            ) from None


def make_trading_client(
    api_key: str, secret_key: str, url: str, *, timeout: float, paper: bool = True
) -> TradingClient:
    """An SDK trading client on ``url`` whose requests time out after ``timeout`` s and never re-send."""
    client = TradingClient(api_key, secret_key, paper=paper, url_override=url)
    # retries=0: the SDK's 429/504 re-send would repeat order submissions blindly; ours decides.
    harden_session(client, timeout, retries=0, retry_wait=0)
    return client


def _stream_factory(key: str, secret: str, ws_url: str) -> Callable[[], HookedTradingStream]:
    def build() -> HookedTradingStream:
        from trader.broker.stream import HookedTradingStream

        # raw_data: we parse updates ourselves, keeping prices exact (the SDK model makes them floats)
        # and so that an unreadable message cannot escape from inside the SDK's loop.
        return HookedTradingStream(key, secret, raw_data=True, url_override=ws_url)

    return build


def stream_url(base_url: str) -> str:
    """The trade-updates websocket URL for a trading base URL (``https://h`` → ``wss://h/stream``)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme, path=parts.path + "/stream"))


# --- requests: ours → SDK ---


def to_sdk_order_request(request: OrderRequest) -> AlpacaOrderRequest:
    """The SDK request for ``request`` (``InvalidOrderError`` if the SDK refuses it)."""
    common: dict[str, Any] = {
        "symbol": request.symbol,
        "qty": _float(request.qty),
        "notional": _float(request.notional),
        "side": AlpacaOrderSide(request.side.value),
        "time_in_force": AlpacaTimeInForce(request.time_in_force.value),
        "client_order_id": request.client_order_id,
        "extended_hours": request.extended_hours or None,
    }
    try:
        return _build_sdk_request(request, common)
    except ValueError as exc:  # pydantic's ValidationError included
        raise InvalidOrderError(
            f"submit order {request.client_order_id}: refused before sending: {clean(str(exc))}",
            operation="submit order",
            client_order_id=request.client_order_id,
        ) from None


def _build_sdk_request(request: OrderRequest, common: dict[str, Any]) -> AlpacaOrderRequest:
    if request.type == OrderType.MARKET:
        return MarketOrderRequest(**common)
    if request.type == OrderType.LIMIT:
        return LimitOrderRequest(**common, limit_price=_float(request.limit_price))
    if request.type == OrderType.STOP:
        return StopOrderRequest(**common, stop_price=_float(request.stop_price))
    if request.type == OrderType.STOP_LIMIT:
        return StopLimitOrderRequest(
            **common, limit_price=_float(request.limit_price), stop_price=_float(request.stop_price)
        )
    return TrailingStopOrderRequest(
        **common, trail_price=_float(request.trail_price), trail_percent=_float(request.trail_percent)
    )


def to_sdk_replace_request(
    client_order_id: str,
    *,
    qty: Decimal | None = None,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    time_in_force: TimeInForce | None = None,
) -> ReplaceOrderRequest:
    """The SDK request replacing an order (``InvalidOrderError`` if it cannot be sent as asked).

    See :func:`~trader.broker.base.replacement_problems` for what is checked before sending.
    """
    problems = replacement_problems(
        client_order_id, qty=qty, limit_price=limit_price, stop_price=stop_price, time_in_force=time_in_force
    )
    try:
        if problems:
            raise ValueError("; ".join(problems))
        return ReplaceOrderRequest(
            qty=int(qty) if qty is not None else None,
            limit_price=_float(limit_price),
            stop_price=_float(stop_price),
            time_in_force=AlpacaTimeInForce(time_in_force.value) if time_in_force is not None else None,
            client_order_id=client_order_id,
        )
    except ValueError as exc:  # pydantic's ValidationError included
        raise InvalidOrderError(
            f"replace order as {client_order_id}: refused before sending: {clean(str(exc))}",
            operation="replace order",
            client_order_id=client_order_id,
        ) from None


# --- models: SDK → ours ---


def order_from_sdk(order: AlpacaOrder) -> BrokerOrder:
    """Our :class:`BrokerOrder` for an SDK ``Order`` (simple orders only)."""
    if order.side is None or order.type is None or order.symbol is None:
        raise ValueError(f"order {order.id} has no side/type/symbol (multi-leg orders are not supported)")
    return BrokerOrder(
        id=str(order.id),
        client_order_id=order.client_order_id,
        symbol=order.symbol,
        side=OrderSide(order.side.value),
        type=OrderType(order.type.value),
        time_in_force=TimeInForce(order.time_in_force.value),
        status=to_order_status(order.status),
        qty=_quantity(order.qty, "qty"),
        notional=_quantity(order.notional, "notional"),
        filled_qty=_quantity(order.filled_qty, "filled_qty") or Decimal(0),
        filled_avg_price=_dec(order.filled_avg_price, "filled_avg_price"),
        limit_price=_dec(order.limit_price, "limit_price"),
        stop_price=_dec(order.stop_price, "stop_price"),
        created_at=utc(order.created_at),
        updated_at=utc(order.updated_at),
        submitted_at=utc(order.submitted_at),
        filled_at=utc(order.filled_at) if order.filled_at else None,
        canceled_at=utc(order.canceled_at) if order.canceled_at else None,
        extended_hours=bool(order.extended_hours),
        replaces=str(order.replaces) if order.replaces else None,
        replaced_by=str(order.replaced_by) if order.replaced_by else None,
    )


def position_from_sdk(position: AlpacaPosition) -> Position:
    """Our :class:`Position` for an SDK ``Position``."""
    return Position(
        symbol=position.symbol,
        asset_id=str(position.asset_id),
        side=PositionSide(position.side.value),
        qty=_required(position.qty, "qty"),
        avg_entry_price=_required(position.avg_entry_price, "avg_entry_price"),
        cost_basis=_required(position.cost_basis, "cost_basis"),
        market_value=_dec(position.market_value, "market_value"),
        current_price=_dec(position.current_price, "current_price"),
        unrealized_pl=_dec(position.unrealized_pl, "unrealized_pl"),
        qty_available=_dec(position.qty_available, "qty_available"),
    )


def account_from_sdk(account: TradeAccount) -> Account:
    """Our :class:`Account` for the SDK's ``TradeAccount``."""
    return Account(
        id=str(account.id),
        account_number=account.account_number,
        status=str(getattr(account.status, "value", account.status)),
        currency=account.currency or "USD",
        cash=_dec(account.cash, "cash") or Decimal(0),
        equity=_dec(account.equity, "equity") or Decimal(0),
        buying_power=_dec(account.buying_power, "buying_power") or Decimal(0),
        long_market_value=_dec(account.long_market_value, "long_market_value") or Decimal(0),
        short_market_value=_dec(account.short_market_value, "short_market_value") or Decimal(0),
        last_equity=_dec(account.last_equity, "last_equity"),
        multiplier=_dec(account.multiplier, "multiplier"),
        trading_blocked=bool(account.trading_blocked),
        account_blocked=bool(account.account_blocked),
        shorting_enabled=bool(account.shorting_enabled),
    )


def clock_from_sdk(clock: AlpacaClock) -> Clock:
    """Our :class:`Clock` (UTC) for the SDK's ``Clock`` (Eastern-time offsets)."""
    return Clock(
        timestamp=utc(clock.timestamp),
        is_open=bool(clock.is_open),
        next_open=utc(clock.next_open),
        next_close=utc(clock.next_close),
    )


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (as the SDK sends them).

    ``ValueError`` when the instant has no UTC representation (year 1 at +01:00, year 9999 at -01:00):
    a garbage answer must read as unreadable, not escape as ``OverflowError``.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{value.isoformat()} is out of range in UTC") from None


def _dec(value: str | float | None, field: str) -> Decimal | None:
    """``value`` as an exact, finite ``Decimal`` (``None`` if absent); ``ValueError`` naming ``field``."""
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))  # str() first: Decimal(0.1) would carry the float's binary error
    except InvalidOperation:  # an ArithmeticError, which callers catching ValueError would miss
        raise ValueError(f"{field}: not a number: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"{field}: not a finite number: {value!r}")
    return number


def _quantity(value: str | float | None, field: str) -> Decimal | None:
    """A quantity (or notional) the broker reports: never negative."""
    number = _dec(value, field)
    if number is not None and number < 0:
        raise ValueError(f"{field}: negative: {value!r}")
    return number


def _required(value: str | float | None, field: str) -> Decimal:
    number = _dec(value, field)
    if number is None:
        raise ValueError(f"{field}: missing")
    return number


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _expect_list(value: object, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise UnexpectedResponseError(f"{what} failed: expected a list, got {type(value).__name__}")
    return value


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return False
    return True


def _body_message(body: dict[str, Any] | None, secrets: Sequence[str]) -> str:
    if not body:
        return ""
    return clean(parse_error_body(json.dumps(body)).message, secrets)
