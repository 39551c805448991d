"""What an ingest leaves behind besides bars: per-symbol freshness, derived listings, status counts.

Hand-made batches of a few bars, so every expected value can be read off the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import Engine, select

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, LISTING_SCHEMA, BarBatch
from trader.data.freshness import StalenessError
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources import SourceHealth
from trader.data.status import data_status
from trader.data.store import AdjustedStore, QuarantineStore
from trader.store.models import Universe

# Monday 2024-01-08, 14:00 UTC (before the open): the last closed session is Friday 2024-01-05.
MONDAY_MORNING = datetime(2024, 1, 8, 14, tzinfo=UTC)
JANUARY = (date(2024, 1, 1), date(2024, 1, 31))
WEEK = [date(2024, 1, day) for day in (2, 3, 4, 5)]
NEXT_WEEK = [date(2024, 1, day) for day in (8, 9, 10, 11, 12)]


def bar(symbol: str, day: date, close: float = 10.0, *, broken: bool = False) -> tuple[object, ...]:
    """One bar; ``broken`` puts the low above the high (``ohlc_inconsistent``)."""
    low, high = (close + 2, close - 2) if broken else (close - 1, close + 1)
    return (symbol, day, close, high, low, close, 1000.0)


class Batch:
    """A source that delivers one fixed batch (bars, optional listings and actions)."""

    def __init__(
        self,
        rows: Sequence[tuple[object, ...]],
        listings: Sequence[tuple[object, ...]] = (),
        name: str = "csv",
    ) -> None:
        self.name = name
        self.batch = BarBatch(
            bars=pl.DataFrame(list(rows), schema=BAR_SCHEMA, orient="row"),
            actions=pl.DataFrame(schema=ACTION_SCHEMA),
            listings=pl.DataFrame(list(listings), schema=LISTING_SCHEMA, orient="row"),
        )

    def health(self) -> SourceHealth:
        return SourceHealth(source=self.name, ok=True)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        return self.batch


@pytest.fixture
def pipeline(tmp_path: Path) -> DataPipeline:
    return DataPipeline(DataPaths(tmp_path / "data"))


# -- freshness per symbol, on clean bars -------------------------------------------------------------


def test_a_symbol_whose_newest_bars_were_quarantined_is_stale(pipeline: DataPipeline) -> None:
    # The batch's newest bar (Friday) is as new as it can be, but XYZ's Friday bar is refused.
    source = Batch([*(bar("ABC", d) for d in WEEK), *(bar("XYZ", d) for d in WEEK[:-1])])
    source.batch.bars = pl.concat(
        [
            source.batch.bars,
            pl.DataFrame([bar("XYZ", WEEK[-1], broken=True)], schema=BAR_SCHEMA, orient="row"),
        ]
    )

    report = pipeline.ingest(source, None, *JANUARY, now=MONDAY_MORNING)

    assert report.quarantined_by_rule == {"ohlc_inconsistent": 1}
    assert report.fresh is False
    assert report.stale_symbols == ["XYZ"]
    assert "XYZ: newest bar is 2024-01-04, 1 session(s) behind" in report.freshness
    assert report.newest_bar == WEEK[-1]
    # Without the flag the ingest is reported stale and stored all the same.
    assert pipeline.adjusted.symbols() == ["ABC", "XYZ"]


def test_require_fresh_refuses_a_stale_symbol_before_anything_but_raw_is_stored(
    pipeline: DataPipeline,
) -> None:
    rows = [*(bar("ABC", d) for d in WEEK), *(bar("XYZ", d) for d in WEEK[:-1])]
    source = Batch(rows, listings=[("ABC", date(2000, 1, 3), None, True, "tech")])

    with pytest.raises(StalenessError) as raised:
        pipeline.ingest(source, None, *JANUARY, now=MONDAY_MORNING, require_fresh=True)

    error = raised.value
    assert (error.symbol, error.latest, error.expected, error.sessions_behind) == ("XYZ", WEEK[2], WEEK[3], 1)
    assert error.symbols == ("XYZ",)
    assert pipeline.raw.read().height == len(rows)  # raw keeps what arrived
    paths = pipeline.paths
    assert AdjustedStore(paths).files() == [] and QuarantineStore(paths).files() == []
    assert not paths.universe.exists() and not paths.derived_listings.exists()
    assert not paths.actions.exists() and not paths.gaps.exists()


def test_a_symbol_without_any_clean_bar_is_stale(pipeline: DataPipeline) -> None:
    source = Batch([*(bar("ABC", d) for d in WEEK), *(bar("BAD", d, broken=True) for d in WEEK)])

    report = pipeline.ingest(source, None, *JANUARY, now=MONDAY_MORNING)

    assert report.stale_symbols == ["BAD"]
    assert "BAD: no clean bar at all" in report.freshness
    with pytest.raises(StalenessError, match="BAD: no clean bar at all"):
        pipeline.ingest(source, None, *JANUARY, now=MONDAY_MORNING, require_fresh=True)


def test_a_delisted_symbol_is_not_stale(pipeline: DataPipeline) -> None:
    # GONE stopped trading on 2024-01-03; its last bar was even refused. LATE is still listed.
    rows = [
        *(bar("ABC", d) for d in WEEK),
        bar("GONE", WEEK[0]),
        bar("GONE", WEEK[1], broken=True),
        *(bar("LATE", d) for d in WEEK[:2]),
    ]
    listings = [
        ("ABC", date(2000, 1, 3), None, True, None),
        ("GONE", date(2000, 1, 3), WEEK[1], False, None),
        ("LATE", date(2000, 1, 3), date(2024, 6, 28), True, None),  # delisting announced, not yet
    ]

    report = pipeline.ingest(Batch(rows, listings), None, *JANUARY, now=MONDAY_MORNING)

    assert report.stale_symbols == ["LATE"]
    assert "GONE" not in report.freshness
    only_delisted = Batch([bar("GONE", WEEK[0])], listings[1:2])
    assert pipeline.ingest(only_delisted, None, *JANUARY, now=MONDAY_MORNING, require_fresh=True).fresh


# -- derived listings --------------------------------------------------------------------------------


def test_a_backfill_moves_a_derived_listing_start_earlier(migrated_engine: Engine, tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), engine=migrated_engine)
    later = datetime(2024, 1, 15, 14, tzinfo=UTC)
    pipeline.ingest(Batch([bar("ABC", d) for d in NEXT_WEEK]), None, *JANUARY, now=later)
    assert pipeline.universe.read().select("symbol", "start_date").rows() == [("ABC", NEXT_WEEK[0])]

    report = pipeline.ingest(Batch([bar("ABC", d) for d in WEEK]), None, *JANUARY, now=later)

    assert report.fresh is True  # the newest clean bar is still Friday the 12th
    assert pipeline.universe.read().select("symbol", "start_date", "end_date").rows() == [
        ("ABC", WEEK[0], None)
    ]
    assert pipeline.universe.listed_on(WEEK[0]) == ["ABC"]
    assert report.gaps == 0  # the backfilled week is inside the listing and complete
    with migrated_engine.connect() as connection:
        rows = connection.execute(select(Universe.symbol, Universe.start_date)).all()
    assert [tuple(row) for row in rows] == [("ABC", WEEK[0])]


def test_a_source_listing_replaces_the_derived_one(pipeline: DataPipeline) -> None:
    pipeline.ingest(Batch([bar("ABC", d) for d in WEEK]), None, *JANUARY, now=MONDAY_MORNING)

    listing = [("ABC", date(1999, 11, 1), None, True, "tech")]
    pipeline.ingest(Batch([bar("ABC", d) for d in WEEK], listing), None, *JANUARY, now=MONDAY_MORNING)

    assert pipeline.universe.read().select("symbol", "start_date", "sector").rows() == [
        ("ABC", date(1999, 11, 1), "tech")
    ]
    assert pipeline.universe.read_derived().is_empty()


# -- status counts only what is still quarantined ----------------------------------------------------


def test_status_does_not_count_a_bar_a_later_delivery_made_clean(pipeline: DataPipeline) -> None:
    first = Batch([bar("ABC", WEEK[0]), bar("ABC", WEEK[1], broken=True), bar("XYZ", WEEK[0], broken=True)])
    pipeline.ingest(first, None, *JANUARY, now=datetime(2024, 1, 3, 23, tzinfo=UTC))
    before = data_status(pipeline.paths, MONDAY_MORNING, calendar=pipeline.calendar)
    assert before.quarantine_by_rule == {"ohlc_inconsistent": 2}
    assert dict(before.symbols.select("symbol", "quarantined").iter_rows()) == {"ABC": 1, "XYZ": 1}

    # ABC's corrected bar for the 3rd arrives (and a repeat of the 4th): the refusal is history.
    fixed = Batch([bar("ABC", WEEK[1]), bar("ABC", WEEK[2]), bar("ABC", WEEK[2])])
    pipeline.ingest(fixed, None, *JANUARY, now=datetime(2024, 1, 4, 23, tzinfo=UTC))

    after = data_status(pipeline.paths, MONDAY_MORNING, calendar=pipeline.calendar)
    assert dict(after.symbols.select("symbol", "quarantined").iter_rows()) == {"ABC": 1, "XYZ": 1}
    # ABC's count is the repeat (a duplicate stays counted next to its clean first copy), not the fix.
    assert after.quarantine_by_rule == {"duplicate": 1, "ohlc_inconsistent": 1}
    assert pipeline.quarantine.read().height == 3  # the record itself is append-only
