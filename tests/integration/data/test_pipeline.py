"""The whole ingest pipeline on real files and a real database (SQLite and PostgreSQL).

Known answers come from the synthetic market, which lists every defect it injected: every injected bad
tick must end in quarantine under the rule it breaks, and no other row may.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import Engine, func, select

from tests.support.services import RedisKeySpace
from trader.data.bars import ADJ_BAR_SCHEMA, BarBatch
from trader.data.features import latest_features
from trader.data.freshness import StalenessError
from trader.data.online import OnlineStore
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline, IngestBusyError, exclusive_ingest
from trader.data.sources import SourceError, SourceHealth
from trader.data.sources.csv_source import CsvSource
from trader.data.sources.failover import FailoverSource
from trader.data.sources.synthetic import SyntheticConfig, SyntheticData, SyntheticSource
from trader.data.store import AdjustedStore, QuarantineStore
from trader.store.models import Event, Quarantine, Universe

START, END = date(2021, 1, 4), date(2023, 12, 29)
JANUARY = (date(2024, 1, 1), date(2024, 1, 31))
AFTER_END = datetime(2024, 1, 2, 14, 0, tzinfo=UTC)  # New Year's Day is a holiday: 2023-12-29 is fresh
RULE_OF = {
    "bad_tick_spike": "outlier",
    "bad_tick_ohlc": "ohlc_inconsistent",
    "bad_tick_negative_price": "non_positive_price",
    "bad_tick_negative_volume": "negative_volume",
}
# Enough defects to hit every kind in a small market.
DENSE = {"bad_tick_rate": 0.003, "missing_day_rate": 0.002, "split_rate": 0.3, "halt_rate": 0.3}


@pytest.fixture(scope="module")
def market() -> SyntheticSource:
    return SyntheticSource(SyntheticConfig(symbols=24, start=START, end=END, seed=11, **DENSE))


def key_set(frame: pl.DataFrame, *extra: str) -> set[tuple[object, ...]]:
    return set(frame.select("symbol", "date", *extra).iter_rows())


def count(engine: Engine, model: type[Quarantine] | type[Universe] | type[Event]) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def test_every_injected_bad_tick_is_quarantined_and_no_clean_row_is(
    market: SyntheticSource, migrated_engine: Engine, tmp_path: Path
) -> None:
    data: SyntheticData = market.data
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), engine=migrated_engine)

    report = pipeline.ingest(market, None, START, END, now=AFTER_END)

    injected = data.injected
    bad_ticks = injected.filter(pl.col("kind").is_in(list(RULE_OF)))
    assert set(bad_ticks.get_column("kind").unique()) == set(RULE_OF)  # the test covers every kind
    expected = {(s, d, RULE_OF[k]) for s, d, k in bad_ticks.iter_rows()}
    quarantined = pipeline.quarantine.read()
    assert key_set(quarantined, "rule") == expected

    clean = pipeline.adjusted.read()
    assert clean.height == data.batch.bars.height - len(expected)
    assert not key_set(clean) & {(s, d) for s, d, _ in expected}
    assert clean.select("symbol", "date").is_duplicated().sum() == 0

    # Missing days and halts are the only sessions without any bar; quarantined bars are gaps too.
    gaps = pipeline.gaps.read()
    missing = injected.filter(pl.col("kind").is_in(["missing_day", "halt"]))
    assert key_set(gaps.filter(pl.col("reason") == "no bar for this session")) == key_set(missing)
    assert key_set(gaps.filter(pl.col("reason").str.starts_with("bar quarantined"))) == {
        (s, d) for s, d, _ in expected
    }

    assert report.rows_received == report.raw_new_rows == data.batch.bars.height
    assert report.clean_rows == clean.height
    assert report.quarantined_by_rule == dict(
        sorted(bad_ticks.with_columns(pl.col("kind").replace(RULE_OF)).group_by("kind").len().iter_rows())
    )
    assert report.fresh is True
    assert count(migrated_engine, Quarantine) == len(expected)
    assert count(migrated_engine, Universe) == data.batch.listings.height
    with migrated_engine.connect() as connection:
        event = connection.execute(select(Event).where(Event.kind == "data_ingested")).one()
    assert event.correlation_id == report.ingest_id
    assert event.payload["clean_rows"] == clean.height


def test_re_ingesting_the_same_data_changes_nothing(
    market: SyntheticSource, migrated_engine: Engine, tmp_path: Path
) -> None:
    paths = DataPaths(tmp_path / "data")
    pipeline = DataPipeline(paths, engine=migrated_engine)
    first = pipeline.ingest(market, None, START, END, now=AFTER_END)
    files_before = {p: p.stat().st_mtime_ns for p in sorted(paths.root.rglob("*.parquet"))}
    adjusted_before = pipeline.adjusted.read()

    again = pipeline.ingest(market, None, START, END, now=AFTER_END)

    assert again.raw_new_rows == 0 and again.raw_skipped_rows == first.rows_received
    assert {p: p.stat().st_mtime_ns for p in sorted(paths.root.rglob("*.parquet"))} == files_before
    assert pipeline.adjusted.read().equals(adjusted_before)
    assert pipeline.quarantine.read().height == first.quarantined_rows
    assert count(migrated_engine, Quarantine) == first.quarantined_rows
    assert count(migrated_engine, Event) == 2  # each run is journaled, even when it changed nothing


def _acme_halving(folder: Path) -> tuple[Path, pl.Series, date]:
    """ACME's March 2024 bars in a CSV: 100 until 2024-03-15, 50 from then on (a 2:1 split's look)."""
    sessions = pl.date_range(date(2024, 3, 1), date(2024, 3, 29), eager=True).filter(
        pl.Series([d.weekday() < 5 for d in pl.date_range(date(2024, 3, 1), date(2024, 3, 29), eager=True)])
    )
    sessions = sessions.filter(sessions != date(2024, 3, 29))  # Good Friday
    split_day = date(2024, 3, 15)
    raw_close = [100.0 if d < split_day else 50.0 for d in sessions]
    bars_csv = folder / "bars.csv"
    pl.DataFrame(
        {
            "Ticker": "ACME",
            "Date": sessions,
            "Open": raw_close,
            "High": [c * 1.01 for c in raw_close],
            "Low": [c * 0.99 for c in raw_close],
            "Close": raw_close,
            "Volume": [1000.0 if d < split_day else 2000.0 for d in sessions],
        }
    ).write_csv(bars_csv)
    return bars_csv, sessions, split_day


def test_a_late_split_re_adjusts_the_whole_history(sqlite_url: str, tmp_path: Path) -> None:
    """Before the split is known the halving is an outlier; once it arrives history is re-adjusted."""
    from trader.store.db import make_engine
    from trader.store.migrate import upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    bars_csv, sessions, split_day = _acme_halving(tmp_path)
    actions_csv = tmp_path / "actions.csv"
    actions_csv.write_text("symbol,ex_date,split_ratio,cash_dividend\nACME,2024-03-15,2,0\n")
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), engine=engine)

    before = pipeline.ingest(CsvSource(bars_csv), None, sessions[0], sessions[-1])
    assert before.quarantined_by_rule == {"outlier": 1}
    assert split_day not in pipeline.adjusted.read().get_column("date").to_list()

    after = pipeline.ingest(CsvSource(bars_csv, actions_path=actions_csv), None, sessions[0], sessions[-1])
    adjusted = pipeline.adjusted.read()
    assert after.raw_new_rows == 0  # the bars were already recorded; only the action is new
    assert adjusted.height == len(sessions)  # the split day is clean now
    assert adjusted.get_column("close").to_list() == [50.0] * len(sessions)
    assert adjusted.get_column("volume").to_list() == [2000.0] * len(sessions)
    assert adjusted.filter(pl.col("date") < split_day).get_column("factor").unique().to_list() == [0.5]
    assert adjusted.filter(pl.col("date") >= split_day).get_column("factor").unique().to_list() == [1.0]
    assert pipeline.universe.read().row(0)[:3] == ("ACME", sessions[0], None)  # derived listing
    engine.dispose()


def test_csv_export_of_the_market_ends_in_the_same_adjusted_store(
    market: SyntheticSource, tmp_path: Path
) -> None:
    batch = market.data.batch
    bars_csv, actions_csv = tmp_path / "bars.csv.gz", tmp_path / "actions.csv"
    with_gzip = batch.bars.write_csv().encode()
    import gzip

    bars_csv.write_bytes(gzip.compress(with_gzip))
    batch.actions.drop("source").write_csv(actions_csv)
    from_synthetic = DataPipeline(DataPaths(tmp_path / "a"))
    from_csv = DataPipeline(DataPaths(tmp_path / "b"))

    from_synthetic.ingest(market, None, START, END, now=AFTER_END)
    from_csv.ingest(CsvSource(bars_csv, actions_path=actions_csv), None, START, END, now=AFTER_END)

    columns = [c for c in ADJ_BAR_SCHEMA if c != "source"]
    a, b = from_synthetic.adjusted.read().select(columns), from_csv.adjusted.read().select(columns)
    assert a.height == b.height > 0
    assert a.equals(b)
    assert from_csv.adjusted.read().get_column("source").unique().to_list() == ["csv"]
    drop = ["source", "payload"]
    assert from_synthetic.quarantine.read().drop(drop).equals(from_csv.quarantine.read().drop(drop))


def test_require_fresh_refuses_a_stale_batch_before_anything_downstream(
    market: SyntheticSource, tmp_path: Path
) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    later = datetime(2024, 1, 10, 22, 0, tzinfo=UTC)

    with pytest.raises(StalenessError) as raised:
        pipeline.ingest(market, None, START, END, now=later, require_fresh=True)

    assert raised.value.latest == END and raised.value.expected == date(2024, 1, 10)
    assert raised.value.sessions_behind == 7  # Jan 2, 3, 4, 5, 8, 9, 10
    assert pipeline.raw.read().height == market.data.batch.bars.height  # raw keeps what arrived
    assert AdjustedStore(pipeline.paths).files() == []
    assert QuarantineStore(pipeline.paths).files() == []
    # The adjusted files encoded while the gaps were looked for are gone too.
    assert not [p for p in pipeline.paths.root.rglob("*") if p.name.endswith(".tmp")]
    report = pipeline.ingest(market, None, START, END, now=later)  # without the flag: reported only
    assert report.fresh is False and "7 session(s) behind" in report.freshness


class _Down:
    name = "alpaca"

    def health(self) -> SourceHealth:
        return SourceHealth(source="alpaca", ok=False, detail="connection refused")

    def fetch(self, symbols: object, start: date, end: date) -> BarBatch:
        raise SourceError("connection refused")


def test_failover_records_which_source_supplied_each_row(market: SyntheticSource, tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    report = pipeline.ingest(FailoverSource([_Down(), market]), ["SYN000", "SYN001"], START, END)

    assert report.source == "synthetic"
    assert pipeline.raw.read().get_column("source").unique().to_list() == ["synthetic"]
    assert pipeline.adjusted.symbols() == ["SYN000", "SYN001"]


def test_nothing_from_the_source_is_an_error(market: SyntheticSource, tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    with pytest.raises(SourceError, match="returned no bars for NOPE"):
        pipeline.ingest(market, ["NOPE"], START, END)
    assert pipeline.raw.files() == []


def test_a_second_ingest_into_the_same_data_dir_is_refused_while_one_runs(
    market: SyntheticSource, tmp_path: Path
) -> None:
    paths = DataPaths(tmp_path / "data")
    pipeline = DataPipeline(paths)
    # Another pipeline on the same DATA_DIR, as another process would be, holds the lock.
    with exclusive_ingest(DataPaths(tmp_path / "data")):
        with pytest.raises(IngestBusyError, match="another ingest is writing to"):
            pipeline.ingest(market, ["SYN000"], START, END, now=AFTER_END)
        assert pipeline.raw.files() == []  # refused before anything was read or written
        # A different DATA_DIR is not held up.
        assert DataPipeline(DataPaths(tmp_path / "other")).ingest(market, ["SYN000"], START, END).clean_rows
    assert pipeline.ingest(market, ["SYN000"], START, END, now=AFTER_END).clean_rows  # released


@pytest.mark.redis
def test_online_store_gets_the_same_features_as_the_offline_path(
    market: SyntheticSource, redis_keyspace: RedisKeySpace, tmp_path: Path
) -> None:
    online = OnlineStore(redis_keyspace.client, prefix=redis_keyspace.prefix)
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), online=online)
    symbols = ["SYN002", "SYN003", "SYN004"]
    pipeline.ingest(market, symbols, START, END)

    assert sorted(online.symbols()) == symbols
    offline = latest_features(pipeline.adjusted.read(symbols))
    for row in offline.iter_rows(named=True):
        stored = online.features(row["symbol"])
        for name, value in row.items():
            if name in {"symbol", "date"}:
                continue
            assert stored[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text("symbol,date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def test_a_row_without_symbol_is_quarantined_on_a_later_ingest_too(tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    pipeline.ingest(CsvSource(_csv(tmp_path / "a.csv", ["ABC,2024-01-04,10,11,9,10,100"])), None, *JANUARY)

    later = _csv(tmp_path / "b.csv", ["ABC,2024-01-05,10,11,9,10,100", ",2024-01-05,10,11,9,10,100"])
    report = pipeline.ingest(CsvSource(later), None, *JANUARY)

    assert report.quarantined_by_rule == {"missing_value": 1}
    assert pipeline.quarantine.read().filter(pl.col("symbol").is_null()).height == 1


def test_the_newest_delivery_wins_even_when_a_source_repeats_itself(
    market: SyntheticSource, tmp_path: Path
) -> None:
    """alpaca on day 1, csv fallback with other values on day 2, alpaca again on day 3: alpaca's bar."""
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    primary = _csv(tmp_path / "p.csv", ["ABC,2024-01-04,10,11,9,10,100"])
    fallback = _csv(tmp_path / "f.csv", ["ABC,2024-01-04,10,11,9,10.5,100"])

    class Named(CsvSource):
        def __init__(self, path: Path, name: str) -> None:
            super().__init__(path)
            self._name = name

        @property
        def name(self) -> str:
            return self._name

    def close_after(source: CsvSource, day: int) -> float:
        moment = datetime(2024, 1, day, 23, tzinfo=UTC)
        pipeline.ingest(source, None, date(2024, 1, 4), date(2024, 1, 4), now=moment)
        return float(pipeline.adjusted.read().get_column("close").item())

    assert close_after(Named(primary, "alpaca"), 4) == 10.0
    assert close_after(Named(fallback, "csv"), 5) == 10.5
    assert close_after(Named(primary, "alpaca"), 6) == 10.0
    assert pipeline.raw.read(latest_only=False).height == 3


