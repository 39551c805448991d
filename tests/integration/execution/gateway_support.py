"""Serve the execution gateway on a real loopback socket (uvicorn in a thread) and talk to it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.support.services import free_port
from trader.config import Settings
from trader.execution.snapshots import StaticRiskInputs
from trader.risk.snapshot import PortfolioSnapshot
from trader.store.models import Base

API_KEY = "test-gateway-key-0123456789abcdef"
AUTH = {"X-API-Key": API_KEY}
D = Decimal


def settings(**changes: Any) -> Settings:
    """Gateway settings for tests: the test key, DRY_RUN on unless changed."""
    return Settings(trader_api_key=API_KEY, **changes)


EQUITY = D(100_000)


def static_inputs(prices: dict[str, Decimal] | None = None, equity: Decimal = EQUITY) -> StaticRiskInputs:
    """A flat account (cash = equity = buying power), market open, and the given reference prices."""
    return StaticRiskInputs(PortfolioSnapshot(equity, equity, equity), prices or {"AAPL": D("150")})


@contextmanager
def serving(app: FastAPI, startup_timeout: float = 30.0) -> Iterator[httpx.Client]:
    """Serve ``app`` on 127.0.0.1:<free port> (lifespan included); yield a client without the key."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name=f"gateway-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def count(engine: Engine, model: type[Base], *where: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def order_body(**changes: Any) -> dict[str, Any]:
    """A market buy of 10 AAPL for strategy ``gw`` on 2024-03-05, with ``changes``."""
    return {
        "strategy_id": "gw",
        "symbol": "AAPL",
        "side": "buy",
        "qty": "10",
        "trading_date": "2024-03-05",
        **changes,
    }


Labels = frozenset[tuple[str, str]]


def scrape(client: httpx.Client) -> dict[str, dict[Labels, float]]:
    """``GET /metrics`` (with the key), parsed: sample name → labels → value."""
    from prometheus_client.parser import text_string_to_metric_families

    answer = client.get("/metrics", headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def sample(samples: dict[str, dict[Labels, float]], name: str, **labels: str) -> float | None:
    """One sample's value, ``None`` when the scrape does not hold it."""
    return samples.get(name, {}).get(frozenset(labels.items()))
