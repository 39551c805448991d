"""The gateway's HTTP API on a real socket, in DRY_RUN with a fixed account (no broker in the loop):
auth, idempotent POST /orders, risk refusals with their reasons, validation errors, listings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.execution.gateway_support import (
    API_KEY,
    AUTH,
    count,
    order_body,
    sample,
    scrape,
    serving,
    settings,
    static_inputs,
)
from trader.execution.client_ids import make_client_order_id
from trader.execution.gateway import create_gateway_app
from trader.execution.snapshots import RiskInputs, RiskInputsUnavailableError
from trader.risk.limits import RiskLimits
from trader.risk.store import upsert_limits
from trader.store.models import Event, Order, RiskDecision

D = Decimal
Serve = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture
def serve(migrated_engine: Engine) -> Serve:
    """``with serve(**settings_changes) as client:`` — the gateway in DRY_RUN on ``migrated_engine``."""

    @contextmanager
    def start(inputs: Any = None, **changes: Any) -> Iterator[httpx.Client]:
        app = create_gateway_app(
            settings(**changes),
            engine=migrated_engine,
            risk_inputs=inputs or static_inputs(),
            clock=lambda: datetime(2024, 3, 5, 15, 0, tzinfo=UTC),
        )
        with serving(app) as client:
            yield client

    return start


def test_every_route_but_health_needs_the_key(serve: Serve) -> None:
    with serve() as client:
        calls = [
            ("GET", "/orders", None),
            ("GET", "/orders/abc", None),
            ("GET", "/positions", None),
            ("POST", "/orders", order_body()),
            ("POST", "/webhooks/trade-updates", {"event": "fill"}),
            ("GET", "/openapi.json", None),
            ("GET", "/metrics", None),
        ]
        for method, path, body in calls:
            for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": f"Basic {API_KEY}"}):
                answer = client.request(method, path, json=body, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert API_KEY not in answer.text
        # a malformed body from a caller without the key is still 401, not a parse error
        bad = client.post("/orders", content=b"{not json", headers={"content-type": "application/json"})
        assert bad.status_code == 401
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok" and health.json()["dry_run"] is True
        assert health.json()["database"]["reachable"] is True
        assert health.json()["broker"] == {"configured": False, "reachable": None}
        bearer = client.get("/orders", headers={"Authorization": f"Bearer {API_KEY}"})
        assert bearer.status_code == 200 and bearer.json() == {"orders": []}
        assert client.get("/openapi.json", headers=AUTH).json()["paths"].keys() >= {"/orders", "/health"}


def test_dry_run_post_is_recorded_once_and_repeats_answer_200(serve: Serve, migrated_engine: Engine) -> None:
    with serve() as client:
        first = client.post("/orders", json=order_body(symbol="aapl"), headers=AUTH)
        assert first.status_code == 201, first.text
        order = first.json()
        expected_id = make_client_order_id("gw", datetime(2024, 3, 5).date(), "AAPL", "buy", "manual")
        assert order["client_order_id"] == expected_id
        assert (order["status"], order["created"], order["sent"]) == ("dry_run", True, False)
        assert (order["symbol"], order["qty"], order["type"]) == ("AAPL", "10", "market")
        again = client.post("/orders", json=order_body(), headers=AUTH)
        assert again.status_code == 200
        assert again.json()["created"] is False and again.json()["status"] == "dry_run"
        # the same identity asking for another size is refused, and the recorded order is kept
        other = client.post("/orders", json=order_body(qty="11"), headers=AUTH)
        assert other.status_code == 409
        assert "already recorded for a different order" in other.json()["detail"]
        assert other.json()["order"]["qty"] == "10"
        fetched = client.get(f"/orders/{expected_id}", headers=AUTH)
        assert fetched.status_code == 200 and fetched.json()["status"] == "dry_run"
    assert count(migrated_engine, Order) == 1
    assert count(migrated_engine, RiskDecision, RiskDecision.approved.is_(True)) == 1
    with Session(migrated_engine) as session:
        row = session.execute(select(Order)).scalar_one()
        assert (row.qty, row.status, row.broker_order_id) == (D(10), "dry_run", None)


def test_concurrent_identical_posts_make_one_order(serve: Serve, migrated_engine: Engine) -> None:
    with serve() as client, ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: client.post("/orders", json=order_body(), headers=AUTH), range(12)))
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] * 11 + [201]
    assert {answer.json()["status"] for answer in answers} == {"dry_run"}
    assert count(migrated_engine, Order) == 1
    assert count(migrated_engine, Event, Event.kind == "order.intent") == 1
    assert count(migrated_engine, RiskDecision) == 1  # decided once, under the position lock


def test_risk_refusal_from_the_settings_is_recorded_with_its_reason(
    serve: Serve, migrated_engine: Engine
) -> None:
    with serve(max_order_notional=D(1000)) as client:
        answer = client.post("/orders", json=order_body(qty="7"), headers=AUTH)  # 7 × 150 = 1,050
        again = client.post("/orders", json=order_body(qty="7"), headers=AUTH)
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] == "risk_rejected" and body["sent"] is False
    assert body["reject_reason"] == body["message"]
    assert "order notional 1,050.00 > max_order_notional 1,000.00 (settings)" in body["reject_reason"]
    assert again.status_code == 200 and again.json()["status"] == "risk_rejected"
    with Session(migrated_engine) as session:
        decision = session.execute(select(RiskDecision)).scalar_one()
    assert (decision.approved, decision.rule, decision.client_order_id) == (
        False,
        "max_order_notional",
        body["client_order_id"],
    )


def test_risk_refusal_from_the_risk_limits_table(serve: Serve, migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        upsert_limits(session, RiskLimits("gw", max_order_notional=D(500), blacklist=frozenset({"TSLA"})))
    prices = {"AAPL": D("150"), "TSLA": D("200")}
    with serve(inputs=static_inputs(prices)) as client:
        small = client.post("/orders", json=order_body(qty="3"), headers=AUTH)  # 450: passes
        big = client.post("/orders", json=order_body(qty="4", intent="second"), headers=AUTH)  # 600
        banned = client.post("/orders", json=order_body(symbol="TSLA", qty="1"), headers=AUTH)
        notional = client.post("/orders", json=order_body(qty=None, notional="900", intent="n"), headers=AUTH)
        unpriced = client.post("/orders", json=order_body(symbol="MSFT", qty="1"), headers=AUTH)
    assert small.json()["status"] == "dry_run"
    assert big.json()["status"] == "risk_rejected"
    assert "max_order_notional 500.00 (strategy gw)" in big.json()["reject_reason"]
    assert banned.json()["status"] == "risk_rejected"
    assert "TSLA is blacklisted" in banned.json()["reject_reason"]
    # a notional order is checked as the shares it buys at the reference price: $900 > $500
    assert notional.json()["status"] == "risk_rejected"
    assert "order notional 900.00 > max_order_notional 500.00" in notional.json()["reject_reason"]
    assert unpriced.json()["status"] == "risk_rejected"
    assert "no usable reference price for MSFT" in unpriced.json()["reject_reason"]
    # every checked order has its decision row; the unpriced one never reached the rules
    assert count(migrated_engine, RiskDecision) == 4
    assert count(migrated_engine, RiskDecision, RiskDecision.approved.is_(False)) == 3


#: (body changes, the field the error must name, words its message must contain)
INVALID_BODIES: list[tuple[dict[str, Any], str, str]] = [
    ({"qty": "-1"}, "qty", "greater than 0"),
    ({"qty": "abc"}, "qty", "decimal"),
    ({"qty": "0.0000000001"}, "qty", "decimal places"),
    ({"notional": "100"}, "qty", "exactly one of qty and notional"),
    ({"qty": None}, "qty", "exactly one of qty and notional"),
    ({"side": "hold"}, "side", "'buy' or 'sell'"),
    ({"type": "limit"}, "limit_price", "a limit order needs limit_price"),
    ({"type": "stop_limit", "stop_price": "9"}, "limit_price", "needs limit_price"),
    ({"limit_price": "10"}, "limit_price", "a market order takes no limit_price"),
    ({"type": "trailing_stop"}, "type", "not supported"),
    ({"symbol": "AA PL"}, "symbol", "pattern"),
    ({"strategy_id": "Bad-Id"}, "strategy_id", "pattern"),
    ({"trading_date": "2024-13-01"}, "trading_date", "date"),
    ({"time_in_force": "forever"}, "time_in_force", "day"),
    ({"sequence": -1}, "sequence", "greater than or equal to 0"),
    ({"colour": "red"}, "colour", "not permitted"),
    ({"strategy_id": None}, "strategy_id", "required"),
]


def test_validation_errors_name_the_field(serve: Serve, migrated_engine: Engine) -> None:
    with serve() as client:
        for changes, field, words in INVALID_BODIES:
            body = {k: v for k, v in order_body(**changes).items() if v is not None}
            answer = client.post("/orders", json=body, headers=AUTH)
            assert answer.status_code == 422, (changes, answer.text)
            errors = answer.json()["detail"]
            assert [error["field"] for error in errors] == [field], changes
            assert errors[0]["message"].startswith(f"{field}: "), changes
            assert words.lower() in errors[0]["message"].lower(), (changes, errors)
        json_header = {**AUTH, "content-type": "application/json"}
        not_json = client.post("/orders", content=b"{bad", headers=json_header)
        assert not_json.status_code == 422 and not_json.json()["detail"][0]["field"] == "body"
    assert count(migrated_engine, Order) == 0


def test_unreadable_risk_inputs_answer_503_and_record_nothing(serve: Serve, migrated_engine: Engine) -> None:
    class BrokerDown:
        def risk_inputs(self) -> RiskInputs:
            raise RiskInputsUnavailableError("the broker account could not be read: connection refused")

    with serve(inputs=BrokerDown()) as client:
        answer = client.post("/orders", json=order_body(), headers=AUTH)
        health = client.get("/health")
    assert answer.status_code == 503
    assert "connection refused" in answer.json()["detail"]
    assert count(migrated_engine, Order) == 0
    assert health.status_code == 200  # no broker configured: the database alone decides


def test_listing_filters_and_limits(serve: Serve) -> None:
    prices = {"AAPL": D("150"), "MSFT": D("300")}
    with serve(inputs=static_inputs(prices), max_order_notional=D(2000)) as client:
        for i, (symbol, qty) in enumerate([("AAPL", "1"), ("MSFT", "2"), ("MSFT", "100"), ("AAPL", "3")]):
            body = order_body(symbol=symbol, qty=qty, intent=f"i{i}", trading_date=f"2024-03-0{4 + i % 2}")
            assert client.post("/orders", json=body, headers=AUTH).status_code == 201
        client.post("/orders", json=order_body(strategy_id="other"), headers=AUTH)

        def ids(**query: Any) -> list[tuple[str, str]]:
            answer = client.get("/orders", params=query, headers=AUTH)
            assert answer.status_code == 200, answer.text
            return [(o["symbol"], o["qty"]) for o in answer.json()["orders"]]

        assert len(ids()) == 5
        assert sorted(ids(strategy_id="gw", symbol="msft")) == [("MSFT", "100"), ("MSFT", "2")]
        assert ids(status="risk_rejected") == [("MSFT", "100")]
        assert sorted(ids(strategy_id="gw", trading_date="2024-03-04")) == [("AAPL", "1"), ("MSFT", "100")]
        assert len(ids(limit=2)) == 2
        too_many = client.get("/orders", params={"limit": 1001}, headers=AUTH)
        assert too_many.status_code == 422 and too_many.json()["detail"][0]["field"] == "limit"
        bad_status = client.get("/orders", params={"status": "lost"}, headers=AUTH)
        assert bad_status.status_code == 422 and bad_status.json()["detail"][0]["field"] == "status"
        missing = client.get("/orders/no-such-order", headers=AUTH)
        assert missing.status_code == 404 and "no-such-order" in missing.json()["detail"]
        assert client.get("/positions", headers=AUTH).json() == {"positions": []}


def test_default_trading_date_is_the_gateway_clock_session(serve: Serve) -> None:
    with serve() as client:  # clock: Tuesday 2024-03-05 10:00 New York
        answer = client.post("/orders", json=order_body(trading_date=None), headers=AUTH)
    assert answer.json()["trading_date"] == "2024-03-05"


def test_a_retry_just_after_the_close_without_trading_date_is_the_same_order(migrated_engine: Engine) -> None:
    # Posted at 15:59:59 New York (session 2024-03-05), retried at 16:00:01: the wall clock now names
    # the next session, but the retry must find the first order, not record and send a second one.
    now = [datetime(2024, 3, 5, 20, 59, 59, tzinfo=UTC)]
    app = create_gateway_app(
        settings(), engine=migrated_engine, risk_inputs=static_inputs(), clock=lambda: now[0]
    )
    body = order_body(trading_date=None)
    with serving(app) as client:
        first = client.post("/orders", json=body, headers=AUTH).json()
        now[0] = datetime(2024, 3, 5, 21, 0, 1, tzinfo=UTC)
        retry = client.post("/orders", json=body, headers=AUTH).json()
        # Another order (not recorded before the close) is the next session's.
        other = client.post("/orders", json=order_body(trading_date=None, symbol="MSFT"), headers=AUTH).json()
        # Past the retry window, the same body is a new order of the next session.
        now[0] = datetime(2024, 3, 5, 21, 31, tzinfo=UTC)
        later = client.post("/orders", json=body, headers=AUTH).json()
    assert first["trading_date"] == retry["trading_date"] == "2024-03-05"
    assert retry["client_order_id"] == first["client_order_id"] and retry["created"] is False
    assert other["trading_date"] == later["trading_date"] == "2024-03-06"
    assert later["client_order_id"] != first["client_order_id"]


def test_metrics_count_decisions_requests_and_read_the_books(serve: Serve) -> None:
    with serve(max_order_notional=D(2000)) as client:
        first = client.post("/orders", json=order_body(), headers=AUTH).json()
        client.post("/orders", json=order_body(), headers=AUTH)  # a repeat: answered from the books
        refused = client.post("/orders", json=order_body(symbol="MSFT", qty="1000"), headers=AUTH)
        client.get(f"/orders/{first['client_order_id']}", headers=AUTH)
        client.get("/orders/unknown-id", headers=AUTH)
        client.get("/no/such/route", headers=AUTH)
        client.post("/orders", json=order_body(qty="-1"), headers=AUTH)
        metrics = scrape(client)
    assert refused.json()["status"] == "risk_rejected"
    # each order decided once, the repeat not counted
    assert sample(metrics, "trader_orders_decided_total", status="dry_run", sent="false") == 1
    assert sample(metrics, "trader_orders_decided_total", status="risk_rejected", sent="false") == 1
    assert sample(metrics, "trader_orders", status="dry_run") == 1
    assert sample(metrics, "trader_orders", status="risk_rejected") == 1
    assert sample(metrics, "trader_orders", status="filled") == 0
    # requests under their route template; ids and unknown paths add no series
    requests = metrics["trader_http_requests_total"]
    assert sample(metrics, "trader_http_requests_total", method="POST", route="/orders", status="201") == 2
    assert sample(metrics, "trader_http_requests_total", method="POST", route="/orders", status="200") == 1
    assert sample(metrics, "trader_http_requests_total", method="POST", route="/orders", status="422") == 1
    route = "/orders/{client_order_id}"
    assert sample(metrics, "trader_http_requests_total", method="GET", route=route, status="200") == 1
    assert sample(metrics, "trader_http_requests_total", method="GET", route=route, status="404") == 1
    assert sample(metrics, "trader_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("unknown-id" in value or "/no/such" in value for labels in requests for _, value in labels)
    count_201 = sample(metrics, "trader_http_request_duration_seconds_count", method="POST", route="/orders")
    assert count_201 == 4
    assert sample(metrics, "trader_dry_run") == 1
    assert sample(metrics, "trader_gateway_ready") == 1
    assert sample(metrics, "trader_trade_updates_connected") == 0  # no broker, no stream
    assert sample(metrics, "trader_circuit_breaker_tripped") == 0
    assert API_KEY not in str(metrics)


def test_metrics_show_a_tripped_breaker(serve: Serve, migrated_engine: Engine) -> None:
    from trader.ops.breakers import TripReason, breaker_from_settings

    with serve() as client:
        assert sample(scrape(client), "trader_circuit_breaker_tripped") == 0
        breaker = breaker_from_settings(settings(), migrated_engine)
        breaker.trip(TripReason.MANUAL, "test", actor="test")
        assert sample(scrape(client), "trader_circuit_breaker_tripped") == 1
        # TRIPPED with a reason this version cannot name still blocks orders: the gauge says so too
        breaker.store.save(replace(breaker.status(), reason="tripped by a newer version"))
        assert breaker.status().kind is None
        assert sample(scrape(client), "trader_circuit_breaker_tripped") == 1


def test_metrics_leave_out_what_cannot_be_read(tmp_path: Path) -> None:
    """A database without our tables (or gone): the books' gauges are left out and the miss counted,
    the rest is still served."""
    from sqlalchemy import create_engine

    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    app = create_gateway_app(settings(), engine=empty, risk_inputs=static_inputs())
    with serving(app) as client:
        metrics = scrape(client)
        again = scrape(client)
    empty.dispose()
    assert "trader_orders" not in metrics and "trader_open_positions" not in metrics
    assert sample(metrics, "trader_metrics_read_errors_total", what="database") == 1
    assert sample(again, "trader_metrics_read_errors_total", what="database") == 2
    assert sample(metrics, "trader_dry_run") == 1
