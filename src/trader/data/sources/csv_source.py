"""Daily bars and corporate actions from CSV files (plain or gzipped).

Bars: one file, or every ``*.csv`` / ``*.txt`` (Stooq) / ``*.csv.gz`` / ``*.txt.gz`` in a directory
(any case: ``*.CSV`` too; sorted by name; other files are listed in a note), with the header
``symbol,date,open,high,low,close,volume``. Header names are matched case-insensitively and common
aliases are accepted (:data:`BAR_ALIASES`; Stooq's ``<TICKER>``-style brackets are ignored); other
columns are ignored. ``Adj Close`` is deliberately *not* taken as the close: the pipeline wants raw
prices and adjusts them itself. The files real users bring are read as follows:

- A file without a symbol column (Yahoo, Stooq and Kaggle per-ticker files) holds the ticker its name
  says (``AAPL.csv``, ``BRK-B.csv.gz``, Stooq's ``aapl.us.txt``); any other name (``prices.csv``,
  ``yahoo_AAPL.csv``) is refused.
- yfinance's multi-row header (``Price,Close,...`` / ``Ticker,AAPL,...`` / ``Date,,...``, either of
  the first two rows first) is read as one row per ticker and day.
- Dates: ``YYYY-MM-DD`` (or an ISO timestamp, whose date is taken as written), ``YYYYMMDD``, and
  ``MM/DD/YYYY`` or ``DD/MM/YYYY`` only when the file itself proves the order (a day above 12).
- Prices may carry a leading ``$`` (Nasdaq.com); ``;`` or tab separators are recognised from the
  header line; CR-only line endings (old Excel for Mac) are read.
- Refused, naming the file: two columns for one field, a ``.gz`` that is damaged, cut short or
  binary (plain text named ``.gz`` is read as it is), a zip archive, text that is not UTF-8, an
  empty file, an Excel workbook, intraday bars (one symbol at several times of one day, in the date
  cell or a separate time column), a yfinance file without ``Adj Close`` (``auto_adjust=True``: its
  prices are adjusted already) and a line of header names in another order. In a directory every file
  is checked and all problems are listed.
- Blank and ``#`` comment lines before the header are skipped (line numbers still count them). A
  file with ``Adj Close`` (Yahoo) gets a note: its Close is split-adjusted already.

A cell that cannot be read (a number like ``1,234``, a date like ``02/01/2024`` in a file that never
shows the day-month order, an empty symbol) is not an error and the row is not dropped: it becomes
null, so the quality gate quarantines the row as a missing value with the rest of the row kept as
evidence. :attr:`CsvSource.last_report` counts such cells per column. A file without a required
column, by contrast, is refused as a whole. A line repeating the header (CSVs joined with ``cat``) is
no row: it is skipped and counted.

Corporate actions: an optional file ``symbol,ex_date,split_ratio,cash_dividend`` (a 2-for-1 split has
``split_ratio`` 2, also written ``2:1`` or ``2-for-1``; a 1-for-8 reverse split is ``0.125``, ``1:8``
or ``1-for-8``). It is reference data a wrong row would corrupt whole histories with, so it is read
strictly: any unreadable or impossible value raises :class:`SourceError` naming the row.
"""

from __future__ import annotations

import gzip
import os
import re
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, BarBatch, empty
from trader.data.sources import SourceError, SourceHealth
from trader.errors import first_line

#: Accepted header names (lower-cased, surrounding spaces and ``<>`` removed) for each bar column.
BAR_ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "date": ("date", "timestamp", "day", "time", "datetime", "t"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "close/last"),
    "volume": ("volume", "v", "vol"),
}

#: Accepted header names for the corporate-actions file; split_ratio and cash_dividend are optional.
ACTION_ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "ex_date": ("ex_date", "exdate", "ex-date", "ex date", "date"),
    "split_ratio": ("split_ratio", "split", "ratio", "split ratio"),
    "cash_dividend": ("cash_dividend", "dividend", "div", "cash dividend"),
}

