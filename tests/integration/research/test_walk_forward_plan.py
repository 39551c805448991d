"""Walk-forward windows over an exchange calendar, and the summary over windows (no Qlib, no training)."""

from __future__ import annotations

import itertools
import math
from datetime import date
from pathlib import Path

import pytest

from trader.data.calendar import trading_calendar
from trader.research.walk_forward import (
    WINDOW_METRICS,
    WalkForwardError,
    WalkForwardSpec,
    Window,
    WindowResult,
    plan_windows,
    shift_months,
    summarize,
)
from trader.strategies.config import DateRange, Segments


def xnys(start: date, end: date) -> list[date]:
    return list(trading_calendar().sessions(start, end).to_list())


#: The research test market's sessions and the demo market's.
RESEARCH = xnys(date(2021, 1, 4), date(2023, 12, 29))
DEMO = xnys(date(2019, 1, 2), date(2024, 12, 31))


def between(sessions: list[date], earlier: date, later: date) -> int:
    """Sessions strictly between two dates."""
    return sum(1 for d in sessions if earlier < d < later)


def test_shift_months_clips_the_day_to_the_month() -> None:
    assert shift_months(date(2024, 3, 31), -1) == date(2024, 2, 29)
    assert shift_months(date(2023, 3, 31), -1) == date(2023, 2, 28)
    assert shift_months(date(2024, 1, 15), -13) == date(2022, 12, 15)
    assert shift_months(date(2023, 11, 30), 3) == date(2024, 2, 29)
    assert shift_months(date(2024, 5, 1), 0) == date(2024, 5, 1)


def test_quarterly_windows_on_the_research_market_have_known_segments() -> None:
    spec = WalkForwardSpec(
        train_years=1, valid_months=3, test_months=3, step_months=3, start=date(2022, 1, 3)
    )
    windows = plan_windows(RESEARCH, spec, label_horizon=2)
    # Laid back from 2023-12-29: tests [2023-09-30, 2023-12-30) and [2023-06-30, 2023-09-30); the next
    # one back would train from 2021-12-30, a session before --start.
    assert [w.index for w in windows] == [1, 2]
    assert windows[1].segments == Segments(
        train=DateRange(start=date(2022, 6, 30), end=date(2023, 6, 27)),
        valid=DateRange(start=date(2023, 6, 30), end=date(2023, 9, 27)),
        test=DateRange(start=date(2023, 10, 2), end=date(2023, 12, 29)),
        label_horizon=2,
    )
    assert windows[0].segments.test == DateRange(start=date(2023, 6, 30), end=date(2023, 9, 29))
    assert windows[0].segments.train.start == date(2022, 3, 30)


def test_default_windows_tile_the_demo_market_with_label_gaps() -> None:
    windows = plan_windows(DEMO, WalkForwardSpec(), label_horizon=2)
    # 6 years, 3-year windows every 6 months: 7 windows. The oldest trains from 2019-01-01, a holiday,
    # so it starts on the first session (2019-01-02) and still counts as complete.
    assert len(windows) == 7
    assert windows[0].segments.train.start == date(2019, 1, 2)
    assert windows[-1].segments.test.end == DEMO[-1]
    for window in windows:
        seg = window.segments
        assert between(DEMO, seg.train.end, seg.valid.start) == 2
        assert between(DEMO, seg.valid.end, seg.test.start) == 2
        assert 495 <= sum(1 for d in DEMO if seg.train.start <= d <= seg.train.end) <= 505  # ~2 years
    for earlier, later in itertools.pairwise(windows):
        # Consecutive test segments meet: no overlap, no session left out.
        assert between(DEMO, earlier.segments.test.end, later.segments.test.start) == 0
        assert earlier.segments.test.end < later.segments.test.start


def test_expanding_windows_train_from_the_first_session_and_test_like_rolling_ones() -> None:
    rolling = plan_windows(DEMO, WalkForwardSpec(), label_horizon=2)
    expanding = plan_windows(DEMO, WalkForwardSpec(expanding=True), label_horizon=2)
    # The same windows (the shortest training decides which fit), the same validation and test.
    assert len(expanding) == len(rolling) == 7
    for grown, rolled in zip(expanding, rolling, strict=True):
        assert grown.segments.train.start == DEMO[0]
        assert grown.segments.train.end == rolled.segments.train.end
        assert (grown.segments.valid, grown.segments.test) == (rolled.segments.valid, rolled.segments.test)
    # Here the oldest rolling window already trains from the first session, so it is the same.
    assert expanding[0].segments == rolling[0].segments
    assert expanding[-1].segments.train.end == date(2023, 12, 27)
    assert WalkForwardSpec(expanding=True).as_dict()["expanding"] is True


