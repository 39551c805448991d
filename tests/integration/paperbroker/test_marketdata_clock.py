"""Market data never shows what comes after the broker's clock.

Alpaca's bars default to ``start`` = the beginning of the current day and ``end`` = now (market-data
spec, ``/v2/stocks/bars``); a day's bar is partial while its session trades, and a corporate action
has not happened before its ex-date. The clock is frozen at Tuesday 2024-03-05 10:00 New York on
the default synthetic market.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
import requests
from alpaca.data.enums import Adjustment
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient

from tests.integration.paperbroker.conftest import OPEN_TUESDAY, set_clock
from tests.integration.paperbroker.test_trading import Bar, fraction_at, market, path_price
from tests.support.paper_broker import RunningBroker
from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
from trader.paperbroker.settings import DEFAULT_SYNTHETIC_SEED

SYMBOL = "SYN001"
TODAY = date(2024, 3, 5)
OPENED, CLOSED = datetime(2024, 3, 5, 14, 30, tzinfo=UTC), datetime(2024, 3, 5, 21, 0, tzinfo=UTC)


def bars(broker: RunningBroker, **params: Any) -> dict[str, Any]:
    answer = requests.get(
        f"{broker.url}/v2/stocks/bars",
        params={"symbols": SYMBOL, "timeframe": "1Day", **params},
        headers=broker.headers,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def barset(broker: RunningBroker, **request: Any) -> BarSet:
    client = StockHistoricalDataClient(broker.key_id, broker.secret_key, url_override=broker.url)
    found = client.get_stock_bars(
        StockBarsRequest(symbol_or_symbols=[SYMBOL], timeframe=TimeFrame.Day, **request)
    )
    assert isinstance(found, BarSet)
    return found


def volume_of(synthetic_bars: pl.DataFrame, symbol: str, day: date) -> float:
    row = synthetic_bars.filter((pl.col("symbol") == symbol) & (pl.col("date") == day))
    return float(row.get_column("volume")[0])


def test_without_start_and_end_only_todays_bar_so_far_is_served(
    broker: RunningBroker, trading: TradingClient, bar_of: Bar, synthetic_bars: pl.DataFrame
) -> None:
    (bar,) = bars(broker)["bars"][SYMBOL]
    raw = bar_of(SYMBOL, TODAY)
    fraction = fraction_at(OPEN_TUESDAY, OPENED, CLOSED)
    now = path_price(raw, fraction)
    assert bar["t"] == "2024-03-05T05:00:00Z"
    assert (bar["o"], bar["c"]) == (float(raw["open"]), float(now))
    assert (bar["h"], bar["l"]) == (float(max(raw["open"], now)), float(min(raw["open"], now)))
    assert bar["v"] == round(volume_of(synthetic_bars, SYMBOL, TODAY) * float(fraction))
    order = trading.submit_order(market(qty=1))  # the close so far is what the broker trades at
    assert Decimal(trading.get_order_by_id(order.id).filled_avg_price) == now


def test_a_range_reaching_into_the_future_stops_at_now(broker: RunningBroker, bar_of: Bar) -> None:
    found = barset(broker, start=datetime(2024, 3, 1), end=datetime(2024, 3, 8)).data[SYMBOL]
    assert [bar.timestamp.date() for bar in found] == [date(2024, 3, 1), date(2024, 3, 4), TODAY]
    assert found[-1].close != float(bar_of(SYMBOL, TODAY)["close"])  # still trading: partial
    assert bars(broker, start="2024-03-06", end="2024-03-08")["bars"] == {}
    assert bars(broker, start="2024-03-06")["bars"] == {}


def test_todays_bar_appears_at_the_open_and_is_whole_after_the_close(
    broker: RunningBroker, bar_of: Bar
) -> None:
    set_clock(broker, datetime(2024, 3, 5, 14, 0, tzinfo=UTC))  # 09:00 New York
    before = bars(broker, start="2024-03-04")["bars"][SYMBOL]
    assert [bar["t"][:10] for bar in before] == ["2024-03-04"]
    assert bars(broker)["bars"] == {}
    set_clock(broker, CLOSED)
    (whole,) = bars(broker)["bars"][SYMBOL]
    raw = bar_of(SYMBOL, TODAY)
    assert [whole[k] for k in "ohlc"] == [float(raw[k]) for k in ("open", "high", "low", "close")]


@pytest.fixture(scope="module")
def later_split() -> tuple[str, date, float]:
    """A split of the synthetic market after the clock's date: symbol, ex-date, ratio."""
    actions = SyntheticSource(SyntheticConfig(seed=DEFAULT_SYNTHETIC_SEED)).data.batch.actions
    splits = actions.filter((pl.col("split_ratio") != 1.0) & (pl.col("ex_date") > TODAY)).sort("ex_date")
    symbol, ex_date, ratio = splits.select("symbol", "ex_date", "split_ratio").row(0)
    return symbol, ex_date, ratio


def test_adjusted_bars_use_only_the_actions_that_happened(
    broker: RunningBroker, later_split: tuple[str, date, float]
) -> None:
    symbol, ex_date, ratio = later_split
    params = {"symbols": symbol, "start": "2024-03-04", "end": "2024-03-04"}
    (raw,) = bars(broker, **params)["bars"][symbol]
    assert bars(broker, **params, adjustment="split")["bars"][symbol] == [raw]  # not split yet
    set_clock(broker, datetime.combine(ex_date, OPEN_TUESDAY.timetz()))
    (adjusted,) = bars(broker, **params, adjustment="split")["bars"][symbol]
    assert adjusted["c"] == pytest.approx(raw["c"] / ratio)


def test_corporate_actions_default_to_the_brokers_today(
    broker: RunningBroker, later_split: tuple[str, date, float]
) -> None:
    symbol, ex_date, _ = later_split
    set_clock(broker, datetime.combine(ex_date, OPEN_TUESDAY.timetz()))
    answer = requests.get(
        f"{broker.url}/v1/corporate-actions", params={"symbols": symbol}, headers=broker.headers, timeout=10
    )
    found = [action for group in answer.json()["corporate_actions"].values() for action in group]
    assert [(a["symbol"], a["ex_date"]) for a in found] == [(symbol, ex_date.isoformat())]


def test_adjusted_history_through_the_sdk_ends_today(broker: RunningBroker) -> None:
    found = barset(broker, start=datetime(2024, 2, 26), adjustment=Adjustment.ALL).data[SYMBOL]
    assert found[-1].timestamp.date() == TODAY
