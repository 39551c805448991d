"""The real paper broker, in-process, and an ``AlpacaBroker`` pointed at it through ``Settings``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.paper_broker import RunningBroker, running_paper_broker
from trader.broker import RetryPolicy
from trader.broker.alpaca import AlpacaBroker
from trader.config import Settings
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import FaultSettings

#: Tuesday 2024-03-05, 10:00 New York: the market is open.
OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
#: Fast, but many, retries: the fault tests need room for bad luck, not long sleeps.
FAST_POLICY = RetryPolicy(max_retries=12, base_delay=0.005, max_delay=0.05)


def admin(broker: RunningBroker, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.request(
        method, f"{broker.url}/admin/{path}", json=body, headers=broker.headers, timeout=10
    )
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def set_faults(broker: RunningBroker, **changes: Any) -> dict[str, Any]:
    """Change the paper broker's fault injection at run time; returns settings and injected counts."""
    return admin(broker, "PUT", "faults", changes)


def no_faults() -> dict[str, Any]:
    return asdict(FaultSettings(rate_limit_per_minute=0)) | {"seed": 0}


def alpaca_broker(
    broker: RunningBroker, *, timeout: float = 5.0, policy: RetryPolicy = FAST_POLICY
) -> AlpacaBroker:
    """An ``AlpacaBroker`` built exactly as in production: from ``Settings`` (URL + keys only differ)."""
    settings = Settings(
        alpaca_base_url=broker.url,
        alpaca_api_key_id=broker.key_id,
        alpaca_api_secret_key=broker.secret_key,
        broker_timeout_seconds=timeout,
    )
    return AlpacaBroker.from_settings(settings, policy=policy)


@pytest.fixture
def paper_broker_factory(tmp_path: Path) -> Callable[..., AbstractContextManager[RunningBroker]]:
    """``with paper_broker_factory(faults=FaultSettings(...)) as running:`` — clock frozen at the open."""

    @contextmanager
    def start(faults: FaultSettings | None = None) -> Iterator[RunningBroker]:
        settings = PaperBrokerSettings(
            data_dir=tmp_path / "empty-data",
            start_at=OPEN_TUESDAY,
            faults=faults or FaultSettings(rate_limit_per_minute=0),
        )
        with running_paper_broker(settings) as running:
            admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
            yield running

    return start


@pytest.fixture
def paper_broker(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> Iterator[RunningBroker]:
    with paper_broker_factory() as running:
        yield running


@pytest.fixture
def broker(paper_broker: RunningBroker) -> AlpacaBroker:
    return alpaca_broker(paper_broker)
