"""The paper broker's Trading API responses validate against Alpaca's official OpenAPI schemas.

Bodies are fetched through the official alpaca-py ``TradingClient`` with ``raw_data=True`` (it then
returns the decoded JSON instead of its models), so the requests are the SDK's own. ``format`` is
checked as well (``uuid``, ``date-time``, ``date``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)

from tests.support.openapi import TRADING_SPEC
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.paperbroker import PaperBrokerSettings

OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RunningBroker]:
    settings = PaperBrokerSettings(data_dir=tmp_path / "none", start_at=OPEN_TUESDAY)
    with running_paper_broker(settings) as running:
        answer = requests.post(
            f"{running.url}/admin/clock",
            json={"at": OPEN_TUESDAY.isoformat(), "frozen": True},
            headers=running.headers,
            timeout=10,
        )
        answer.raise_for_status()
        yield running


@pytest.fixture
def raw(broker: RunningBroker) -> TradingClient:
    """The SDK's client answering raw JSON."""
    client = TradingClient(broker.key_id, broker.secret_key, url_override=broker.url, raw_data=True)
    client._retry = 0
    return client


def as_dict(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict), value
    return value


def as_list(value: Any, at_least: int = 1) -> list[dict[str, Any]]:
    assert isinstance(value, list) and len(value) >= at_least, value
    return value


def market(symbol: str, qty: float, side: OrderSide = OrderSide.BUY) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY)


def trade(raw: TradingClient) -> dict[str, dict[str, Any]]:
    """Fill a long, a fractional long and a short position, and leave resting orders of each kind."""
    orders = {
        "market": raw.submit_order(market("SYN000", 10)),
        "fractional": raw.submit_order(market("SYN001", 1.5)),
        "notional": raw.submit_order(
            MarketOrderRequest(
                symbol="SYN003", notional=250, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        ),
        "short": raw.submit_order(market("SYN002", 3, OrderSide.SELL)),
        "limit": raw.submit_order(
            LimitOrderRequest(
                symbol="SYN004", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1.25
            )
        ),
        "stop": raw.submit_order(
            StopOrderRequest(
                symbol="SYN005", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, stop_price=9999
            )
        ),
    }
    return {name: as_dict(order) for name, order in orders.items()}


# --------------------------------------------------------------------------------------- orders


def test_orders_match_the_order_schema(raw: TradingClient) -> None:
    submitted = trade(raw)
    for order in submitted.values():
        TRADING_SPEC.validate(order, "Order")
    listed = as_list(raw.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL)), at_least=6)
    for order in listed:
        TRADING_SPEC.validate(order, "Order")
    assert {o["status"] for o in listed} >= {"filled", "new"}
    limit = submitted["limit"]
    TRADING_SPEC.validate(as_dict(raw.get_order_by_id(limit["id"])), "Order")
    TRADING_SPEC.validate(as_dict(raw.get_order_by_client_id(limit["client_order_id"])), "Order")
    replacement = as_dict(raw.replace_order_by_id(limit["id"], ReplaceOrderRequest(limit_price=1.5)))
    TRADING_SPEC.validate(replacement, "Order")
    TRADING_SPEC.validate(as_dict(raw.get_order_by_id(limit["id"])), "Order")  # now replaced
    assert submitted["notional"]["qty"] is None and submitted["notional"]["notional"] == "250"


def test_a_gtc_order_matches_the_order_schema(raw: TradingClient) -> None:
    gtc = raw.submit_order(
        LimitOrderRequest(
            symbol="SYN004", qty=2, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1
        )
    )
    TRADING_SPEC.validate(as_dict(gtc), "Order")


def test_cancel_all_items_match_canceled_order_response(raw: TradingClient) -> None:
    trade(raw)
    canceled = as_list(raw.cancel_orders(), at_least=2)  # the limit and the stop order
    for item in canceled:
        TRADING_SPEC.validate(item, "CanceledOrderResponse")
    assert {item["status"] for item in canceled} == {200}


# ------------------------------------------------------------------------------------ positions