def test_an_impossible_corporate_action_is_refused_and_not_stored(tmp_path: Path) -> None:
    from trader.data.pipeline import DataError

    bars = _csv(tmp_path / "b.csv", ["ABC,2024-01-02,10,11,9,10,100", "ABC,2024-01-03,10,11,9,10,100"])
    actions = tmp_path / "a.csv"
    actions.write_text("symbol,ex_date,split_ratio,cash_dividend\nABC,2024-01-03,1,12\n")  # > close
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))

    with pytest.raises(DataError, match="corporate actions refused"):
        pipeline.ingest(CsvSource(bars, actions_path=actions), None, *JANUARY)

    assert pipeline.actions.read().is_empty()
    report = pipeline.ingest(CsvSource(bars), None, *JANUARY)  # the symbol is not blocked
    assert report.clean_rows == 2


def test_a_symbol_whose_dates_are_all_unreadable_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _csv(folder / "abc.csv", ["ABC,2024-01-02,10,11,9,10,100"])
    _csv(folder / "xyz.csv", ["XYZ,01/02/2024,10,11,9,10,100"])
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))

    report = pipeline.ingest(CsvSource(folder), None, *JANUARY)

    assert report.quarantined_by_rule == {"missing_value": 1}
    assert pipeline.universe.read().get_column("symbol").to_list() == ["ABC"]


