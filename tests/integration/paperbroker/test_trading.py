"""Conformance of the paper broker's Trading API, driven through the official alpaca-py SDK.

The clock is simulated and frozen (Tuesday 2024-03-05 10:00 New York unless a test moves it), so
every fill price is a known answer from the day's raw bar and the documented path
open → low → high → close (up day) or open → high → low → close (down day).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopOrderRequest,
)

from tests.integration.paperbroker.conftest import OPEN_TUESDAY, StartBroker, client_of, set_clock
from tests.support.paper_broker import RunningBroker

SYMBOL = "SYN001"
Bar = Callable[[str, date], dict[str, Decimal]]


def market(
    symbol: str = SYMBOL, qty: float = 10, side: OrderSide = OrderSide.BUY, **kw: Any
) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, **kw)


def path_price(bar: dict[str, Decimal], fraction: Decimal) -> Decimal:
    """The documented intraday path, written out independently of the broker's code."""
    up = bar["close"] >= bar["open"]
    knots = [bar["open"], bar["low"] if up else bar["high"], bar["high"] if up else bar["low"], bar["close"]]
    scaled = fraction * 3
    leg = min(int(scaled), 2)
    return (knots[leg] + (knots[leg + 1] - knots[leg]) * (scaled - leg)).quantize(Decimal("0.0001"))


def fraction_at(moment: datetime, opened: datetime, closed: datetime) -> Decimal:
    return Decimal(repr((moment - opened).total_seconds() / (closed - opened).total_seconds()))


def raw_post(broker: RunningBroker, body: dict[str, Any] | str) -> requests.Response:
    data = body if isinstance(body, str) else json.dumps(body)
    return requests.post(f"{broker.url}/v2/orders", data=data, headers=broker.headers, timeout=10)


def api_error(call: Callable[[], object]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(APIError) as caught:
        call()
    return caught.value.status_code, json.loads(str(caught.value))


# --- account, clock, calendar, assets ---------------------------------------------------------------
def test_a_new_account_has_100k_cash_and_no_pdt_fields(trading: TradingClient) -> None:
    account = trading.get_account()
    assert account.cash == "100000.00"
    assert account.equity == "100000.00"
    assert account.status.value == "ACTIVE"
    assert account.pattern_day_trader is None and account.daytrade_count is None  # retired in 2026
    assert trading.get_all_positions() == []


def test_clock_follows_the_simulated_time(broker: RunningBroker, trading: TradingClient) -> None:
    clock = trading.get_clock()
    assert clock.is_open
    assert clock.timestamp == OPEN_TUESDAY
    assert clock.next_close == datetime(2024, 3, 5, 21, 0, tzinfo=UTC)
    assert clock.next_open == datetime(2024, 3, 6, 14, 30, tzinfo=UTC)
    set_clock(broker, datetime(2024, 3, 9, 15, 0, tzinfo=UTC))  # Saturday
    weekend = trading.get_clock()
    assert not weekend.is_open
    assert weekend.next_open == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)  # DST began on Sunday


def test_calendar_has_holidays_and_half_days(trading: TradingClient) -> None:
    days = trading.get_calendar(GetCalendarRequest(start=date(2024, 11, 25), end=date(2024, 12, 2)))
    by_date = {day.date: day for day in days}
    assert date(2024, 11, 28) not in by_date  # Thanksgiving
    assert by_date[date(2024, 11, 29)].close.strftime("%H:%M") == "13:00"  # half day
    assert by_date[date(2024, 11, 27)].open.strftime("%H:%M") == "09:30"
    assert len(days) == 5


def calendar(broker: RunningBroker, **params: str) -> requests.Response:
    return requests.get(f"{broker.url}/v2/calendar", params=params, headers=broker.headers, timeout=10)


def test_calendar_settles_t_plus_2_until_may_2024_then_t_plus_1(broker: RunningBroker) -> None:
    days = calendar(broker, start="2024-05-23", end="2024-05-29").json()
    settled = {day["date"]: day["settlement_date"] for day in days}
    assert settled == {  # Memorial Day 2024-05-27; T+1 from trades of 2024-05-28
        "2024-05-23": "2024-05-28",
        "2024-05-24": "2024-05-29",
        "2024-05-28": "2024-05-29",
        "2024-05-29": "2024-05-30",
    }


