"""The pure parts of the Qlib exporter: .bin encoding, slot layout, folder names, instrument ranges,
and the "unchanged" decision that makes exports incremental."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trader.data.bars import LISTING_SCHEMA
from trader.research.qlib_export import (
    UnknownMarketError,
    calendar_text,
    decode_feature,
    dense_values,
    digest,
    encode_feature,
    feature_folder,
    instrument_ranges,
    instruments_text,
    is_unchanged,
    require_market,
)

D = date


def test_encoding_is_start_index_then_values_little_endian_float32() -> None:
    data = encode_feature(3, [1.5, np.nan, -2.25])
    assert len(data) == 16
    # Read with an explicit byte order, independent of the machine's.
    raw = np.frombuffer(data, dtype="<f4")
    assert raw[0] == 3.0
    assert raw[1] == 1.5
    assert np.isnan(raw[2])
    assert raw[3] == -2.25
    assert data[:4] == bytes.fromhex("00004040")  # 3.0 as a little-endian IEEE 754 single


def test_round_trip_keeps_float32_values_and_nans() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(100, 30, 1_000)
    values[[0, 17, 999]] = np.nan
    start, back = decode_feature(encode_feature(1_234, values))
    assert start == 1_234
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, values.astype(np.float32))  # NaN == NaN here


def test_encoding_refuses_what_qlib_could_not_read() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        encode_feature(-1, [1.0])
    with pytest.raises(ValueError, match="fit a float32"):
        encode_feature(2**24 + 1, [1.0])
    with pytest.raises(ValueError, match="one-dimensional"):
        encode_feature(0, [[1.0, 2.0]])
    with pytest.raises(ValueError, match="whole float32"):
        decode_feature(b"\x00\x00\x00")


def test_dense_values_put_nan_in_sessions_without_a_bar() -> None:
    slots = np.array([5, 6, 9], dtype=np.int64)
    values = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])  # rows: bars; columns: fields
    first, dense = dense_values(slots, values)
    assert first == 5
    assert dense.shape == (2, 5)  # sessions 5..9
    np.testing.assert_array_equal(dense[0], np.array([1, 2, np.nan, np.nan, 3], dtype=np.float32))
    np.testing.assert_array_equal(dense[1], np.array([10, 20, np.nan, np.nan, 30], dtype=np.float32))


def test_dense_values_refuse_unsorted_or_repeated_slots() -> None:
    with pytest.raises(ValueError, match="ascending"):
        dense_values(np.array([3, 2]), np.ones((2, 1)))
    with pytest.raises(ValueError, match="ascending"):
        dense_values(np.array([3, 3]), np.ones((2, 1)))
    with pytest.raises(ValueError, match="no rows"):
        dense_values(np.array([], dtype=np.int64), np.ones((0, 1)))


@pytest.mark.parametrize(
    ("symbol", "folder"),
    [("AAPL", "aapl"), ("BRK.B", "brk.b"), ("CON", "_qlib_con"), ("lpt1", "_qlib_lpt1"), ("COM10", "com10")],
)
def test_feature_folder_is_what_qlib_looks_for(symbol: str, folder: str) -> None:
    assert feature_folder(symbol) == folder


def _listings(*rows: tuple[str, date, date | None, bool]) -> pl.DataFrame:
    return pl.DataFrame([(s, a, b, t, "Tech") for s, a, b, t in rows], schema=LISTING_SCHEMA, orient="row")


def _spans(*rows: tuple[str, date, date]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows), schema={"symbol": pl.String, "first": pl.Date, "last": pl.Date}, orient="row"
    )


def test_instrument_ranges_follow_listings_clipped_to_the_bars() -> None:
    spans = _spans(
        ("AAA", D(2020, 1, 2), D(2020, 12, 31)),  # listed before the data starts, still listed
        ("DEL", D(2020, 1, 2), D(2020, 12, 31)),  # delisted in June; bars after it do not count
        ("IPO", D(2020, 3, 2), D(2020, 12, 31)),  # listed in March
        ("RE", D(2020, 1, 2), D(2020, 12, 31)),  # delisted and listed again
        ("NOL", D(2020, 2, 3), D(2020, 11, 30)),  # no listing at all: its bars' span
        ("IDX", D(2020, 1, 2), D(2020, 12, 31)),  # not tradable (say an index): not in "all"
    )
    listings = _listings(
        ("AAA", D(2010, 1, 1), None, True),
        ("DEL", D(2010, 1, 1), D(2020, 6, 30), True),
        ("IPO", D(2020, 3, 2), None, True),
        ("RE", D(2019, 1, 1), D(2020, 3, 31), True),
        ("RE", D(2020, 9, 1), None, True),
        ("IDX", D(2010, 1, 1), None, False),
        ("GONE", D(2010, 1, 1), D(2015, 1, 1), True),  # no bars: not exported
    )
    ranges = instrument_ranges(spans, listings)
    assert ranges.rows() == [
        ("AAA", D(2020, 1, 2), D(2020, 12, 31)),
        ("DEL", D(2020, 1, 2), D(2020, 6, 30)),
        ("IPO", D(2020, 3, 2), D(2020, 12, 31)),
        ("NOL", D(2020, 2, 3), D(2020, 11, 30)),
        ("RE", D(2020, 1, 2), D(2020, 3, 31)),
        ("RE", D(2020, 9, 1), D(2020, 12, 31)),
    ]
    assert instruments_text(ranges).splitlines()[1] == "DEL\t2020-01-02\t2020-06-30"


def test_a_listing_entirely_outside_the_bars_gives_no_range() -> None:
    spans = _spans(("OLD", D(2020, 1, 2), D(2020, 12, 31)))
    listings = _listings(("OLD", D(2010, 1, 1), D(2015, 1, 1), True))
    assert instrument_ranges(spans, listings).is_empty()


def test_calendar_text_is_one_iso_date_per_line() -> None:
    assert calendar_text([D(2024, 1, 2), D(2024, 1, 3)]) == "2024-01-02\n2024-01-03\n"


def test_unchanged_only_when_digest_and_size_both_match() -> None:
    data = encode_feature(0, [1.0, 2.0])
    recorded = digest(data)
    assert is_unchanged(recorded, data, len(data))
    assert not is_unchanged(None, data, len(data))  # never exported (or manifest lost): compare bytes
    assert not is_unchanged(recorded, data, None)  # the file was deleted
    assert not is_unchanged(recorded, data, len(data) - 4)  # truncated on disk
    appended = encode_feature(0, [1.0, 2.0, 3.0])
    assert not is_unchanged(recorded, appended, len(data))  # a new day
    restated = encode_feature(0, [0.5, 2.0])  # a split restates the past: same size, new bytes
    assert not is_unchanged(recorded, restated, len(restated))


def test_a_market_without_an_instruments_file_is_refused_naming_the_ones_there(tmp_path: Path) -> None:
    (tmp_path / "instruments").mkdir()
    (tmp_path / "instruments" / "all.txt").write_text("SYN000\t2022-01-03\t2022-12-30\n")
    require_market(tmp_path, "all")
    with pytest.raises(UnknownMarketError, match=r"market: 'nasdaq100' is not a market .* \(it has: all\)"):
        require_market(tmp_path, "nasdaq100")
    assert UnknownMarketError.exit_code == 2
