"""The signal service loop: next trading day, waiting for data, reload on promotion, NOTIFY wake-up."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.integration.signal.conftest import train_and_promote
from tests.support.research import ResearchMarket
from trader.research.registry import NOTIFY_CHANNEL
from trader.signal.runner import SignalLoop, notification_waiter
from trader.signal.service import SignalService

pytestmark = pytest.mark.slow

#: Wednesday 2023-11-15 at 22:00 UTC: Wednesday's session has closed, the next one is Thursday.
AFTER_CLOSE = datetime(2023, 11, 15, 22, 0, tzinfo=UTC)


def test_tick_computes_the_next_day_once_and_follows_promotions(
    migrated_engine: Engine,
    momentum_market: ResearchMarket,
) -> None:
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    loop = SignalLoop(service, momentum_market.paths, clock=lambda: AFTER_CLOSE)
    assert loop.tick().outcome is None  # no production model yet: nothing, and no crash

    first = train_and_promote(momentum_market, migrated_engine, lookback=20)
    result = loop.tick()
    assert result.trading_date == date(2023, 11, 16)
    assert result.model_version == first
    assert result.outcome is not None and result.outcome.computed
    assert result.outcome.as_of == date(2023, 11, 15)
    again = loop.tick()
    assert again.outcome is not None and not again.outcome.computed  # recorded once

    second = train_and_promote(momentum_market, migrated_engine, lookback=5)
    reloaded = loop.tick()
    assert reloaded.reloaded and reloaded.model_version == second
    assert reloaded.outcome is not None and reloaded.outcome.computed  # the new model computes the day


def test_tick_waits_for_the_previous_session_bars(
    migrated_engine: Engine,
    momentum_market: ResearchMarket,
) -> None:
    train_and_promote(momentum_market, migrated_engine, lookback=20)
    service = SignalService(migrated_engine, momentum_market.paths, strategy="momentum")
    after_the_data = datetime(2024, 1, 3, 22, 0, tzinfo=UTC)  # the research market ends 2023-12-29
    result = SignalLoop(service, momentum_market.paths, clock=lambda: after_the_data).tick()
    assert result.outcome is None
    assert result.waiting_for == date(2024, 1, 3)


@pytest.mark.postgres
def test_promotion_wakes_the_waiter_on_postgresql(postgres_migrated_url: str) -> None:
    engine = create_engine(postgres_migrated_url)
    wait = notification_waiter(engine)
    woke = threading.Event()

    def waiting() -> None:
        started = time.monotonic()
        wait(20.0)
        if time.monotonic() - started < 10.0:
            woke.set()

    thread = threading.Thread(target=waiting)
    thread.start()
    time.sleep(0.5)
    with engine.begin() as connection:  # what promote and rollback send in their transaction
        connection.execute(text("SELECT pg_notify(:channel, 'momentum')"), {"channel": NOTIFY_CHANNEL})
    thread.join(timeout=15)
    engine.dispose()
    assert woke.is_set()
