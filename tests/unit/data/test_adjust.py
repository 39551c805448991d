"""Back-adjustment for splits and cash dividends: hand-made cases with known answers, and a property."""

from __future__ import annotations

import math
from datetime import date, timedelta

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.data.adjust import action_dates, adjust
from trader.data.bars import ACTION_SCHEMA, ADJ_BAR_SCHEMA, RAW_BAR_SCHEMA, sound_bar

DAYS = [date(2024, 1, day) for day in (2, 3, 4, 5, 8, 9, 10, 11, 12)]


def raw_bars(
    closes: list[float],
    *,
    symbol: str = "AAA",
    days: list[date] | None = None,
    volumes: list[float] | None = None,
) -> pl.DataFrame:
    """Raw bars with open = close, high = close + 1, low = close - 1 (so every price column is checked;
    close / 2 below 2, so that the bar stays one the gate accepts: the adjuster ignores others)."""
    days = days or DAYS[: len(closes)]
    volumes = volumes or [1000.0] * len(closes)
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(closes),
            "date": days,
            "open": closes,
            "high": [c + 1 for c in closes],
            "low": [c - 1 if c > 2 else c / 2 for c in closes],
            "close": closes,
            "volume": volumes,
            "source": ["test"] * len(closes),
            "ingested_at": [None] * len(closes),
        },
        schema=RAW_BAR_SCHEMA,
    )


def actions(*rows: tuple[str, date, float, float]) -> pl.DataFrame:
    return pl.DataFrame(
        [(symbol, ex_date, split, dividend, "test") for symbol, ex_date, split, dividend in rows],
        schema=ACTION_SCHEMA,
        orient="row",
    )


NO_ACTIONS = actions()


def column(frame: pl.DataFrame, name: str) -> list[float]:
    return frame.get_column(name).to_list()


def test_two_for_one_split_halves_prices_before_and_doubles_volume() -> None:
    bars = raw_bars([100.0, 102.0, 51.0, 52.0], volumes=[1000.0, 1000.0, 2000.0, 2000.0])
    out = adjust(bars, actions(("AAA", DAYS[2], 2.0, 0.0)))

    assert column(out, "close") == [50.0, 51.0, 51.0, 52.0]
    assert column(out, "open") == [50.0, 51.0, 51.0, 52.0]
    assert column(out, "high") == [50.5, 51.5, 52.0, 53.0]
    assert column(out, "low") == [49.5, 50.5, 50.0, 51.0]
    assert column(out, "volume") == [2000.0, 2000.0, 2000.0, 2000.0]
    assert column(out, "factor") == [0.5, 0.5, 1.0, 1.0]


def test_one_dollar_dividend_on_a_hundred_dollar_close() -> None:
    bars = raw_bars([98.0, 100.0, 99.0, 99.5])
    out = adjust(bars, actions(("AAA", DAYS[2], 1.0, 1.0)))

    assert column(out, "factor") == pytest.approx([0.99, 0.99, 1.0, 1.0], rel=1e-15)
    assert column(out, "close") == pytest.approx([97.02, 99.0, 99.0, 99.5], rel=1e-12)
    # A dividend does not change the number of shares: volume is untouched.
    assert column(out, "volume") == [1000.0] * 4


def test_a_bad_tick_before_a_dividend_does_not_set_its_ratio() -> None:
    # 100, 100, a tick of 1.50, then the ex-date at 99: the gate quarantines the tick as a one-day
    # spike; taken as the previous close it would give m = 1 - 1/1.5 = 0.33 for the whole history.
    bars = raw_bars([100.0, 100.0, 1.5, 99.0, 99.5])
    out = adjust(bars, actions(("AAA", DAYS[3], 1.0, 1.0)))
    assert column(out, "factor")[:2] == pytest.approx([0.99, 0.99], rel=1e-15)
    # A tick the dividend is not below (0.9 < $1) would have refused the whole ingest.
    refused_before = adjust(raw_bars([100.0, 100.0, 0.9, 99.0, 99.5]), actions(("AAA", DAYS[3], 1.0, 1.0)))
    assert column(refused_before, "factor")[0] == pytest.approx(0.99, rel=1e-15)


