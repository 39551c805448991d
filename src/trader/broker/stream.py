"""Trade updates that are never lost: alpaca-py's ``TradingStream`` plus a REST catch-up.

Alpaca's ``trade_updates`` websocket does not replay: whatever happens while the connection is down
is gone from the stream. So after every (re)connect — once ``listen`` has been sent, so that nothing
falls between the two — :class:`TradeUpdateStream` asks the REST API for the orders that can have
changed and delivers a *synthetic* update for each change the handler has not seen:

- every open order (``GET /v2/orders?status=open``);
- every order submitted since the newest update delivered, minus a margin (``status=all&after=``);
- every order the stream last saw open but is no longer open (``GET /v2/orders/{id}``): it was
  filled, canceled or expired while we were away. ``open_order_ids`` seeds this set at start.

Live and synthetic updates then pass one filter: an update is dropped if it repeats one already
delivered (same order, event and cumulative ``filled_qty``) or is older than the order's state
already delivered (smaller ``filled_qty`` or ``updated_at``). The handler therefore sees each change
once, in order per order, whether it came from the stream, from a catch-up, or from both.

An update counts as delivered only once the handler has returned. When the handler raises (a
transient database error, say), the order keeps the state last delivered and is marked for
re-delivery: a catch-up runs shortly (backing off while it keeps failing) and delivers the change
again, as a synthetic update. Live updates of that order are held back meanwhile (delivering a later
one would skip the failed change), then pass the filter once the re-delivery succeeded: those it
already covered are dropped, later ones delivered. Delivery is therefore at-least-once for a
handler that failed mid-way: it must be idempotent (the ledger is, by execution id).

The handler may be sync or async; whatever it raises is logged and never reaches alpaca-py, because
an exception inside its dispatch stops its consume loop (0.43) or is silently skipped (0.44).
Reconnects use the SDK's own exponential backoff with jitter (0.44), tuned here.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.stream import TradingStream

from trader.broker.alpaca import order_from_sdk, utc
from trader.broker.base import (
    BrokerOrder,
    Clock,
    OrderQuery,
    TradeEvent,
    TradeUpdate,
    TradeUpdateHandler,
)
from trader.broker.errors import BrokerError, NotFoundError
from trader.domain.enums import OrderStatus

log = logging.getLogger(__name__)

#: How far before the newest delivered update the catch-up looks for newly submitted orders.
DEFAULT_CATCH_UP_MARGIN = timedelta(seconds=60)
#: Orders whose last state we remember (terminal ones are forgotten first beyond this).
DEFAULT_MAX_TRACKED = 100_000
#: Failed deliveries of one order's update before it is given up on (with the back-off capped at
#: 30 s, some ten minutes of trying).
DEFAULT_MAX_ATTEMPTS = 25
#: First delay (seconds) before the catch-up that re-delivers what the handler failed on; doubles
#: while the handler keeps failing, up to the maximum.
DEFAULT_REDELIVERY_DELAY = 1.0
DEFAULT_REDELIVERY_MAX_DELAY = 30.0

_EVENT_FOR_STATUS: dict[OrderStatus, str] = {
    OrderStatus.NEW: TradeEvent.NEW,
    OrderStatus.ACCEPTED: TradeEvent.ACCEPTED,
    OrderStatus.PENDING_NEW: TradeEvent.PENDING_NEW,
    OrderStatus.PARTIALLY_FILLED: TradeEvent.PARTIAL_FILL,
    OrderStatus.FILLED: TradeEvent.FILL,
    OrderStatus.DONE_FOR_DAY: TradeEvent.DONE_FOR_DAY,
    OrderStatus.CANCELED: TradeEvent.CANCELED,
    OrderStatus.EXPIRED: TradeEvent.EXPIRED,
    OrderStatus.REPLACED: TradeEvent.REPLACED,
    OrderStatus.REJECTED: TradeEvent.REJECTED,
    OrderStatus.PENDING_CANCEL: TradeEvent.PENDING_CANCEL,
    OrderStatus.PENDING_REPLACE: TradeEvent.PENDING_REPLACE,
    OrderStatus.STOPPED: TradeEvent.STOPPED,
    OrderStatus.SUSPENDED: TradeEvent.SUSPENDED,
    OrderStatus.CALCULATED: TradeEvent.CALCULATED,
}
_FILL_EVENTS = {TradeEvent.FILL.value, TradeEvent.PARTIAL_FILL.value}


class OrderSource(Protocol):
    """The REST calls a catch-up needs (an :class:`~trader.broker.alpaca.AlpacaBroker`)."""

    def list_orders(
        self, status: OrderQuery = ..., *, after: datetime | None = ..., symbols: Sequence[str] | None = ...
    ) -> list[BrokerOrder]: ...

    def get_order(self, order_id: str) -> BrokerOrder: ...

    def get_clock(self) -> Clock: ...


class HookedTradingStream(TradingStream):
    """alpaca-py's ``TradingStream`` that awaits ``on_connected`` after each connect + auth + listen,
    and calls ``on_disconnected`` whenever it closes the socket.

    ``_start_ws`` is private SDK API; ``tests/unit/broker/test_stream.py`` fails if it disappears.
    An exception from ``on_connected`` makes the SDK close the socket and reconnect with backoff.
    The SDK closes the socket on every connection error and failed reconnect (and on stop), so
    ``on_disconnected`` tells a lost connection at once, not only when the stream stops for good.
    """

    on_connected: Callable[[], Any] | None = None
    on_disconnected: Callable[[], None] | None = None

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]
        if self.on_connected is not None:
            await self.on_connected()

    async def close(self) -> None:
        if self.on_disconnected is not None:
            self.on_disconnected()
        await super().close()


@dataclass
class _Seen:
    """The last state of one order that the handler was given."""

    filled_qty: Decimal
    filled_avg_price: Decimal | None
    updated_at: datetime
    status: OrderStatus
    events: set[str] = field(default_factory=set)


@dataclass
class StreamStats:
    """Counters, for logs and tests."""

    connects: int = 0
    catch_ups: int = 0
    delivered: int = 0
    synthetic: int = 0
    duplicates: int = 0
    stale: int = 0
    handler_errors: int = 0
    deferred: int = 0
    unreadable: int = 0
    catch_up_errors: int = 0
    #: Updates given up on after ``max_attempts`` failed deliveries (left to the REST reconciler).
    abandoned: int = 0


class Reconciler:
    """The pure part of the stream: what to deliver, given what was delivered. No I/O, not async.

    ``watermark`` is the newest broker time delivered (or ``since``); ``None`` until known.
    ``retry_ids``: orders whose update the handler failed on, to be re-delivered by a catch-up.

    The caller asks :meth:`admits`, calls the handler, then reports :meth:`delivered` or
    :meth:`failed`; :meth:`accept` is the first and second at once (for a handler that cannot fail).
    """

    def __init__(
        self,
        *,
        since: datetime | None = None,
        max_tracked: int = DEFAULT_MAX_TRACKED,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    ) -> None:
        self.watermark = utc(since) if since is not None else None
        self.max_tracked = max_tracked
        self.max_attempts = max_attempts
        self.open_ids: set[str] = set()
        #: Failures in a row of each order awaiting re-delivery (its keys are :attr:`retry_ids`).
        self._attempts: dict[str, int] = {}
        self._held: dict[str, list[TradeUpdate]] = {}
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self.stats = StreamStats()

    @property
    def retry_ids(self) -> frozenset[str]:
        """Orders whose update the handler failed on, awaiting re-delivery by a catch-up."""
        return frozenset(self._attempts)

    def accept(self, update: TradeUpdate) -> bool:
        """Whether ``update`` is new to the handler; if so, remember it as delivered."""
        if not self.admits(update):
            return False
        self.delivered(update)
        return True

    def delivered(self, update: TradeUpdate) -> None:
        """The handler took ``update``: remember its order's state as the one the handler has."""
        self.settle(update.order.id)
        self._remember(update)

    def failed(self, update: TradeUpdate) -> bool:
        """The handler raised on ``update``: keep the state it had, so a catch-up re-delivers the change.

        After ``max_attempts`` failures in a row the update is given up on (``True``): remembered as
        if delivered, so that the order's later updates flow again instead of waiting for ever behind
        an update that a bug or a bad row keeps refusing; the REST reconciler books what it missed.
        """
        self.stats.handler_errors += 1
        order_id = update.order.id
        attempts = self._attempts.get(order_id, 0) + 1
        if attempts < self.max_attempts:
            self._attempts[order_id] = attempts
            return False
        self.settle(order_id)
        self._remember(update)
        self.stats.abandoned += 1
        return True

    def admits(self, update: TradeUpdate) -> bool:
        """Whether ``update`` is new to the handler (nothing is remembered until :meth:`delivered`).

        A live update of an order awaiting re-delivery is held back (``deferred``; see
        :meth:`release`): delivered now, it would skip the change the handler failed on.
        """
        order = update.order
        if order.id in self._attempts and not update.synthetic:
            self.stats.deferred += 1
            self._held.setdefault(order.id, []).append(update)
            return False
        seen = self._seen.get(order.id)
        if seen is not None:
            key = f"{update.event}@{order.filled_qty}"
            if key in seen.events:
                self.stats.duplicates += 1
                return False
            if order.filled_qty < seen.filled_qty or order.updated_at < seen.updated_at:
                self.stats.stale += 1
                return False
        return True

    def release(self) -> list[TradeUpdate]:
        """The held-back live updates of orders no longer awaiting re-delivery, oldest first per order.

        Pass each through :meth:`admits` again: the re-delivery may have covered it already.
        """
        ready = [order_id for order_id in self._held if order_id not in self._attempts]
        return [update for order_id in ready for update in self._held.pop(order_id)]

    def catch_up(self, orders: Iterable[BrokerOrder], *, deliver_new: bool) -> list[TradeUpdate]:
        """Synthetic updates for every order whose state differs from the last one delivered.

        Orders never seen are delivered when ``deliver_new`` and they changed at or after the
        watermark, or when awaiting re-delivery; else only remembered (the baseline taken when the
        caller gave no ``since``). The updates are not remembered: report each one's fate with
        :meth:`delivered` or :meth:`failed`.
        """
        updates: list[TradeUpdate] = []
        for order in sorted(orders, key=lambda item: (item.updated_at, item.id)):
            seen = self._seen.get(order.id)
            if seen is None and not self._deliverable_unseen(order, deliver_new):
                self._remember(TradeUpdate(_event_for(order), order, order.updated_at, synthetic=True))
                continue
            changes = [update for update in synthesize(order, seen) if self.admits(update)]
            if not changes:
                # The handler already has the broker's state (the failed update changed nothing).
                self.settle(order.id)
            updates.extend(changes)
        return updates

    def _deliverable_unseen(self, order: BrokerOrder, deliver_new: bool) -> bool:
        # A failed first update must come again even though the watermark has moved past it.
        return order.id in self._attempts or (deliver_new and self._after_watermark(order))

    def _after_watermark(self, order: BrokerOrder) -> bool:
        # ">=": an order changed at the watermark instant may not have been delivered yet (timestamps
        # can tie, e.g. under a frozen simulated clock). At that boundary delivery is at-least-once.
        return self.watermark is None or order.updated_at >= self.watermark

    def _remember(self, update: TradeUpdate) -> None:
        order = update.order
        seen = self._seen.pop(order.id, None)
        if seen is None:
            seen = _Seen(order.filled_qty, order.filled_avg_price, order.updated_at, order.status)
        seen.filled_qty, seen.filled_avg_price = order.filled_qty, order.filled_avg_price
        seen.updated_at, seen.status = max(seen.updated_at, order.updated_at), order.status
        seen.events.add(f"{update.event}@{order.filled_qty}")
        self._seen[order.id] = seen  # re-inserted: newest last
        if order.is_terminal:
            self.open_ids.discard(order.id)
        else:
            self.open_ids.add(order.id)
        stamp = max(order.updated_at, utc(update.timestamp))
        self.watermark = stamp if self.watermark is None else max(self.watermark, stamp)
        self._forget_oldest()

    def settle(self, order_id: str) -> None:
        """Nothing awaits re-delivery for ``order_id`` any more (its failures in a row start again)."""
        self._attempts.pop(order_id, None)

    def _forget_oldest(self) -> None:
        while len(self._seen) > self.max_tracked:
            oldest = next(iter(self._seen))
            self._seen.pop(oldest)
            self.open_ids.discard(oldest)
            self.settle(oldest)