def test_positions_match_the_position_schema(raw: TradingClient) -> None:
    trade(raw)
    positions = as_list(raw.get_all_positions(), at_least=4)
    for position in positions:
        TRADING_SPEC.validate(position, "Position")
    assert {p["side"] for p in positions} == {"long", "short"}
    for symbol in ("SYN000", "SYN001", "SYN002", "SYN003"):
        TRADING_SPEC.validate(as_dict(raw.get_open_position(symbol)), "Position")


def test_closing_positions_answers_orders_and_position_closed_items(raw: TradingClient) -> None:
    trade(raw)
    partly = raw.close_position("SYN000", ClosePositionRequest(qty="4"))
    TRADING_SPEC.validate(as_dict(partly), "Order")
    by_share = raw.close_position("SYN002", ClosePositionRequest(percentage="50"))
    TRADING_SPEC.validate(as_dict(by_share), "Order")
    closed = as_list(raw.close_all_positions(cancel_orders=True), at_least=4)
    for item in closed:
        TRADING_SPEC.validate(item, "PositionClosedReponse")  # sic: the spec's spelling
    assert {item["status"] for item in closed} == {200}
    assert {item["symbol"] for item in closed} == {"SYN000", "SYN001", "SYN002", "SYN003"}


# --------------------------------------------------------------------- account, activities, misc


def test_account_matches_the_account_schema(raw: TradingClient) -> None:
    TRADING_SPEC.validate(as_dict(raw.get_account()), "Account")
    trade(raw)
    TRADING_SPEC.validate(as_dict(raw.get_account()), "Account")


def test_fill_activities_match_the_trading_activities_schema(raw: TradingClient) -> None:
    trade(raw)
    every = as_list(raw.get("/account/activities"), at_least=4)
    fills = as_list(raw.get("/account/activities/FILL", {"direction": "asc", "page_size": 2}), at_least=2)
    for activity in every + fills:
        TRADING_SPEC.validate(activity, "TradingActivities")
    assert {a["activity_type"] for a in every} == {"FILL"}
    assert {a["side"] for a in every} == {"buy", "sell"}


def test_clock_matches_legacy_clock(raw: TradingClient) -> None:
    clock = as_dict(raw.get_clock())
    TRADING_SPEC.validate(clock, "legacy_clock")
    assert clock["is_open"] is True
    assert clock["timestamp"] == "2024-03-05T10:00:00-05:00"  # New York offset, as Alpaca sends it


def test_calendar_days_match_legacy_calendar_day(raw: TradingClient) -> None:
    days = as_list(
        raw.get_calendar(GetCalendarRequest(start=date(2024, 11, 25), end=date(2024, 12, 6))), at_least=9
    )
    for day in days:
        TRADING_SPEC.validate(day, "legacy_calendar_day")
    by_date = {day["date"]: day for day in days}
    assert "2024-11-28" not in by_date  # Thanksgiving
    assert by_date["2024-11-29"]["close"] == "13:00"  # the half day after
    assert by_date["2024-11-27"]["settlement_date"] == "2024-11-29"


def test_assets_match_the_assets_schema(raw: TradingClient) -> None:
    assets = as_list(raw.get_all_assets(), at_least=50)
    for asset in assets:
        TRADING_SPEC.validate(asset, "Assets")
    one = as_dict(raw.get_asset("SYN007"))
    TRADING_SPEC.validate(one, "Assets")
    TRADING_SPEC.validate(as_dict(raw.get_asset(one["id"])), "Assets")


def test_the_schema_check_has_teeth(raw: TradingClient) -> None:
    order = as_dict(raw.submit_order(market("SYN000", 1)))
    for broken in (
        {**order, "id": "not-a-uuid"},
        {**order, "created_at": "yesterday"},
        {**order, "status": "lost"},
        {**order, "qty": 1},
        {key: value for key, value in order.items() if key != "time_in_force"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            TRADING_SPEC.validate(broken, "Order")
    with pytest.raises(KeyError):
        TRADING_SPEC.validate(order, "NoSuchSchema")
    assert {"Order", "Position", "Account", "Assets", "legacy_clock", "TradingActivities"} <= (
        TRADING_SPEC.schema_names()
    )
