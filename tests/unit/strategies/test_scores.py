"""Scores as the rest of the system reads them, and the IC every strategy is measured by."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import polars as pl
import pytest

from trader.research.scores import PREDICTION_SCHEMA, ic_stats, tidy_scores


def series(rows: list[tuple[str, str, float]]) -> pd.Series:
    index = pd.MultiIndex.from_tuples(
        [(pd.Timestamp(d), s) for d, s, _ in rows], names=["datetime", "instrument"]
    )
    return pd.Series([v for _, _, v in rows], index=index, dtype="float64")


def test_tidy_scores_is_a_sorted_table_of_the_prediction_schema() -> None:
    scores = series([("2024-01-03", "MSFT", 0.5), ("2024-01-02", "MSFT", -1.0), ("2024-01-02", "AAPL", 0.25)])
    table = tidy_scores(scores, "test")
    assert table.schema == PREDICTION_SCHEMA
    assert table.rows() == [
        (date(2024, 1, 2), "AAPL", 0.25, "test"),
        (date(2024, 1, 2), "MSFT", -1.0, "test"),
        (date(2024, 1, 3), "MSFT", 0.5, "test"),
    ]


def test_ic_of_perfect_and_inverse_scores() -> None:
    days = ["2024-01-02", "2024-01-03", "2024-01-04"]
    labels = series([(d, s, v) for d in days for s, v in (("A", 0.01), ("B", 0.02), ("C", 0.05))])
    perfect = ic_stats(labels * 10 + 1, labels)
    assert perfect.ic == pytest.approx(1.0) and perfect.rank_ic == pytest.approx(1.0)
    assert perfect.days == 3
    assert math.isnan(perfect.icir)  # zero dispersion of daily IC: no IR
    inverse = ic_stats(-labels, labels)
    assert inverse.ic == pytest.approx(-1.0) and inverse.rank_ic == pytest.approx(-1.0)


def test_ic_is_the_mean_of_daily_correlations_and_icir_their_mean_over_std() -> None:
    # Day 1: scores follow labels exactly (IC 1); day 2: a known partial correlation.
    day2_scores, day2_labels = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    scores = series(
        [("2024-01-02", s, v) for s, v in zip("ABCD", [1.0, 2.0, 3.0, 4.0], strict=True)]
        + [("2024-01-03", s, v) for s, v in zip("ABCD", day2_scores, strict=True)]
    )
    labels = series(
        [("2024-01-02", s, v) for s, v in zip("ABCD", [2.0, 4.0, 6.0, 8.0], strict=True)]
        + [("2024-01-03", s, v) for s, v in zip("ABCD", day2_labels, strict=True)]
    )
    r2 = float(np.corrcoef(day2_scores, day2_labels)[0, 1])  # 0.8
    stats = ic_stats(scores, labels)
    assert stats.ic == pytest.approx((1.0 + r2) / 2)
    daily = np.array([1.0, r2])
    assert stats.icir == pytest.approx(daily.mean() / daily.std(ddof=1))
    assert stats.rank_ic == pytest.approx((1.0 + 0.8) / 2)  # ranks equal the values here


def test_missing_labels_and_degenerate_days_are_skipped() -> None:
    scores = series(
        [
            ("2024-01-02", "A", 1.0),
            ("2024-01-02", "B", 2.0),
            ("2024-01-02", "C", 3.0),
            ("2024-01-03", "A", 1.0),  # constant scores on the 3rd: no IC
            ("2024-01-03", "B", 1.0),
            ("2024-01-04", "A", 1.0),  # one symbol on the 4th: no IC
        ]
    )
    labels = series(
        [
            ("2024-01-02", "A", 0.1),
            ("2024-01-02", "B", 0.2),
            ("2024-01-02", "C", float("nan")),
            ("2024-01-03", "A", 0.1),
            ("2024-01-03", "B", 0.3),
            ("2024-01-04", "A", 0.1),
        ]
    )
    stats = ic_stats(scores, labels)
    assert stats.days == 1
    assert stats.ic == pytest.approx(1.0)


def test_no_overlap_gives_nan_not_an_error() -> None:
    stats = ic_stats(series([("2024-01-02", "A", 1.0)]), series([("2024-01-03", "A", 1.0)]))
    assert stats.days == 0 and math.isnan(stats.ic) and math.isnan(stats.rank_ic)


def test_prediction_schema_columns() -> None:
    assert list(PREDICTION_SCHEMA) == ["date", "symbol", "score", "segment"]
    assert PREDICTION_SCHEMA["date"] == pl.Date and PREDICTION_SCHEMA["score"] == pl.Float64
