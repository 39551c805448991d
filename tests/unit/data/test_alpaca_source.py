"""AlpacaSource: SDK models to our schemas, and every SDK/network failure as a one-line SourceError.

The end-to-end test against the built-in paper broker comes with issue #4. Here the SDK talks to tiny
local HTTP servers that answer like Alpaca's market-data API (or refuse, stall, or talk nonsense), so
the real SDK code path runs: requests, paging, retries, parsing.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import polars as pl
import pytest
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.models import Bar, BarSet
from alpaca.data.models.corporate_actions import CorporateActionsSet
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from tests.support.services import free_port
from trader.config import Settings
from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources import BarSource, SourceError
from trader.data.sources.alpaca_source import (
    INTRADAY_BAR_SCHEMA,
    RECENT_DATA_DELAY,
    AlpacaSource,
    _TimeoutSession,
    barset_to_frame,
    corporate_actions_to_frame,
    make_actions_client,
    make_data_client,
)

KEY = "PKTESTKEY0123456789"
SECRET = "test-secret-abcdefghijklmnopqrstuvwxyz"


def raw_bar(t: str, o: float, h: float, low: float, c: float, v: float) -> dict[str, Any]:
    return {"t": t, "o": o, "h": h, "l": low, "c": c, "v": v, "n": 10, "vw": (h + low) / 2}


# ------------------------------------------------------------------------------------ conversion


def test_daily_barset_becomes_bar_schema_with_new_york_dates() -> None:
    barset = BarSet(
        {
            "AAPL": [
                raw_bar("2024-01-02T05:00:00Z", 187.15, 188.44, 183.89, 185.64, 82488700),  # EST: 00:00 ET
                raw_bar("2024-07-01T04:00:00Z", 212.09, 217.51, 211.92, 216.75, 60402900),  # EDT: 00:00 ET
            ],
            "MSFT": [raw_bar("2024-01-02T05:00:00Z", 373.86, 375.9, 366.77, 370.87, 25258600)],
        }
    )
    frame = barset_to_frame(barset)
    assert frame.schema == pl.Schema(BAR_SCHEMA)
    assert frame.rows() == [
        ("AAPL", date(2024, 1, 2), 187.15, 188.44, 183.89, 185.64, 82488700.0),
        ("AAPL", date(2024, 7, 1), 212.09, 217.51, 211.92, 216.75, 60402900.0),
        ("MSFT", date(2024, 1, 2), 373.86, 375.9, 366.77, 370.87, 25258600.0),
    ]


def test_bar_models_built_directly_convert_too() -> None:
    barset = BarSet({})
    barset.data["IBM"] = [Bar("IBM", raw_bar("2024-03-15T04:00:00Z", 1, 2, 0.5, 1.5, 7))]
    assert barset_to_frame(barset).rows() == [("IBM", date(2024, 3, 15), 1.0, 2.0, 0.5, 1.5, 7.0)]


def test_intraday_bars_keep_their_timestamp_and_take_the_new_york_date() -> None:
    barset = BarSet(
        {
            "AAPL": [
                raw_bar("2024-01-02T14:30:00Z", 1, 2, 1, 1.5, 100),
                raw_bar("2024-01-03T00:59:00Z", 1, 2, 1, 1.5, 100),  # 19:59 ET on Jan 2 (after hours)
            ]
        }
    )
    frame = barset_to_frame(barset, intraday=True)
    assert frame.schema == pl.Schema(INTRADAY_BAR_SCHEMA)
    assert frame["date"].to_list() == [date(2024, 1, 2), date(2024, 1, 2)]
    assert frame["timestamp"].dt.to_string("%Y-%m-%dT%H:%M").to_list() == [
        "2024-01-02T14:30",
        "2024-01-03T00:59",
    ]


def test_an_empty_barset_gives_an_empty_frame_of_the_schema() -> None:
    assert barset_to_frame(BarSet({})).schema == pl.Schema(BAR_SCHEMA)
    assert barset_to_frame(BarSet({}), intraday=True).schema == pl.Schema(INTRADAY_BAR_SCHEMA)


def split(symbol: str, ex_date: str, new: float, old: float) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"split/{symbol}/{ex_date}")),
        "symbol": symbol,
        "cusip": "000000000",
        "new_rate": new,
        "old_rate": old,
        "process_date": ex_date,
        "ex_date": ex_date,
    }


def dividend(symbol: str, ex_date: str, rate: float) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dividend/{symbol}/{ex_date}")),
        "symbol": symbol,
        "cusip": "000000000",
        "rate": rate,
        "special": False,
        "foreign": False,
        "process_date": ex_date,
        "ex_date": ex_date,
    }


def test_corporate_actions_become_action_schema_rows() -> None:
    actions = CorporateActionsSet(
        {
            "forward_splits": [split("NVDA", "2024-06-10", 10, 1)],
            "reverse_splits": [{**split("XYZ", "2024-05-01", 1, 10), "old_cusip": "1", "new_cusip": "2"}],
            "cash_dividends": [dividend("AAPL", "2024-05-10", 0.25), dividend("NVDA", "2024-06-10", 0.01)],
        }
    )
    frame = corporate_actions_to_frame(actions)
    assert frame.schema == pl.Schema(ACTION_SCHEMA)
    assert frame.rows() == [
        ("AAPL", date(2024, 5, 10), 1.0, 0.25, "alpaca"),
        ("NVDA", date(2024, 6, 10), 10.0, 0.01, "alpaca"),  # split and dividend on one day: one row
        ("XYZ", date(2024, 5, 1), 0.1, 0.0, "alpaca"),
    ]


def test_no_corporate_actions_give_an_empty_frame() -> None:
    assert corporate_actions_to_frame(CorporateActionsSet({})).schema == pl.Schema(ACTION_SCHEMA)


# ------------------------------------------------------------------------------- a fake data host


@dataclass
class FakeAlpaca:
    """Canned answers by path; records each request's path and query."""

    bars: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    actions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 1000
    status: int = 200
    body: str | None = None
    fail_first: int = 0  # answer 429 to this many requests first
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, str]:
        if self.fail_first > 0:
            self.fail_first -= 1
            return 429, json.dumps({"message": "too many requests"})
        if self.body is not None or self.status != 200:
            return self.status, self.body or "{}"
        if path == "/v2/stocks/bars":
            symbols = query["symbols"][0].split(",")
            rows = [(s, bar) for s in symbols for bar in self.bars.get(s, [])]
            offset = int(query.get("page_token", ["0"])[0])
            page = rows[offset : offset + self.page_size]
            grouped: dict[str, list[dict[str, Any]]] = {}
            for symbol, bar in page:
                grouped.setdefault(symbol, []).append(bar)
            more = offset + self.page_size < len(rows)
            token = str(offset + self.page_size) if more else None
            return 200, json.dumps({"bars": grouped, "next_page_token": token})
        if path == "/v1/corporate-actions":
            wanted = set(query["symbols"][0].split(","))
            found = {
                kind: [a for a in items if a["symbol"] in wanted] for kind, items in self.actions.items()
            }
            return 200, json.dumps({"corporate_actions": found, "next_page_token": None})
        return 404, json.dumps({"message": f"no route {path}"})


