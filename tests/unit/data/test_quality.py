"""The quality gate: one hand-made case per rule, spikes versus jumps, gaps, and nothing silently dropped."""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trader.data.adjust import action_dates, adjust
from trader.data.bars import ACTION_SCHEMA, ADJ_BAR_SCHEMA, LISTING_SCHEMA, QUARANTINE_SCHEMA
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.quality import GAP_SCHEMA, GateConfig, GateResult, validate

# Ten NYSE sessions; 2024-01-15 (Martin Luther King Jr. Day) is a holiday between the 9th and 10th.
SESSIONS = [date(2024, 1, day) for day in (2, 3, 4, 5, 8, 9, 10, 11, 12, 16)]
CLOSES = [100.0, 101.0, 99.5, 100.5, 102.0, 101.0, 103.0, 102.5, 104.0, 103.5]
NO_ACTIONS = pl.DataFrame(schema=ACTION_SCHEMA)


@pytest.fixture(scope="module")
def calendar() -> TradingCalendar:
    return trading_calendar()


def bars(
    closes: list[float] | None = None, *, symbol: str = "AAA", days: list[date] | None = None
) -> pl.DataFrame:
    """Adjusted bars with consistent OHLC: open = previous close, high/low 1 % outside the body."""
    closes = closes or CLOSES
    days = days or SESSIONS[: len(closes)]
    opens = [closes[0], *closes[:-1]]
    return pl.DataFrame(
        {
            "symbol": [symbol] * len(closes),
            "date": days,
            "open": opens,
            "high": [max(o, c) * 1.01 for o, c in zip(opens, closes, strict=True)],
            "low": [min(o, c) * 0.99 for o, c in zip(opens, closes, strict=True)],
            "close": closes,
            "volume": [1000.0] * len(closes),
            "factor": [1.0] * len(closes),
            "source": ["test"] * len(closes),
        },
        schema=ADJ_BAR_SCHEMA,
    )


def with_row(frame: pl.DataFrame, index: int, **values: Any) -> pl.DataFrame:
    """``frame`` with row ``index`` changed."""
    rows = frame.rows(named=True)
    rows[index] = {**rows[index], **values}
    return pl.DataFrame(rows, schema=ADJ_BAR_SCHEMA)


def quarantined(result: GateResult) -> list[tuple[date, str]]:
    return [(row["date"], row["rule"]) for row in result.quarantined.iter_rows(named=True)]


def assert_accounted_for(frame: pl.DataFrame, result: GateResult) -> None:
    """Every input row is in exactly one of clean and quarantined."""
    assert result.clean.height + result.quarantined.height == frame.height
    assert result.clean.schema == pl.Schema(ADJ_BAR_SCHEMA)
    assert result.quarantined.schema == pl.Schema(QUARANTINE_SCHEMA)
    assert result.gaps.schema == pl.Schema(GAP_SCHEMA)
    assert not result.clean.select(pl.struct("symbol", "date").is_duplicated().any()).item()


def test_clean_data_passes_untouched(calendar: TradingCalendar) -> None:
    frame = bars()
    result = validate(frame.reverse(), NO_ACTIONS, calendar)

    assert result.clean.equals(frame)  # sorted by symbol and date
    assert result.quarantined.is_empty()
    assert result.gaps.is_empty()  # the MLK holiday is not a gap


@pytest.mark.parametrize(
    ("change", "rule", "words"),
    [
        ({"close": None}, "missing_value", "close is null"),
        ({"volume": float("nan")}, "missing_value", "volume is NaN"),
        ({"high": float("inf")}, "missing_value", "high is inf"),
        ({"low": 0.0}, "non_positive_price", "low=0.0"),
        ({"open": -1.0, "low": -2.0}, "non_positive_price", "open=-1.0, low=-2.0"),
        ({"volume": -5.0}, "negative_volume", "negative volume -5.0"),
        ({"high": 100.0}, "ohlc_inconsistent", "high 100.0 below max(open 99.5, close 100.5)"),
        ({"low": 100.0}, "ohlc_inconsistent", "low 100.0 above min(open 99.5, close 100.5)"),
        ({"low": 200.0, "high": 150.0}, "ohlc_inconsistent", "low 200.0 above high 150.0"),
    ],
)
def test_each_row_rule_quarantines_only_the_bad_row(
    calendar: TradingCalendar, change: dict[str, Any], rule: str, words: str
) -> None:
    frame = with_row(bars(), 3, **change)
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[3], rule)]
    assert words in result.quarantined.item(0, "reason")
    # The neighbours stay clean: returns skip the refused row instead of jumping to or from it.
    assert result.clean.get_column("date").to_list() == SESSIONS[:3] + SESSIONS[4:]
    assert result.gaps.rows() == [("AAA", SESSIONS[3], f"bar quarantined ({rule})")]
    assert_accounted_for(frame, result)


