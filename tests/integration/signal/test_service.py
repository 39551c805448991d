"""The signal service on the research market: production model → scores → universe → weights → record.

Uses the momentum strategy (no model to fit, so training is a few seconds) registered and promoted
through the real registry; the scores are checked against past returns computed by hand.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import polars as pl
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.integration.signal.conftest import train_and_promote
from tests.support.research import ResearchMarket
from trader.data.calendar import trading_calendar
from trader.data.store import AdjustedStore
from trader.research.registry import ModelRegistry
from trader.signal.service import NoProductionModelError, SignalService, tradable_on
from trader.store.models import Event, Position, SignalRun

pytestmark = pytest.mark.slow

DAY = date(2023, 11, 15)  # a Wednesday; the signal is computed from Tuesday's close


def test_no_production_model_is_a_clear_error(
    migrated_engine: Engine, momentum_market: ResearchMarket
) -> None:
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    with pytest.raises(NoProductionModelError, match="trader model promote"):
        service.run(DAY)


def test_weights_come_from_momentum_scores_and_are_recorded_once(
    migrated_engine: Engine, momentum_market: ResearchMarket
) -> None:
    version = train_and_promote(momentum_market, migrated_engine, lookback=20)
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    outcome = service.run(DAY)
    assert outcome.computed and outcome.as_of == date(2023, 11, 14)
    assert outcome.result.model_version == version

    calendar = trading_calendar()
    start = outcome.as_of
    for _ in range(20):
        start = calendar.previous_session(start)
    bars = AdjustedStore(momentum_market.paths).read(start=start, end=outcome.as_of)
    closes = {(r["symbol"], r["date"]): r["close"] for r in bars.iter_rows(named=True)}
    listed = tradable_on(momentum_market.paths, DAY)
    expected = {
        s: closes[(s, outcome.as_of)] / closes[(s, start)] - 1
        for s in listed
        if (s, outcome.as_of) in closes and (s, start) in closes
    }
    assert outcome.result.scores == pytest.approx(expected, rel=1e-12)
    top = sorted(expected, key=lambda s: (-expected[s], s))[:10]
    assert outcome.result.weights == {s: Decimal("0.1") for s in top}

    again = service.run(DAY, held=["SOMETHING"])  # a rerun must not recompute with new holdings
    assert not again.computed and again.run_id == outcome.run_id
    assert again.result.weights == outcome.result.weights
    with Session(migrated_engine) as session:
        assert session.scalar(select(func.count()).select_from(SignalRun)) == 1
        assert (
            session.scalar(select(func.count()).select_from(Event).where(Event.kind == "signal.intent")) == 1
        )


def test_holdings_are_kept_by_the_topk_dropout_rule(
    migrated_engine: Engine, momentum_market: ResearchMarket
) -> None:
    train_and_promote(momentum_market, migrated_engine, lookback=20)
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    fresh, _ = service.compute(service.model(), DAY, held=[])
    ranked = sorted(fresh.scores, key=lambda s: (-fresh.scores[s], s))
    worst_three = ranked[-3:]
    with Session(migrated_engine) as session, session.begin():
        for symbol in worst_three:
            session.add(
                Position(strategy_id="momentum", symbol=symbol, qty=Decimal(5), avg_price=Decimal(10))
            )
    outcome = service.run(DAY)
    # topk 10, n_drop 2: of the three worst holdings only two may be replaced, so one stays.
    assert len(set(worst_three) & set(outcome.result.weights)) == 1
    assert len(outcome.result.weights) == 10


def test_promotion_of_a_new_version_is_picked_up(
    migrated_engine: Engine, momentum_market: ResearchMarket
) -> None:
    first = train_and_promote(momentum_market, migrated_engine, lookback=20)
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    assert service.model().version == first
    second = train_and_promote(momentum_market, migrated_engine, lookback=5)
    assert second != first
    assert service.model().version == second
    assert service.model().config.momentum.lookback == 5
    ModelRegistry(migrated_engine).rollback("momentum", approved_by="test")
    assert service.model().version == first


def test_only_symbols_listed_on_the_day_are_scored(
    migrated_engine: Engine, momentum_market: ResearchMarket
) -> None:
    train_and_promote(momentum_market, migrated_engine, lookback=20)
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    listings = pl.read_parquet(momentum_market.paths.universe)
    gone = set(
        listings.filter(pl.col("end_date").is_not_null() & (pl.col("end_date") < DAY))
        .get_column("symbol")
        .to_list()
    )
    assert gone, "the research market should have a symbol delisted before the day"
    scores = service.model().scorer.score(momentum_market.paths, date(2023, 11, 14)).values
    outcome = service.run(DAY)
    assert set(outcome.result.scores) == set(scores) & tradable_on(momentum_market.paths, DAY)
    assert not gone & set(outcome.result.scores)
    assert set(outcome.dropped) == set(scores) - set(outcome.result.scores)
