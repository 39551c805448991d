"""The paper broker's ``trade_updates`` websocket, driven through alpaca-py's ``TradingStream``.

Each test runs a broker with a frozen simulated clock (Tuesday 2024-03-05, 10:00 New York: the market
is open) on the synthetic market, listens with the official SDK in a background thread and places
orders with the official ``TradingClient``. The raw ``websockets`` library is used only for protocol
frames the SDK never shows (listen before authentication).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import websockets
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest, ReplaceOrderRequest
from alpaca.trading.stream import TradingStream

from tests.integration.paperbroker.conftest import set_clock
from tests.support.openapi import TRADING_SPEC
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.paperbroker import PaperBrokerSettings

#: Tuesday 2024-03-05, 10:00 New York (EST): the market is open; it closes at 21:00 UTC.
OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
AFTER_THE_CLOSE = datetime(2024, 3, 5, 21, 30, tzinfo=UTC)
SYMBOL = "SYN000"
#: A buy limit this low never fills on the synthetic market (prices are in the hundreds).
FAR_BELOW = 1.0
WAIT = 3.0


# ----------------------------------------------------------------------------------------- helpers


def stream_url(broker: RunningBroker) -> str:
    return broker.url.replace("http", "ws", 1) + "/stream"


@contextmanager
def frozen_broker(tmp_path: Path, **settings: Any) -> Iterator[RunningBroker]:
    """A broker on the synthetic market with its clock frozen at :data:`OPEN_TUESDAY`."""
    config = PaperBrokerSettings(data_dir=tmp_path / "none", start_at=OPEN_TUESDAY, **settings)
    with running_paper_broker(config) as running:
        set_clock(running, OPEN_TUESDAY)
        yield running


def trading_client(broker: RunningBroker) -> TradingClient:
    client = TradingClient(broker.key_id, broker.secret_key, url_override=broker.url)
    client._retry = 0  # no 3 s SDK re-sends on 429/504
    return client


class _ObservedStream(TradingStream):
    """``TradingStream`` that also notes the server's ``listening`` ack (the SDK ignores it), so a test
    places orders only once the server is sure to forward their events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listening = threading.Event()

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "listening" and "trade_updates" in msg.get("data", {}).get("streams", []):
            self.listening.set()
        await super()._dispatch(msg)


class Updates:
    """What a handler received, in arrival order, with a bounded wait for more."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    async def handler(self, update: Any) -> None:
        with self._changed:
            self.items.append(update)
            self._changed.notify_all()

    def wait_until(self, done: Callable[[list[Any]], bool], timeout: float = WAIT) -> list[Any]:
        """The updates so far once ``done(updates)`` holds; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"stream condition not met within {timeout} s; got {self.summary()}")
                self._changed.wait(left)
            return list(self.items)

    def summary(self) -> list[str]:
        return [
            f"{u['data']['event']}" if isinstance(u, dict) else f"{u.event}:{u.order.id}" for u in self.items
        ]


@contextmanager
def listening(broker: RunningBroker, raw_data: bool = False) -> Iterator[Updates]:
    """Run ``TradingStream.run()`` in a thread until the block exits; yields the collected updates."""
    updates = Updates()
    stream = _ObservedStream(
        broker.key_id, broker.secret_key, raw_data=raw_data, url_override=stream_url(broker)
    )
    stream.subscribe_trade_updates(updates.handler)
    thread = threading.Thread(target=stream.run, name="trading-stream", daemon=True)
    thread.start()
    try:
        assert stream.listening.wait(WAIT), "the stream never got the listening ack"
        yield updates
    finally:
        # stop() only queues a stop request that _consume sees after its next recv (up to 5 s);
        # closing the socket as well ends recv at once, and the stopped loop then returns.
        if stream._loop is not None and stream._loop.is_running():
            stream.stop()
            asyncio.run_coroutine_threadsafe(stream.close(), stream._loop).result(timeout=WAIT)
        thread.join(timeout=WAIT)
        assert not thread.is_alive(), "TradingStream.run() did not return after stop()"


def events_of(updates: list[TradeUpdate], order_id: uuid.UUID | str) -> list[str]:
    return [str(u.event) for u in updates if str(u.order.id) == str(order_id)]


