"""The DuckDB catalog: SQL views over the data layer's Parquet files, for ``trader data sql``.

Views, not tables: the Parquet files are read at query time, so the catalog copies nothing and
never disagrees with the stores. The connection is in memory and the views are (re)defined from the
files present before every query; a view whose files do not exist yet is an empty, typed relation
with the same columns, so a query against a fresh ``DATA_DIR`` returns zero rows instead of failing.

Read-only, in two layers, because the SQL is the user's and DuckDB can write files
(``COPY ... TO``) and read any file (``read_csv('/etc/passwd')``):

1. Only ``SELECT`` (with ``WITH``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``...) and ``EXPLAIN SELECT``
   statements are accepted. ``EXPLAIN ANALYZE`` runs the statement it explains, so it is refused,
   and so is ``EXPLAIN`` of anything but a ``SELECT``.
2. The DuckDB connection has no file access at all (``enable_external_access = false``, then
   ``lock_configuration = true`` so no statement can turn it back on). Each view is a PyArrow dataset
   registered with the connection: PyArrow opens the Parquet files (lazily, with DuckDB's projections
   and filters pushed down), so DuckDB never needs a path. ``allowed_directories`` /
   ``allowed_paths`` were not used: they let DuckDB *write* where they let it read, so a
   ``COPY ... TO`` into ``DATA_DIR`` would still overwrite the stores.

=====================  ===========================================================================
view                   columns
=====================  ===========================================================================
``bars_raw``           every raw row ever recorded (all versions): ``RAW_BAR_SCHEMA``
``bars_adj``           ``symbol, date, open, high, low, close, volume, factor, source``
``corporate_actions``  ``symbol, ex_date, split_ratio, cash_dividend, source``
``quarantine``         ``symbol, date, source, rule, reason, payload``
``universe``           ``symbol, start_date, end_date, tradable, sector``
``gaps``               ``symbol, date, reason``
``accepted_moves``     ``symbol, date, close, reason, accepted_at`` (``trader data accept``)
=====================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads

from trader.data.bars import ACTION_SCHEMA, ADJ_BAR_SCHEMA, LISTING_SCHEMA, QUARANTINE_SCHEMA, RAW_BAR_SCHEMA
from trader.data.paths import DataPaths
from trader.data.raw import RawRecorder
from trader.data.store import ACCEPTED_MOVE_SCHEMA, GAP_SCHEMA, AdjustedStore, QuarantineStore

#: Statement types a catalog query may be: reading only (``DESCRIBE``/``SHOW``/``SUMMARIZE`` parse
#: as SELECT; EXPLAIN is checked further by :func:`_check_explain`). ``COPY ... TO``, ``SET``,
#: ``ATTACH``, ``INSTALL``... are refused.
_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
#: ``EXPLAIN ANALYZE`` (or ``EXPLAIN (ANALYZE) ...``) executes the explained statement.
_ANALYZE = {"ANALYZE", "ANALYSE"}


class CatalogError(ValueError):
    """A catalog query was refused or failed; the message is DuckDB's, on one line."""


def view_dataset(schema: dict[str, pl.DataType], files: Sequence[Path]) -> pads.Dataset:
    """A lazy PyArrow dataset over ``files`` with exactly ``schema``'s columns, in order and types.

    The explicit schema makes a file written before a column was added read with that column null,
    drops columns the view does not show, and gives an empty, typed dataset when there are no files
    (so the view has the right columns before the first ingest).
    """
    arrow_schema = pl.DataFrame(schema=schema).to_arrow().schema
    return pads.dataset([str(path) for path in files], schema=arrow_schema, format="parquet")


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


def sandboxed_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that can open no file, for reading or writing, ever.

    Data reaches it only through registered Python objects (see :func:`view_dataset`). The
    configuration is locked last, so no statement can switch file access back on.
    """
    connection = duckdb.connect(":memory:")
    # Timestamps come back in UTC whatever the machine's zone (see DECISIONS: UTC everywhere). Set
    # before the lock, which refuses every later SET.
    connection.execute("SET TimeZone = 'UTC'")
    connection.execute("SET enable_external_access = false")
    connection.execute("SET lock_configuration = true")
    return connection


def check_read_only(connection: duckdb.DuckDBPyConnection, statement: duckdb.Statement) -> None:
    """Raise :class:`CatalogError` unless ``statement`` only reads (a SELECT, or EXPLAIN of one)."""
    if statement.type not in _READ_ONLY:
        raise CatalogError(f"only read-only queries are allowed, not {statement.type.name}")
    if statement.type == duckdb.StatementType.EXPLAIN:
        _check_explain(connection, statement.query)


def _words(text: str) -> list[tuple[int, str]]:
    """The tokens of ``text`` as (offset, text) pairs, comments left out, by DuckDB's own tokenizer."""
    tokens = duckdb.tokenize(text)
    ends = [start for start, _ in tokens[1:]] + [len(text)]
    return [
        (start, text[start:end].strip())
        for (start, kind), end in zip(tokens, ends, strict=True)
        if kind != duckdb.token_type.comment
    ]


