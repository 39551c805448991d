"""The gateway against the built-in paper broker (through the official SDK): orders sent once, fills
from the stream and the webhook counted once, DRY_RUN and risk refusals never reaching the broker.

The broker's clock is frozen at Tuesday 2024-03-05 10:00 New York (market open); market orders fill on
its next tick (0.2 s). The risk check reads the broker's account and the previous session's daily close
(the gateway's production path, ``BrokerRiskInputs``)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import requests
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import FAST_POLICY, OPEN_TUESDAY, admin, alpaca_broker, set_faults
from tests.integration.execution.gateway_support import (
    AUTH,
    count,
    order_body,
    sample,
    scrape,
    serving,
    settings,
    static_inputs,
)
from tests.support.paper_broker import RunningBroker, running_paper_broker
from tests.support.waiting import wait_until
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import BrokerOrder, OrderQuery, OrderRequest
from trader.broker.errors import AmbiguousBrokerError
from trader.config import Settings
from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
from trader.execution.gateway import create_gateway_app
from trader.observability.metrics import SLIPPAGE_BUCKETS
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import DEFAULT_SYNTHETIC_SEED, FaultSettings
from trader.store.models import Execution, Order, Position, RiskDecision

D = Decimal
DAY = "2024-03-05"
Serve = Callable[..., AbstractContextManager[httpx.Client]]


@pytest.fixture
def paper(tmp_path: Path) -> Iterator[RunningBroker]:
    broker_settings = PaperBrokerSettings(
        data_dir=tmp_path / "empty-data",
        start_at=OPEN_TUESDAY,
        faults=FaultSettings(rate_limit_per_minute=0),
    )
    with running_paper_broker(broker_settings) as running:
        admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
        yield running


@pytest.fixture
def broker(paper: RunningBroker) -> AlpacaBroker:
    return alpaca_broker(paper)


@pytest.fixture
def serve(paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine) -> Serve:
    """``with serve(**settings_changes) as client:`` — DRY_RUN off unless changed; stream consumed."""

    @contextmanager
    def start(consume: bool = True, **changes: Any) -> Iterator[httpx.Client]:
        config = settings(**({"dry_run": False, "alpaca_base_url": paper.url} | changes))
        app = create_gateway_app(config, broker=broker, engine=migrated_engine, consume_trade_updates=consume)
        with serving(app) as client:
            client.app_state = app.state  # type: ignore[attr-defined]
            yield client

    return start


def order_row(engine: Engine, client_order_id: str) -> Order:
    with Session(engine) as session:
        return session.execute(select(Order).where(Order.client_order_id == client_order_id)).scalar_one()


def positions(engine: Engine) -> dict[str, tuple[Decimal, Decimal]]:
    with Session(engine) as session:
        return {p.symbol: (p.qty, p.avg_price) for p in session.execute(select(Position)).scalars()}


def filled(engine: Engine, *client_order_ids: str) -> Callable[[], bool]:
    def check() -> bool:
        rows = [order_row(engine, cid) for cid in client_order_ids]
        return all(row.status == "filled" and row.filled_qty == row.qty for row in rows)

    return check


def previous_close(symbol: str, day: date) -> Decimal:
    """The synthetic market's close of ``symbol`` on ``day`` (what the paper broker serves)."""
    bars = SyntheticSource(SyntheticConfig(seed=DEFAULT_SYNTHETIC_SEED)).data.batch.bars
    close = bars.filter((pl.col("symbol") == symbol) & (pl.col("date") == day))["close"].item()
    return Decimal(repr(close))


