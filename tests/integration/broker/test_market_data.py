"""Market data through the broker adapter: ``AlpacaBroker.market_data()`` against the paper broker."""

from __future__ import annotations

from datetime import date

import polars as pl
import requests

from tests.integration.broker.conftest import admin
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.data.bars import BAR_SCHEMA
from trader.data.sources.alpaca_source import AlpacaSource


def _served_raw_bars(broker: RunningBroker, symbol: str, start: date, end: date) -> pl.DataFrame:
    """The daily bars the paper broker serves for ``symbol``, read straight off its HTTP answer."""
    answer = requests.get(
        f"{broker.url}/v2/stocks/bars",
        params={
            "symbols": symbol,
            "timeframe": "1Day",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "adjustment": "raw",
            "limit": 10000,
        },
        headers=broker.headers,
        timeout=10,
    )
    answer.raise_for_status()
    body = answer.json()
    assert body["next_page_token"] is None
    rows = body["bars"].get(symbol, [])
    return pl.DataFrame(
        {
            "date": [date.fromisoformat(row["t"][:10]) for row in rows],
            **{name: [float(row[name[0]]) for row in rows] for name in ("open", "high", "low", "close")},
            "volume": [float(row["v"]) for row in rows],
        },
        schema={"date": pl.Date, **{name: pl.Float64 for name in ("open", "high", "low", "close", "volume")}},
    )


def test_daily_bars_through_the_broker_equal_the_raw_bars_it_serves(
    broker: AlpacaBroker, paper_broker: RunningBroker
) -> None:
    source = broker.market_data()
    assert isinstance(source, AlpacaSource) and source.url == paper_broker.url
    assert source.health().ok
    start, end = date(2024, 1, 2), date(2024, 2, 29)
    batch = source.fetch(["SYN004"], start, end)
    assert batch.bars.columns == list(BAR_SCHEMA)
    assert batch.bars["symbol"].unique().to_list() == ["SYN004"]
    served = _served_raw_bars(paper_broker, "SYN004", start, end)
    assert served.height > 30  # two months of sessions
    ours = batch.bars.drop("symbol").sort("date")
    assert ours.equals(served.sort("date"))


def test_a_session_still_trading_on_the_brokers_clock_is_not_ingested(
    broker: AlpacaBroker, paper_broker: RunningBroker
) -> None:
    # The paper broker's clock stands at Tuesday 2024-03-05 10:00 New York: that session is trading,
    # and the broker serves its bar so far. By the system clock it closed long ago.
    source = broker.market_data()
    batch = source.fetch(["SYN004"], date(2024, 2, 26), date(2024, 3, 5))
    assert batch.bars.get_column("date").max() == date(2024, 3, 4)
    assert any("2024-03-04, the last closed session" in note for note in source.last_notes)


def test_a_session_that_closed_on_the_brokers_clock_is_ingested_at_once(
    broker: AlpacaBroker, paper_broker: RunningBroker
) -> None:
    # A paper day leaves the broker's clock a minute after the close; the next day ingests that
    # session. The paper broker's bars are complete at its close (no 15-minute SIP embargo).
    admin(paper_broker, "POST", "clock", {"at": "2024-03-05T21:01:00+00:00", "frozen": True})
    source = broker.market_data()
    batch = source.fetch(["SYN004"], date(2024, 2, 26), date(2024, 3, 5))
    assert batch.bars.get_column("date").max() == date(2024, 3, 5)
    assert source.last_notes == []