def test_a_row_breaking_several_rules_is_recorded_once_under_the_first(calendar: TradingCalendar) -> None:
    frame = with_row(bars(), 2, volume=None, low=-3.0, high=1.0, date=date(2024, 1, 6))
    result = validate(frame, NO_ACTIONS, calendar)

    assert [rule for _, rule in quarantined(result)] == ["missing_value"]
    assert_accounted_for(frame, result)


def test_a_date_that_is_not_a_session_is_quarantined(calendar: TradingCalendar) -> None:
    saturday = bars([100.0], days=[date(2024, 1, 6)])
    holiday = bars([100.0], days=[date(2024, 1, 15)])
    frame = pl.concat([bars(), saturday, holiday])
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(date(2024, 1, 6), "not_a_session"), (date(2024, 1, 15), "not_a_session")]
    assert result.quarantined.item(0, "reason") == "2024-01-06 is a Saturday and not a XNYS session"
    assert result.clean.height == len(SESSIONS)
    assert result.gaps.is_empty()
    assert_accounted_for(frame, result)


def test_identical_repeats_keep_the_first_occurrence(calendar: TradingCalendar) -> None:
    frame = pl.concat([bars(), bars().slice(4, 1), bars().slice(4, 1).with_columns(source=pl.lit("csv"))])
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[4], "duplicate"), (SESSIONS[4], "duplicate")]
    assert result.clean.equals(bars())
    assert result.clean.item(4, "source") == "test"  # the first occurrence is the one kept
    assert "identical repeat" in result.quarantined.item(0, "reason")
    assert result.gaps.is_empty()
    assert_accounted_for(frame, result)


def test_conflicting_versions_are_all_quarantined(calendar: TradingCalendar) -> None:
    other = with_row(bars(), 4, close=102.5, source="alpaca").slice(4, 1)
    frame = pl.concat([bars(), other])
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[4], "conflicting_duplicate")] * 2
    assert "102.0 (test), 102.5 (alpaca)" in result.quarantined.item(0, "reason")
    assert SESSIONS[4] not in result.clean.get_column("date").to_list()
    assert result.gaps.rows() == [("AAA", SESSIONS[4], "bar quarantined (conflicting_duplicate)")]
    assert_accounted_for(frame, result)


def test_a_duplicate_with_a_bad_version_keeps_the_good_one(calendar: TradingCalendar) -> None:
    broken = with_row(bars(), 4, close=float("nan")).slice(4, 1)
    frame = pl.concat([bars(), broken])
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[4], "missing_value")]
    assert result.clean.equals(bars())


def test_a_one_day_spike_quarantines_only_the_spike(calendar: TradingCalendar) -> None:
    closes = CLOSES.copy()
    closes[5] = 505.0  # a bad tick: +400 % in, -80 % out
    frame = bars(closes)
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[5], "outlier")]
    reason = result.quarantined.item(0, "reason")
    assert "1-day spike" in reason
    assert "+395.1% in" in reason
    assert "-79.6% out" in reason
    assert SESSIONS[6] in result.clean.get_column("date").to_list()  # the bar after it is fine
    assert_accounted_for(frame, result)


def test_a_downward_spike_quarantines_only_the_spike(calendar: TradingCalendar) -> None:
    closes = CLOSES.copy()
    closes[5] = 1.01  # a price in dollars where cents were meant
    result = validate(bars(closes), NO_ACTIONS, calendar)
    assert quarantined(result) == [(SESSIONS[5], "outlier")]


