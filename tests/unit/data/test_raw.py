"""The raw recorder: append-only monthly Parquet, idempotent re-ingest, corrections kept as history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader.data.bars import RAW_BAR_SCHEMA
from trader.data.paths import DataPaths
from trader.data.raw import RECORD_SCHEMA, RawRecorder

T1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
T3 = T1 + timedelta(hours=2)


def make_bars(
    symbols: Sequence[str] = ("AAA", "BBB"),
    start: date = date(2024, 1, 29),
    days: int = 10,
    source: str = "csv",
) -> pl.DataFrame:
    """Weekday bars of ``symbols`` from ``start`` (crossing a month end with the defaults)."""
    dates = [d for d in (start + timedelta(days=i) for i in range(days * 2)) if d.weekday() < 5][:days]
    rows = [
        {
            "symbol": s,
            "date": d,
            "open": 10.0 + i + k,
            "high": 11.0 + i + k,
            "low": 9.0 + i + k,
            "close": 10.5 + i + k,
            "volume": 1000.0 * (i + 1),
            "source": source,
        }
        for k, s in enumerate(symbols)
        for i, d in enumerate(dates)
    ]
    return pl.DataFrame(rows, schema=RECORD_SCHEMA)


def snapshot(root: Path) -> dict[Path, tuple[int, bytes]]:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def recorder(tmp_path: Path) -> RawRecorder:
    return RawRecorder(DataPaths(tmp_path / "data"))


def test_empty_store_reads_an_empty_typed_frame(recorder: RawRecorder) -> None:
    frame = recorder.read()
    assert frame.is_empty()
    assert frame.schema == pl.Schema(RAW_BAR_SCHEMA)
    assert recorder.read(["AAA"], date(2024, 1, 1), date(2024, 2, 1), latest_only=False).is_empty()


def test_record_then_read_round_trips_every_value(recorder: RawRecorder) -> None:
    bars = make_bars()
    result = recorder.record(bars, T1)

    assert (result.new_rows, result.skipped_rows) == (bars.height, 0)
    stored = recorder.read()
    assert stored.schema == pl.Schema(RAW_BAR_SCHEMA)
    expected = bars.with_columns(ingested_at=pl.lit(T1, RAW_BAR_SCHEMA["ingested_at"])).sort("symbol", "date")
    assert_frame_equal(stored, expected)


def test_an_empty_batch_writes_nothing(recorder: RawRecorder) -> None:
    result = recorder.record(make_bars().head(0), T1)
    assert (result.new_rows, result.skipped_rows, result.files) == (0, 0, [])
    assert not recorder.root.exists()


def test_files_are_one_per_month_named_by_the_ingest_id(recorder: RawRecorder) -> None:
    result = recorder.record(make_bars(days=25), T1)  # 2024-01-29 .. 2024-03-01

    assert result.ingest_id is not None and result.ingest_id.startswith("20240501T120000000000Z-")
    folders = sorted(p.parent.name for p in result.files)
    assert folders == ["month=2024-01", "month=2024-02", "month=2024-03"]
    assert {p.name for p in result.files} == {f"{result.ingest_id}.parquet"}
    for path in result.files:
        months = pl.read_parquet(path).get_column("date").dt.strftime("month=%Y-%m").unique().to_list()
        assert months == [path.parent.name]
    assert sorted(recorder.files()) == sorted(result.files)


def test_re_recording_the_same_rows_is_idempotent(recorder: RawRecorder) -> None:
    bars = make_bars()
    recorder.record(bars, T1)
    before = snapshot(recorder.root)

    again = recorder.record(bars.sample(fraction=1.0, shuffle=True, seed=1), T2)

    assert (again.new_rows, again.skipped_rows, again.files, again.ingest_id) == (0, bars.height, [], None)
    assert snapshot(recorder.root) == before
    assert recorder.read(latest_only=False).height == bars.height


def test_a_correction_is_appended_and_latest_only_returns_it(recorder: RawRecorder) -> None:
    bars = make_bars()
    recorder.record(bars, T1)
    day = bars.get_column("date")[3]
    corrected = bars.with_columns(
        close=pl.when((pl.col("symbol") == "AAA") & (pl.col("date") == day)).then(99.0).otherwise("close")
    )

    result = recorder.record(corrected, T2)

    assert (result.new_rows, result.skipped_rows) == (1, bars.height - 1)
    assert [p.parent.name for p in result.files] == ["month=2024-02"]  # only the corrected row's month
    latest = recorder.read(["AAA"], start=day, end=day)
    assert latest.select("close", "ingested_at").rows() == [(99.0, T2)]
    original = bars.filter((pl.col("symbol") == "AAA") & (pl.col("date") == day)).item(0, "close")
    history = recorder.read(["AAA"], start=day, end=day, latest_only=False)
    assert history.select("close", "ingested_at").rows() == [(original, T1), (99.0, T2)]
    assert recorder.read().height == bars.height


def test_a_source_returning_to_an_old_value_is_recorded_again(recorder: RawRecorder) -> None:
    bars = make_bars(["AAA"], days=3)
    changed = bars.with_columns(volume=pl.col("volume") + 1)
    recorder.record(bars, T1)
    recorder.record(changed, T2)

    back = recorder.record(bars, T3)

    assert back.new_rows == bars.height
    assert_frame_equal(recorder.read().drop("ingested_at"), bars)
    assert recorder.read().get_column("ingested_at").unique().to_list() == [T3]


def test_recorded_files_are_never_modified(recorder: RawRecorder) -> None:
    bars = make_bars(days=25)
    recorder.record(bars, T1)
    first = snapshot(recorder.root)

    recorder.record(bars.with_columns(close=pl.col("close") * 2), T2)  # every row corrected
    recorder.record(make_bars(["CCC"], days=25), T3)

    after = snapshot(recorder.root)
    assert {p: after[p] for p in first} == first
    assert len(after) == 3 * len(first)
    assert not [p for p in recorder.root.rglob("*") if p.name.endswith(".tmp")]


def test_only_the_months_a_batch_touches_are_read(recorder: RawRecorder) -> None:
    # A file in another month that cannot be read proves the recorder never opened it.
    other = recorder.root / "month=2023-06"
    other.mkdir(parents=True)
    (other / "broken.parquet").write_bytes(b"not parquet")

    result = recorder.record(make_bars(), T1)
    again = recorder.record(make_bars(), T2)

    assert result.new_rows == make_bars().height
    assert again.skipped_rows == make_bars().height


def test_read_filters_symbols_and_dates(recorder: RawRecorder) -> None:
    bars = make_bars(["AAA", "BBB", "CCC"], days=25)
    recorder.record(bars, T1)

    frame = recorder.read(["BBB", "CCC"], start=date(2024, 2, 5), end=date(2024, 2, 9))

    assert frame.get_column("symbol").unique().sort().to_list() == ["BBB", "CCC"]
    assert frame.get_column("date").min() == date(2024, 2, 5)
    assert frame.get_column("date").max() == date(2024, 2, 9)
    assert frame.height == 2 * 5


def test_aware_times_are_stored_in_utc_and_naive_times_refused(recorder: RawRecorder) -> None:
    eastern = T1.astimezone(timezone(timedelta(hours=-4)))
    recorder.record(make_bars(["AAA"], days=1), eastern)
    assert recorder.read().get_column("ingested_at").to_list() == [T1]

    with pytest.raises(ValueError, match="naive"):
        recorder.record(make_bars(["BBB"], days=1), datetime(2024, 5, 1, 12))


def test_missing_columns_are_refused(recorder: RawRecorder) -> None:
    with pytest.raises(ValueError, match="source"):
        recorder.record(make_bars().drop("source"), T1)


def test_rows_a_source_got_wrong_are_kept_unmodified(recorder: RawRecorder) -> None:
    # Raw keeps what arrived, even rows the gate will refuse: a NaN volume, an undated row, and two
    # conflicting rows for one key in one batch (both kept, so the gate sees the duplicate).
    bars = make_bars(["AAA"], days=2)
    bad = pl.concat(
        [
            bars,
            bars.head(1).with_columns(close=pl.lit(50.0)),
            bars.head(1).with_columns(date=pl.lit(None, pl.Date), volume=pl.lit(float("nan"))),
        ]
    )
    first = recorder.record(bad, T1)
    again = recorder.record(bad, T2)

    assert first.new_rows == 4
    assert (again.new_rows, again.skipped_rows) == (0, 4)
    assert any(p.parent.name == "month=__HIVE_DEFAULT_PARTITION__" for p in first.files)
    everything = recorder.read()
    assert everything.height == 4
    assert everything.filter(pl.col("date") == bars.item(0, "date")).get_column("close").sort().to_list() == [
        bars.item(0, "close"),
        50.0,
    ]
    assert recorder.read(start=date(2000, 1, 1)).height == 3  # a date bound excludes undated rows


def test_several_sources_are_separate_rows(recorder: RawRecorder) -> None:
    recorder.record(make_bars(["AAA"], days=2, source="alpaca"), T1)
    result = recorder.record(make_bars(["AAA"], days=2, source="csv"), T2)
    assert result.new_rows == 2
    assert recorder.read().get_column("source").to_list() == ["alpaca", "csv", "alpaca", "csv"]


def test_a_failed_publish_leaves_no_staged_or_partial_file(
    recorder: RawRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trader.data.raw as raw_module

    publish_new = raw_module.publish_new

    def disk_full_in_february(tmp: Path, folder: Path, stem: str) -> Path:
        if folder.name == "month=2024-02":
            raise OSError("No space left on device")
        return publish_new(tmp, folder, stem)

    monkeypatch.setattr(raw_module, "publish_new", disk_full_in_february)
    with pytest.raises(OSError, match="No space left"):
        recorder.record(make_bars(days=25), T1)  # 2024-01-29 .. 2024-03-01

    assert not [p for p in recorder.root.rglob("*") if p.name.startswith(".")]  # no staging left
    # January was published before the failure: a recorded file is whole or absent, never partial,
    # and re-recording the batch adds only what is missing.
    assert [p.parent.name for p in recorder.files()] == ["month=2024-01"]
    monkeypatch.undo()
    again = recorder.record(make_bars(days=25), T2)
    assert again.skipped_rows == recorder.read().filter(pl.col("ingested_at") == T1).height
    assert recorder.read().height == make_bars(days=25).height


def _two_versions(bars: pl.DataFrame, day: date) -> pl.DataFrame:
    """``bars`` plus a second version of AAA's ``day`` (close 0.5 higher): a conflicting pair."""
    other = bars.filter((pl.col("symbol") == "AAA") & (pl.col("date") == day)).with_columns(
        pl.col("close") + 0.5
    )
    return pl.concat([bars, other])


