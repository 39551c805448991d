"""The metrics' pure parts: slippage sign, broker outcome labels, bounded labels, the request
middleware's route templates and status codes."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI

from trader.broker.errors import (
    AmbiguousBrokerError,
    AuthError,
    DuplicateClientOrderIdError,
    InsufficientFundsError,
    RateLimitError,
    TemporaryBrokerError,
)
from trader.domain.enums import OrderSide, OrderStatus
from trader.execution.orders import StatusChange, StatusOutcome
from trader.observability.metrics import (
    GatewayMetrics,
    RequestMetricsMiddleware,
    broker_outcome,
    render,
    slippage_bps,
)

D = Decimal


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_slippage_is_positive_when_it_costs() -> None:
    assert slippage_bps(OrderSide.BUY, D("100.10"), D("100")) == pytest.approx(10.0)
    assert slippage_bps(OrderSide.BUY, D("99.90"), D("100")) == pytest.approx(-10.0)
    assert slippage_bps(OrderSide.SELL, D("99.90"), D("100")) == pytest.approx(10.0)
    assert slippage_bps(OrderSide.SELL, D("100"), D("100")) == 0.0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (None, "ok"),
        (DuplicateClientOrderIdError("dup"), "duplicate"),
        (InsufficientFundsError("no cash"), "invalid"),
        (RateLimitError("429"), "temporary"),
        (TemporaryBrokerError("503"), "temporary"),
        (AmbiguousBrokerError("timeout"), "ambiguous"),
        (AuthError("401"), "error"),
    ],
)
def test_broker_outcomes_follow_the_error_hierarchy(error: Exception | None, outcome: str) -> None:
    assert broker_outcome(error) == outcome


def test_a_timed_broker_call_records_its_outcome_and_lets_errors_through() -> None:
    metrics = GatewayMetrics()
    with metrics.timed_broker_call("submit_order"):
        pass
    with pytest.raises(RateLimitError), metrics.timed_broker_call("submit_order"):
        raise RateLimitError("429")
    with pytest.raises(KeyError), metrics.timed_broker_call("submit_order"):
        raise KeyError("a bug, not a broker answer")  # not counted as a broker outcome
    assert value(metrics, "trader_broker_requests_total", operation="submit_order", outcome="ok") == 1
    assert value(metrics, "trader_broker_requests_total", operation="submit_order", outcome="temporary") == 1
    assert value(metrics, "trader_broker_request_duration_seconds_count", operation="submit_order") == 2


def test_labels_stay_in_closed_sets() -> None:
    metrics = GatewayMetrics()
    metrics.trade_update("fill", "applied")
    metrics.trade_update("made-up-by-a-webhook-caller", None)
    assert value(metrics, "trader_trade_updates_total", event="fill", fill="applied") == 1
    assert value(metrics, "trader_trade_updates_total", event="other", fill="none") == 1
    assert "made-up" not in render(metrics.registry).decode()


def test_the_closed_label_sets_exist_at_zero_before_anything_happens() -> None:
    """A series born with its first increment loses that increment to rate() and increase()."""
    metrics = GatewayMetrics()
    assert value(metrics, "trader_trade_updates_total", event="canceled", fill="none") == 0
    assert value(metrics, "trader_trade_updates_total", event="fill", fill="applied") == 0
    assert value(metrics, "trader_orders_ended_total", status="expired") == 0
    assert value(metrics, "trader_orders_decided_total", status="risk_rejected", sent="false") == 0
    assert value(metrics, "trader_fills_total", side="sell") == 0
    assert value(metrics, "trader_fill_slippage_bps_count", side="buy") == 0


def test_only_a_change_to_a_final_broker_status_ends_an_order() -> None:
    metrics = GatewayMetrics()
    changed, repeat = StatusOutcome.CHANGED, StatusOutcome.UNCHANGED
    metrics.status_changed(StatusChange("a", OrderStatus.NEW, OrderStatus.FILLED, changed))
    metrics.status_changed(StatusChange("a", OrderStatus.FILLED, OrderStatus.FILLED, repeat))  # a repeat
    metrics.status_changed(StatusChange("b", OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED, changed))
    metrics.status_changed(StatusChange("c", OrderStatus.NEW, OrderStatus.CANCELED, changed))
    assert value(metrics, "trader_orders_ended_total", status="filled") == 1
    assert value(metrics, "trader_orders_ended_total", status="canceled") == 1
    assert value(metrics, "trader_orders_ended_total", status="partially_filled") is None


def test_a_fill_without_a_reference_price_has_no_slippage() -> None:
    metrics = GatewayMetrics()
    metrics.fill(OrderSide.SELL, D(5), D("20"), None)
    metrics.fill(OrderSide.SELL, D(5), D("19.98"), D("20"))  # sold 2 cents below: 10 bps, $0.10
    assert value(metrics, "trader_fills_total", side="sell") == 2
    assert value(metrics, "trader_filled_notional_dollars_total", side="sell") == pytest.approx(199.9)
    assert value(metrics, "trader_fill_slippage_bps_count", side="sell") == 1
    assert value(metrics, "trader_fill_slippage_bps_bucket", side="sell", le="10.0") == 1
    assert value(metrics, "trader_fill_slippage_bps_bucket", side="sell", le="5.0") == 0
    assert value(metrics, "trader_fill_slippage_cost_dollars_total", side="sell") == pytest.approx(0.10)
    metrics.fill(OrderSide.SELL, D(10), D("20.05"), D("20"))  # sold 5 cents above: a gain of $0.50
    assert value(metrics, "trader_fill_slippage_gain_dollars_total", side="sell") == pytest.approx(0.50)
    assert value(metrics, "trader_fill_slippage_cost_dollars_total", side="sell") == pytest.approx(0.10)


def test_two_registries_do_not_share_values() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.trade_update("fill", "applied")
    assert value(first, "trader_trade_updates_total", event="fill", fill="applied") == 1
    assert value(second, "trader_trade_updates_total", event="fill", fill="applied") == 0


def test_requests_are_counted_under_their_route_template() -> None:
    metrics = GatewayMetrics()
    app = FastAPI()

    @app.get("/orders/{client_order_id}")
    def one(client_order_id: str) -> dict[str, str]:
        return {"id": client_order_id}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    route = "/orders/{client_order_id}"

    async def calls() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            paths = ("/orders/abc", "/orders/def", "/nothing/here", "/boom")
            codes = [(await client.get(path)).status_code for path in paths]
            codes.append((await client.request("MADEUP", "/orders/abc")).status_code)
            return codes

    assert asyncio.run(calls()) == [200, 200, 404, 500, 405]
    assert value(metrics, "trader_http_requests_total", method="other", route=route, status="405") == 1
    assert "MADEUP" not in render(metrics.registry).decode()
    assert value(metrics, "trader_http_requests_total", method="GET", route=route, status="200") == 2
    assert value(metrics, "trader_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(metrics, "trader_http_requests_total", method="GET", route="/boom", status="500") == 1
    assert value(metrics, "trader_http_request_duration_seconds_count", method="GET", route=route) == 2