def has_event(order_id: uuid.UUID | str, event: str) -> Callable[[list[TradeUpdate]], bool]:
    return lambda updates: event in events_of(updates, order_id)


def far_limit_buy(qty: int = 1, tif: TimeInForce = TimeInForce.DAY) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=SYMBOL, qty=qty, side=OrderSide.BUY, time_in_force=tif, limit_price=FAR_BELOW
    )


def as_order(value: Order | dict[str, Any]) -> Order:
    assert isinstance(value, Order)
    return value


# ------------------------------------------------------------------------------------ order lives


def test_market_order_life_new_partial_fill_fill(tmp_path: Path) -> None:
    with frozen_broker(tmp_path, partial_fill_rate=1.0) as broker, listening(broker) as stream:
        client = trading_client(broker)
        order = as_order(
            client.submit_order(
                MarketOrderRequest(symbol=SYMBOL, qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
            )
        )
        updates = stream.wait_until(has_event(order.id, "fill"))
        mine = [u for u in updates if u.order.id == order.id]

        assert [str(u.event) for u in mine] == ["new", "partial_fill", "fill"]
        new, partial, fill = mine
        assert new.order.status == OrderStatus.NEW and new.order.filled_qty == "0"
        assert new.qty is None and new.price is None and new.execution_id is None
        # per-execution quantities and prices, adding up to the order
        assert partial.qty == 5 and fill.qty == 5
        assert partial.qty + fill.qty == float(order.qty or 0)
        assert partial.position_qty == 5 and fill.position_qty == 10
        assert partial.price is not None and fill.price is not None and partial.price > 0
        assert isinstance(partial.execution_id, uuid.UUID) and isinstance(fill.execution_id, uuid.UUID)
        assert partial.execution_id != fill.execution_id
        # the full order rides along, cumulative
        assert partial.order.status == OrderStatus.PARTIALLY_FILLED and partial.order.filled_qty == "5"
        assert fill.order.status == OrderStatus.FILLED and fill.order.filled_qty == "10"
        assert fill.order.filled_at is not None and fill.order.symbol == SYMBOL
        average = (Decimal(str(partial.price)) * 5 + Decimal(str(fill.price)) * 5) / 10
        assert Decimal(fill.order.filled_avg_price or "0") == average.quantize(Decimal("0.0001"))
        assert fill.timestamp.tzinfo is not None
        # the REST view agrees with the stream
        final = as_order(client.get_order_by_id(order.id))
        assert final.status == OrderStatus.FILLED and final.filled_qty == "10"
        assert float(client.get_open_position(SYMBOL).qty) == fill.position_qty  # type: ignore[union-attr]


def test_limit_order_life_new_canceled(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker, listening(broker) as stream:
        client = trading_client(broker)
        order = as_order(client.submit_order(far_limit_buy()))
        stream.wait_until(has_event(order.id, "new"))
        client.cancel_order_by_id(order.id)
        updates = stream.wait_until(has_event(order.id, "canceled"))

        assert events_of(updates, order.id) == ["new", "canceled"]
        canceled = updates[-1]
        assert canceled.order.status == OrderStatus.CANCELED
        assert canceled.order.canceled_at is not None and canceled.order.filled_qty == "0"
        assert canceled.qty is None and canceled.execution_id is None


def test_day_order_expires_at_the_close(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker, listening(broker) as stream:
        client = trading_client(broker)
        order = as_order(client.submit_order(far_limit_buy()))
        stream.wait_until(has_event(order.id, "new"))
        set_clock(broker, AFTER_THE_CLOSE)
        updates = stream.wait_until(has_event(order.id, "expired"))

        assert events_of(updates, order.id) == ["new", "expired"]
        expired = updates[-1]
        assert expired.order.status == OrderStatus.EXPIRED
        assert expired.order.expired_at == datetime(2024, 3, 5, 21, 0, tzinfo=UTC)  # the close, not "now"
        assert expired.timestamp == datetime(2024, 3, 5, 21, 0, tzinfo=UTC)
        assert as_order(client.get_order_by_id(order.id)).status == OrderStatus.EXPIRED


def test_gtc_order_survives_the_close(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker, listening(broker) as stream:
        client = trading_client(broker)
        day = as_order(client.submit_order(far_limit_buy()))
        gtc = as_order(client.submit_order(far_limit_buy(tif=TimeInForce.GTC)))
        set_clock(broker, AFTER_THE_CLOSE)
        updates = stream.wait_until(has_event(day.id, "expired"))

        assert events_of(updates, gtc.id) == ["new"]
        assert as_order(client.get_order_by_id(gtc.id)).status == OrderStatus.NEW


def test_replace_gives_replaced_for_the_old_order_and_new_for_the_new_one(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker, listening(broker) as stream:
        client = trading_client(broker)
        old = as_order(client.submit_order(far_limit_buy(qty=3)))
        stream.wait_until(has_event(old.id, "new"))
        new = as_order(client.replace_order_by_id(old.id, ReplaceOrderRequest(limit_price=2.0)))
        updates = stream.wait_until(
            lambda u: has_event(old.id, "replaced")(u) and has_event(new.id, "new")(u)
        )

        assert new.id != old.id and new.replaces == old.id
        assert events_of(updates, old.id) == ["new", "replaced"]
        assert events_of(updates, new.id) == ["new"]
        replaced = next(u for u in updates if u.order.id == old.id and str(u.event) == "replaced")
        assert replaced.order.status == OrderStatus.REPLACED
        assert replaced.order.replaced_by == new.id and replaced.order.replaced_at is not None
        fresh = next(u for u in updates if u.order.id == new.id)
        assert fresh.order.replaces == old.id
        assert fresh.order.limit_price == "2" and fresh.order.qty == "3"


def test_events_reach_every_listener(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker, listening(broker) as first, listening(broker) as second:
        order = as_order(trading_client(broker).submit_order(far_limit_buy()))
        for stream in (first, second):
            assert events_of(stream.wait_until(has_event(order.id, "new")), order.id) == ["new"]


# -------------------------------------------------------------------------------- payload shape


def test_raw_trade_update_payloads_match_the_openapi_order_schema(tmp_path: Path) -> None:
    with frozen_broker(tmp_path, partial_fill_rate=1.0) as broker, listening(broker, raw_data=True) as stream:
        client = trading_client(broker)
        filled = as_order(
            client.submit_order(
                MarketOrderRequest(symbol=SYMBOL, qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
            )
        )
        resting = as_order(client.submit_order(far_limit_buy()))
        client.cancel_order_by_id(resting.id)

        def seen(messages: list[dict[str, Any]]) -> set[tuple[str, str]]:
            return {(m["data"]["order"]["id"], m["data"]["event"]) for m in messages}

        messages = stream.wait_until(
            lambda m: {(str(filled.id), "fill"), (str(resting.id), "canceled")} <= seen(m)
        )

    assert {m["stream"] for m in messages} == {"trade_updates"}
    assert {event for _, event in seen(messages)} == {"new", "partial_fill", "fill", "canceled"}
    for message in messages:
        data = message["data"]
        TRADING_SPEC.validate(data["order"], "Order")
        assert set(data) >= {"event", "order", "timestamp"}
        datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
        if data["event"] in ("fill", "partial_fill"):
            # decimal strings, like Alpaca's own payloads
            assert {type(data[k]) for k in ("price", "qty", "position_qty", "execution_id")} == {str}
            uuid.UUID(data["execution_id"])
            Decimal(data["price"]), Decimal(data["qty"]), Decimal(data["position_qty"])


# ---------------------------------------------------------------------------------- the protocol


def test_wrong_keys_fail_the_sdks_authentication(tmp_path: Path) -> None:
    with frozen_broker(tmp_path) as broker:
        stream = TradingStream(broker.key_id, "not-the-secret", url_override=stream_url(broker))

        async def authenticate() -> None:
            await stream._connect()
            try:
                await stream._auth()
            finally:
                await stream.close()

        with pytest.raises(ValueError, match="failed to authenticate"):
            asyncio.run(authenticate())


def test_frames_of_the_protocol(tmp_path: Path) -> None:
    """Listen before authenticating is refused; then auth and listen are acknowledged, in binary frames."""

    async def talk(url: str, key: str, secret: str) -> list[Any]:
        frames: list[Any] = []
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
            await socket.send(
                json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}})
            )
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
            await socket.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
        return frames

    with frozen_broker(tmp_path) as broker:
        frames = asyncio.run(talk(stream_url(broker), broker.key_id, broker.secret_key))

    assert all(isinstance(frame, bytes) for frame in frames)  # the paper server sends binary frames
    assert [json.loads(frame) for frame in frames] == [
        {"stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}},
        {"stream": "authorization", "data": {"status": "authorized", "action": "authenticate"}},
        {"stream": "listening", "data": {"streams": ["trade_updates"]}},
    ]


def test_wrong_keys_get_an_unauthorized_frame_then_the_socket_closes(tmp_path: Path) -> None:
    async def talk(url: str, key: str) -> tuple[Any, int | None]:
        async with websockets.connect(url) as socket:
            await socket.send(
                json.dumps({"action": "authenticate", "data": {"key_id": key, "secret_key": "x"}})
            )
            frame = await asyncio.wait_for(socket.recv(), WAIT)
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), WAIT)
            return frame, socket.close_code

    with frozen_broker(tmp_path) as broker:
        frame, code = asyncio.run(talk(stream_url(broker), broker.key_id))

    assert json.loads(frame) == {
        "stream": "authorization",
        "data": {"status": "unauthorized", "action": "authenticate"},
    }
    assert code == 1008


def test_malformed_messages_get_answers_not_a_dropped_connection(tmp_path: Path) -> None:
    async def talk(url: str) -> tuple[list[Any], int | None]:
        frames: list[Any] = []
        async with websockets.connect(url) as socket:
            await socket.send("not json")  # ignored
            await socket.send(json.dumps({"action": "listen", "data": "trade_updates"}))
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
            await socket.send(json.dumps({"action": "dance"}))
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
            await socket.send(json.dumps({"action": "authenticate", "data": {"key_id": 1, "secret_key": 2}}))
            frames.append(await asyncio.wait_for(socket.recv(), WAIT))
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), WAIT)
            return frames, socket.close_code

    with frozen_broker(tmp_path) as broker:
        frames, code = asyncio.run(talk(stream_url(broker)))

    assert [json.loads(frame) for frame in frames] == [
        {"stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}},
        {"stream": "error", "data": {"message": "unknown action: dance"}},
        {"stream": "authorization", "data": {"status": "unauthorized", "action": "authenticate"}},
    ]
    assert code == 1008


def test_listening_to_no_streams_stops_the_updates(tmp_path: Path) -> None:
    """``listen`` replaces the set of streams: an empty list stops trade updates until listened again."""

    async def talk(broker: RunningBroker, client: TradingClient) -> tuple[list[Any], str, str]:
        frames: list[Any] = []
        auth = {"key_id": broker.key_id, "secret_key": broker.secret_key}
        async with websockets.connect(stream_url(broker)) as socket:

            async def ask(message: dict[str, Any]) -> Any:
                await socket.send(json.dumps(message))
                return json.loads(await asyncio.wait_for(socket.recv(), WAIT))

            await ask({"action": "authenticate", "data": auth})
            frames.append(await ask({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            frames.append(await ask({"action": "listen", "data": {"streams": []}}))
            unheard = as_order(client.submit_order(far_limit_buy()))
            frames.append(await ask({"action": "listen", "data": {"streams": ["trade_updates", "x"]}}))
            heard = as_order(client.submit_order(far_limit_buy()))
            frames.append(json.loads(await asyncio.wait_for(socket.recv(), WAIT)))
        return frames, str(unheard.id), str(heard.id)

    with frozen_broker(tmp_path) as broker:
        frames, unheard, heard = asyncio.run(talk(broker, trading_client(broker)))

    assert frames[:3] == [
        {"stream": "listening", "data": {"streams": ["trade_updates"]}},
        {"stream": "listening", "data": {"streams": []}},
        {"stream": "listening", "data": {"streams": ["trade_updates"]}},
    ]
    # the first update after listening again is the later order's: the earlier one's was not sent
    assert frames[3]["stream"] == "trade_updates"
    assert (frames[3]["data"]["event"], frames[3]["data"]["order"]["id"]) == ("new", heard)
    assert unheard != heard