def test_a_persistent_jump_quarantines_only_the_jump_row(calendar: TradingCalendar) -> None:
    closes = CLOSES[:5] + [c * 1.5 for c in CLOSES[5:]]
    frame = bars(closes)
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[5], "outlier")]
    assert result.quarantined.item(0, "reason") == (
        "close-to-close return +48.5% with no corporate action "
        "(close 102.0 on 2024-01-08, 151.5 on 2024-01-09)"
    )
    assert_accounted_for(frame, result)


def test_a_spike_on_the_last_bar_is_quarantined(calendar: TradingCalendar) -> None:
    closes = CLOSES.copy()
    closes[-1] = 300.0
    result = validate(bars(closes), NO_ACTIONS, calendar)
    assert quarantined(result) == [(SESSIONS[-1], "outlier")]


def test_moves_within_the_threshold_pass_and_the_threshold_is_configurable(calendar: TradingCalendar) -> None:
    closes = CLOSES[:5] + [c * 1.25 for c in CLOSES[5:]]
    assert validate(bars(closes), NO_ACTIONS, calendar).quarantined.is_empty()

    strict = validate(bars(closes), NO_ACTIONS, calendar, config=GateConfig(outlier_threshold=0.2))
    assert quarantined(strict) == [(SESSIONS[5], "outlier")]


def test_an_earlier_bad_row_does_not_create_a_false_outlier(calendar: TradingCalendar) -> None:
    frame = with_row(bars(), 5, close=0.0, low=0.0)
    result = validate(frame, NO_ACTIONS, calendar)
    # Without rule ordering the bar after the zero close would show an infinite return.
    assert quarantined(result) == [(SESSIONS[5], "non_positive_price")]


def test_no_outlier_on_a_correctly_adjusted_split(calendar: TradingCalendar) -> None:
    raw = bars(CLOSES[:5] + [c / 4 for c in CLOSES[5:]]).drop("factor")
    split = pl.DataFrame([("AAA", SESSIONS[5], 4.0, 0.0, "test")], schema=ACTION_SCHEMA, orient="row")
    adjusted = adjust(raw, split)
    result = validate(adjusted, split, calendar)

    assert result.quarantined.is_empty()
    assert result.clean.get_column("factor").to_list() == [0.25] * 5 + [1.0] * 5
    # The same data unadjusted is a -75 % jump, but an action was recorded that day: not an outlier.
    assert validate(raw.with_columns(factor=pl.lit(1.0)), split, calendar).quarantined.is_empty()
    assert quarantined(validate(raw.with_columns(factor=pl.lit(1.0)), NO_ACTIONS, calendar)) == [
        (SESSIONS[5], "outlier")
    ]


def test_an_action_on_a_missing_day_excuses_the_next_bar(calendar: TradingCalendar) -> None:
    days = SESSIONS[:5] + SESSIONS[6:]
    closes = CLOSES[:5] + [c / 2 for c in CLOSES[6:]]
    split = pl.DataFrame([("AAA", SESSIONS[5], 2.0, 0.0, "test")], schema=ACTION_SCHEMA, orient="row")
    result = validate(bars(closes, days=days), split, calendar)
    assert result.quarantined.is_empty()
    assert result.gaps.rows() == [("AAA", SESSIONS[5], "no bar for this session")]


def accepted(*moves: tuple[str, date]) -> pl.DataFrame:
    return pl.DataFrame(moves, schema={"symbol": pl.String, "date": pl.Date}, orient="row")


def test_an_accepted_move_is_not_an_outlier_and_only_that_bar_is_excused(calendar: TradingCalendar) -> None:
    # A real -35 % earnings gap on SESSIONS[5], then a second unexplained +50 % jump on SESSIONS[8].
    closes = CLOSES[:5] + [c * 0.65 for c in CLOSES[5:8]] + [c * 0.65 * 1.5 for c in CLOSES[8:]]
    frame = bars(closes)
    assert quarantined(validate(frame, NO_ACTIONS, calendar)) == [
        (SESSIONS[5], "outlier"),
        (SESSIONS[8], "outlier"),
    ]

    result = validate(frame, NO_ACTIONS, calendar, accepted=accepted(("AAA", SESSIONS[5])))
    assert quarantined(result) == [(SESSIONS[8], "outlier")]
    assert SESSIONS[5] in result.clean.get_column("date").to_list()
    assert_accounted_for(frame, result)
    # Another symbol's acceptance, or another day's, excuses nothing here.
    others = accepted(("BBB", SESSIONS[5]), ("AAA", SESSIONS[4]))
    assert len(quarantined(validate(frame, NO_ACTIONS, calendar, accepted=others))) == 2


