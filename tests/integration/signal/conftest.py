"""Fixtures of the signal tests: a copy of the research market and a promoted momentum model."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import Engine

from tests.support.checks import all_passed
from tests.support.research import ResearchMarket, copy_market
from trader.research.registry import ModelRegistry
from trader.research.train import train_strategy
from trader.strategies.config import DateRange, Segments, load_strategy_config

SEGMENTS = Segments(
    train=DateRange(start=date(2021, 3, 1), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 23)),
    test=DateRange(start=date(2023, 1, 4), end=date(2023, 12, 28)),
)
PASSED = all_passed().to_dict()
GOOD = {"sharpe": 1.0, "max_drawdown": -0.1, "ic": 0.02, "turnover": 0.1}


@pytest.fixture(scope="module")
def momentum_market(
    research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory
) -> ResearchMarket:
    return copy_market(research_market, tmp_path_factory.mktemp("signal_market"))


def train_and_promote(market: ResearchMarket, engine: Engine, lookback: int) -> str:
    base = load_strategy_config("momentum").with_segments(SEGMENTS)
    config = base.model_copy(update={"momentum": base.momentum.model_copy(update={"lookback": lookback})})
    result = train_strategy(
        config,
        provider_uri=market.provider_uri,
        mlflow_uri=market.mlflow_uri,
        artifacts_dir=market.root / "artifacts",
    )
    registry = ModelRegistry(engine)
    version = result.artifact.version
    registry.register("momentum", version, str(result.artifact.path), result.run_id, GOOD, PASSED)
    registry.promote("momentum", version, approved_by="test", thresholds=config.promotion)
    return version
