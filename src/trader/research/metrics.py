"""Backtest metrics: pure functions on daily return series and on (date, symbol) score tables.

Conventions (stated once, used everywhere; see ``docs/backtest.md``):

- A *daily return* series is indexed by session date; ``0.01`` means +1 %. A year has
  :data:`PERIODS_PER_YEAR` (252) sessions.
- **Annualized return is compounded**: ``prod(1 + r) ** (252 / n) - 1``. A constant daily return
  ``r`` gives ``(1 + r) ** 252 - 1``, not ``252 * r`` (Qlib's ``risk_analysis`` default is the mean
  times 252).
- **Sharpe** = ``mean(r) / std(r) * sqrt(252)`` with the sample standard deviation (``ddof=1``) and a
  zero risk-free rate. **Information ratio** is the Sharpe of the daily excess return ``r - b``. Both
  are NaN when the deviation is zero or there are fewer than two days.
- **Max drawdown** is measured on the compounded equity curve ``E_t = prod(1 + r)`` starting at 1:
  ``min_t(E_t / max_{s<=t} E_s - 1)``, a number in ``[-1, 0]`` (``-0.2`` = a 20 % fall from a peak).
  Qlib's ``risk_analysis`` measures it on the cumulative *sum* of returns, which understates deep
  falls and never reaches -100 %.
- **IC** of a session is the cross-sectional Pearson correlation between the scores of date t and the
  labels of date t; **rank IC** uses Spearman's. A session with fewer than :data:`MIN_IC_NAMES` scored
  symbols, or a constant score or label, has no IC. **ICIR** = mean / standard deviation of the daily
  values (not annualized, as in Qlib).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

#: Sessions per year, for annualizing.
PERIODS_PER_YEAR = 252
#: Fewest symbols with both a score and a label for a session to have an IC.
MIN_IC_NAMES = 2


def _clean(returns: pd.Series) -> pd.Series:
    return pd.Series(returns, dtype="float64").dropna()


def equity_curve(returns: pd.Series) -> pd.Series:
    """The compounded value of 1 invested at the start: ``prod(1 + r)`` up to each day."""
    return (1.0 + pd.Series(returns, dtype="float64").fillna(0.0)).cumprod()


def total_return(returns: pd.Series) -> float:
    """Compounded return over the whole series (``0.1`` = +10 %); 0 for an empty series."""
    clean = _clean(returns)
    return float((1.0 + clean).prod() - 1.0)


def annualized_return(returns: pd.Series, periods: int = PERIODS_PER_YEAR) -> float:
    """Compounded annual return ``prod(1 + r) ** (periods / n) - 1``; NaN for an empty series."""
    clean = _clean(returns)
    if clean.empty:
        return math.nan
    growth = float((1.0 + clean).prod())
    if growth <= 0:
        return -1.0  # everything was lost: no fractional power of a non-positive number
    return float(growth ** (periods / len(clean)) - 1.0)


def annualized_volatility(returns: pd.Series, periods: int = PERIODS_PER_YEAR) -> float:
    """Sample standard deviation of daily returns times ``sqrt(periods)``; NaN under two days."""
    clean = _clean(returns)
    if len(clean) < 2:
        return math.nan
    return float(clean.std(ddof=1) * math.sqrt(periods))


def sharpe_ratio(returns: pd.Series, periods: int = PERIODS_PER_YEAR) -> float:
    """``mean / std * sqrt(periods)`` of daily returns (risk-free rate 0); NaN if undefined."""
    clean = _clean(returns)
    if len(clean) < 2:
        return math.nan
    std = float(clean.std(ddof=1))
    # A deviation this small relative to the mean is rounding noise of a constant series.
    if std <= 1e-12 * max(1.0, abs(float(clean.mean()))):
        return math.nan
    return float(clean.mean() / std * math.sqrt(periods))


def excess_returns(returns: pd.Series, benchmark: pd.Series) -> pd.Series:
    """Daily ``r - b`` on the days both exist."""
    joined = pd.concat([_clean(returns), _clean(benchmark)], axis=1, join="inner")
    return joined.iloc[:, 0] - joined.iloc[:, 1]


def information_ratio(returns: pd.Series, benchmark: pd.Series, periods: int = PERIODS_PER_YEAR) -> float:
    """Sharpe ratio of the daily excess return over ``benchmark``."""
    return sharpe_ratio(excess_returns(returns, benchmark), periods)


def drawdown(returns: pd.Series) -> pd.Series:
    """Daily drawdown of the compounded equity curve from its running peak (start value 1 counts)."""
    equity = equity_curve(returns)
    peak = equity.cummax().clip(lower=1.0)
    return equity / peak - 1.0


def max_drawdown(returns: pd.Series) -> float:
    """Deepest drawdown of the compounded equity curve, in ``[-1, 0]``; 0 for an empty series."""
    if len(returns) == 0:
        return 0.0
    return float(min(0.0, drawdown(returns).min()))


def mean_turnover(turnover: pd.Series) -> float:
    """Mean of a daily turnover series (value traded / account value); NaN for an empty series."""
    clean = _clean(turnover)
    return float(clean.mean()) if not clean.empty else math.nan


def return_metrics(
    returns: pd.Series, benchmark: pd.Series | None = None, periods: int = PERIODS_PER_YEAR
) -> dict[str, float]:
    """The return metrics of one daily series (and, with a benchmark, its excess over it)."""
    result = {
        "total_return": total_return(returns),
        "annualized_return": annualized_return(returns, periods),
        "annualized_volatility": annualized_volatility(returns, periods),
        "sharpe": sharpe_ratio(returns, periods),
        "max_drawdown": max_drawdown(returns),
    }
    if benchmark is not None:
        result["information_ratio"] = information_ratio(returns, benchmark, periods)
        result["excess_annualized_return"] = result["annualized_return"] - annualized_return(
            benchmark.reindex(_clean(returns).index), periods
        )
    return result


# --------------------------------------------------------------------------------------------------
# Signal quality
# --------------------------------------------------------------------------------------------------


def daily_ic(
    scores: pd.Series, labels: pd.Series, method: Literal["pearson", "spearman"] = "pearson"
) -> pd.Series:
    """Per-session correlation between scores and labels, both indexed ``(datetime, instrument)``.

    Only pairs where both are finite count. Sessions without an IC (see the module docstring) are
    left out, so the result may be shorter than the number of sessions.
    """
    frame = pd.concat(
        [
            pd.Series(scores, dtype="float64").rename("score"),
            pd.Series(labels, dtype="float64").rename("label"),
        ],
        axis=1,
        join="inner",
    )
    frame = frame[np.isfinite(frame["score"]) & np.isfinite(frame["label"])]
    values: dict[object, float] = {}
    for day, group in frame.groupby(level=0, sort=True):
        if len(group) < MIN_IC_NAMES or group["score"].nunique() < 2 or group["label"].nunique() < 2:
            continue
        left, right = group["score"], group["label"]
        if method == "spearman":
            left, right = left.rank(), right.rank()
        values[day] = float(np.corrcoef(left.to_numpy(), right.to_numpy())[0, 1])
    series = pd.Series(values, dtype="float64", name=f"{method}_ic")
    series.index.name = "datetime"
    return series


def ic_summary(ic: pd.Series) -> dict[str, float]:
    """Mean, standard deviation and IR (mean / std) of a daily IC series; NaN where undefined."""
    clean = _clean(ic)
    mean = float(clean.mean()) if not clean.empty else math.nan
    std = float(clean.std(ddof=1)) if len(clean) > 1 else math.nan
    # A constant IC (a perfect predictor's 1.0 every day) has no finite IR, only rounding noise.
    defined = math.isfinite(std) and std > 1e-12 * max(1.0, abs(mean))
    ir = mean / std if defined else math.nan
    return {"mean": mean, "std": std, "ir": ir, "days": float(len(clean))}


def signal_metrics(scores: pd.Series, labels: pd.Series) -> dict[str, float]:
    """IC, rank IC, ICIR, rank ICIR and the number of sessions with an IC."""
    pearson = ic_summary(daily_ic(scores, labels, "pearson"))
    spearman = ic_summary(daily_ic(scores, labels, "spearman"))
    return {
        "ic": pearson["mean"],
        "icir": pearson["ir"],
        "rank_ic": spearman["mean"],
        "rank_icir": spearman["ir"],
        "ic_days": pearson["days"],
    }