def test_an_accepted_bar_refused_by_another_rule_excuses_nothing_after_it(calendar: TradingCalendar) -> None:
    # The accepted bar is re-delivered broken (high below low): the next bar's -94 % tick is not
    # excused by an acceptance that was only for the accepted bar's own move.
    closes = [*CLOSES[:6], CLOSES[6] * 0.06, *CLOSES[7:]]
    frame = with_row(bars(closes), 5, high=1.0, low=200.0)
    result = validate(frame, NO_ACTIONS, calendar, accepted=accepted(("AAA", SESSIONS[5])))
    assert quarantined(result) == [(SESSIONS[5], "ohlc_inconsistent"), (SESSIONS[6], "outlier")]


def test_an_accepted_one_day_move_that_looks_like_a_spike_is_kept(calendar: TradingCalendar) -> None:
    closes = CLOSES.copy()
    closes[5] = 160.0  # +57 % in, -37 % out: a spike shape, but a real (squeezed) day
    frame = bars(closes)
    assert quarantined(validate(frame, NO_ACTIONS, calendar)) == [(SESSIONS[5], "outlier")]

    result = validate(frame, NO_ACTIONS, calendar, accepted=accepted(("AAA", SESSIONS[5])))
    # The day itself is accepted; the fall back out of it is a move of its own, beyond 30 % too.
    assert quarantined(result) == [(SESSIONS[6], "outlier")]
    both = accepted(("AAA", SESSIONS[5]), ("AAA", SESSIONS[6]))
    assert validate(frame, NO_ACTIONS, calendar, accepted=both).quarantined.is_empty()


def test_returns_run_across_gaps_and_symbols_are_separate(calendar: TradingCalendar) -> None:
    days = SESSIONS[:3] + SESSIONS[6:]
    closes = CLOSES[:3] + [c * 2 for c in CLOSES[6:]]
    other = bars([c * 10 for c in CLOSES], symbol="BBB")  # a different price level is no jump
    frame = pl.concat([other, bars(closes, days=days)])
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(SESSIONS[6], "outlier")]
    assert result.gaps.rows() == [
        *(("AAA", day, "no bar for this session") for day in SESSIONS[3:6]),
        ("AAA", SESSIONS[6], "bar quarantined (outlier)"),
    ]


def test_longer_spikes_when_configured(calendar: TradingCalendar) -> None:
    closes = CLOSES.copy()
    closes[4], closes[5] = 510.0, 505.0  # a two-day bad excursion
    frame = bars(closes)

    one_day = validate(frame, NO_ACTIONS, calendar)
    # Read as two jumps, the way back wrongly quarantines a clean bar: the default knows no better.
    assert quarantined(one_day) == [(SESSIONS[4], "outlier"), (SESSIONS[6], "outlier")]

    two_days = validate(frame, NO_ACTIONS, calendar, config=GateConfig(max_spike_days=2))
    assert quarantined(two_days) == [(SESSIONS[4], "outlier"), (SESSIONS[5], "outlier")]
    assert all("2-day spike" in reason for reason in two_days.quarantined.get_column("reason"))


def test_gaps_follow_the_listing_dates(calendar: TradingCalendar) -> None:
    frame = pl.concat([bars(CLOSES[2:7], days=SESSIONS[2:7]), bars(symbol="BBB"), bars(symbol="CCC")])
    listings = pl.DataFrame(
        [
            ("AAA", date(2023, 1, 1), None, True, "tech"),  # listed before the data starts
            ("BBB", date(2024, 1, 3), date(2024, 1, 12), True, "tech"),
            ("ZZZ", date(2020, 1, 1), None, True, "tech"),  # no bars: not checked
        ],
        schema=LISTING_SCHEMA,
        orient="row",
    )
    result = validate(frame, NO_ACTIONS, calendar, listings=listings)

    # AAA: from the first date of the data to the last; BBB and CCC have all their sessions.
    assert result.gaps.rows() == [
        ("AAA", SESSIONS[0], "no bar for this session"),
        ("AAA", SESSIONS[1], "no bar for this session"),
        ("AAA", SESSIONS[7], "no bar for this session"),
        ("AAA", SESSIONS[8], "no bar for this session"),
        ("AAA", SESSIONS[9], "no bar for this session"),
    ]
    assert validate(frame, NO_ACTIONS, calendar).gaps.is_empty()  # without listings: own range


