"""Daily bars and corporate actions from CSV files (plain or gzipped).

Bars: one file, or every ``*.csv`` / ``*.csv.gz`` in a directory (any case: ``*.CSV`` too; sorted by
name), with the header
``symbol,date,open,high,low,close,volume``. Header names are matched case-insensitively and common
aliases are accepted (:data:`BAR_ALIASES`); other columns are ignored. ``Adj Close`` is deliberately
*not* taken as the close: the pipeline wants raw prices and adjusts them itself.

A cell that cannot be read (a number like ``1,234``, a date like ``02/01/2024``, an empty symbol) is
not an error and the row is not dropped: it becomes null, so the quality gate quarantines the row as a
missing value with the rest of the row kept as evidence. :attr:`CsvSource.last_report` counts such
cells per column. A file without a required column, by contrast, is refused as a whole.

Corporate actions: an optional file ``symbol,ex_date,split_ratio,cash_dividend`` (a 2-for-1 split has
``split_ratio`` 2). It is reference data a wrong row would corrupt whole histories with, so it is read
strictly: any unreadable or impossible value raises :class:`SourceError` naming the row.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, BarBatch, empty
from trader.data.sources import SourceError, SourceHealth
from trader.errors import first_line

#: Accepted header names (lower-cased, surrounding spaces removed) for each bar column.
BAR_ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "date": ("date", "timestamp", "day", "time", "datetime"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "v", "vol"),
}

#: Accepted header names for the corporate-actions file; split_ratio and cash_dividend are optional.
ACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "ex_date": ("ex_date", "exdate", "ex-date", "ex date", "date"),
    "split_ratio": ("split_ratio", "split", "ratio", "split ratio"),
    "cash_dividend": ("cash_dividend", "dividend", "div", "cash dividend"),
}

_REQUIRED_ACTION_COLUMNS = ("symbol", "ex_date")
_DATE_PREFIX = r"^\s*(\d{4}-\d{2}-\d{2})(?:[T ]|$)"
_NUMBER_COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass
class CsvReport:
    """What the last :meth:`CsvSource.fetch` read: files, rows, and unreadable cells per column."""

    files: list[Path] = field(default_factory=list)
    rows: int = 0
    #: Null cells per column after parsing (empty or unreadable text); each one's row gets quarantined.
    bad_cells: dict[str, int] = field(default_factory=dict)
    #: Rows with more cells than the header; their numbers are nulled (they cannot be trusted).
    ragged_rows: int = 0
    #: Rows dated before ``start`` or after ``end`` of the fetch, left out.
    out_of_range_rows: int = 0
    #: Per column, cells with text that could not be read (not empty ones): how many, and the first
    #: one as ``(text, file name, line)`` so the note can show what to fix.
    unreadable: dict[str, tuple[int, tuple[str, str, int]]] = field(default_factory=dict)

    @property
    def bad_cell_count(self) -> int:
        return sum(self.bad_cells.values())


class CsvSource:
    """A :class:`~trader.data.sources.BarSource` reading CSV files (see the module docstring)."""

    def __init__(self, path: Path, actions_path: Path | None = None) -> None:
        self.path = Path(path)
        self.actions_path = Path(actions_path) if actions_path is not None else None
        #: Files, rows and unreadable cells of the last fetch (empty before the first one).
        self.last_report = CsvReport()
        #: What the last fetch left out and why, for the command's output.
        self.last_notes: list[str] = []

    @property
    def name(self) -> str:
        return "csv"

    def files(self) -> list[Path]:
        """The bar files this source reads: ``path`` itself, or the CSVs in it sorted by name."""
        if self.path.is_dir():
            # Case-insensitive: files exported on Windows are often DATA.CSV.
            found = [p for p in self.path.iterdir() if p.name.lower().endswith((".csv", ".csv.gz"))]
            return sorted(p for p in found if p.is_file())
        return [self.path]

    def health(self) -> SourceHealth:
        """OK when the bar path (and actions file, if any) exists and can be read."""
        started = time.perf_counter()
        problem = self._problem()
        latency = (time.perf_counter() - started) * 1000
        return SourceHealth(self.name, problem is None, problem or "", latency)

    def _problem(self) -> str | None:
        if not self.path.exists():
            return f"{self.path} does not exist"
        if not os.access(self.path, os.R_OK):
            return f"{self.path} is not readable"
        if self.path.is_dir() and not self.files():
            return f"{self.path} holds no *.csv or *.csv.gz files"
        if self.actions_path is not None:
            if not self.actions_path.is_file():
                return f"actions file {self.actions_path} does not exist"
            if not os.access(self.actions_path, os.R_OK):
                return f"actions file {self.actions_path} is not readable"
        return None

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        """Bars of ``symbols`` (``None``: all) dated ``start`` to ``end``, plus their corporate actions.

        Rows whose symbol or date could not be read are kept (they cannot be placed, and dropping them
        would lose them silently); the quality gate quarantines them. Actions are not limited to the
        date range: an action after ``end`` still adjusts the history before it.
        """
        problem = self._problem()
        if problem is not None:
            raise SourceError(f"csv: {problem}")
        report = CsvReport()
        frames = [self._read_bars(file, report) for file in self.files()]
        bars = pl.concat(frames) if frames else empty(BAR_SCHEMA)
        wanted = _normalize_symbols(symbols)
        in_range = pl.col("date").is_null() | pl.col("date").is_between(start, end)
        report.out_of_range_rows = bars.height - int(bars.select(in_range.sum()).item())
        if wanted is not None:
            in_range &= pl.col("symbol").is_null() | pl.col("symbol").is_in(wanted)
        bars = bars.filter(in_range)
        actions = self.read_actions()
        if wanted is not None:
            actions = actions.filter(pl.col("symbol").is_in(wanted))
        self.last_report = report
        self.last_notes = _notes(report, start, end)
        return BarBatch(bars=bars, actions=actions)

    def _read_bars(self, file: Path, report: CsvReport) -> pl.DataFrame:
        table = _read_text_table(file)
        mapping = _match_columns(file, table.header, BAR_ALIASES, required=tuple(BAR_ALIASES))
        ragged = pl.col("_ragged")
        parsed = table.cells.select(
            _parse_symbol(pl.col(mapping["symbol"])),
            _parse_date(pl.col(mapping["date"])),
            *(
                pl.when(~ragged).then(_parse_number(pl.col(mapping[name]))).alias(name)
                for name in _NUMBER_COLUMNS
            ),
            ragged,
        )
        report.files.append(file)
        report.rows += parsed.height
        report.ragged_rows += int(parsed["_ragged"].sum())
        # Every null is a cell that was empty or unreadable: the gate will quarantine its row.
        counts = parsed.select(pl.col(name).null_count() for name in BAR_SCHEMA).row(0, named=True)
        for name, count in counts.items():
            if count:
                report.bad_cells[name] = report.bad_cells.get(name, 0) + int(count)
                text = table.cells.get_column(mapping[name])
                _note_unreadable(report, file, name, text, parsed[name], table.cells)
        return parsed.select(pl.col(name).cast(dtype) for name, dtype in BAR_SCHEMA.items())

    def read_actions(self) -> pl.DataFrame:
        """The corporate actions file as :data:`~trader.data.bars.ACTION_SCHEMA` (empty without one).

        Missing ``split_ratio`` means 1.0 and missing ``cash_dividend`` 0.0 (column absent or cell
        empty). Raises :class:`SourceError` naming the file and row for an unreadable value, a split
        ratio ≤ 0, a negative dividend, or two different rows for one symbol and ex-date.
        """
        if self.actions_path is None:
            return empty(ACTION_SCHEMA)
        file = self.actions_path
        table = _read_text_table(file)
        mapping = _match_columns(file, table.header, ACTION_ALIASES, required=_REQUIRED_ACTION_COLUMNS)
        ragged = table.cells.filter(pl.col("_ragged"))
        if not ragged.is_empty():
            raise SourceError(
                f"csv: {file}: line {ragged['_line'][0]} has more cells than the header "
                "(an unquoted comma in a value?)"
            )
        text = table.cells.select(
            pl.col("_line").alias("line"),
            *(
                _text(pl.col(mapping[name])).alias(f"{name}_text")
                if name in mapping
                else pl.lit(None, pl.String).alias(f"{name}_text")
                for name in ACTION_ALIASES
            ),
        )
        parsed = text.with_columns(
            _parse_symbol(pl.col("symbol_text")),
            _parse_date(pl.col("ex_date_text")).alias("ex_date"),
            _parse_number(pl.col("split_ratio_text")).alias("split_ratio"),
            _parse_number(pl.col("cash_dividend_text")).alias("cash_dividend"),
        )
        _check_actions(file, parsed)
        actions = parsed.select(
            "symbol",
            "ex_date",
            pl.col("split_ratio").fill_null(1.0),
            pl.col("cash_dividend").fill_null(0.0),
            pl.lit(self.name).alias("source"),
        ).unique(maintain_order=True)
        duplicated = actions.filter(pl.struct("symbol", "ex_date").is_duplicated())
        if not duplicated.is_empty():
            first = duplicated.row(0, named=True)
            raise SourceError(
                f"csv: {file}: conflicting rows for {first['symbol']} on {first['ex_date']}: "
                "give one row per symbol and ex-date (a split and a dividend on the same day share it)"
            )
        return actions.select(pl.col(name).cast(dtype) for name, dtype in ACTION_SCHEMA.items())


#: What a cell of each kind must look like, for the note on unreadable cells.
_EXPECTED = {
    "symbol": "a ticker",
    "date": "a date as YYYY-MM-DD",
    "volume": "a plain number (1200 or 1200.5)",
}


def _note_unreadable(
    report: CsvReport, file: Path, column: str, text: pl.Series, parsed: pl.Series, cells: pl.DataFrame
) -> None:
    """Count the cells of ``column`` that held text but parsed to nothing, and keep the first with its
    line (a ragged row's numbers are nulled on purpose: counted in ``ragged_rows`` instead)."""
    failed = (text.str.strip_chars().str.len_chars() > 0) & parsed.is_null() & ~cells.get_column("_ragged")
    rows = failed.arg_true()
    if rows.is_empty():
        return
    first = rows[0]
    count, example = report.unreadable.get(
        column, (0, (str(text[first]), file.name, int(cells.get_column("_line")[first])))
    )
    report.unreadable[column] = (count + rows.len(), example)


def _notes(report: CsvReport, start: date, end: date) -> list[str]:
    notes = []
    if report.out_of_range_rows:
        notes.append(f"skipped {report.out_of_range_rows:,} row(s) dated outside {start}..{end}")
    for column, (count, (example, file, row)) in sorted(report.unreadable.items()):
        expected = _EXPECTED.get(column, "a plain number (101.5; no thousands separator)")
        notes.append(
            f"{count:,} {column} cell(s) could not be read, e.g. {example!r} on line {row} of {file}; "
            f"such rows in the dates asked for are quarantined as missing_value (write {expected})"
        )
    return notes


def _normalize_symbols(symbols: Sequence[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    return sorted({symbol.strip().upper() for symbol in symbols})


@dataclass(frozen=True)
class _TextTable:
    """A CSV file's header and its rows as text, cells in columns named by position (``_0``, ``_1``...).

    ``_ragged`` marks rows with more cells than the header: an unquoted ``1,234`` shifts every later
    cell, so none of that row's numbers can be trusted.
    """

    header: list[str]
    cells: pl.DataFrame


def _read_text_table(file: Path) -> _TextTable:
    """Every cell as text, so reading never fails on a cell; parsing then happens column by column."""
    try:
        header = pl.read_csv(file, n_rows=0, infer_schema=False).columns
        width = len(header)
        # One spare column catches rows with too many cells; rows with too few get nulls.
        schema: dict[str, pl.DataType] = {f"_{i}": pl.String() for i in range(width + 1)}
        cells = pl.read_csv(
            file,
            has_header=False,
            schema=schema,
            missing_columns="insert",
            truncate_ragged_lines=True,
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"csv: cannot read {file}: {first_line(exc)}") from exc
    # An empty line (or one of only commas) holds no row.
    blank = pl.all_horizontal(pl.exclude("_line").is_null())
    cells = (
        cells.with_row_index("_line", offset=1)
        .slice(1)
        .filter(~blank)
        .with_columns(pl.col(f"_{width}").is_not_null().alias("_ragged"))
        .drop(f"_{width}")
    )
    return _TextTable(header, cells)


def _match_columns(
    file: Path,
    columns: Sequence[str],
    aliases: Mapping[str, tuple[str, ...]],
    required: Sequence[str],
) -> dict[str, str]:
    """Map each wanted column to its cells' column (``{"symbol": "_0", ...}``) by header name."""
    found: dict[str, str] = {}
    for position, column in enumerate(columns):
        key = column.strip().lstrip("\ufeff").strip().lower()
        for target, names in aliases.items():
            if key in names:
                if target in found:
                    raise SourceError(
                        f"csv: {file}: columns {columns[int(found[target][1:])]!r} and {column!r} both "
                        f"mean {target!r}; keep one"
                    )
                found[target] = f"_{position}"
    missing = [name for name in required if name not in found]
    if missing:
        accepted = "; ".join(f"{name}: {', '.join(aliases[name])}" for name in missing)
        raise SourceError(
            f"csv: {file}: missing column(s) {', '.join(missing)} (accepted names, any case: {accepted}); "
            f"the file has {list(columns)}"
        )
    return found


def _text(cell: pl.Expr) -> pl.Expr:
    """The cell without surrounding spaces; null when nothing is left."""
    stripped = cell.str.strip_chars()
    return pl.when(stripped.str.len_chars() > 0).then(stripped)


def _parse_symbol(text: pl.Expr) -> pl.Expr:
    return _text(text).str.to_uppercase().alias("symbol")


def _parse_date(text: pl.Expr) -> pl.Expr:
    """``YYYY-MM-DD``, or the date part of an ISO timestamp as written; anything else is null."""
    return text.str.extract(_DATE_PREFIX, 1).str.to_date("%Y-%m-%d", strict=False).alias("date")


def _parse_number(text: pl.Expr) -> pl.Expr:
    """A finite float, or null: ``nan``/``inf`` in a price file is a bad cell, not a value."""
    number = text.str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)


def _check_actions(file: Path, parsed: pl.DataFrame) -> None:
    """Refuse the first impossible row, naming its line, the column and the text found there."""

    def unreadable(column: str) -> pl.Expr:
        # Null after parsing although text was there: the text is not a number.
        return pl.col(column).is_null() & pl.col(f"{column}_text").is_not_null()

    checks = (
        ("symbol", pl.col("symbol").is_null(), "is empty"),
        ("ex_date", pl.col("ex_date").is_null(), "is not a YYYY-MM-DD date"),
        ("split_ratio", unreadable("split_ratio"), "is not a number"),
        ("split_ratio", pl.col("split_ratio") <= 0, "must be > 0 (a 2-for-1 split is 2)"),
        ("cash_dividend", unreadable("cash_dividend"), "is not a number"),
        ("cash_dividend", pl.col("cash_dividend") < 0, "must be ≥ 0"),
    )
    for column, bad, why in checks:
        rows = parsed.filter(bad.fill_null(False))
        if not rows.is_empty():
            row = rows.row(0, named=True)
            where = f"line {row['line']} ({row['symbol_text'] or '?'}, {row['ex_date_text'] or '?'})"
            raise SourceError(
                f"csv: {file}: {where}: {column} {row[f'{column}_text'] or ''!r} {why}"
                + (f" ({rows.height} such rows)" if rows.height > 1 else "")
            )
