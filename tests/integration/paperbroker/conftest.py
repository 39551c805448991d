"""Fixtures for driving the paper broker's Trading API through alpaca-py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import requests
from alpaca.trading.client import TradingClient

from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import DEFAULT_SYNTHETIC_SEED

#: Tuesday 2024-03-05, 10:00 New York: the market is open.
OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def set_clock(broker: RunningBroker, at: datetime, frozen: bool = True) -> None:
    """Move the broker's simulated clock (open orders are matched up to ``at`` before it answers)."""
    answer = requests.post(
        f"{broker.url}/admin/clock",
        json={"at": at.isoformat(), "frozen": frozen},
        headers=broker.headers,
        timeout=10,
    )
    answer.raise_for_status()


@pytest.fixture(scope="session")
def synthetic_bars() -> pl.DataFrame:
    """The raw bars the broker serves from an empty data store (the default synthetic market)."""
    return SyntheticSource(SyntheticConfig(seed=DEFAULT_SYNTHETIC_SEED)).data.batch.bars


@pytest.fixture
def bar_of(synthetic_bars: pl.DataFrame) -> Callable[[str, date], dict[str, Decimal]]:
    """``bar_of(symbol, day)`` → ``{"open", "high", "low", "close"}`` as Decimals to 4 places."""

    def find(symbol: str, day: date) -> dict[str, Decimal]:
        rows = synthetic_bars.filter((pl.col("symbol") == symbol) & (pl.col("date") == day))
        assert rows.height == 1, f"no bar for {symbol} on {day}"
        row = rows.row(0, named=True)
        return {
            k: Decimal(repr(row[k])).quantize(Decimal("0.0001")) for k in ("open", "high", "low", "close")
        }

    return find


@pytest.fixture
def broker_settings(tmp_path: Path) -> PaperBrokerSettings:
    return PaperBrokerSettings(data_dir=tmp_path / "empty-data", start_at=OPEN_TUESDAY)


@pytest.fixture
def broker(broker_settings: PaperBrokerSettings) -> Iterator[RunningBroker]:
    """A paper broker with a frozen clock at :data:`OPEN_TUESDAY` and an in-memory state."""
    with running_paper_broker(broker_settings) as running:
        set_clock(running, OPEN_TUESDAY)
        yield running


def client_of(broker: RunningBroker) -> TradingClient:
    client = TradingClient(broker.key_id, broker.secret_key, url_override=broker.url)
    client._retry = 0  # no 3 s SDK re-sends in tests
    return client


@pytest.fixture
def trading(broker: RunningBroker) -> TradingClient:
    return client_of(broker)


StartBroker = Callable[..., AbstractContextManager[RunningBroker]]


@pytest.fixture
def start_broker(tmp_path: Path) -> StartBroker:
    """``with start_broker(at, **settings) as running:`` a broker on the synthetic market with other
    settings (slippage, ...), its clock frozen at ``at`` (default :data:`OPEN_TUESDAY`)."""

    @contextmanager
    def start(at: datetime = OPEN_TUESDAY, **settings: Any) -> Iterator[RunningBroker]:
        chosen = PaperBrokerSettings(data_dir=tmp_path / "empty-data", start_at=at, **settings)
        with running_paper_broker(chosen) as running:
            set_clock(running, at)
            yield running

    return start
