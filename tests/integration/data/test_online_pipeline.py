"""The online store through the ingest pipeline, on a real Redis: it follows the adjusted store.

The audit's case: a clean bar is corrected into one the quality gate refuses (high < low), so the
adjusted store loses that date; Redis must lose it too, and the features must move back to the newest
bar still clean. A symbol with no clean bar left must have no bars and no features.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.integration.data.test_online_store import key_snapshot
from tests.support.services import RedisKeySpace
from trader.data.features import latest_features
from trader.data.online import OnlineStore
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources.csv_source import CsvSource

pytestmark = pytest.mark.redis

START, END = date(2024, 1, 1), date(2024, 2, 9)
HEADER = "symbol,date,open,high,low,close,volume"
SESSIONS = [
    *(date(2024, 1, day) for day in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16, 17, 18, 19, 22, 23, 24, 25, 26)),
    *(date(2024, 1, day) for day in (29, 30, 31)),
    *(date(2024, 2, day) for day in (1, 2, 5, 6, 7, 8, 9)),
]


def _bars_csv(path: Path, symbol: str, days: list[date], base: int = 100) -> Path:
    rows = [
        f"{symbol},{day.isoformat()},{base + i},{base + i + 1},{base + i - 1},{base + i},1000"
        for i, day in enumerate(days)
    ]
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _corrected_csv(path: Path, symbol: str, day: date) -> Path:
    path.write_text(f"{HEADER}\n{symbol},{day.isoformat()},200,150,100,180,1000\n")  # high < low
    return path


@pytest.fixture
def online(redis_keyspace: RedisKeySpace) -> OnlineStore:
    return OnlineStore(redis_keyspace.client, prefix=redis_keyspace.prefix)


@pytest.fixture
def pipeline(online: OnlineStore, tmp_path: Path) -> DataPipeline:
    return DataPipeline(DataPaths(tmp_path / "data"), online=online)


def _ingest(pipeline: DataPipeline, path: Path, day: int) -> None:
    report = pipeline.ingest(CsvSource(path), None, START, END, now=datetime(2024, 2, day, 23, tzinfo=UTC))
    assert report.online_error is None


def _assert_online_mirrors_adjusted(pipeline: DataPipeline, online: OnlineStore, symbol: str) -> None:
    adjusted = pipeline.adjusted.read([symbol])
    assert online.bars(symbol).equals(adjusted.tail(online.keep_bars))
    expected = latest_features(adjusted).row(0, named=True)
    stored = online.features(symbol)
    assert stored["as_of"] == expected["date"]
    for name, value in expected.items():
        if name not in {"symbol", "date"}:
            assert stored[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_a_quarantined_correction_takes_the_bar_out_of_redis_and_features_move_back(
    pipeline: DataPipeline, online: OnlineStore, tmp_path: Path
) -> None:
    _ingest(pipeline, _bars_csv(tmp_path / "online.csv", "AAA", SESSIONS), 9)
    assert online.features("AAA")["as_of"] == date(2024, 2, 9)

    _ingest(pipeline, _corrected_csv(tmp_path / "online_fix.csv", "AAA", date(2024, 2, 9)), 10)

    assert pipeline.adjusted.read(["AAA"]).get_column("date").max() == date(2024, 2, 8)
    assert online.bars("AAA").get_column("date").max() == date(2024, 2, 8)
    assert online.features("AAA")["as_of"] == date(2024, 2, 8)
    _assert_online_mirrors_adjusted(pipeline, online, "AAA")


def test_a_symbol_whose_only_bar_is_quarantined_has_no_bars_and_no_features(
    pipeline: DataPipeline, online: OnlineStore, redis_keyspace: RedisKeySpace, tmp_path: Path
) -> None:
    _ingest(pipeline, _bars_csv(tmp_path / "aaa.csv", "AAA", SESSIONS), 9)
    _ingest(pipeline, _bars_csv(tmp_path / "bbb.csv", "BBB", [date(2024, 2, 9)]), 9)
    assert online.symbols() == ["AAA", "BBB"] and online.features("BBB")

    _ingest(pipeline, _corrected_csv(tmp_path / "bbb_fix.csv", "BBB", date(2024, 2, 9)), 10)

    assert pipeline.adjusted.read(["BBB"]).is_empty()
    assert online.bars("BBB").is_empty()
    assert online.features("BBB") == {}
    assert online.symbols() == ["AAA"]
    remaining = redis_keyspace.keys()
    assert not [key for key in remaining if key.endswith(":BBB")]
    _assert_online_mirrors_adjusted(pipeline, online, "AAA")


def test_ingesting_the_same_data_again_leaves_redis_unchanged(
    pipeline: DataPipeline, online: OnlineStore, redis_keyspace: RedisKeySpace, tmp_path: Path
) -> None:
    bars = _bars_csv(tmp_path / "online.csv", "AAA", SESSIONS)
    fix = _corrected_csv(tmp_path / "online_fix.csv", "AAA", date(2024, 2, 9))
    _ingest(pipeline, bars, 9)
    before = key_snapshot(redis_keyspace)
    _ingest(pipeline, bars, 9)
    assert key_snapshot(redis_keyspace) == before

    _ingest(pipeline, fix, 10)
    after_fix = key_snapshot(redis_keyspace)
    assert after_fix != before
    _ingest(pipeline, fix, 11)
    assert key_snapshot(redis_keyspace) == after_fix
    assert online.bars("AAA").height == min(len(SESSIONS) - 1, online.keep_bars)