def synthesize(order: BrokerOrder, seen: _Seen | None) -> list[TradeUpdate]:
    """The update(s) that bring a handler from ``seen`` to ``order``'s current state.

    Quantity filled since ``seen`` is reported as one fill with its average price; if the order has
    since ended otherwise (canceled, expired...), that fill comes first as a ``partial_fill``.
    """
    before_qty = seen.filled_qty if seen is not None else Decimal(0)
    before_avg = seen.filled_avg_price if seen is not None else None
    delta = order.filled_qty - before_qty
    price = _execution_price(order, before_qty, before_avg) if delta > 0 else None
    event = _event_for(order)
    qty = delta if delta > 0 else None
    at = order.updated_at
    if qty is not None and event not in _FILL_EVENTS:
        return [
            TradeUpdate(TradeEvent.PARTIAL_FILL.value, order, at, price=price, qty=qty, synthetic=True),
            TradeUpdate(event, order, at, synthetic=True),
        ]
    return [TradeUpdate(event, order, at, price=price, qty=qty, synthetic=True)]


def _event_for(order: BrokerOrder) -> str:
    return str(_EVENT_FOR_STATUS.get(order.status, order.status.value))


def _execution_price(order: BrokerOrder, before_qty: Decimal, before_avg: Decimal | None) -> Decimal | None:
    """Average price of the quantity filled since ``before_qty`` (from the cumulative averages)."""
    if order.filled_avg_price is None:
        return None
    if before_qty == 0:
        return order.filled_avg_price
    if before_avg is None:
        return None
    delta = order.filled_qty - before_qty
    return (order.filled_avg_price * order.filled_qty - before_avg * before_qty) / delta


