"""CsvSource: header aliases, gzip, directories, unreadable cells kept as nulls, strict actions file."""

from __future__ import annotations

import gzip
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA
from trader.data.sources import BarSource, SourceError
from trader.data.sources.csv_source import CsvSource

EARLY = date(2000, 1, 1)
LATE = date(2030, 12, 31)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def fetch_all(source: CsvSource) -> pl.DataFrame:
    return source.fetch(None, EARLY, LATE).bars


def test_is_a_bar_source(tmp_path: Path) -> None:
    source = CsvSource(tmp_path / "bars.csv")
    assert isinstance(source, BarSource)
    assert source.name == "csv"


def test_reads_the_documented_header_into_the_bar_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "AAPL,2024-01-02,10,11,9,10.5,1000\n"
        "AAPL,2024-01-03,10.5,12,10,11.5,2000\n",
    )
    bars = fetch_all(CsvSource(path))
    assert bars.schema == pl.Schema(BAR_SCHEMA)
    assert bars.rows() == [
        ("AAPL", date(2024, 1, 2), 10.0, 11.0, 9.0, 10.5, 1000.0),
        ("AAPL", date(2024, 1, 3), 10.5, 12.0, 10.0, 11.5, 2000.0),
    ]


@pytest.mark.parametrize(
    "header",
    [
        "Ticker,Date,Open,High,Low,Close,Volume",
        "TICKER,DATE,OPEN,HIGH,LOW,CLOSE,VOLUME",
        "sym,timestamp,o,h,l,c,v",
        " Symbol , Day ,open,HIGH,Low,close,Vol",
        "symbol,time,open,high,low,close,volume",
    ],
)
def test_accepts_aliases_in_any_case(tmp_path: Path, header: str) -> None:
    path = write(tmp_path / "bars.csv", f"{header}\nmsft,2024-01-02,1,2,0.5,1.5,10\n")
    assert fetch_all(CsvSource(path)).rows() == [("MSFT", date(2024, 1, 2), 1.0, 2.0, 0.5, 1.5, 10.0)]


def test_ignores_extra_columns_and_never_takes_adj_close_for_close(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "Date,Open,High,Low,Adj Close,Close,Volume,Ticker,Dividends\n2024-01-02,1,2,0.5,0.75,1.5,10,ibm,0\n",
    )
    bars = fetch_all(CsvSource(path))
    assert bars.columns == list(BAR_SCHEMA)
    assert bars.rows() == [("IBM", date(2024, 1, 2), 1.0, 2.0, 0.5, 1.5, 10.0)]


def test_adj_close_alone_is_not_a_close_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv", "symbol,date,open,high,low,Adj Close,volume\nA,2024-01-02,1,2,1,1,1\n"
    )
    with pytest.raises(SourceError, match="missing column") as error:
        fetch_all(CsvSource(path))
    assert "close" in str(error.value)


def test_symbols_are_stripped_and_upper_cased_and_timestamps_give_their_date(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "  brk.b ,2024-01-02T00:00:00Z,1,2,1,1,1\n"
        "brk.b,2024-01-03 16:00:00,1,2,1,1,1\n"
        "brk.b,2024-01-04T00:00:00-05:00,1,2,1,1,1\n",
    )
    bars = fetch_all(CsvSource(path))
    assert bars["symbol"].to_list() == ["BRK.B"] * 3
    assert bars["date"].to_list() == [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]


def test_reads_gzipped_files(tmp_path: Path) -> None:
    path = write(tmp_path / "bars.csv.gz", "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1,5\n")
    assert fetch_all(CsvSource(path)).rows() == [("A", date(2024, 1, 2), 1.0, 2.0, 1.0, 1.0, 5.0)]


def test_reads_every_csv_of_a_directory_in_name_order(tmp_path: Path) -> None:
    header = "symbol,date,open,high,low,close,volume\n"
    write(tmp_path / "b.csv.gz", header + "B,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "a.csv", "Ticker,Date,O,H,L,C,V\nA,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "notes.md", "not a csv\n")
    (tmp_path / "sub.csv").mkdir()  # a directory named like a CSV is not read
    source = CsvSource(tmp_path)
    assert [p.name for p in source.files()] == ["a.csv", "b.csv.gz"]
    assert fetch_all(source)["symbol"].to_list() == ["A", "B"]
    assert source.last_report.files == [tmp_path / "a.csv", tmp_path / "b.csv.gz"]
    assert source.last_report.skipped_files == ["notes.md"]  # named in a note, not read


