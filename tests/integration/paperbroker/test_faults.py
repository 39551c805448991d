"""Fault injection of the paper broker, one mode at a time, seen through the official alpaca-py SDK.

Faults are switched at run time with ``PUT /admin/faults`` (the admin routes are never faulted), so each
test can set up with faults off, inject, then turn them off again and look at what really happened.
Raw HTTP (``requests``) is used only for the admin routes, for a client-side timeout (the SDK sets
none) and for response headers the SDK hides.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order, TradeUpdate
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest

from tests.integration.paperbroker.test_stream import events_of, has_event, listening
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.paperbroker import PaperBrokerSettings, create_app
from trader.paperbroker.settings import FaultSettings

OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
SYMBOL = "SYN000"


# ----------------------------------------------------------------------------------------- helpers


def admin(broker: RunningBroker, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, f"{broker.url}/admin/{path}", json=body, headers=broker.headers, timeout=10
    )


def set_faults(broker: RunningBroker, **changes: Any) -> dict[str, Any]:
    answer = admin(broker, "PUT", "faults", changes)
    assert answer.status_code == 200, answer.text
    settings: dict[str, Any] = answer.json()["settings"]
    return settings


def injected(broker: RunningBroker) -> dict[str, int]:
    counts: dict[str, int] = admin(broker, "GET", "faults").json()["injected"]
    return counts


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker on the synthetic market, clock frozen with the market open, faults off."""
    settings = PaperBrokerSettings(data_dir=tmp_path / "none", start_at=OPEN_TUESDAY)
    with running_paper_broker(settings) as running:
        answer = admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
        assert answer.status_code == 200, answer.text
        yield running


@pytest.fixture
def client(broker: RunningBroker) -> TradingClient:
    trading = TradingClient(broker.key_id, broker.secret_key, url_override=broker.url)
    trading._retry = 0  # the SDK would re-send 429/504 three times with 3 s sleeps
    return trading


def market_buy(client_order_id: str | None = None, qty: int = 2) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=SYMBOL,
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=client_order_id,
    )


def all_orders(client: TradingClient) -> list[Order]:
    orders = client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert isinstance(orders, list)
    return orders


def new_client_order_id() -> str:
    return f"fault-test-{uuid.uuid4()}"


# ----------------------------------------------------------------------------------- 5xx errors


def test_error_rate_one_answers_5xx_and_creates_nothing(broker: RunningBroker, client: TradingClient) -> None:
    set_faults(broker, error_rate=1.0)
    client_order_id = new_client_order_id()
    with pytest.raises(APIError) as raised:
        client.submit_order(market_buy(client_order_id))
    assert raised.value.status_code in (500, 502, 503)
    assert raised.value.code == raised.value.status_code * 100_000 + 10_000
    with pytest.raises(APIError) as read:
        client.get_account()  # every trading route, not only orders
    assert read.value.status_code in (500, 502, 503)

    set_faults(broker, error_rate=0.0)
    assert all_orders(client) == []
    with pytest.raises(APIError) as missing:
        client.get_order_by_client_id(client_order_id)
    assert missing.value.status_code == 404
    assert injected(broker)["server_error"] == 2


def test_error_rate_between_zero_and_one_faults_some_requests(broker: RunningBroker) -> None:
    set_faults(broker, error_rate=0.5, seed=3)
    statuses = [
        requests.get(f"{broker.url}/v2/clock", headers=broker.headers, timeout=10).status_code
        for _ in range(40)
    ]
    failed = [s for s in statuses if s != 200]
    assert 5 <= len(failed) <= 35 and set(failed) <= {500, 502, 503}
    assert injected(broker)["server_error"] == len(failed)


# ------------------------------------------------------------------------------ lost responses


def test_lose_response_creates_the_order_but_answers_500(
    broker: RunningBroker, client: TradingClient
) -> None:
    set_faults(broker, lose_response_rate=1.0)
    client_order_id = new_client_order_id()
    with pytest.raises(APIError) as raised:
        client.submit_order(market_buy(client_order_id))
    assert raised.value.status_code == 500
    assert client.get_clock() is not None  # only order submissions lose their answer

    found = client.get_order_by_client_id(client_order_id)  # lookups are not faulted by this mode
    assert isinstance(found, Order)
    assert found.client_order_id == client_order_id and found.symbol == SYMBOL and found.qty == "2"
    set_faults(broker, lose_response_rate=0.0)
    assert [order.client_order_id for order in all_orders(client)] == [client_order_id]
    assert injected(broker) == {"lost_response": 1}