def test_calendar_by_settlement_date_range_and_bad_dates(broker: RunningBroker) -> None:
    by_settlement = calendar(broker, start="2024-03-05", end="2024-03-05", date_type="SETTLEMENT").json()
    assert [(d["date"], d["settlement_date"]) for d in by_settlement] == [("2024-03-01", "2024-03-05")]
    assert calendar(broker, start="2024-03-05T00:00:00Z", end="2024-03-05").json()[0]["date"] == "2024-03-05"
    assert calendar(broker, start="2029-12-20").json()[-1]["date"] == "2029-12-31"  # served to 2029
    assert calendar(broker, start="2030-01-02").json() == []
    for params in (
        {"start": "2024-13-01"},
        {"date_type": "CALENDAR"},
        {"start": "2024-03-06", "end": "2024-03-05"},
    ):
        answer = calendar(broker, **params)
        assert answer.status_code == 400 and answer.json()["code"] == 40010000, params


def test_assets_list_and_lookup(broker: RunningBroker, trading: TradingClient) -> None:
    assets = trading.get_all_assets()
    assert len(assets) == 50
    one = trading.get_asset(SYMBOL)
    assert one.symbol == SYMBOL and one.tradable and one.fractionable
    assert trading.get_asset(str(one.id)).symbol == SYMBOL
    status, body = api_error(lambda: trading.get_asset("NOPE"))
    assert status == 404 and body["code"] == 40410000


# --- fills ----------------------------------------------------------------------------------------
def test_market_order_fills_at_the_path_price_and_books_position_cash_and_fill(
    trading: TradingClient, bar_of: Bar
) -> None:
    order = trading.submit_order(market(qty=10))
    assert order.status in (OrderStatus.NEW, OrderStatus.ACCEPTED)
    filled = trading.get_order_by_id(order.id)
    bar = bar_of(SYMBOL, date(2024, 3, 5))
    opened, closed = datetime(2024, 3, 5, 14, 30, tzinfo=UTC), datetime(2024, 3, 5, 21, 0, tzinfo=UTC)
    expected = path_price(bar, fraction_at(OPEN_TUESDAY, opened, closed))
    assert filled.status == OrderStatus.FILLED
    assert Decimal(filled.filled_qty) == 10
    assert Decimal(filled.filled_avg_price) == expected
    position = trading.get_open_position(SYMBOL)
    assert Decimal(position.qty) == 10 and Decimal(position.avg_entry_price) == expected
    account = trading.get_account()
    assert Decimal(account.cash) == (Decimal(100000) - 10 * expected).quantize(Decimal("0.01"))
    assert Decimal(account.equity) == Decimal("100000.00")  # marked at the same price
    fills = trading.get("/account/activities", {"activity_types": "FILL"})
    assert isinstance(fills, list) and len(fills) == 1
    assert fills[0]["order_id"] == str(order.id) and Decimal(fills[0]["price"]) == expected


def test_limit_order_rests_then_fills_at_its_limit_when_the_path_crosses(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    bar = bar_of(SYMBOL, date(2024, 3, 5))
    limit = (bar["low"] + (bar["open"] - bar["low"]) / 4).quantize(Decimal("0.01"))
    assert limit < path_price(bar, Decimal("0.0769")), "the limit must start below the 10:00 price"
    order = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL, qty=5, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=float(limit)
        )
    )
    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW
    set_clock(broker, datetime(2024, 3, 5, 20, 59, tzinfo=UTC))  # the day's low has passed
    filled = trading.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED
    assert Decimal(filled.filled_avg_price) == limit