@pytest.fixture
def fake() -> Iterator[tuple[FakeAlpaca, str]]:
    state = FakeAlpaca()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            state.requests.append((parts.path, query))
            state.headers.append(dict(self.headers))
            status, body = state.answer(parts.path, query)
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def source_for(url: str, *, timeout: float = 2.0, retries: int = 0, **options: Any) -> AlpacaSource:
    return AlpacaSource(
        make_data_client(KEY, SECRET, url, timeout=timeout, retries=retries, retry_wait=0),
        actions_client=make_actions_client(KEY, SECRET, url, timeout=timeout, retries=retries, retry_wait=0),
        secrets=(KEY, SECRET),
        **options,
    )


def test_is_a_bar_source(fake: tuple[FakeAlpaca, str]) -> None:
    source = source_for(fake[1])
    assert isinstance(source, BarSource)
    assert source.name == "alpaca"


def test_fetch_requests_raw_daily_bars_in_chunks_follows_pages_and_gets_actions(
    fake: tuple[FakeAlpaca, str],
) -> None:
    state, url = fake
    state.page_size = 2
    for symbol in ("AAA", "BBB", "CCC"):
        state.bars[symbol] = [
            raw_bar("2024-01-02T05:00:00Z", 1, 2, 1, 1.5, 100),
            raw_bar("2024-01-03T05:00:00Z", 1, 2, 1, 1.6, 100),
        ]
    state.actions = {"forward_splits": [split("AAA", "2024-01-03", 2, 1)]}
    batch = source_for(url, chunk_size=2).fetch(
        ["aaa", "bbb", "ccc", "AAA"], date(2024, 1, 2), date(2024, 1, 3)
    )
    assert batch.bars.height == 6
    assert sorted(batch.bars["symbol"].unique().to_list()) == ["AAA", "BBB", "CCC"]
    assert batch.actions.rows() == [("AAA", date(2024, 1, 3), 2.0, 0.0, "alpaca")]
    bar_requests = [query for path, query in state.requests if path == "/v2/stocks/bars"]
    assert [q["symbols"] for q in bar_requests] == [["AAA,BBB"], ["AAA,BBB"], ["CCC"]]  # chunks, then pages
    first = bar_requests[0]
    assert first["timeframe"] == ["1Day"] and first["adjustment"] == ["raw"]
    assert first["start"] == ["2024-01-02T05:00:00+00:00"]  # midnight New York time
    action_requests = [query for path, query in state.requests if path == "/v1/corporate-actions"]
    assert [q["symbols"] for q in action_requests] == [["AAA,BBB"], ["CCC"]]
    assert action_requests[0]["types"] == ["forward_split,reverse_split,cash_dividend"]
    assert state.headers[0]["APCA-API-KEY-ID"] == KEY


