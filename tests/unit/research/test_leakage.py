"""The leakage and validity checks on hand-made cases (no Qlib): segments, labels, look-ahead
references, point-in-time universe, and the report's JSON form."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import polars as pl
import pytest

from trader.data.calendar import trading_calendar
from trader.research.leakage import (
    FEATURES_CHECK,
    LABELS_CHECK,
    SEGMENTS_CHECK,
    UNIVERSE_CHECK,
    CheckReport,
    CheckResult,
    LeakageCheckError,
    future_references,
    label_horizon,
    labels_not_in_features,
    read_calendar,
    read_instruments,
    segments_disjoint_with_gap,
    universe_is_point_in_time,
)
from trader.strategies.config import DateRange, Segments

SESSIONS = trading_calendar().sessions(date(2022, 1, 3), date(2022, 12, 30)).to_list()
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


def seg(
    train: tuple[date, date], valid: tuple[date, date], test: tuple[date, date], horizon: int = 2
) -> Segments:
    # model_construct: the checks must judge segments that Segments' own validation never saw
    # (walk-forward windows, hand-edited files).
    return Segments.model_construct(
        train=DateRange(start=train[0], end=train[1]),
        valid=DateRange(start=valid[0], end=valid[1]),
        test=DateRange(start=test[0], end=test[1]),
        label_horizon=horizon,
    )


def nth(day: date, n: int) -> date:
    """The session ``n`` sessions after ``day`` (a session) in SESSIONS."""
    return SESSIONS[SESSIONS.index(day) + n]


# --------------------------------------------------------------------------------------------------
# Segments
# --------------------------------------------------------------------------------------------------

TRAIN_END = date(2022, 5, 31)  # a Tuesday session
VALID_END = date(2022, 8, 31)


def test_segments_with_exactly_the_horizon_between_them_pass() -> None:
    valid_start, test_start = nth(TRAIN_END, 3), nth(VALID_END, 3)  # 2 free sessions in between
    result = segments_disjoint_with_gap(
        seg((date(2022, 1, 3), TRAIN_END), (valid_start, VALID_END), (test_start, date(2022, 12, 30))),
        SESSIONS,
    )
    assert result == CheckResult(SEGMENTS_CHECK, True, result.detail)
    assert "at least 2 session(s) apart" in result.detail


def test_a_gap_one_session_short_fails_and_says_where_to_start() -> None:
    valid_start = nth(TRAIN_END, 2)  # only 1 session between train's end and valid's start
    result = segments_disjoint_with_gap(
        seg((date(2022, 1, 3), TRAIN_END), (valid_start, VALID_END), (nth(VALID_END, 3), date(2022, 12, 30))),
        SESSIONS,
    )
    assert not result.passed
    assert f"only 1 session(s) between train end {TRAIN_END} and valid start {valid_start}" in result.detail
    assert f"valid must start on or after {nth(TRAIN_END, 3)}" in result.detail
    assert "test" not in result.detail.split(";")[0]


def test_the_gap_counts_sessions_not_calendar_days() -> None:
    # Friday 2022-06-17 to Wednesday 2022-06-22: Saturday, Sunday and Juneteenth (observed Monday
    # 2022-06-20) are not sessions, so only Tuesday lies in between despite 4 calendar days.
    result = segments_disjoint_with_gap(
        seg(
            (date(2022, 1, 3), date(2022, 6, 17)),
            (date(2022, 6, 22), VALID_END),
            (nth(VALID_END, 3), date(2022, 12, 30)),
        ),
        SESSIONS,
    )
    assert not result.passed
    assert "only 1 session(s) between train end 2022-06-17 and valid start 2022-06-22" in result.detail


def test_a_longer_label_horizon_needs_a_longer_gap() -> None:
    segments = seg(
        (date(2022, 1, 3), TRAIN_END),
        (nth(TRAIN_END, 3), VALID_END),
        (nth(VALID_END, 6), date(2022, 12, 30)),
        5,
    )
    result = segments_disjoint_with_gap(segments, SESSIONS)
    assert not result.passed
    assert "only 2 session(s) between train end" in result.detail
    assert "only 5 session(s)" not in result.detail  # valid -> test has exactly 5: fine


def test_overlapping_segments_fail() -> None:
    result = segments_disjoint_with_gap(
        seg(
            (date(2022, 1, 3), date(2022, 6, 30)),
            (date(2022, 6, 1), VALID_END),
            (nth(VALID_END, 3), date(2022, 12, 30)),
        ),
        SESSIONS,
    )
    assert not result.passed
    assert "train 2022-01-03..2022-06-30 and valid 2022-06-01..2022-08-31 overlap" in result.detail


def test_test_before_train_fails_as_overlap_or_order() -> None:
    result = segments_disjoint_with_gap(
        seg(
            (date(2022, 6, 1), date(2022, 8, 1)),
            (date(2022, 8, 10), date(2022, 9, 30)),
            (date(2022, 1, 3), date(2022, 3, 1)),
        ),
        SESSIONS,
    )
    assert not result.passed
    assert "test 2022-01-03..2022-03-01 comes before valid" in result.detail


def test_a_segment_without_sessions_fails() -> None:
    weekend = (date(2022, 12, 24), date(2022, 12, 25))
    result = segments_disjoint_with_gap(
        seg((date(2022, 1, 3), TRAIN_END), (nth(TRAIN_END, 3), VALID_END), weekend), SESSIONS
    )
    assert not result.passed
    assert "test 2022-12-24..2022-12-25 holds no session" in result.detail


def test_the_shipped_strategy_segments_pass_on_the_exchange_calendar() -> None:
    from trader.strategies.config import load_strategy_config

    config = load_strategy_config("alpha_baseline")
    sessions = trading_calendar().sessions(date(2018, 1, 2), date(2025, 12, 31)).to_list()
    assert segments_disjoint_with_gap(config.segments, sessions).passed


def test_segments_need_a_calendar() -> None:
    with pytest.raises(LeakageCheckError, match="calendar_sessions is empty"):
        segments_disjoint_with_gap(
            seg(
                (date(2022, 1, 3), TRAIN_END),
                (nth(TRAIN_END, 3), VALID_END),
                (nth(VALID_END, 3), date(2022, 12, 30)),
            ),
            [],
        )


# --------------------------------------------------------------------------------------------------
# Labels and look-ahead references
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("Ref($close, -1)/$close", ["Ref($close, -1)"]),
        ("Mean(Ref($close , -3), 5) / $open", ["Ref($close, -3)"]),
        ("Ref(Ref($volume, 2), -4)", ["Ref(Ref($volume, 2), -4)"]),
        ("Ref($close, -1.0)", ["Ref($close, -1.0)"]),
        # Qlib evaluates the offset as Python: constant arithmetic reads tomorrow all the same.
        ("Ref($close, 0-1)/$close", ["Ref($close, 0 - 1)"]),
        ("Ref($close, -2+1)/$close", ["Ref($close, -2 + 1)"]),
        ("Ref($close, 2*-1)", ["Ref($close, 2 * -1)"]),
        ("Ref($close, 3-1)", []),
        ("Ref($close, $volume)", ["Ref($close, $volume) (offset is not a constant)"]),
        ("Ref($close, 1)/$close - 1", []),
        ("Ref($close, 0)", []),
        ("($close-$open)/($high-$low+1e-12)", []),
        ("Corr($close, Log($volume+1), 10)", []),
    ],
)
def test_future_references_finds_negative_ref_offsets(expression: str, expected: list[str]) -> None:
    assert future_references(expression) == expected


def test_label_horizon_is_the_furthest_look_ahead_of_the_labels() -> None:
    assert label_horizon([LABEL]) == 2
    assert label_horizon(["Ref($close, -5)/Ref($close, -1) - 1", "Ref($close, 0-3)"]) == 5
    assert label_horizon(["$close"]) == 0
    with pytest.raises(LeakageCheckError, match="not a constant"):
        label_horizon(["Ref($close, -$volume)"])


def test_the_gap_follows_the_label_not_a_horizon_set_too_short() -> None:
    # One free session between segments: enough for a stated horizon of 1, not for the label,
    # whose value on train's last day reads the close of valid's first day.
    segments = seg(
        (date(2022, 1, 3), TRAIN_END),
        (nth(TRAIN_END, 2), VALID_END),
        (nth(VALID_END, 2), date(2022, 12, 30)),
        1,
    )
    assert segments_disjoint_with_gap(segments, SESSIONS).passed  # the stated horizon alone
    result = segments_disjoint_with_gap(segments, SESSIONS, [LABEL])
    assert not result.passed
    assert "only 1 session(s) between train end" in result.detail
    assert "the label looks 2 sessions ahead" in result.detail


def test_future_references_refuses_what_does_not_parse() -> None:
    with pytest.raises(LeakageCheckError, match="cannot parse"):
        future_references("Ref($close, -1")


def alpha158() -> tuple[list[str], list[str]]:
    from qlib.contrib.data.loader import Alpha158DL

    exprs, names = Alpha158DL.get_feature_config()
    return list(exprs), list(names)


def test_alpha158_has_no_label_and_no_future_reference() -> None:
    exprs, names = alpha158()
    result = labels_not_in_features(exprs, names, [LABEL], ["LABEL0"])
    assert result.passed, result.detail
    assert result.detail.startswith("158 features")


def test_the_planted_tomorrow_feature_is_refused_by_name() -> None:
    exprs, names = alpha158()
    result = labels_not_in_features(
        [*exprs, "Ref($close, -1) / $close"], [*names, "TOMORROW"], [LABEL], ["LABEL0"]
    )
    assert result.name == LABELS_CHECK
    assert not result.passed
    assert result.detail == "feature TOMORROW = Ref($close, -1) / $close reads the future: Ref($close, -1)"


def test_the_label_expression_among_features_is_refused_even_with_other_spacing() -> None:
    result = labels_not_in_features(
        ["$close/$open", "Ref($close,-2) / Ref($close,-1) - 1"], ["RATIO", "FWD"], [LABEL], ["LABEL0"]
    )
    assert not result.passed
    assert "feature FWD is the label LABEL0" in result.detail
    assert "feature FWD = " in result.detail  # and it also reads the future


def test_a_label_name_among_features_is_refused() -> None:
    result = labels_not_in_features(["$close/$open"], ["LABEL0"], [LABEL], ["LABEL0"])
    assert not result.passed
    assert result.detail == "the label name LABEL0 is also a feature name"


def test_mismatched_feature_lists_are_refused() -> None:
    with pytest.raises(LeakageCheckError, match=r"feature_exprs \(2\) and feature_names \(1\)"):
        labels_not_in_features(["$close", "$open"], ["CLOSE"], [LABEL], ["LABEL0"])


# --------------------------------------------------------------------------------------------------
# Point-in-time universe
# --------------------------------------------------------------------------------------------------

UNIVERSE = pl.DataFrame(
    {
        "symbol": ["AAA", "BBB", "CCC", "CCC", "IDX"],
        "start_date": [
            date(2022, 1, 3),
            date(2022, 3, 1),
            date(2022, 1, 3),
            date(2022, 9, 1),
            date(2022, 1, 3),
        ],
        "end_date": [None, date(2022, 6, 30), date(2022, 4, 29), None, None],
        "tradable": [True, True, True, True, False],
        "sector": [None] * 5,
    },
    schema={
        "symbol": pl.String,
        "start_date": pl.Date,
        "end_date": pl.Date,
        "tradable": pl.Boolean,
        "sector": pl.String,
    },
)


def scores(rows: list[tuple[date, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {"date": [d for d, _ in rows], "symbol": [s for _, s in rows], "score": [0.1] * len(rows)},
        schema={"date": pl.Date, "symbol": pl.String, "score": pl.Float64},
    )


INSIDE = [
    (date(2022, 1, 3), "AAA"),
    (date(2022, 12, 30), "AAA"),  # open end: still listed
    (date(2022, 3, 1), "BBB"),
    (date(2022, 6, 30), "BBB"),  # the last day of a listing is inside
    (date(2022, 4, 29), "CCC"),
    (date(2022, 9, 1), "CCC"),  # listed again
]


def test_scores_inside_the_listings_pass() -> None:
    result = universe_is_point_in_time(scores(INSIDE), UNIVERSE)
    assert result == CheckResult(UNIVERSE_CHECK, True, "6 scored (date, symbol) pairs inside the listings")


def test_scores_before_listing_after_delisting_between_listings_or_unlisted_fail() -> None:
    outside = [
        (date(2022, 2, 28), "BBB"),  # before its IPO
        (date(2022, 7, 1), "BBB"),  # after its delisting
        (date(2022, 6, 1), "CCC"),  # between its two listings
        (date(2022, 6, 1), "ZZZ"),  # never listed
        (date(2022, 6, 1), "IDX"),  # listed but not tradable (an index)
    ]
    result = universe_is_point_in_time(scores(INSIDE + outside), UNIVERSE)
    assert not result.passed
    assert result.detail.startswith(
        "5 of 11 scored (date, symbol) pairs lie outside the symbol's listings (4 symbol(s))"
    )
    assert "BBB 2022-02-28" in result.detail and "ZZZ 2022-06-01" in result.detail


def test_pandas_predictions_with_qlibs_index_are_read() -> None:
    index = pd.MultiIndex.from_tuples(
        [(pd.Timestamp("2022-07-01"), "BBB"), (pd.Timestamp("2022-07-01"), "AAA")],
        names=["datetime", "instrument"],
    )
    result = universe_is_point_in_time(pd.DataFrame({"score": [0.5, 0.2]}, index=index), UNIVERSE)
    assert not result.passed
    assert "1 of 2 scored" in result.detail and "BBB 2022-07-01" in result.detail


def test_instrument_ranges_must_lie_inside_the_listings() -> None:
    instruments = pl.DataFrame(
        {
            "symbol": ["AAA", "BBB", "CCC", "CCC"],
            "start": [date(2022, 1, 3), date(2022, 3, 1), date(2022, 1, 3), date(2022, 8, 1)],
            "end": [date(2022, 12, 30), date(2022, 7, 29), date(2022, 4, 29), date(2022, 12, 30)],
        }
    )
    result = universe_is_point_in_time(scores(INSIDE), UNIVERSE, instruments)
    assert not result.passed
    assert (
        "2 instrument range(s) of the export lie outside the listings: "
        "BBB 2022-03-01..2022-07-29, CCC 2022-08-01..2022-12-30" in result.detail
    )
    good = instruments.filter(pl.col("symbol") != "BBB").with_columns(
        pl.when(pl.col("start") == date(2022, 8, 1))
        .then(date(2022, 9, 1))
        .otherwise(pl.col("start"))
        .alias("start")
    )
    assert universe_is_point_in_time(scores(INSIDE), UNIVERSE, good).passed


def test_predictions_without_a_symbol_column_are_refused() -> None:
    with pytest.raises(LeakageCheckError, match="predictions lack the column"):
        universe_is_point_in_time(pl.DataFrame({"date": [date(2022, 1, 3)]}), UNIVERSE)


# --------------------------------------------------------------------------------------------------
# Export readers and the report
# --------------------------------------------------------------------------------------------------


def test_read_calendar_and_instruments_of_an_export(tmp_path: Path) -> None:
    (tmp_path / "calendars").mkdir()
    (tmp_path / "instruments").mkdir()
    (tmp_path / "calendars" / "day.txt").write_text("2022-01-03\n2022-01-04\n")
    (tmp_path / "calendars" / "day_future.txt").write_text("2022-01-03\n2022-01-04\n2022-01-05\n")
    (tmp_path / "instruments" / "all.txt").write_text("AAA\t2022-01-03\t2022-01-04\n")
    assert read_calendar(tmp_path) == [date(2022, 1, 3), date(2022, 1, 4)]
    assert read_calendar(tmp_path, future=True)[-1] == date(2022, 1, 5)
    assert read_instruments(tmp_path).rows() == [("AAA", date(2022, 1, 3), date(2022, 1, 4))]
    with pytest.raises(LeakageCheckError, match="no Qlib export"):
        read_calendar(tmp_path / "missing")


def test_a_report_passes_only_when_every_check_passed_and_there_is_one() -> None:
    ok = CheckResult(SEGMENTS_CHECK, True, "fine")
    bad = CheckResult(FEATURES_CHECK, False, "TOMORROW reads the future")
    assert CheckReport((ok,)).passed
    assert not CheckReport((ok, bad)).passed
    assert not CheckReport(()).passed  # nothing checked is not a pass
    assert CheckReport((ok, bad)).summary() == "1/2 checks passed; failed: features_point_in_time"


def test_a_report_round_trips_through_json_and_a_file(tmp_path: Path) -> None:
    report = CheckReport(
        (CheckResult(SEGMENTS_CHECK, True, "fine"), CheckResult(FEATURES_CHECK, False, "leak")),
        created_at=pd.Timestamp("2024-01-02T03:04:05Z").to_pydatetime(),
    )
    data = json.loads(report.to_json())
    assert data["passed"] is False
    assert data["checks"][1] == {"name": FEATURES_CHECK, "passed": False, "detail": "leak"}
    assert CheckReport.from_dict(data) == report
    report.save(tmp_path / "checks.json")
    assert CheckReport.load(tmp_path / "checks.json") == report
    with pytest.raises(LeakageCheckError, match="not a check report"):
        CheckReport.from_dict({"checks": [{"name": "x"}]})


def test_the_calendar_facts_the_cases_rely_on() -> None:
    # SESSIONS is the 2022 XNYS calendar: Juneteenth observed on Monday 2022-06-20.
    assert date(2022, 6, 20) not in SESSIONS and date(2022, 6, 21) in SESSIONS
    assert TRAIN_END in SESSIONS and VALID_END in SESSIONS
    assert TRAIN_END + timedelta(days=1) in SESSIONS


def test_run_checks_fails_closed_when_a_check_cannot_run(tmp_path: Path) -> None:
    from trader.research.leakage import run_checks

    report = run_checks(
        segments=seg(
            (date(2022, 1, 3), TRAIN_END),
            (nth(TRAIN_END, 3), VALID_END),
            (nth(VALID_END, 3), date(2022, 12, 30)),
        ),
        feature_exprs=["$close/$open"],
        feature_names=["RATIO"],
        label_exprs=[LABEL],
        label_names=["LABEL0"],
        provider_uri=tmp_path / "no-export",
        predictions=scores(INSIDE),
        universe=UNIVERSE,
    )
    assert not report.passed
    assert [(r.name, r.passed) for r in report.results] == [
        (SEGMENTS_CHECK, False),
        (LABELS_CHECK, True),
        (FEATURES_CHECK, False),
        (UNIVERSE_CHECK, False),
    ]
    assert all(r.detail.startswith("could not run: LeakageCheckError: no Qlib export") for r in report.failed)