def test_a_redis_outage_is_a_warning_after_the_stores_are_written(
    market: SyntheticSource, tmp_path: Path
) -> None:
    import redis

    dead = OnlineStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2))
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), online=dead)

    report = pipeline.ingest(market, ["SYN001"], START, END)

    assert report.online_error is not None and "ConnectionError" in report.online_error
    assert pipeline.adjusted.symbols() == ["SYN001"]


def test_an_action_for_a_symbol_not_in_the_batch_re_adjusts_its_history(tmp_path: Path) -> None:
    from trader.data.pipeline import DataError

    acme, sessions, split_day = _acme_halving(tmp_path)
    other = _csv(tmp_path / "other.csv", ["OTHR,2024-03-28,10,11,9,10,100"])
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    pipeline.ingest(CsvSource(acme), None, sessions[0], sessions[-1])
    assert split_day not in pipeline.adjusted.read(["ACME"]).get_column("date").to_list()  # an outlier

    # An impossible dividend for ACME arrives with OTHR's bars: the ingest is refused, nothing stored,
    # instead of storing the action and refusing every later ACME ingest.
    bad = tmp_path / "bad.csv"
    bad.write_text("symbol,ex_date,split_ratio,cash_dividend\nACME,2024-03-20,1,500\n")
    with pytest.raises(DataError, match="corporate actions refused"):
        pipeline.ingest(CsvSource(other, actions_path=bad), None, sessions[0], sessions[-1])
    assert pipeline.actions.read().is_empty() and pipeline.adjusted.read(["OTHR"]).is_empty()

    # The split arrives with OTHR's bars: ACME's recorded history is re-adjusted and re-checked.
    split = tmp_path / "split.csv"
    split.write_text("symbol,ex_date,split_ratio,cash_dividend\nACME,2024-03-15,2,0\n")
    report = pipeline.ingest(CsvSource(other, actions_path=split), None, sessions[0], sessions[-1])
    acme_adjusted = pipeline.adjusted.read(["ACME"])
    assert report.symbols == 2 and report.quarantined_rows == 0
    assert acme_adjusted.height == len(sessions)  # the split day is clean now
    assert acme_adjusted.get_column("close").to_list() == [50.0] * len(sessions)
    assert acme_adjusted.filter(pl.col("date") < split_day).get_column("factor").unique().to_list() == [0.5]
    # Only OTHR was judged for freshness: ACME was re-adjusted, not delivered.
    assert report.stale_symbols in ([], ["OTHR"])

    # The same actions again change nothing: ACME is not re-adjusted on every ingest.
    again = pipeline.ingest(CsvSource(other, actions_path=split), None, sessions[0], sessions[-1])
    assert again.symbols == 1


