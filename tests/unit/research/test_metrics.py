"""Backtest metrics on hand-made series whose answers are computed by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from trader.research import metrics as m

DAYS = pd.bdate_range("2024-01-01", periods=10)


def series(values: list[float]) -> pd.Series:
    return pd.Series(values, index=DAYS[: len(values)], dtype="float64")


def scored(days: int, values: list[list[float]]) -> pd.Series:
    """A (datetime, instrument) Series: ``values[d][i]`` for day d, symbol i."""
    index = pd.MultiIndex.from_tuples(
        [(DAYS[d], f"S{i}") for d in range(days) for i in range(len(values[d]))],
        names=["datetime", "instrument"],
    )
    return pd.Series([v for row in values for v in row], index=index, dtype="float64")


# --- returns ------------------------------------------------------------------------------------


def test_constant_daily_return_annualizes_compounded_not_times_252() -> None:
    r = 0.001
    returns = pd.Series([r] * 252)
    assert m.annualized_return(returns) == pytest.approx((1 + r) ** 252 - 1, rel=1e-12)
    # ... which is more than Qlib's arithmetic 252 * r
    assert m.annualized_return(returns) > 252 * r
    # half a year of the same return still annualizes to the same figure
    assert m.annualized_return(pd.Series([r] * 126)) == pytest.approx((1 + r) ** 252 - 1, rel=1e-12)


def test_total_return_compounds() -> None:
    assert m.total_return(series([0.10, -0.10])) == pytest.approx(1.1 * 0.9 - 1)  # -1 %, not 0
    assert m.total_return(series([])) == 0.0


def test_annualized_return_of_a_total_loss_is_minus_one_and_empty_is_nan() -> None:
    assert m.annualized_return(series([0.5, -1.0])) == -1.0
    assert math.isnan(m.annualized_return(series([])))


def test_sharpe_by_hand() -> None:
    returns = series([0.01, -0.005, 0.02, 0.0])
    mean = (0.01 - 0.005 + 0.02 + 0.0) / 4  # 0.00625
    var = sum((x - mean) ** 2 for x in [0.01, -0.005, 0.02, 0.0]) / 3  # sample variance
    assert m.sharpe_ratio(returns) == pytest.approx(mean / math.sqrt(var) * math.sqrt(252), rel=1e-12)
    assert m.annualized_volatility(returns) == pytest.approx(math.sqrt(var) * math.sqrt(252), rel=1e-12)


def test_sharpe_is_nan_when_undefined() -> None:
    assert math.isnan(m.sharpe_ratio(series([0.01] * 5)))  # zero deviation
    assert math.isnan(m.sharpe_ratio(series([0.01])))  # one day
    assert math.isnan(m.annualized_volatility(series([0.01])))


def test_information_ratio_is_sharpe_of_the_difference() -> None:
    strategy = series([0.02, 0.00, 0.01, 0.03])
    bench = series([0.01, 0.01, 0.00, 0.01])
    excess = [0.01, -0.01, 0.01, 0.02]
    mean = sum(excess) / 4
    std = math.sqrt(sum((x - mean) ** 2 for x in excess) / 3)
    assert m.information_ratio(strategy, bench) == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    # the benchmark against itself has no excess: undefined, not zero
    assert math.isnan(m.information_ratio(bench, bench))


def test_excess_uses_only_common_days() -> None:
    strategy = series([0.01, 0.02, 0.03])
    bench = pd.Series([0.01, 0.01], index=DAYS[1:3])
    excess = m.excess_returns(strategy, bench)
    assert list(excess.index) == list(DAYS[1:3])
    assert excess.tolist() == pytest.approx([0.01, 0.02])


def test_max_drawdown_on_the_compounded_curve() -> None:
    # equity: 1.1, 0.55, 0.66, 1.32 -> peak 1.1 then trough 0.55: -50 %
    returns = series([0.10, -0.50, 0.20, 1.00])
    assert m.max_drawdown(returns) == pytest.approx(-0.5)
    assert m.drawdown(returns).tolist() == pytest.approx([0.0, -0.5, 0.66 / 1.1 - 1, 0.0])
    # two -50 % days lose 75 % compounded (a cumulative sum of returns would say -100 %)
    assert m.max_drawdown(series([-0.5, -0.5])) == pytest.approx(-0.75)


def test_drawdown_counts_the_starting_value_as_a_peak() -> None:
    assert m.max_drawdown(series([-0.10, 0.05])) == pytest.approx(-0.10)
    assert m.max_drawdown(series([0.01, 0.02])) == 0.0
    assert m.max_drawdown(series([])) == 0.0


def test_equity_curve_and_turnover() -> None:
    assert m.equity_curve(series([0.1, 0.1])).tolist() == pytest.approx([1.1, 1.21])
    assert m.mean_turnover(series([0.2, 0.4, np.nan])) == pytest.approx(0.3)
    assert math.isnan(m.mean_turnover(series([])))


def test_return_metrics_bundle() -> None:
    strategy = series([0.02, 0.00, 0.01, 0.03])
    bench = series([0.01, 0.01, 0.00, 0.01])
    out = m.return_metrics(strategy, bench)
    assert out["total_return"] == pytest.approx(1.02 * 1.01 * 1.03 - 1)
    assert out["excess_annualized_return"] == pytest.approx(
        m.annualized_return(strategy) - m.annualized_return(bench)
    )
    assert "information_ratio" not in m.return_metrics(strategy)


# --- IC -----------------------------------------------------------------------------------------


def test_ic_of_a_perfect_predictor_is_one_and_of_a_reversed_one_minus_one() -> None:
    labels = scored(3, [[0.01, 0.03, -0.02, 0.00], [0.05, -0.01, 0.02, 0.01], [0.0, 0.1, 0.2, 0.3]])
    assert m.daily_ic(labels, labels).tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert m.daily_ic(-labels, labels, "spearman").tolist() == pytest.approx([-1.0, -1.0, -1.0])
    # a monotonic but non-linear transform keeps rank IC at 1, lowers the Pearson IC
    cubed = labels**3 * 1000
    assert m.daily_ic(cubed, labels, "spearman").tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert all(v < 1.0 for v in m.daily_ic(cubed, labels).tolist())
    out = m.signal_metrics(labels, labels)
    assert out["ic"] == pytest.approx(1.0)
    assert out["rank_ic"] == pytest.approx(1.0)
    assert out["ic_days"] == 3
    # the same IC every day: the IR is undefined (NaN), not a huge number made of rounding noise
    assert math.isnan(out["icir"]) and math.isnan(out["rank_icir"])


def test_ic_by_hand() -> None:
    scores = scored(1, [[1.0, 2.0, 3.0]])
    labels = scored(1, [[0.0, 0.0, 3.0]])
    # x - mean = (-1, 0, 1), y - mean = (-1, -1, 2): r = 3 / (sqrt(2) * sqrt(6))
    assert m.daily_ic(scores, labels).iloc[0] == pytest.approx(3 / (math.sqrt(2) * math.sqrt(6)))
    # ranks of y are (1.5, 1.5, 3): same as y up to scale here
    assert m.daily_ic(scores, labels, "spearman").iloc[0] == pytest.approx(3 / (math.sqrt(2) * math.sqrt(6)))


def test_sessions_without_an_ic_are_left_out() -> None:
    scores = scored(3, [[1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [1.0, 2.0, np.nan]])
    labels = scored(3, [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3]])
    ic = m.daily_ic(scores, labels)
    # day 1: constant score; day 2: one NaN leaves two names (enough)
    assert list(ic.index) == [DAYS[0], DAYS[2]]
    one_name = scored(1, [[1.0]])
    assert m.daily_ic(one_name, one_name).empty
    assert math.isnan(m.signal_metrics(one_name, one_name)["ic"])


def test_icir_is_mean_over_std() -> None:
    ic = series([0.1, 0.3, 0.2])
    out = m.ic_summary(ic)
    assert out["mean"] == pytest.approx(0.2)
    assert out["std"] == pytest.approx(0.1)
    assert out["ir"] == pytest.approx(2.0)
    assert math.isnan(m.ic_summary(series([0.1]))["ir"])
