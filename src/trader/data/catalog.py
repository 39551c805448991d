"""The DuckDB catalog: SQL views over the data layer's Parquet files, for ``trader data sql``.

Views, not tables: DuckDB reads the Parquet files at query time, so the catalog copies nothing and
never disagrees with the stores. The connection is in memory and the views are (re)defined from the
files present before every query; a view whose files do not exist yet is an empty, typed relation
with the same columns, so a query against a fresh ``DATA_DIR`` returns zero rows instead of failing.

=====================  ===========================================================================
view                   columns
=====================  ===========================================================================
``bars_raw``           every raw row ever recorded (all versions): ``RAW_BAR_SCHEMA``
``bars_adj``           ``symbol, date, open, high, low, close, volume, factor, source``
``corporate_actions``  ``symbol, ex_date, split_ratio, cash_dividend, source``
``quarantine``         ``symbol, date, source, rule, reason, payload``
``universe``           ``symbol, start_date, end_date, tradable, sector``
``gaps``               ``symbol, date, reason``
=====================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import duckdb
import polars as pl

from trader.data.bars import ACTION_SCHEMA, ADJ_BAR_SCHEMA, LISTING_SCHEMA, QUARANTINE_SCHEMA, RAW_BAR_SCHEMA
from trader.data.paths import DataPaths
from trader.data.raw import RawRecorder
from trader.data.store import GAP_SCHEMA, AdjustedStore, QuarantineStore

#: Statement types a catalog query may be: reading only (``DESCRIBE``/``SHOW``/``SUMMARIZE`` parse
#: as SELECT). ``COPY ... TO``, ``SET``, ``ATTACH``, ``INSTALL``... are refused.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


class CatalogError(ValueError):
    """A catalog query was refused or failed; the message is DuckDB's, on one line."""


def _duck_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    names: dict[type[pl.DataType], str] = {
        pl.String: "VARCHAR",
        pl.Date: "DATE",
        pl.Float64: "DOUBLE",
        pl.Boolean: "BOOLEAN",
        pl.Int64: "BIGINT",
    }
    return names[type(dtype)]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def view_sql(name: str, schema: dict[str, pl.DataType], files: Sequence[Path]) -> str:
    """``CREATE OR REPLACE VIEW`` of ``files`` with exactly ``schema``'s columns, in order and types.

    Without files the view is an empty typed relation, so it has the right columns before the first
    ingest.
    """
    columns = ", ".join(
        f"CAST({'NULL' if not files else _ident(col)} AS {_duck_type(dtype)}) AS {_ident(col)}"
        for col, dtype in schema.items()
    )
    if not files:
        return f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT {columns} WHERE false"
    listing = ", ".join(_quote(str(path)) for path in files)
    # union_by_name: a file written before a column was added still reads (the column is NULL).
    source = f"read_parquet([{listing}], hive_partitioning = false, union_by_name = true)"
    # Names are our own and quoted, paths are quoted literals: no user text reaches this statement.
    return f"CREATE OR REPLACE VIEW {_ident(name)} AS SELECT {columns} FROM {source}"  # noqa: S608


def _one_line(error: Exception) -> str:
    # DuckDB appends hints and a caret diagram after the message; keep the message and the hint
    # ("Did you mean ...?"), drop the ``LINE 1:`` diagram, and join them on one line.
    lines = []
    for line in str(error).splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines) or type(error).__name__


def _existing(path: Path) -> list[Path]:
    return [path] if path.is_file() else []