#: Without a symbol column a file's name gives the ticker, so the other columns are the required ones.
_REQUIRED_BAR_COLUMNS = tuple(name for name in BAR_ALIASES if name != "symbol")
_REQUIRED_ACTION_COLUMNS = ("symbol", "ex_date")
_DATE_PREFIX = r"^\s*(\d{4}-\d{2}-\d{2})(?:[T ]|$)"
_TIME_OF_DAY = r"^\s*\d{4}-\d{2}-\d{2}[T ](.+?)\s*$"
_BASIC_DATE = r"^\s*(\d{8})\s*$"
_SLASH_DATE = r"^\s*(\d{1,2})/(\d{1,2})/(\d{4})\s*$"
_NUMBER_COLUMNS = ("open", "high", "low", "close", "volume")
#: What a file name must look like to be taken as the ticker: capitals, digits, ``.``, ``-``, ``^``,
#: ``=`` (``AAPL``, ``BRK-B``, ``^GSPC``), or Stooq's lower case with a market (``aapl.us``). Generic
#: names (``prices``, ``nasdaq``, ``export``) are lower case: they must not become tickers.
_TICKER_NAME = re.compile(
    r"(?=.*[A-Z])[A-Z0-9^][A-Z0-9.\-^=]{0,19}|(?=.*[a-z])[a-z0-9^][a-z0-9\-^=]{0,15}\.[a-z]{2}"
)
#: Words naming an export rather than a ticker; a file named with one is refused.
_GENERIC_NAMES = frozenset(
    {
        *("DATA", "EXPORT", "EXPORTS", "PRICE", "PRICES", "HISTORY", "HISTORICAL", "QUOTE", "QUOTES"),
        *("DOWNLOAD", "DOWNLOADS", "OUTPUT", "FILE", "FILES", "SHEET", "SHEET1", "TABLE", "BARS"),
        *("DAILY", "WEEKLY", "MONTHLY", "INTRADAY", "OHLC", "OHLCV", "STOCK", "STOCKS", "SAMPLE", "TEST"),
    }
)
#: A bar length written in a file name (``1D``, ``5M``, ``15MIN``, ``1H``): not part of a ticker.
_TIMEFRAME = r"\d+(?:S|M|MIN|MINS|H|HR|D|W|WK|MO|MON|Y)"
#: ``2:1``, ``1/8``, ``2-for-1``, ``1 for 8``: new shares for old ones.
_RATIO = r"(?i)^\s*(\d+(?:\.\d+)?)\s*(?::|/|-?\s*for\s*-?)\s*(\d+(?:\.\d+)?)\s*$"
#: Yahoo's adjusted close, whose presence marks Yahoo's layout (its Close is split-adjusted).
_ADJ_CLOSE = ("adj close", "adj_close", "adjclose", "adjusted close")
#: The files of a folder read as bars (any case): Stooq's per-ticker files are ``.txt``.
_BAR_EXTENSIONS = (".csv", ".csv.gz", ".txt", ".txt.gz")
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


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
    #: Lines that repeat the header (files joined with ``cat``): no rows, left out.
    repeated_headers: int = 0
    #: Files without a symbol column, with the ticker their name gave: ``(file name, symbol)``.
    symbols_from_names: list[tuple[str, str]] = field(default_factory=list)
    #: Days of a yfinance multi-ticker file where a ticker has no value at all (not listed yet, or
    #: delisted): no bar, left out.
    empty_ticker_days: int = 0
    #: Files with Yahoo's layout (an ``Adj Close`` column): their Close is already split-adjusted.
    yahoo_files: list[str] = field(default_factory=list)
    #: Files of the folder that are not bar files by their name (``notes.md``, ``prices.xlsx``).
    skipped_files: list[str] = field(default_factory=list)

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
        """The bar files this source reads: ``path`` itself, or the CSV and TXT files in it by name."""
        if self.path.is_dir():
            # Case-insensitive: files exported on Windows are often DATA.CSV.
            found = [p for p in self.path.iterdir() if p.name.lower().endswith(_BAR_EXTENSIONS)]
            return sorted(p for p in found if p.is_file() and (_is_csv(p) or _txt_of_bars(p)))
        return [self.path]

    def skipped_files(self) -> list[str]:
        """Names of the files of a folder that are not read (not hidden ones), so none goes unnoticed."""
        if not self.path.is_dir():
            return []
        read = set(self.files())
        return sorted(
            p.name
            for p in self.path.iterdir()
            if p.is_file() and p not in read and not p.name.startswith(".")
        )

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
            return f"{self.path} holds no *.csv, *.txt, *.csv.gz or *.txt.gz files"
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
        date range: an action after ``end`` still adjusts the history before it. A file that cannot
        be used fails the whole fetch (every such file of a directory is named), since leaving it out
        would drop its rows silently.
        """
        problem = self._problem()
        if problem is not None:
            raise SourceError(f"csv: {problem}")
        report = CsvReport()
        frames = self._read_all(report)
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
        report.skipped_files = self.skipped_files()
        self.last_notes = _notes(report, start, end)
        return BarBatch(bars=bars, actions=actions)

    def _read_all(self, report: CsvReport) -> list[pl.DataFrame]:
        """Every file's bars; one error naming every file that cannot be used (not just the first,
        so a folder is fixed in one go)."""
        files = self.files()
        frames, problems = [], []
        for file in files:
            try:
                frames.append(self._read_bars(file, report))
            except SourceError as exc:
                problems.append(str(exc).removeprefix("csv: "))
        if len(problems) == 1 and len(files) == 1:
            raise SourceError(f"csv: {problems[0]}")
        if problems:
            raise SourceError(
                f"csv: {len(problems)} of {len(files)} files in {self.path} cannot be used, so nothing "
                f"was read (fix them or move them out of the folder): {' | '.join(problems)}"
            )
        return frames

    def _read_bars(self, file: Path, report: CsvReport) -> pl.DataFrame:
        table = _read_text_table(file, report)
        table = _unstack_yfinance(file, table, report)
        mapping = _match_columns(file, table.header, BAR_ALIASES, required=_REQUIRED_BAR_COLUMNS)
        if any(_key(name) in _ADJ_CLOSE for name in table.header):
            report.yahoo_files.append(file.name)
        if "symbol" in mapping:
            symbol = pl.col(mapping["symbol"])
        else:
            symbol = pl.lit(_symbol_from_name(file, report), pl.String)
        dates = table.cells.get_column(mapping["date"])
        ragged = pl.col("_ragged")
        parsed = table.cells.select(
            _parse_symbol(symbol),
            _parse_dates(dates),
            *(
                pl.when(~ragged)
                .then(_parse_number(pl.col(mapping[name]), _dollars(table, mapping[name])))
                .alias(name)
                for name in _NUMBER_COLUMNS
            ),
            ragged,
        )
        _refuse_intraday(file, parsed, _time_of_day(table, dates))
        report.files.append(file)
        report.rows += parsed.height
        report.ragged_rows += int(parsed["_ragged"].sum())
        # Every null is a cell that was empty or unreadable: the gate will quarantine its row.
        counts = parsed.select(pl.col(name).null_count() for name in BAR_SCHEMA).row(0, named=True)
        for name, count in counts.items():
            if count and name in mapping:
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
        table = _read_text_table(file, CsvReport())
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
            _parse_dates(text["ex_date_text"]).alias("ex_date"),
            _parse_ratio(pl.col("split_ratio_text")).alias("split_ratio"),
            _parse_number(pl.col("cash_dividend_text"), dollars=True).alias("cash_dividend"),
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
    if report.symbols_from_names:
        shown = ", ".join(f"{name} -> {symbol}" for name, symbol in report.symbols_from_names[:3])
        more = len(report.symbols_from_names) - 3
        notes.append(
            f"{len(report.symbols_from_names):,} file(s) without a symbol column took the ticker from "
            f"their name: {shown}" + (f" and {more:,} more" if more > 0 else "")
        )
    if report.repeated_headers:
        notes.append(f"skipped {report.repeated_headers:,} line(s) repeating the header (files joined?)")
    if report.empty_ticker_days:
        notes.append(
            f"skipped {report.empty_ticker_days:,} day(s) of a multi-ticker yfinance file where a "
            "ticker has no value at all (not listed then)"
        )
    if report.skipped_files:
        shown = ", ".join(report.skipped_files[:5])
        more = len(report.skipped_files) - 5
        notes.append(
            f"skipped {len(report.skipped_files):,} file(s) of the folder that hold no bars (not *.csv "
            f"or *.csv.gz, nor a *.txt with a close column): {shown}"
            + (f" and {more:,} more" if more > 0 else "")
        )
    if report.yahoo_files:
        notes.append(_yahoo_note(report.yahoo_files))
    if report.ragged_rows:
        notes.append(
            f"{report.ragged_rows:,} row(s) have more cells than the header (an unquoted comma in a "
            "value?): their numbers are not trusted, so such rows in the dates asked for are "
            "quarantined as missing_value (quote the value or remove the comma)"
        )
    if report.out_of_range_rows:
        notes.append(f"skipped {report.out_of_range_rows:,} row(s) dated outside {start}..{end}")
    for column, (count, (example, file, row)) in sorted(report.unreadable.items()):
        expected = _EXPECTED.get(column, "a plain number (101.5; no thousands separator)")
        notes.append(
            f"{count:,} {column} cell(s) could not be read, e.g. {example!r} on line {row} of {file}; "
            f"such rows in the dates asked for are quarantined as missing_value (write {expected})"
        )
    return notes


def _yahoo_note(files: Sequence[str]) -> str:
    """Yahoo's Close is split-adjusted even with auto_adjust=False (only Adj Close adds dividends):
    an actions file repeating those splits would adjust the history twice."""
    shown = ", ".join(files[:3]) + (f" and {len(files) - 3:,} more" if len(files) > 3 else "")
    return (
        f"{len(files):,} file(s) have Yahoo's layout (an Adj Close column): {shown}. Yahoo's Close is "
        "already split-adjusted, so the --actions file must not repeat these symbols' splits (give "
        "their dividends only)"
    )


def _normalize_symbols(symbols: Sequence[str] | None) -> list[str] | None:
    if symbols is None:
        return None
    return sorted({symbol.strip().upper() for symbol in symbols})


def _symbol_from_name(file: Path, report: CsvReport) -> str:
    """The ticker a file without a symbol column is named after (``AAPL.csv``, ``aapl.us.csv.gz``)."""
    # Only known extensions go: BRK.B (no extension) is Berkshire's class B, not BRK.
    stem = re.sub(r"(?i)(\.(csv|txt|tsv))?(\.gz)?$", "", file.name).strip()
    if not _TICKER_NAME.fullmatch(stem) or not _names_a_ticker(stem):
        raise SourceError(
            f"csv: {file}: has no symbol column (accepted names, any case: "
            f"{', '.join(BAR_ALIASES['symbol'])}) and its name {stem!r} is not a ticker in capitals: add a "
            "symbol column, or name the file after its ticker (AAPL.csv)"
        )
    report.symbols_from_names.append((file.name, stem.upper()))
    return stem.upper()


def _names_a_ticker(stem: str) -> bool:
    """False for names a ticker-like regex lets through but that name an export: a generic word
    (``DATA.CSV``, ``data.us``), a year (``AAPL-2024``), a timeframe (``SPY-1D``). A digits-only
    first part followed by a market is a ticker (``0700.HK``, ``7203.T``)."""
    parts = re.split(r"[.\-]", stem.upper())
    for index, part in enumerate(parts):
        if part in _GENERIC_NAMES or re.fullmatch(_TIMEFRAME, part):
            return False
        if part.isdigit() and not (index == 0 and len(parts) == 2 and re.fullmatch(r"[A-Z]{1,2}", parts[1])):
            return False
    return True


def _time_of_day(table: _TextTable, dates: pl.Series) -> pl.Series:
    """Each row's time of day: the one in the date cell (``2024-01-02T14:30``) and the one of a
    separate time column (``date,time`` or Stooq's ``<DATE>,<TIME>``), which the column matching
    ignores, so intraday bars split over two columns are caught too."""
    in_date = dates.str.extract(_TIME_OF_DAY, 1)
    keys = _header_keys(table.header, BAR_ALIASES)
    columns = [f"_{i}" for i, name in enumerate(table.header) if _key(name) == "time" and keys[i] == ""]
    if not columns:
        return in_date  # no time column, as in most files: no joining
    parts = [pl.lit(in_date), *(_text(pl.col(column)) for column in columns)]
    # All parts null joins to "": made null again, or a date without a time would count as one.
    return table.cells.select(_text(pl.concat_str(parts, separator=" ", ignore_nulls=True))).to_series()


def _refuse_intraday(file: Path, parsed: pl.DataFrame, times_of_day: pl.Series) -> None:
    """Refuse a file holding one symbol at several times of one day: intraday bars, every one of which
    the gate would otherwise quarantine as a conflicting duplicate of the others."""
    times = (
        parsed.select("symbol", "date", times_of_day.alias("time"))
        .drop_nulls()
        .group_by("symbol", "date", maintain_order=True)
        .agg(pl.col("time").unique(maintain_order=True))
        .filter(pl.col("time").list.len() > 1)
    )
    if times.is_empty():
        return
    row = times.row(0, named=True)
    raise SourceError(
        f"csv: {file}: {row['symbol']} has rows at {len(row['time'])} times of {row['date']} "
        f"({', '.join(row['time'][:3])}): intraday bars? This source reads daily bars, one row per "
        "symbol and day: aggregate them to days first"
    )


@dataclass(frozen=True)
class _TextTable:
    """A CSV file's header and its rows as text, cells in columns named by position (``_0``, ``_1``...).

    ``_ragged`` marks rows with more cells than the header: an unquoted ``1,234`` shifts every later
    cell, so none of that row's numbers can be trusted.
    """

    header: list[str]
    cells: pl.DataFrame


def _read_text_table(file: Path, report: CsvReport) -> _TextTable:
    """Every cell as text, so reading never fails on a cell; parsing then happens column by column."""
    data = _load_bytes(file)
    skipped, data = _skip_blank_lines(data)
    if not data.strip():
        raise SourceError(f"csv: {file}: holds only comment (#) and blank lines, no header line")
    separator = _separator(data)
    try:
        width = len(pl.read_csv(data, n_rows=0, infer_schema=False, separator=separator).columns)
        # One spare column catches rows with too many cells; rows with too few get nulls.
        schema: dict[str, pl.DataType] = {f"_{i}": pl.String() for i in range(width + 1)}
        cells = pl.read_csv(
            data,
            has_header=False,
            schema=schema,
            separator=separator,
            missing_columns="insert",
            truncate_ragged_lines=True,
        )
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise SourceError(f"csv: cannot read {file}: {_why_unreadable(data, exc)}") from exc
    # The header as written: polars renames a repeated name (close_duplicated_0), which would hide
    # a second column for one field.
    header = [cell or "" for cell in cells.row(0)[:width]]
    # An empty line (or one of only commas) holds no row, nor does a line repeating the header.
    blank = pl.all_horizontal(pl.exclude("_line").is_null())
    cells = cells.with_row_index("_line", offset=1 + skipped).slice(1).filter(~blank)
    repeats = _repeated_header_lines(file, cells, header)
    report.repeated_headers += repeats.len()
    if repeats.len():
        cells = cells.filter(~pl.col("_line").is_in(repeats.implode()))
    cells = cells.with_columns(pl.col(f"_{width}").is_not_null().alias("_ragged")).drop(f"_{width}")
    return _TextTable(header, cells)


def _skip_blank_lines(data: bytes) -> tuple[int, bytes]:
    """``data`` without the whole blank and ``#`` comment lines before the header (also after a BOM),
    which would be taken for it, and how many there were so line numbers still count them. Only
    whole lines go: a header starting with a tab or space (an unnamed index column) keeps it, or
    every column shifts."""
    # A comment is ``#`` not followed by a separator: ``#,symbol,date,...`` is a header whose first
    # column is named ``#`` (a row number), and skipping it would take the first row for the header.
    blank = re.match(rb"(?:\xef\xbb\xbf)?((?:[ \t\r]*(?:#(?![,;\t])[^\n]*)?\n)+)", data)
    if blank is None:
        return 0, data
    return blank.group(1).count(b"\n"), data[blank.end() :]


def _repeated_header_lines(file: Path, cells: pl.DataFrame, header: Sequence[str]) -> pl.Series:
    """The lines that say the header again (files joined with ``cat``); only rows starting with a
    header name are compared in full, so an ordinary file costs one column's check. A line of header
    names in another order is refused: the rows after it would be read in the wrong columns."""
    keys = [_key(name) for name in header]
    names = "|".join(re.escape(key) for key in keys)
    first = rf"(?i)^\s*\ufeff?\s*<?\s*(?:{names})\s*>?\s*$"  # a cheap scan, no string copies
    candidates = cells.filter(pl.col("_0").fill_null("").str.contains(first))
    cell_keys = [_header_key(pl.col(f"_{i}").fill_null("")) for i in range(len(header))]
    same = pl.all_horizontal(cell == key for cell, key in zip(cell_keys, keys, strict=True))
    reordered = candidates.filter(pl.all_horizontal(cell.is_in(keys) for cell in cell_keys) & ~same)
    if not reordered.is_empty():
        raise SourceError(
            f"csv: {file}: line {reordered['_line'][0]} repeats the header's names in another order "
            "(files with different column orders joined?): the rows after it would be read in the "
            "wrong columns; give each layout its own file"
        )
    return candidates.filter(same).get_column("_line")


def _load_bytes(file: Path) -> bytes:
    """The file's text as bytes: gunzipped, CR-only line ends made ``\\n``; refused with the fix when it
    is empty, a zip, UTF-16, or a ``.gz`` that is not gzip data or is cut short."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise SourceError(f"csv: cannot read {file}: {exc.strerror or exc}") from exc
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"csv: {file}: the gzip data is damaged or cut short ({first_line(exc)}): download or "
                "compress the file again"
            ) from exc
    elif file.name.lower().endswith(".gz") and b"\x00" in data[:65536]:
        # Binary, so not CSV either. (Plain text named .gz, a download the browser unpacked but kept
        # the name of, is read as it is.)
        raise SourceError(
            f"csv: {file}: is named .gz but is neither gzip data nor text (a failed download?): "
            "download it again"
        )
    elif data.startswith(_ZIP_MAGIC):
        # An .xlsx is a zip too; unzipping it gives XML, not the CSV the user needs.
        if file.name.lower().endswith((".xlsx", ".xlsm")) or b"[Content_Types].xml" in data[:4096]:
            raise SourceError(f"csv: {file}: is an Excel workbook: save it as CSV (UTF-8)")
        raise SourceError(f"csv: {file}: is a zip archive: unzip it and give the CSV inside")
    if data.startswith(_UTF16_BOMS):
        raise SourceError(
            f"csv: {file}: is UTF-16 text (Excel's 'Unicode Text'): save it as 'CSV UTF-8' instead"
        )
    if not data or data.isspace():
        raise SourceError(f"csv: {file}: is empty (not even a header line)")
    head = data[:65536]
    if b"\n" not in head and b"\r" in head:
        data = data.replace(b"\r", b"\n")  # old Mac line ends, which polars does not split on
    return data