def test_lose_response_passes_a_rejection_through(broker: RunningBroker, client: TradingClient) -> None:
    """A refused order was not accepted, so there is nothing to lose: the client gets the real 4xx."""
    set_faults(broker, lose_response_rate=1.0)
    with pytest.raises(APIError) as raised:
        client.submit_order(market_buy(qty=10_000_000))
    assert raised.value.status_code == 403
    assert raised.value.message == "insufficient buying power"
    assert injected(broker) == {}


# ------------------------------------------------------------------------------------- timeouts


def test_timeout_holds_the_request_and_does_nothing(broker: RunningBroker, client: TradingClient) -> None:
    set_faults(broker, timeout_rate=1.0, timeout_seconds=0.5)
    client_order_id = new_client_order_id()
    body = {"symbol": SYMBOL, "qty": "1", "side": "buy", "type": "market", "time_in_force": "day"}
    with pytest.raises(requests.Timeout):
        requests.post(
            f"{broker.url}/v2/orders",
            json={**body, "client_order_id": client_order_id},
            headers=broker.headers,
            timeout=0.2,
        )
    set_faults(broker, timeout_rate=0.0)
    time.sleep(0.4)  # let the held request run out: it must still create nothing
    assert all_orders(client) == []
    with pytest.raises(APIError) as missing:
        client.get_order_by_client_id(client_order_id)
    assert missing.value.status_code == 404


