"""Quarantine and universe in the database, on SQLite and PostgreSQL: idempotent, one transaction."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import Engine, func, select

from trader.data.bars import LISTING_SCHEMA, QUARANTINE_SCHEMA
from trader.data.paths import DataPaths
from trader.data.store import QuarantineStore, UniverseStore
from trader.store.db import session_factory, transaction
from trader.store.models import Quarantine, Universe


def quarantined() -> pl.DataFrame:
    return pl.DataFrame(
        [
            (
                "AAA",
                date(2021, 1, 5),
                "csv",
                "ohlc",
                "low 12.0 above close 11.0",
                json.dumps({"close": 11.0}),
            ),
            (
                "AAA",
                date(2021, 2, 5),
                "csv",
                "outlier",
                "return +45% without action",
                json.dumps({"r": 0.45}),
            ),
            ("BBB", None, None, "schema", "date missing", "not json"),
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )


def db_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        query = select(
            Quarantine.symbol, Quarantine.date, Quarantine.source, Quarantine.rule, Quarantine.payload
        )
        return [tuple(row) for row in connection.execute(query.order_by(Quarantine.rule))]


def test_quarantine_goes_to_parquet_and_the_table_once(migrated_engine: Engine, tmp_path: Path) -> None:
    store = QuarantineStore(DataPaths(tmp_path / "data"))
    rows = quarantined()

    assert store.append(rows, "ingest-1") == 3
    assert store.record_in_db(migrated_engine, rows) == 3
    # Re-ingesting the same data quarantines nothing twice, in Parquet or in the table.
    assert store.append(rows, "ingest-2") == 0
    assert store.record_in_db(migrated_engine, rows) == 0

    assert db_rows(migrated_engine) == [
        ("AAA", date(2021, 1, 5), "csv", "ohlc", {"close": 11.0}),
        ("AAA", date(2021, 2, 5), "csv", "outlier", {"r": 0.45}),
        ("BBB", None, "unknown", "schema", {"text": "not json"}),
    ]
    assert store.read().height == 3


def test_a_new_rule_for_a_known_row_is_recorded(migrated_engine: Engine, tmp_path: Path) -> None:
    store = QuarantineStore(DataPaths(tmp_path / "data"))
    store.record_in_db(migrated_engine, quarantined().head(1))

    again = (
        quarantined().head(1).with_columns(rule=pl.lit("duplicate"), reason=pl.lit("two rows for one day"))
    )
    assert store.record_in_db(migrated_engine, again) == 1
    assert store.record_in_db(migrated_engine, quarantined().head(0)) == 0
    assert [row[3] for row in db_rows(migrated_engine)] == ["duplicate", "ohlc"]


def test_with_a_session_the_insert_joins_the_callers_transaction(
    migrated_engine: Engine, tmp_path: Path
) -> None:
    store = QuarantineStore(DataPaths(tmp_path / "data"))
    factory = session_factory(migrated_engine)

    with pytest.raises(RuntimeError), transaction(factory) as session:
        assert store.record_in_db(session, quarantined()) == 3
        raise RuntimeError("the rest of the use case failed")
    assert db_rows(migrated_engine) == []

    with transaction(factory) as session:
        store.record_in_db(session, quarantined())
    assert len(db_rows(migrated_engine)) == 3


def test_quarantine_rows_without_a_reason_are_refused(migrated_engine: Engine, tmp_path: Path) -> None:
    store = QuarantineStore(DataPaths(tmp_path / "data"))
    with pytest.raises(ValueError, match="rule and a reason"):
        store.record_in_db(migrated_engine, quarantined().with_columns(reason=pl.lit("")))
    assert db_rows(migrated_engine) == []


def test_universe_sync_upserts_and_keeps_columns_parquet_does_not_hold(
    migrated_engine: Engine, tmp_path: Path
) -> None:
    store = UniverseStore(DataPaths(tmp_path / "data"))
    store.merge(
        pl.DataFrame(
            [("AAA", date(2010, 1, 4), None, True, "tech"), ("BBB", date(2015, 6, 1), None, True, None)],
            schema=LISTING_SCHEMA,
            orient="row",
        )
    )
    assert store.sync_to_db(migrated_engine) == 2
    with transaction(session_factory(migrated_engine)) as session:
        session.get_one(Universe, ("AAA", date(2010, 1, 4))).name = "Triple A Corp"

    store.merge(
        pl.DataFrame(
            [("AAA", date(2010, 1, 4), date(2023, 3, 31), False, "tech")], schema=LISTING_SCHEMA, orient="row"
        )
    )
    assert store.sync_to_db(migrated_engine) == 2

    with migrated_engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Universe)) == 2
        row = connection.execute(
            select(Universe.end_date, Universe.tradable, Universe.name, Universe.sector).where(
                Universe.symbol == "AAA"
            )
        ).one()
    assert tuple(row) == (date(2023, 3, 31), False, "Triple A Corp", "tech")


def test_an_empty_universe_syncs_nothing(migrated_engine: Engine, tmp_path: Path) -> None:
    assert UniverseStore(DataPaths(tmp_path / "data")).sync_to_db(migrated_engine) == 0


def test_universe_sync_drops_a_listing_that_moved(migrated_engine: Engine, tmp_path: Path) -> None:
    store = UniverseStore(DataPaths(tmp_path / "data"))
    first_bar = {"symbol": pl.String, "start_date": pl.Date}
    store.apply(
        store.plan(
            pl.DataFrame(schema=LISTING_SCHEMA),
            pl.DataFrame([("CSV", date(2024, 1, 8))], schema=first_bar, orient="row"),
        )
    )
    manual = pl.DataFrame(
        [("OTHER", date(2010, 1, 4), None, True, None)], schema=LISTING_SCHEMA, orient="row"
    )
    store.merge(manual)
    store.sync_to_db(migrated_engine)

    # A backfill moved CSV's derived listing earlier: the table follows, other symbols are untouched.
    store.apply(
        store.plan(
            pl.DataFrame(schema=LISTING_SCHEMA),
            pl.DataFrame([("CSV", date(2023, 6, 1))], schema=first_bar, orient="row"),
        )
    )
    assert store.sync_to_db(migrated_engine) == 2

    with migrated_engine.connect() as connection:
        rows = connection.execute(
            select(Universe.symbol, Universe.start_date).order_by(Universe.symbol)
        ).all()
    assert [tuple(row) for row in rows] == [("CSV", date(2023, 6, 1)), ("OTHER", date(2010, 1, 4))]


def test_every_version_of_a_conflict_is_kept_once_in_parquet_and_the_table(
    migrated_engine: Engine, tmp_path: Path
) -> None:
    store = QuarantineStore(DataPaths(tmp_path / "data"))
    pair = pl.DataFrame(
        [
            (
                "AAA",
                date(2024, 1, 3),
                "csv",
                "conflicting_duplicate",
                "two versions",
                json.dumps({"close": 101.0}),
            ),
            (
                "AAA",
                date(2024, 1, 3),
                "csv",
                "conflicting_duplicate",
                "two versions",
                json.dumps({"close": 101.5}),
            ),
            ("AAA", None, "csv", "missing_value", "date unreadable", json.dumps({"close": 1.0})),
            ("AAA", None, "csv", "missing_value", "date unreadable", json.dumps({"close": 2.0})),
        ],
        schema=QUARANTINE_SCHEMA,
        orient="row",
    )
    # The two versions and the two unreadable rows are four refused rows, not two.
    assert store.append(pair, "ingest-1") == 4 and store.record_in_db(migrated_engine, pair) == 4
    assert store.read().height == 4 and len(db_rows(migrated_engine)) == 4
    # The same batch again adds nothing; a batch with one of them (re-adjusted values) adds nothing.
    assert store.append(pair, "ingest-2") == 0 and store.record_in_db(migrated_engine, pair) == 0
    assert (
        store.append(pair.head(1), "ingest-3") == 0 and store.record_in_db(migrated_engine, pair.head(1)) == 0
    )
    # A third version of the day arriving with the two is recorded.
    three = pl.concat([pair.head(2), pair.head(1).with_columns(payload=pl.lit(json.dumps({"close": 99.0})))])
    assert store.append(three, "ingest-4") == 1 and store.record_in_db(migrated_engine, three) == 1
