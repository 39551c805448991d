"""Trade updates from the paper broker's ``/stream`` through alpaca-py's ``TradingStream``: each change
delivered once, even when the broker drops or repeats events or the connection is lost."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

from tests.integration.broker.conftest import OPEN_TUESDAY, set_faults
from tests.support.paper_broker import RunningBroker
from trader.broker import OrderRequest, TradeUpdate, new_client_order_id
from trader.broker.alpaca import AlpacaBroker
from trader.broker.stream import TradeUpdateStream
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce


class Inbox:
    """What a handler received, thread-safe, with a wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.updates: list[TradeUpdate] = []

    def __call__(self, update: TradeUpdate) -> None:
        with self._lock:
            self.updates.append(update)

    def events(self) -> dict[str, list[str]]:
        """client_order_id → the events received for it, in order."""
        found: dict[str, list[str]] = defaultdict(list)
        with self._lock:
            for update in self.updates:
                found[update.order.client_order_id].append(update.event)
        return found

    def wait_for(self, done: Callable[[dict[str, list[str]]], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done(self.events()):
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; received {dict(self.events())}")


def _market_buy(qty: int = 1) -> OrderRequest:
    return OrderRequest(
        new_client_order_id("st-"),
        "SYN002",
        OrderSide.BUY,
        OrderType.MARKET,
        TimeInForce.DAY,
        qty=Decimal(qty),
    )


def _limit_buy() -> OrderRequest:
    return OrderRequest(
        new_client_order_id("st-"),
        "SYN003",
        OrderSide.BUY,
        OrderType.LIMIT,
        TimeInForce.GTC,
        qty=Decimal(1),
        limit_price=Decimal(1),
    )


@contextmanager
def _streaming(
    broker: AlpacaBroker, handler: Callable[[TradeUpdate], object], **options: object
) -> Iterator[TradeUpdateStream]:
    stream = broker.trade_updates(handler, **options)  # type: ignore[arg-type]
    assert stream.start(timeout=10), "stream did not connect"
    try:
        yield stream
    finally:
        stream.stop()
        assert stream.finished.is_set(), "stream did not stop"


def test_each_change_arrives_once_although_the_broker_repeats_events(
    paper_broker: RunningBroker, broker: AlpacaBroker
) -> None:
    inbox = Inbox()
    with _streaming(broker, inbox) as stream:
        set_faults(paper_broker, duplicate_event_rate=1.0)
        coids = [broker.submit_order(_market_buy()).client_order_id for _ in range(5)]
        inbox.wait_for(lambda got: all(got[c][-1:] == ["fill"] for c in coids))
        time.sleep(0.3)  # let any straggling repeat arrive
        for coid in coids:
            assert inbox.events()[coid] == ["new", "fill"]
        assert stream.stats.duplicates >= 10
    fills = [u for u in inbox.updates if u.event == "fill"]
    assert all(u.qty == Decimal(1) and u.price is not None and u.execution_id for u in fills)


def test_a_reconnect_catches_up_on_everything_missed(
    paper_broker: RunningBroker, broker: AlpacaBroker
) -> None:
    inbox = Inbox()
    with _streaming(broker, inbox) as stream:
        seen = broker.submit_order(_market_buy())
        inbox.wait_for(lambda got: got[seen.client_order_id][-1:] == ["fill"])
        set_faults(paper_broker, drop_event_rate=1.0)  # from here the stream hears nothing
        filled = [broker.submit_order(_market_buy(2)) for _ in range(4)]
        resting = broker.submit_order(_limit_buy())
        canceled = broker.submit_order(_limit_buy())
        broker.cancel_order(canceled.id)
        time.sleep(0.3)
        assert {u.order.client_order_id for u in inbox.updates} == {seen.client_order_id}
        set_faults(paper_broker, drop_event_rate=0.0)
        stream.reconnect()
        inbox.wait_for(
            lambda got: (
                got[canceled.client_order_id][-1:] == ["canceled"]
                and all(got[o.client_order_id][-1:] == ["fill"] for o in filled)
            )
        )
        got = inbox.events()
        assert got[seen.client_order_id] == ["new", "fill"]  # nothing repeated for the order seen live
        assert got[resting.client_order_id] == ["new"]
        assert got[canceled.client_order_id] == ["canceled"]
        for order in filled:
            assert got[order.client_order_id] == ["fill"]
        synthetic_fills = [u for u in inbox.updates if u.synthetic and u.event == "fill"]
        assert len(synthetic_fills) == 4
        assert all(u.qty == Decimal(2) and u.order.status is OrderStatus.FILLED for u in synthetic_fills)
        assert stream.stats.connects >= 2


def test_periodic_resync_recovers_events_lost_on_a_live_connection(
    paper_broker: RunningBroker, broker: AlpacaBroker
) -> None:
    inbox = Inbox()
    with _streaming(broker, inbox, resync_interval=0.3) as stream:
        set_faults(paper_broker, drop_event_rate=1.0)
        order = broker.submit_order(_market_buy())
        inbox.wait_for(lambda got: got[order.client_order_id][-1:] == ["fill"])
        assert stream.stats.connects == 1 and stream.stats.synthetic >= 1


def test_a_failing_handler_does_not_stop_the_stream(broker: AlpacaBroker) -> None:
    inbox = Inbox()
    failures: list[str] = []

    def handler(update: TradeUpdate) -> None:
        if update.event == "new" and update.order.client_order_id not in failures:
            failures.append(update.order.client_order_id)
            raise RuntimeError("handler bug")
        inbox(update)

    with _streaming(broker, handler, redelivery_delay=0.1) as stream:
        coids = [broker.submit_order(_market_buy()).client_order_id for _ in range(3)]
        inbox.wait_for(lambda got: all(got[c][-1:] == ["fill"] for c in coids))
        assert failures == coids and stream.stats.handler_errors == 3


def test_a_fill_the_handler_failed_on_is_delivered_again(broker: AlpacaBroker) -> None:
    # A transient failure (the database went away) on the first delivery of a fill: the stream must
    # not count the fill as delivered; its catch-up brings it again, with no resync_interval set.
    inbox = Inbox()
    failed: list[TradeUpdate] = []

    def handler(update: TradeUpdate) -> None:
        if update.event == "fill" and not failed:
            failed.append(update)
            raise RuntimeError("database connection lost")
        inbox(update)

    with _streaming(broker, handler, redelivery_delay=0.2) as stream:
        order = broker.submit_order(_market_buy(3))
        inbox.wait_for(lambda got: got[order.client_order_id] == ["new", "fill"])
        assert stream.stats.handler_errors == 1 and not stream.reconciler.retry_ids
    [first] = failed
    again = inbox.updates[-1]
    assert again.synthetic and not first.synthetic
    assert again.qty == first.qty == Decimal(3) and again.price == first.price
    assert again.order.status is OrderStatus.FILLED
    assert inbox.events()[order.client_order_id] == ["new", "fill"]  # once, once it succeeded


def test_async_handlers_are_awaited(broker: AlpacaBroker) -> None:
    inbox = Inbox()

    async def handler(update: TradeUpdate) -> None:
        inbox(update)

    with _streaming(broker, handler):
        order = broker.submit_order(_market_buy())
        inbox.wait_for(lambda got: got[order.client_order_id] == ["new", "fill"])


def test_since_and_open_orders_replay_what_changed_while_away(broker: AlpacaBroker) -> None:
    # The process was down: an order it knew open filled meanwhile, and another order was placed.
    known_open = broker.submit_order(_limit_buy())
    broker.cancel_order(known_open.id)
    placed_meanwhile = broker.submit_order(_market_buy())
    inbox = Inbox()
    with _streaming(broker, inbox, since=OPEN_TUESDAY, open_order_ids=[known_open.id]):
        inbox.wait_for(
            lambda got: (
                got[known_open.client_order_id] == ["canceled"]
                and got[placed_meanwhile.client_order_id] == ["fill"]
            )
        )
    assert all(update.synthetic for update in inbox.updates)


def test_without_since_the_first_catch_up_is_a_silent_baseline(broker: AlpacaBroker) -> None:
    before = broker.submit_order(_limit_buy())
    inbox = Inbox()
    with _streaming(broker, inbox) as stream:
        assert stream.stats.catch_ups == 1
        stream.reconnect()
        time.sleep(1.0)
        assert before.client_order_id not in inbox.events()


@pytest.mark.parametrize("twice", [False, True])
def test_stop_is_prompt(broker: AlpacaBroker, twice: bool) -> None:
    stream = broker.trade_updates(Inbox())
    assert stream.start(timeout=10)
    started = time.monotonic()
    stream.stop()
    if twice:
        stream.stop()
    assert stream.finished.is_set() and time.monotonic() - started < 3