def test_stop_order_triggers_when_the_price_reaches_the_stop(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    bar = bar_of(SYMBOL, date(2024, 3, 5))
    stop = (bar["high"] - Decimal("0.01")).quantize(Decimal("0.01"))
    order = trading.submit_order(
        StopOrderRequest(
            symbol=SYMBOL, qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, stop_price=float(stop)
        )
    )
    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW
    set_clock(broker, datetime(2024, 3, 5, 21, 0, tzinfo=UTC))
    filled = trading.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED
    assert Decimal(filled.filled_avg_price) == stop


def test_an_order_on_a_closed_market_is_accepted_and_fills_at_the_next_open(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar
) -> None:
    set_clock(broker, datetime(2024, 3, 9, 15, 0, tzinfo=UTC))  # Saturday
    order = trading.submit_order(market(qty=2))
    assert order.status == OrderStatus.ACCEPTED
    set_clock(broker, datetime(2024, 3, 11, 13, 30, tzinfo=UTC))  # Monday's open
    filled = trading.get_order_by_id(order.id)
    assert filled.status == OrderStatus.FILLED
    assert Decimal(filled.filled_avg_price) == bar_of(SYMBOL, date(2024, 3, 11))["open"]


def test_a_day_order_expires_at_the_close(broker: RunningBroker, trading: TradingClient) -> None:
    order = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=0.5
        )
    )
    set_clock(broker, datetime(2024, 3, 5, 21, 0, 1, tzinfo=UTC))
    expired = trading.get_order_by_id(order.id)
    assert expired.status == OrderStatus.EXPIRED
    assert expired.expired_at == datetime(2024, 3, 5, 21, 0, tzinfo=UTC)


def test_a_gtc_order_expires_after_90_days(broker: RunningBroker, trading: TradingClient) -> None:
    order = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=0.5
        )
    )
    assert order.expires_at == datetime(2024, 6, 3, 20, 0, tzinfo=UTC)  # first close 90 days on (EDT)
    set_clock(broker, datetime(2024, 6, 3, 19, 59, tzinfo=UTC))
    assert trading.get_order_by_id(order.id).status == OrderStatus.NEW
    set_clock(broker, datetime(2024, 6, 3, 20, 0, tzinfo=UTC))
    assert trading.get_order_by_id(order.id).status == OrderStatus.EXPIRED


def test_slippage_moves_market_fills_against_the_taker(tmp_path: Any, bar_of: Bar) -> None:
    from tests.support.paper_broker import running_paper_broker
    from trader.paperbroker import PaperBrokerSettings

    settings = PaperBrokerSettings(data_dir=tmp_path / "d", start_at=OPEN_TUESDAY, slippage_bps=Decimal(100))
    with running_paper_broker(settings) as running:
        set_clock(running, OPEN_TUESDAY)
        client = TradingClient(running.key_id, running.secret_key, url_override=running.url)
        buy = client.submit_order(market(qty=1))
        bar = bar_of(SYMBOL, date(2024, 3, 5))
        opened, closed = datetime(2024, 3, 5, 14, 30, tzinfo=UTC), datetime(2024, 3, 5, 21, 0, tzinfo=UTC)
        mid = path_price(bar, fraction_at(OPEN_TUESDAY, opened, closed))
        assert Decimal(client.get_order_by_id(buy.id).filled_avg_price) == (mid * Decimal("1.01")).quantize(
            Decimal("0.0001")
        )


def test_notional_and_fractional_orders_fill_fractional_quantities(trading: TradingClient) -> None:
    notional = trading.submit_order(
        MarketOrderRequest(symbol=SYMBOL, notional=100, side=OrderSide.BUY, time_in_force=TimeInForce.DAY)
    )
    filled = trading.get_order_by_id(notional.id)
    assert filled.status == OrderStatus.FILLED and filled.notional == "100"
    assert filled.qty is None  # one of qty and notional is null, even once filled (reference §3.2)
    quantity = Decimal(filled.filled_qty)
    assert quantity != quantity.to_integral_value()
    assert quantity * Decimal(filled.filled_avg_price) <= 100
    fractional = trading.submit_order(market(symbol="SYN002", qty=0.5))
    assert Decimal(trading.get_order_by_id(fractional.id).filled_qty) == Decimal("0.5")


