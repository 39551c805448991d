"""The synthetic market: deterministic, schema- and calendar-conformant, realistic, with known defects."""

from __future__ import annotations

import dataclasses
import re
from datetime import date

import polars as pl
import pytest

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, LISTING_SCHEMA
from trader.data.calendar import trading_calendar
from trader.data.sources import BarSource
from trader.data.sources.synthetic import (
    BAD_TICK_KINDS,
    INJECTED_KINDS,
    INJECTED_SCHEMA,
    SyntheticConfig,
    SyntheticData,
    SyntheticMarket,
    SyntheticSource,
)

CONFIG = SyntheticConfig(symbols=40, start=date(2021, 1, 1), end=date(2023, 12, 31), seed=11)


@pytest.fixture(scope="module")
def market() -> SyntheticData:
    return SyntheticMarket(CONFIG).generate()


def _sessions() -> pl.Series:
    return trading_calendar().sessions(CONFIG.start, CONFIG.end)


def _with_returns(bars: pl.DataFrame, price: str = "close") -> pl.DataFrame:
    """Add the close-to-close return into each row and out of it (to the next row of the symbol)."""
    prev = pl.col(price).shift(1).over("symbol")
    nxt = pl.col(price).shift(-1).over("symbol")
    return bars.sort("symbol", "date").with_columns(
        ret_in=pl.col(price) / prev - 1.0, ret_out=nxt / pl.col(price) - 1.0
    )


