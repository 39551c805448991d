"""A small paper-trading world for the ``trader paper-run`` / ``trader replay`` end-to-end tests.

A world is a copy of the research test market (20 symbols, 2021-2023) with its own trader database
(SQLite or PostgreSQL), its own paper-broker database (SQLite) and artifacts folder, a momentum model
(nothing to fit) registered and promoted through the real registry, and the environment the CLI reads.
The built-in paper broker runs on a free loopback port, so a test never meets a broker someone else
started on the default port.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.support.checks import all_passed
from tests.support.paper_broker import running_paper_broker
from tests.support.research import ResearchMarket
from tests.support.services import free_port
from trader.broker.base import BrokerOrder, OrderQuery
from trader.cli.main import run
from trader.cli.output import console
from trader.config import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET
from trader.paperbroker import PaperBrokerSettings
from trader.research.artifacts import ModelArtifact
from trader.research.registry import ModelRegistry
from trader.research.train import train_strategy
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Position
from trader.strategies.config import DateRange, Segments, load_strategy_config

STRATEGY = "momentum"
#: Momentum needs no fit; the segments only have to lie inside the research market (2021-2023).
SEGMENTS = Segments(
    train=DateRange(start=date(2021, 3, 1), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 23)),
    test=DateRange(start=date(2023, 1, 4), end=date(2023, 12, 28)),
)
PASSED = all_passed().to_dict()
GOOD = {"sharpe": 1.0, "max_drawdown": -0.1, "ic": 0.02, "turnover": 0.1}


def train_momentum(market: ResearchMarket, artifacts_dir: Path) -> ModelArtifact:
    """The momentum model of the research market, as an artifact under ``artifacts_dir``."""
    config = load_strategy_config(STRATEGY).with_segments(SEGMENTS)
    result = train_strategy(
        config, provider_uri=market.provider_uri, mlflow_uri=market.mlflow_uri, artifacts_dir=artifacts_dir
    )
    return result.artifact


def promote(engine: Engine, artifact: ModelArtifact) -> str:
    """Register ``artifact`` and promote it to production (the gates see passing metrics)."""
    registry = ModelRegistry(engine)
    registry.register(STRATEGY, artifact.version, str(artifact.path), artifact.mlflow_run_id, GOOD, PASSED)
    thresholds = load_strategy_config(STRATEGY).promotion
    registry.promote(STRATEGY, artifact.version, approved_by="test", thresholds=thresholds)
    return artifact.version


@dataclass(frozen=True)
class PaperWorld:
    """Folders, databases and environment of one paper-trading setup."""

    root: Path
    database_url: str
    redis_url: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.artifacts_dir / "reports"

    @property
    def broker_database_url(self) -> str:
        return f"sqlite:///{self.root / 'paper_broker.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        values = {
            "DATA_DIR": str(self.data_dir),
            "ARTIFACTS_DIR": str(self.artifacts_dir),
            "DATABASE_URL": self.database_url,
            "PAPER_BROKER_DATABASE_URL": self.broker_database_url,
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.root / 'mlflow.db'}",
            "ALPACA_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "DRY_RUN": "false",
            "STRATEGY_ID": STRATEGY,
        }
        if self.redis_url:
            values["REDIS_URL"] = self.redis_url
        return values | extra

    def engine(self) -> Engine:
        return make_engine(self.database_url)


def make_world(
    market: ResearchMarket,
    root: Path,
    database_url: str,
    *,
    artifact: ModelArtifact | None,
    redis_url: str | None = None,
    migrate_schema: bool = True,
) -> PaperWorld:
    """A fresh world on a copy of ``market``; ``artifact`` (when given) is promoted to production."""
    shutil.copytree(market.data_dir, root / "data")
    world = PaperWorld(root, database_url, redis_url)
    world.artifacts_dir.mkdir(parents=True, exist_ok=True)
    engine = world.engine()
    try:
        if migrate_schema:
            migrate.upgrade(engine)
        if artifact is not None:
            promote(engine, artifact)
    finally:
        engine.dispose()
    return world


def trader(world: PaperWorld, *args: str, **extra_env: str) -> int:
    """``trader <args>`` in-process with the world's environment; returns the exit code."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in world.env(**extra_env).items():
            patch.setenv(name, value)
        patch.setattr(console, "width", 200)  # the summary table is not cut to 80 columns
        return run(list(args))


@dataclass(frozen=True)
class BrokerState:
    """What the paper broker holds: every order, every fill (activity), every position."""

    orders: list[BrokerOrder]
    fills: list[dict[str, Any]]
    positions: dict[str, Decimal]


def _all_fills(url: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    fills: list[dict[str, Any]] = []
    params: dict[str, str] = {"direction": "asc", "page_size": "100"}
    while True:
        page = httpx.get(f"{url}/v2/account/activities/FILL", params=params, headers=headers).json()
        fills += page
        if len(page) < 100:
            return fills
        params["page_token"] = page[-1]["id"]


@contextmanager
def broker_of(world: PaperWorld) -> Iterator[tuple[str, dict[str, str]]]:
    """The world's paper broker (its own database) served on a free port: URL and auth headers."""
    settings = PaperBrokerSettings(data_dir=world.data_dir, database_url=world.broker_database_url)
    with running_paper_broker(settings) as broker:
        yield broker.url, broker.headers


def broker_state(world: PaperWorld) -> BrokerState:
    """Orders, fills and positions at the world's paper broker, read through alpaca-py."""
    from trader.broker.alpaca import AlpacaBroker
    from trader.config import load_settings

    with broker_of(world) as (url, headers):
        settings = load_settings(
            alpaca_base_url=url,
            alpaca_api_key_id=LOCAL_PAPER_KEY_ID,
            alpaca_api_secret_key=LOCAL_PAPER_SECRET,
        )
        broker = AlpacaBroker.from_settings(settings)
        orders = broker.list_orders(OrderQuery.ALL)
        positions = {p.symbol: p.qty for p in broker.get_positions()}
        fills = _all_fills(url, headers)
    return BrokerState(orders, fills, positions)


def db_positions(engine: Engine) -> dict[str, Decimal]:
    """The strategy's non-zero positions in the trader database."""
    with Session(engine) as session:
        rows = session.scalars(select(Position).where(Position.strategy_id == STRATEGY)).all()
        return {row.symbol: row.qty for row in rows if row.qty != 0}
