"""The DuckDB catalog: views over the stores' Parquet files, read-only queries, table and CSV output."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from trader.data.bars import (
    ACTION_SCHEMA,
    ADJ_BAR_SCHEMA,
    LISTING_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_BAR_SCHEMA,
)
from trader.data.catalog import Catalog, CatalogError, format_table, sandboxed_connection
from trader.data.paths import DataPaths
from trader.data.raw import RECORD_SCHEMA, RawRecorder
from trader.data.store import (
    ACCEPTED_MOVE_SCHEMA,
    GAP_SCHEMA,
    ActionStore,
    AdjustedStore,
    GapStore,
    QuarantineStore,
    UniverseStore,
)

VIEWS = {
    "bars_raw": RAW_BAR_SCHEMA,
    "bars_adj": ADJ_BAR_SCHEMA,
    "corporate_actions": ACTION_SCHEMA,
    "quarantine": QUARANTINE_SCHEMA,
    "universe": LISTING_SCHEMA,
    "gaps": GAP_SCHEMA,
    "accepted_moves": ACCEPTED_MOVE_SCHEMA,
}
T1 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    return DataPaths(tmp_path / "data")


@pytest.fixture
def filled(paths: DataPaths) -> DataPaths:
    """A data directory with a few rows in every store."""
    bars = pl.DataFrame(
        [
            ("AAA", date(2024, 1, 31), 10.0, 11.0, 9.0, 10.5, 1000.0, "csv"),
            ("AAA", date(2024, 2, 1), 10.5, 11.5, 10.0, 11.0, 1200.0, "csv"),
            ("BBB", date(2024, 2, 1), 20.0, 21.0, 19.0, 20.5, 500.0, "csv"),
        ],
        schema=RECORD_SCHEMA,
        orient="row",
    )
    RawRecorder(paths).record(bars, T1)
    RawRecorder(paths).record(bars.head(1).with_columns(close=pl.lit(10.6)), T1.replace(hour=13))
    AdjustedStore(paths).replace_symbols(bars.with_columns(factor=pl.lit(0.5)))
    ActionStore(paths).merge(
        pl.DataFrame([("AAA", date(2024, 2, 1), 2.0, 0.0, "csv")], schema=ACTION_SCHEMA, orient="row")
    )
    UniverseStore(paths).merge(
        pl.DataFrame([("AAA", date(2010, 1, 4), None, True, "tech")], schema=LISTING_SCHEMA, orient="row")
    )
    QuarantineStore(paths).append(
        pl.DataFrame(
            [("BBB", date(2024, 2, 2), "csv", "ohlc", "low above high", json.dumps({"low": 30.0}))],
            schema=QUARANTINE_SCHEMA,
            orient="row",
        ),
        "ingest-1",
    )
    GapStore(paths).merge(
        pl.DataFrame([("BBB", date(2024, 1, 31), "missing session")], schema=GAP_SCHEMA, orient="row")
    )
    return paths


@pytest.mark.parametrize("view", list(VIEWS))
def test_views_over_an_empty_data_dir_are_empty_with_their_columns(paths: DataPaths, view: str) -> None:
    frame = Catalog(paths).query(f"SELECT * FROM {view}")

    assert frame.is_empty()
    assert frame.schema == pl.Schema(VIEWS[view])


def test_bars_adj_has_the_documented_columns(paths: DataPaths) -> None:
    columns = Catalog(paths).query("SELECT * FROM bars_adj").columns
    assert columns[:8] == ["symbol", "date", "open", "high", "low", "close", "volume", "factor"]


def test_queries_return_what_the_stores_hold(filled: DataPaths) -> None:
    catalog = Catalog(filled)

    assert_frame_equal(
        catalog.query("SELECT * FROM bars_raw ORDER BY symbol, date, source, ingested_at"),
        RawRecorder(filled).read(latest_only=False),
    )
    assert_frame_equal(
        catalog.query("SELECT * FROM bars_adj ORDER BY symbol, date"), AdjustedStore(filled).read()
    )
    assert_frame_equal(catalog.query("SELECT * FROM corporate_actions"), ActionStore(filled).read())
    assert_frame_equal(catalog.query("SELECT * FROM universe"), UniverseStore(filled).read())
    assert_frame_equal(catalog.query("SELECT * FROM quarantine"), QuarantineStore(filled).read())
    assert_frame_equal(catalog.query("SELECT * FROM gaps"), GapStore(filled).read())
    counts = catalog.query("SELECT reason, count(*) AS n FROM quarantine GROUP BY reason")
    assert counts.rows() == [("low above high", 1)]


def test_views_see_files_written_after_the_catalog_opened(paths: DataPaths) -> None:
    catalog = Catalog(paths)
    assert catalog.query("SELECT count(*) AS n FROM bars_adj").item() == 0

    bars = pl.DataFrame(
        [("AAA", date(2024, 2, 1), 10.0, 11.0, 9.0, 10.5, 100.0, 1.0, "csv")],
        schema=ADJ_BAR_SCHEMA,
        orient="row",
    )
    AdjustedStore(paths).replace_symbols(bars)

    assert catalog.query("SELECT count(*) AS n FROM bars_adj").item() == 1


def test_views_do_not_copy_data(filled: DataPaths) -> None:
    catalog = Catalog(filled)
    tables = catalog.query("SELECT table_name, table_type FROM information_schema.tables ORDER BY table_name")
    assert tables.rows() == sorted((name, "VIEW") for name in VIEWS)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", "Parser Error"),
        ("SELECT * FROM no_such_view", "Catalog Error"),
        ("SELECT nope FROM bars_adj", "Binder Error"),
        ("COPY (SELECT 1) TO 'out.csv'", "read-only"),
        ("CREATE TABLE t AS SELECT 1", "read-only"),
        ("SELECT 1; SELECT 2", "one SQL statement"),
        ("", "one SQL statement"),
    ],
)
def test_bad_or_writing_sql_raises_a_one_line_catalog_error(paths: DataPaths, sql: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as caught:
        Catalog(paths).query(sql)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)
    assert not Path("out.csv").exists()


def _fingerprint(paths: DataPaths) -> dict[str, str]:
    """Every file under the data dir with a hash of its bytes."""
    return {
        str(file.relative_to(paths.root)): hashlib.sha256(file.read_bytes()).hexdigest()
        for file in sorted(paths.root.rglob("*"))
        if file.is_file()
    }


# The audit's statements: EXPLAIN ANALYZE executes what it explains (DuckDB wrote the file and wiped
# the adjusted store), so every EXPLAIN of a non-SELECT and every EXPLAIN ANALYZE is refused.
WRITING_EXPLAINS = [
    "EXPLAIN ANALYZE COPY (select 42 as x) TO '{out}'",
    "EXPLAIN ANALYZE COPY (select * from bars_adj where close>999) TO '{store}' (FORMAT parquet)",
    "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
    "explain /* why not */ analyse COPY (select 1) TO '{out}'",
    "EXPLAIN (ANALYZE, FORMAT json) COPY (select 1) TO '{out}'",
    "EXPLAIN (FORMAT json, ANALYZE) SELECT * FROM bars_adj",
    "EXPLAIN ANALYZE SELECT * FROM bars_adj",
    "EXPLAIN COPY (select 1) TO '{out}'",
    "EXPLAIN CREATE TABLE t AS SELECT 1",
    "EXPLAIN INSERT INTO t VALUES (1)",
    "-- a comment first\nEXPLAIN\n\tANALYZE COPY (select 1) TO '{out}'",
]


@pytest.mark.parametrize("template", WRITING_EXPLAINS)
def test_explain_of_anything_but_a_select_or_with_analyze_is_refused_and_writes_nothing(
    filled: DataPaths, tmp_path: Path, template: str
) -> None:
    out = tmp_path / "x.csv"
    store = AdjustedStore(filled).files()[0]
    before = _fingerprint(filled)
    catalog = Catalog(filled)

    with pytest.raises(CatalogError, match="read-only") as caught:
        catalog.query(template.format(out=out, store=store))

    assert "\n" not in str(caught.value)
    assert not out.exists()
    assert _fingerprint(filled) == before
    assert catalog.query("SELECT count(*) AS n FROM bars_adj").item() == 3
    assert (
        catalog.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 't'").item()
        == 0
    )


def test_explain_analyze_is_named_in_its_refusal(paths: DataPaths) -> None:
    with pytest.raises(CatalogError, match="EXPLAIN ANALYZE runs the statement it explains"):
        Catalog(paths).query("EXPLAIN ANALYZE SELECT 1")
    with pytest.raises(CatalogError, match="EXPLAIN only a SELECT, not COPY"):
        Catalog(paths).query("EXPLAIN COPY (SELECT 1) TO 'out.csv'")


@pytest.mark.parametrize(
    "sql",
    [
        "EXPLAIN SELECT symbol, max(close) FROM bars_adj GROUP BY symbol",
        "explain /* plan */ select * from bars_raw where close > 10",
        "EXPLAIN (FORMAT json) SELECT * FROM quarantine",
        "EXPLAIN WITH a AS (SELECT * FROM gaps) SELECT * FROM a",
        "EXPLAIN DESCRIBE bars_adj",
    ],
)
def test_explain_of_a_select_still_shows_the_plan(filled: DataPaths, sql: str) -> None:
    plan = Catalog(filled).query(sql)

    assert plan.columns == ["explain_key", "explain_value"]
    assert plan.row(0)[0] == "physical_plan"


@pytest.mark.parametrize(
    "template",
    [
        "SELECT * FROM read_csv('{secret}')",
        "SELECT * FROM read_text('{secret}')",
        "SELECT * FROM read_parquet('{store}')",
        "SELECT * FROM '{store}'",
        "SELECT * FROM glob('{root}/*')",
    ],
)
def test_a_select_cannot_open_files_itself_only_the_views_read_the_stores(
    filled: DataPaths, tmp_path: Path, template: str
) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    store = AdjustedStore(filled).files()[0]

    with pytest.raises(CatalogError, match=r"Permission Error|disabled"):
        Catalog(filled).query(template.format(secret=secret, store=store, root=filled.root))


def test_the_sandboxed_connection_refuses_writes_and_cannot_be_reopened(tmp_path: Path) -> None:
    # The second layer on its own: even a statement the first layer let through could write nothing.
    connection = sandboxed_connection()
    out = tmp_path / "x.csv"
    for statement in (
        f"COPY (SELECT 1) TO '{out}'",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
        f"COPY (SELECT 1) TO '{out}' (FORMAT csv, USE_TMP_FILE false)",
        f"ATTACH '{tmp_path / 'db.duckdb'}' AS other",
        f"EXPORT DATABASE '{tmp_path}'",
    ):
        with pytest.raises(duckdb.PermissionException):
            connection.execute(statement)
    for setting in (
        "enable_external_access = true",
        f"allowed_directories = ['{tmp_path}']",
        "TimeZone = 'CET'",
    ):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            connection.execute(f"SET {setting}")
    assert list(tmp_path.iterdir()) == []


def test_views_read_files_written_before_a_column_was_added(paths: DataPaths) -> None:
    # Older files may lack a column; the view shows it as null instead of failing.
    bars = pl.DataFrame(
        [("AAA", date(2024, 2, 1), 10.0, 11.0, 9.0, 10.5, 100.0, 1.0, "csv")],
        schema=ADJ_BAR_SCHEMA,
        orient="row",
    )
    AdjustedStore(paths).replace_symbols(bars)
    file = AdjustedStore(paths).files()[0]
    pl.read_parquet(file).drop("source").write_parquet(file)

    frame = Catalog(paths).query("SELECT symbol, close, source FROM bars_adj")

    assert frame.rows() == [("AAA", 10.5, None)]


def test_format_table_csv_has_a_header_row() -> None:
    frame = pl.DataFrame({"symbol": ["AAA", "BBB"], "close": [10.5, None]})

    assert format_table(frame, csv=True) == "symbol,close\nAAA,10.5\nBBB,\n"
    assert format_table(frame.head(0), csv=True) == "symbol,close\n"


def test_format_table_aligns_columns_and_never_truncates() -> None:
    frame = pl.DataFrame(
        {"symbol": ["AAA", "LONGNAME"], "close": [10.5, None], "date": [date(2024, 2, 1)] * 2}
    )

    assert format_table(frame, csv=False).splitlines() == [
        "symbol    close  date",
        "--------  -----  ----------",
        "AAA        10.5  2024-02-01",
        "LONGNAME   NULL  2024-02-01",
        "(2 rows)",
    ]
    wide = pl.DataFrame({f"column_{i:02d}": [f"value_{i:02d}_with_a_long_text"] for i in range(20)})
    text = format_table(wide, csv=False)
    assert all(f"column_{i:02d}" in text and f"value_{i:02d}_with_a_long_text" in text for i in range(20))
    assert format_table(frame.head(0), csv=False).splitlines()[-1] == "(0 rows)"