def test_a_bar_the_gate_refuses_is_not_a_previous_close() -> None:
    # The day before the ex-date closes at 1.0 below its low of 95 (OHLC inconsistent): skipped.
    bars = raw_bars([100.0, 100.0, 99.0, 99.5]).with_columns(
        close=pl.when(pl.col("date") == DAYS[1]).then(1.0).otherwise(pl.col("close"))
    )
    out = adjust(bars, actions(("AAA", DAYS[2], 1.0, 1.0)))
    assert column(out, "factor")[:2] == pytest.approx([0.99, 0.99], rel=1e-15)


def test_a_real_move_before_a_dividend_is_not_a_spike() -> None:
    # A fall to 60 that holds at the ex-date (59) is news, not a tick: the dividend uses 60.
    out = adjust(raw_bars([100.0, 100.0, 60.0, 59.0]), actions(("AAA", DAYS[3], 1.0, 1.0)))
    assert column(out, "factor")[0] == pytest.approx(1 - 1 / 60, rel=1e-15)
    # A spike smaller than the threshold is a price, too.
    small = adjust(raw_bars([100.0, 100.0, 80.0, 99.0]), actions(("AAA", DAYS[3], 1.0, 1.0)))
    assert column(small, "factor")[0] == pytest.approx(1 - 1 / 80, rel=1e-15)
    # With a threshold of 10 % the same 20 % dip is a spike.
    strict = adjust(
        raw_bars([100.0, 100.0, 80.0, 99.0]), actions(("AAA", DAYS[3], 1.0, 1.0)), spike_threshold=0.1
    )
    assert column(strict, "factor")[0] == pytest.approx(0.99, rel=1e-15)


def test_a_spike_before_a_split_and_dividend_is_judged_in_pre_split_terms() -> None:
    # 2-for-1 with $1 per new share; the ex-date's 49 is 98 before the split: the tick of 150 is a spike.
    out = adjust(raw_bars([100.0, 100.0, 150.0, 49.0]), actions(("AAA", DAYS[3], 2.0, 1.0)))
    assert column(out, "factor")[0] == pytest.approx(0.49, rel=1e-15)


def test_split_and_dividend_on_the_same_day_compare_the_dividend_with_the_post_split_close() -> None:
    bars = raw_bars([100.0, 100.0, 49.0, 49.5], volumes=[10.0, 10.0, 20.0, 20.0])
    # 2-for-1 and $1 per (new) share: m = 1/2 * (1 - 1 / (100 / 2)) = 0.49.
    one_row = adjust(bars, actions(("AAA", DAYS[2], 2.0, 1.0)))
    two_rows = adjust(bars, actions(("AAA", DAYS[2], 2.0, 0.0), ("AAA", DAYS[2], 1.0, 1.0)))

    assert column(one_row, "factor") == pytest.approx([0.49, 0.49, 1.0, 1.0], rel=1e-15)
    assert column(one_row, "close") == pytest.approx([49.0, 49.0, 49.0, 49.5], rel=1e-12)
    assert column(one_row, "volume") == [20.0, 20.0, 20.0, 20.0]
    assert one_row.equals(two_rows)


def test_multiple_splits_compound() -> None:
    bars = raw_bars([600.0, 300.0, 100.0, 100.0], volumes=[1.0, 2.0, 6.0, 6.0])
    out = adjust(bars, actions(("AAA", DAYS[1], 2.0, 0.0), ("AAA", DAYS[2], 3.0, 0.0)))

    assert column(out, "factor") == pytest.approx([1 / 6, 1 / 3, 1.0, 1.0], rel=1e-15)
    assert column(out, "close") == pytest.approx([100.0, 100.0, 100.0, 100.0], rel=1e-12)
    assert column(out, "volume") == [6.0, 6.0, 6.0, 6.0]


def test_several_dividends_each_use_their_own_previous_close() -> None:
    bars = raw_bars([50.0, 100.0, 99.0, 50.0, 49.5])
    out = adjust(bars, actions(("AAA", DAYS[2], 1.0, 1.0), ("AAA", DAYS[4], 1.0, 0.5)))
    # Second dividend: 1 - 0.5/50 = 0.99; first: 1 - 1/100 = 0.99 on top of it.
    assert column(out, "factor") == pytest.approx([0.9801, 0.9801, 0.99, 0.99, 1.0], rel=1e-14)