def test_timeout_ends_in_504_for_a_patient_client(broker: RunningBroker, client: TradingClient) -> None:
    set_faults(broker, timeout_rate=1.0, timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(APIError) as raised:
        client.submit_order(market_buy(new_client_order_id()))
    assert time.monotonic() - started >= 0.3
    assert raised.value.status_code == 504 and raised.value.code == 50410000
    set_faults(broker, timeout_rate=0.0)
    assert all_orders(client) == []
    assert injected(broker) == {"timeout": 1}


# -------------------------------------------------------------------------------------- latency


def test_latency_delays_every_trading_request(broker: RunningBroker, client: TradingClient) -> None:
    started = time.monotonic()
    client.get_clock()
    baseline = time.monotonic() - started
    assert baseline < 0.3

    set_faults(broker, latency_ms=300)
    started = time.monotonic()
    order = client.submit_order(market_buy())
    assert time.monotonic() - started >= 0.3
    assert isinstance(order, Order) and order.symbol == SYMBOL  # delayed, not failed

    started = time.monotonic()
    assert admin(broker, "GET", "clock").status_code == 200  # admin is never delayed
    assert time.monotonic() - started < 0.3


# ------------------------------------------------------------------------------------ rate limit


def test_rate_limit_answers_429_with_alpacas_body_and_headers(
    broker: RunningBroker, client: TradingClient
) -> None:
    set_faults(broker, rate_limit_per_minute=5)
    answers = [requests.get(f"{broker.url}/v2/account", headers=broker.headers, timeout=10) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["4", "3", "2", "1", "0", "0"]
    assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"5"}
    limited = answers[-1]
    assert limited.json() == {"code": 42910000, "message": "rate limit exceeded"}
    reset = int(limited.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 62  # unix epoch seconds, within the minute

    with pytest.raises(APIError) as raised:  # the SDK (no re-sends) sees Alpaca's 429
        client.get_clock()
    assert raised.value.status_code == 429 and raised.value.code == 42910000
    assert admin(broker, "GET", "faults").status_code == 200  # admin does not count, nor is refused
    assert injected(broker)["rate_limited"] == 2


def test_rate_limit_is_on_by_default_at_200_a_minute(broker: RunningBroker) -> None:
    answer = requests.get(f"{broker.url}/v2/clock", headers=broker.headers, timeout=10)
    assert answer.headers["X-RateLimit-Limit"] == "200"
    assert answer.headers["X-RateLimit-Remaining"] == "199"


def test_market_data_has_its_own_rate_limit_budget(broker: RunningBroker) -> None:
    set_faults(broker, rate_limit_per_minute=3)
    data_url = f"{broker.url}/v2/stocks/bars?symbols={SYMBOL}&timeframe=1Day"
    data = [requests.get(data_url, headers=broker.headers, timeout=10) for _ in range(4)]
    assert [a.status_code for a in data] == [200, 200, 200, 429]  # the same number, counted apart
    trading = requests.get(f"{broker.url}/v2/account", headers=broker.headers, timeout=10)
    assert trading.status_code == 200 and trading.headers["X-RateLimit-Remaining"] == "2"
    set_faults(broker, rate_limit_per_minute=0, data_rate_limit_per_minute=1)
    assert requests.get(data_url, headers=broker.headers, timeout=10).status_code == 429
    assert requests.get(f"{broker.url}/v2/clock", headers=broker.headers, timeout=10).status_code == 200
    set_faults(broker, data_rate_limit_per_minute=10)
    answer = requests.get(data_url, headers=broker.headers, timeout=10)
    assert answer.status_code == 200 and answer.headers["X-RateLimit-Limit"] == "10"


def test_rate_limit_zero_turns_it_off(broker: RunningBroker) -> None:
    set_faults(broker, rate_limit_per_minute=0)
    answers = [requests.get(f"{broker.url}/v2/clock", headers=broker.headers, timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [200] * 3
    assert "X-RateLimit-Limit" not in answers[0].headers


def test_unauthenticated_requests_are_refused_before_faults(broker: RunningBroker) -> None:
    set_faults(broker, error_rate=1.0, rate_limit_per_minute=1)
    wrong = {"APCA-API-KEY-ID": broker.key_id, "APCA-API-SECRET-KEY": "wrong"}
    statuses = [
        requests.get(f"{broker.url}/v2/clock", headers=wrong, timeout=10).status_code for _ in range(3)
    ]
    assert statuses == [401] * 3
    assert injected(broker) == {}


# ------------------------------------------------------------------------------ stream events


def _wait_for_injected(broker: RunningBroker, kind: str, count: int) -> None:
    deadline = time.monotonic() + 3
    while injected(broker).get(kind, 0) < count:
        assert time.monotonic() < deadline, f"{kind} never reached {count}: {injected(broker)}"
        time.sleep(0.02)


def test_dropped_events_never_arrive_though_the_order_fills(
    broker: RunningBroker, client: TradingClient
) -> None:
    with listening(broker) as stream:
        set_faults(broker, drop_event_rate=1.0)
        dropped = client.submit_order(market_buy())
        assert isinstance(dropped, Order)
        _wait_for_injected(broker, "dropped_event", 2)  # its new and fill events
        set_faults(broker, drop_event_rate=0.0)
        assert client.get_order_by_id(dropped.id).status == OrderStatus.FILLED  # type: ignore[union-attr]
        # one stream delivers events in order: once a later order's fill is in, the first's never came
        marker = client.submit_order(market_buy())
        assert isinstance(marker, Order)
        updates = stream.wait_until(has_event(marker.id, "fill"))

    assert events_of(updates, dropped.id) == []
    assert events_of(updates, marker.id) == ["new", "fill"]


def test_duplicated_events_arrive_twice(broker: RunningBroker, client: TradingClient) -> None:
    with listening(broker) as stream:
        set_faults(broker, duplicate_event_rate=1.0)
        order = client.submit_order(market_buy())
        assert isinstance(order, Order)
        updates: list[TradeUpdate] = stream.wait_until(lambda u: events_of(u, order.id).count("fill") == 2)

    assert events_of(updates, order.id) == ["new", "new", "fill", "fill"]
    fills = [u for u in updates if u.order.id == order.id and str(u.event) == "fill"]
    assert fills[0].execution_id == fills[1].execution_id  # the same event, repeated
    assert injected(broker)["duplicated_event"] == 2


# -------------------------------------------------------------------------------------- admin


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"error_rate": 2}, "error_rate"),
        ({"drop_event_rate": -0.1}, "drop_event_rate"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"timeout_seconds": "soon"}, "timeout_seconds"),
        ({"lose_response_rate": True}, "lose_response_rate"),
        ({"rate_limit_per_minute": None}, "rate_limit_per_minute"),
        ({"no_such_fault": 0.5}, "no_such_fault"),
        ({"rate_limit_per_minute": 2.5}, "rate_limit_per_minute"),
        ({"data_rate_limit_per_minute": -1}, "data_rate_limit_per_minute"),
        ({"seed": "abc"}, "seed"),
    ],
)
def test_bad_fault_settings_are_422_naming_the_field(
    broker: RunningBroker, change: dict[str, Any], field: str
) -> None:
    answer = admin(broker, "PUT", "faults", change)
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == 42210000 and field in body["message"]
    assert admin(broker, "GET", "faults").json()["settings"] == {
        **vars(FaultSettings()),
    }  # nothing changed


def test_admin_faults_round_trip(broker: RunningBroker) -> None:
    settings = set_faults(broker, error_rate=0.25, latency_ms=10, seed=9)
    assert settings == {**vars(FaultSettings()), "error_rate": 0.25, "latency_ms": 10, "seed": 9}
    assert admin(broker, "GET", "faults").json() == {"settings": settings, "injected": {}}
    assert admin(broker, "PUT", "faults", [1]).status_code == 422
    not_json = requests.put(f"{broker.url}/admin/faults", data=b"{", headers=broker.headers, timeout=10)
    assert not_json.status_code == 400