def test_a_directory_read_takes_upper_case_extensions_too(tmp_path: Path) -> None:
    header = "symbol,date,open,high,low,close,volume\n"
    write(tmp_path / "A.CSV", header + "A,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "B.Csv.Gz", header + "B,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "c.csv", header + "C,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "D.CSV.BAK", header + "D,2024-01-02,1,2,1,1,1\n")
    source = CsvSource(tmp_path)
    assert [p.name for p in source.files()] == ["A.CSV", "B.Csv.Gz", "c.csv"]
    assert fetch_all(source)["symbol"].to_list() == ["A", "B", "C"]
    only_upper = tmp_path / "upper"
    write(only_upper / "BARS.CSV", header + "A,2024-01-02,1,2,1,1,1\n")
    assert CsvSource(only_upper).health().ok


def test_unreadable_cells_become_nulls_and_are_counted_not_dropped(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "GOOD,2024-01-02,1,2,1,1.5,100\n"
        "BADNUM,2024-01-02,1.0.0,2,1,abc,100\n"
        "BADDATE,02/01/2024,1,2,1,1.5,100\n"
        "NOTREAL,2024-02-30,1,2,1,1.5,100\n"
        ",2024-01-02,1,2,1,1.5,100\n"
        "EMPTY,2024-01-02,,2,1,1.5,\n"
        "NANINF,2024-01-02,nan,inf,1,1.5,100\n"
        "\n",  # a blank line is no row at all
    )
    source = CsvSource(path)
    bars = fetch_all(source)
    assert bars.height == 7  # nothing dropped
    by_symbol = {row["symbol"]: row for row in bars.iter_rows(named=True)}
    assert by_symbol["GOOD"]["close"] == 1.5
    assert by_symbol["BADNUM"]["open"] is None and by_symbol["BADNUM"]["close"] is None
    assert by_symbol["BADNUM"]["high"] == 2.0  # the readable cells of a bad row are kept
    assert by_symbol["BADDATE"]["date"] is None
    assert by_symbol["NOTREAL"]["date"] is None
    assert by_symbol[None]["date"] == date(2024, 1, 2)
    assert by_symbol["EMPTY"]["open"] is None and by_symbol["EMPTY"]["volume"] is None
    assert by_symbol["NANINF"]["open"] is None and by_symbol["NANINF"]["high"] is None
    report = source.last_report
    assert report.rows == 7
    assert report.bad_cells == {"symbol": 1, "date": 2, "open": 3, "high": 1, "close": 1, "volume": 1}
    assert report.bad_cell_count == 9


def test_a_row_with_more_cells_than_the_header_keeps_no_numbers(tmp_path: Path) -> None:
    # An unquoted thousands separator shifts every later cell: none of its numbers can be trusted.
    path = write(
        tmp_path / "bars.csv",
        'symbol,date,open,high,low,close,volume\nA,2024-01-02,1,234.5,1300,1200,1250,10\nB,2024-01-02,1,2,1,1,"1,000"\n',
    )
    source = CsvSource(path)
    bars = fetch_all(source)
    assert bars.rows() == [
        ("A", date(2024, 1, 2), None, None, None, None, None),
        ("B", date(2024, 1, 2), 1.0, 2.0, 1.0, 1.0, None),  # quoted "1,000" is one (unreadable) cell
    ]
    assert source.last_report.ragged_rows == 1
    assert "1 row(s) have more cells than the header (an unquoted comma in a value?)" in source.last_notes[0]


def test_a_file_without_a_required_column_is_refused_naming_file_column_and_aliases(tmp_path: Path) -> None:
    path = write(tmp_path / "prices.csv", "Ticker,Date,Open,High,Low,Close\nA,2024-01-02,1,2,1,1\n")
    with pytest.raises(SourceError) as error:
        fetch_all(CsvSource(path))
    message = str(error.value)
    assert str(path) in message
    assert "volume" in message
    assert "vol" in message and "v," in message  # the accepted aliases


def test_two_columns_for_one_field_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "bars.csv", "symbol,date,timestamp,open,high,low,close,volume\n")
    with pytest.raises(SourceError, match="both mean 'date'"):
        fetch_all(CsvSource(path))


def test_an_empty_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(SourceError, match=r"empty\.csv"):
        fetch_all(CsvSource(path))


def test_a_header_only_file_gives_no_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "bars.csv", "symbol,date,open,high,low,close,volume\n")
    bars = fetch_all(CsvSource(path))
    assert bars.is_empty() and bars.schema == pl.Schema(BAR_SCHEMA)


def test_fetch_filters_symbols_and_dates_but_keeps_rows_it_cannot_place(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "A,2024-01-01,1,2,1,1,1\n"
        "A,2024-01-02,1,2,1,1,1\n"
        "A,2024-01-05,1,2,1,1,1\n"
        "B,2024-01-02,1,2,1,1,1\n"
        "A,bad-date,1,2,1,1,1\n"
        "B,bad-date,1,2,1,1,1\n"
        ",2024-01-02,1,2,1,1,1\n"
        ",2024-01-09,1,2,1,1,1\n",
    )
    bars = CsvSource(path).fetch([" a "], date(2024, 1, 2), date(2024, 1, 5)).bars
    assert bars.select("symbol", "date").rows() == [
        ("A", date(2024, 1, 2)),
        ("A", date(2024, 1, 5)),
        ("A", None),  # A's unreadable date: may be in range, goes to the quality gate
        (None, date(2024, 1, 2)),  # no symbol but in range: goes to the quality gate
    ]