def test_payload_keeps_the_row(calendar: TradingCalendar) -> None:
    frame = with_row(bars(), 3, volume=-5.0)
    payload = json.loads(validate(frame, NO_ACTIONS, calendar).quarantined.item(0, "payload"))
    assert payload == {**frame.row(3, named=True), "date": "2024-01-05"}


def test_nothing_is_silently_dropped(calendar: TradingCalendar) -> None:
    base = pl.concat([bars(), bars([c * 3 for c in CLOSES], symbol="BBB")])
    rows = base.rows(named=True)
    rows[1]["close"] = None
    rows[2]["low"] = -1.0
    rows[4]["volume"] = -1.0
    rows[6]["high"] = 1.0
    rows[12]["close"] = rows[12]["high"] = 9999.0
    rows[15]["date"] = date(2024, 1, 15)
    frame = pl.DataFrame(
        [*rows, rows[17], {**rows[18], "close": rows[18]["close"] * 1.001}, {**rows[0], "symbol": None}],
        schema=ADJ_BAR_SCHEMA,
    )
    result = validate(frame, NO_ACTIONS, calendar)

    assert_accounted_for(frame, result)
    assert result.counts() == {
        "missing_value": 2,
        "non_positive_price": 1,
        "negative_volume": 1,
        "ohlc_inconsistent": 1,
        "outlier": 1,
        "not_a_session": 1,
        "duplicate": 1,
        "conflicting_duplicate": 2,
    }


def test_empty_input(calendar: TradingCalendar) -> None:
    result = validate(pl.DataFrame(schema=ADJ_BAR_SCHEMA), NO_ACTIONS, calendar)
    assert result.clean.is_empty()
    assert result.quarantined.is_empty()
    assert result.gaps.is_empty()


def test_gate_config_is_checked() -> None:
    with pytest.raises(ValueError, match="outlier_threshold"):
        GateConfig(outlier_threshold=0.0)
    with pytest.raises(ValueError, match="max_spike_days"):
        GateConfig(max_spike_days=0)


def test_input_order_does_not_change_the_verdict(calendar: TradingCalendar) -> None:
    """Sorted input skips the gate's sort; shuffled input must give the same clean rows and refusals."""
    rows = pl.concat([bars(), bars([c * 3 for c in CLOSES], symbol="BBB")]).rows(named=True)
    rows[2]["low"] = -1.0
    rows[12]["close"] = rows[12]["high"] = 9999.0  # a spike
    frame = pl.DataFrame(
        [*rows, rows[17], {**rows[5], "close": rows[5]["close"] * 1.001}], schema=ADJ_BAR_SCHEMA
    )
    in_order = frame.sort("symbol", "date", maintain_order=True)

    expected = validate(in_order, NO_ACTIONS, calendar)
    assert expected.counts() == {
        "non_positive_price": 1,
        "outlier": 1,
        "duplicate": 1,
        "conflicting_duplicate": 2,
    }
    for seed in range(5):
        result = validate(frame.sample(fraction=1.0, shuffle=True, seed=seed), NO_ACTIONS, calendar)
        assert result.clean.equals(expected.clean)
        assert key_rules(result) == key_rules(expected)
        assert result.gaps.equals(expected.gaps)


def key_rules(result: GateResult) -> list[tuple[object, ...]]:
    return sorted(result.quarantined.select("symbol", "date", "rule").iter_rows())


