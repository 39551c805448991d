"""The momentum strategy: its scores are the past return of the adjusted store, computed by Qlib."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from tests.support.research import ResearchMarket
from trader.data.store import AdjustedStore
from trader.research.artifacts import ArtifactError
from trader.research.train import train_strategy
from trader.strategies.config import DateRange, Segments, StrategyConfig, load_strategy_config

SEGMENTS = Segments(
    train=DateRange(start=date(2021, 3, 1), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 23)),
    test=DateRange(start=date(2023, 1, 4), end=date(2023, 12, 28)),
)


def momentum_config(lookback: int, skip: int) -> StrategyConfig:
    base = load_strategy_config("momentum").with_segments(SEGMENTS)
    return base.model_copy(
        update={"momentum": base.momentum.model_copy(update={"lookback": lookback, "skip": skip})}
    )


def closes_by_session(market: ResearchMarket) -> tuple[list[date], dict[tuple[str, date], float]]:
    sessions = [
        date.fromisoformat(d) for d in (market.provider_uri / "calendars" / "day.txt").read_text().split()
    ]
    bars = AdjustedStore(market.paths).read().select("symbol", "date", "close")
    return sessions, {(s, d): c for s, d, c in bars.iter_rows()}


@pytest.mark.parametrize(("lookback", "skip"), [(20, 0), (10, 3)])
def test_scores_are_the_past_return_of_the_adjusted_closes(
    research_market: ResearchMarket, tmp_path: Path, lookback: int, skip: int
) -> None:
    result = train_strategy(
        momentum_config(lookback, skip),
        provider_uri=research_market.provider_uri,
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifacts_dir=tmp_path / "artifacts",
    )
    artifact = result.artifact
    assert not artifact.has_model
    with pytest.raises(ArtifactError, match="no model"):
        artifact.load_model()
    assert artifact.info["feature_names"] == ["MOMENTUM"]
    assert math.isfinite(artifact.ic("test").ic)

    sessions, close = closes_by_session(research_market)
    index = {d: i for i, d in enumerate(sessions)}
    predictions = artifact.predictions()
    checked = 0
    # Every 97th score (a spread of dates and symbols, both segments), computed by hand.
    for day, symbol, score, _segment in predictions.gather_every(97).iter_rows():
        i = index[day]
        recent = close[(symbol, sessions[i - skip])]
        past = close[(symbol, sessions[i - skip - lookback])]
        assert score == pytest.approx(recent / past - 1, rel=1e-5, abs=1e-6), (day, symbol)
        checked += 1
    assert checked >= 60

    # A (date, symbol) whose window lands on a session without a bar has no score.
    missing = [
        (day, symbol)
        for day, symbol in predictions.select("date", "symbol").iter_rows()
        if (symbol, sessions[index[day] - skip - lookback]) not in close
    ]
    assert missing == []
    test_rows = predictions.filter(pl.col("segment") == "test").height
    assert artifact.info["rows"]["test"] == test_rows > 4000