def parse_trade_update(data: dict[str, Any]) -> TradeUpdate:
    """Our :class:`TradeUpdate` for the ``data`` of a ``trade_updates`` message (exact decimals)."""
    order = order_from_sdk(AlpacaOrder(**data["order"]))
    stamp = data.get("timestamp")
    timestamp = _timestamp(stamp) if stamp else order.updated_at
    execution_id = data.get("execution_id")
    return TradeUpdate(
        event=str(data["event"]),
        order=order,
        timestamp=timestamp,
        execution_id=str(execution_id) if execution_id else None,
        price=_decimal(data.get("price")),
        qty=_decimal(data.get("qty")),
        position_qty=_decimal(data.get("position_qty")),
    )


def _timestamp(value: Any) -> datetime:
    try:
        return utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))
    except ValueError as exc:  # named: the webhook reports it, and the order has its own times
        raise ValueError(f"timestamp: {exc}") from None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None


class _DropRestartWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "websocket error, restarting" not in record.getMessage()


class TradeUpdateStream:
    """Every order change, delivered once to ``handler`` (see the module doc).

    ``stream_factory`` builds the SDK stream (a :class:`HookedTradingStream`); ``source`` answers the
    catch-up's REST calls. ``resync_interval`` (seconds) also runs the catch-up periodically, which
    covers events lost on a live connection too. ``redelivery_delay`` (seconds, doubling up to
    ``redelivery_max_delay`` while the handler keeps failing) is how soon a catch-up re-delivers an
    update the handler raised on.
    """

    def __init__(
        self,
        stream_factory: Callable[[], HookedTradingStream],
        source: OrderSource,
        handler: TradeUpdateHandler,
        *,
        since: datetime | None = None,
        open_order_ids: Sequence[str] = (),
        resync_interval: float | None = None,
        catch_up_margin: timedelta = DEFAULT_CATCH_UP_MARGIN,
        reconnect_min_backoff: float = 0.5,
        reconnect_max_backoff: float = 30.0,
        redelivery_delay: float = DEFAULT_REDELIVERY_DELAY,
        redelivery_max_delay: float = DEFAULT_REDELIVERY_MAX_DELAY,
    ) -> None:
        self._factory = stream_factory
        self._source = source
        self._handler = handler
        self._initial_since = since
        self.reconciler = Reconciler(since=since)
        self.reconciler.open_ids.update(open_order_ids)
        self._resync_interval = resync_interval
        self._margin = catch_up_margin
        self._backoff = (reconnect_min_backoff, reconnect_max_backoff)
        self._redelivery = (redelivery_delay, redelivery_max_delay)
        self._redelivery_round = 0
        self._redelivery_task: asyncio.Task[None] | None = None
        self._sdk: HookedTradingStream | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._resync_task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._first_catch_up_done = False
        self.connected = threading.Event()
        self.finished = threading.Event()

    @property
    def stats(self) -> StreamStats:
        return self.reconciler.stats

    # --- lifecycle ---

    def run(self) -> None:
        """Block, delivering updates, until :meth:`stop` (reconnecting by itself in between)."""
        self._stopping = False
        self._resync_task = self._redelivery_task = None  # a previous run's tasks died with its loop
        self.finished.clear()
        sdk = self._factory()
        sdk.on_connected = self._on_connected
        sdk.on_disconnected = self.connected.clear  # health and the metric follow the socket
        sdk._reconnect_min_backoff, sdk._reconnect_max_backoff = self._backoff
        sdk.subscribe_trade_updates(self._on_message)
        self._sdk = sdk
        try:
            sdk.run()
        finally:
            self.connected.clear()
            self.finished.set()

    def start(self, timeout: float = 10.0) -> bool:
        """Run in a daemon thread; return whether the first connect and catch-up finished in time."""
        self._thread = threading.Thread(target=self.run, name="trade-updates", daemon=True)
        self._thread.start()
        return self.connected.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and close the connection; returns once the stream has stopped (or after ``timeout``).

        Call it from another thread than the handler's (it waits for the stream's loop to finish).
        """
        self._stopping = True
        if self._sdk is None:
            return  # never ran
        # Closing the socket ourselves makes the SDK log "websocket error, restarting": not an error.
        sdk_log = logging.getLogger("alpaca.trading.stream")
        quiet = _DropRestartWarnings()
        sdk_log.addFilter(quiet)
        try:
            waited = 0.0
            while not self.finished.is_set() and waited < timeout:
                self._request_stop()
                self.finished.wait(0.2)
                waited += 0.2
            if self._thread is not None:
                self._thread.join(max(0.0, timeout - waited))
        finally:
            sdk_log.removeFilter(quiet)

    def reconnect(self) -> None:
        """Drop the connection now; the stream reconnects and catches up (e.g. after a suspected gap)."""
        loop = self._loop()
        if loop is not None and self._sdk is not None:
            asyncio.run_coroutine_threadsafe(self._sdk.close(), loop)

    def _loop(self) -> asyncio.AbstractEventLoop | None:
        loop = getattr(self._sdk, "_loop", None)
        return loop if loop is not None and loop.is_running() else None

    def _request_stop(self) -> None:
        loop = self._loop()
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._stop_async(), loop)

    async def _stop_async(self) -> None:
        for task in (self._resync_task, self._redelivery_task):
            if task is not None:
                task.cancel()
        if self._sdk is not None:
            await self._sdk.stop_ws()
            await self._sdk.close()  # wakes the SDK's 5 s recv wait at once

    # --- inside the SDK's event loop ---

    async def _on_connected(self) -> None:
        """After connect + listen: catch up from REST (an exception here makes the SDK reconnect)."""
        self.stats.connects += 1
        if self._stopping:
            await self._stop_async()
            return
        await self._catch_up()
        if self._resync_interval and self._resync_task is None:
            self._resync_task = asyncio.get_running_loop().create_task(self._resync_forever())
        self.connected.set()

    async def _resync_forever(self) -> None:
        assert self._resync_interval is not None
        while not self._stopping:
            await asyncio.sleep(self._resync_interval)
            try:
                await self._catch_up()
            except Exception:
                self.stats.catch_up_errors += 1
                log.warning("periodic trade-update catch-up failed; next in %ss", self._resync_interval)

    async def _catch_up(self) -> None:
        baseline = self.reconciler.watermark is None and not self._first_catch_up_done
        try:
            orders, clock = await asyncio.to_thread(self._fetch_for_catch_up, baseline)
        except Exception as exc:
            self.stats.catch_up_errors += 1
            reason = exc if isinstance(exc, BrokerError) else type(exc).__name__
            log.warning("trade-update catch-up failed: %s", reason)
            raise
        async with self._get_lock():
            updates = self.reconciler.catch_up(orders, deliver_new=not baseline)
            if baseline and clock is not None and self.reconciler.watermark is None:
                self.reconciler.watermark = clock.timestamp
            self._first_catch_up_done = True
            self.stats.catch_ups += 1
            await self._deliver_synthetic(updates)
            await self._deliver_released()
        if updates:
            log.info("trade-update catch-up delivered %d missed change(s)", len(updates))
        self._schedule_redelivery()

    async def _deliver_synthetic(self, updates: list[TradeUpdate]) -> None:
        failed: set[str] = set()
        for update in updates:
            if update.order.id in failed:
                continue  # in order per order: what follows a failed change waits for its re-delivery
            self.stats.synthetic += 1
            if not await self._deliver(update):
                failed.add(update.order.id)

    async def _deliver_released(self) -> None:
        for update in self.reconciler.release():
            if self.reconciler.admits(update):  # if one fails again, the rest is held again
                await self._deliver(update)

    def _fetch_for_catch_up(self, baseline: bool) -> tuple[list[BrokerOrder], Clock | None]:
        """Runs in a worker thread: the REST calls (blocking, with the broker's own retries)."""
        found = {order.id: order for order in self._source.list_orders(OrderQuery.OPEN)}
        watermark = self.reconciler.watermark
        if watermark is not None:
            for order in self._source.list_orders(OrderQuery.ALL, after=watermark - self._margin):
                found[order.id] = order
        for order_id in list((self.reconciler.open_ids | self.reconciler.retry_ids) - found.keys()):
            try:
                found[order_id] = self._source.get_order(order_id)
            except NotFoundError:
                self.reconciler.open_ids.discard(order_id)
                self.reconciler.settle(order_id)
        clock = self._source.get_clock() if baseline else None
        return list(found.values()), clock

    async def _on_message(self, message: dict[str, Any]) -> None:
        """The SDK's handler: never raises (an exception here would derail the SDK's loop)."""
        try:
            update = parse_trade_update(message["data"])
        except Exception as exc:
            self.stats.unreadable += 1
            log.warning("unreadable trade update (%s: %s); catching up from REST", type(exc).__name__, exc)
            await self._catch_up_quietly()
            return
        try:
            async with self._get_lock():
                if self.reconciler.admits(update):
                    await self._deliver(update)
            self._schedule_redelivery()
        except Exception:
            log.exception("trade update for order %s could not be processed", update.order.id)

    async def _catch_up_quietly(self) -> None:
        try:
            await self._catch_up()
        except Exception:
            log.warning("trade-update catch-up failed; the next one will retry")

    async def _deliver(self, update: TradeUpdate) -> bool:
        """Give ``update`` to the handler; whether it returned (only then is it recorded as delivered)."""
        try:
            result = self._handler(update)
            if inspect.isawaitable(result):
                await result
        except Exception:
            if self.reconciler.failed(update):
                log.exception(
                    "trade update handler failed on %s for order %s %d times: given up on; the "
                    "reconciler books what it missed",
                    update.event,
                    update.order.client_order_id,
                    self.reconciler.max_attempts,
                )
            else:
                log.exception(
                    "trade update handler failed on %s for order %s; a catch-up will deliver it again",
                    update.event,
                    update.order.client_order_id,
                )
            return False
        self.reconciler.delivered(update)
        self.stats.delivered += 1
        return True

    def _schedule_redelivery(self) -> None:
        """A catch-up soon if updates await re-delivery (one pending at a time, backing off)."""
        if not self.reconciler.retry_ids:
            self._redelivery_round = 0
            return
        pending = self._redelivery_task
        if self._stopping or (pending is not None and not pending.done()):
            return
        first, most = self._redelivery
        delay = min(first * 2**self._redelivery_round, most)
        self._redelivery_round = min(self._redelivery_round + 1, 32)  # bounded: 2**n stays a float
        loop = asyncio.get_running_loop()
        self._redelivery_task = loop.create_task(self._redeliver_after(delay))

    async def _redeliver_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._redelivery_task = None
        await self._catch_up_quietly()
        self._schedule_redelivery()  # also after a failed catch-up (it raised before scheduling)

    def _get_lock(self) -> asyncio.Lock:
        # Created in the running loop; a second run() gets a new loop, hence a new lock.
        if self._lock is None or self._lock_loop is not asyncio.get_running_loop():
            self._lock = asyncio.Lock()
            self._lock_loop = asyncio.get_running_loop()
        return self._lock