def test_of_a_repeated_date_the_first_version_gives_the_previous_close() -> None:
    # Two versions of 3 Jan (100, then 50): the gate keeps the first of a repeat, so the dividend on
    # 4 Jan is measured against 100 (1 - 1/100), not 50 (1 - 1/50).
    bars = raw_bars([100.0, 100.0, 50.0, 60.0], days=[DAYS[0], DAYS[1], DAYS[1], DAYS[2]])
    out = adjust(bars, actions(("AAA", DAYS[2], 1.0, 1.0)))
    assert column(out, "factor") == pytest.approx([0.99, 0.99, 0.99, 1.0], rel=1e-14)
    assert column(out, "close") == pytest.approx([99.0, 99.0, 49.5, 60.0], rel=1e-14)


def test_action_on_a_missing_day_applies_to_the_bars_before_it() -> None:
    days = [DAYS[0], DAYS[1], DAYS[3], DAYS[4]]  # no bar on DAYS[2] (a halt)
    bars = raw_bars([100.0, 100.0, 49.0, 50.0], days=days)
    out = adjust(bars, actions(("AAA", DAYS[2], 2.0, 1.0)))

    # The previous close is DAYS[1]'s, the first bar on or after the ex-date is DAYS[3].
    assert column(out, "factor") == pytest.approx([0.49, 0.49, 1.0, 1.0], rel=1e-15)


def test_a_dividend_after_a_split_with_no_bar_between_is_measured_post_split() -> None:
    # 2-for-1 on a day without a bar (a halt), $5 per new share on the next: from 100 the price left
    # is 100 / 2 - 5 = 45, so a bar at 45 is no move at all. Measured against the pre-split 100 the
    # dividend gave m = 0.5 * 0.95 = 0.475 and a -5.3 % return out of nothing.
    days = [DAYS[0], DAYS[1], DAYS[4], DAYS[5]]  # no bars on DAYS[2] and DAYS[3]
    out = adjust(
        raw_bars([100.0, 100.0, 45.0, 45.5], days=days),
        actions(("AAA", DAYS[2], 2.0, 0.0), ("AAA", DAYS[3], 1.0, 5.0)),
    )
    assert column(out, "factor") == pytest.approx([0.45, 0.45, 1.0, 1.0], rel=1e-14)
    assert column(out, "close") == pytest.approx([45.0, 45.0, 45.0, 45.5], rel=1e-14)


def test_two_dividends_between_two_bars_adjust_like_one() -> None:
    # $20 and then $30 with no bar between: 100 -> 80 -> 50, the same factor as one $50 dividend.
    days = [DAYS[0], DAYS[1], DAYS[4]]
    bars = raw_bars([100.0, 100.0, 50.0], days=days)
    out = adjust(bars, actions(("AAA", DAYS[2], 1.0, 20.0), ("AAA", DAYS[3], 1.0, 30.0)))
    one = adjust(bars, actions(("AAA", DAYS[3], 1.0, 50.0)))
    assert column(out, "factor") == pytest.approx([0.5, 0.5, 1.0], rel=1e-14)
    assert column(out, "factor") == pytest.approx(column(one, "factor"), rel=1e-14)


def test_dividends_between_two_bars_paying_out_more_than_the_price_are_refused() -> None:
    # $60 then $45 on a $100 close: each is below 100, together they exceed it.
    days = [DAYS[0], DAYS[1], DAYS[4]]
    with pytest.raises(ValueError, match=r"AAA on 2024-01-05 .*40 after the earlier action"):
        adjust(
            raw_bars([100.0, 100.0, 1.0], days=days),
            actions(("AAA", DAYS[2], 1.0, 60.0), ("AAA", DAYS[3], 1.0, 45.0)),
        )


# --- known answers from real corporate actions (closes as reported, raw, unadjusted) -----------------


