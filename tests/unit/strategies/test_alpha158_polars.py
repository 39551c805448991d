"""Alpha158 in Polars: the feature list, Qlib's operator semantics, the session grid and the one-day path.

The operator checks use independent oracles on the same float32 inputs: NumPy float32 arithmetic for
the element-wise features, pandas' rolling operators (what Qlib calls) for the windows, and Qlib's
own compiled ``rolling_slope``/``rolling_rsquare``/``rolling_resi`` for the regressions. The full
comparison with Qlib's ``Alpha158`` handler is ``tests/integration/strategies/test_alpha158_parity.py``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date

import numpy as np
import pandas as pd
import polars as pl
import pytest

from trader.data.calendar import trading_calendar
from trader.strategies.alpha_baseline import alpha158_polars
from trader.strategies.alpha_baseline.alpha158_ops import log32
from trader.strategies.alpha_baseline.alpha158_polars import (
    ALPHA158,
    FEATURE_NAMES,
    HISTORY_SESSIONS,
    Alpha158InputError,
    alpha158_features,
    alpha158_latest,
    history_start,
)
from trader.strategies.alpha_baseline.alpha158_spec import ALPHA158_EXPRESSIONS, ALPHA158_VERSION

SESSIONS: list[date] = trading_calendar().sessions(date(2023, 1, 3), date(2023, 9, 29)).to_list()
N = len(SESSIONS)
#: Sessions each symbol of the test market misses (halts and a missing day), by index.
GAPS = {"BBB": [*range(50, 53), *range(90, 96), 120], "EEE": [30, 31, 32, 33]}
SPANS = {"AAA": (0, N), "BBB": (0, N), "CCC": (40, N), "DDD": (0, 150), "EEE": (0, N), "ONE": (N - 1, N)}


def random_bars(seed: int = 7) -> pl.DataFrame:
    """A small market: halts (3, 6 sessions), a missing day, an IPO, a delisting, zero volumes, one bar."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol, (first, last) in SPANS.items():
        n = last - first
        close = 40 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        open_ = close * (1 + rng.normal(0, 0.01, n))
        high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.01, n)))
        low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.01, n)))
        volume = rng.integers(10_000, 2_000_000, n).astype(float)
        if symbol == "EEE":
            volume[[10, 11, 60]] = 0.0  # 0/0 and x/0 in Log($volume/Ref($volume, 1)+1)
        days = SESSIONS[first:last]
        frame = pl.DataFrame(
            {"symbol": symbol, "date": days, "open": open_, "high": high, "low": low, "close": close}
        ).with_columns(volume=pl.Series(volume), factor=pl.lit(1.0))
        missing = {SESSIONS[i] for i in GAPS.get(symbol, [])}
        frames.append(frame.filter(~pl.col("date").is_in(sorted(missing))))
    return pl.concat(frames)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return random_bars()


@pytest.fixture(scope="module")
def full(bars: pl.DataFrame) -> pl.DataFrame:
    return alpha158_features(bars)


def one_symbol(full: pl.DataFrame, symbol: str) -> pl.DataFrame:
    return full.filter(pl.col("symbol") == symbol).sort("date")


def grid_series(bars: pl.DataFrame, symbol: str, field: str) -> pd.Series:
    """``field`` of ``symbol`` as Qlib reads it: float32, one value per session of its span, NaN if no bar."""
    part = bars.filter(pl.col("symbol") == symbol)
    first, last = SPANS[symbol]
    days = pl.DataFrame({"date": SESSIONS[first:last]})
    values = days.join(part, on="date", how="left", maintain_order="left").get_column(field)
    return pd.Series(values.to_numpy().astype(np.float32))


