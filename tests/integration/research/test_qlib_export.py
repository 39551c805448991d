"""The Qlib exporter on real stores and files, and Qlib reading the result back.

Two kinds of market: a hand-made store (a few symbols whose every value is known: a halt, a
delisting, a split, a Windows device name) for the exact file-level and incremental checks, and the
synthetic market through the whole data pipeline (splits, dividends, bad ticks, missing days, halts,
IPOs, delistings) read back through ``qlib.data.D``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from trader.data.bars import ADJ_BAR_SCHEMA, LISTING_SCHEMA
from trader.data.calendar import trading_calendar
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
from trader.data.store import AdjustedStore, UniverseStore
from trader.research.qlib_export import (
    FIELDS,
    FUTURE_SESSIONS,
    MANIFEST,
    ExportReport,
    QlibExporter,
    QlibExportError,
    decode_feature,
)

CAL = trading_calendar()
SESSIONS: list[date] = CAL.sessions(date(2024, 1, 2), date(2024, 2, 29)).to_list()
DAY0, LAST = SESSIONS[0], SESSIONS[29]  # the first export holds 30 sessions; later tests append more


# --------------------------------------------------------------------------------------------------
# A hand-made market
# --------------------------------------------------------------------------------------------------


def make_bars(symbol: str, days: list[date], base: float, factor: float = 1.0) -> pl.DataFrame:
    """Bars whose values follow from the session index, so each test knows every number."""
    index = np.array([SESSIONS.index(d) for d in days], dtype=float)
    close = base + index * 0.37
    return pl.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": close - 0.11,
            "high": close + 0.5,
            "low": close - 0.75,
            "close": close,
            "volume": 1_000.0 + index * 10,
            "factor": factor,
            "source": "test",
        },
        schema=ADJ_BAR_SCHEMA,
    )


def listing(symbol: str, start: date, end: date | None) -> tuple[object, ...]:
    return (symbol, start, end, True, "Tech")


class Market:
    """A DATA_DIR with a hand-made adjusted store and universe, and an export folder."""

    def __init__(self, root: Path) -> None:
        self.paths = DataPaths(root / "data")
        self.target = root / "qlib"
        self.store = AdjustedStore(self.paths)
        self.until = LAST
        halted = [d for d in SESSIONS if d <= LAST and d not in (SESSIONS[10], SESSIONS[11])]
        self.store.replace_symbols(
            pl.concat(
                [
                    make_bars("AAA", [d for d in SESSIONS if d <= LAST], 50.0),
                    make_bars("HALT", halted, 20.0),  # halted on sessions 10 and 11
                    make_bars("DEL", SESSIONS[:15], 80.0),  # delisted after session 14
                    make_bars("CON", SESSIONS[5:30], 10.0, factor=0.5),  # listed on session 5
                ]
            )
        )
        UniverseStore(self.paths).merge(
            pl.DataFrame(
                [
                    listing("AAA", date(2000, 1, 3), None),
                    listing("HALT", date(2000, 1, 3), None),
                    listing("DEL", date(2000, 1, 3), SESSIONS[14]),
                    listing("CON", SESSIONS[5], None),
                ],
                schema=LISTING_SCHEMA,
                orient="row",
            )
        )

    def export(self) -> ExportReport:
        return QlibExporter(self.paths, self.target).export()

    def append(self, day: date, symbols: list[str]) -> None:
        """Add session ``day`` for ``symbols`` (the store replaces a symbol's whole history)."""
        current = self.store.read(symbols)
        extra = pl.concat([make_bars(s, [day], self._base(s), self._factor(current, s)) for s in symbols])
        self.store.replace_symbols(pl.concat([current, extra]))

    @staticmethod
    def _base(symbol: str) -> float:
        return {"AAA": 50.0, "HALT": 20.0, "DEL": 80.0, "CON": 10.0}[symbol]

    @staticmethod
    def _factor(frame: pl.DataFrame, symbol: str) -> float:
        return float(frame.filter(pl.col("symbol") == symbol).get_column("factor")[-1])

    def read(self, symbol: str, field: str) -> tuple[int, np.ndarray]:
        folder = "_qlib_con" if symbol == "CON" else symbol.lower()
        return decode_feature((self.target / "features" / folder / f"{field}.day.bin").read_bytes())

    def identities(self) -> dict[str, tuple[int, int]]:
        """(inode, mtime_ns) of every exported file: a rewrite (temp + rename) gets a new inode."""
        return {
            str(p.relative_to(self.target)): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in self.target.rglob("*")
            if p.is_file()
        }


@pytest.fixture
def market(tmp_path: Path) -> Market:
    return Market(tmp_path)


def changed_files(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> set[str]:
    return {name for name, ident in after.items() if before.get(name) != ident}


def symbol_files(folder: str) -> set[str]:
    return {f"features/{folder}/{field}.day.bin" for field in FIELDS}


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def test_export_writes_calendar_instruments_and_one_file_per_symbol_and_field(market: Market) -> None:
    report = market.export()

    assert (report.symbols, report.days, report.first_day, report.last_day) == (4, 30, DAY0, LAST)
    assert report.files_written == 4 * len(FIELDS) + 3 and report.files_unchanged == 0
    assert report.changed_symbols == ("AAA", "CON", "DEL", "HALT")
    calendar = (market.target / "calendars" / "day.txt").read_text().splitlines()
    assert calendar == [d.isoformat() for d in SESSIONS[:30]]
    future = (market.target / "calendars" / "day_future.txt").read_text().splitlines()
    assert future[:30] == calendar
    assert len(future) == 30 + FUTURE_SESSIONS
    assert future[30:33] == [d.isoformat() for d in SESSIONS[30:33]]
    assert (market.target / "instruments" / "all.txt").read_text().splitlines() == [
        f"AAA\t{DAY0}\t{LAST}",
        f"CON\t{SESSIONS[5]}\t{LAST}",
        f"DEL\t{DAY0}\t{SESSIONS[14]}",
        f"HALT\t{DAY0}\t{LAST}",
    ]
    assert sorted(p.name for p in (market.target / "features").iterdir()) == [
        "_qlib_con",
        "aaa",
        "del",
        "halt",
    ]


def test_feature_files_hold_the_store_values_in_calendar_slots(market: Market) -> None:
    market.export()
    store = market.store.read()

    for symbol in ("AAA", "HALT", "DEL", "CON"):
        rows = store.filter(pl.col("symbol") == symbol)
        slots = np.array([SESSIONS.index(d) for d in rows.get_column("date")])
        for field in ("open", "high", "low", "close", "volume", "factor"):
            start, values = market.read(symbol, field)
            assert start == slots[0]
            assert len(values) == slots[-1] - slots[0] + 1
            expected = rows.get_column(field).to_numpy().astype(np.float32)
            np.testing.assert_array_equal(values[slots - start], expected)

    _, halt_close = market.read("HALT", "close")
    assert np.isnan(halt_close[[10, 11]]).all()  # the halt: NaN, not a shifted value
    assert halt_close[12] == np.float32(20.0 + 12 * 0.37)  # the day after sits in its own slot
    assert market.read("CON", "close")[0] == 5  # listed on session 5: the file starts there
    assert market.read("DEL", "close")[1].size == 15  # nothing after the delisting


def test_derived_fields_vwap_and_change(market: Market) -> None:
    market.export()
    _, high = market.read("HALT", "high")
    _, low = market.read("HALT", "low")
    _, close = market.read("HALT", "close")
    _, vwap = market.read("HALT", "vwap")
    _, change = market.read("HALT", "change")
    bars = market.store.read(["HALT"])
    typical = ((bars["high"] + bars["low"] + bars["close"]) / 3).to_numpy().astype(np.float32)
    np.testing.assert_array_equal(vwap[~np.isnan(vwap)], typical)
    stored = bars.get_column("close").to_numpy()  # float64: change is computed before the cast
    assert np.isnan(change[0])  # no earlier bar
    assert change[1] == np.float32(stored[1] / stored[0] - 1)
    assert np.isnan(change[[10, 11]]).all() and np.isnan(close[[10, 11]]).all()
    # After the halt the change is against the last close before it, the move a holder saw
    # (file slot 12 is the store's 11th row: two sessions had no bar).
    assert change[12] == np.float32(stored[10] / stored[9] - 1)
    assert high[12] > low[12]


# --------------------------------------------------------------------------------------------------
# Incremental
# --------------------------------------------------------------------------------------------------


def test_re_export_without_changes_writes_nothing(market: Market) -> None:
    market.export()
    before = market.identities()
    report = market.export()
    assert report.files_written == 0
    assert report.files_unchanged == 4 * len(FIELDS) + 3
    assert report.changed_symbols == ()
    assert changed_files(before, market.identities()) == set()


def test_appending_a_day_rewrites_only_the_symbols_that_traded_and_the_calendar(market: Market) -> None:
    market.export()
    old_aaa = market.read("AAA", "close")[1]
    before = market.identities()

    new_day = SESSIONS[30]
    market.append(new_day, ["AAA", "CON"])  # HALT has no bar that day; DEL is delisted
    report = market.export()

    assert report.changed_symbols == ("AAA", "CON")
    assert report.last_day == new_day and report.days == 31
    expected = (
        symbol_files("aaa")
        | symbol_files("_qlib_con")
        | {"calendars/day.txt", "calendars/day_future.txt", "instruments/all.txt", MANIFEST}
    )
    assert changed_files(before, market.identities()) == expected
    assert report.files_written == len(expected) - 1  # the manifest is not counted
    start, new_aaa = market.read("AAA", "close")
    assert start == 0
    np.testing.assert_array_equal(new_aaa[:-1], old_aaa)  # the past is byte-identical
    assert new_aaa[-1] == np.float32(50.0 + 30 * 0.37)
    # HALT's file is untouched and shorter than the calendar: Qlib reads the missing day as NaN.
    assert market.read("HALT", "close")[1].size == 30


def test_a_day_after_missing_sessions_lands_in_its_own_slot(market: Market) -> None:
    market.export()
    market.append(SESSIONS[30], ["AAA"])
    market.append(SESSIONS[31], ["AAA"])
    market.export()  # HALT still has no bar on sessions 30 and 31
    before = market.identities()

    market.append(SESSIONS[32], ["AAA", "HALT"])
    report = market.export()

    assert report.changed_symbols == ("AAA", "HALT")
    assert symbol_files("halt") <= changed_files(before, market.identities())
    start, close = market.read("HALT", "close")
    assert start == 0 and close.size == 33
    assert np.isnan(close[[30, 31]]).all()  # padded, unlike upstream's dump_update
    assert close[32] == np.float32(20.0 + 32 * 0.37)


def test_a_split_that_restates_history_rewrites_that_symbol_in_full(market: Market) -> None:
    market.export()
    before = market.identities()
    aaa = market.store.read(["AAA"])
    halved = aaa.with_columns(
        pl.col("open", "high", "low", "close", "factor") / 2, pl.col("volume") * 2
    )  # a 2-for-1 split after the last bar: every past adjusted price halves
    market.store.replace_symbols(halved)

    report = market.export()

    assert report.changed_symbols == ("AAA",)
    # change is a ratio of closes, so a split leaves it alone; everything else is rewritten.
    assert changed_files(before, market.identities()) == (
        symbol_files("aaa") - {"features/aaa/change.day.bin"}
    ) | {MANIFEST}
    np.testing.assert_array_equal(
        market.read("AAA", "close")[1], (aaa.get_column("close").to_numpy() / 2).astype(np.float32)
    )


def test_a_symbol_gone_from_the_store_loses_its_files(market: Market) -> None:
    market.export()
    market.store.replace_symbols(pl.DataFrame(schema=ADJ_BAR_SCHEMA), symbols=["DEL"])

    report = market.export()

    assert report.files_removed == len(FIELDS)
    assert not (market.target / "features" / "del").exists()
    assert "DEL" not in (market.target / "instruments" / "all.txt").read_text()


def test_a_crash_while_writing_leaves_the_old_file_and_no_temp_files(
    market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    market.export()
    old = (market.target / "features" / "aaa" / "close.day.bin").read_bytes()
    market.append(SESSIONS[30], ["AAA"])
    real_replace = Path.replace

    def crash_on_close(self: Path, target: str | os.PathLike[str]) -> Path:
        if Path(target).name == "close.day.bin":
            raise OSError("disk unplugged")
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", crash_on_close)
    with pytest.raises(OSError, match="disk unplugged"):
        market.export()
    monkeypatch.undo()

    assert (market.target / "features" / "aaa" / "close.day.bin").read_bytes() == old
    assert not [p for p in market.target.rglob("*") if p.name.endswith(".tmp")]
    report = market.export()  # the next run finishes the job
    assert report.changed_symbols == ("AAA",)
    assert market.read("AAA", "close")[1].size == 31


def test_a_lost_manifest_costs_a_read_not_a_rewrite(market: Market) -> None:
    market.export()
    (market.target / MANIFEST).unlink()
    before = market.identities()
    report = market.export()
    assert report.files_written == 0
    assert changed_files(before, market.identities()) == {MANIFEST}


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------


def test_an_empty_store_says_how_to_fill_it(tmp_path: Path) -> None:
    with pytest.raises(QlibExportError, match=r"no adjusted bars in DATA_DIR .*trader data synth"):
        QlibExporter(DataPaths(tmp_path / "data"), tmp_path / "qlib").export()
    assert not (tmp_path / "qlib").exists()


def test_a_folder_that_is_not_an_export_is_refused(market: Market) -> None:
    market.target.mkdir()
    (market.target / "notes.txt").write_text("mine")
    with pytest.raises(QlibExportError, match="not empty and not a Qlib export"):
        market.export()
    assert sorted(p.name for p in market.target.iterdir()) == ["notes.txt"]


def test_a_bar_on_a_non_session_is_refused(market: Market) -> None:
    saturday = date(2024, 1, 6)
    bad = make_bars("AAA", [DAY0], 50.0).with_columns(date=pl.lit(saturday))
    market.store.replace_symbols(pl.concat([market.store.read(["AAA"]), bad]).sort("symbol", "date"))
    with pytest.raises(QlibExportError, match=r"not XNYS sessions.*2024, 1, 6"):
        market.export()


def test_a_non_positive_factor_is_refused(market: Market) -> None:
    aaa = market.store.read(["AAA"]).with_columns(factor=pl.lit(0.0))
    market.store.replace_symbols(aaa)
    with pytest.raises(QlibExportError, match="non-positive factor"):
        market.export()


# --------------------------------------------------------------------------------------------------
# Qlib reads it back: the synthetic market through the pipeline
# --------------------------------------------------------------------------------------------------

SYN_START, SYN_END, NEXT_DAY = date(2022, 1, 3), date(2023, 12, 29), date(2024, 1, 2)


@pytest.fixture(scope="module")
def synthetic() -> SyntheticSource:
    # Generated through NEXT_DAY so that a later ingest can append exactly one session.
    config = SyntheticConfig(
        symbols=12,
        start=SYN_START,
        end=NEXT_DAY,
        seed=3,
        split_rate=0.4,
        halt_rate=0.3,
        missing_day_rate=0.003,
        ipo_fraction=0.2,
        delist_fraction=0.2,
    )
    return SyntheticSource(config)


@pytest.fixture(scope="module")
def exported(synthetic: SyntheticSource, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("synthetic")
    paths = DataPaths(root / "data")
    DataPipeline(paths).ingest(synthetic, None, SYN_START, SYN_END)
    QlibExporter(paths, root / "qlib").export()
    yield root


@pytest.fixture
def qlib_on_export(exported: Path) -> Path:
    from trader.research.qlib_runtime import init_qlib

    # Idempotent: only the first test (or one after a test that pointed Qlib elsewhere) pays for it.
    init_qlib(exported / "qlib", mlflow_uri=f"sqlite:///{exported / 'mlflow.db'}")
    return exported


def as_frame(features: pd.DataFrame) -> pl.DataFrame:
    flat = features.reset_index()
    flat["datetime"] = flat["datetime"].dt.date
    return pl.from_pandas(flat).rename({"instrument": "symbol", "datetime": "date"})


@pytest.mark.slow
def test_qlib_reads_back_exactly_what_the_store_holds(qlib_on_export: Path) -> None:
    from qlib.data import D

    store = AdjustedStore(DataPaths(qlib_on_export / "data")).read()
    symbols = sorted(store.get_column("symbol").unique().to_list())
    fields = [f"${name}" for name in ("open", "high", "low", "close", "volume", "factor")]

    read = as_frame(D.features(symbols, fields, SYN_START, SYN_END))

    assert [d.date() for d in D.calendar()] == CAL.sessions(SYN_START, SYN_END).to_list()
    joined = store.join(read, on=["symbol", "date"], how="left")
    assert joined.height == store.height
    for name in ("open", "high", "low", "close", "volume", "factor"):
        expected = joined.get_column(name).cast(pl.Float32).to_numpy()
        got = joined.get_column(f"${name}").to_numpy()
        np.testing.assert_array_equal(got, expected, err_msg=name)  # exact at float32
    # Every session Qlib returns without a store bar (a halt, a missing day, a refused bad tick) is NaN.
    extra = read.join(store, on=["symbol", "date"], how="anti")
    assert extra.height > 0  # the market has such sessions: the check below is not empty
    assert extra.select(pl.all_horizontal(pl.col(f).is_nan() for f in fields).all()).item()


@pytest.mark.slow
def test_qlib_universe_follows_the_listings(qlib_on_export: Path, synthetic: SyntheticSource) -> None:
    from qlib.data import D

    listings = synthetic.data.batch.listings
    delisted = listings.filter(pl.col("end_date").is_not_null() & (pl.col("end_date") < SYN_END))
    ipos = listings.filter(pl.col("start_date") > SYN_START)
    assert not delisted.is_empty() and not ipos.is_empty()  # the market has both

    store = AdjustedStore(DataPaths(qlib_on_export / "data")).read()
    bar_days = {s: set(g.get_column("date")) for (s,), g in store.group_by("symbol")}
    ranges = D.list_instruments(D.instruments("all"), as_list=False)
    assert set(ranges) == set(bar_days)
    for symbol, start, end in listings.select("symbol", "start_date", "end_date").iter_rows():
        (first, last), *more = ranges[symbol]
        assert not more
        # Inside the listing, and on days with a bar (a refused first or last bar moves the edge).
        assert start <= first.date() <= last.date() <= (end or SYN_END)
        assert {first.date(), last.date()} <= bar_days[symbol]
        assert first.date() == min(d for d in bar_days[symbol] if d >= start)

    symbol, end = delisted.select("symbol", "end_date").row(0)
    after = D.list_instruments(D.instruments("all"), start_time=CAL.next_session(end), as_list=True)
    assert symbol not in after
    closes = as_frame(D.features(D.instruments("all"), ["$close"], SYN_START, SYN_END))
    assert closes.filter(pl.col("symbol") == symbol).get_column("date").max() == end


@pytest.mark.slow
def test_appending_a_session_through_the_pipeline(
    exported: Path, synthetic: SyntheticSource, tmp_path: Path
) -> None:
    from qlib.data import D

    from trader.research.qlib_runtime import init_qlib, reset_qlib_state

    root = tmp_path / "copy"
    shutil.copytree(exported, root)
    paths = DataPaths(root / "data")
    target = root / "qlib"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in target.rglob("*.bin")}

    DataPipeline(paths).ingest(synthetic, None, NEXT_DAY, NEXT_DAY)
    report = QlibExporter(paths, target).export()

    store = AdjustedStore(paths).read()
    traded = set(store.filter(pl.col("date") == NEXT_DAY).get_column("symbol").to_list())
    assert traded  # the new session has bars
    assert set(report.changed_symbols) == traded
    assert report.days == len(CAL.sessions(SYN_START, NEXT_DAY))
    untouched = {p for p, ident in before.items() if (p.stat().st_ino, p.stat().st_mtime_ns) == ident}
    rewritten_folders = {p.parent.name for p in set(before) - untouched}
    assert rewritten_folders == {s.lower() for s in traded}

    try:
        init_qlib(target, mlflow_uri=f"sqlite:///{root / 'mlflow.db'}")
        read = as_frame(D.features(sorted(traded), ["$close"], NEXT_DAY, NEXT_DAY))
    finally:
        reset_qlib_state()
    expected = store.filter(pl.col("date") == NEXT_DAY).select("symbol", "close").sort("symbol")
    assert read.get_column("symbol").to_list() == expected.get_column("symbol").to_list()
    np.testing.assert_array_equal(
        read.get_column("$close").to_numpy(), expected.get_column("close").cast(pl.Float32).to_numpy()
    )


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------


def test_trader_research_export_writes_data_dir_qlib_and_reports_counts(
    market: Market, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trader.cli.main import run

    monkeypatch.setenv("DATA_DIR", str(market.paths.root))
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    assert run(["research", "export"]) == 0
    out = capsys.readouterr().out
    assert "4 (4 changed)" in out
    assert f"{4 * len(FIELDS) + 3} written, 0 unchanged, 0 removed" in out
    assert f"30 ({DAY0} .. {LAST})" in out
    assert (market.paths.root / "qlib" / "calendars" / "day.txt").is_file()

    assert run(["research", "export"]) == 0
    assert f"0 written, {4 * len(FIELDS) + 3} unchanged" in capsys.readouterr().out

    other = market.paths.root.parent / "elsewhere"
    assert run(["research", "export", "--target", str(other)]) == 0
    assert (other / "instruments" / "all.txt").read_text().startswith(f"AAA\t{DAY0}\t{LAST}\n")