def test_rows_outside_the_dates_are_counted_and_noted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "A,2024-01-01,1,2,1,1,1\n"
        "A,2024-01-02,1,2,1,1,1\n"
        "B,2024-01-09,1,2,1,1,1\n"
        "A,bad-date,1,2,1,1,1\n",
    )
    source = CsvSource(path)

    source.fetch(["A"], date(2024, 1, 2), date(2024, 1, 5))

    # B's row is out of range too (counted whatever the symbols); the unreadable date is not skipped,
    # and its note shows the text and the line, with what a date must look like.
    assert source.last_report.out_of_range_rows == 2
    date_note = (
        "1 date cell(s) could not be read, e.g. 'bad-date' on line 5 of bars.csv; such rows in the "
        "dates asked for are quarantined as missing_value (write a date as YYYY-MM-DD)"
    )
    assert source.last_notes == ["skipped 2 row(s) dated outside 2024-01-02..2024-01-05", date_note]
    source.fetch(None, EARLY, LATE)
    assert source.last_report.out_of_range_rows == 0 and source.last_notes == [date_note]


def test_unreadable_numbers_are_noted_with_an_example_and_the_fix(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\n"
        "A,2024-01-02,1,2,1,1,1\n"
        'A,2024-01-03,"1,000",2,1,1,1\n'
        "A,2024-01-04,,2,1,1,1\n"  # empty: a missing value, not an unreadable one
        "A,2024-01-05,abc,2,1,1,n/a\n",
    )
    source = CsvSource(path)
    source.fetch(None, EARLY, LATE)
    assert source.last_report.bad_cells == {"open": 3, "volume": 1}
    assert source.last_notes == [
        "2 open cell(s) could not be read, e.g. '1,000' on line 3 of bars.csv; such rows in the dates "
        "asked for are quarantined as missing_value (write a plain number (101.5; no thousands separator))",
        "1 volume cell(s) could not be read, e.g. 'n/a' on line 5 of bars.csv; such rows in the dates "
        "asked for are quarantined as missing_value (write a plain number (1200 or 1200.5))",
    ]


def test_health(tmp_path: Path) -> None:
    missing = CsvSource(tmp_path / "nope.csv").health()
    assert not missing.ok and "does not exist" in missing.detail
    assert missing.source == "csv"
    empty_dir = CsvSource(tmp_path).health()
    assert not empty_dir.ok and "no *.csv" in empty_dir.detail
    path = write(tmp_path / "bars.csv", "symbol,date,open,high,low,close,volume\n")
    ok = CsvSource(path).health()
    assert ok.ok and ok.detail == "" and ok.latency_ms is not None
    no_actions = CsvSource(path, tmp_path / "actions.csv").health()
    assert not no_actions.ok and "actions file" in no_actions.detail


def test_fetch_on_a_missing_path_raises_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        CsvSource(tmp_path / "nope").fetch(None, EARLY, LATE)


# --------------------------------------------------------------------------- corporate actions


def bars_file(tmp_path: Path) -> Path:
    return write(
        tmp_path / "bars.csv",
        "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1,1\nB,2024-01-02,1,2,1,1,1\n",
    )


def test_actions_are_parsed_with_defaults_for_missing_values(tmp_path: Path) -> None:
    actions_path = write(
        tmp_path / "actions.csv",
        "Symbol,Ex_Date,Split_Ratio,Cash_Dividend\na,2024-03-01,2,\nA,2024-06-03,,0.25\nB,2024-06-03,0.1,0\n",
    )
    batch = CsvSource(bars_file(tmp_path), actions_path).fetch(None, EARLY, LATE)
    assert batch.actions.schema == pl.Schema(ACTION_SCHEMA)
    assert batch.actions.rows() == [
        ("A", date(2024, 3, 1), 2.0, 0.0, "csv"),
        ("A", date(2024, 6, 3), 1.0, 0.25, "csv"),
        ("B", date(2024, 6, 3), 0.1, 0.0, "csv"),
    ]


def test_actions_file_may_omit_either_value_column(tmp_path: Path) -> None:
    splits = write(tmp_path / "splits.csv", "symbol,ex_date,split_ratio\nA,2024-03-01,3\n")
    dividends = write(tmp_path / "divs.csv.gz", "ticker,ex_date,dividend\nA,2024-03-01,0.5\n")
    assert CsvSource(bars_file(tmp_path), splits).read_actions().rows() == [
        ("A", date(2024, 3, 1), 3.0, 0.0, "csv")
    ]
    assert CsvSource(bars_file(tmp_path), dividends).read_actions().rows() == [
        ("A", date(2024, 3, 1), 1.0, 0.5, "csv")
    ]