def test_resending_one_version_of_a_recorded_conflict_resolves_it(recorder: RawRecorder) -> None:
    bars = make_bars(days=3)
    day = bars.get_column("date")[1]
    recorder.record(_two_versions(bars, day), T1)
    right = bars.filter((pl.col("symbol") == "AAA") & (pl.col("date") == day))
    result = recorder.record(right, T2)
    assert (result.new_rows, result.skipped_rows) == (1, 0)  # a new arrival, not "already recorded"
    newest = recorder.read(["AAA"], day, day)
    assert newest.get_column("close").to_list() == right.get_column("close").to_list()
    # Sending the resolved version again is a repeat.
    assert recorder.record(right, T3).new_rows == 0


def test_a_second_version_beside_a_recorded_bar_is_recorded_as_a_conflict(recorder: RawRecorder) -> None:
    bars = make_bars(days=3)
    day = bars.get_column("date")[1]
    recorder.record(bars, T1)
    result = recorder.record(_two_versions(bars, day).filter(pl.col("date") == day), T2)
    # Both versions form the newest arrival: the gate sees the conflict instead of 101.5 alone.
    assert (result.new_rows, result.skipped_rows) == (2, 1)  # both AAA versions; BBB's bar is a repeat
    newest = recorder.read(["AAA"], day, day)
    assert sorted(newest.get_column("close").to_list()) == [11.5, 12.0]


def test_a_repeated_conflicting_pair_and_a_repeated_batch_are_skipped(recorder: RawRecorder) -> None:
    bars = _two_versions(make_bars(days=3), make_bars(days=3).get_column("date")[1])
    recorder.record(bars, T1)
    result = recorder.record(bars, T2)
    assert (result.new_rows, result.skipped_rows) == (0, bars.height)


def test_the_same_count_of_other_rows_is_not_a_repeat(recorder: RawRecorder) -> None:
    # Recorded {x, y} for a key; {x, x} arrives: the same count, every row seen, but not the same rows.
    bars = make_bars(days=3)
    day = bars.get_column("date")[1]
    recorder.record(_two_versions(bars, day), T1)
    aaa = bars.filter((pl.col("symbol") == "AAA") & (pl.col("date") == day))
    result = recorder.record(pl.concat([aaa, aaa]), T2)
    assert (result.new_rows, result.skipped_rows) == (2, 0)
    assert recorder.read(["AAA"], day, day).height == 2  # the newest arrival: x twice