def test_no_order_time_is_before_its_creation_on_a_frozen_clock(trading: TradingClient) -> None:
    trading.submit_order(market(qty=1))
    trading.submit_order(market(symbol="SYN002", qty=1))
    resting = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL, qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1.0
        )
    )
    trading.cancel_order_by_id(resting.id)
    orders = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert len({o.created_at for o in orders}) == 3  # the frozen clock's stamps were moved apart
    for order in orders:
        later = [order.updated_at, order.filled_at, order.canceled_at]
        assert all(moment >= order.created_at for moment in later if moment is not None), order


def test_last_equity_is_the_equity_at_the_previous_close(start_broker: StartBroker, bar_of: Bar) -> None:
    monday = datetime(2024, 3, 4, 15, 0, tzinfo=UTC)
    with start_broker(monday) as running:
        client = client_of(running)
        bought = client.submit_order(market(qty=10))
        paid = Decimal(client.get_order_by_id(bought.id).filled_avg_price)
        set_clock(running, OPEN_TUESDAY)  # no account read in between
        client.submit_order(market(symbol="SYN000", qty=400))
        worth_at_close = 10 * bar_of(SYMBOL, date(2024, 3, 4))["close"]
        expected = Decimal(100_000) - 10 * paid + worth_at_close
        assert Decimal(client.get_account().last_equity) == expected.quantize(Decimal("0.01"))


def test_last_equity_leaves_out_fills_after_the_close_the_clock_jumped_over(
    start_broker: StartBroker, bar_of: Bar
) -> None:
    symbol = "SYN020"
    limit = (bar_of(symbol, date(2024, 3, 5))["low"] + Decimal("0.01")).quantize(Decimal("0.01"))
    assert limit < bar_of(symbol, date(2024, 3, 4))["low"], "the limit must only fill on Tuesday"
    with start_broker(datetime(2024, 3, 4, 15, 0, tzinfo=UTC)) as running:
        client = client_of(running)
        order = client.submit_order(
            LimitOrderRequest(
                symbol=symbol,
                qty=100,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.GTC,
                limit_price=float(limit),
            )
        )
        set_clock(running, datetime(2024, 3, 5, 20, 59, tzinfo=UTC))  # Tuesday, the low has passed
        assert client.get_order_by_id(order.id).status == OrderStatus.FILLED
        assert client.get_account().last_equity == "100000.00"  # no position at Monday's close


# --- listing, cancel, replace, close --------------------------------------------------------------
def test_list_get_by_client_order_id_cancel_and_cancel_all(trading: TradingClient) -> None:
    far = dict(side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.0)
    one = trading.submit_order(LimitOrderRequest(symbol=SYMBOL, qty=1, client_order_id="mine-1", **far))
    two = trading.submit_order(LimitOrderRequest(symbol="SYN002", qty=1, **far))
    three = trading.submit_order(LimitOrderRequest(symbol="SYN003", qty=1, **far))
    assert trading.get_order_by_client_id("mine-1").id == one.id
    open_ids = {o.id for o in trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))}
    assert open_ids == {one.id, two.id, three.id}
    assert trading.cancel_order_by_id(one.id) is None  # 204, empty body
    assert trading.get_order_by_id(one.id).status == OrderStatus.CANCELED
    results = trading.cancel_orders()
    assert {r.id for r in results} == {two.id, three.id} and {r.status for r in results} == {200}
    assert trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN)) == []
    closed = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=[SYMBOL]))
    assert [o.id for o in closed] == [one.id]
    status, body = api_error(lambda: trading.get_order_by_client_id("nobody"))
    assert status == 404 and body == {"code": 40410000, "message": "order not found for nobody"}


def test_replace_creates_a_new_order_and_ends_the_old_one(trading: TradingClient) -> None:
    old = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL, qty=4, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.0
        )
    )
    new = trading.replace_order_by_id(
        old.id, ReplaceOrderRequest(qty=6, limit_price=1.5, client_order_id="repl-2")
    )
    assert new.id != old.id and new.replaces == old.id
    assert (
        new.client_order_id == "repl-2"
        and Decimal(new.qty) == 6
        and Decimal(new.limit_price) == Decimal("1.5")
    )
    replaced = trading.get_order_by_id(old.id)
    assert replaced.status == OrderStatus.REPLACED and replaced.replaced_by == new.id