def test_actions_are_filtered_by_symbol_but_not_by_date(tmp_path: Path) -> None:
    actions_path = write(
        tmp_path / "actions.csv",
        "symbol,ex_date,split_ratio,cash_dividend\nA,2030-01-02,2,0\nB,2024-01-02,2,0\n",
    )
    batch = CsvSource(bars_file(tmp_path), actions_path).fetch(["A"], date(2024, 1, 1), date(2024, 1, 31))
    # The 2030 split still adjusts January 2024 bars.
    assert batch.actions.select("symbol", "ex_date").rows() == [("A", date(2030, 1, 2))]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A,2024-03-01,0,0", r"line 3 \(A, 2024-03-01\): split_ratio '0' must be > 0"),
        ("A,2024-03-01,-2,0", r"line 3 .*split_ratio '-2' must be > 0"),
        ("A,2024-03-01,1,-0.5", r"line 3 .*cash_dividend '-0.5' must be ≥ 0"),
        ("A,2024-03-01,two,0", r"line 3 .*split_ratio 'two' is not a ratio \(write 2, 2:1 or 2-for-1"),
        ("A,2024-03-01,1,1$", r"line 3 .*cash_dividend '1\$' is not a number"),
        ("A,03/01/2024,2,0", r"line 3 .*ex_date '03/01/2024' is not a YYYY-MM-DD date"),
        (",2024-03-01,2,0", r"line 3 \(\?, 2024-03-01\): symbol '' is empty"),
        ("A,2024-03-01,2,0,extra", r"line 3 has more cells than the header"),
    ],
)
def test_invalid_actions_are_refused_naming_the_row(tmp_path: Path, line: str, expected: str) -> None:
    actions_path = write(
        tmp_path / "actions.csv", f"symbol,ex_date,split_ratio,cash_dividend\nB,2024-01-02,2,0\n{line}\n"
    )
    with pytest.raises(SourceError, match=expected) as error:
        CsvSource(bars_file(tmp_path), actions_path).fetch(None, EARLY, LATE)
    assert "actions.csv" in str(error.value)


def test_conflicting_actions_for_one_day_are_refused_but_exact_repeats_are_not(tmp_path: Path) -> None:
    repeated = write(
        tmp_path / "repeated.csv", "symbol,ex_date,split_ratio\nA,2024-03-01,2\nA,2024-03-01,2\n"
    )
    assert CsvSource(bars_file(tmp_path), repeated).read_actions().height == 1
    conflicting = write(
        tmp_path / "conflict.csv", "symbol,ex_date,split_ratio\nA,2024-03-01,2\nA,2024-03-01,3\n"
    )
    with pytest.raises(SourceError, match="conflicting rows for A on 2024-03-01"):
        CsvSource(bars_file(tmp_path), conflicting).read_actions()


def test_actions_file_without_ex_date_is_refused(tmp_path: Path) -> None:
    actions_path = write(tmp_path / "actions.csv", "symbol,split_ratio\nA,2\n")
    with pytest.raises(SourceError, match=r"missing column.*ex_date"):
        CsvSource(bars_file(tmp_path), actions_path).read_actions()


def test_no_actions_file_gives_empty_actions(tmp_path: Path) -> None:
    batch = CsvSource(bars_file(tmp_path)).fetch(None, EARLY, LATE)
    assert batch.actions.is_empty() and batch.actions.schema == pl.Schema(ACTION_SCHEMA)


# --------------------------------------------------------------------------- files real users bring


def test_two_columns_with_the_same_name_are_refused_not_one_of_them_silently_used(tmp_path: Path) -> None:
    # polars renames the second one close_duplicated_0, which no alias matched: it was ignored.
    path = write(
        tmp_path / "bars.csv", "symbol,date,open,high,low,close,close,volume\nA,2024-01-02,1,2,1,1.5,1.4,9\n"
    )
    with pytest.raises(SourceError, match="columns 'close' and 'close' both mean 'close'; keep one"):
        fetch_all(CsvSource(path))


def test_a_file_without_a_symbol_column_holds_the_ticker_it_is_named_after(tmp_path: Path) -> None:
    yahoo = (
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,187.15,188.44,183.89,185.64,184.94,82488700\n"
    )
    write(tmp_path / "AAPL.csv", yahoo)
    write(tmp_path / "BRK-B.CSV.GZ", yahoo)
    write(tmp_path / "msft.us.csv", yahoo)  # Stooq's lower-case name with its market
    write(tmp_path / "prices.csv", "symbol,date,open,high,low,close,volume\nIBM,2024-01-02,1,2,1,1,1\n")
    source = CsvSource(tmp_path)
    bars = fetch_all(source)
    assert bars.select("symbol", "close").rows() == [
        ("AAPL", 185.64),
        ("BRK-B", 185.64),
        ("MSFT.US", 185.64),
        ("IBM", 1.0),  # a symbol column wins over the name
    ]
    assert source.last_report.symbols_from_names == [
        ("AAPL.csv", "AAPL"),
        ("BRK-B.CSV.GZ", "BRK-B"),
        ("msft.us.csv", "MSFT.US"),
    ]
    assert source.last_notes[0] == (
        "3 file(s) without a symbol column took the ticker from their name: AAPL.csv -> AAPL, "
        "BRK-B.CSV.GZ -> BRK-B, msft.us.csv -> MSFT.US"
    )


