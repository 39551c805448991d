"""The backtest end to end on the research test market (20 synthetic symbols, 2021-2023).

One module-scoped fixture runs the scenarios of a momentum score over the first half of 2023, a
"perfect foresight" score (the forward label itself) and a score that always prefers a symbol that
delists in May 2023; the tests read what they wrote.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from tests.support.research import ResearchMarket
from trader.data.store import AdjustedStore
from trader.research.backtest import (
    OUTPUT_FILES,
    BacktestInputError,
    BacktestResult,
    run_backtest,
    run_scenarios,
    scores_from_series,
)
from trader.strategies.config import (
    LABEL_EXPRESSION,
    DateRange,
    PortfolioRule,
    Segments,
    StrategyConfig,
    load_strategy_config,
)

pytestmark = pytest.mark.slow

START, END = date(2023, 1, 3), date(2023, 6, 30)
TOPK, N_DROP = 5, 1
#: SYN009 is listed until this session in the research market (its instruments line says so).
DELISTED, DELIST_DAY = "SYN009", date(2023, 5, 25)


def strategy(start: date = START, end: date = END, topk: int = TOPK, n_drop: int = N_DROP) -> StrategyConfig:
    segments = Segments(
        train=DateRange(start=date(2021, 1, 4), end=date(2021, 12, 31)),
        valid=DateRange(start=date(2022, 1, 10), end=date(2022, 12, 20)),
        test=DateRange(start=start, end=end),
    )
    config = load_strategy_config("momentum").with_segments(segments)
    return config.model_copy(update={"portfolio": PortfolioRule(topk=topk, n_drop=n_drop)})


def momentum_scores(bars: pl.DataFrame, lookback: int = 20) -> pl.DataFrame:
    ratio = pl.col("close") / pl.col("close").shift(lookback).over("symbol") - 1
    return bars.sort("symbol", "date").select("date", "symbol", ratio.alias("score"))


@dataclass(frozen=True)
class Runs:
    market: ResearchMarket
    bars: pl.DataFrame
    listings: dict[str, list[tuple[date, date]]]
    momentum: BacktestResult
    foresight: BacktestResult
    exits: BacktestResult
    messages: list[str]


def read_listings(market: ResearchMarket) -> dict[str, list[tuple[date, date]]]:
    listings: dict[str, list[tuple[date, date]]] = {}
    for line in (market.provider_uri / "instruments" / "all.txt").read_text().splitlines():
        symbol, first, last = line.split("\t")
        listings.setdefault(symbol, []).append((date.fromisoformat(first), date.fromisoformat(last)))
    return listings


@pytest.fixture(scope="module")
def runs(research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    market = research_market
    out = tmp_path_factory.mktemp("backtests")
    bars = AdjustedStore(market.paths).read()
    messages: list[str] = []
    momentum = run_scenarios(
        momentum_scores(bars),
        strategy(),
        provider_uri=market.provider_uri,
        out_dir=out / "momentum",
        on_progress=messages.append,
        mlflow_uri=market.mlflow_uri,
    )
    from qlib.data import D  # initialised by the run above

    label = D.features(D.instruments("all"), [LABEL_EXPRESSION], "2022-12-01", END.isoformat())
    foresight = run_backtest(
        scores_from_series(label.iloc[:, 0]),
        strategy(),
        provider_uri=market.provider_uri,
        out_dir=out / "foresight",
        mlflow_uri=market.mlflow_uri,
    )
    # Everything scores 0 except the delisting symbol: it is bought first and must be sold on its
    # last listed session, not carried past it.
    favourite = bars.select(
        "date", "symbol", pl.when(pl.col("symbol") == DELISTED).then(1.0).otherwise(0.0).alias("score")
    )
    exits = run_backtest(
        favourite,
        strategy(start=date(2023, 4, 3), topk=3, n_drop=1),
        provider_uri=market.provider_uri,
        out_dir=out / "exits",
        mlflow_uri=market.mlflow_uri,
    )
    return Runs(market, bars, read_listings(market), momentum, foresight, exits, messages)


# --- files ----------------------------------------------------------------------------------------


def test_every_file_is_written_and_parses(runs: Runs) -> None:
    result = runs.momentum
    assert sorted(p.name for p in result.paths.out_dir.iterdir()) == sorted(OUTPUT_FILES)
    assert not list(result.paths.out_dir.parent.glob(".*tmp*"))  # no staging folder left behind

    document = json.loads(result.paths.metrics.read_text())
    assert document == result.metrics
    assert [row["scenario"] for row in document["scenario_table"]] == [
        "no_cost",
        "base",
        "slippage_x3",
        "fees_x2",
    ]
    assert document["inputs"]["topk"] == TOPK and document["inputs"]["n_drop"] == N_DROP
    assert document["inputs"]["period"]["start"] == "2023-01-03"
    assert document["inputs"]["period"]["end"] == "2023-06-30"
    assert document["inputs"]["costs"]["slippage_bps"] == 5.0
    assert document["inputs"]["costs"]["open_cost"] == pytest.approx((0.5 + 5.0) / 1e4)
    assert document["inputs"]["costs"]["close_cost"] == pytest.approx((0.5 + 0.3 + 5.0) / 1e4)

    sessions = pd.read_csv(result.paths.equity, parse_dates=["date"])
    assert list(sessions.columns) == [
        "date",
        "strategy",
        "strategy_before_costs",
        "benchmark",
        "drawdown",
        "strategy_no_cost",
        "strategy_slippage_x3",
        "strategy_fees_x2",
    ]
    assert len(sessions) == document["inputs"]["period"]["sessions"] == 124  # XNYS, H1 2023
    assert sessions["date"].is_monotonic_increasing and sessions["date"].iloc[0] == pd.Timestamp(START)

    positions = pd.read_csv(result.paths.positions)
    assert list(positions.columns) == ["date", "symbol", "qty", "price", "value", "weight"]
    trades = pd.read_csv(result.paths.trades)
    assert list(trades.columns) == ["date", "symbol", "side", "qty", "price", "value", "cost"]
    assert len(trades) == document["scenarios"]["base"]["trading"]["trades"] > 0
    assert any("base: session 124/124" in message for message in runs.messages)


def test_report_embeds_three_plots_and_the_scenario_table(runs: Runs) -> None:
    html = runs.momentum.paths.report.read_text()
    found = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(found) == 3
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in found)
    for scenario in ("no_cost", "base", "slippage_x3", "fees_x2"):
        assert f"<td>{scenario}</td>" in html


# --- costs ----------------------------------------------------------------------------------------


def test_costs_reduce_return_and_scenarios_rank_by_cost(runs: Runs) -> None:
    table = {row["scenario"]: row for row in runs.momentum.metrics["scenario_table"]}
    total = {name: row["total_return"] for name, row in table.items()}
    assert total["no_cost"] > total["base"] > total["slippage_x3"]
    assert total["fees_x2"] < total["base"]
    assert table["no_cost"]["total_costs"] == 0.0
    assert (
        0
        < table["base"]["total_costs"]
        < table["fees_x2"]["total_costs"]
        < table["slippage_x3"]["total_costs"]
    )
    base = runs.momentum.metrics["scenarios"]["base"]
    assert base["after_costs"]["total_return"] < base["before_costs"]["total_return"]


def test_costs_paid_match_the_trades_and_the_cost_rates(runs: Runs) -> None:
    result = runs.momentum
    trades = result.trades
    assert trades["cost"].sum() == pytest.approx(result.metrics["summary"]["total_costs"], rel=1e-9)
    buys, sells = trades[trades["side"] == "buy"], trades[trades["side"] == "sell"]
    assert (buys["cost"] / buys["value"]).to_numpy() == pytest.approx((0.5 + 5.0) / 1e4, rel=1e-6)
    assert (sells["cost"] / sells["value"]).to_numpy() == pytest.approx((0.5 + 0.3 + 5.0) / 1e4, rel=1e-6)
    # the no-cost run traded too, for nothing
    free = result.scenarios["no_cost"]
    assert len(free.trades) > 0 and free.trades["cost"].sum() == 0.0


def test_account_value_is_holdings_plus_cash_and_equity_follows_it(runs: Runs) -> None:
    result = runs.momentum
    daily = result.daily
    held = result.positions.groupby("date")["value"].sum()
    held.index = pd.DatetimeIndex(pd.to_datetime(held.index))
    total = held.reindex(daily.index).fillna(0.0) + daily["cash"]
    np.testing.assert_allclose(total.to_numpy(), daily["account_value"].to_numpy(), rtol=1e-9)
    equity = pd.read_csv(result.paths.equity, index_col="date", parse_dates=True)
    np.testing.assert_allclose(
        equity["strategy"].to_numpy(), (daily["account_value"] / 1_000_000).to_numpy(), rtol=1e-9
    )
    weights = result.positions.groupby("date")["weight"].sum()
    assert weights.max() <= 1.0 + 1e-9


def test_buys_are_whole_shares_and_every_trade_is_at_the_raw_close(runs: Runs) -> None:
    trades = runs.momentum.trades
    assert set(trades["side"]) == {"buy", "sell"} and (trades["qty"] > 0).all()
    buys = trades[trades["side"] == "buy"]["qty"]
    # (a sale after a dividend ex-date sells the reinvested fraction too, see docs/backtest.md)
    assert np.allclose(buys, buys.round(), atol=1e-6)
    raw = runs.bars.select(
        "date", "symbol", (pl.col("close") / pl.col("factor")).alias("raw_close")
    ).to_pandas()
    raw["date"] = raw["date"].astype(str)
    joined = trades.assign(date=trades["date"].astype(str)).merge(raw, on=["date", "symbol"], how="left")
    assert joined["raw_close"].notna().all()
    np.testing.assert_allclose(joined["price"], joined["raw_close"], rtol=1e-5)  # exported as float32
    np.testing.assert_allclose(trades["value"], trades["qty"] * trades["price"], rtol=1e-5)


# --- universe and benchmark -----------------------------------------------------------------------


def listed(listings: dict[str, list[tuple[date, date]]], symbol: str, day: date) -> bool:
    return any(first <= day <= last for first, last in listings.get(symbol, []))


@pytest.mark.parametrize("run", ["momentum", "foresight", "exits"])
def test_holdings_stay_within_topk_and_the_listing(runs: Runs, run: str) -> None:
    result: BacktestResult = getattr(runs, run)
    topk = result.metrics["inputs"]["topk"]
    for scenario in result.scenarios.values():
        positions = scenario.positions
        assert positions.groupby("date")["symbol"].nunique().max() <= topk
        outside = [
            (day, symbol)
            for day, symbol in zip(positions["date"], positions["symbol"], strict=True)
            if not listed(runs.listings, symbol, day)
        ]
        assert outside == []


def test_a_holding_is_sold_on_its_last_listed_session(runs: Runs) -> None:
    assert runs.listings[DELISTED] == [(date(2021, 1, 4), DELIST_DAY)]
    result = runs.exits
    held = result.positions[result.positions["symbol"] == DELISTED]["date"]
    assert held.min() == date(2023, 4, 3) and held.max() < DELIST_DAY
    sells = result.trades[(result.trades["symbol"] == DELISTED) & (result.trades["side"] == "sell")]
    assert list(sells["date"]) == [DELIST_DAY]
    # the slot it left is filled again the next session: back to topk holdings
    counts = result.positions.groupby("date")["symbol"].nunique()
    assert counts.loc[DELIST_DAY] == 2 and counts.loc[date(2023, 5, 26)] == 3


def test_benchmark_is_the_equal_weight_return_of_the_listed_symbols(runs: Runs) -> None:
    change = pl.col("close") / pl.col("close").shift(1).over("symbol") - 1
    expected = (
        runs.bars.sort("symbol", "date")
        .with_columns(change.alias("change"))
        .filter(pl.col("date").is_between(START, END))
        .group_by("date")
        .agg(pl.col("change").mean())
        .sort("date")
    )
    daily = runs.momentum.daily
    assert [d.date() for d in daily.index] == expected["date"].to_list()
    np.testing.assert_allclose(daily["benchmark"].to_numpy(), expected["change"].to_numpy(), atol=2e-6)
    bench = runs.momentum.metrics["benchmark"]
    assert bench["total_return"] == pytest.approx(
        float(np.prod(1 + expected["change"].to_numpy()) - 1), abs=1e-4
    )


# --- signal ---------------------------------------------------------------------------------------


def test_momentum_metrics_are_finite(runs: Runs) -> None:
    summary = runs.momentum.summary
    for key in ("ic", "rank_ic", "icir", "rank_icir", "sharpe", "information_ratio", "max_drawdown"):
        assert math.isfinite(summary[key]), key
    assert -1 < summary["ic"] < 1 and -1 <= summary["max_drawdown"] <= 0
    assert summary["ic_days"] == 124
    assert summary["excess_annualized_return"] == pytest.approx(
        summary["annualized_return"] - summary["benchmark_annualized_return"]
    )
    assert 0 < summary["mean_daily_turnover"] < 2
    checked = runs.momentum.metrics["inputs"]["scores"]
    assert checked["dropped_nan"] == 20 * 20  # 20 symbols x the first 20 sessions of each have no lookback
    assert checked["signal_sessions"] == 125  # the test sessions and the one before
    flat = runs.momentum.flat_metrics()
    assert flat["base.after_costs.sharpe"] == summary["sharpe"]
    assert all(math.isfinite(v) for v in flat.values())


def test_perfect_foresight_has_ic_one_and_beats_the_benchmark(runs: Runs) -> None:
    summary = runs.foresight.summary
    assert summary["ic"] > 0.99 and summary["rank_ic"] > 0.99
    assert summary["total_return"] > runs.foresight.metrics["benchmark"]["total_return"] + 0.5
    assert summary["information_ratio"] > 5
    assert summary["total_return"] > runs.momentum.summary["total_return"]


# --- refusals -------------------------------------------------------------------------------------


def test_unusable_scores_are_refused_by_name(runs: Runs, tmp_path: Path) -> None:
    market = runs.market

    def attempt(scores: pl.DataFrame) -> str:
        with pytest.raises(BacktestInputError) as caught:
            run_backtest(
                scores,
                strategy(),
                provider_uri=market.provider_uri,
                out_dir=tmp_path / "x",
                mlflow_uri=market.mlflow_uri,
            )
        return str(caught.value)

    good = momentum_scores(runs.bars)
    assert "empty" in attempt(good.head(0))
    assert "no usable score in 2022-12-30 .. 2023-06-30" in attempt(
        good.filter(pl.col("date") < date(2022, 6, 1))
    )
    unknown = pl.DataFrame({"date": [date(2023, 1, 3)], "symbol": ["NOPE"], "score": [1.0]})
    assert "NOPE" in attempt(pl.concat([good, unknown]))
    all_nan = attempt(good.with_columns(pl.lit(None, pl.Float64).alias("score")))
    assert f"{len(good)} NaN" in all_nan
    assert not (tmp_path / "x").exists()  # nothing written for a refused run
