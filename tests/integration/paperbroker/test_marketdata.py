"""The paper broker's market-data endpoints, driven through the official alpaca-py SDK.

The broker serves a small synthetic market recorded into a data dir (raw bars + corporate actions).
Raw HTTP (``requests``) is used only to look at error statuses and bodies the SDK hides.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema
import polars as pl
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, CorporateActionsType
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.models import BarSet
from alpaca.data.models.corporate_actions import CorporateActionsSet
from alpaca.data.requests import CorporateActionsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from tests.support.openapi import MARKET_DATA_SPEC
from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.data.adjust import adjust
from trader.data.bars import ACTION_SCHEMA
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.raw import RawRecorder
from trader.data.sources.alpaca_source import (
    AlpacaSource,
    barset_to_frame,
    corporate_actions_to_frame,
    make_actions_client,
    make_data_client,
)
from trader.data.sources.csv_source import CsvSource
from trader.data.sources.synthetic import SyntheticConfig, SyntheticData, SyntheticSource
from trader.data.store import ActionStore, AdjustedStore, QuarantineStore
from trader.paperbroker import PaperBrokerSettings

NY = ZoneInfo("America/New_York")
START, END = date(2023, 1, 3), date(2023, 12, 29)
AFTER_END = datetime(2024, 1, 2, 14, 0, tzinfo=UTC)
CONFIG = SyntheticConfig(
    symbols=8,
    start=START,
    end=END,
    seed=5,
    bad_tick_rate=0.004,
    missing_day_rate=0.002,
    split_rate=0.5,
    halt_rate=0.3,
)
#: Actions of a symbol without bars: odd ratios and a split + dividend on one day, for the round trip.
EXTRA_ACTIONS = pl.DataFrame(
    {
        "symbol": ["ZZZ", "ZZZ", "ZZZ", "ZZZ"],
        "ex_date": [date(2023, 2, 1), date(2023, 5, 2), date(2023, 8, 1), date(2023, 11, 1)],
        "split_ratio": [0.1, 1.5, 3.0, 1.0],
        "cash_dividend": [0.0, 0.0, 0.25, 0.1234],
        "source": ["test"] * 4,
    }
)


@pytest.fixture(scope="module")
def market() -> SyntheticData:
    return SyntheticSource(CONFIG).data


@pytest.fixture(scope="module")
def symbols(market: SyntheticData) -> list[str]:
    return sorted(market.batch.bars.get_column("symbol").unique().to_list())


@pytest.fixture(scope="module")
def data_dir(market: SyntheticData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("broker-data")
    paths = DataPaths(root)
    RawRecorder(paths).record(market.batch.bars.with_columns(source=pl.lit("synthetic")), AFTER_END)
    ActionStore(paths).merge(pl.concat([market.batch.actions, EXTRA_ACTIONS]))
    return root


@pytest.fixture(scope="module")
def broker(data_dir: Path) -> Iterator[RunningBroker]:
    with running_paper_broker(PaperBrokerSettings(data_dir=data_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def client(broker: RunningBroker) -> StockHistoricalDataClient:
    return make_data_client(broker.key_id, broker.secret_key, broker.url, timeout=10, retries=0)


@pytest.fixture(scope="module")
def actions_client(broker: RunningBroker) -> CorporateActionsClient:
    return make_actions_client(broker.key_id, broker.secret_key, broker.url, timeout=10, retries=0)


def ny(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), NY)


def bars_request(symbols: list[str], **kwargs: Any) -> StockBarsRequest:
    defaults: dict[str, Any] = {"timeframe": TimeFrame.Day, "start": ny(START), "end": ny(END)}
    return StockBarsRequest(symbol_or_symbols=symbols, **{**defaults, **kwargs})


def get_barset(client: StockHistoricalDataClient, request: StockBarsRequest) -> BarSet:
    found = client.get_stock_bars(request)
    assert isinstance(found, BarSet)
    return found


# ----------------------------------------------------------------------------------------- bars


def test_raw_bars_are_the_recorded_vendor_values(
    client: StockHistoricalDataClient, market: SyntheticData, symbols: list[str]
) -> None:
    frame = barset_to_frame(get_barset(client, bars_request(symbols)))
    assert frame.equals(market.batch.bars.sort("symbol", "date"))


def test_daily_bar_timestamps_are_new_york_midnight_in_utc(broker: RunningBroker, symbols: list[str]) -> None:
    params = {"symbols": symbols[0], "timeframe": "1Day", "start": "2023-01-03", "end": "2023-07-05"}
    body = requests.get(
        f"{broker.url}/v2/stocks/bars", params=params, headers=broker.headers, timeout=10
    ).json()
    stamps = [bar["t"] for bar in body["bars"][symbols[0]]]
    assert stamps[0] == "2023-01-03T05:00:00Z"  # EST
    assert "2023-07-05T04:00:00Z" in stamps  # EDT
    bar = body["bars"][symbols[0]][0]
    assert isinstance(bar["v"], int) and isinstance(bar["n"], int) and isinstance(bar["vw"], float)
    assert body["next_page_token"] is None


def test_paging_with_a_small_limit_gives_the_same_rows_as_one_page(
    client: StockHistoricalDataClient, symbols: list[str]
) -> None:
    one_page = get_barset(client, bars_request(symbols)).data
    params: dict[str, Any] = {
        "symbols": ",".join(symbols),
        "timeframe": "1Day",
        "start": "2023-01-03",
        "end": "2023-12-29",
        "limit": 97,
    }
    collected: dict[str, list[dict[str, Any]]] = {}
    pages = 0
    while True:
        page = client.get("/stocks/bars", params)  # the SDK's HTTP client, one page at a time
        assert isinstance(page, dict)
        pages += 1
        assert sum(len(bars) for bars in page["bars"].values()) <= 97
        for symbol, bars in page["bars"].items():
            collected.setdefault(symbol, []).extend(bars)
        if page["next_page_token"] is None:
            break
        assert page["next_page_token"] != ""
        params["page_token"] = page["next_page_token"]
    paged = BarSet(collected).data
    assert pages > 10
    assert list(paged) == list(one_page)
    assert paged == one_page


def test_sdk_limit_caps_the_total(client: StockHistoricalDataClient, symbols: list[str]) -> None:
    barset = get_barset(client, bars_request(symbols, limit=300))
    assert sum(len(bars) for bars in barset.data.values()) == 300
    assert list(barset.data) == symbols[:2]  # 250 sessions per symbol, symbol by symbol


def test_results_are_sorted_by_symbol_then_time(
    client: StockHistoricalDataClient, symbols: list[str]
) -> None:
    shuffled = [symbols[3], symbols[0], symbols[5]]
    barset = get_barset(client, bars_request(shuffled))
    assert list(barset.data) == sorted(shuffled)
    for bars in barset.data.values():
        stamps = [bar.timestamp for bar in bars]
        assert stamps == sorted(stamps)
    from alpaca.common.enums import Sort

    descending = get_barset(client, bars_request(shuffled, sort=Sort.DESC))
    assert list(descending.data) == sorted(shuffled)
    for symbol, bars in descending.data.items():
        assert [bar.timestamp for bar in bars] == [bar.timestamp for bar in reversed(barset.data[symbol])]


def test_single_symbol_endpoint(client: StockHistoricalDataClient, symbols: list[str]) -> None:
    symbol = symbols[2]
    params = {"timeframe": "1D", "start": "2023-03-01", "end": "2023-03-31"}
    single = client.get(f"/stocks/{symbol.lower()}/bars", params)
    assert isinstance(single, dict)
    assert single["symbol"] == symbol and single["next_page_token"] is None
    multi = get_barset(client, bars_request([symbol], start=ny(date(2023, 3, 1)), end=ny(date(2023, 3, 31))))
    assert BarSet({symbol: single["bars"]}).data == multi.data
    assert len(single["bars"]) > 15


def test_range_before_history_is_empty(broker: RunningBroker, client: StockHistoricalDataClient) -> None:
    barset = get_barset(
        client, bars_request(["SYN000"], start=ny(date(2001, 1, 2)), end=ny(date(2001, 6, 1)))
    )
    assert barset.data == {}
    params = {"symbols": "SYN000,NOPE", "timeframe": "1Day", "start": "2001-01-02", "end": "2001-06-01"}
    answer = requests.get(f"{broker.url}/v2/stocks/bars", params=params, headers=broker.headers, timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"bars": {}, "next_page_token": None}


@pytest.mark.parametrize(
    ("adjustment", "split", "dividend"),
    [(Adjustment.ALL, True, True), (Adjustment.SPLIT, True, False), (Adjustment.DIVIDEND, False, True)],
)
def test_adjusted_bars_equal_our_adjustment(
    client: StockHistoricalDataClient,
    data_dir: Path,
    symbols: list[str],
    adjustment: Adjustment,
    split: bool,
    dividend: bool,
) -> None:
    paths = DataPaths(data_dir)
    actions = ActionStore(paths).read()
    if not split:
        actions = actions.with_columns(split_ratio=pl.lit(1.0))
    if not dividend:
        actions = actions.with_columns(cash_dividend=pl.lit(0.0))
    expected = (
        adjust(RawRecorder(paths).read(), actions)
        .filter(pl.col("date").is_between(date(2023, 6, 1), END))
        .with_columns(pl.col("volume").round(0))
        .drop("factor", "source")
    )
    request = bars_request(symbols, start=ny(date(2023, 6, 1)), adjustment=adjustment)
    served = barset_to_frame(get_barset(client, request))
    assert served.equals(expected)
    assert not served.equals(
        barset_to_frame(get_barset(client, bars_request(symbols, start=ny(date(2023, 6, 1)))))
    )


# -------------------------------------------------------------------------------------- errors


def test_wrong_or_missing_keys_are_401(broker: RunningBroker) -> None:
    wrong = StockHistoricalDataClient("PKWRONG", "wrong-secret", url_override=broker.url)
    with pytest.raises(APIError) as caught:
        wrong.get_stock_bars(bars_request(["SYN000"]))
    assert caught.value.status_code == 401
    url = f"{broker.url}/v2/stocks/bars?symbols=SYN000&timeframe=1Day"
    for headers in ({}, {"APCA-API-KEY-ID": broker.key_id}, {**broker.headers, "APCA-API-SECRET-KEY": "x"}):
        answer = requests.get(url, headers=headers, timeout=10)
        assert answer.status_code == 401
        assert answer.json() == {"message": "unauthorized."}  # market data: no code (reference §4)
    answer = requests.get(f"{broker.url}/v1/corporate-actions", timeout=10)
    assert answer.status_code == 401


def test_unsupported_timeframe_is_422_through_the_sdk(client: StockHistoricalDataClient) -> None:
    with pytest.raises(APIError) as caught:
        client.get_stock_bars(bars_request(["SYN000"], timeframe=TimeFrame(5, TimeFrameUnit.Minute)))
    assert caught.value.status_code == 422
    assert caught.value.code == 42210000
    assert "timeframe" in caught.value.message


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"symbols": "SYN000", "timeframe": "1Hour"}, "timeframe"),
        ({"symbols": "SYN000", "timeframe": "fortnight"}, "timeframe"),
        ({"symbols": "SYN000"}, "timeframe"),
        ({"timeframe": "1Day"}, "symbols"),
        ({"symbols": "SYN000", "timeframe": "1Day", "limit": "0"}, "limit"),
        ({"symbols": "SYN000", "timeframe": "1Day", "limit": "10001"}, "limit"),
        ({"symbols": "SYN000", "timeframe": "1Day", "limit": "ten"}, "limit"),
        ({"symbols": "SYN000", "timeframe": "1Day", "start": "yesterday"}, "start"),
        ({"symbols": "SYN000", "timeframe": "1Day", "sort": "up"}, "sort"),
        ({"symbols": "SYN000", "timeframe": "1Day", "adjustment": "bonus"}, "adjustment"),
        ({"symbols": "SYN000", "timeframe": "1Day", "page_token": "not-a-token"}, "page_token"),
        ({"symbols": "SYN000", "timeframe": "1Day", "start": "2023-02-01", "end": "2023-01-01"}, "end"),
    ],
)
def test_bad_parameters_are_422_in_alpacas_shape(
    broker: RunningBroker, params: dict[str, str], named: str
) -> None:
    answer = requests.get(f"{broker.url}/v2/stocks/bars", params=params, headers=broker.headers, timeout=10)
    assert answer.status_code == 422
    body = answer.json()
    assert set(body) == {"code", "message"}
    assert body["code"] == 42210000
    assert named in body["message"]


def test_corporate_actions_bad_limit_and_unknown_route_are_json(broker: RunningBroker) -> None:
    answer = requests.get(
        f"{broker.url}/v1/corporate-actions", params={"limit": "1001"}, headers=broker.headers, timeout=10
    )
    assert answer.status_code == 422 and "limit" in answer.json()["message"]
    answer = requests.get(f"{broker.url}/v2/nothing", headers=broker.headers, timeout=10)
    assert answer.status_code == 404
    assert answer.json() == {"code": 40410000, "message": "not found"}


# --------------------------------------------------------------------------- corporate actions


def test_corporate_actions_round_trip(
    actions_client: CorporateActionsClient, data_dir: Path, symbols: list[str]
) -> None:
    stored = ActionStore(DataPaths(data_dir)).read()
    assert stored.filter(pl.col("split_ratio") < 1).height >= 1  # the round trip covers reverse splits
    request = CorporateActionsRequest(symbols=[*symbols, "ZZZ"], start=START, end=END)
    found = actions_client.get_corporate_actions(request)
    assert isinstance(found, CorporateActionsSet)
    assert set(found.data) == {"forward_splits", "reverse_splits", "cash_dividends"}
    assert corporate_actions_to_frame(found).drop("source").equals(stored.drop("source"))


def test_corporate_actions_filter_page_and_type(
    broker: RunningBroker, actions_client: CorporateActionsClient, data_dir: Path
) -> None:
    request = CorporateActionsRequest(
        symbols=["ZZZ"], types=[CorporateActionsType.REVERSE_SPLIT], start=START, end=END
    )
    found = actions_client.get_corporate_actions(request)
    assert isinstance(found, CorporateActionsSet)
    assert [(a.symbol, a.new_rate, a.old_rate) for a in found.data["reverse_splits"]] == [("ZZZ", 1.0, 10.0)]
    # process_date filter: only the ZZZ actions processed in May..August
    in_summer = actions_client.get_corporate_actions(
        CorporateActionsRequest(symbols=["ZZZ"], start=date(2023, 5, 1), end=date(2023, 8, 1))
    )
    assert isinstance(in_summer, CorporateActionsSet)
    assert sorted(len(v) for v in in_summer.data.values()) == [1, 2]
    # Paging with limit 2 gives everything exactly once, in process-date order.
    params: dict[str, Any] = {"start": "2023-01-01", "end": "2023-12-31", "limit": 2}
    seen: list[str] = []
    while True:
        page = requests.get(
            f"{broker.url}/v1/corporate-actions", params=params, headers=broker.headers, timeout=10
        ).json()
        items = [item for group in page["corporate_actions"].values() for item in group]
        assert len(items) <= 2
        seen.extend(item["id"] for item in items)
        if page["next_page_token"] is None:
            break
        params["page_token"] = page["next_page_token"]
    stored = ActionStore(DataPaths(data_dir)).read()
    expected = (
        stored.filter(pl.col("split_ratio") != 1).height + stored.filter(pl.col("cash_dividend") != 0).height
    )
    assert len(seen) == len(set(seen)) == expected


# -------------------------------------------------------------------------------- OpenAPI spec


def test_responses_match_the_openapi_schemas(broker: RunningBroker, symbols: list[str]) -> None:
    get = lambda path, params: requests.get(  # noqa: E731
        f"{broker.url}{path}", params=params, headers=broker.headers, timeout=10
    ).json()
    multi = get(
        "/v2/stocks/bars",
        {"symbols": ",".join(symbols), "timeframe": "1Day", "start": "2023-01-01", "limit": 600},
    )
    assert multi["next_page_token"] is not None
    MARKET_DATA_SPEC.validate(multi, "stock_bars_resp")
    last = get(
        "/v2/stocks/bars",
        {"symbols": symbols[0], "timeframe": "1Day", "start": "2023-12-01", "end": "2023-12-31"},
    )
    MARKET_DATA_SPEC.validate(last, "stock_bars_resp")
    single = get(
        f"/v2/stocks/{symbols[0]}/bars", {"timeframe": "1Day", "start": "2023-12-01", "end": "2023-12-31"}
    )
    MARKET_DATA_SPEC.validate(single, "stock_bars_resp_single")
    actions = get("/v1/corporate-actions", {"start": "2023-01-01", "end": "2023-12-31", "limit": 1000})
    assert set(actions["corporate_actions"]) == {"forward_splits", "reverse_splits", "cash_dividends"}
    MARKET_DATA_SPEC.validate(actions, "corporate_actions_resp")
    with pytest.raises(jsonschema.ValidationError):  # the check has teeth
        MARKET_DATA_SPEC.validate({"bars": {"X": [{"t": "x"}]}, "next_page_token": None}, "stock_bars_resp")


# ------------------------------------------------------------------- acceptance: CSV == Alpaca


def test_alpaca_ingest_from_the_broker_equals_csv_ingest(
    broker: RunningBroker, market: SyntheticData, symbols: list[str], tmp_path: Path
) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    market.batch.bars.write_csv(csv_dir / "bars.csv")
    market.batch.actions.drop("source").write_csv(tmp_path / "actions.csv")
    csv_paths, alpaca_paths = DataPaths(tmp_path / "from-csv"), DataPaths(tmp_path / "from-alpaca")

    DataPipeline(csv_paths).ingest(
        CsvSource(csv_dir, tmp_path / "actions.csv"), symbols, START, END, now=AFTER_END
    )
    source = AlpacaSource(
        make_data_client(broker.key_id, broker.secret_key, broker.url, timeout=10, retries=0),
        actions_client=make_actions_client(
            broker.key_id, broker.secret_key, broker.url, timeout=10, retries=0
        ),
    )
    DataPipeline(alpaca_paths).ingest(source, symbols, START, END, now=AFTER_END)

    from_csv = AdjustedStore(csv_paths).read().drop("source")
    from_alpaca = AdjustedStore(alpaca_paths).read().drop("source")
    assert from_csv.height > 1500
    assert from_alpaca.equals(from_csv)

    def quarantined(paths: DataPaths) -> set[tuple[object, ...]]:
        return set(QuarantineStore(paths).read().select("symbol", "date", "rule").iter_rows())

    assert quarantined(csv_paths)  # the market has bad ticks, so the comparison means something
    assert quarantined(alpaca_paths) == quarantined(csv_paths)
    stored = ActionStore(alpaca_paths).read().drop("source")
    assert stored.equals(ActionStore(csv_paths).read().drop("source"))
    assert stored.height == market.batch.actions.height
    assert stored.schema == pl.Schema({k: v for k, v in ACTION_SCHEMA.items() if k != "source"})


# ---------------------------------------------------------------------------- synthetic fallback


def test_an_empty_store_serves_the_synthetic_market(tmp_path: Path) -> None:
    settings = PaperBrokerSettings(data_dir=tmp_path / "empty", synthetic_seed=3)
    expected = SyntheticSource(SyntheticConfig(seed=3)).data.batch
    with running_paper_broker(settings) as running:
        client = make_data_client(running.key_id, running.secret_key, running.url, timeout=30, retries=0)
        request = bars_request(["SYN001"], start=ny(date(2020, 1, 1)), end=ny(date(2020, 3, 31)))
        served = barset_to_frame(get_barset(client, request))
    assert served.height > 50
    assert served.equals(
        expected.bars.filter(
            (pl.col("symbol") == "SYN001") & pl.col("date").is_between(date(2020, 1, 1), date(2020, 3, 31))
        )
    )