@pytest.mark.parametrize(
    "name",
    [
        "yahoo_AAPL.csv",
        "2024.csv",
        "MY PRICES.csv",
        "prices.csv",
        "nasdaq.csv",
        "Aapl.csv",
        "DATA.CSV",
        "EXPORT.csv",
        "HISTORICAL.csv",
        "AAPL-2024.csv",
        "AAPL.2024.csv",
        "SPY-1D.csv",
        "SPY-15MIN.csv.gz",
        "data.us.csv",
        "AAPL-DAILY.txt",
    ],
)
def test_a_file_without_a_symbol_column_whose_name_is_no_ticker_is_refused(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1,1\n")
    with pytest.raises(
        SourceError,
        match=r"has no symbol column .* is not a ticker in capitals: add a symbol column, or name",
    ):
        fetch_all(CsvSource(path))


def test_reads_yfinance_multi_row_headers_one_row_per_ticker_and_day(tmp_path: Path) -> None:
    by_field = write(
        tmp_path / "by_field.csv",
        "Price,Adj Close,Adj Close,Close,Close,High,High,Low,Low,Open,Open,Volume,Volume\n"
        "Ticker,AAPL,NEWCO,AAPL,NEWCO,AAPL,NEWCO,AAPL,NEWCO,AAPL,NEWCO,AAPL,NEWCO\n"
        "Date,,,,,,,,,,,,\n"
        "2024-01-02,184.9,,185.64,,188.44,,183.89,,187.15,,82488700,\n"
        "2024-01-03,183.5,10.1,184.25,10.2,185.88,10.5,183.43,9.9,184.22,10.0,58414500,1000\n",
    )
    source = CsvSource(by_field)
    assert fetch_all(source).rows() == [
        ("AAPL", date(2024, 1, 2), 187.15, 188.44, 183.89, 185.64, 82488700.0),  # Close, not Adj Close
        ("AAPL", date(2024, 1, 3), 184.22, 185.88, 183.43, 184.25, 58414500.0),
        ("NEWCO", date(2024, 1, 3), 10.0, 10.5, 9.9, 10.2, 1000.0),
    ]
    # NEWCO's empty 2024-01-02 is no bar (not listed yet), counted rather than quarantined.
    assert source.last_report.empty_ticker_days == 1
    assert "skipped 1 day(s) of a multi-ticker yfinance file" in source.last_notes[0]
    by_ticker = write(
        tmp_path / "by_ticker.csv",
        "Ticker,MSFT,MSFT,MSFT,MSFT,MSFT,MSFT\nPrice,Open,High,Low,Close,Adj Close,Volume\nDate,,,,,,\n"
        "2024-01-02 00:00:00+00:00,373.86,375.9,366.77,370.87,369.5,25258600\n",
    )
    assert fetch_all(CsvSource(by_ticker)).rows() == [
        ("MSFT", date(2024, 1, 2), 373.86, 375.9, 366.77, 370.87, 25258600.0)
    ]


def test_reads_stooq_headers_and_basic_dates_ignoring_the_time_column(tmp_path: Path) -> None:
    path = write(
        tmp_path / "aapl.csv",
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "AAPL.US,D,20240102,000000,187.15,188.44,183.885,185.64,82488700,0\n"
        "AAPL.US,D,20241301,000000,187.15,188.44,183.885,185.64,82488700,0\n",  # no month 13
    )
    assert fetch_all(CsvSource(path)).select("symbol", "date", "close").rows() == [
        ("AAPL.US", date(2024, 1, 2), 185.64),
        ("AAPL.US", None, 185.64),
    ]


def test_reads_nasdaq_downloads_with_dollar_prices_and_us_dates_newest_first(tmp_path: Path) -> None:
    path = write(
        tmp_path / "AMZN.csv",
        "Date,Close/Last,Volume,Open,High,Low\n"
        "01/16/2024,$153.16,41384570,$151.49,$153.78,$151.46\n"
        "01/02/2024,$149.93,47339420,$151.54,$152.38,$148.39\n",
    )
    assert fetch_all(CsvSource(path)).rows() == [
        ("AMZN", date(2024, 1, 16), 151.49, 153.78, 151.46, 153.16, 41384570.0),
        ("AMZN", date(2024, 1, 2), 151.54, 152.38, 148.39, 149.93, 47339420.0),
    ]


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        (["02/01/2024", "15/01/2024"], [date(2024, 1, 2), date(2024, 1, 15)]),  # 15 is a day: day first
        (["01/02/2024", "01/15/2024"], [date(2024, 1, 2), date(2024, 1, 15)]),  # 15 is a day: month first
        (["02/01/2024", "03/01/2024"], [None, None]),  # either order fits: not guessed
        (["13/01/2024", "01/13/2024"], [None, None]),  # the file contradicts itself
    ],
)
def test_slashed_dates_are_read_only_in_the_order_the_file_proves(
    tmp_path: Path, dates: list[str], expected: list[date | None]
) -> None:
    rows = "".join(f"A,{day},1,2,1,1,1\n" for day in dates)
    path = write(tmp_path / "bars.csv", "symbol,date,open,high,low,close,volume\n" + rows)
    assert fetch_all(CsvSource(path))["date"].to_list() == expected


def test_dates_need_the_full_four_digit_year_and_two_digit_month_and_day(tmp_path: Path) -> None:
    # strptime alone would read 24-01-02 as the year 24 and 2024-1-2 as a date.
    rows = "".join(f"A,{day},1,2,1,1,1\n" for day in ["2024-01-02", "24-01-02", "2024-1-2", "+2024-01-02"])
    path = write(tmp_path / "bars.csv", "symbol,date,open,high,low,close,volume\n" + rows)
    assert fetch_all(CsvSource(path))["date"].to_list() == [date(2024, 1, 2), None, None, None]