@pytest.mark.parametrize(
    ("symbol", "before", "ex_date", "split", "prev_close", "ex_close"),
    [
        ("AAPL", date(2014, 6, 6), date(2014, 6, 9), 7.0, 645.57, 93.70),  # 7-for-1
        ("AAPL", date(2020, 8, 28), date(2020, 8, 31), 4.0, 499.23, 129.04),  # 4-for-1
        ("TSLA", date(2022, 8, 24), date(2022, 8, 25), 3.0, 891.29, 296.07),  # 3-for-1
        ("GE", date(2021, 7, 30), date(2021, 8, 2), 0.125, 12.94, 103.92),  # 1-for-8 reverse (approx.)
    ],
)
def test_real_splits(
    symbol: str, before: date, ex_date: date, split: float, prev_close: float, ex_close: float
) -> None:
    bars = raw_bars([prev_close, ex_close], symbol=symbol, days=[before, ex_date], volumes=[100.0, 100.0])
    out = adjust(bars, actions((symbol, ex_date, split, 0.0)))

    assert column(out, "factor") == pytest.approx([1 / split, 1.0], rel=1e-15)
    assert column(out, "volume") == pytest.approx([100.0 * split, 100.0], rel=1e-15)
    closes = column(out, "close")
    # The adjusted return is the market's: AAPL +3.4 % on 2020-08-31, +1.6 % on 2014-06-09, TSLA
    # -0.35 % on 2022-08-25; no 4x, 7x, 3x or 1/8x jump.
    assert closes[1] / closes[0] - 1 == pytest.approx(ex_close / (prev_close / split) - 1, rel=1e-12)
    assert abs(closes[1] / closes[0] - 1) < 0.05


def test_aapl_2020_dividend_then_split() -> None:
    # $0.82 ex 2020-08-07 (pre-split), 4-for-1 ex 2020-08-31.
    days = [date(2020, 8, 6), date(2020, 8, 7), date(2020, 8, 28), date(2020, 8, 31)]
    bars = raw_bars([455.61, 444.45, 499.23, 129.04], symbol="AAPL", days=days)
    out = adjust(bars, actions(("AAPL", date(2020, 8, 7), 1.0, 0.82), ("AAPL", date(2020, 8, 31), 4.0, 0.0)))
    factor = column(out, "factor")
    assert factor == pytest.approx([0.25 * (1 - 0.82 / 455.61), 0.25, 0.25, 1.0], rel=1e-15)
    closes = column(out, "close")
    assert closes[1] / closes[0] == pytest.approx(444.45 / (455.61 - 0.82), rel=1e-12)
    assert closes[3] / closes[2] == pytest.approx(129.04 / (499.23 / 4), rel=1e-12)


def test_special_dividends() -> None:
    # MSFT's $3.08 (3.00 special + 0.08 regular) ex 2004-11-15 after a 29.97 close: -8.6 % raw,
    # +1.9 % adjusted.
    days = [date(2004, 11, 12), date(2004, 11, 15)]
    out = adjust(raw_bars([29.97, 27.39], symbol="MSFT", days=days), actions(("MSFT", days[1], 1.0, 3.08)))
    closes = column(out, "close")
    assert closes[1] / closes[0] == pytest.approx(27.39 / (29.97 - 3.08), rel=1e-12)
    # A $35 special on a $50 stock (70 % of the price): the -69 % raw drop is a +3.3 % return.
    days = [date(2023, 12, 27), date(2023, 12, 28)]
    out = adjust(raw_bars([50.0, 15.5], symbol="BIG", days=days), actions(("BIG", days[1], 1.0, 35.0)))
    assert column(out, "factor") == pytest.approx([0.3, 1.0], rel=1e-14)
    assert column(out, "close") == pytest.approx([15.0, 15.5], rel=1e-14)


def test_actions_outside_the_bars_change_nothing() -> None:
    bars = raw_bars([100.0, 101.0, 102.0])
    out = adjust(
        bars,
        actions(
            ("AAA", date(2023, 6, 1), 2.0, 0.0),  # before the first bar
            ("AAA", date(2023, 6, 2), 1.0, 5.0),
            ("AAA", DAYS[3], 4.0, 0.0),  # after the last bar: not in our data yet
            ("AAA", DAYS[5], 1.0, 1.0),
        ),
    )
    assert column(out, "factor") == [1.0, 1.0, 1.0]
    assert column(out, "close") == [100.0, 101.0, 102.0]
    assert column(out, "volume") == [1000.0, 1000.0, 1000.0]


def test_actions_only_touch_their_own_symbol() -> None:
    bars = pl.concat([raw_bars([100.0, 50.0], symbol="BBB"), raw_bars([100.0, 100.0], symbol="AAA")])
    out = adjust(bars, actions(("BBB", DAYS[1], 2.0, 0.0)))

    assert out.get_column("symbol").to_list() == ["AAA", "AAA", "BBB", "BBB"]  # sorted by symbol, date
    assert column(out, "factor") == [1.0, 1.0, 0.5, 1.0]