def test_a_post_is_sent_once_and_its_streamed_fill_counted_once(
    serve: Serve, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    with serve() as client:
        health = client.get("/health").json()
        assert health["broker"] == {"configured": True, "reachable": True}
        assert health["trade_updates"] == {"running": True, "connected": True}
        first = client.post("/orders", json=order_body(symbol="SYN001", trading_date=DAY), headers=AUTH)
        assert first.status_code == 201, first.text
        cid = first.json()["client_order_id"]
        assert first.json()["sent"] is True and first.json()["broker_order_id"]
        again = client.post("/orders", json=order_body(symbol="SYN001", trading_date=DAY), headers=AUTH)
        assert again.status_code == 200
        assert (again.json()["created"], again.json()["sent"]) == (False, False)
        wait_until(filled(migrated_engine, cid), what="the fill of the order")
        listed = client.get("/positions", headers=AUTH).json()["positions"]
        # the stream thread counts the fill just after committing it
        wait_until(lambda: sample(scrape(client), "trader_fills_total", side="buy") == 1, what="fill metric")
        metrics = scrape(client)
    at_broker = [order for order in broker.list_orders(OrderQuery.ALL) if order.client_order_id == cid]
    assert len(at_broker) == 1 and len(broker.list_orders(OrderQuery.ALL)) == 1
    assert count(migrated_engine, Order) == 1
    assert count(migrated_engine, Execution) == 1
    position = broker.get_position("SYN001")
    assert position is not None
    assert positions(migrated_engine) == {"SYN001": (D(10), position.avg_entry_price)}
    assert [(p["symbol"], p["qty"]) for p in listed] == [("SYN001", "10")]
    # the risk check valued the order at the previous session's close, from the broker's market data
    with Session(migrated_engine) as session:
        decision = session.execute(select(RiskDecision)).scalar_one()
    assert decision.approved
    reference = D(decision.details["price"])
    assert reference == previous_close("SYN001", date(2024, 3, 4))
    # metrics: one send, one applied fill, its slippage against the price the risk check used
    assert sample(metrics, "trader_broker_requests_total", operation="submit_order", outcome="ok") == 1
    assert sum(metrics["trader_orders_decided_total"].values()) == 1, metrics["trader_orders_decided_total"]
    assert sample(metrics, "trader_orders_decided_total", status="dry_run", sent="false") == 0
    assert sample(metrics, "trader_trade_updates_total", event="fill", fill="applied") == 1
    assert sample(metrics, "trader_fills_total", side="buy") == 1
    fill_price = order_row(migrated_engine, cid).filled_avg_price
    assert fill_price is not None
    expected_bps = float((fill_price - reference) / reference * 10_000)
    assert sample(metrics, "trader_fill_slippage_bps_count", side="buy") == 1
    for bound in SLIPPAGE_BUCKETS:  # cumulative buckets: the fill is in every one from its own up
        in_bucket = sample(metrics, "trader_fill_slippage_bps_bucket", side="buy", le=str(bound))
        assert in_bucket == (1 if expected_bps <= bound else 0), bound
    slippage_dollars = float(10 * (fill_price - reference))
    won_or_lost = "trader_fill_slippage_cost_dollars_total" if slippage_dollars > 0 else (
        "trader_fill_slippage_gain_dollars_total"
    )  # fmt: skip
    assert sample(metrics, won_or_lost, side="buy") == pytest.approx(abs(slippage_dollars))
    assert sample(metrics, "trader_orders_ended_total", status="filled") == 1
    assert sample(metrics, "trader_filled_notional_dollars_total", side="buy") == pytest.approx(
        float(10 * fill_price)
    )
    assert sample(metrics, "trader_orders", status="filled") == 1
    assert sample(metrics, "trader_open_positions", strategy="gw") == 1
    assert sample(metrics, "trader_trade_updates_connected") == 1
    assert sample(metrics, "trader_dry_run") == 0


def test_dry_run_and_risk_refusals_never_reach_the_broker(
    serve: Serve, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    with serve(max_order_notional=D(100)) as client:  # 10 shares at the previous close of 31.85
        refused = client.post("/orders", json=order_body(symbol="SYN001", trading_date=DAY), headers=AUTH)
    with serve(dry_run=True) as client:
        dry = client.post("/orders", json=order_body(symbol="SYN003", trading_date=DAY), headers=AUTH)
    assert refused.status_code == 201 and refused.json()["status"] == "risk_rejected"
    assert "order notional 318.50 > max_order_notional 100.00 (settings)" in refused.json()["reject_reason"]
    assert dry.status_code == 201 and dry.json()["status"] == "dry_run"
    assert broker.list_orders(OrderQuery.ALL) == []
    assert count(migrated_engine, RiskDecision, RiskDecision.approved.is_(False)) == 1
    assert count(migrated_engine, RiskDecision, RiskDecision.approved.is_(True)) == 1


def test_an_order_the_broker_refuses_is_submit_failed(serve: Serve, broker: AlpacaBroker) -> None:
    body = order_body(symbol="NOSUCH", qty="1", type="limit", limit_price="10", trading_date=DAY)
    with serve() as client:
        answer = client.post("/orders", json=body, headers=AUTH)
        again = client.post("/orders", json=body, headers=AUTH)
        metrics = scrape(client)
    assert sample(metrics, "trader_broker_requests_total", operation="submit_order", outcome="invalid") == 1
    assert sample(metrics, "trader_orders_decided_total", status="submit_failed", sent="true") == 1
    assert answer.status_code == 201
    assert answer.json()["status"] == "submit_failed" and answer.json()["sent"] is True
    assert "NOSUCH" in answer.json()["reject_reason"]
    assert again.status_code == 200 and again.json()["sent"] is False  # not sent a second time
    assert broker.list_orders(OrderQuery.ALL) == []


def test_duplicated_stream_events_never_double_count(
    serve: Serve, paper: RunningBroker, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    with serve() as client:
        set_faults(paper, duplicate_event_rate=1.0)
        ids = []
        for body in (
            order_body(symbol="SYN004", qty="10", trading_date=DAY),
            order_body(symbol="SYN005", qty="6", trading_date=DAY),
        ):
            ids.append(client.post("/orders", json=body, headers=AUTH).json()["client_order_id"])
        wait_until(filled(migrated_engine, *ids), what="the buys to fill")
        sell = order_body(symbol="SYN004", side="sell", qty="4", intent="exit", trading_date=DAY)
        ids.append(client.post("/orders", json=sell, headers=AUTH).json()["client_order_id"])
        wait_until(filled(migrated_engine, *ids), what="the sell to fill")
        stats = client.app_state.gateway.consumer.stats  # type: ignore[attr-defined]
    assert stats.duplicates > 0  # the broker did send every event twice
    assert count(migrated_engine, Execution) == 3
    books = positions(migrated_engine)
    at_broker = {p.symbol: p for p in broker.get_positions()}
    assert {symbol: qty for symbol, (qty, _) in books.items()} == {"SYN004": D(6), "SYN005": D(6)}
    for symbol, (qty, avg) in books.items():
        assert (qty, avg) == (at_broker[symbol].qty, at_broker[symbol].avg_entry_price)


def broker_order_json(paper: RunningBroker, client_order_id: str) -> dict[str, Any]:
    answer = requests.get(
        f"{paper.url}/v2/orders:by_client_order_id",
        params={"client_order_id": client_order_id},
        headers=paper.headers,
        timeout=10,
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def fill_event(order: dict[str, Any], event: str, execution_id: str, qty: str, price: str, cum: str, avg: str,
               seconds: int) -> dict[str, Any]:  # fmt: skip
    """An Alpaca ``trade_updates`` ``data`` object for ``order`` after this execution."""
    state = copy.deepcopy(order)
    state.update(
        status="filled" if event == "fill" else "partially_filled", filled_qty=cum, filled_avg_price=avg
    )
    at = (OPEN_TUESDAY + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    return {"event": event, "order": state, "timestamp": at, "execution_id": execution_id, "qty": qty,
            "price": price, "position_qty": cum}  # fmt: skip


def test_webhook_fills_count_once_in_any_order(
    serve: Serve, paper: RunningBroker, migrated_engine: Engine
) -> None:
    with serve(consume=False) as client:
        cid = client.post("/orders", json=order_body(symbol="SYN006", trading_date=DAY), headers=AUTH).json()[
            "client_order_id"
        ]
        order = broker_order_json(paper, cid)
        partial = fill_event(order, "partial_fill", "x-1", "4", "30", "4", "30", seconds=1)
        final = fill_event(order, "fill", "x-2", "6", "31", "10", "30.6", seconds=2)
        answers = [
            client.post("/webhooks/trade-updates", json=body, headers=AUTH)
            for body in (final, partial, final, {"stream": "trade_updates", "data": partial})
        ]
        assert [a.status_code for a in answers] == [200] * 4, answers[-1].text
        assert [a.json()["fill"] for a in answers] == ["applied", "applied", "duplicate", "duplicate"]
        assert {a.json()["status"] for a in answers} == {"filled"}  # the late partial did not move it back
        stranger = copy.deepcopy(final)
        stranger["order"]["client_order_id"] = "placed-by-hand"
        unknown = client.post("/webhooks/trade-updates", json=stranger, headers=AUTH)
        assert unknown.status_code == 200
        assert (unknown.json()["known_order"], unknown.json()["fill"]) == (False, None)
        for path, value, field in [
            (("order", "side"), "sideways", "order.side"),
            (("order", "symbol"), None, "order"),
            (("price",), "cheap", "price"),
            (("order",), None, "order"),
            (("event",), "", "event"),
        ]:
            broken = copy.deepcopy(final)
            holder = broken["order"] if len(path) == 2 else broken
            if value is None:
                del holder[path[-1]]
            else:
                holder[path[-1]] = value
            unreadable = client.post("/webhooks/trade-updates", json=broken, headers=AUTH)
            assert unreadable.status_code == 422, unreadable.text
            assert unreadable.json()["detail"][0]["field"] == field, unreadable.text
    row = order_row(migrated_engine, cid)
    assert (row.status, row.filled_qty, row.filled_avg_price) == ("filled", D(10), D("30.6"))
    assert count(migrated_engine, Execution) == 2
    assert positions(migrated_engine) == {"SYN006": (D(10), D("30.6"))}


def test_boot_reconcile_heals_before_the_first_order(
    serve: Serve, broker: AlpacaBroker, migrated_engine: Engine
) -> None:
    """An order placed at the broker while the gateway was down is adopted at start-up, before any
    new order is taken."""
    from trader.broker.base import OrderRequest
    from trader.domain.enums import OrderSide, OrderType, TimeInForce
    from trader.store.models import Event

    broker.submit_order(
        OrderRequest("placed-by-hand-1", "SYN002", OrderSide.BUY, OrderType.MARKET, TimeInForce.DAY, qty=D(3))
    )
    with serve(consume=False) as client:
        assert client.app_state.gateway.ready.is_set()  # type: ignore[attr-defined]
        with Session(migrated_engine) as session:
            kinds = set(session.scalars(select(Event.kind).where(Event.kind.like("reconcile.%"))))
        assert kinds  # the adoption was journaled before the app answered
        body = order_body(symbol="SYN001", trading_date=DAY)
        assert client.post("/orders", json=body, headers=AUTH).status_code == 201


def test_orders_are_refused_until_the_broker_can_be_reconciled(migrated_engine: Engine) -> None:
    from tests.integration.broker.conftest import FAST_POLICY
    from tests.support.services import free_port
    from trader.config import Settings

    dead_url = f"http://127.0.0.1:{free_port()}"
    dead = AlpacaBroker.from_settings(
        Settings(alpaca_base_url=dead_url, broker_timeout_seconds=1), policy=FAST_POLICY
    )
    config = settings(dry_run=False)
    app = create_gateway_app(
        config, broker=dead, engine=migrated_engine, consume_trade_updates=False,
        risk_inputs=static_inputs(), reconcile_retry_seconds=60,
    )  # fmt: skip
    with serving(app) as client:
        answer = client.post("/orders", json=order_body(), headers=AUTH)
        assert answer.status_code == 503
        assert "boot reconciliation" in answer.json()["detail"]
        assert count(migrated_engine, Order) == 0


class _LostFirstAnswer(AlpacaBroker):
    """The first submit reaches the broker, but its answer is lost (what the adapter reports when the
    response and the lookup both fail)."""

    lost = False

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        order = super().submit_order(request)
        if not self.lost:
            self.lost = True
            raise AmbiguousBrokerError(
                f"submit order {request.client_order_id}: outcome unknown after every retry",
                operation="submit order",
                client_order_id=request.client_order_id,
            )
        return order


def test_a_repeated_request_for_an_order_that_landed_is_not_checked_again(
    paper: RunningBroker, migrated_engine: Engine
) -> None:
    # 300 SYN001 (~9.5k) fits max_position_notional 15,000 once; checked again after its own fill,
    # it would count twice (~19k) and the live, filled order would be marked risk_rejected.
    broker = _LostFirstAnswer.from_settings(
        Settings(
            alpaca_base_url=paper.url,
            alpaca_api_key_id=paper.key_id,
            alpaca_api_secret_key=paper.secret_key,
        ),
        policy=FAST_POLICY,
    )
    config = settings(dry_run=False, alpaca_base_url=paper.url, max_position_notional=D(15_000))
    app = create_gateway_app(config, broker=broker, engine=migrated_engine, consume_trade_updates=False)
    body = order_body(symbol="SYN001", qty="300", trading_date=DAY)
    with serving(app) as client:
        first = client.post("/orders", json=body, headers=AUTH)
        assert first.status_code == 202 and first.json()["status"] == "pending_submit"
        cid = first.json()["client_order_id"]
        wait_until(
            lambda: [o.status.value for o in broker.list_orders(OrderQuery.ALL)] == ["filled"],
            what="the fill at the broker",
        )
        again = client.post("/orders", json=body, headers=AUTH)
    assert again.status_code == 200
    assert (again.json()["status"], again.json()["sent"]) == ("filled", False)
    assert len(broker.list_orders(OrderQuery.ALL)) == 1  # not sent twice
    with Session(migrated_engine) as session:
        row = session.scalars(select(Order).where(Order.client_order_id == cid)).one()
    # (its fill reaches the books through the trade-update stream or the reconciler, as any order's)
    assert (row.status, row.reject_reason) == ("filled", None)
    # one approved decision (the first request's); the repeat was not checked
    assert count(migrated_engine, RiskDecision) == 1