def test_admin_endpoints_are_never_faulted(broker: RunningBroker) -> None:
    set_faults(
        broker, error_rate=1.0, timeout_rate=1.0, timeout_seconds=5, latency_ms=500, rate_limit_per_minute=1
    )
    started = time.monotonic()
    statuses = [admin(broker, "GET", "faults").status_code for _ in range(5)]
    statuses += [admin(broker, "GET", "clock").status_code]
    statuses += [admin(broker, "POST", "clock", {"advance_seconds": 1}).status_code]
    assert statuses == [200] * 7
    assert time.monotonic() - started < 2.0  # 7 requests held 0.5 s each would take 3.5 s
    assert injected(broker) == {}
    set_faults(broker, error_rate=0.0, timeout_rate=0.0, latency_ms=0)  # and they can turn faults off


def test_admin_needs_the_keys(broker: RunningBroker) -> None:
    answer = requests.get(f"{broker.url}/admin/faults", timeout=10)
    assert answer.status_code == 401


def test_faults_from_the_settings_apply_from_the_start(tmp_path: Path) -> None:
    settings = PaperBrokerSettings(data_dir=tmp_path / "none", faults=FaultSettings(error_rate=1.0))
    with running_paper_broker(settings) as running:
        answer = requests.get(f"{running.url}/v2/clock", headers=running.headers, timeout=10)
        assert answer.status_code in (500, 502, 503)
        assert admin(running, "GET", "faults").json()["settings"]["error_rate"] == 1.0


def test_bad_fault_settings_refuse_to_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="error_rate"):
        create_app(PaperBrokerSettings(data_dir=tmp_path / "none", faults=FaultSettings(error_rate=1.5)))


@pytest.mark.parametrize(("name", "value"), [("timeout_seconds", "Infinity"), ("latency_ms", "NaN")])
def test_non_finite_fault_settings_are_422(broker: RunningBroker, name: str, value: str) -> None:
    answer = requests.put(  # JSON extensions Python's json module accepts
        f"{broker.url}/admin/faults",
        data=f'{{"{name}": {value}}}',
        headers={**broker.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 422 and name in answer.json()["message"]
    assert admin(broker, "GET", "faults").json()["settings"] == vars(FaultSettings())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"advance_seconds": NaN}', "advance_seconds"),
        ('{"advance_seconds": Infinity}', "advance_seconds"),
        ('{"advance_seconds": 1e15}', "advance_seconds"),
        ('{"advance_seconds": 1e10}', "advance_seconds"),
        ('{"advance_seconds": -1}', "advance_seconds"),
        ('{"at": "2300-01-01T00:00:00Z"}', "at"),
        ('{"at": "1900-01-01T00:00:00Z"}', "at"),
        ('{"at": "2024-03-05T15:00:00"}', "at"),
        ('{"at": "2024-03-05T15:00:00Z", "frozen": "yes"}', "frozen"),
    ],
)
def test_bad_clock_changes_are_422_and_leave_the_clock_alone(
    broker: RunningBroker, client: TradingClient, body: str, field: str
) -> None:
    answer = requests.post(
        f"{broker.url}/admin/clock",
        data=body,
        headers={**broker.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == 42210000 and field in answer.json()["message"]
    assert admin(broker, "GET", "clock").json() == {
        "now": "2024-03-05T15:00:00.000000Z",
        "simulated": True,
        "frozen": True,
    }
    assert client.get_clock().is_open is True  # type: ignore[union-attr]


def test_admin_clock_moves_and_matches(broker: RunningBroker, client: TradingClient) -> None:
    moved = admin(broker, "POST", "clock", {"advance_seconds": 3600}).json()
    assert moved == {"now": "2024-03-05T16:00:00.000000Z", "simulated": True, "frozen": True}
    closed = admin(broker, "POST", "clock", {"at": "2024-03-09T12:00:00+00:00"}).json()  # a Saturday
    assert closed["now"] == "2024-03-09T12:00:00.000000Z" and closed["frozen"] is True  # stays frozen
    assert client.get_clock().is_open is False  # type: ignore[union-attr]
    real = admin(broker, "POST", "clock", {"real_time": True}).json()
    assert real["simulated"] is False and real["frozen"] is False
    assert admin(broker, "POST", "clock", {"advance_seconds": 1}).status_code == 422  # real time