def test_the_same_action_from_two_sources_counts_once() -> None:
    bars = raw_bars([100.0, 50.0])
    twice = pl.concat([actions(("AAA", DAYS[1], 2.0, 0.0)), actions(("AAA", DAYS[1], 2.0, 0.0))])
    twice = twice.with_columns(source=pl.Series(["csv", "alpaca"]))
    assert column(adjust(bars, twice), "factor") == [0.5, 1.0]


def test_readjusting_with_a_new_action_is_calling_adjust_again() -> None:
    bars = raw_bars([100.0, 100.0, 50.0, 50.0, 49.5])
    before = bars.clone()
    first = adjust(bars, actions(("AAA", DAYS[2], 2.0, 0.0)))
    assert column(first, "factor") == [0.5, 0.5, 1.0, 1.0, 1.0]

    both = adjust(bars, actions(("AAA", DAYS[2], 2.0, 0.0), ("AAA", DAYS[4], 1.0, 0.5)))
    assert column(both, "factor") == pytest.approx([0.495, 0.495, 0.99, 0.99, 1.0], rel=1e-15)
    assert bars.equals(before)  # the input is not modified


def test_output_has_the_adjusted_schema_and_keeps_every_row() -> None:
    bars = pl.concat([raw_bars([100.0, 50.0]), raw_bars([100.0]), raw_bars([float("nan")])])
    out = adjust(bars.reverse(), actions(("AAA", DAYS[1], 2.0, 0.0)))

    assert out.schema == pl.Schema(ADJ_BAR_SCHEMA)
    assert out.height == bars.height  # repeats and bad rows are the quality gate's business
    assert out.get_column("date").to_list() == [DAYS[0], DAYS[0], DAYS[0], DAYS[1]]


def test_rows_without_a_symbol_or_date_pass_through_unadjusted() -> None:
    bars = pl.concat([raw_bars([100.0, 50.0]), raw_bars([7.0]).with_columns(date=None)])
    out = adjust(bars, actions(("AAA", DAYS[1], 2.0, 0.0)))
    assert out.height == 3
    assert out.row(2, named=True)["close"] == 7.0
    assert out.row(2, named=True)["factor"] == 1.0


def test_a_dividend_not_below_the_previous_close_is_refused() -> None:
    bars = raw_bars([10.0, 10.0, 1.0])
    with pytest.raises(ValueError, match=r"AAA on 2024-01-04"):
        adjust(bars, actions(("AAA", DAYS[2], 1.0, 10.0)))
    # In post-split terms: a 2-for-1 with a $5 dividend on a $10 close leaves nothing either.
    with pytest.raises(ValueError, match=r"AAA on 2024-01-04"):
        adjust(bars, actions(("AAA", DAYS[2], 2.0, 5.0)))


@pytest.mark.parametrize(("split", "dividend"), [(0.0, 0.0), (-2.0, 0.0), (float("nan"), 0.0), (1.0, -1.0)])
def test_invalid_actions_are_refused(split: float, dividend: float) -> None:
    with pytest.raises(ValueError, match="invalid corporate action"):
        adjust(raw_bars([100.0, 50.0]), actions(("AAA", DAYS[1], split, dividend)))


def test_missing_columns_are_refused() -> None:
    with pytest.raises(ValueError, match="source"):
        adjust(raw_bars([100.0]).drop("source"), NO_ACTIONS)


def test_action_dates_leave_out_rows_that_change_nothing() -> None:
    dates = action_dates(
        actions(("BBB", DAYS[3], 1.0, 0.0), ("AAA", DAYS[2], 1.0, 0.25), ("AAA", DAYS[1], 2.0, 0.0))
    )
    assert dates.rows() == [("AAA", DAYS[1]), ("AAA", DAYS[2])]


# --- property: back-adjustment never creates a jump at a recorded corporate action -------------------

SPLITS = st.sampled_from([1.0, 1.0, 2.0, 3.0, 1.5, 0.5, 0.1, 10.0])