def test_closing_a_percentage_of_a_whole_position_sells_whole_shares(trading: TradingClient) -> None:
    trading.submit_order(market(qty=10))
    third = trading.close_position(SYMBOL, ClosePositionRequest(percentage="33"))
    assert third.qty == "3"
    assert trading.get_open_position(SYMBOL).qty == "7"
    trading.submit_order(market(symbol="SYN002", qty=2.5))
    assert trading.close_position("SYN002", ClosePositionRequest(percentage="33")).qty == "0.825"
    status, body = api_error(lambda: trading.close_position(SYMBOL, ClosePositionRequest(percentage="10")))
    assert (status, body["code"]) == (422, 42210000)  # 10 % of 7 shares is no whole share
    assert trading.get_open_position(SYMBOL).qty == "7"


def test_close_a_position_partly_then_all_positions(trading: TradingClient) -> None:
    trading.submit_order(market(qty=10))
    trading.submit_order(market(symbol="SYN002", qty=4))
    half = trading.close_position(SYMBOL, ClosePositionRequest(percentage="50"))
    assert half.side == OrderSide.SELL and Decimal(half.qty) == 5
    assert Decimal(trading.get_open_position(SYMBOL).qty) == 5
    results = trading.close_all_positions(cancel_orders=True)
    assert sorted(r.symbol for r in results) == [SYMBOL, "SYN002"] and {r.status for r in results} == {200}
    assert trading.get_all_positions() == []
    status, body = api_error(lambda: trading.get_open_position(SYMBOL))
    assert status == 404 and body == {"code": 40410000, "message": "position does not exist"}


def test_short_sale_and_cover(trading: TradingClient) -> None:
    trading.submit_order(market(qty=3, side=OrderSide.SELL))
    position = trading.get_open_position(SYMBOL)
    assert Decimal(position.qty) == -3 and position.side.value == "short"
    account = trading.get_account()
    assert Decimal(account.short_market_value) < 0
    trading.submit_order(market(qty=3, side=OrderSide.BUY))
    assert trading.get_all_positions() == []


# --- rejections -----------------------------------------------------------------------------------
def test_duplicate_client_order_id_is_422_40010001_even_after_cancel(trading: TradingClient) -> None:
    first = trading.submit_order(
        LimitOrderRequest(
            symbol=SYMBOL,
            qty=1,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=1.0,
            client_order_id="dup",
        )
    )
    status, body = api_error(lambda: trading.submit_order(market(client_order_id="dup")))
    assert (status, body) == (422, {"code": 40010001, "message": "client_order_id must be unique"})
    trading.cancel_order_by_id(first.id)
    assert api_error(lambda: trading.submit_order(market(client_order_id="dup")))[0] == 422
    assert len(trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))) == 1


def test_insufficient_buying_power_is_403_with_the_amounts(trading: TradingClient) -> None:
    status, body = api_error(lambda: trading.submit_order(market(qty=100_000)))
    assert status == 403
    assert body["code"] == 40310000 and body["message"] == "insufficient buying power"
    assert Decimal(body["cost_basis"]) > Decimal(body["buying_power"])
    assert trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL)) == []


def test_selling_more_than_held_is_403_insufficient_qty(trading: TradingClient) -> None:
    trading.submit_order(market(qty=2))
    status, body = api_error(lambda: trading.submit_order(market(qty=5, side=OrderSide.SELL)))
    assert status == 403 and body["code"] == 40310000
    assert body["message"] == "insufficient qty available for order (requested: 5, available: 2)"
    assert body["symbol"] == SYMBOL and body["existing_qty"] == "2"