def test_feed_and_minute_timeframe_are_passed_through(fake: tuple[FakeAlpaca, str]) -> None:
    from alpaca.data.enums import DataFeed

    state, url = fake
    state.bars["AAA"] = [raw_bar("2024-01-02T14:30:00Z", 1, 2, 1, 1.5, 100)]
    source = source_for(url, feed=DataFeed.IEX, timeframe=TimeFrame(5, TimeFrameUnit.Minute))
    batch = source.fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 2))
    assert batch.bars.schema == pl.Schema(INTRADAY_BAR_SCHEMA)
    query = state.requests[0][1]
    assert query["feed"] == ["iex"] and query["timeframe"] == ["5Min"]


def test_unsupported_timeframes_are_refused() -> None:
    client = make_data_client(KEY, SECRET, "http://127.0.0.1:1", timeout=1)
    with pytest.raises(ValueError, match="not supported"):
        AlpacaSource(client, timeframe=TimeFrame.Week)


def test_fetch_needs_symbols(fake: tuple[FakeAlpaca, str]) -> None:
    with pytest.raises(SourceError, match="give the symbols"):
        source_for(fake[1]).fetch(None, date(2024, 1, 2), date(2024, 1, 3))


def test_the_sdk_retries_rate_limits_with_our_retry_settings(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    state.bars["AAA"] = [raw_bar("2024-01-02T05:00:00Z", 1, 2, 1, 1.5, 100)]
    state.fail_first = 1
    batch = source_for(url, retries=1).fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 2))
    assert batch.bars.height == 1
    state.fail_first = 1
    with pytest.raises(SourceError, match=r"HTTP 429 .*too many requests"):
        source_for(url, retries=0).fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 2))


def test_http_errors_become_one_line_source_errors_without_secrets(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    # A server that echoes the credentials back in its error body must not get them into our message.
    state.status = 403
    state.body = json.dumps({"code": 40310000, "message": f"key {KEY} / {SECRET}\nis not authorized"})
    with pytest.raises(SourceError) as error:
        source_for(url).fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 3))
    message = str(error.value)
    assert message.startswith("alpaca: bars for 1 symbols (AAA...) failed: HTTP 403 from http://127.0.0.1:")
    assert "is not authorized" in message
    assert KEY not in message and SECRET not in message
    assert "\n" not in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_nonsense_answer_becomes_a_source_error(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    state.body = json.dumps({"bars": {"AAA": [{"t": "not a time", "o": "x"}]}, "next_page_token": None})
    with pytest.raises(SourceError, match="unexpected response"):
        source_for(url).fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 3))
    state.body = "<html>gateway</html>"
    with pytest.raises(SourceError, match=r"alpaca: bars .* failed"):
        source_for(url).fetch(["AAA"], date(2024, 1, 2), date(2024, 1, 3))


def test_a_closed_port_fails_fast_as_source_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    source = source_for(url, retries=3)
    started = time.perf_counter()
    with pytest.raises(SourceError, match=r"ConnectionError talking to .*Connection refused"):
        source.fetch(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))
    assert time.perf_counter() - started < 2
    health = source.health()
    assert not health.ok and "Connection refused" in health.detail
    assert health.latency_ms is not None and health.latency_ms < 2000


def test_a_server_that_never_answers_times_out_instead_of_hanging() -> None:
    # A listening socket nobody accepts from: the TCP handshake completes, no HTTP answer ever comes.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        source = source_for(url, timeout=0.3)
        started = time.perf_counter()
        with pytest.raises(SourceError, match="timed out"):
            source.fetch(["AAPL"], date(2024, 1, 2), date(2024, 1, 3))
        assert time.perf_counter() - started < 3