@st.composite
def market(draw: st.DrawFn) -> tuple[list[date], list[float], list[tuple[int, int, float, float]]]:
    """Bar dates with gaps, an economic (total-return) close path, and actions ``(anchor, days before
    the anchor, split ratio, dividend as a fraction of the previous post-split close)``."""
    n = draw(st.integers(min_value=2, max_value=40))
    steps = draw(st.lists(st.integers(1, 4), min_size=n - 1, max_size=n - 1))
    days = [date(2020, 1, 1)]
    for step in steps:
        days.append(days[-1] + timedelta(days=step))
    returns = draw(st.lists(st.floats(-0.25, 0.25), min_size=n - 1, max_size=n - 1))
    economic = [draw(st.floats(1.0, 500.0))]
    for ret in returns:
        economic.append(economic[-1] * (1 + ret))
    anchors = draw(st.lists(st.integers(1, n - 1), unique=True, max_size=6))
    acts = []
    for anchor in anchors:
        gap = (days[anchor] - days[anchor - 1]).days
        offset = draw(st.integers(0, gap - 1))  # 0: ex-date is a bar date; else a day with no bar
        split = draw(SPLITS)
        dividend = draw(st.sampled_from([0.0, 0.0, 0.001, 0.02, 0.3, 0.9]))
        if split == 1.0 and dividend == 0.0:
            dividend = 0.05
        acts.append((anchor, offset, split, dividend))
    return days, economic, acts


@settings(max_examples=100, deadline=None)
@given(market())
def test_adjustment_never_creates_a_jump_at_a_corporate_action(
    case: tuple[list[date], list[float], list[tuple[int, int, float, float]]],
) -> None:
    days, economic, acts = case
    n = len(days)
    # Build raw prices backwards from the newest bar (raw = economic while no action follows): across
    # an action with split s and dividend d, the previous raw close P satisfies P / s - d = the
    # economic close in post-split terms, i.e. the drop the split and the dividend explain.
    raw = [0.0] * n
    raw_volume = [0.0] * n
    factor = 1.0  # adjusted / raw for the segment being filled
    shares = 1.0  # product of splits after the segment
    segment_end = n
    rows = []
    for anchor, offset, split, fraction in sorted(acts, reverse=True):
        for i in range(anchor, segment_end):
            raw[i] = economic[i] / factor
            raw_volume[i] = 1000.0 / shares
        post_split_prev = economic[anchor - 1] / factor
        dividend = fraction * post_split_prev
        prev_close = split * (post_split_prev + dividend)
        factor *= (1 / split) * (1 - dividend / (prev_close / split))
        shares *= split
        segment_end = anchor
        rows.append(("AAA", days[anchor] - timedelta(days=offset), split, dividend))
    for i in range(segment_end):
        raw[i] = economic[i] / factor
        raw_volume[i] = 1000.0 / shares
    # Actions outside the bars must not matter.
    rows.append(("AAA", days[0] - timedelta(days=3), 2.0, 1.0))
    rows.append(("AAA", days[-1] + timedelta(days=1), 3.0, 0.5))

    bars = raw_bars(raw, days=days, volumes=raw_volume)
    out = adjust(bars, actions(*rows))

    closes = column(out, "close")
    for i in range(1, n):
        assert math.isclose(closes[i] / closes[i - 1], economic[i] / economic[i - 1], rel_tol=1e-9)
    assert column(out, "factor")[-1] == 1.0
    assert column(out, "volume") == pytest.approx([1000.0] * n, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    chain=st.lists(st.tuples(SPLITS, st.sampled_from([0.0, 0.001, 0.02, 0.3, 0.9])), min_size=1, max_size=4),
    ex_close=st.floats(1.0, 500.0),
    move=st.floats(-0.25, 0.25),
)
def test_several_actions_between_two_bars_give_the_economic_return(
    chain: list[tuple[float, float]], ex_close: float, move: float
) -> None:
    # Actions on the days between two bars (a halt): walking back from the bar after them, each
    # action's price before it is s * (price after) / (1 - f), with a dividend d = f * that / s. The
    # adjusted return across them all must be ``move``, and the factor 1 after the last.
    price = ex_close / (1 + move)
    rows = []
    for offset, (split, fraction) in reversed(list(enumerate(chain))):
        before = split * price / (1 - fraction)
        rows.append(("AAA", DAYS[2 + offset], split, fraction * before / split))
        price = before
    days = [DAYS[0], DAYS[1], DAYS[6], DAYS[7]]
    out = adjust(raw_bars([price, price, ex_close, ex_close], days=days), actions(*rows))

    closes = column(out, "close")
    assert closes[2] / closes[1] == pytest.approx(1 + move, rel=1e-9)
    assert column(out, "factor")[2:] == [1.0, 1.0]


