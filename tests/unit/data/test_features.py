"""Feature definitions: known answers, null until the window is full, no leakage across symbols."""

from __future__ import annotations

import dataclasses
import math
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from trader.data.features import (
    FEATURE_SET_VERSION,
    FEATURES,
    compute_features,
    feature_set_version,
    latest_features,
    max_window,
)


def frame(symbol: str, closes: list[float], volumes: list[float] | None = None) -> pl.DataFrame:
    n = len(closes)
    start = date(2024, 1, 1)
    return pl.DataFrame(
        {
            "symbol": [symbol] * n,
            "date": [start + timedelta(days=i) for i in range(n)],
            "open": closes,
            "high": [c * 1.02 for c in closes],
            "low": [c * 0.99 for c in closes],
            "close": closes,
            "volume": volumes if volumes is not None else [1000.0] * n,
        }
    )


def random_history(symbols: int, bars: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(symbols):
        closes = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, bars)))
        volumes = rng.uniform(1e5, 1e6, bars).round()
        frames.append(frame(f"S{index}", closes.tolist(), volumes.tolist()))
    return pl.concat(frames)


def test_the_registry_holds_the_documented_features() -> None:
    assert list(FEATURES) == [
        "ret_1d",
        "ret_5d",
        "ret_20d",
        "ma_ratio_5",
        "ma_ratio_20",
        "vol_20",
        "volume_ratio_20",
        "hl_range",
    ]
    assert max_window() == 21
    assert max_window(["ret_1d", "hl_range"]) == 2


def test_known_answers_on_a_tiny_frame() -> None:
    closes = [10.0, 11.0, 12.1, 11.0, 11.0, 13.0]
    volumes = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0]
    out = compute_features(frame("A", closes, volumes), ["ret_1d", "ret_5d", "ma_ratio_5", "hl_range"])
    assert out.columns == ["symbol", "date", "ret_1d", "ret_5d", "ma_ratio_5", "hl_range"]
    ret_1d = out["ret_1d"].to_list()
    assert ret_1d[0] is None
    assert ret_1d[1:] == pytest.approx([0.1, 0.1, 11.0 / 12.1 - 1, 0.0, 13.0 / 11.0 - 1], abs=1e-15)
    assert out["ret_5d"].to_list()[:5] == [None] * 5
    assert out["ret_5d"][5] == pytest.approx(0.3, abs=1e-15)
    ma = out["ma_ratio_5"].to_list()
    assert ma[:4] == [None] * 4
    assert ma[4] == pytest.approx(11.0 / (55.1 / 5) - 1, abs=1e-15)
    assert ma[5] == pytest.approx(13.0 / (58.1 / 5) - 1, abs=1e-15)
    assert out["hl_range"].to_list() == pytest.approx([0.03] * 6, abs=1e-15)


def test_volatility_and_volume_ratio_match_numpy() -> None:
    rng = np.random.default_rng(1)
    closes = (100 * np.exp(np.cumsum(rng.normal(0, 0.02, 30)))).tolist()
    volumes = rng.uniform(1e5, 1e6, 30).tolist()
    out = compute_features(frame("A", closes, volumes))
    returns = np.diff(closes) / np.asarray(closes[:-1])
    for row in range(20, 30):
        expected_vol = float(np.std(returns[row - 20 : row], ddof=1))
        assert out["vol_20"][row] == pytest.approx(expected_vol, rel=1e-12)
    for row in range(19, 30):
        expected_ratio = volumes[row] / float(np.mean(volumes[row - 19 : row + 1]))
        assert out["volume_ratio_20"][row] == pytest.approx(expected_ratio, rel=1e-12)
    assert out["ret_20d"][25] == pytest.approx(closes[25] / closes[5] - 1, rel=1e-12)
    assert out["ma_ratio_20"][25] == pytest.approx(closes[25] / float(np.mean(closes[6:26])) - 1, rel=1e-12)


def test_constant_prices_have_zero_volatility_not_nan() -> None:
    out = compute_features(frame("A", [10.0] * 25))
    assert out["vol_20"].to_list()[-4:] == [0.0] * 4
    assert out["ret_20d"][-1] == 0.0 and out["ma_ratio_20"][-1] == 0.0


def test_every_feature_is_null_exactly_until_its_window_is_full() -> None:
    out = compute_features(random_history(1, 30))
    for feature in FEATURES.values():
        values = out[feature.name].to_list()
        assert values[: feature.window - 1] == [None] * (feature.window - 1), feature.name
        assert all(v is not None and math.isfinite(v) for v in values[feature.window - 1 :]), feature.name


def test_declared_windows_match_what_the_expressions_read() -> None:
    # compute_features evaluates on the whole sorted frame and masks each symbol's first window - 1 rows;
    # that equals a per-symbol evaluation only if the declared window covers every shift the expression
    # makes. A window declared too small lets values leak from the previous symbol, too large hides rows.
    history = random_history(3, 40)
    masked = compute_features(history)
    per_symbol = history.sort("symbol", "date").select(
        "symbol", "date", *(f.expr().over("symbol") for f in FEATURES.values())
    )
    assert masked.equals(per_symbol)


def test_symbols_do_not_leak_into_each_other_and_input_order_does_not_matter() -> None:
    history = random_history(3, 30)
    shuffled = history.sample(fraction=1.0, shuffle=True, seed=3)
    out = compute_features(shuffled)
    assert out.equals(compute_features(history))
    alone = compute_features(history.filter(pl.col("symbol") == "S1"))
    assert out.filter(pl.col("symbol") == "S1").equals(alone)


def test_latest_features_equal_the_last_row_of_the_full_history_exactly() -> None:
    history = random_history(4, 500)
    full = compute_features(history)
    last = full.group_by("symbol", maintain_order=True).last()
    latest = latest_features(history)
    assert latest.equals(last)  # bit-identical, not merely close
    only_tail = latest_features(history.group_by("symbol").tail(max_window()))
    assert only_tail.sort("symbol").equals(last.sort("symbol"))


def test_feature_names_are_checked() -> None:
    with pytest.raises(KeyError, match="unknown feature"):
        compute_features(random_history(1, 5), ["ret_1d", "nope"])


def test_an_empty_history_gives_an_empty_frame_with_the_columns() -> None:
    out = compute_features(random_history(1, 5).clear())
    assert out.is_empty()
    assert out.columns == ["symbol", "date", *FEATURES]


def test_the_feature_set_version_changes_when_a_feature_is_bumped_added_or_removed() -> None:
    features = list(FEATURES.values())
    assert feature_set_version() == FEATURE_SET_VERSION
    assert len(FEATURE_SET_VERSION) == 12
    assert feature_set_version(reversed(features)) == FEATURE_SET_VERSION  # order does not matter
    bumped = [dataclasses.replace(features[0], version=2), *features[1:]]
    assert feature_set_version(bumped) != FEATURE_SET_VERSION
    assert feature_set_version(features[1:]) != FEATURE_SET_VERSION