def test_health_is_ok_when_the_server_answers_even_without_bars(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    health = source_for(url).health()
    assert health.ok and health.source == "alpaca"
    assert health.latency_ms is not None and health.latency_ms > 0
    path, query = state.requests[0]
    assert path == "/v2/stocks/bars" and query["limit"] == ["1"] and query["symbols"] == ["SPY"]


def test_from_settings_uses_the_data_url_timeout_and_retries(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    settings = Settings(
        alpaca_base_url=url,
        alpaca_api_key_id=KEY,
        alpaca_api_secret_key=SECRET,
        broker_timeout_seconds=7,
        broker_max_retries=2,
    )
    source = AlpacaSource.from_settings(settings)
    assert source.url == url
    session = source.client._session
    assert isinstance(session, _TimeoutSession) and session.default_timeout == 7
    assert source.client._retry == 2
    health_session = source.health_client._session
    assert isinstance(health_session, _TimeoutSession) and health_session.default_timeout == 3.0
    assert source.health_client._retry == 0
    assert source.health().ok
    state.status, state.body = 500, json.dumps({"message": "boom"})
    health = source.health()
    assert not health.ok and "HTTP 500" in health.detail and "boom" in health.detail
    assert AlpacaSource.from_settings(settings, include_actions=False).actions_client is None


def test_the_sdk_still_has_the_private_attributes_we_set() -> None:
    # make_data_client replaces these; if an alpaca-py upgrade renames them, timeouts silently vanish.
    client = StockHistoricalDataClient(KEY, SECRET, url_override="http://127.0.0.1:1")
    assert hasattr(client, "_session") and hasattr(client, "_retry") and hasattr(client, "_retry_wait")
    assert hasattr(client, "_base_url")
    hardened = make_data_client(KEY, SECRET, "http://127.0.0.1:1", timeout=1.5, retries=1, retry_wait=0)
    assert isinstance(hardened._session, _TimeoutSession)
    assert (hardened._retry, hardened._retry_wait) == (1, 0)


def test_recent_minutes_are_never_requested(fake: tuple[FakeAlpaca, str]) -> None:
    # Free accounts may not query SIP data younger than 15 minutes; "today" is clamped. (Minute bars:
    # a daily fetch of today may send no request at all, see the closed-session tests below.)
    state, url = fake
    today = datetime.now().date()
    minutes = TimeFrame(1, TimeFrameUnit.Minute)
    source_for(url, timeframe=minutes).fetch(["AAA"], today - timedelta(days=2), today)
    bar_requests = [query for path, query in state.requests if path == "/v2/stocks/bars"]
    assert bar_requests
    for query in bar_requests:
        end = datetime.fromisoformat(query["end"][0])
        assert (datetime.now(end.tzinfo) - end).total_seconds() > 15 * 60


# ----------------------------------------------------------- daily bars: closed sessions only

# Tuesday 2024-03-05: the session runs 14:30-21:00 UTC (09:30-16:00 New York).
DURING_SESSION = datetime(2024, 3, 5, 16, 0, tzinfo=UTC)
MARCH = [
    raw_bar("2024-03-01T05:00:00Z", 100, 101, 99, 100.5, 1000),
    raw_bar("2024-03-04T05:00:00Z", 100.5, 102, 100, 101.5, 1100),
    raw_bar("2024-03-05T05:00:00Z", 101.5, 101.8, 101, 101.2, 300),  # today so far: partial
]


def frozen(now: datetime) -> dict[str, Any]:
    return {"clock": lambda: now}


def bar_ends(state: FakeAlpaca) -> list[datetime]:
    return [datetime.fromisoformat(q["end"][0]) for path, q in state.requests if path == "/v2/stocks/bars"]


def test_daily_bars_stop_at_the_last_closed_session_while_a_session_trades(
    fake: tuple[FakeAlpaca, str],
) -> None:
    state, url = fake
    state.bars["AAA"] = MARCH
    source = source_for(url, **frozen(DURING_SESSION))

    batch = source.fetch(["AAA"], date(2024, 3, 1), date(2024, 3, 5))  # the CLI's default --end: today

    # Asked up to the end of Monday in New York, not up to "now - 16 minutes" on Tuesday.
    assert bar_ends(state) == [datetime(2024, 3, 5, 4, 59, 59, 999999, tzinfo=UTC)]
    # The fake ignores the request's end and sends Tuesday's partial bar anyway: it is dropped.
    assert batch.bars["date"].to_list() == [date(2024, 3, 1), date(2024, 3, 4)]
    assert source.last_notes == [
        "daily bars requested up to 2024-03-04, the last closed session, not 2024-03-05: a session "
        "still trading (or closed less than 16 minutes ago) would give a partial bar",
        "dropped 1 daily bar(s) dated after 2024-03-04, the end of the request "
        "(bars of a session still trading are partial)",
    ]


@pytest.mark.parametrize(
    ("now", "newest"),
    [
        (datetime(2024, 3, 5, 21, 10, tzinfo=UTC), date(2024, 3, 4)),  # closed 10 minutes ago: too soon
        (datetime(2024, 3, 5, 21, 20, tzinfo=UTC), date(2024, 3, 5)),  # closed 20 minutes ago
        (datetime(2024, 3, 9, 12, 0, tzinfo=UTC), date(2024, 3, 5)),  # a Saturday: --end was today
    ],
)
def test_a_session_counts_once_closed_for_longer_than_the_data_delay(
    fake: tuple[FakeAlpaca, str], now: datetime, newest: date
) -> None:
    state, url = fake
    state.bars["AAA"] = MARCH

    batch = source_for(url, **frozen(now)).fetch(["AAA"], date(2024, 3, 1), now.date())

    assert batch.bars["date"].max() == newest
    assert bar_ends(state)[0] <= now - timedelta(minutes=16)


def test_an_end_in_the_past_is_fetched_as_asked_without_notes(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    state.bars["AAA"] = MARCH[:2]
    source = source_for(url, **frozen(DURING_SESSION))

    batch = source.fetch(["AAA"], date(2024, 3, 1), date(2024, 3, 4))

    assert batch.bars.height == 2 and source.last_notes == []
    assert bar_ends(state) == [datetime(2024, 3, 5, 4, 59, 59, 999999, tzinfo=UTC)]


def test_only_todays_open_session_asked_for_gives_no_request_and_says_why(
    fake: tuple[FakeAlpaca, str],
) -> None:
    state, url = fake
    source = source_for(url, **frozen(DURING_SESSION))

    batch = source.fetch(["AAA"], date(2024, 3, 5), date(2024, 3, 5))

    assert batch.bars.is_empty() and bar_ends(state) == []
    assert "requested up to 2024-03-04, the last closed session" in source.last_notes[0]


def test_minute_bars_keep_only_the_data_delay_rule(fake: tuple[FakeAlpaca, str]) -> None:
    state, url = fake
    state.bars["AAA"] = [raw_bar("2024-03-05T15:30:00Z", 1, 2, 1, 1.5, 100)]
    source = source_for(url, timeframe=TimeFrame(1, TimeFrameUnit.Minute), **frozen(DURING_SESSION))

    batch = source.fetch(["AAA"], date(2024, 3, 5), date(2024, 3, 5))

    assert bar_ends(state) == [DURING_SESSION - timedelta(minutes=16)]
    assert batch.bars.height == 1 and source.last_notes == []


def test_a_clock_beyond_the_calendar_is_a_source_error(fake: tuple[FakeAlpaca, str]) -> None:
    source = source_for(fake[1], **frozen(datetime(2050, 1, 3, 15, 0, tzinfo=UTC)))
    with pytest.raises(SourceError, match=r"cannot tell which session closed last.*2035-12-31"):
        source.fetch(["AAA"], date(2049, 12, 1), date(2050, 1, 3))


def test_an_ingest_during_a_session_stores_no_partial_bar(
    fake: tuple[FakeAlpaca, str], tmp_path: Path
) -> None:
    # The audit's case end to end: default --end (today) while the market is open.
    state, url = fake
    state.bars["AAA"] = MARCH
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))

    report = pipeline.ingest(
        source_for(url, **frozen(DURING_SESSION)),
        ["AAA"],
        date(2024, 3, 1),
        date(2024, 3, 5),
        now=DURING_SESSION,
    )

    assert report.newest_bar == date(2024, 3, 4)
    assert pipeline.adjusted.read()["date"].to_list() == [date(2024, 3, 1), date(2024, 3, 4)]


def test_data_from_another_server_than_the_local_broker_runs_on_real_time(
    fake: tuple[FakeAlpaca, str],
) -> None:
    # Local paper trading with market data from elsewhere: no broker clock is asked for (nothing
    # listens at the broker's URL here), and the data server's own delay applies.
    _state, url = fake
    settings = Settings(
        alpaca_base_url="http://127.0.0.1:9",
        alpaca_data_url=url,
        alpaca_api_key_id=KEY,
        alpaca_api_secret_key=SECRET,
    )
    source = AlpacaSource.from_settings(settings)
    assert source.health().ok
    assert source._delay == RECENT_DATA_DELAY