@pytest.mark.parametrize("tick", ["1.5", "0.9"])
def test_a_bad_tick_before_a_dividend_is_quarantined_and_does_not_set_the_factor(
    tmp_path: Path, tick: str
) -> None:
    # 100 for three days, a tick, then a $1 dividend ex 2024-01-08 at 99: the tick is quarantined as
    # an outlier and the history is adjusted by 1 - 1/100 (a 1.5 tick gave 0.33; a 0.9 tick, below
    # the dividend, refused the whole ingest).
    rows = [f"AAA,2024-01-0{d},100,101,99,100,1000" for d in (2, 3, 4)]
    rows += [f"AAA,2024-01-05,{tick},{tick},{tick},{tick},1000", "AAA,2024-01-08,99,100,98,99,1000"]
    bars = _csv(tmp_path / "b.csv", [*rows, "AAA,2024-01-09,99,100,98,99,1000"])
    actions = tmp_path / "a.csv"
    actions.write_text("symbol,ex_date,split_ratio,cash_dividend\nAAA,2024-01-08,,1\n")
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))

    report = pipeline.ingest(CsvSource(bars, actions_path=actions), None, *JANUARY)

    assert report.quarantined_by_rule == {"outlier": 1}
    adjusted = pipeline.adjusted.read(["AAA"])
    assert date(2024, 1, 5) not in adjusted.get_column("date").to_list()
    before = adjusted.filter(pl.col("date") < date(2024, 1, 8))
    assert before.get_column("factor").to_list() == pytest.approx([0.99] * 3, rel=1e-12)
    assert before.get_column("close").to_list() == pytest.approx([99.0] * 3, rel=1e-12)