_SYMBOLS = st.sampled_from(["AAA", "BBB", "CCC"])
#: A day's move, or a spike: ``days`` bars at ``1 + size`` times the level, then back to the level.
_STEPS = st.one_of(
    st.tuples(st.just("move"), _SYMBOLS, st.floats(-0.6, 1.5), st.just(0)),
    st.tuples(st.just("spike"), _SYMBOLS, st.sampled_from([0.5, -0.45, 1.2, 0.31, -0.29]), st.integers(1, 5)),
)


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(_STEPS, min_size=1, max_size=80),
    action_at=st.lists(st.tuples(st.integers(0, 500), st.integers(0, 1)), max_size=6),
    threshold=st.sampled_from([0.1, 0.2, 0.3, 0.5]),
    max_spike_days=st.integers(1, 4),
)
def test_outliers_found_around_large_returns_match_a_scan_of_every_bar(
    steps: list[tuple[str, str, float, int]],
    action_at: list[tuple[int, int]],
    threshold: float,
    max_spike_days: int,
) -> None:
    # The gate runs the spike and jump rules only on the bars around large returns; run on every
    # bar they must flag the same rows for the same reasons. Spikes of one to five days, moves near
    # the threshold, small moves that add up to large returns across the bars left out, and
    # corporate actions on bar dates and between them (bars are two days apart).
    from trader.data.quality import _near_large_returns, _outliers_among

    levels: dict[str, float] = {}
    rows: list[tuple[int, str, date, float]] = []

    def bar(symbol: str, close: float) -> None:
        rows.append((len(rows), symbol, date(2000, 1, 1) + timedelta(days=2 * len(rows)), close))

    for kind, symbol, size, days in steps:
        level = levels.get(symbol, 100.0)
        if kind == "move":
            levels[symbol] = level * (1 + size)
            bar(symbol, levels[symbol])
        else:
            for _ in range(days):
                bar(symbol, level * (1 + size))
            bar(symbol, level)
    survivors = pl.DataFrame(
        rows,
        schema={"__row": pl.UInt32, "symbol": pl.String, "date": pl.Date, "close": pl.Float64},
        orient="row",
    ).sort("symbol", "date")
    actions = pl.DataFrame(
        [
            (
                survivors.item(i % survivors.height, "symbol"),
                survivors.item(i % survivors.height, "date") + timedelta(days=offset),
                2.0,
                0.0,
                "test",
            )
            for i, offset in action_at
        ],
        schema=ACTION_SCHEMA,
        orient="row",
    )
    config = GateConfig(outlier_threshold=threshold, max_spike_days=max_spike_days)
    every_bar = survivors.with_columns(
        group=(pl.col("symbol") != pl.col("symbol").shift(1)).fill_null(True).cum_sum()
    )

    events = action_dates(actions)
    near = _outliers_among(_near_large_returns(survivors, config), events, config).sort("__row")
    full = _outliers_among(every_bar, events, config).sort("__row")

    assert near.to_dicts() == full.to_dicts()


# --- real market history ----------------------------------------------------------------------------


def weekdays(first: date, last: date) -> list[date]:
    return [
        first + timedelta(days=n)
        for n in range((last - first).days + 1)
        if (first + timedelta(n)).weekday() < 5
    ]


@pytest.mark.parametrize(
    ("first", "last", "closed"),
    [
        (date(2012, 10, 25), date(2012, 11, 2), [date(2012, 10, 29), date(2012, 10, 30)]),  # Sandy
        (date(2018, 12, 3), date(2018, 12, 7), [date(2018, 12, 5)]),  # G.H.W. Bush's funeral
        (date(2025, 1, 6), date(2025, 1, 10), [date(2025, 1, 9)]),  # Carter's day of mourning
        (date(2022, 6, 16), date(2022, 6, 22), [date(2022, 6, 20)]),  # Juneteenth, first observed
        (date(2021, 6, 17), date(2021, 6, 22), []),  # Juneteenth 2021: the NYSE still traded
        (date(2024, 3, 27), date(2024, 4, 2), [date(2024, 3, 29)]),  # Good Friday
        (date(2024, 11, 26), date(2024, 12, 3), [date(2024, 11, 28)]),  # Thanksgiving; the 29th a half day
    ],
)
def test_real_closures_are_not_gaps_and_a_bar_on_one_is_not_a_session(
    calendar: TradingCalendar, first: date, last: date, closed: list[date]
) -> None:
    traded = [day for day in weekdays(first, last) if day not in closed]
    result = validate(bars([100.0] * len(traded), days=traded), NO_ACTIONS, calendar)
    assert result.quarantined.is_empty()
    assert result.gaps.is_empty()

    every_weekday = weekdays(first, last)
    result = validate(bars([100.0] * len(every_weekday), days=every_weekday), NO_ACTIONS, calendar)
    assert quarantined(result) == [(day, "not_a_session") for day in closed]
    assert result.gaps.is_empty()