def test_a_window_reaching_a_missing_session_is_dropped() -> None:
    # Without 2019-01-02 the oldest window would need a session the data lacks.
    windows = plan_windows(DEMO[1:], WalkForwardSpec(), label_horizon=2)
    assert len(windows) == 6
    assert windows[0].segments.train.start == date(2019, 7, 1)


def test_a_longer_label_horizon_widens_the_gaps() -> None:
    spec = WalkForwardSpec(train_years=1, valid_months=3, test_months=3, step_months=3)
    for window in plan_windows(RESEARCH, spec, label_horizon=5):
        seg = window.segments
        assert seg.label_horizon == 5
        assert between(RESEARCH, seg.train.end, seg.valid.start) == 5
        assert between(RESEARCH, seg.valid.end, seg.test.start) == 5


def test_a_step_longer_than_the_test_leaves_gaps_and_end_bounds_the_last_test() -> None:
    spec = WalkForwardSpec(train_years=1, valid_months=3, test_months=2, step_months=4, end=date(2023, 6, 30))
    windows = plan_windows(RESEARCH, spec, label_horizon=2)
    assert windows[-1].segments.test == DateRange(start=date(2023, 5, 1), end=date(2023, 6, 30))
    for earlier, later in itertools.pairwise(windows):
        assert between(RESEARCH, earlier.segments.test.end, later.segments.test.start) > 30  # ~2 months


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (WalkForwardSpec(train_years=0), "--train-years must be at least 1"),
        (WalkForwardSpec(valid_months=0), "--valid-months must be at least 1"),
        (
            WalkForwardSpec(test_months=6, step_months=3),
            "--step-months (3) is shorter than --test-months (6)",
        ),
        (
            WalkForwardSpec(start=date(2023, 1, 1), end=date(2022, 1, 1)),
            "--start (2023-01-01) must be before",
        ),
        (WalkForwardSpec(), "a window needs 2 year(s) of training + 6 month(s) of validation + 6 month(s)"),
        (WalkForwardSpec(start=date(2030, 1, 1)), "no session of the export lies in --start 2030-01-01"),
    ],
)
def test_settings_that_cannot_work_are_refused_naming_the_option(spec: WalkForwardSpec, message: str) -> None:
    with pytest.raises(WalkForwardError) as raised:
        plan_windows(RESEARCH, spec, label_horizon=2)
    assert message in str(raised.value)
    assert raised.value.exit_code == 2


def result(index: int, ic: float, sharpe: float) -> WindowResult:
    metrics = dict.fromkeys(WINDOW_METRICS, 0.1)
    metrics.update(ic=ic, sharpe=sharpe)
    segments = Segments(
        train=DateRange(start=date(2021, 1, 4), end=date(2021, 12, 27)),
        valid=DateRange(start=date(2021, 12, 30), end=date(2022, 3, 28)),
        test=DateRange(start=date(2022, 3, 31), end=date(2022, 6, 29)),
    )
    return WindowResult(Window(index, segments), "v", "run", Path("a"), Path("b"), 60, metrics)


def test_summary_is_mean_and_std_over_windows_and_the_share_of_positive_ic() -> None:
    windows = [result(1, 0.10, 1.0), result(2, -0.04, 2.0), result(3, math.nan, 6.0)]
    summary = summarize(windows)
    assert summary["windows"] == 3
    assert summary["ic.mean"] == pytest.approx(0.03)  # NaN windows are left out of the mean
    assert summary["ic.std"] == pytest.approx(math.sqrt(2 * 0.07**2))  # sample std of 0.10 and -0.04
    assert summary["sharpe.mean"] == pytest.approx(3.0)
    assert summary["sharpe.std"] == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2))
    assert summary["ic_positive_share"] == pytest.approx(1 / 3)  # a window without IC is not positive
    single = summarize([result(1, 0.2, 1.0)])
    assert single["ic.mean"] == pytest.approx(0.2) and math.isnan(single["ic.std"])