def _reference_effective_actions(bars: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """The previous, join-based way of finding each action's bars (kept here to check the binary
    search against): the first bar on or after the ex-date by an as-of join per symbol, the last
    usable close before it by another."""
    keyed = bars.filter(pl.col("symbol").is_not_null() & pl.col("date").is_not_null())
    usable = keyed.filter(sound_bar()).select("symbol", "date", "close")
    closes = usable.filter(
        (pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True)
        | (pl.col("date") != pl.col("date").shift(1)).fill_null(True)
    )
    anchored = (
        actions.sort("symbol", "ex_date")
        .join_asof(
            keyed.select("symbol", pl.col("date").alias("anchor")),
            left_on="ex_date",
            right_on="anchor",
            by="symbol",
            strategy="forward",
            check_sortedness=False,
        )
        .join_asof(
            closes.rename({"date": "prev_date", "close": "prev_close"}),
            left_on="ex_date",
            right_on="prev_date",
            by="symbol",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
    )
    return anchored.filter(pl.col("anchor").is_not_null()).select(
        "symbol", "ex_date", "split_ratio", "cash_dividend", "prev_date", "prev_close"
    )


_DAYS = st.sampled_from(
    [date(1, 1, 1), date(1900, 3, 1), *DAYS, date(2024, 2, 1), date(9999, 12, 31)]  # far dates included
)
#: ``(symbol, date, close, volume)`` rows with null keys, unusable closes, repeats and far dates.
_BAR_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "CCC", None]),
        st.one_of(st.none(), _DAYS),
        st.sampled_from([100.0, 50.0, 20.0, float("nan"), float("inf"), 0.0, -1.0, None]),
        st.sampled_from([1000.0, 0.0, None]),
    ),
    max_size=40,
)
#: ``(symbol, ex_date, split, dividend)`` rows, some for a symbol without bars, on and between bar dates.
_ACTION_ROWS = st.lists(
    st.tuples(
        st.sampled_from(["AAA", "BBB", "ZZZ"]),
        _DAYS,
        st.sampled_from([1.0, 2.0, 0.5, 3.0]),
        st.sampled_from([0.0, 0.5, 1.25]),
    ),
    max_size=6,
)


def _with_multiplier(events: pl.DataFrame) -> pl.DataFrame:
    """``events`` with the adjuster's multiplier ``m`` from their split, dividend and previous close.

    Actions sharing a previous close (no usable bar between them) form a chain, each later one
    measured against that close carried through the earlier ones: ``(P - d1 * S1 - ...) / S(k-1)``
    with ``Sj`` the splits of the chain up to and including the j-th action (a running product and a
    running sum, in ex-date order, as the adjuster's cumulative product and sum compute them).
    """
    running: dict[tuple[str, date], tuple[float, float]] = {}  # chain -> (splits so far, paid so far)
    multipliers = []
    for row in events.sort("symbol", "ex_date").iter_rows(named=True):
        split, dividend, previous = row["split_ratio"], row["cash_dividend"], row["prev_close"]
        if previous is None:
            multipliers.append(1.0 / split)
            continue
        chain = (row["symbol"], row["prev_date"])
        splits, paid = running.get(chain, (1.0, 0.0))
        reference = (previous - paid) / splits
        ratio = 1.0 - dividend / (reference / split) if dividend > 0 else 1.0
        multipliers.append((1.0 / split) * ratio)
        running[chain] = (splits * split, paid + dividend * (splits * split))
    if any(m <= 0 for m in multipliers):  # dividends paying out more than the price: refused
        raise ValueError("the adjustment factor would be <= 0")
    return events.sort("symbol", "ex_date").with_columns(m=pl.Series(multipliers, dtype=pl.Float64))