def test_a_real_move_beyond_the_threshold_is_quarantined_with_its_numbers(calendar: TradingCalendar) -> None:
    # NFLX fell 35.1 % on 2022-04-20 (earnings, no corporate action): the gate cannot tell news from
    # a bad tick, so the bar is quarantined, with a reason that says why; the bars after it stay clean.
    days = [date(2022, 4, 18), date(2022, 4, 19), date(2022, 4, 20), date(2022, 4, 21), date(2022, 4, 22)]
    frame = bars([338.43, 348.61, 226.19, 218.22, 215.52], symbol="NFLX", days=days)
    result = validate(frame, NO_ACTIONS, calendar)

    assert quarantined(result) == [(date(2022, 4, 20), "outlier")]
    assert result.quarantined.item(0, "reason") == (
        "close-to-close return -35.1% with no corporate action "
        "(close 348.61 on 2022-04-19, 226.19 on 2022-04-20)"
    )
    assert result.gaps.rows() == [("NFLX", date(2022, 4, 20), "bar quarantined (outlier)")]
    # A wider threshold accepts it.
    assert validate(
        frame, NO_ACTIONS, calendar, config=GateConfig(outlier_threshold=0.4)
    ).quarantined.is_empty()


def test_real_corporate_actions_leave_no_outlier_after_adjustment(calendar: TradingCalendar) -> None:
    # AAPL 4-for-1 (2020-08-31), GE 1-for-8 (2021-08-02, approximate closes), a $35 special dividend
    # on a $50 stock: raw moves of -74 %, +703 % and -69 %, none left after adjustment.
    raw = pl.concat(
        [
            bars(
                [500.04, 499.23, 129.04, 134.18],
                symbol="AAPL",
                days=weekdays(date(2020, 8, 27), date(2020, 9, 1)),
            ),
            bars(
                [13.0, 12.94, 103.92, 104.5], symbol="GE", days=weekdays(date(2021, 7, 29), date(2021, 8, 3))
            ),
            bars(
                [49.5, 50.0, 15.5, 15.6], symbol="BIG", days=weekdays(date(2023, 12, 26), date(2023, 12, 29))
            ),
        ]
    ).drop("factor")
    actions = pl.DataFrame(
        [
            ("AAPL", date(2020, 8, 31), 4.0, 0.0, "test"),
            ("GE", date(2021, 8, 2), 0.125, 0.0, "test"),
            ("BIG", date(2023, 12, 28), 1.0, 35.0, "test"),
        ],
        schema=ACTION_SCHEMA,
        orient="row",
    )
    adjusted = adjust(raw, actions)
    result = validate(adjusted, actions, calendar)

    assert result.quarantined.is_empty()
    assert result.gaps.is_empty()
    returns = adjusted.select(
        (pl.col("close") / pl.col("close").shift(1) - 1).over("symbol").abs().max()
    ).item()
    assert returns < 0.05


def test_a_halt_leaves_gaps_and_an_ipo_does_not(calendar: TradingCalendar) -> None:
    # HALT stops after 2024-03-12 and resumes on 2024-03-18; NEWCO lists on 2024-03-14.
    halted = [date(2024, 3, day) for day in (11, 12, 18, 19)]
    listed = [date(2024, 3, day) for day in (14, 15, 18, 19)]
    frame = pl.concat(
        [
            bars([20.0, 20.2, 16.5, 16.4], symbol="HALT", days=halted),
            bars([50.0] * 4, symbol="NEWCO", days=listed),
        ]
    )
    result = validate(frame, NO_ACTIONS, calendar)

    assert result.quarantined.is_empty()  # -18 % on resumption is within the threshold
    assert result.gaps.rows() == [
        ("HALT", date(2024, 3, day), "no bar for this session") for day in (13, 14, 15)
    ]