def test_reads_short_names_and_polygon_t_for_ticker_next_to_t_for_time(tmp_path: Path) -> None:
    short = write(tmp_path / "short.csv", "ticker,t,o,h,l,c,v\nAAPL,2024-01-02T05:00:00Z,1,2,0.5,1.5,10\n")
    polygon = write(tmp_path / "polygon.csv", "T,t,o,h,l,c,v\nAAPL,2024-01-02T05:00:00Z,1,2,0.5,1.5,10\n")
    for path in (short, polygon):
        assert fetch_all(CsvSource(path)).rows() == [("AAPL", date(2024, 1, 2), 1.0, 2.0, 0.5, 1.5, 10.0)]


@pytest.mark.parametrize(
    "text",
    [
        "symbol;date;open;high;low;close;volume\nA;2024-01-02;1;2;1;1.5;10\n",
        "symbol\tdate\topen\thigh\tlow\tclose\tvolume\nA\t2024-01-02\t1\t2\t1\t1.5\t10\n",
        "symbol,date,open,high,low,close,volume\rA,2024-01-02,1,2,1,1.5,10\r",  # old Excel for Mac
        "\n\nsymbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1.5,10\n",
        "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1.5,10\nSymbol,Date,Open,High,Low,Close,Volume\n",
    ],
    ids=["semicolon", "tab", "cr-only", "blank-lines-first", "header-repeated"],
)
def test_reads_other_separators_line_ends_and_stray_header_lines(tmp_path: Path, text: str) -> None:
    source = CsvSource(write(tmp_path / "bars.csv", text))
    assert fetch_all(source).rows() == [("A", date(2024, 1, 2), 1.0, 2.0, 1.0, 1.5, 10.0)]
    assert source.last_report.bad_cells == {}


def test_decimal_commas_of_a_semicolon_file_are_noted_not_misread(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv", "symbol;date;open;high;low;close;volume\nA;2024-01-02;1,5;2;1;1,5;10\n"
    )
    source = CsvSource(path)
    assert fetch_all(source).row(0) == ("A", date(2024, 1, 2), None, 2.0, 1.0, None, 10.0)
    assert source.last_report.unreadable["open"] == (1, ("1,5", "bars.csv", 2))


def test_line_numbers_count_blank_lines_before_the_header(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bars.csv", "\n\nsymbol,date,open,high,low,close,volume\nA,2024-01-02,x,2,1,1,1\n"
    )
    source = CsvSource(path)
    fetch_all(source)
    assert source.last_report.unreadable == {"open": (1, ("x", "bars.csv", 4))}


def test_lines_repeating_the_header_are_no_rows_and_are_counted(tmp_path: Path) -> None:
    header = "symbol,date,open,high,low,close,volume\n"
    path = write(
        tmp_path / "all.csv", header + "A,2024-01-02,1,2,1,1,1\n" + header + "B,2024-01-02,1,2,1,1,1\n"
    )
    source = CsvSource(path)
    assert fetch_all(source)["symbol"].to_list() == ["A", "B"]
    assert source.last_report.repeated_headers == 1
    assert source.last_notes == ["skipped 1 line(s) repeating the header (files joined?)"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "bars.csv.gz",
            gzip.compress(b"symbol,date,open,high,low,close,volume\n" * 200)[:60],
            "damaged or cut short",
        ),
        ("bars.csv.gz", bytes(range(256)), "is named .gz but is neither gzip data nor text"),
        ("bars.csv", b"PK\x03\x04" + bytes(40), "is a zip archive: unzip it"),
        (
            "prices.xlsx",
            b"PK\x03\x04" + bytes(26) + b"[Content_Types].xml",
            r"is an Excel workbook: save it as CSV \(UTF-8\)",
        ),
        ("bars.csv", "symbol,date\r\n".encode("utf-16"), "is UTF-16 text .*save it as 'CSV UTF-8'"),
        (
            "bars.csv",
            b"symbol,date,open,high,low,close,volume,name\nA,2024-01-02,1,2,1,1,1,Soci\xe9t\xe9\n",
            "line 2 is not UTF-8 text .*save the file as UTF-8",
        ),
        ("bars.csv", b"", r"is empty \(not even a header line\)"),
        ("bars.csv", b"\n\r\n", r"is empty \(not even a header line\)"),
    ],
    ids=["truncated-gzip", "binary-gz", "zip", "xlsx", "utf16", "latin1", "empty", "blank"],
)
def test_unreadable_files_are_refused_saying_what_to_do(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SourceError, match=expected) as error:
        fetch_all(CsvSource(path))
    assert str(path) in str(error.value)


def test_plain_text_named_gz_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"  # a browser unpacked the download and kept the name
    path.write_text("symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1,1\n")
    assert fetch_all(CsvSource(path))["symbol"].to_list() == ["A"]


def test_a_folder_with_bad_files_is_refused_naming_every_one(tmp_path: Path) -> None:
    write(tmp_path / "good.csv", "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1,1\n")
    write(tmp_path / "empty.csv", "")
    write(tmp_path / "prices_2024.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1,1\n")
    with pytest.raises(SourceError) as error:
        fetch_all(CsvSource(tmp_path))
    message = str(error.value)
    assert message.startswith(f"csv: 2 of 3 files in {tmp_path} cannot be used, so nothing was read")
    assert "empty.csv: is empty" in message and "'prices_2024' is not a ticker" in message