def _separator(data: bytes) -> str:
    """``,`` unless the header line has none but ``;`` (European Excel) or a tab."""
    header = data[: data.find(b"\n")] if b"\n" in data else data
    if b"," not in header:
        for separator in (b";", b"\t"):
            if separator in header:
                return separator.decode()
    return ","


def _why_unreadable(data: bytes, exc: Exception) -> str:
    """Polars' reason, made specific (with the line) for text that is not UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        line = data.count(b"\n", 0, bad.start) + 1
        return (
            f"line {line} is not UTF-8 text (saved as Latin-1 or Windows-1252?): save the file as "
            "UTF-8 ('CSV UTF-8' in Excel)"
        )
    return first_line(exc)


def _unstack_yfinance(file: Path, table: _TextTable, report: CsvReport) -> _TextTable:
    """yfinance's CSV with a multi-row header as a plain table ``Ticker,Date,<fields>``, one row per
    ticker and day; any other table unchanged.

    yfinance writes a row of field names (``Price``), a row of tickers (``Ticker``, either first) and
    a ``Date,,,`` row, then one row per day with every ticker's fields side by side.
    """
    levels = _yfinance_levels(table)
    if levels is None:
        return table
    fields, tickers = levels
    names = list(dict.fromkeys(fields[1:]))
    if not any(_key(name) in _ADJ_CLOSE for name in fields[1:]):
        # yfinance >= 0.2.51 defaults to auto_adjust=True: every price split- and dividend-adjusted,
        # which corporate actions would then adjust a second time.
        raise SourceError(
            f"csv: {file}: is a yfinance file without an Adj Close field, so its prices are already "
            "adjusted for splits and dividends (yfinance's default auto_adjust=True) and cannot be "
            "stored as raw prices: download with yf.download(..., auto_adjust=False)"
        )
    days = table.cells.slice(2)
    frames = []
    for ticker in dict.fromkeys(t for t in tickers[1:] if t):
        columns = {fields[i]: f"_{i}" for i in range(1, len(fields)) if tickers[i] == ticker}
        if len(columns) < tickers.count(ticker):
            raise SourceError(f"csv: {file}: ticker {ticker!r} has a field twice in the header")
        # A day where the ticker has no value at all is no bar (not listed yet): not a bad row.
        listed = days.filter(~pl.all_horizontal(pl.col(list(columns.values())).is_null()))
        report.empty_ticker_days += days.height - listed.height
        values = [pl.col(columns[name]) if name in columns else pl.lit(None, pl.String) for name in names]
        frames.append(
            listed.select(
                "_line",
                pl.lit(ticker).alias("_0"),
                pl.col("_0").alias("_1"),
                *(value.alias(f"_{k + 2}") for k, value in enumerate(values)),
                "_ragged",
            )
        )
    return _TextTable(["Ticker", "Date", *names], pl.concat(frames))


def _yfinance_levels(table: _TextTable) -> tuple[list[str], list[str]] | None:
    """The field names and tickers of each column when ``table`` has yfinance's header, else None."""
    if table.cells.height < 2:
        return None
    width = len(table.header)
    first = [cell.strip() for cell in table.header]
    second, third = (
        [(cell or "").strip() for cell in row]
        for row in table.cells.select(f"_{i}" for i in range(width)).head(2).iter_rows()
    )
    if {first[0].lower(), second[0].lower()} != {"price", "ticker"}:
        return None
    if third[0].lower() != "date" or any(third[1:]):
        return None
    return (first, second) if first[0].lower() == "price" else (second, first)


