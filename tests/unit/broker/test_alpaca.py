"""AlpacaBroker without a broker: exactly-once submission over a scripted fake client, mapping, and the
SDK hardening (timeout, no SDK re-send) checked on a real ``TradingClient`` against loopback servers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from alpaca.trading.client import TradingClient
from alpaca.trading.models import Clock as SdkClock
from alpaca.trading.models import Order, Position, TradeAccount
from urllib3.exceptions import NewConnectionError

from tests.unit.broker.fakes import (
    FakeTradingClient,
    api_error,
    duplicate,
    not_found,
    order_json,
    server_error,
)
from tests.unit.broker.rawserver import tcp_server
from trader.broker import (
    AmbiguousBrokerError,
    BrokerError,
    DuplicateClientOrderIdError,
    InsufficientFundsError,
    OrderRequest,
    Retrier,
    RetryPolicy,
)
from trader.broker.alpaca import (
    AlpacaBroker,
    account_from_sdk,
    clock_from_sdk,
    make_trading_client,
    order_from_sdk,
    position_from_sdk,
    stream_url,
    to_sdk_order_request,
)
from trader.broker.errors import RateLimitError, TemporaryBrokerError, UnexpectedResponseError
from trader.config import Settings
from trader.data.sources.alpaca_source import AlpacaSource
from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce


def _request(coid: str = "coid-1", **changes: Any) -> OrderRequest:
    fields: dict[str, Any] = {
        "client_order_id": coid,
        "symbol": "AAPL",
        "side": OrderSide.BUY,
        "type": OrderType.MARKET,
        "time_in_force": TimeInForce.DAY,
        "qty": Decimal(10),
    }
    return OrderRequest(**(fields | changes))


def _broker(client: FakeTradingClient, retries: int = 3) -> tuple[AlpacaBroker, list[float]]:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(max_retries=retries), sleep=slept.append)
    return AlpacaBroker(client, retrier=retrier), slept  # type: ignore[arg-type]


def _refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")  # type: ignore[arg-type]
    return requests.ConnectionError(reason)


# --- exactly-once submission ---


def test_a_clean_submit_sends_once() -> None:
    client = FakeTradingClient()
    broker, slept = _broker(client)
    order = broker.submit_order(_request())
    assert (client.submit_calls, client.lookup_calls, slept) == (1, 0, [])
    assert order.client_order_id == "coid-1" and order.status is OrderStatus.NEW
    assert order.qty == Decimal(10) and order.side is OrderSide.BUY


def test_lost_response_is_resolved_by_lookup_without_resending() -> None:
    client = FakeTradingClient(submit_steps=["lose"])
    broker, _ = _broker(client)
    order = broker.submit_order(_request())
    assert client.submit_calls == 1 and client.lookup_calls == 1
    assert order.id == client.orders["coid-1"]["id"]


@pytest.mark.parametrize(
    "failure", [requests.ReadTimeout("read timed out"), requests.ConnectionError("reset")]
)
def test_timeout_or_reset_that_did_not_land_is_resent_after_the_lookup(failure: Exception) -> None:
    client = FakeTradingClient(submit_steps=[failure, "ok"])
    broker, slept = _broker(client)
    order = broker.submit_order(_request())
    assert client.submit_calls == 2 and client.lookup_calls == 1 and len(slept) == 1
    assert len(client.orders) == 1 and order.id == client.orders["coid-1"]["id"]


def test_resend_meeting_a_duplicate_returns_the_first_order() -> None:
    # The first attempt landed but the lookup could not see it yet (404): the re-send gets Alpaca's
    # 422 "client_order_id must be unique", which proves it landed.
    client = FakeTradingClient(submit_steps=["lose"], lookup_steps=[not_found(), None])
    broker, _ = _broker(client)
    order = broker.submit_order(_request())
    assert client.submit_calls == 2 and len(client.orders) == 1
    assert order.id == client.orders["coid-1"]["id"]


def test_lookup_failures_are_retried_then_reported_as_ambiguous() -> None:
    client = FakeTradingClient(submit_steps=["lose"], lookup_steps=[server_error(503)] * 10)
    broker, _ = _broker(client, retries=2)
    with pytest.raises(AmbiguousBrokerError) as caught:
        broker.submit_order(_request())
    assert caught.value.client_order_id == "coid-1" and not caught.value.retry_safe
    assert client.submit_calls == 1  # never re-sent while the outcome is unknown
    assert client.lookup_calls == 3


def test_every_retry_ambiguous_and_not_found_ends_ambiguous() -> None:
    client = FakeTradingClient(submit_steps=[server_error(502)] * 10)
    broker, _ = _broker(client, retries=2)
    with pytest.raises(AmbiguousBrokerError, match="outcome unknown"):
        broker.submit_order(_request())
    assert client.submit_calls == 3 and client.lookup_calls == 3


def _no_buying_power() -> Exception:
    return api_error(403, {"code": 40310000, "message": "insufficient buying power"})


def test_resend_refused_after_a_lost_response_returns_the_order_that_landed() -> None:
    # Attempt 1 landed, its answer was lost, the lookup could not see it yet (404); the re-send is
    # refused because the first order holds the buying power. Not a final refusal: the lookup tells.
    client = FakeTradingClient(submit_steps=["lose", _no_buying_power()], lookup_steps=[not_found()])
    broker, _ = _broker(client)
    order = broker.submit_order(_request())
    assert order.id == client.orders["coid-1"]["id"]
    assert client.submit_calls == 2 and client.lookup_calls == 2


def test_resend_refused_after_a_lost_response_with_no_order_visible_stays_ambiguous() -> None:
    client = FakeTradingClient(
        submit_steps=["lose", _no_buying_power()], lookup_steps=[not_found(), not_found()]
    )
    broker, _ = _broker(client)
    with pytest.raises(AmbiguousBrokerError, match="insufficient buying power") as caught:
        broker.submit_order(_request())
    assert not isinstance(caught.value, InsufficientFundsError)  # never "no order exists"
    assert caught.value.client_order_id == "coid-1"
    assert client.submit_calls == 2  # not re-sent again while the outcome is unknown


def test_resend_refused_after_a_lost_response_finding_another_order_is_a_duplicate() -> None:
    # Same id, other order (a caller bug) found behind the refusal: not this request's order.
    client = FakeTradingClient()
    broker, _ = _broker(client)
    broker.submit_order(_request(qty=Decimal(11)))
    client.submit_steps = [server_error(502), _no_buying_power()]
    client.lookup_steps = [not_found()]
    with pytest.raises(DuplicateClientOrderIdError, match="differs"):
        broker.submit_order(_request())


def test_refused_connection_is_resent_without_a_lookup() -> None:
    client = FakeTradingClient(submit_steps=[_refused(), "ok"])
    broker, _ = _broker(client)
    broker.submit_order(_request())
    assert client.submit_calls == 2 and client.lookup_calls == 0


def test_rate_limit_is_waited_out_and_resent() -> None:
    limited = api_error(429, {"code": 42910000, "message": "rate limit exceeded"}, {"Retry-After": "1.5"})
    client = FakeTradingClient(submit_steps=[limited, "ok"])
    broker, slept = _broker(client)
    broker.submit_order(_request())
    assert client.submit_calls == 2 and slept == [1.5]


def test_rejections_are_not_retried() -> None:
    poor = api_error(403, {"code": 40310000, "message": "insufficient buying power"})
    client = FakeTradingClient(submit_steps=[poor])
    broker, slept = _broker(client)
    with pytest.raises(InsufficientFundsError):
        broker.submit_order(_request())
    assert client.submit_calls == 1 and slept == []


def test_resubmitting_the_same_request_is_idempotent() -> None:
    client = FakeTradingClient()
    broker, _ = _broker(client)
    first = broker.submit_order(_request())
    again = broker.submit_order(_request())
    assert again.id == first.id and len(client.orders) == 1


def test_reusing_a_client_order_id_for_another_order_is_refused() -> None:
    client = FakeTradingClient()
    broker, _ = _broker(client)
    broker.submit_order(_request())
    with pytest.raises(DuplicateClientOrderIdError, match="differs"):
        broker.submit_order(_request(qty=Decimal(11)))


def test_invalid_requests_never_reach_the_broker() -> None:
    with pytest.raises(ValueError, match="limit_price"):
        _request(type=OrderType.LIMIT)
    with pytest.raises(ValueError, match="exactly one of qty and notional"):
        _request(notional=Decimal(100))
    with pytest.raises(ValueError, match="client_order_id"):
        _request(coid="x" * 129)


def test_sdk_requests_carry_our_fields() -> None:
    sdk = to_sdk_order_request(_request(type=OrderType.LIMIT, limit_price=Decimal("101.25")))
    assert sdk.client_order_id == "coid-1" and sdk.limit_price == 101.25 and sdk.qty == 10.0
    trail = to_sdk_order_request(_request(type=OrderType.TRAILING_STOP, trail_percent=Decimal("1.5")))
    assert trail.trail_percent == 1.5 and trail.type.value == "trailing_stop"


# --- mapping ---


def test_orders_map_to_exact_decimals_in_utc() -> None:
    raw = order_json(
        status="partially_filled",
        filled_qty="3",
        filled_avg_price="187.1234",
        order_type="limit",
        limit_price="187.5",
    )
    raw["updated_at"] = "2024-03-05T10:00:01-05:00"
    order = order_from_sdk(Order(**raw))
    assert order.status is OrderStatus.PARTIALLY_FILLED and order.type is OrderType.LIMIT
    assert order.filled_qty == Decimal(3) and order.filled_avg_price == Decimal("187.1234")
    assert order.limit_price == Decimal("187.5")
    assert order.updated_at == datetime(2024, 3, 5, 15, 0, 1, tzinfo=UTC)
    assert not order.is_terminal


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"qty": "abc"}, "qty: not a number"),
        ({"filled_avg_price": "1e"}, "filled_avg_price: not a number"),
        ({"limit_price": "NaN"}, "limit_price: not a finite number"),
        ({"filled_qty": "-1"}, "filled_qty: negative"),
        ({"qty": "-10"}, "qty: negative"),
        ({"created_at": "0001-01-01T00:30:00+01:00"}, "out of range in UTC"),
        ({"updated_at": "9999-12-31T23:30:00-01:00"}, "out of range in UTC"),
    ],
)
def test_garbage_from_the_broker_is_an_unexpected_response(changes: dict[str, str], problem: str) -> None:
    client = FakeTradingClient()
    client.orders["coid-1"] = order_json() | changes
    broker, _ = _broker(client)
    with pytest.raises(UnexpectedResponseError, match=problem):
        broker.get_order_by_client_id("coid-1")
    with pytest.raises(ValueError, match=problem):  # what the webhook and the stream parser catch
        order_from_sdk(Order(**client.orders["coid-1"]))


def test_account_position_and_clock_map() -> None:
    account = account_from_sdk(
        TradeAccount(
            id="2d5fa2a5-1c0d-4f1a-8c4e-6f1d6b1f0a11",
            account_number="PA0001",
            status="ACTIVE",
            currency="USD",
            cash="100000.01",
            equity="100500.5",
            buying_power="200000",
            multiplier="2",
            trading_blocked=False,
        )
    )
    assert (account.cash, account.equity, account.multiplier) == (
        Decimal("100000.01"),
        Decimal("100500.5"),
        2,
    )
    position = position_from_sdk(
        Position(
            asset_id="b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
            symbol="AAPL",
            exchange="NASDAQ",
            asset_class="us_equity",
            avg_entry_price="100.5",
            qty="-5",
            side="short",
            cost_basis="-502.5",
            market_value="-500",
            qty_available="-5",
        )
    )
    assert position.side is PositionSide.SHORT and position.qty == Decimal(-5)
    clock = clock_from_sdk(
        SdkClock(
            timestamp="2024-03-05T10:00:00-05:00",
            is_open=True,
            next_open="2024-03-06T09:30:00-05:00",
            next_close="2024-03-05T16:00:00-05:00",
        )
    )
    assert clock.timestamp == datetime(2024, 3, 5, 15, tzinfo=UTC) and clock.is_open
    assert clock.next_close.tzinfo is UTC


def test_stream_url_follows_the_base_url() -> None:
    assert stream_url("https://paper-api.alpaca.markets") == "wss://paper-api.alpaca.markets/stream"
    assert stream_url("http://127.0.0.1:8765/") == "ws://127.0.0.1:8765/stream"


def test_from_settings_points_everything_at_the_base_url() -> None:
    settings = Settings(
        alpaca_base_url="https://paper-api.alpaca.markets",
        broker_timeout_seconds=4,
        broker_max_retries=6,
        alpaca_api_key_id="PKTESTKEY",
        alpaca_api_secret_key="s3cr3t",
    )
    broker = AlpacaBroker.from_settings(settings)
    assert broker.client._base_url == "https://paper-api.alpaca.markets"
    assert broker.client._session.default_timeout == 4
    assert broker.client._retry == 0
    assert broker.retrier.policy.max_retries == 6
    assert "s3cr3t" not in repr(broker) and "PKTESTKEY" not in repr(broker)
    assert broker.stream_factory is not None
    assert broker.stream_factory()._endpoint == "wss://paper-api.alpaca.markets/stream"


def test_market_data_is_the_data_layers_source_of_the_same_settings() -> None:
    settings = Settings(
        alpaca_base_url="http://127.0.0.1:8765",
        broker_timeout_seconds=4,
        broker_max_retries=2,
        alpaca_api_key_id="PKTESTKEY",
        alpaca_api_secret_key="s3cr3t",
    )
    source = AlpacaBroker.from_settings(settings).market_data()
    assert isinstance(source, AlpacaSource) and source.url == "http://127.0.0.1:8765"
    assert source.client._session.default_timeout == 4 and source.client._retry == 2
    assert source.actions_client is not None
    live_data = Settings(
        alpaca_base_url="https://paper-api.alpaca.markets",
        alpaca_api_key_id="PKTESTKEY",
        alpaca_api_secret_key="s3cr3t",
    )
    assert AlpacaBroker.from_settings(live_data).market_data(include_actions=False).url == (
        live_data.effective_data_url
    )
    with pytest.raises(BrokerError, match="without settings"):
        AlpacaBroker(make_trading_client("k", "s", "http://127.0.0.1:1", timeout=1)).market_data()


# --- the SDK hardening, on a real TradingClient ---


@contextmanager
def _answering(status: int, body: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            hits.append(f"{self.command} {self.path}")
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "expected"), [(429, RateLimitError), (504, TemporaryBrokerError)])
def test_the_sdk_does_not_resend_on_429_or_504(status: int, expected: type) -> None:
    # Guards the private attribute we set (client._retry = 0): if an SDK upgrade renamed it, the SDK
    # would re-send 3 times after 3 s sleeps and this test would see 4 requests and take 9 s.
    with _answering(status, {"code": status * 100000 + 10000, "message": "busy"}) as (url, hits):
        client = make_trading_client("k", "s", url, timeout=2)
        broker = AlpacaBroker(client, retrier=Retrier(RetryPolicy(max_retries=0)))
        started = time.monotonic()
        with pytest.raises(expected):
            broker.get_clock()
        assert time.monotonic() - started < 2
        assert hits == ["GET /v2/clock"]


def test_a_504_on_submit_is_looked_up_not_resent_blindly() -> None:
    with _answering(504, {"code": 50410000, "message": "gateway timeout"}) as (url, hits):
        client = make_trading_client("k", "s", url, timeout=2)
        broker = AlpacaBroker(client, retrier=Retrier(RetryPolicy(max_retries=0)))
        with pytest.raises(AmbiguousBrokerError):
            broker.submit_order(_request())
        assert hits == ["POST /v2/orders", "GET /v2/orders:by_client_order_id?client_order_id=coid-1"]


def test_a_silent_broker_times_out() -> None:
    with tcp_server("stall") as url:
        broker = AlpacaBroker(
            make_trading_client("k", "s", url, timeout=0.3),
            retrier=Retrier(RetryPolicy(max_retries=1), sleep=lambda _: None),
        )
        started = time.monotonic()
        with pytest.raises(TemporaryBrokerError, match="get clock failed"):
            broker.get_clock()
        assert time.monotonic() - started < 2


def test_a_client_is_a_trading_client() -> None:
    assert isinstance(make_trading_client("k", "s", "http://127.0.0.1:1", timeout=1), TradingClient)


def test_duplicate_fixture_is_alpacas_body() -> None:
    assert json.loads(str(duplicate()))["code"] == 40010001
