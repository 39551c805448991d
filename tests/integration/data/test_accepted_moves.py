"""Accepting a real move the outlier rule refused: the bar leaves quarantine and stays clean."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.data.paths import DataPaths
from trader.data.pipeline import DataError, DataPipeline
from trader.data.quality import GateConfig
from trader.data.sources.csv_source import CsvSource
from trader.ops.replay import rebuild_point_in_time
from trader.store.models import Event

# NFLX around its Q1 2022 report: -35.1 % on 2022-04-20, a real move beyond the 30 % rule.
DAYS = ["2022-04-12", "2022-04-13", "2022-04-14", "2022-04-18", "2022-04-19", "2022-04-20", "2022-04-21"]
CLOSES = [338.0, 341.0, 340.0, 337.0, 348.0, 226.0, 218.0]
GAP_DAY = date(2022, 4, 20)
SPAN = (date(2022, 4, 1), date(2022, 4, 29))
NOW = datetime(2022, 4, 29, 23, tzinfo=UTC)


def write_bars(path: Path, days: list[str], closes: list[float], symbol: str = "NFLX") -> Path:
    rows = [
        f"{symbol},{d},{c},{c * 1.01:.4f},{c * 0.99:.4f},{c},1000" for d, c in zip(days, closes, strict=True)
    ]
    path.write_text("symbol,date,open,high,low,close,volume\n" + "\n".join(rows) + "\n")
    return path


def ingest(pipeline: DataPipeline, path: Path) -> Any:
    return pipeline.ingest(CsvSource(path), None, *SPAN, now=NOW)


def clean_dates(pipeline: DataPipeline) -> list[date]:
    return pipeline.adjusted.read(symbols=["NFLX"]).get_column("date").to_list()


def events(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with Session(engine) as session:
        return [
            e.payload for e in session.scalars(select(Event).where(Event.kind == kind).order_by(Event.id))
        ]


def test_an_accepted_move_leaves_quarantine_stays_clean_and_can_be_taken_back(
    migrated_engine: Engine, tmp_path: Path
) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"), engine=migrated_engine)
    first = ingest(pipeline, write_bars(tmp_path / "a.csv", DAYS, CLOSES))
    assert first.quarantined_by_rule == {"outlier": 1}
    assert GAP_DAY not in clean_dates(pipeline)

    report = pipeline.accept_move("NFLX", GAP_DAY, "Q1 earnings: subscriber loss", now=NOW)

    assert report.quarantined_rows == 0 and report.raw_new_rows == 0
    assert GAP_DAY in clean_dates(pipeline)
    stored = pipeline.accepted.read()
    assert stored.select("symbol", "date", "reason").rows() == [
        ("NFLX", GAP_DAY, "Q1 earnings: subscriber loss")
    ]
    assert events(migrated_engine, "data_move_accepted") == [
        {"symbol": "NFLX", "date": "2022-04-20", "close": 226.0, "reason": "Q1 earnings: subscriber loss"}
    ]

    # The next day's ingest re-checks the whole history: the accepted bar stays clean.
    later = ingest(pipeline, write_bars(tmp_path / "b.csv", ["2022-04-22"], [215.0]))
    assert later.quarantined_rows == 0
    assert clean_dates(pipeline)[-2:] == [date(2022, 4, 21), date(2022, 4, 22)]
    assert GAP_DAY in clean_dates(pipeline)

    pipeline.revoke_move("NFLX", GAP_DAY, now=NOW)
    assert GAP_DAY not in clean_dates(pipeline)
    assert pipeline.accepted.read().is_empty()
    assert [e["date"] for e in events(migrated_engine, "data_move_revoked")] == ["2022-04-20"]


def test_accept_refuses_what_it_would_not_clear_and_records_nothing(tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    days, closes = [*DAYS, "2022-04-22"], [*CLOSES, 215.0]
    path = write_bars(tmp_path / "a.csv", days, closes)
    # 2022-04-22 has high < low: quarantined by a row rule, which an acceptance cannot lift.
    text = path.read_text().replace(
        "NFLX,2022-04-22,215.0,217.1500,212.8500", "NFLX,2022-04-22,215.0,200,230"
    )
    path.write_text(text)
    ingest(pipeline, path)

    cases = [
        (date(2022, 4, 25), "the raw record holds no bar of NFLX on 2022-04-25"),
        (date(2022, 4, 19), "NFLX on 2022-04-19 is clean (not quarantined): nothing to accept"),
        (date(2022, 4, 22), "quarantined as ohlc_inconsistent, not as an outlier"),
    ]
    for day, message in cases:
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
            pipeline.accept_move("NFLX", day, "checked", now=NOW)
    with pytest.raises(DataError, match="no accepted move of NFLX on 2022-04-20"):
        pipeline.revoke_move("NFLX", GAP_DAY, now=NOW)
    assert pipeline.accepted.read().is_empty()
    assert not pipeline.paths.accepted_moves.exists()


def test_a_failed_re_check_keeps_the_acceptance_and_running_it_again_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    ingest(pipeline, write_bars(tmp_path / "a.csv", DAYS, CLOSES))

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "_ingest", fail)
        with pytest.raises(
            DataError, match=r"recorded, but re-checking its history failed \(OSError: disk full\)"
        ):
            pipeline.accept_move("NFLX", GAP_DAY, "earnings", now=NOW)
    # The person's decision stands; the stores catch up when the command runs again.
    assert pipeline.accepted.read().get_column("date").to_list() == [GAP_DAY]
    assert GAP_DAY not in clean_dates(pipeline)

    pipeline.accept_move("NFLX", GAP_DAY, "earnings, checked twice", now=NOW)
    assert GAP_DAY in clean_dates(pipeline)
    assert pipeline.accepted.read().get_column("reason").to_list() == ["earnings, checked twice"]


def test_a_bar_delivered_again_with_another_close_is_judged_again(tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    ingest(pipeline, write_bars(tmp_path / "a.csv", DAYS, CLOSES))
    pipeline.accept_move("NFLX", GAP_DAY, "earnings", now=NOW)

    # The vendor re-sends the accepted day with a price in dollars where cents were meant.
    later = datetime(2022, 4, 30, 23, tzinfo=UTC)
    report = pipeline.ingest(
        CsvSource(write_bars(tmp_path / "b.csv", ["2022-04-20"], [2.26])), None, *SPAN, now=later
    )
    # 2.26 is refused, and so is 04-21's real -37 % from 04-19: that move was never accepted.
    assert report.quarantined_by_rule == {"outlier": 2}
    assert clean_dates(pipeline)[-2:] == [date(2022, 4, 18), date(2022, 4, 19)]


def test_a_bar_two_sources_delivered_is_re_checked_without_recording_anything(tmp_path: Path) -> None:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    first = datetime(2022, 4, 22, 23, tzinfo=UTC)
    pipeline.ingest(CsvSource(write_bars(tmp_path / "a.csv", DAYS, CLOSES)), None, *SPAN, now=first)

    class Fallback(CsvSource):
        name = "fallback"

    fallback = Fallback(write_bars(tmp_path / "b.csv", ["2022-04-19"], [348.5]))
    pipeline.ingest(fallback, None, *SPAN, now=NOW)
    raw_rows = pipeline.raw.read(latest_only=False).height

    report = pipeline.accept_move("NFLX", GAP_DAY, "earnings", now=NOW)

    assert (report.raw_new_rows, report.quarantined_rows) == (0, 0)
    assert pipeline.raw.read(latest_only=False).height == raw_rows
    assert clean_dates(pipeline) == [date.fromisoformat(d) for d in DAYS]


def test_the_replay_rebuild_keeps_accepted_moves_and_the_configured_threshold(tmp_path: Path) -> None:
    paths = DataPaths(tmp_path / "data")
    pipeline = DataPipeline(paths)
    ingest(pipeline, write_bars(tmp_path / "a.csv", DAYS, CLOSES))
    pipeline.accept_move("NFLX", GAP_DAY, "earnings", now=NOW)

    accepted = DataPaths(tmp_path / "replay-accepted")
    rebuild_point_in_time(paths, date(2022, 4, 21), accepted)
    assert GAP_DAY in DataPipeline(accepted).adjusted.read().get_column("date").to_list()

    # Without the acceptance, only a wider threshold (as DATA_OUTLIER_THRESHOLD sets it) keeps it.
    pipeline.revoke_move("NFLX", GAP_DAY, now=NOW)
    strict, wide = DataPaths(tmp_path / "replay-strict"), DataPaths(tmp_path / "replay-wide")
    rebuild_point_in_time(paths, date(2022, 4, 21), strict)
    rebuild_point_in_time(paths, date(2022, 4, 21), wide, GateConfig(outlier_threshold=0.4))
    assert GAP_DAY not in DataPipeline(strict).adjusted.read().get_column("date").to_list()
    assert GAP_DAY in DataPipeline(wide).adjusted.read().get_column("date").to_list()