@settings(max_examples=300, deadline=None)
@given(bar_rows=_BAR_ROWS, action_rows=_ACTION_ROWS)
def test_each_action_finds_the_same_bars_as_as_of_joins(
    bar_rows: list[tuple[str | None, date | None, float | None, float | None]],
    action_rows: list[tuple[str, date, float, float]],
) -> None:
    # The adjuster finds an action's first bar on or after the ex-date and the last usable close
    # before it by binary search on a (symbol, date) number; as-of joins per symbol must agree (the
    # same actions kept, the same multiplier, which a dividend takes from that close), with null
    # keys, unusable closes, repeated dates and dates from year 1 to 9999 in the bars.
    from trader.data.adjust import _effective_actions, _normalise_actions, _with_keys

    bars = pl.DataFrame(
        bar_rows,
        schema={"symbol": pl.String, "date": pl.Date, "close": pl.Float64, "volume": pl.Float64},
        orient="row",
    ).sort("symbol", "date", maintain_order=True, nulls_last=True)
    bars = bars.with_columns(open=pl.col("close"), high=pl.col("close"), low=pl.col("close"))
    normalised = _normalise_actions(actions(*action_rows))

    placed = bars.filter(pl.col("symbol").is_not_null() & pl.col("date").is_not_null())
    # (no spike rule here: the reference has none; see the spike tests)
    try:
        expected = _with_multiplier(_reference_effective_actions(bars, normalised))
    except ValueError:  # actions between two bars paying out more than the price: refused by both
        with pytest.raises(ValueError, match="adjustment factor would be <= 0"):
            _effective_actions(_with_keys(placed), normalised, math.inf)
        return
    found = _effective_actions(_with_keys(placed), normalised, math.inf)
    columns = ["symbol", "ex_date", "split_ratio", "m"]
    assert found.select(columns).sort("symbol", "ex_date").rows() == (
        expected.select(columns).sort("symbol", "ex_date").rows()
    )


def _reference_adjust(bars: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """The previous, join-based adjuster (kept here to check the binary search against): each bar
    takes the cumulative factors of the first action after it by an as-of join per symbol; rows
    without a symbol or date follow, unadjusted."""
    from trader.data.adjust import _normalise_actions

    frame = bars.sort("symbol", "date", maintain_order=True, nulls_last=True)
    events = _with_multiplier(_reference_effective_actions(frame, _normalise_actions(actions)))
    cumulative = events.sort("symbol", "ex_date").select(
        "symbol",
        "ex_date",
        pl.col("m").cum_prod(reverse=True).over("symbol").alias("factor"),
        pl.col("split_ratio").cum_prod(reverse=True).over("symbol").alias("split_factor"),
    )
    placed = pl.col("symbol").is_not_null() & pl.col("date").is_not_null()
    joined = frame.filter(placed).join_asof(
        cumulative,
        left_on="date",
        right_on="ex_date",
        by="symbol",
        strategy="forward",
        allow_exact_matches=False,
        check_sortedness=False,
    )
    joined = pl.concat([joined, frame.filter(~placed)], how="diagonal_relaxed")
    factor, split_factor = pl.col("factor").fill_null(1.0), pl.col("split_factor").fill_null(1.0)
    return joined.select(
        "symbol",
        "date",
        *((pl.col(name) * factor).alias(name) for name in ("open", "high", "low", "close")),
        (pl.col("volume") * split_factor).alias("volume"),
        factor.alias("factor"),
        "source",
    )


@settings(max_examples=300, deadline=None)
@given(bar_rows=_BAR_ROWS, action_rows=_ACTION_ROWS)
def test_every_bar_gets_the_same_factors_as_from_as_of_joins(
    bar_rows: list[tuple[str | None, date | None, float | None, float | None]],
    action_rows: list[tuple[str, date, float, float]],
) -> None:
    # Each bar finds the first action after it by binary search on its (symbol, date) number; an
    # as-of join per symbol must give every row the same values, in the same order, with null keys,
    # unusable closes, repeated dates, actions between bars and outside them, dates from year 1 to
    # 9999.
    bars = pl.DataFrame(
        [(s, d, c, c, c, c, v, "test", None) for s, d, c, v in bar_rows], schema=RAW_BAR_SCHEMA, orient="row"
    )
    given_actions = actions(*action_rows)

    try:
        expected = _reference_adjust(bars, given_actions)
    except ValueError:  # actions between two bars paying out more than the price: refused by both
        with pytest.raises(ValueError, match="adjustment factor would be <= 0"):
            adjust(bars, given_actions, spike_threshold=math.inf)
        return
    found = adjust(bars, given_actions, spike_threshold=math.inf)  # the reference has no spike rule

    assert found.schema == expected.schema == ADJ_BAR_SCHEMA
    assert found.equals(expected, null_equal=True)