def test_intraday_bars_are_refused_but_one_day_written_twice_is_left_to_the_gate(tmp_path: Path) -> None:
    header = "symbol,timestamp,open,high,low,close,volume\n"
    minutes = write(
        tmp_path / "minutes.csv",
        header + "A,2024-01-02T14:30:00Z,1,2,1,1.5,10\nA,2024-01-02T14:31:00Z,1,2,1,1.6,10\n",
    )
    with pytest.raises(SourceError, match=r"A has rows at 2 times of 2024-01-02 \(14:30:00Z, 14:31:00Z\)"):
        fetch_all(CsvSource(minutes))
    twice = write(
        tmp_path / "twice.csv", header + "A,2024-01-02,1,2,1,1.5,10\nA,2024-01-02T00:00:00Z,1,2,1,1.5,10\n"
    )
    assert fetch_all(CsvSource(twice)).height == 2  # the gate keeps one and quarantines the duplicate


@pytest.mark.parametrize(
    ("written", "ratio"),
    [
        ("2", 2.0),
        ("2:1", 2.0),
        ("2-for-1", 2.0),
        ("3 for 2", 1.5),
        ("1:8", 0.125),
        ("1-for-8", 0.125),
        ("1 FOR 8", 0.125),
        ("1/8", 0.125),
        ("0.125", 0.125),
    ],
)
def test_split_ratios_are_read_in_the_forms_people_write_them(
    tmp_path: Path, written: str, ratio: float
) -> None:
    actions_path = write(tmp_path / "actions.csv", f"symbol,ex_date,split_ratio\nA,2024-03-01,{written}\n")
    assert CsvSource(bars_file(tmp_path), actions_path).read_actions()["split_ratio"].to_list() == [ratio]


@pytest.mark.parametrize("written", ["1:0", "0:1", "2:1:1", "8 to 1"])
def test_impossible_split_ratio_forms_are_refused(tmp_path: Path, written: str) -> None:
    actions_path = write(tmp_path / "actions.csv", f"symbol,ex_date,split_ratio\nA,2024-03-01,{written}\n")
    with pytest.raises(SourceError, match=rf"line 2 .*split_ratio '{written}' (is not a ratio|must be > 0)"):
        CsvSource(bars_file(tmp_path), actions_path).read_actions()


def test_a_yfinance_file_without_adj_close_is_refused_as_already_adjusted(tmp_path: Path) -> None:
    # yfinance >= 0.2.51 writes this by default (auto_adjust=True): prices adjusted for everything.
    path = write(
        tmp_path / "XYZ.csv",
        "Price,Close,High,Low,Open,Volume\nTicker,XYZ,XYZ,XYZ,XYZ,XYZ\nDate,,,,,\n"
        "2024-01-02,10.5,11,9,10,1000\n",
    )
    with pytest.raises(SourceError, match=r"XYZ.csv: is a yfinance file without an Adj Close") as error:
        fetch_all(CsvSource(path))
    assert "download with yf.download(..., auto_adjust=False)" in str(error.value)


@pytest.mark.parametrize(
    "text",
    [
        "Date,Open,High,Low,Close,Adj Close,Volume\n2024-01-02,1,2,1,1.5,1.4,10\n",
        "Price,Adj Close,Close,High,Low,Open,Volume\nTicker,XYZ,XYZ,XYZ,XYZ,XYZ,XYZ\nDate,,,,,,\n"
        "2024-01-02,1.4,1.5,2,1,1,10\n",
    ],
    ids=["single-row-header", "multi-row-header"],
)
def test_yahoo_files_get_a_note_that_their_close_is_already_split_adjusted(tmp_path: Path, text: str) -> None:
    source = CsvSource(write(tmp_path / "XYZ.csv", text))
    assert fetch_all(source).select("symbol", "close").rows() == [("XYZ", 1.5)]
    assert source.last_report.yahoo_files == ["XYZ.csv"]
    assert any(
        note.startswith(
            "1 file(s) have Yahoo's layout (an Adj Close column): XYZ.csv. Yahoo's Close is "
            "already split-adjusted, so the --actions file must not repeat these symbols' splits"
        )
        for note in source.last_notes
    )


def test_files_without_adj_close_get_no_yahoo_note(tmp_path: Path) -> None:
    source = CsvSource(
        write(tmp_path / "b.csv", "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1,1\n")
    )
    fetch_all(source)
    assert source.last_report.yahoo_files == [] and source.last_notes == []


