"""The derived and reference stores: adjusted bars, actions, universe, gaps and quarantine on Parquet."""

from __future__ import annotations

import itertools
import json
import os
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from trader.data import store as store_module
from trader.data.bars import ACTION_SCHEMA, ADJ_BAR_SCHEMA, LISTING_SCHEMA, QUARANTINE_SCHEMA
from trader.data.paths import DataPaths
from trader.data.store import (
    GAP_SCHEMA,
    ActionStore,
    AdjustedStore,
    GapStore,
    QuarantineStore,
    UniverseStore,
    sorted_by,
    strictly_sorted,
    write_new,
)


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    return DataPaths(tmp_path / "data")


def adjusted(symbol: str, first: date, last: date, factor: float = 1.0, step: int = 30) -> pl.DataFrame:
    """One bar every ``step`` days of ``symbol`` from ``first`` to ``last``."""
    days = [first + timedelta(days=i) for i in range(0, (last - first).days + 1, step)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": [10.0 + i for i in range(len(days))],
            "high": [11.0 + i for i in range(len(days))],
            "low": [9.0 + i for i in range(len(days))],
            "close": [10.5 + i for i in range(len(days))],
            "volume": 1000.0,
            "factor": factor,
            "source": "csv",
        },
        schema=ADJ_BAR_SCHEMA,
    )


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*.parquet")}


# -- adjusted bars -----------------------------------------------------------------------------------