def _back_adjusted(bars: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """Back-adjust closes the textbook way: factor = prod over later actions of 1/ratio and 1 - d/prev."""
    joined = (
        bars.sort("symbol", "date")
        .with_columns(prev_close=pl.col("close").shift(1).over("symbol"))
        .join(
            actions.rename({"ex_date": "date"}).drop("source"),
            on=["symbol", "date"],
            how="left",
        )
        .with_columns(
            step=(1.0 / pl.col("split_ratio").fill_null(1.0))
            * (1.0 - pl.col("cash_dividend").fill_null(0.0) / pl.col("prev_close"))
        )
        .with_columns(pl.col("step").fill_null(1.0))
    )
    return joined.with_columns(
        factor=pl.col("step").cum_prod(reverse=True).over("symbol") / pl.col("step")
    ).with_columns(adj_close=pl.col("close") * pl.col("factor"))


def _clean_adjusted_returns(market: SyntheticData) -> pl.DataFrame:
    """Back-adjusted closes with returns, without spike rows and the rows right after a spike."""
    adjusted = _with_returns(_back_adjusted(market.batch.bars, market.batch.actions), "adj_close")
    spikes = market.injected.filter(kind="bad_tick_spike")
    after_spike = spikes.join(
        adjusted.select("symbol", "date", next_date=pl.col("date").shift(-1).over("symbol")),
        on=["symbol", "date"],
    ).select("symbol", date="next_date")
    return adjusted.join(spikes, on=["symbol", "date"], how="anti").join(
        after_spike, on=["symbol", "date"], how="anti"
    )


# --- determinism and shape -------------------------------------------------------------------------


def test_same_seed_gives_identical_frames(market: SyntheticData) -> None:
    again = SyntheticMarket(CONFIG).generate()
    assert again.batch.bars.equals(market.batch.bars)
    assert again.batch.actions.equals(market.batch.actions)
    assert again.batch.listings.equals(market.batch.listings)
    assert again.injected.equals(market.injected)


def test_different_seed_gives_different_market(market: SyntheticData) -> None:
    other = SyntheticMarket(dataclasses.replace(CONFIG, seed=12)).generate()
    assert not other.batch.bars.equals(market.batch.bars)
    assert not other.injected.equals(market.injected)


def test_frames_conform_to_the_schemas(market: SyntheticData) -> None:
    assert market.batch.bars.schema == pl.Schema(BAR_SCHEMA)
    assert market.batch.actions.schema == pl.Schema(ACTION_SCHEMA)
    assert market.batch.listings.schema == pl.Schema(LISTING_SCHEMA)
    assert market.injected.schema == pl.Schema(INJECTED_SCHEMA)
    assert market.batch.actions["source"].unique().to_list() == ["synthetic"]
    assert set(market.injected["kind"].unique()) <= set(INJECTED_KINDS)
    for frame in (market.batch.bars, market.batch.actions, market.batch.listings):
        assert frame.null_count().drop("end_date", strict=False).sum_horizontal().item() == 0


def test_symbols_are_deterministic_tickers(market: SyntheticData) -> None:
    symbols = market.batch.listings["symbol"].to_list()
    assert symbols == [f"SYN{i:03d}" for i in range(40)]
    assert all(re.fullmatch(r"[A-Z0-9]{1,8}", s) for s in symbols)
    assert set(market.batch.bars["symbol"].unique()) == set(symbols)
    wide = SyntheticMarket(dataclasses.replace(CONFIG, symbols=1500, end=date(2021, 1, 8))).generate()
    assert wide.batch.listings["symbol"][-1] == "SYN1499"


def test_bars_are_unique_sorted_nyse_sessions(market: SyntheticData) -> None:
    bars = market.batch.bars
    assert bars.select(pl.struct("symbol", "date").is_unique().all()).item()
    assert bars.equals(bars.sort("symbol", "date"))
    sessions = set(_sessions().to_list())
    assert set(bars["date"].unique().to_list()) <= sessions
    assert date(2021, 7, 5) not in set(bars["date"].to_list())  # Independence Day observed


def test_empty_range_gives_empty_frames() -> None:
    data = SyntheticMarket(
        SyntheticConfig(symbols=3, start=date(2022, 1, 1), end=date(2022, 1, 2))
    ).generate()
    assert data.batch.bars.is_empty()
    assert data.batch.bars.schema == pl.Schema(BAR_SCHEMA)
    assert data.injected.is_empty()


@pytest.mark.parametrize("end_day", [3, 4, 5, 8])  # 2, 3, 4 and 5 sessions from 2024-01-02
def test_a_few_sessions_give_a_market(end_day: int) -> None:
    config = SyntheticConfig(symbols=50, start=date(2024, 1, 1), end=date(2024, 1, end_day))
    bars = SyntheticMarket(config).generate().batch.bars
    sessions = trading_calendar().sessions(config.start, config.end).to_list()
    assert set(bars.get_column("date").to_list()) <= set(sessions)
    assert bars.get_column("symbol").n_unique() == 50


# --- realism ---------------------------------------------------------------------------------------


def test_clean_rows_are_ohlc_consistent_and_positive(market: SyntheticData) -> None:
    ticks = market.injected.filter(pl.col("kind").is_in(BAD_TICK_KINDS))
    clean = market.batch.bars.join(ticks, on=["symbol", "date"], how="anti")
    assert clean.height == market.batch.bars.height - ticks.height
    violations = clean.filter(
        (pl.col("low") > pl.min_horizontal("open", "close"))
        | (pl.col("high") < pl.max_horizontal("open", "close"))
        | (pl.min_horizontal("open", "high", "low", "close") <= 0)
        | (pl.col("volume") < 0)
    )
    assert violations.is_empty(), violations


def test_prices_volatility_and_volume_are_plausible(market: SyntheticData) -> None:
    bars = market.batch.bars
    first_close = bars.group_by("symbol").agg(pl.col("close").first())["close"]
    assert first_close.min() >= 9.99  # type: ignore[operator]
    assert first_close.max() <= 500.01  # type: ignore[operator]
    clean = _clean_adjusted_returns(market).drop_nulls("ret_in")
    vols = clean.group_by("symbol").agg(pl.col("ret_in").std())["ret_in"]
    assert 0.01 <= vols.median() <= 0.03  # type: ignore[operator]
    assert vols.min() >= 0.005  # type: ignore[operator]
    assert vols.max() <= 0.04  # type: ignore[operator]
    kurtosis = clean.select(pl.col("ret_in").kurtosis()).item()
    assert kurtosis > 1.0  # fat tails: excess kurtosis well above a normal's 0
    # Volume rises with the size of the move.
    ticks = market.injected.filter(pl.col("kind").is_in(BAD_TICK_KINDS))
    clean = clean.join(ticks, on=["symbol", "date"], how="anti")
    # Demean log volume per symbol (liquidity differs by symbol) before correlating with |return|.
    ranked = clean.with_columns(
        log_volume=pl.col("volume").log() - pl.col("volume").log().mean().over("symbol"),
        move=pl.col("ret_in").abs(),
    ).select(pl.corr("move", "log_volume", method="spearman"))
    assert ranked.item() > 0.2


# --- events ----------------------------------------------------------------------------------------


def test_every_event_kind_is_present(market: SyntheticData) -> None:
    assert set(market.injected["kind"].unique()) == set(INJECTED_KINDS)
    actions = market.batch.actions
    assert actions.filter(pl.col("split_ratio") != 1.0).height >= 1
    assert actions.filter(pl.col("cash_dividend") > 0.0).height >= 1
    listings = market.batch.listings
    sessions = _sessions()
    assert listings.filter(pl.col("start_date") > sessions[0]).height == round(0.1 * 40)
    assert listings.filter(pl.col("end_date").is_not_null()).height == round(0.1 * 40)


def test_actions_are_single_purpose_and_in_listing(market: SyntheticData) -> None:
    actions = market.batch.actions
    assert actions.select(pl.struct("symbol", "ex_date").is_unique().all()).item()
    splits = actions.filter(pl.col("split_ratio") != 1.0)
    assert set(splits["split_ratio"].unique()) <= {2.0, 3.0, 4.0, 0.5}
    assert (splits["cash_dividend"] == 0.0).all()
    dividends = actions.filter(pl.col("split_ratio") == 1.0)
    assert (dividends["cash_dividend"] > 0.0).all()
    # Every ex-date is a bar, and not the symbol's first bar (a dividend needs a previous close).
    bars = _with_returns(market.batch.bars)
    on_bars = actions.join(bars, left_on=["symbol", "ex_date"], right_on=["symbol", "date"])
    assert on_bars.height == actions.height
    assert on_bars["ret_in"].null_count() == 0


def test_dividends_are_small_and_drop_the_raw_close(market: SyntheticData) -> None:
    bars = market.batch.bars.sort("symbol", "date").with_columns(
        prev_close=pl.col("close").shift(1).over("symbol")
    )
    dividends = market.batch.actions.filter(pl.col("cash_dividend") > 0).join(
        bars, left_on=["symbol", "ex_date"], right_on=["symbol", "date"]
    )
    yields = dividends["cash_dividend"] / dividends["prev_close"]
    assert yields.min() >= 0.0019  # type: ignore[operator]
    assert yields.max() <= 0.0101  # type: ignore[operator]
    # Quarterly: consecutive ex-dates of a payer are about 63 sessions apart (one may be skipped
    # when it would fall next to a split).
    index = pl.DataFrame({"date": _sessions()}).with_row_index("session")
    spacing = (
        dividends.join(index, left_on="ex_date", right_on="date")
        .sort("symbol", "ex_date")
        .select(pl.col("session").diff().over("symbol"))
        .drop_nulls()["session"]
    )
    assert spacing.min() >= 57  # type: ignore[operator]
    assert 60 <= spacing.median() <= 66  # type: ignore[operator]


def test_splits_move_raw_prices_and_volume_by_the_ratio(market: SyntheticData) -> None:
    bars = market.batch.bars.sort("symbol", "date")
    splits = market.batch.actions.filter(pl.col("split_ratio") != 1.0)
    for symbol, ex_date, ratio in splits.select("symbol", "ex_date", "split_ratio").iter_rows():
        series = bars.filter(symbol=symbol).with_row_index()
        at = series.filter(date=ex_date)["index"].item()
        before, after = series[at - 1], series[at]
        raw_move = after["close"].item() / before["close"].item()
        # Economic move is within ±22 %, so the raw move is the split's 1/ratio within that band.
        assert 0.8 / ratio < raw_move < 1.25 / ratio
        assert abs(raw_move - 1.0) > 0.3  # a gate without the action would call it an outlier
        vol_before = series[max(at - 10, 0) : at]["volume"].median()
        vol_after = series[at : at + 10]["volume"].median()
        assert 0.4 * ratio < vol_after / vol_before < 2.5 * ratio  # type: ignore[operator]


def test_back_adjusted_closes_are_continuous_everywhere_but_spikes(market: SyntheticData) -> None:
    # The newest bar of every symbol is unadjusted (factor 1: no later action).
    adjusted = _back_adjusted(market.batch.bars, market.batch.actions)
    assert (
        adjusted.group_by("symbol").agg(pl.col("factor").last())["factor"].to_list() == [1.0] * CONFIG.symbols
    )
    clean = _clean_adjusted_returns(market)
    assert clean["ret_in"].abs().max() < 0.25  # type: ignore[operator]
    # In particular across every ex-date, and across every gap (the bar after a halt or missing day).
    ex_dates = market.batch.actions.select("symbol", date="ex_date")
    at_actions = clean.join(ex_dates, on=["symbol", "date"])
    assert at_actions.height == market.batch.actions.height
    assert at_actions["ret_in"].abs().max() < 0.25  # type: ignore[operator]


def test_spikes_jump_more_than_30_percent_in_and_out(market: SyntheticData) -> None:
    bars = _with_returns(market.batch.bars)
    spikes = bars.join(market.injected.filter(kind="bad_tick_spike"), on=["symbol", "date"])
    assert spikes.height >= 1
    assert (spikes["ret_in"].abs() > 0.3).all()
    assert (spikes["ret_out"].abs() > 0.3).all()
    # A spike is only an outlier: its OHLC is still consistent and positive.
    consistent = spikes.select(
        (pl.col("high") >= pl.max_horizontal("open", "close"))
        & (pl.col("low") <= pl.min_horizontal("open", "close"))
        & (pl.col("low") > 0)
    )
    assert consistent.to_series().all()


def test_other_bad_ticks_break_exactly_what_they_say(market: SyntheticData) -> None:
    bars = market.batch.bars.join(market.injected, on=["symbol", "date"])
    ohlc = bars.filter(kind="bad_tick_ohlc")
    assert ohlc.height >= 1 and (ohlc["high"] < ohlc["low"]).all()
    negative_price = bars.filter(kind="bad_tick_negative_price")
    assert negative_price.height >= 1
    assert negative_price.select(pl.min_horizontal("open", "high", "low", "close") <= 0).to_series().all()
    assert (negative_price["close"] > 0).all()  # close untouched: no return outlier next to it
    negative_volume = bars.filter(kind="bad_tick_negative_volume")
    assert negative_volume.height >= 1 and (negative_volume["volume"] < 0).all()
    assert (negative_volume["low"] > 0).all() and (negative_volume["high"] >= negative_volume["low"]).all()


def test_bad_ticks_are_spaced_from_edges_actions_gaps_and_each_other(market: SyntheticData) -> None:
    index = pl.DataFrame({"date": _sessions()}).with_row_index("session")
    ticks = market.injected.filter(pl.col("kind").is_in(BAD_TICK_KINDS)).join(index, on="date")
    bounds = market.batch.bars.group_by("symbol").agg(first=pl.col("date").min(), last=pl.col("date").max())
    edges = ticks.join(bounds, on="symbol")
    assert ((edges["date"] > edges["first"]) & (edges["date"] < edges["last"])).all()
    ticks_sorted = ticks.sort("symbol", "date").with_columns(gap=pl.col("session").diff().over("symbol"))
    assert (ticks_sorted["gap"].drop_nulls() >= 3).all()
    ex = market.batch.actions.join(index, left_on="ex_date", right_on="date").select("symbol", ex="session")
    near_action = ticks.join(ex, on="symbol").filter((pl.col("session") - pl.col("ex")).abs() < 3)
    assert near_action.is_empty()
    gaps = market.injected.filter(pl.col("kind").is_in(["missing_day", "halt"]))
    gaps = gaps.join(index, on="date").select("symbol", gap_session="session")
    next_to_gap = ticks.join(gaps, on="symbol").filter((pl.col("session") - pl.col("gap_session")).abs() <= 1)
    assert next_to_gap.is_empty()


def test_missing_days_and_halts_have_no_bars(market: SyntheticData) -> None:
    gaps = market.injected.filter(pl.col("kind").is_in(["missing_day", "halt"]))
    assert market.batch.bars.join(gaps, on=["symbol", "date"]).is_empty()
    # Every listed session without a bar is an injected gap, and vice versa.
    sessions = pl.DataFrame({"date": _sessions()})
    listed = (
        market.batch.listings.join(sessions, how="cross")
        .filter(
            (pl.col("date") >= pl.col("start_date"))
            & (pl.col("end_date").is_null() | (pl.col("date") <= pl.col("end_date")))
        )
        .select("symbol", "date")
    )
    missing = listed.join(market.batch.bars, on=["symbol", "date"], how="anti").sort("symbol", "date")
    assert missing.equals(gaps.select("symbol", "date"))
    # Halts are runs of 2-5 consecutive sessions; missing days stand alone.
    index = pl.DataFrame({"date": _sessions()}).with_row_index("session")
    runs = (
        gaps.join(index, on="date")
        .sort("symbol", "session")
        .with_columns(run=(pl.col("session").diff().over("symbol") != 1).fill_null(True).cum_sum())
        .group_by("run")
        .agg(pl.col("kind").first(), pl.col("kind").n_unique().alias("kinds"), pl.len())
    )
    assert (runs["kinds"] == 1).all()
    assert runs.filter(kind="missing_day")["len"].to_list() == [1] * runs.filter(kind="missing_day").height
    halt_lengths = runs.filter(kind="halt")["len"]
    assert halt_lengths.min() >= 2 and halt_lengths.max() <= 5  # type: ignore[operator]


def test_listings_match_first_and_last_bars(market: SyntheticData) -> None:
    sessions = _sessions()
    bounds = market.batch.bars.group_by("symbol").agg(first=pl.col("date").min(), last=pl.col("date").max())
    listings = market.batch.listings.join(bounds, on="symbol")
    assert listings.height == 40
    assert (listings["start_date"] == listings["first"]).all()
    delisted = listings.filter(pl.col("end_date").is_not_null())
    assert (delisted["end_date"] == delisted["last"]).all()
    assert (delisted["end_date"] < sessions[-1]).all()
    listed = listings.filter(pl.col("end_date").is_null())
    assert (listed["last"] == sessions[-1]).all()
    ipos = listings.filter(pl.col("start_date") > sessions[0])
    assert (ipos["start_date"] > CONFIG.start).all()
    assert listings["tradable"].all()
    assert listings["sector"].n_unique() <= CONFIG.sectors


# --- the source ------------------------------------------------------------------------------------


def test_source_implements_the_protocol_and_is_healthy() -> None:
    source = SyntheticSource(CONFIG)
    assert isinstance(source, BarSource)
    assert source.name == "synthetic"
    health = source.health()
    assert health.ok and health.source == "synthetic"


def test_source_fetch_filters_bars_actions_and_listings(market: SyntheticData) -> None:
    source = SyntheticSource(CONFIG)
    actions = market.batch.actions
    wanted = sorted(set(actions["symbol"].head(2)) | {"SYN000"})
    start, end = date(2022, 1, 1), date(2022, 12, 31)
    batch = source.fetch(wanted, start, end)
    assert set(batch.bars["symbol"].unique()) == set(wanted)
    assert batch.bars["date"].min() >= start  # type: ignore[operator]
    assert batch.bars["date"].max() <= end  # type: ignore[operator]
    expected = market.batch.bars.filter(
        pl.col("symbol").is_in(wanted) & pl.col("date").is_between(start, end)
    )
    assert batch.bars.equals(expected)
    assert batch.actions.equals(
        actions.filter(pl.col("symbol").is_in(wanted) & pl.col("ex_date").is_between(start, end))
    )
    assert set(batch.listings["symbol"]) <= set(wanted)
    assert set(batch.bars["symbol"]) <= set(batch.listings["symbol"])
    everything = source.fetch(None, CONFIG.start, CONFIG.end)
    assert everything.bars.equals(market.batch.bars)
    assert everything.listings.equals(market.batch.listings)
    assert source.fetch(["NOPE"], start, end).bars.is_empty()


def test_source_fetch_omits_listings_outside_the_range(market: SyntheticData) -> None:
    listings = market.batch.listings
    delisted = listings.filter(pl.col("end_date").is_not_null()).row(0, named=True)
    after = trading_calendar().next_session(delisted["end_date"])
    batch = SyntheticSource(CONFIG).fetch([delisted["symbol"]], after, CONFIG.end)
    assert batch.bars.is_empty()
    assert batch.listings.is_empty()


# --- planted momentum ------------------------------------------------------------------------------


def _next_day_ic(data: SyntheticData) -> float:
    """Mean daily rank correlation of the 20-session mean log return with the next session's return
    (on raw closes, leaving out moves beyond 25 %: splits and bad ticks)."""
    bars = data.batch.bars.sort("symbol", "date").with_columns(r=pl.col("close").log().diff().over("symbol"))
    bars = bars.with_columns(
        past=pl.col("r").rolling_mean(20).over("symbol"), nxt=pl.col("r").shift(-1).over("symbol")
    ).drop_nulls()
    bars = bars.filter((pl.col("r").abs() < 0.25) & (pl.col("nxt").abs() < 0.25))
    daily = bars.group_by("date").agg(pl.corr("past", "nxt", method="spearman").alias("ic"))
    return float(daily.get_column("ic").drop_nans().mean())  # type: ignore[arg-type]


def test_momentum_plants_a_weak_predictable_effect(market: SyntheticData) -> None:
    planted = SyntheticMarket(dataclasses.replace(CONFIG, momentum=0.3)).generate()
    assert abs(_next_day_ic(market)) < 0.02  # the default market is random walks
    assert 0.03 < _next_day_ic(planted) < 0.1  # theory: about 0.3 / sqrt(20) = 0.067


def test_momentum_zero_leaves_the_market_unchanged(market: SyntheticData) -> None:
    explicit = SyntheticMarket(dataclasses.replace(CONFIG, momentum=0.0)).generate()
    assert explicit.batch.bars.equals(market.batch.bars)


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"symbols": 0}, "symbols"),
        ({"symbols": 100_001}, "symbols"),
        ({"start": date(2023, 1, 1), "end": date(2023, 1, 1)}, "start"),
        ({"start": date(2024, 1, 1), "end": date(2023, 1, 1)}, "start"),
        ({"seed": -1}, "seed"),
        ({"split_rate": -0.1}, "split_rate"),
        ({"dividend_rate": 1.5}, "dividend_rate"),
        ({"bad_tick_rate": 2.0}, "bad_tick_rate"),
        ({"missing_day_rate": -1.0}, "missing_day_rate"),
        ({"halt_rate": 1.01}, "halt_rate"),
        ({"ipo_fraction": 1.1}, "ipo_fraction"),
        ({"delist_fraction": -0.5}, "delist_fraction"),
        ({"sectors": 0}, "sectors"),
        ({"momentum": 1.5}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
    ],
)
def test_config_validation_names_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(CONFIG, **changes)  # type: ignore[arg-type]


def test_config_defaults() -> None:
    config = SyntheticConfig()
    assert config.symbols == 50 and config.seed == 7
    assert config.start < config.end
