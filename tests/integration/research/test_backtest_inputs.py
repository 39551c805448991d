"""The backtest's input handling without Qlib: costs, period, score validation, benchmark, publishing."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from trader.research import backtest as bt
from trader.strategies.config import Costs, DateRange

T = pd.Timestamp
CALENDAR = pd.DatetimeIndex(
    [T("2024-01-02"), T("2024-01-03"), T("2024-01-04"), T("2024-01-05"), T("2024-01-08")]
)
LISTINGS = {
    "AAA": [(T("2024-01-02"), T("2024-01-08"))],
    "BBB": [(T("2024-01-02"), T("2024-01-04"))],  # delisted on the 4th
    "CCC": [(T("2024-01-03"), T("2024-01-08"))],  # listed on the 3rd
}


def period(start: str = "2024-01-03", end: str = "2024-01-05") -> bt.Period:
    requested = DateRange(start=date.fromisoformat(start), end=date.fromisoformat(end))
    return bt.resolve_period(requested, CALENDAR, has_future=True)


def table(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "date": [date.fromisoformat(r[0]) for r in rows],
            "symbol": [r[1] for r in rows],
            "score": [r[2] for r in rows],
        },
        schema={"date": pl.Date, "symbol": pl.Utf8, "score": pl.Float64},
    )


def refusal(scores: pl.DataFrame | pd.DataFrame) -> str:
    with pytest.raises(bt.BacktestInputError) as caught:
        bt.prepare_scores(scores, listings=LISTINGS, calendar=CALENDAR, period=period())
    return str(caught.value)


# --- costs ----------------------------------------------------------------------------------------


def test_exchange_costs_fold_slippage_into_the_rates() -> None:
    costs = Costs(commission_bps=1.0, sell_fee_bps=0.5, min_commission=2.0, slippage_bps=4.0)
    assert bt.exchange_costs(costs) == pytest.approx(
        {"open_cost": 5e-4, "close_cost": 5.5e-4, "min_cost": 2.0}
    )


def test_scenarios_scale_the_base_costs() -> None:
    base = Costs(commission_bps=1.0, sell_fee_bps=0.5, min_commission=2.0, slippage_bps=4.0)
    scenarios = bt.scenario_costs(base)
    assert tuple(scenarios) == bt.SCENARIO_ORDER
    assert bt.exchange_costs(scenarios["no_cost"]) == {"open_cost": 0.0, "close_cost": 0.0, "min_cost": 0.0}
    assert scenarios["base"] == base
    assert scenarios["slippage_x3"].slippage_bps == 12.0 and scenarios["slippage_x3"].commission_bps == 1.0
    fees = scenarios["fees_x2"]
    assert (fees.commission_bps, fees.sell_fee_bps, fees.min_commission, fees.slippage_bps) == (
        2.0,
        1.0,
        4.0,
        4.0,
    )


# --- period ---------------------------------------------------------------------------------------


def test_period_inside_the_calendar() -> None:
    p = period()
    assert (p.start, p.end, p.signal_start, p.sessions, p.notes) == (
        T("2024-01-03"),
        T("2024-01-05"),
        T("2024-01-02"),
        3,
        (),
    )


def test_period_is_clipped_to_the_export_with_a_note() -> None:
    p = period("2023-12-01", "2024-12-31")
    assert (p.start, p.end, p.sessions) == (T("2024-01-02"), T("2024-01-08"), 5)
    assert p.signal_start == p.start  # no session before the first one
    assert "clipped" in p.notes[0]
    assert p.as_dict()["requested_end"] == "2024-12-31"


def test_period_ending_on_the_last_session_needs_the_future_calendar() -> None:
    requested = DateRange(start=date(2024, 1, 3), end=date(2024, 1, 8))
    assert bt.resolve_period(requested, CALENDAR, has_future=True).end == T("2024-01-08")
    without = bt.resolve_period(requested, CALENDAR, has_future=False)
    assert without.end == T("2024-01-05") and "day_future.txt" in without.notes[-1]
    with pytest.raises(bt.BacktestInputError, match="day_future"):
        bt.resolve_period(DateRange(start=date(2024, 1, 8), end=date(2024, 1, 8)), CALENDAR, has_future=False)


def test_period_without_sessions_is_refused() -> None:
    with pytest.raises(
        bt.BacktestInputError, match=r"segments.test \(2025-01-01 .. 2025-02-01\) has no session"
    ):
        bt.resolve_period(DateRange(start=date(2025, 1, 1), end=date(2025, 2, 1)), CALENDAR, has_future=True)


# --- scores ---------------------------------------------------------------------------------------


def test_scores_become_a_sorted_qlib_signal_and_drops_are_counted() -> None:
    scores = table(
        [
            ("2024-01-04", "AAA", 0.3),
            ("2024-01-02", "AAA", 0.1),  # the session before the period: decides the first trades
            ("2024-01-02", "BBB", float("nan")),  # NaN: dropped
            ("2024-01-08", "AAA", 0.9),  # after the period: dropped
            ("2024-01-05", "BBB", 0.5),  # BBB is no longer listed: dropped
            ("2024-01-02", "CCC", 0.7),  # CCC not listed yet: dropped
            ("2024-01-03", "CCC", 0.2),
        ]
    )
    signal, check = bt.prepare_scores(scores, listings=LISTINGS, calendar=CALENDAR, period=period())
    assert list(signal.index.names) == ["datetime", "instrument"]
    assert list(signal.items()) == [
        ((T("2024-01-02"), "AAA"), 0.1),
        ((T("2024-01-03"), "CCC"), 0.2),
        ((T("2024-01-04"), "AAA"), 0.3),
    ]
    assert check == bt.ScoreCheck(
        rows=7,
        used=3,
        dropped_nan=1,
        dropped_outside_period=1,
        dropped_unlisted=2,
        symbols=2,
        signal_sessions=3,
    )


def test_pandas_scores_with_extra_columns_and_aware_times_are_accepted() -> None:
    frame = pd.DataFrame(
        {
            "date": pd.to_datetime(["2024-01-03", "2024-01-04"]).tz_localize("UTC"),
            "symbol": ["AAA", "AAA"],
            "score": [1, 2],  # integers are numbers too
            "segment": ["test", "test"],
        }
    )
    signal, check = bt.prepare_scores(frame, listings=LISTINGS, calendar=CALENDAR, period=period())
    assert check.used == 2 and signal.dtype == np.float64
    indexed = frame.drop(columns="segment").set_index(["date", "symbol"])
    assert bt.prepare_scores(indexed, listings=LISTINGS, calendar=CALENDAR, period=period())[1].used == 2


def test_bad_scores_are_refused_with_the_problem_named() -> None:
    good = table([("2024-01-03", "AAA", 1.0)])
    assert "empty" in refusal(good.head(0))
    assert "lacks column(s) score" in refusal(good.drop("score"))
    assert "ZZZ" in refusal(table([("2024-01-03", "ZZZ", 1.0), ("2024-01-03", "YYY", 1.0)]))
    assert "2024-01-06" in refusal(table([("2024-01-06", "AAA", 1.0)]))  # a Saturday
    assert "duplicated" in refusal(pl.concat([good, good]))
    assert "infinite" in refusal(table([("2024-01-03", "AAA", float("inf"))]))
    assert "numeric" in refusal(good.with_columns(pl.lit("high").alias("score")))
    assert "no usable score in 2024-01-02 .. 2024-01-05" in refusal(table([("2024-01-08", "AAA", 1.0)]))
    with pytest.raises(bt.BacktestInputError, match="Polars or pandas"):
        bt.prepare_scores([1, 2], listings=LISTINGS, calendar=CALENDAR, period=period())


def test_scores_from_a_qlib_series() -> None:
    index = pd.MultiIndex.from_tuples([("AAA", T("2024-01-03"))], names=["instrument", "datetime"])
    frame = bt.scores_from_series(pd.Series([0.5], index=index))
    assert frame.to_dict("records") == [{"date": date(2024, 1, 3), "symbol": "AAA", "score": 0.5}]


# --- universe helpers -----------------------------------------------------------------------------


def test_exit_sessions_are_listing_ends_before_the_data_ends() -> None:
    exits = bt.exit_sessions(LISTINGS, CALENDAR[-1])
    assert exits == {T("2024-01-04"): frozenset({"BBB"})}


def test_equal_weight_benchmark_averages_the_listed_symbols() -> None:
    index = pd.MultiIndex.from_tuples(
        [("AAA", T("2024-01-03")), ("BBB", T("2024-01-03")), ("AAA", T("2024-01-04"))],
        names=["instrument", "datetime"],
    )
    changes = pd.Series([0.02, -0.01, 0.03], index=index)
    bench = bt.equal_weight_benchmark(changes, CALENDAR[1:4])
    assert bench.tolist() == pytest.approx([0.005, 0.03, 0.0])  # no value on the 5th: flat


# --- publishing -----------------------------------------------------------------------------------


def test_publish_creates_the_folder_in_one_rename(tmp_path: Path) -> None:
    out = tmp_path / "backtests" / "run1"
    bt.publish_files(out, {"a.txt": b"one", bt.METRICS_FILE: b"{}"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a.txt": b"one", bt.METRICS_FILE: b"{}"}
    assert [p.name for p in out.parent.iterdir()] == ["run1"]


def test_publish_replaces_the_files_of_an_existing_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    bt.publish_files(out, {"a.txt": b"old", bt.METRICS_FILE: b"old"})
    bt.publish_files(out, {"a.txt": b"new", bt.METRICS_FILE: b"new"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {"a.txt": b"new", bt.METRICS_FILE: b"new"}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_a_crash_while_writing_leaves_no_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        bt.publish_files(tmp_path / "run", {"a.txt": b"1", "b.txt": b"2", bt.METRICS_FILE: b"{}"})
    assert list(tmp_path.iterdir()) == []  # neither the run folder nor the staging folder
