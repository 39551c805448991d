"""The backtest's HTML report: self-contained, three plots, the tables with formatted numbers."""

from __future__ import annotations

import base64
import math
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trader.research import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DAYS = pd.bdate_range("2024-01-02", periods=30)


def section(annualized: float, sharpe: float) -> dict[str, Any]:
    returns = {
        "total_return": annualized / 2,
        "annualized_return": annualized,
        "annualized_volatility": 0.2,
        "sharpe": sharpe,
        "information_ratio": 0.5,
        "excess_annualized_return": 0.01,
        "max_drawdown": -0.1234,
    }
    return {
        "costs": {
            "commission_bps": 0.5,
            "sell_fee_bps": 0.3,
            "slippage_bps": 5.0,
            "min_commission": 0.0,
            "open_cost": 0.00055,
            "close_cost": 0.00058,
            "min_cost": 0.0,
        },
        "after_costs": returns,
        "before_costs": {**returns, "annualized_return": annualized + 0.02},
        "trading": {
            "trading_days": 30,
            "mean_daily_turnover": 0.25,
            "total_costs": 12345.678,
            "costs_over_initial_cash": 0.0123,
            "trades": 77,
            "max_holdings": 5,
            "final_value": 1_050_000.0,
        },
    }


def document(note: str = "clipped") -> dict[str, Any]:
    rows = [
        {"scenario": "no_cost", "annualized_return": 0.30, "sharpe": 1.5, "total_costs": 0.0},
        {"scenario": "base", "annualized_return": 0.2468, "sharpe": 1.2, "total_costs": 12345.678},
        {"scenario": "slippage_x3", "annualized_return": 0.10, "sharpe": None, "total_costs": 30000.0},
    ]
    return {
        "created_at": "2024-03-01T00:00:00+00:00",
        "main": "base",
        "summary": {},
        "inputs": {
            "strategy": "momentum",
            "kind": "momentum",
            "market": "all",
            "period": {
                "start": "2024-01-02",
                "end": "2024-02-12",
                "sessions": 30,
                "requested_start": "2024-01-01",
                "requested_end": "2024-02-12",
                "notes": [note],
            },
            "initial_cash": 1_000_000.0,
            "topk": 5,
            "n_drop": 1,
            "benchmark": "equal_weight",
            "cost_model": "slippage as a cost rate",
            "label": "Ref($close, -2) / Ref($close, -1) - 1",
            "scores": {
                "rows": 100,
                "used": 90,
                "dropped_nan": 5,
                "dropped_outside_period": 5,
                "dropped_unlisted": 0,
                "symbols": 5,
                "signal_sessions": 30,
            },
            "provider_uri": "/data/qlib",
            "qlib_version": "0.9.7",
        },
        "signal": {"ic": 0.0421, "icir": 0.33, "rank_ic": 0.05, "rank_icir": 0.4, "ic_days": 28.0},
        "benchmark": {"total_return": 0.05, "annualized_return": 0.15, "sharpe": 1.0, "max_drawdown": -0.08},
        "scenarios": {"base": section(0.2468, 1.2), "no_cost": section(0.30, 1.5)},
        "scenario_table": rows,
    }


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(0)
    returns = pd.Series(rng.normal(0.001, 0.01, len(DAYS)), index=DAYS)
    bench = pd.Series(rng.normal(0.0005, 0.01, len(DAYS)), index=DAYS)
    strategy = (1 + returns).cumprod()
    equity = pd.DataFrame(
        {
            "strategy": strategy,
            "strategy_before_costs": strategy * 1.001,
            "benchmark": (1 + bench).cumprod(),
            "drawdown": strategy / strategy.cummax() - 1,
            "strategy_no_cost": strategy * 1.002,
        }
    )
    ic = pd.DataFrame(
        {"ic": rng.normal(0.05, 0.1, len(DAYS)), "rank_ic": rng.normal(0.05, 0.1, len(DAYS))}, index=DAYS
    )
    return equity, ic


def images(html: str) -> list[bytes]:
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    return [base64.b64decode(data) for data in found]


def test_report_is_self_contained_with_three_png_plots() -> None:
    equity, ic = frames()
    html = report.render_report(document(), equity, ic)
    pngs = images(html)
    assert len(pngs) == 3
    assert all(png.startswith(PNG_MAGIC) and len(png) > 5_000 for png in pngs)
    assert html.count("<img ") == 3
    assert html.count('<img src="data:image/png;base64,') == 3
    # nothing is fetched from elsewhere: no scripts, no external links or stylesheets
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_report_tables_show_the_numbers_formatted() -> None:
    equity, ic = frames()
    html = report.render_report(document(), equity, ic)
    scenarios = html[html.index('id="scenarios"') : html.index('id="metrics"')]
    for name in ("no_cost", "base", "slippage_x3"):
        assert f"<td>{name}</td>" in scenarios
    assert "24.68 %" in scenarios  # base annualized return
    assert "$12,345.68" in scenarios  # base costs
    assert "n/a" in scenarios  # the missing Sharpe of slippage_x3, not "None"
    assert 'class="main"' in scenarios
    metrics = html[html.index('id="metrics"') : html.index('id="signal"')]
    assert "-12.34 %" in metrics  # max drawdown
    assert "26.68 %" in metrics  # before costs
    assert "15.00 %" in metrics  # benchmark annualized
    signal = html[html.index('id="signal"') : html.index('id="inputs"')]
    assert "0.0421" in signal and "0.33" in signal


def test_report_escapes_text() -> None:
    equity, ic = frames()
    html = report.render_report(document(note="<b>bold</b> & co"), equity, ic)
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    assert "<b>bold</b>" not in html


def test_ic_plot_without_any_ic_is_still_an_image() -> None:
    empty = pd.DataFrame({"ic": pd.Series(dtype="float64"), "rank_ic": pd.Series(dtype="float64")})
    assert report.plot_ic(empty).startswith(PNG_MAGIC)


@pytest.mark.parametrize(
    ("value", "kind", "text"),
    [
        (0.12345, "pct", "12.35 %"),
        (-0.5, "pct", "-50.00 %"),
        (1.23456, "ratio", "1.23"),
        (0.04213, "ratio4", "0.0421"),
        (1234567.891, "money", "$1,234,567.89"),
        (77.0, "int", "77"),
        (None, "pct", "n/a"),
        (math.nan, "ratio", "n/a"),
        (math.inf, "money", "n/a"),
        ("base", "text", "base"),
        (5.0, "num", "5"),
    ],
)
def test_fmt(value: object, kind: str, text: str) -> None:
    assert report.fmt(value, kind) == text