class Catalog:
    """DuckDB views over one ``DATA_DIR``; :meth:`query` runs read-only SQL and returns Polars."""

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths
        self._connection = duckdb.connect(":memory:")
        # Timestamps come back in UTC whatever the machine's zone (see DECISIONS: UTC everywhere).
        self._connection.execute("SET TimeZone = 'UTC'")
        raw, adjusted, quarantine = RawRecorder(paths), AdjustedStore(paths), QuarantineStore(paths)
        self._views: dict[str, tuple[dict[str, pl.DataType], Callable[[], list[Path]]]] = {
            "bars_raw": (RAW_BAR_SCHEMA, raw.files),
            "bars_adj": (ADJ_BAR_SCHEMA, adjusted.files),
            "corporate_actions": (ACTION_SCHEMA, lambda: _existing(paths.actions)),
            "quarantine": (QUARANTINE_SCHEMA, quarantine.files),
            "universe": (LISTING_SCHEMA, lambda: _existing(paths.universe)),
            "gaps": (GAP_SCHEMA, lambda: _existing(paths.gaps)),
        }
        self.refresh()

    @property
    def views(self) -> list[str]:
        """Names of the views the catalog defines."""
        return list(self._views)

    def refresh(self) -> None:
        """Redefine every view from the files present now (files are added by every ingest)."""
        for name, (schema, files) in self._views.items():
            self._connection.execute(view_sql(name, schema, files()))

    def query(self, sql: str) -> pl.DataFrame:
        """Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) and return its rows.

        Raises :class:`CatalogError` with DuckDB's message on one line when the SQL does not parse,
        fails, is not a single statement or would write anything.
        """
        try:
            statements = self._connection.extract_statements(sql)
        except duckdb.Error as exc:
            raise CatalogError(_one_line(exc)) from None
        if len(statements) != 1:
            raise CatalogError(f"expected one SQL statement, got {len(statements)}")
        if statements[0].type not in _READ_ONLY:
            raise CatalogError(f"only read-only queries are allowed, not {statements[0].type.name}")
        self.refresh()
        try:
            relation = self._connection.sql(sql)
            if relation is None:  # pragma: no cover - SELECT and EXPLAIN always return rows
                return pl.DataFrame()
            table = relation.to_arrow_table()
        except duckdb.Error as exc:
            raise CatalogError(_one_line(exc)) from None
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)  # a Table always converts to a frame
        return frame

    def close(self) -> None:
        """Close the DuckDB connection."""
        self._connection.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


_NULL_TEXT = "NULL"
_SEPARATOR = "  "


def _as_text(series: pl.Series) -> pl.Series:
    if series.dtype.is_nested() or series.dtype == pl.Object:
        # Lists and structs have no cast to text; Python's rendering of the value is readable enough.
        return pl.Series(series.name, [None if v is None else str(v) for v in series.to_list()], pl.String)
    return series.cast(pl.String)


def _longest(text: pl.Series) -> int:
    longest = text.str.len_chars().max()
    return int(longest) if isinstance(longest, int) else 0


def format_table(df: pl.DataFrame, csv: bool = False) -> str:
    """Render a query result for the terminal.

    ``csv``: CSV with a header row (ends with a newline). Otherwise an aligned text table: header,
    a dashed rule, one line per row (numbers right-aligned, NULL for a missing value; nothing is
    truncated) and a ``(N rows)`` footer, without a trailing newline.
    """
    if csv:
        return df.write_csv()
    if df.width == 0:
        return f"({df.height} row{'' if df.height == 1 else 's'}, no columns)"
    texts = [_as_text(df.get_column(name)).fill_null(_NULL_TEXT) for name in df.columns]
    widths = [max(len(text.name), _longest(text)) for text in texts]
    right = [df.schema[name].is_numeric() for name in df.columns]

    def pad(value: str, width: int, to_right: bool) -> str:
        return value.rjust(width) if to_right else value.ljust(width)

    header = _SEPARATOR.join(pad(t.name, w, r) for t, w, r in zip(texts, widths, right, strict=True))
    rule = _SEPARATOR.join("-" * w for w in widths)
    lines = [header.rstrip(), rule]
    if df.height:
        padded = [
            t.str.pad_start(w) if r else t.str.pad_end(w)
            for t, w, r in zip(texts, widths, right, strict=True)
        ]
        body = pl.DataFrame(padded).select(
            pl.concat_str(pl.all(), separator=_SEPARATOR).str.strip_chars_end().alias("line")
        )
        lines.extend(body.get_column("line").to_list())
    lines.append(f"({df.height} row{'' if df.height == 1 else 's'})")
    return "\n".join(lines)
