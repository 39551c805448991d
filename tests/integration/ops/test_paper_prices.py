"""What a paper day values its orders at: only bars the quality gate accepted.

The audit's case: a vendor glitch delivers a bad tick for a held symbol on the session before the
trading day. The gate quarantines it; the day must not value (or sell) that symbol at the refused
price. And ``paper-run``'s own ingest must write every store a ``trader data ingest`` writes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tests.support.services import RedisKeySpace
from trader.cli.data import pipeline_for
from trader.config import Settings
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources.csv_source import CsvSource
from trader.ops.paper_day import clean_closes, raw_closes
from trader.portfolio.allocator import SkipReason, allocate
from trader.store.db import make_engine
from trader.store.models import Event, Quarantine

HEADER = "symbol,date,open,high,low,close,volume"
DAYS = [date(2024, 1, day) for day in (2, 3, 4, 5, 8, 9, 10, 11)]
LAST = DAYS[-1]


def _csv(path: Path) -> Path:
    rows = []
    for i, day in enumerate(DAYS):
        for symbol in ("AAA", "BBB"):
            close = 100 + i
            if symbol == "BBB" and day == LAST:
                close = 1000  # a 10x tick on the last session: the gate's outlier rule refuses it
            rows.append(f"{symbol},{day},{close},{close + 1},{close - 1},{close},1000")
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def _ingest(pipeline: DataPipeline, tmp_path: Path) -> None:
    report = pipeline.ingest(
        CsvSource(_csv(tmp_path / "bars.csv")), None, DAYS[0], LAST, now=datetime(2024, 1, 11, 23, tzinfo=UTC)
    )
    assert report.quarantined_by_rule == {"outlier": 1}


def test_a_quarantined_bar_gives_no_price_so_the_symbol_is_not_traded(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path / "data")
    _ingest(DataPipeline(paths), tmp_path)
    assert raw_closes(paths, LAST) == {"AAA": Decimal("107.0"), "BBB": Decimal("1000.0")}
    prices = clean_closes(paths, LAST)
    assert prices == {"AAA": Decimal("107.0")}

    # Held BBB with a target of zero: without a clean price it is left alone, not sold at the tick.
    allocation = allocate({"AAA": Decimal("0.5")}, Decimal(100_000), {"BBB": Decimal(10)}, prices)
    assert [(o.symbol, o.side.value) for o in allocation.orders] == [("AAA", "buy")]
    assert [(s.symbol, s.reason) for s in allocation.skipped] == [("BBB", SkipReason.NO_PRICE)]


@pytest.mark.redis
def test_paper_runs_ingest_writes_the_database_and_the_online_store(
    tmp_path: Path, sqlite_template: Path, redis_url: str, redis_keyspace: RedisKeySpace
) -> None:
    db = tmp_path / "trader.db"
    db.write_bytes(sqlite_template.read_bytes())
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{db}",
        redis_url=redis_url,
        redis_key_prefix=redis_keyspace.prefix,
    )
    engine = make_engine(settings.database_url)
    try:
        pipeline = pipeline_for(settings, engine)
        _ingest(pipeline, tmp_path)
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(Quarantine)) == 1
            kinds = session.scalars(select(Event.kind)).all()
        assert kinds == ["data_ingested"]
    finally:
        engine.dispose()
    # The online store's keys live under REDIS_KEY_PREFIX, which the key space clears afterwards.
    assert pipeline.online is not None
    assert set(pipeline.online.symbols()) == {"AAA", "BBB"}
    assert pipeline.online.bars("BBB").get_column("date").max() == DAYS[-2]  # the tick is not served


def test_a_newer_raw_version_the_adjusted_store_never_took_gives_no_price(tmp_path: Path) -> None:
    import polars as pl

    from trader.data.raw import RawRecorder

    paths = DataPaths(tmp_path / "data")
    _ingest(DataPipeline(paths), tmp_path)
    # An ingest that recorded a corrected AAA bar and was then refused as a whole leaves the raw
    # record newer than the adjusted store: that close was never checked by the gate.
    corrected = pl.DataFrame(
        {"symbol": ["AAA"], "date": [LAST], "open": [150.0], "high": [151.0], "low": [149.0],
         "close": [150.0], "volume": [1000.0], "source": ["csv"]}
    )  # fmt: skip
    RawRecorder(paths).prepare(corrected, ingested_at=datetime(2024, 1, 12, tzinfo=UTC)).publish()
    assert raw_closes(paths, LAST)["AAA"] == Decimal("150.0")
    assert clean_closes(paths, LAST) == {}
