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
    write(tmp_path / "notes.txt", "not a csv\n")
    (tmp_path / "sub.csv").mkdir()  # a directory named like a CSV is not read
    source = CsvSource(tmp_path)
    assert [p.name for p in source.files()] == ["a.csv", "b.csv.gz"]
    assert fetch_all(source)["symbol"].to_list() == ["A", "B"]
    assert source.last_report.files == [tmp_path / "a.csv", tmp_path / "b.csv.gz"]


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
        ("A,2024-03-01,two,0", r"line 3 .*split_ratio 'two' is not a number"),
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