def test_adjusted_store_starts_empty(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    assert store.read().schema == pl.Schema(ADJ_BAR_SCHEMA)
    assert store.read().is_empty()
    assert store.symbols() == []


def test_adjusted_store_partitions_by_year_and_round_trips(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    aaa = adjusted("AAA", date(2020, 1, 2), date(2021, 12, 31))
    bbb = adjusted("BBB", date(2019, 1, 2), date(2022, 12, 31))

    assert store.replace_symbols(pl.concat([bbb, aaa])) == aaa.height + bbb.height

    assert sorted(mtimes(paths.adjusted_bars)) == [f"year={y}/data.parquet" for y in range(2019, 2023)]
    assert_frame_equal(store.read(), pl.concat([aaa, bbb]))
    assert store.symbols() == ["AAA", "BBB"]
    window = store.read(["BBB"], start=date(2020, 3, 1), end=date(2021, 2, 1))
    assert window.get_column("symbol").unique().to_list() == ["BBB"]
    assert window.get_column("date").min() >= date(2020, 3, 1)  # type: ignore[operator]
    assert window.get_column("date").max() <= date(2021, 2, 1)  # type: ignore[operator]


def test_replacing_one_symbol_leaves_others_and_untouched_years_alone(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    aaa = adjusted("AAA", date(2020, 1, 2), date(2021, 12, 31))
    bbb = adjusted("BBB", date(2019, 1, 2), date(2022, 12, 31))
    store.replace_symbols(pl.concat([aaa, bbb]))
    before = mtimes(paths.adjusted_bars)

    readjusted = aaa.with_columns(factor=pl.lit(0.5), close=pl.col("close") * 0.5)
    store.replace_symbols(readjusted)

    after = mtimes(paths.adjusted_bars)
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == ["year=2020/data.parquet", "year=2021/data.parquet"]
    assert_frame_equal(store.read(["BBB"]), bbb)
    assert_frame_equal(store.read(["AAA"]), readjusted)


def test_a_shorter_history_removes_the_rows_it_no_longer_has(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    store.replace_symbols(adjusted("AAA", date(2019, 1, 2), date(2021, 12, 31)))
    store.replace_symbols(adjusted("BBB", date(2021, 1, 2), date(2021, 12, 31)))

    store.replace_symbols(adjusted("AAA", date(2021, 1, 2), date(2021, 12, 31)))

    assert store.read(["AAA"]).get_column("date").min() == date(2021, 1, 2)
    # 2019 and 2020 held only AAA: their files are gone rather than left empty.
    assert sorted(mtimes(paths.adjusted_bars)) == ["year=2021/data.parquet"]


def test_a_named_symbol_without_rows_loses_its_history(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    store.replace_symbols(
        pl.concat(
            [
                adjusted("AAA", date(2021, 1, 2), date(2021, 6, 1)),
                adjusted("BBB", date(2021, 1, 2), date(2021, 6, 1)),
            ]
        )
    )

    assert store.replace_symbols(pl.DataFrame(schema=ADJ_BAR_SCHEMA), symbols=["AAA"]) == 0

    assert store.symbols() == ["BBB"]


def test_replacing_with_the_same_rows_rewrites_nothing(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    bars = adjusted("AAA", date(2020, 1, 2), date(2021, 12, 31))
    store.replace_symbols(bars)
    before = mtimes(paths.adjusted_bars)

    store.replace_symbols(bars.reverse())

    assert mtimes(paths.adjusted_bars) == before


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_a_staged_replacement_is_invisible_until_committed(paths: DataPaths) -> None:
    store = AdjustedStore(paths)
    old = adjusted("AAA", date(2020, 1, 2), date(2021, 12, 31))
    store.replace_symbols(old)
    new = old.with_columns(close=pl.col("close") * 2)

    discarded = store.stage(new)
    assert temporary_files(paths.adjusted_bars)  # written, under names no reader picks up
    assert_frame_equal(store.read(), old)
    discarded.discard()
    assert not temporary_files(paths.adjusted_bars)
    assert_frame_equal(store.read(), old)

    committed = store.stage(new)
    assert committed.commit() == new.height
    committed.discard()  # after a commit: nothing left to remove, nothing undone
    assert_frame_equal(store.read(), new)
    assert not temporary_files(paths.adjusted_bars)


@pytest.mark.parametrize("store_was_empty", [True, False])
def test_a_failed_staging_leaves_no_temporary_file(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch, store_was_empty: bool
) -> None:
    store = AdjustedStore(paths)
    before = adjusted("BBB", date(2020, 1, 2), date(2020, 6, 1))
    if not store_was_empty:
        store.replace_symbols(before)
    # An empty store is written in one streaming pass, an existing one year by year: a full disk
    # while 2021 is written must leave no staged file of the other years behind, in either case.
    write_temp, fsync_file = store_module._write_temp, store_module.fsync_file

    def disk_full_in_2021(frame: pl.DataFrame, target: Path) -> Path:
        if target.parent.name == "year=2021":
            raise OSError("No space left on device")
        return write_temp(frame, target)

    def flush_fails_in_2021(path: Path) -> None:
        if "2021" in path.parent.name:
            raise OSError("No space left on device")
        fsync_file(path)

    monkeypatch.setattr(store_module, "_write_temp", disk_full_in_2021)
    monkeypatch.setattr(store_module, "fsync_file", flush_fails_in_2021)
    with pytest.raises(OSError, match="No space left"):
        store.stage(adjusted("AAA", date(2020, 1, 2), date(2022, 12, 31)))

    assert not temporary_files(paths.adjusted_bars)
    assert not [p for p in paths.adjusted_bars.glob(".*")]  # no staging folder either
    assert_frame_equal(store.read(), before.clear() if store_was_empty else before)


def test_adjusted_store_refuses_two_rows_for_one_day(paths: DataPaths) -> None:
    bars = adjusted("AAA", date(2020, 1, 2), date(2020, 3, 1))
    with pytest.raises(ValueError, match="more than one row"):
        AdjustedStore(paths).replace_symbols(pl.concat([bars, bars.head(1)]))
    with pytest.raises(ValueError, match="null key"):
        AdjustedStore(paths).replace_symbols(bars.with_columns(date=pl.lit(None, pl.Date)))


# -- corporate actions ------------------------------------------------------------------------------


def actions(*rows: tuple[str, date, float, float]) -> pl.DataFrame:
    return pl.DataFrame([(*row, "csv") for row in rows], schema=ACTION_SCHEMA, orient="row")


def test_actions_merge_dedupes_and_a_newer_record_replaces_the_old(paths: DataPaths) -> None:
    store = ActionStore(paths)
    assert store.read().schema == pl.Schema(ACTION_SCHEMA)

    assert store.merge(actions(("AAA", date(2021, 6, 1), 2.0, 0.0), ("BBB", date(2021, 3, 1), 1.0, 0.5))) == 2
    stamp = paths.actions.stat().st_mtime_ns
    assert store.merge(actions(("AAA", date(2021, 6, 1), 2.0, 0.0))) == 0
    assert paths.actions.stat().st_mtime_ns == stamp  # nothing new: not rewritten

    # A correction of AAA's ratio, a new BBB dividend, and a repeat inside the batch (last one wins).
    merged = store.merge(
        actions(
            ("AAA", date(2021, 6, 1), 3.0, 0.0),
            ("BBB", date(2021, 9, 1), 1.0, 0.4),
            ("BBB", date(2021, 9, 1), 1.0, 0.45),
        )
    )

    assert merged == 2
    assert store.read().select("symbol", "ex_date", "split_ratio", "cash_dividend").rows() == [
        ("AAA", date(2021, 6, 1), 3.0, 0.0),
        ("BBB", date(2021, 3, 1), 1.0, 0.5),
        ("BBB", date(2021, 9, 1), 1.0, 0.45),
    ]
    assert store.read(["AAA"]).height == 1


def test_actions_with_a_null_key_are_refused(paths: DataPaths) -> None:
    with pytest.raises(ValueError, match="null key"):
        ActionStore(paths).merge(actions(("AAA", date(2021, 6, 1), 2.0, 0.0)).with_columns(ex_date=None))


# -- universe ------------------------------------------------------------------------------------------


def listings(*rows: tuple[str, date, date | None, bool | None]) -> pl.DataFrame:
    return pl.DataFrame([(*row, "tech") for row in rows], schema=LISTING_SCHEMA, orient="row")


def test_universe_is_point_in_time(paths: DataPaths) -> None:
    store = UniverseStore(paths)
    assert store.listed_on(date(2021, 1, 4)) == []
    store.merge(
        listings(
            ("OLD", date(2010, 1, 4), None, True),
            ("IPO", date(2021, 6, 1), None, True),  # listed later
            ("GONE", date(2010, 1, 4), date(2020, 12, 31), True),  # delisted earlier
            ("HALT", date(2010, 1, 4), None, False),  # listed, not tradable
            ("BACK", date(2010, 1, 4), date(2015, 1, 2), True),  # delisted, then listed again
            ("BACK", date(2019, 1, 2), None, True),
        )
    )

    assert store.listed_on(date(2016, 1, 4)) == ["GONE", "OLD"]
    assert store.listed_on(date(2020, 12, 31)) == ["BACK", "GONE", "OLD"]  # last day listed counts
    assert store.listed_on(date(2021, 1, 4)) == ["BACK", "OLD"]
    assert store.listed_on(date(2021, 5, 31)) == ["BACK", "OLD"]
    assert store.listed_on(date(2021, 6, 1)) == ["BACK", "IPO", "OLD"]  # first day listed counts


def test_universe_merge_updates_a_listing_and_refuses_bad_ones(paths: DataPaths) -> None:
    store = UniverseStore(paths)
    store.merge(listings(("AAA", date(2010, 1, 4), None, None)))
    assert store.read().get_column("tradable").to_list() == [True]  # unknown: tradable

    assert store.merge(listings(("AAA", date(2010, 1, 4), date(2022, 3, 1), True))) == 1

    assert store.read().select("symbol", "end_date").rows() == [("AAA", date(2022, 3, 1))]
    assert store.listed_on(date(2022, 3, 2)) == []
    with pytest.raises(ValueError, match="end_date before start_date"):
        store.merge(listings(("BBB", date(2020, 1, 2), date(2019, 1, 2), True)))


def first_bars(*rows: tuple[str, date]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema={"symbol": pl.String, "start_date": pl.Date}, orient="row")


def spans(store: UniverseStore) -> list[tuple[object, ...]]:
    return store.read().select("symbol", "start_date", "end_date", "sector").rows()


def test_a_derived_listing_moves_earlier_after_a_backfill(paths: DataPaths) -> None:
    store = UniverseStore(paths)
    store.merge(listings(("SRC", date(2010, 1, 4), None, True)))
    no_listings = listings()

    first = store.plan(no_listings, first_bars(("CSV", date(2024, 1, 8)), ("SRC", date(2001, 1, 2))))
    assert store.apply(first) == 1
    assert spans(store) == [("CSV", date(2024, 1, 8), None, None), ("SRC", date(2010, 1, 4), None, "tech")]
    assert store.read_derived().rows() == [("CSV", date(2024, 1, 8))]

    # Older history arrived: the derived start moves earlier, still one row; a source's listing stays.
    store.apply(store.plan(no_listings, first_bars(("CSV", date(2023, 6, 1)))))
    assert spans(store) == [("CSV", date(2023, 6, 1), None, None), ("SRC", date(2010, 1, 4), None, "tech")]
    assert store.read_derived().rows() == [("CSV", date(2023, 6, 1))]

    # A later batch holding only newer bars does not move it back, and nothing is rewritten.
    unchanged = store.plan(no_listings, first_bars(("CSV", date(2024, 2, 1))))
    assert not unchanged.changed and store.apply(unchanged) == 0
    assert spans(store)[0] == ("CSV", date(2023, 6, 1), None, None)


def test_a_source_listing_replaces_a_derived_one(paths: DataPaths) -> None:
    store = UniverseStore(paths)
    store.apply(store.plan(listings(), first_bars(("CSV", date(2024, 1, 8)))))

    store.apply(
        store.plan(
            listings(("CSV", date(2015, 3, 2), date(2024, 6, 28), True)),
            first_bars(("CSV", date(2024, 1, 8))),
        )
    )

    assert spans(store) == [("CSV", date(2015, 3, 2), date(2024, 6, 28), "tech")]
    assert store.read_derived().is_empty()


def test_a_crash_between_the_universe_and_the_derived_file_is_repaired(paths: DataPaths) -> None:
    store = UniverseStore(paths)
    store.apply(store.plan(listings(), first_bars(("CSV", date(2024, 1, 8)))))
    moved = store.plan(listings(), first_bars(("CSV", date(2023, 6, 1))))
    moved.listings.write_parquet(paths.universe)  # the universe was written, the derived file was not

    store.apply(store.plan(listings(), first_bars(("CSV", date(2023, 6, 1)))))

    assert spans(store) == [("CSV", date(2023, 6, 1), None, None)]
    assert store.read_derived().rows() == [("CSV", date(2023, 6, 1))]


# -- gaps ----------------------------------------------------------------------------------------------


def gaps(*rows: tuple[str, date]) -> pl.DataFrame:
    return pl.DataFrame([(*row, "missing session") for row in rows], schema=GAP_SCHEMA, orient="row")


def test_gaps_of_re_ingested_symbols_are_replaced(paths: DataPaths) -> None:
    store = GapStore(paths)
    store.merge(gaps(("AAA", date(2021, 1, 5)), ("BBB", date(2021, 1, 6))))

    # AAA's gap was filled and a new one found; CCC was ingested with no gap at all.
    assert store.replace_symbols(gaps(("AAA", date(2021, 2, 1))), ["AAA", "CCC"]) == 1

    assert store.read().select("symbol", "date").rows() == [
        ("AAA", date(2021, 2, 1)),
        ("BBB", date(2021, 1, 6)),
    ]
    assert store.replace_symbols(gaps(), ["BBB"]) == 0
    assert store.read().get_column("symbol").to_list() == ["AAA"]


def test_no_gaps_in_an_empty_store_writes_no_file(paths: DataPaths) -> None:
    assert GapStore(paths).replace_symbols(gaps(), ["AAA"]) == 0
    assert not paths.gaps.exists()
    assert GapStore(paths).read().schema == pl.Schema(GAP_SCHEMA)


# -- quarantine ---------------------------------------------------------------------------------------


def quarantined(*rows: tuple[str, date | None, str]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            (symbol, day, "csv", rule, f"broke {rule}", json.dumps({"symbol": symbol, "close": -1.0}))
            for symbol, day, rule in rows
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )


def test_quarantine_appends_yearly_files_and_is_idempotent(paths: DataPaths) -> None:
    store = QuarantineStore(paths)
    assert store.read().schema == pl.Schema(QUARANTINE_SCHEMA)
    rows = quarantined(
        ("AAA", date(2021, 1, 5), "ohlc"),
        ("AAA", date(2022, 2, 5), "outlier"),
        ("BBB", None, "schema"),
    )

    assert store.append(rows, "ingest-1") == 3
    files = sorted(str(p.relative_to(store.root)) for p in store.files())
    assert files == [
        "year=2021/ingest-1.parquet",
        "year=2022/ingest-1.parquet",
        "year=__HIVE_DEFAULT_PARTITION__/ingest-1.parquet",
    ]
    before = mtimes(store.root)

    assert store.append(rows, "ingest-2") == 0
    assert mtimes(store.root) == before

    more = quarantined(("AAA", date(2021, 1, 5), "ohlc"), ("AAA", date(2021, 1, 5), "duplicate"))
    assert store.append(more, "ingest-3") == 1
    assert store.read().height == 4
    assert store.read(start=date(2021, 1, 1), end=date(2021, 1, 31)).get_column("rule").to_list() == [
        "duplicate",
        "ohlc",
    ]


def test_quarantine_refuses_an_ingest_id_that_is_not_a_file_name(paths: DataPaths) -> None:
    with pytest.raises(ValueError, match="ingest id"):
        QuarantineStore(paths).append(quarantined(("AAA", date(2021, 1, 5), "ohlc")), "../x")


# -- files --------------------------------------------------------------------------------------------


def test_write_new_never_overwrites_a_published_file(tmp_path: Path) -> None:
    first = write_new(pl.DataFrame({"x": [1]}), tmp_path, "id")
    second = write_new(pl.DataFrame({"x": [2]}), tmp_path, "id")

    assert (first.name, second.name) == ("id.parquet", "id-1.parquet")
    assert pl.read_parquet(first).item() == 1
    assert pl.read_parquet(second).item() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["id-1.parquet", "id.parquet"]


# -- sortedness ----------------------------------------------------------------------------------------


def test_sorted_by_tells_when_a_sort_can_be_skipped() -> None:
    frame = pl.DataFrame({"symbol": ["A", "A", "A", "B"], "date": [1, 2, 2, 1]})
    assert sorted_by(frame, ("symbol", "date"))  # repeats next to each other are sorted
    assert not sorted_by(frame, ("symbol", "date"), unique=True)
    assert strictly_sorted(frame.unique(maintain_order=True), ("symbol", "date"))
    assert not sorted_by(frame.reverse(), ("symbol", "date"))
    # A null key is never "sorted": comparisons with it are null, which must not count as ordered.
    assert not sorted_by(frame.with_columns(date=pl.Series([1, None, 2, 1])), ("symbol", "date"))
    assert not sorted_by(frame.with_columns(symbol=pl.Series([None, "A", "A", "B"])), ("symbol", "date"))
    assert sorted_by(frame.head(1), ("symbol", "date")) and sorted_by(frame.clear(), ("symbol", "date"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "BB", None]), st.one_of(st.none(), st.integers(0, 3))),
        max_size=12,
    ),
    st.booleans(),
)
def test_sorted_by_agrees_with_comparing_every_neighbour(
    rows: list[tuple[str | None, int | None]], unique: bool
) -> None:
    frame = pl.DataFrame(rows, schema={"symbol": pl.String, "date": pl.Int64}, orient="row")
    dated = frame.with_columns(date=pl.date(2024, 1, 1) + pl.duration(days=pl.col("date")))
    if any(None in row for row in rows):
        expected = False
    else:
        pairs = list(itertools.pairwise(rows))
        expected = all(a < b if unique else a <= b for a, b in pairs)  # type: ignore[operator]
    assert sorted_by(frame, ("symbol", "date"), unique=unique) is expected
    assert sorted_by(dated, ("symbol", "date"), unique=unique) is expected
    assert (
        sorted_by(frame.with_columns(date=pl.col("date").cast(pl.String)), ("symbol", "date"), unique)
        is expected
    )


def test_sweep_removes_only_old_leftovers_of_interrupted_writes(paths: DataPaths, tmp_path: Path) -> None:
    def made(path: Path, age_seconds: float, folder: bool = False) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder:
            (path / "_month=202401").mkdir(parents=True)
            (path / "_month=202401" / "0.parquet").write_bytes(b"half")
        else:
            path.write_bytes(b"half")
        os.utime(path, (NOW - age_seconds, NOW - age_seconds))
        return path

    hour, hex32 = store_module.LEFTOVER_AGE_SECONDS, "0123456789abcdef" * 2
    old = [
        made(paths.raw_bars / ".staging-20240102T000000000000Z-0123456789-1234abcd", hour + 1, folder=True),
        made(paths.adjusted_bars / "year=2024" / f".data.parquet.{hex32}.tmp", 2 * hour),
        made(paths.actions.parent / f".corporate_actions.parquet.{hex32}.tmp", 3 * hour),
        made(paths.quarantine / "year=2024" / f".x.parquet.{hex32}.tmp", 4 * hour),
    ]
    users = tmp_path / "users-own"
    users.mkdir()
    (users / "keep.txt").write_text("mine")
    link = paths.raw_bars / ".staging-20240102T000000000000Z-0123456789-5678abcd"
    link.symlink_to(users, target_is_directory=True)
    os.utime(link, (NOW - 5 * hour, NOW - 5 * hour), follow_symlinks=False)
    kept = [
        # a writer may still be at work on these
        made(paths.raw_bars / ".staging-20240102T000001000000Z-0123456789-9abcdef0", hour - 60, folder=True),
        made(paths.adjusted_bars / "year=2023" / f".data.parquet.{hex32}.tmp", 10),
        # not a temporary write of ours, however old
        made(paths.adjusted_bars / "year=2024" / "data.parquet", 5 * hour),
        made(paths.raw_bars / "month=2024-01" / "20240102T000000Z-abc.parquet", 5 * hour),
        made(paths.actions.parent / ".my-notes.tmp", 5 * hour),
        made(paths.adjusted_bars / ".keep", 5 * hour),
        made(
            paths.raw_bars / "month=2024-01" / ".staging-20240102T000000000000Z-0123456789-1234abcd", 5 * hour
        ),
        made(paths.root / "elsewhere" / f".notes.{hex32}.tmp", 5 * hour),  # outside the data folders
        link,  # a link is neither followed nor removed
        users / "keep.txt",
    ]

    removed = store_module.sweep_leftovers(paths, now=NOW)

    assert sorted(removed) == sorted(old)
    assert not any(path.exists() for path in old)
    assert all(path.is_symlink() or path.exists() for path in kept)
    assert store_module.sweep_leftovers(paths, now=NOW) == []  # idempotent
    assert store_module.sweep_leftovers(DataPaths(paths.root / "absent"), now=NOW) == []


def test_a_leftover_that_cannot_be_removed_is_logged_and_the_rest_still_swept(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hex32 = "f" * 32
    stuck = paths.adjusted_bars / "year=2023" / f".data.parquet.{hex32}.tmp"
    other = paths.adjusted_bars / "year=2024" / f".data.parquet.{hex32}.tmp"
    for path in (stuck, other):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"half")
        os.utime(path, (NOW - 7200, NOW - 7200))
    unlink = Path.unlink

    def refuse_one(self: Path, missing_ok: bool = False) -> None:
        if self == stuck:
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse_one)
    assert store_module.sweep_leftovers(paths, now=NOW) == [other]
    assert stuck.exists() and not other.exists()
    assert "could not remove leftover" in caplog.text and "Permission denied" in caplog.text


NOW = 1_800_000_000.0