def assert_close(ours: pl.Series | np.ndarray, expected: pd.Series | np.ndarray, rel: float = 1e-6) -> None:
    """Same missing values, and equal within ``rel`` (plus 1e-12 where the values are ~0)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    keep = ~np.isnan(a)
    np.testing.assert_allclose(a[keep], b[keep], rtol=rel, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# The feature list and its version
# --------------------------------------------------------------------------------------------------


def test_feature_list_is_qlibs_alpha158_in_qlibs_order() -> None:
    from qlib.contrib.data.loader import Alpha158DL

    fields, names = Alpha158DL.get_feature_config(
        {"kbar": {}, "price": {"windows": [0], "feature": ["OPEN", "HIGH", "LOW", "VWAP"]}, "rolling": {}}
    )
    assert list(zip(names, fields, strict=True)) == list(ALPHA158_EXPRESSIONS)
    assert len(FEATURE_NAMES) == 158
    assert FEATURE_NAMES[:3] == ("KMID", "KLEN", "KMID2")
    assert FEATURE_NAMES[-1] == "VSUMD60"


def test_version_digest_covers_the_version_and_every_expression() -> None:
    def digest(version: int, features: object) -> str:
        document = {"set": "alpha158", "version": version, "features": features}
        return hashlib.sha256(json.dumps(document, separators=(",", ":")).encode()).hexdigest()[:16]

    assert ALPHA158.digest == digest(ALPHA158_VERSION, ALPHA158_EXPRESSIONS)
    assert digest(ALPHA158_VERSION + 1, ALPHA158_EXPRESSIONS) != ALPHA158.digest
    edited = [*ALPHA158_EXPRESSIONS[:-1], ("VSUMD60", "0")]
    assert digest(ALPHA158_VERSION, edited) != ALPHA158.digest
    assert ALPHA158.tag == f"alpha158-v{ALPHA158_VERSION}-{ALPHA158.digest}"
    assert ALPHA158.features == FEATURE_NAMES


# --------------------------------------------------------------------------------------------------
# Output shape and the session grid
# --------------------------------------------------------------------------------------------------


def test_output_has_a_float32_row_per_session_of_each_span(full: pl.DataFrame) -> None:
    assert full.columns == ["symbol", "date", *FEATURE_NAMES]
    assert all(dtype == pl.Float32 for dtype in full.select(FEATURE_NAMES).dtypes)
    assert full.select(pl.struct("symbol", "date").is_unique().all()).item()
    assert full.equals(full.sort("symbol", "date"))
    for symbol, (first, last) in SPANS.items():
        # Halted sessions are rows too: Qlib computes features for them.
        assert one_symbol(full, symbol).get_column("date").to_list() == SESSIONS[first:last]


def test_a_missing_session_counts_in_the_windows(bars: pl.DataFrame, full: pl.DataFrame) -> None:
    frame = one_symbol(full, "BBB")
    close = grid_series(bars, "BBB", "close")
    after = 96  # first session after the 6-session halt 90..95
    roc5 = frame.get_column("ROC5")
    # ROC5 looks 5 *sessions* back: into the halt (missing), not 5 bars back.
    assert roc5[after] is None
    assert roc5[after + 5] == pytest.approx(float(close[after] / close[after + 5]), rel=1e-6)
    halt_row = frame.row(92, named=True)
    assert halt_row["KMID"] is None and halt_row["MA5"] is None  # divided by a missing close
    assert halt_row["CNTP5"] is not None  # NaN > x is False in NumPy: counted as "not up"
    # np.argmax returns the first NaN: the halt's first session, 90, is 3rd in the window 88..92.
    assert halt_row["IMAX5"] == pytest.approx(3 / 5)
    assert frame.row(90, named=True)["IMAX5"] == 1.0
    assert frame.row(95, named=True)["STD5"] is None  # five missing sessions in the window


def test_custom_sessions_replace_the_exchange_calendar(bars: pl.DataFrame, full: pl.DataFrame) -> None:
    assert alpha158_features(bars, sessions=SESSIONS).equals(full)
    fewer = [d for d in SESSIONS if d != SESSIONS[10]]
    with pytest.raises(Alpha158InputError, match="not sessions of the calendar"):
        alpha158_features(bars, sessions=fewer)


def test_computing_in_chunks_gives_the_same_values(
    bars: pl.DataFrame, full: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alpha158_polars, "CHUNK_ROWS", 100)
    assert alpha158_features(bars).equals(full)


# --------------------------------------------------------------------------------------------------
# Qlib's operators, against independent oracles
# --------------------------------------------------------------------------------------------------


def test_kbar_and_price_features_are_float32_arithmetic_in_qlibs_order(
    bars: pl.DataFrame, full: pl.DataFrame
) -> None:
    o, h, lo, c = (grid_series(bars, "AAA", f).to_numpy() for f in ("open", "high", "low", "close"))
    frame = one_symbol(full, "AAA")
    eps = np.float32(1e-12)
    two = np.float32(2)
    expected = {
        "KMID": (c - o) / o,
        "KLEN": (h - lo) / o,
        "KMID2": (c - o) / (h - lo + eps),
        "KUP": (h - np.maximum(o, c)) / o,
        "KLOW2": (np.minimum(o, c) - lo) / (h - lo + eps),
        "KSFT": (two * c - h - lo) / o,
        "KSFT2": (two * c - h - lo) / (h - lo + eps),
        "HIGH0": h / c,
        "ROC5": np.concatenate([np.full(5, np.nan, np.float32), c[:-5] / c[5:]]),
    }
    for name, values in expected.items():
        assert values.dtype == np.float32
        # Bit for bit: same IEEE float32 operations in the same order.
        np.testing.assert_array_equal(frame.get_column(name).to_numpy(), values, err_msg=name)
    typical = (pl.col("high") + pl.col("low") + pl.col("close")) / 3  # the exporter's $vwap
    vwap = bars.filter(pl.col("symbol") == "AAA").select(typical).to_series().to_numpy().astype(np.float32)
    np.testing.assert_array_equal(frame.get_column("VWAP0").to_numpy(), vwap / c)


def test_log_is_numpys_float32_logarithm() -> None:
    values = np.random.default_rng(3).lognormal(12, 2, 20_000).astype(np.float32)
    ours = pl.DataFrame({"v": values}).select(log32(pl.col("v"))).to_series().to_numpy()
    np.testing.assert_array_equal(ours, np.log(values))


def pandas_roll(series: pd.Series, window: int) -> pd.core.window.rolling.Rolling:
    return series.astype(np.float64).rolling(window, min_periods=1)


@pytest.mark.parametrize("symbol", ["BBB", "CCC", "EEE"])
def test_rolling_features_equal_pandas_rolling_operators(
    bars: pl.DataFrame, full: pl.DataFrame, symbol: str
) -> None:
    h, lo, c, v = (grid_series(bars, symbol, f) for f in ("high", "low", "close", "volume"))
    c1, v1 = c.shift(1), v.shift(1)
    c64 = c.astype(np.float64)
    frame = one_symbol(full, symbol)

    def near_zero(std: pd.Series) -> np.ndarray:
        return np.isclose(std, 0, atol=2e-5)

    lv = np.log(v + np.float32(1))
    rc, rv = c / c1, np.log(v / v1 + np.float32(1))
    gain = np.maximum(c - c1, np.float32(0))
    move = np.abs(c - c1)
    for d in (5, 20):
        corr = pandas_roll(c, d).corr(lv.astype(np.float64))
        corr[near_zero(pandas_roll(c, d).std()) | near_zero(pandas_roll(lv, d).std())] = np.nan
        cord = pandas_roll(rc, d).corr(rv.astype(np.float64))
        cord[near_zero(pandas_roll(rc, d).std()) | near_zero(pandas_roll(rv, d).std())] = np.nan
        expected = {
            f"MA{d}": pandas_roll(c, d).mean() / c64,
            f"STD{d}": pandas_roll(c, d).std() / c64,
            f"MAX{d}": pandas_roll(h, d).max() / c64,
            f"QTLU{d}": pandas_roll(c, d).quantile(0.8) / c64,
            f"QTLD{d}": pandas_roll(c, d).quantile(0.2) / c64,
            f"RANK{d}": pandas_roll(c, d).rank(pct=True),
            f"IMAX{d}": pandas_roll(h, d).apply(lambda x: x.argmax() + 1, raw=True) / d,
            f"IMIN{d}": pandas_roll(lo, d).apply(lambda x: x.argmin() + 1, raw=True) / d,
            f"CORR{d}": corr,
            f"CORD{d}": cord,
            f"CNTP{d}": pandas_roll((c > c1).astype(np.float64), d).mean(),
            f"SUMP{d}": pandas_roll(gain, d).sum() / (pandas_roll(move, d).sum() + 1e-12),
            f"VSTD{d}": pandas_roll(v, d).std() / (v + np.float32(1e-12)).astype(np.float64),
        }
        for name, values in expected.items():
            assert_close(frame.get_column(name), values.astype(np.float32), rel=1e-6)


@pytest.mark.parametrize("symbol", ["AAA", "BBB"])
def test_regressions_equal_qlibs_compiled_rolling_operators(
    bars: pl.DataFrame, full: pl.DataFrame, symbol: str
) -> None:
    from qlib.data._libs.rolling import rolling_resi, rolling_rsquare, rolling_slope

    close = grid_series(bars, symbol, "close")
    values = close.to_numpy().astype(np.float64)
    frame = one_symbol(full, symbol)
    for d in (5, 60):
        rsqr = rolling_rsquare(values, d)
        rsqr[np.isclose(pandas_roll(close, d).std(), 0, atol=2e-5)] = np.nan  # Qlib's Rsquare mask
        assert_close(frame.get_column(f"BETA{d}"), (rolling_slope(values, d) / values).astype(np.float32))
        assert_close(frame.get_column(f"RSQR{d}"), rsqr.astype(np.float32))
        # Residuals are small differences of large sums: relative rounding is larger, still < 1e-6.
        assert_close(frame.get_column(f"RESI{d}"), (rolling_resi(values, d) / values).astype(np.float32))


def test_zero_volumes_make_infinities_that_the_windows_skip(bars: pl.DataFrame, full: pl.DataFrame) -> None:
    v = grid_series(bars, "EEE", "volume")
    rv = np.log(v / v.shift(1) + np.float32(1))
    assert np.isinf(rv[12]) and np.isnan(rv[11])  # x/0 and 0/0
    frame = one_symbol(full, "EEE")
    assert frame.get_column("CORD5")[12] is not None  # pandas treats inf as missing: not NaN
    assert frame.get_column("VMA5")[10] == pytest.approx(
        float(pandas_roll(v, 5).mean()[10] / np.float64(np.float32(1e-12))), rel=1e-6
    )


# --------------------------------------------------------------------------------------------------
# One day: alpha158_latest
# --------------------------------------------------------------------------------------------------


def test_latest_gives_the_same_bits_as_the_full_computation(bars: pl.DataFrame, full: pl.DataFrame) -> None:
    days = [SESSIONS[i] for i in (0, 1, 4, 5, 39, 40, 41, 60, 61, 92, 96, 101, 121, 149, 150, N - 2, N - 1)]
    for day in days:
        assert alpha158_latest(bars, day).equals(full.filter(pl.col("date") == day)), day


def test_latest_reads_only_the_last_history_sessions(bars: pl.DataFrame) -> None:
    day = SESSIONS[-1]
    start = history_start(day)
    assert start == SESSIONS[-HISTORY_SESSIONS]
    needed = bars.filter(pl.col("date") >= start)
    expected = alpha158_latest(bars, day)
    assert alpha158_latest(needed, day).equals(expected)
    # A bar one session older than that changes nothing on ``day`` ...
    older = SESSIONS[-HISTORY_SESSIONS - 1]
    altered = bars.with_columns(
        pl.when(pl.col("date") == older).then(pl.col("close") * 2).otherwise(pl.col("close")).alias("close")
    )
    assert alpha158_latest(altered, day).equals(expected)
    # ... while the oldest session it reads does (ROC60 divides by it).
    oldest = bars.with_columns(
        pl.when(pl.col("date") == start).then(pl.col("close") * 2).otherwise(pl.col("close")).alias("close")
    )
    assert not alpha158_latest(oldest, day).equals(expected)


def test_latest_on_cut_bars_needs_to_know_where_each_history_starts(
    bars: pl.DataFrame, full: pl.DataFrame
) -> None:
    day = SESSIONS[152]  # its window starts on session 92, inside BBB's halt (90..95)
    cut = bars.filter(pl.col("date") >= history_start(day))
    expected = full.filter(pl.col("date") == day)
    # Without more, BBB's first bar in the cut (session 96) looks like a new listing: shorter windows.
    naive = alpha158_latest(cut, day)
    assert not naive.filter(pl.col("symbol") == "BBB").equals(expected.filter(pl.col("symbol") == "BBB"))
    assert naive.filter(pl.col("symbol") != "BBB").equals(expected.filter(pl.col("symbol") != "BBB"))
    first_bars = bars.group_by("symbol").agg(pl.col("date").min().alias("first_date"))
    assert alpha158_latest(cut, day, first_bars=first_bars).equals(expected)
    with pytest.raises(Alpha158InputError, match="first_bars lacks"):
        alpha158_latest(cut, day, first_bars=first_bars.rename({"first_date": "day"}))


def test_latest_rows_are_the_symbols_whose_span_contains_the_day(bars: pl.DataFrame) -> None:
    assert alpha158_latest(bars, SESSIONS[-1]).get_column("symbol").to_list() == [
        "AAA", "BBB", "CCC", "EEE", "ONE"
    ]  # fmt: skip
    assert "DDD" in alpha158_latest(bars, SESSIONS[149]).get_column("symbol").to_list()
    assert "CCC" not in alpha158_latest(bars, SESSIONS[39]).get_column("symbol").to_list()
    halted = alpha158_latest(bars, SESSIONS[92]).filter(pl.col("symbol") == "BBB")
    assert halted.height == 1 and halted.item(0, "KMID") is None


# --------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_error(bars: pl.DataFrame) -> None:
    with pytest.raises(Alpha158InputError, match=r"lack the column\(s\) \['volume'\]"):
        alpha158_features(bars.drop("volume"))
    with pytest.raises(Alpha158InputError, match="more than one row for a"):
        alpha158_features(pl.concat([bars, bars.head(1)]))
    saturday = bars.head(1).with_columns(pl.lit(date(2023, 1, 7)).alias("date"))
    with pytest.raises(Alpha158InputError, match="not sessions of the calendar"):
        alpha158_features(pl.concat([bars, saturday]))
    with pytest.raises(Alpha158InputError, match="2023-01-07 is not a session"):
        alpha158_latest(bars, date(2023, 1, 7))
    with pytest.raises(Alpha158InputError, match="not a session"):
        history_start(date(2023, 1, 7))
    assert Alpha158InputError.exit_code == 2


def test_no_bars_give_an_empty_frame_with_the_feature_columns(bars: pl.DataFrame) -> None:
    for empty in (alpha158_features(bars.clear()), alpha158_latest(bars.clear(), SESSIONS[-1])):
        assert empty.is_empty()
        assert empty.columns == ["symbol", "date", *FEATURE_NAMES]
    assert alpha158_latest(bars, date(2024, 1, 2)).is_empty()  # after every span