def test_a_folder_reads_stooq_txt_files_and_notes_the_files_it_skips(tmp_path: Path) -> None:
    stooq = "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
    write(tmp_path / "msft.us.txt", stooq + "MSFT.US,D,20240102,000000,1,2,1,1.5,10,0\n")
    write(tmp_path / "IBM.TXT.GZ", stooq + "IBM.US,D,20240102,000000,1,2,1,1.5,10,0\n")
    write(tmp_path / "prices.xlsx", "not read")
    write(tmp_path / ".DS_Store", "hidden")
    # Companions a folder of data often holds: not bars, and they must not refuse the whole folder.
    write(tmp_path / "README.txt", "Daily bars from Stooq, downloaded 2024-01-03.\n")
    write(tmp_path / "tickers.txt", "MSFT\nIBM\n")
    source = CsvSource(tmp_path)
    assert [p.name for p in source.files()] == ["IBM.TXT.GZ", "msft.us.txt"]
    assert fetch_all(source)["symbol"].to_list() == ["IBM.US", "MSFT.US"]
    assert source.last_report.skipped_files == ["README.txt", "prices.xlsx", "tickers.txt"]
    assert source.last_notes == [
        "skipped 3 file(s) of the folder that hold no bars (not *.csv or *.csv.gz, nor a *.txt with a "
        "close column): README.txt, prices.xlsx, tickers.txt"
    ]


def test_a_header_whose_first_column_is_named_hash_is_the_header_not_a_comment(tmp_path: Path) -> None:
    path = write(
        tmp_path / "rows.csv",
        "# exported 2024-01-03\n#,symbol,date,open,high,low,close,volume\n1,AAPL,2024-01-02,1,2,1,1.5,10\n",
    )
    bars = fetch_all(CsvSource(path))
    assert bars.select("symbol", "date", "close").rows() == [("AAPL", date(2024, 1, 2), 1.5)]


@pytest.mark.parametrize(
    ("name", "symbol"),
    [("BRK.B", "BRK.B"), ("BRK.B.csv", "BRK.B"), ("0700.HK.csv", "0700.HK"), ("7203.jp.txt", "7203.JP")],
)
def test_only_known_extensions_are_taken_off_a_file_name(tmp_path: Path, name: str, symbol: str) -> None:
    path = write(tmp_path / name, "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,1,1,1\n")
    assert fetch_all(CsvSource(path))["symbol"].to_list() == [symbol]  # BRK.B, not BRK


def test_a_header_starting_with_an_unnamed_index_column_keeps_its_columns_in_place(tmp_path: Path) -> None:
    # pandas' to_csv(sep="\t") writes the index column with an empty name: the line starts with a tab.
    text = "\n\tsymbol\tdate\topen\thigh\tlow\tclose\tvolume\n0\tA\t2024-01-02\t1\t2\t0.5\t1.5\t10\n"
    source = CsvSource(write(tmp_path / "bars.csv", text))
    assert fetch_all(source).rows() == [("A", date(2024, 1, 2), 1.0, 2.0, 0.5, 1.5, 10.0)]
    assert source.last_notes == []


def test_blank_lines_after_a_bom_are_skipped_and_counted_in_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv"
    path.write_bytes(
        b"\xef\xbb\xbf\r\n \r\nsymbol,date,open,high,low,close,volume\r\nA,2024-01-02,x,2,1,1,1\r\n"
    )
    source = CsvSource(path)
    assert fetch_all(source)["symbol"].to_list() == ["A"]
    assert source.last_report.unreadable == {"open": (1, ("x", "bars.csv", 4))}


@pytest.mark.parametrize(
    "text",
    [
        "symbol,date,time,open,high,low,close,volume\n"
        "A,2024-01-02,09:30,1,2,1,1.5,10\nA,2024-01-02,09:35,1,2,1,1.6,10\n",
        "<TICKER>,<PER>,<DATE>,<TIME>,<OPEN>,<HIGH>,<LOW>,<CLOSE>,<VOL>,<OPENINT>\n"
        "A,5,20240102,093000,1,2,1,1.5,10,0\nA,5,20240102,093500,1,2,1,1.6,10,0\n",
    ],
    ids=["date-time", "stooq"],
)
def test_intraday_bars_with_a_separate_time_column_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(SourceError, match=r"A has rows at 2 times of 2024-01-02 .*intraday bars\?"):
        fetch_all(CsvSource(write(tmp_path / "bars.csv", text)))


def test_a_time_column_with_one_time_per_day_is_read(tmp_path: Path) -> None:
    text = (
        "symbol,date,time,open,high,low,close,volume\n"
        "A,2024-01-02,16:00,1,2,1,1.5,10\nA,2024-01-03,16:00,1,2,1,1.6,10\n"
    )
    assert fetch_all(CsvSource(write(tmp_path / "bars.csv", text))).height == 2


def test_a_header_line_in_another_column_order_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "joined.csv",
        "symbol,date,open,high,low,close,volume\nA,2024-01-02,1,2,1,1.5,10\n"
        "symbol,date,close,high,low,open,volume\nB,2024-01-02,1.5,2,1,1,10\n",
    )
    with pytest.raises(SourceError, match=r"joined.csv: line 3 repeats the header's names in another order"):
        fetch_all(CsvSource(path))


def test_comment_lines_before_the_header_are_skipped_and_counted_in_line_numbers(tmp_path: Path) -> None:
    text = (
        "# exported 2024-02-01\n#source: broker\n"
        "symbol,date,open,high,low,close,volume\nA,2024-01-02,x,2,1,1,1\n"
    )
    source = CsvSource(write(tmp_path / "bars.csv", text))
    assert fetch_all(source)["symbol"].to_list() == ["A"]
    assert source.last_report.unreadable == {"open": (1, ("x", "bars.csv", 4))}
