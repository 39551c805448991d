"""The backtest's HTML report: one self-contained file (plots embedded as base64 PNG, no scripts).

:func:`render_report` takes what the backtest writes anyway — the ``metrics.json`` document, the
equity frame of ``equity.csv`` and the daily IC — and renders ``templates/backtest.html.j2``. Plots
are drawn with matplotlib's Agg canvas on a private ``Figure`` (no pyplot, no global backend
change), so rendering works without a display and in any thread.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping
from typing import Any

import jinja2
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Sessions in the rolling mean drawn over the daily IC.
IC_ROLLING_WINDOW = 20
_DPI = 100
_SIZE = (10.0, 3.6)

#: Rows of the metrics table: (key in a return-metrics section, title, format).
RETURN_ROWS = (
    ("total_return", "Total return", "pct"),
    ("annualized_return", "Annualized return (compounded)", "pct"),
    ("annualized_volatility", "Annualized volatility", "pct"),
    ("sharpe", "Sharpe ratio", "ratio"),
    ("information_ratio", "Information ratio vs benchmark", "ratio"),
    ("excess_annualized_return", "Excess annualized return", "pct"),
    ("max_drawdown", "Max drawdown (compounded)", "pct"),
)
TRADING_ROWS = (
    ("trading_days", "Trading days", "int"),
    ("mean_daily_turnover", "Mean daily turnover", "pct"),
    ("trades", "Trades", "int"),
    ("total_costs", "Costs paid", "money"),
    ("costs_over_initial_cash", "Costs / initial cash", "pct"),
    ("max_holdings", "Most symbols held", "int"),
    ("final_value", "Final account value", "money"),
)
SIGNAL_ROWS = (
    ("ic", "IC (Pearson, mean)", "ratio4"),
    ("icir", "ICIR", "ratio"),
    ("rank_ic", "Rank IC (Spearman, mean)", "ratio4"),
    ("rank_icir", "Rank ICIR", "ratio"),
    ("ic_days", "Sessions with an IC", "int"),
)
SCENARIO_COLUMNS = (
    ("scenario", "Scenario", "text"),
    ("commission_bps", "Commission (bps)", "num"),
    ("sell_fee_bps", "Sell fee (bps)", "num"),
    ("slippage_bps", "Slippage (bps)", "num"),
    ("total_return", "Total return", "pct"),
    ("annualized_return", "Annualized return", "pct"),
    ("sharpe", "Sharpe", "ratio"),
    ("information_ratio", "IR", "ratio"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("mean_daily_turnover", "Turnover / day", "pct"),
    ("total_costs", "Costs paid", "money"),
)


def fmt(value: Any, kind: str = "num") -> str:
    """A metric as text: ``pct`` (0.1234 -> 12.34 %), ``ratio``, ``ratio4``, ``money``, ``int``, ``num``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "text" or not isinstance(value, int | float):
        return str(value)
    number = float(value)
    formats = {
        "pct": lambda: f"{number * 100:.2f} %",
        "ratio": lambda: f"{number:.2f}",
        "ratio4": lambda: f"{number:.4f}",
        "money": lambda: f"${number:,.2f}",
        "int": lambda: f"{round(number):,d}",
    }
    return formats.get(kind, lambda: f"{number:g}")()


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def _figure(title: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=_SIZE, dpi=_DPI)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    return figure, axes


def plot_equity(equity: pd.DataFrame) -> bytes:
    """Equity curves (1 = initial cash): strategy after and before costs, benchmark, other scenarios."""
    figure, axes = _figure("Equity: strategy vs equal-weight benchmark")
    styles = {"strategy": ("Strategy (after costs)", "-", 2.0), "benchmark": ("Benchmark", "-", 1.5)}
    styles["strategy_before_costs"] = ("Strategy (before costs)", "--", 1.0)
    for column in equity.columns:
        if column == "drawdown":
            continue
        name, style, width = styles.get(column, (column.removeprefix("strategy_"), ":", 1.0))
        axes.plot(equity.index, equity[column], linestyle=style, linewidth=width, label=name)
    axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    return _png(figure)


def plot_drawdown(equity: pd.DataFrame) -> bytes:
    """Drawdown of the strategy's compounded equity after costs, in percent."""
    figure, axes = _figure("Drawdown (strategy after costs)")
    values = equity["drawdown"] * 100.0
    axes.fill_between(equity.index, values, 0.0, color="tab:red", alpha=0.4)
    axes.plot(equity.index, values, color="tab:red", linewidth=1.0)
    axes.set_ylabel("%")
    figure.autofmt_xdate()
    return _png(figure)


def plot_ic(ic: pd.DataFrame, window: int = IC_ROLLING_WINDOW) -> bytes:
    """Daily IC and rank IC with their rolling means."""
    figure, axes = _figure(f"Daily IC (bars) and {window}-session rolling mean")
    if ic.empty:
        axes.text(0.5, 0.5, "no session has an IC", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.bar(ic.index, ic["ic"], color="tab:blue", alpha=0.35, label="IC")
        rolling = ic.rolling(window, min_periods=max(1, window // 4)).mean()
        axes.plot(ic.index, rolling["ic"], color="tab:blue", linewidth=2.0, label="IC, rolling mean")
        if "rank_ic" in ic:
            axes.plot(
                ic.index, rolling["rank_ic"], color="tab:orange", linewidth=1.5, label="Rank IC, rolling mean"
            )
        axes.axhline(0.0, color="black", linewidth=0.8)
        axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    return _png(figure)


def data_uri(png: bytes) -> str:
    """A PNG as a ``data:`` URI for an ``<img src=...>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("trader.research", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


def render_report(metrics: Mapping[str, Any], equity: pd.DataFrame, ic: pd.DataFrame) -> str:
    """The HTML report of one backtest.

    ``metrics`` is the ``metrics.json`` document of :mod:`trader.research.backtest`; ``equity`` is
    indexed by date with ``strategy``, ``strategy_before_costs``, ``benchmark``, ``drawdown`` (and
    ``strategy_<scenario>`` columns); ``ic`` is indexed by date with ``ic`` and ``rank_ic``.
    """
    main = metrics["main"]
    run = metrics["scenarios"][main]
    plots = {
        "equity": data_uri(plot_equity(equity)),
        "drawdown": data_uri(plot_drawdown(equity)),
        "ic": data_uri(plot_ic(ic)),
    }
    return (
        _environment()
        .get_template("backtest.html.j2")
        .render(
            metrics=metrics,
            inputs=metrics["inputs"],
            main=main,
            run=run,
            benchmark=metrics["benchmark"],
            signal=metrics["signal"],
            scenario_table=metrics["scenario_table"],
            plots=plots,
            return_rows=RETURN_ROWS,
            trading_rows=TRADING_ROWS,
            signal_rows=SIGNAL_ROWS,
            scenario_columns=SCENARIO_COLUMNS,
        )
    )