def _check_explain(connection: duckdb.DuckDBPyConnection, text: str) -> None:
    """Refuse ``EXPLAIN ANALYZE`` (it executes the statement) and EXPLAIN of anything but a SELECT."""
    words = _words(text)[1:]  # after the EXPLAIN keyword
    options: list[str] = []
    if words and words[0][1] == "(":  # EXPLAIN (ANALYZE, FORMAT json) ...
        close = next((i for i, (_, word) in enumerate(words) if word == ")"), None)
        if close is None:
            raise CatalogError("EXPLAIN: cannot read its options; write EXPLAIN SELECT ...")
        options, words = [word for _, word in words[1:close]], words[close + 1 :]
    elif words and words[0][1].upper() in _ANALYZE:
        options, words = [words[0][1]], words[1:]
    if any(option.upper() in _ANALYZE for option in options):
        raise CatalogError(
            "only read-only queries are allowed: EXPLAIN ANALYZE runs the statement it explains; "
            "use EXPLAIN without ANALYZE"
        )
    inner = connection.extract_statements(text[words[0][0] :]) if words else []
    if len(inner) != 1 or inner[0].type != duckdb.StatementType.SELECT:
        kind = inner[0].type.name if len(inner) == 1 else "nothing"
        raise CatalogError(f"only read-only queries are allowed: EXPLAIN only a SELECT, not {kind}")


class Catalog:
    """Views over one ``DATA_DIR``; :meth:`query` runs read-only SQL and returns Polars (module doc)."""

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths
        self._connection = sandboxed_connection()
        raw, adjusted, quarantine = RawRecorder(paths), AdjustedStore(paths), QuarantineStore(paths)
        self._views: dict[str, tuple[dict[str, pl.DataType], Callable[[], list[Path]]]] = {
            "bars_raw": (RAW_BAR_SCHEMA, raw.files),
            "bars_adj": (ADJ_BAR_SCHEMA, adjusted.files),
            "corporate_actions": (ACTION_SCHEMA, lambda: _existing(paths.actions)),
            "quarantine": (QUARANTINE_SCHEMA, quarantine.files),
            "universe": (LISTING_SCHEMA, lambda: _existing(paths.universe)),
            "gaps": (GAP_SCHEMA, lambda: _existing(paths.gaps)),
            "accepted_moves": (ACCEPTED_MOVE_SCHEMA, lambda: _existing(paths.accepted_moves)),
        }
        self.refresh()

    @property
    def views(self) -> list[str]:
        """Names of the views the catalog defines."""
        return list(self._views)

    def refresh(self) -> None:
        """Redefine every view from the files present now (files are added by every ingest)."""
        for name, (schema, files) in self._views.items():
            self._connection.register(name, view_dataset(schema, files()))

    def query(self, sql: str) -> pl.DataFrame:
        """Run one read-only statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) and return its rows.

        Raises :class:`CatalogError` with DuckDB's message on one line when the SQL does not parse,
        fails, is not a single statement, would write anything (``EXPLAIN ANALYZE`` included) or
        touches a file (``read_csv(...)``, ``COPY``, ``ATTACH``...).
        """
        try:
            statements = self._connection.extract_statements(sql)
            if len(statements) != 1:
                raise CatalogError(f"expected one SQL statement, got {len(statements)}")
            check_read_only(self._connection, statements[0])
        except duckdb.Error as exc:
            raise CatalogError(_one_line(exc)) from None
        try:
            self.refresh()
            relation = self._connection.sql(sql)
            if relation is None:  # pragma: no cover - SELECT and EXPLAIN always return rows
                return pl.DataFrame()
            table = relation.to_arrow_table()
        except duckdb.PermissionException as exc:
            hint = f"a query reads files only through the views: {', '.join(self.views)}"
            raise CatalogError(f"{_one_line(exc)} ({hint})") from None
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # OSError, ArrowException: a file an ingest replaced or removed while it was being read.
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