def test_an_order_may_name_its_asset_by_id_in_any_case(trading: TradingClient) -> None:
    asset = str(trading.get_asset(SYMBOL).id)
    assert trading.submit_order(market(symbol=asset, qty=1)).symbol == SYMBOL
    assert trading.submit_order(market(symbol=asset.upper(), qty=1)).symbol == SYMBOL
    assert trading.get_open_position(asset.upper()).qty == "2"
    unknown = str(UUID(int=5))
    status, body = api_error(lambda: trading.submit_order(market(symbol=unknown)))
    assert (status, body) == (422, {"code": 40010001, "message": f"could not find us_equity '{unknown}'"})


def test_unknown_and_not_yet_listed_symbols_are_refused(
    broker: RunningBroker, trading: TradingClient
) -> None:
    status, body = api_error(lambda: trading.submit_order(market(symbol="ZZZZNOTREAL")))
    assert (status, body) == (422, {"code": 42210000, "message": 'asset "ZZZZNOTREAL" not found'})
    inactive = [a.symbol for a in trading.get_all_assets() if not a.tradable]
    assert inactive, "the synthetic market lists IPOs after 2024-03-05"
    status, body = api_error(lambda: trading.submit_order(market(symbol=inactive[0])))
    assert status == 422 and body["code"] == 40010001 and "is not active" in body["message"]


def test_activities_by_date_in_either_format_and_by_category(trading: TradingClient) -> None:
    trading.submit_order(market(qty=1))
    for day in ("2024-03-05", "2024-03-05T00:00:00Z"):
        assert len(trading.get("/account/activities", {"date": day})) == 1, day
        assert trading.get("/account/activities", {"date": day.replace("05", "04", 1)}) == [], day
    assert len(trading.get("/account/activities", {"category": "trade_activity"})) == 1
    assert trading.get("/account/activities", {"category": "non_trade_activity"}) == []
    both = {"category": "trade_activity", "activity_types": "FILL"}
    assert api_error(lambda: trading.get("/account/activities", both))[0] == 422
    assert api_error(lambda: trading.get("/account/activities", {"category": "other"}))[0] == 422


def test_cancel_of_a_filled_order_is_422(trading: TradingClient) -> None:
    order = trading.submit_order(market(qty=1))
    status, body = api_error(lambda: trading.cancel_order_by_id(order.id))
    assert (status, body) == (422, {"code": 42210000, "message": 'order is already in "filled" state'})
    status, body = api_error(lambda: trading.cancel_order_by_id(UUID(int=7)))
    assert status == 404 and body["code"] == 40410000


BASE_BODY = {"symbol": SYMBOL, "side": "buy", "type": "market", "time_in_force": "day", "qty": 1}
BAD_BODIES = [
    ({"type": "limit"}, "limit orders require a limit price"),
    ({"type": "stop"}, "stop orders require a stop price"),
    ({"qty": None}, "qty or notional is required"),
    ({"notional": 5}, "qty and notional are mutually exclusive: send one of them"),
    ({"qty": -1}, "invalid qty: must be greater than 0"),
    (
        {"type": "limit", "qty": None, "notional": 50, "limit_price": 1, "time_in_force": "gtc"},
        "notional orders must be market orders",
    ),
    ({"time_in_force": "gtc", "qty": 0.5}, "fractional orders must be DAY orders"),
    ({"side": "sell", "qty": 0.5}, "fractional orders cannot be sold short"),
    (
        {"type": "limit", "limit_price": 290.123},
        "invalid limit_price 290.123. sub-penny increment does not fulfill minimum pricing criteria",
    ),
    ({"limit_price": 5}, "limit_price is not allowed for market orders"),
    ({"extended_hours": True}, "extended hours order must be DAY or GTC limit orders"),
    ({"side": "up"}, "invalid side: 'up' (use one of buy, sell)"),
    (
        {"time_in_force": "forever"},
        "invalid time_in_force: 'forever' (use one of day, gtc, opg, cls, ioc, fok)",
    ),
    ({"client_order_id": "x" * 129}, "client_order_id must be no more than 128 characters"),
]


@pytest.mark.parametrize(("change", "message"), BAD_BODIES)
def test_bad_order_bodies_are_422_naming_the_problem(
    broker: RunningBroker, change: dict[str, Any], message: str
) -> None:
    body = {key: value for key, value in (BASE_BODY | change).items() if value is not None}
    answer = raw_post(broker, body)
    assert answer.status_code == 422
    assert answer.json()["message"] == message
    assert answer.json()["code"] in (42210000, 40010001)
    listed = requests.get(f"{broker.url}/v2/orders?status=all", headers=broker.headers, timeout=10)
    assert listed.json() == []