def _key(name: str) -> str:
    """A header name as compared with the aliases: no BOM, spaces, case or Stooq's ``<>``."""
    key = name.strip().lstrip("\ufeff").strip().lower()
    if key.startswith("<") and key.endswith(">"):
        key = key[1:-1].strip()
    return key


def _header_key(cell: pl.Expr) -> pl.Expr:
    """:func:`_key` of every cell of a column, to find lines repeating the header."""
    key = cell.str.strip_chars().str.strip_chars_start("\ufeff").str.strip_chars().str.to_lowercase()
    bracketed = key.str.starts_with("<") & key.str.ends_with(">")
    return pl.when(bracketed).then(key.str.slice(1, key.str.len_chars() - 2).str.strip_chars()).otherwise(key)


def _header_keys(columns: Sequence[str], aliases: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Each column's :func:`_key`, with the two names whose meaning depends on their neighbours."""
    keys = [_key(column) for column in columns]
    names = [column.strip() for column in columns]
    # Polygon names the ticker T and the timestamp t: only the case tells them apart.
    if "T" in names and "t" in names:
        keys[names.index("T")] = "ticker"
    # Next to another date column, "time" is the time of day (Stooq's <TIME>), not the bar's date.
    dates = aliases.get("date", ())
    if "time" in keys and any(key in dates and key != "time" for key in keys):
        keys = ["" if key == "time" else key for key in keys]
    return keys


def _match_columns(
    file: Path,
    columns: Sequence[str],
    aliases: Mapping[str, tuple[str, ...]],
    required: Sequence[str],
) -> dict[str, str]:
    """Map each wanted column to its cells' column (``{"symbol": "_0", ...}``) by header name."""
    found: dict[str, str] = {}
    for position, key in enumerate(_header_keys(columns, aliases)):
        for target, names in aliases.items():
            if key in names:
                if target in found:
                    raise SourceError(
                        f"csv: {file}: columns {columns[int(found[target][1:])]!r} and "
                        f"{columns[position]!r} both mean {target!r}; keep one"
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


def _slash_order(text: pl.Series) -> str | None:
    """The format of the column's ``NN/NN/YYYY`` dates when the column itself proves it: a first part
    above 12 means day first, a second part above 12 month first. Neither or both: None (unread)."""
    parts = text.str.extract_groups(_SLASH_DATE)
    first = parts.struct.field("1").cast(pl.Int32, strict=False)
    second = parts.struct.field("2").cast(pl.Int32, strict=False)
    day_first = bool((first > 12).any())
    month_first = bool((second > 12).any())
    if day_first == month_first:
        return None
    return "%d/%m/%Y" if day_first else "%m/%d/%Y"


def _parse_dates(text: pl.Series) -> pl.Series:
    """``YYYY-MM-DD`` (or the date part of an ISO timestamp as written), ``YYYYMMDD`` (Stooq), or
    ``NN/NN/YYYY`` in the order the column proves (see :func:`_slash_order`); anything else is null."""
    cells = text.to_frame("text")
    cell = pl.col("text")
    # Ten characters exactly: strptime alone would also take 2024-1-2 or 24-01-02 (the year 24).
    plain = cells.select(pl.when(cell.str.len_bytes() == 10).then(cell.str.to_date("%Y-%m-%d", strict=False)))
    if plain.null_count().item() == text.null_count():
        return plain.to_series().alias("date")  # every cell a plain date, as in most files: no pattern
    formats = [
        cell.str.extract(_DATE_PREFIX, 1).str.to_date("%Y-%m-%d", strict=False),
        cell.str.extract(_BASIC_DATE, 1).str.to_date("%Y%m%d", strict=False),
    ]
    order = _slash_order(text)
    if order is not None:
        slashed = cell.str.strip_chars()
        formats.append(
            pl.when(slashed.str.contains(_SLASH_DATE)).then(slashed.str.to_date(order, strict=False))
        )
    return cells.select(pl.coalesce(formats).alias("date")).to_series()


def _dollars(table: _TextTable, column: str) -> bool:
    """Whether any cell of ``column`` holds a ``$``: then :func:`_parse_number` drops a leading one
    (checked per column, as dropping it from every cell of a big file costs more than the check)."""
    return bool(table.cells.get_column(column).str.contains("$", literal=True).any())


def _parse_number(text: pl.Expr, dollars: bool = False) -> pl.Expr:
    """A finite float, or null: ``nan``/``inf`` in a price file is a bad cell, not a value. With
    ``dollars`` a leading ``$`` (Nasdaq.com's prices) is dropped."""
    stripped = text.str.strip_chars()
    number = (stripped.str.strip_prefix("$") if dollars else stripped).cast(pl.Float64, strict=False)
    return pl.when(number.is_finite()).then(number)


def _parse_ratio(text: pl.Expr) -> pl.Expr:
    """A split ratio: a number, or new-for-old shares written ``2:1``, ``1/8``, ``2-for-1``, ``1 for 8``
    (the number 2.0 and 0.125); null when unreadable."""
    parts = text.str.extract_groups(_RATIO)
    new = parts.struct.field("1").cast(pl.Float64)
    old = parts.struct.field("2").cast(pl.Float64)
    written = pl.when(old > 0).then(new / old)
    return pl.coalesce(_parse_number(text), pl.when(written.is_finite()).then(written))


def _check_actions(file: Path, parsed: pl.DataFrame) -> None:
    """Refuse the first impossible row, naming its line, the column and the text found there."""

    def unreadable(column: str) -> pl.Expr:
        # Null after parsing although text was there: the text is not a number.
        return pl.col(column).is_null() & pl.col(f"{column}_text").is_not_null()

    checks = (
        ("symbol", pl.col("symbol").is_null(), "is empty"),
        ("ex_date", pl.col("ex_date").is_null(), "is not a YYYY-MM-DD date"),
        (
            "split_ratio",
            unreadable("split_ratio"),
            "is not a ratio (write 2, 2:1 or 2-for-1 for a 2-for-1 split; 0.125, 1:8 or 1-for-8 for a "
            "1-for-8 reverse split)",
        ),
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


def _is_csv(path: Path) -> bool:
    return path.name.lower().endswith((".csv", ".csv.gz"))


def _txt_of_bars(path: Path) -> bool:
    """Whether a ``.txt`` file of a folder is a table of bars (Stooq's ``msft.us.txt``) rather than a
    companion such as ``README.txt`` or ``tickers.txt``, which would otherwise refuse the whole folder:
    its header line (after the lines :func:`_skip_blank_lines` skips) names a close column."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096)
        if path.name.lower().endswith(".gz"):
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head)
    except (OSError, zlib.error):
        return True  # unreadable: read it, so the error names the file instead of skipping it
    _, rest = _skip_blank_lines(head)
    header = rest.split(b"\n", 1)[0].decode("utf-8", errors="replace").lower()
    return "close" in header and any(sep in header for sep in (",", ";", "\t"))