def test_malformed_json_is_400(broker: RunningBroker) -> None:
    answer = raw_post(broker, "{not json")
    assert answer.status_code == 400
    assert answer.json() == {"code": 40010000, "message": "request body format is invalid"}


def test_opposite_side_market_order_is_a_wash_trade(broker: RunningBroker, trading: TradingClient) -> None:
    trading.submit_order(market(qty=5))
    set_clock(broker, datetime(2024, 3, 9, 15, 0, tzinfo=UTC))  # closed: market orders wait
    trading.submit_order(market(qty=1, side=OrderSide.SELL))
    status, body = api_error(lambda: trading.submit_order(market(qty=1)))
    assert status == 403 and body["message"] == "potential wash trade detected. use complex orders"
    assert body["reject_reason"] == "opposite side market/stop order exists"


# --- persistence ----------------------------------------------------------------------------------
def test_state_survives_a_restart(tmp_path: Any, database_url: str) -> None:
    from tests.support.paper_broker import running_paper_broker
    from trader.paperbroker import PaperBrokerSettings

    settings = PaperBrokerSettings(data_dir=tmp_path / "d", start_at=OPEN_TUESDAY, database_url=database_url)
    with running_paper_broker(settings) as first:
        set_clock(first, OPEN_TUESDAY)
        client = TradingClient(first.key_id, first.secret_key, url_override=first.url)
        filled = client.submit_order(market(qty=7, client_order_id="keep-me"))
        resting = client.submit_order(
            LimitOrderRequest(
                symbol="SYN002", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.0
            )
        )
        before = (client.get_account().cash, client.get_open_position(SYMBOL).qty)
        activities_before = client.get("/account/activities")
    with running_paper_broker(settings) as second:
        set_clock(second, OPEN_TUESDAY + timedelta(minutes=1))
        client = TradingClient(second.key_id, second.secret_key, url_override=second.url)
        assert client.get_order_by_client_id("keep-me").id == filled.id
        assert client.get_order_by_id(resting.id).status == OrderStatus.NEW
        assert (client.get_account().cash, client.get_open_position(SYMBOL).qty) == before
        assert client.get("/account/activities") == activities_before
        status, _ = api_error(lambda: client.submit_order(market(client_order_id="keep-me")))
        assert status == 422


def test_wrong_keys_are_401(broker: RunningBroker) -> None:
    client = TradingClient("PKWRONG", "wrong", url_override=broker.url)
    with pytest.raises(APIError) as caught:
        client.get_account()
    assert caught.value.status_code == 401


def test_orders_page_by_order_id_and_have_distinct_times_on_a_frozen_clock(
    broker: RunningBroker, trading: TradingClient
) -> None:
    far = {"side": "buy", "type": "limit", "time_in_force": "gtc", "qty": 1, "limit_price": 1}
    ids = [raw_post(broker, {"symbol": SYMBOL, **far}).json()["id"] for _ in range(5)]
    orders = trading.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc"))
    assert [str(o.id) for o in orders] == ids
    assert len({o.created_at for o in orders}) == 5  # the clock is frozen, yet every time differs

    def page(**params: str) -> list[str]:
        answer = requests.get(
            f"{broker.url}/v2/orders", params={"status": "all", **params}, headers=broker.headers, timeout=10
        )
        assert answer.status_code == 200, answer.text
        return [order["id"] for order in answer.json()]

    assert page(after_order_id=ids[1], direction="asc") == ids[2:]
    assert page(before_order_id=ids[3]) == ids[2::-1]
    clash = requests.get(
        f"{broker.url}/v2/orders",
        params={"after_order_id": ids[0], "before_order_id": ids[1]},
        headers=broker.headers,
        timeout=10,
    )
    assert clash.status_code == 422 and "mutually exclusive" in clash.json()["message"]
