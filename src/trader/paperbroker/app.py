"""The paper broker's ASGI app factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from trader import __version__
from trader.data.paths import DataPaths
from trader.paperbroker import admin, bars, corporate_actions, stream, trading
from trader.paperbroker.auth import install_auth
from trader.paperbroker.clock import MarketHours, SimClock
from trader.paperbroker.engine import Engine
from trader.paperbroker.errors import install_error_handlers
from trader.paperbroker.events import EventHub
from trader.paperbroker.faults import FaultInjector, check, install_faults
from trader.paperbroker.market import MarketData
from trader.paperbroker.prices import PriceBook
from trader.paperbroker.settings import PaperBrokerSettings
from trader.paperbroker.state import StateStore

#: How often open orders are matched against the moving clock (seconds of real time).
TICK_SECONDS = 0.2
log = logging.getLogger(__name__)


def create_app(settings: PaperBrokerSettings) -> FastAPI:
    """An Alpaca-compatible paper broker: Trading API v2 subset, ``/stream`` trade updates, Market
    Data v2 daily bars and ``/v1/corporate-actions``, plus ``/admin`` for the clock and faults.

    Every route needs the configured ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` pair; every error
    is JSON in Alpaca's shape. State is loaded from ``settings.database_url`` (in memory when
    ``None``) when the app is created; a background task matches open orders while it runs.
    """
    check(settings.faults)
    hub = EventHub()
    clock = SimClock(settings.start_at)
    market = MarketData(DataPaths(settings.data_dir), settings.synthetic_seed)
    hours = MarketHours()
    prices = PriceBook(market, hours)
    store = StateStore(settings.database_url)
    engine = Engine(settings, prices, clock, store, hub.publish)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        ticker = asyncio.create_task(_tick_until(stopping, engine))
        try:
            yield
        finally:
            stopping.set()
            await ticker  # a tick runs in a worker thread: let it finish before the store closes
            engine.close()

    app = FastAPI(
        title="trader paper broker",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    faults = FaultInjector(settings.faults)
    app.state.settings = settings
    app.state.market = market
    app.state.engine = engine
    app.state.clock = clock
    app.state.hours = hours
    app.state.hub = hub
    app.state.faults = faults
    install_error_handlers(app)
    install_faults(app, faults)
    install_auth(app, settings.api_key_id, settings.api_secret_key)
    for module in (bars, corporate_actions, trading, stream, admin):
        app.include_router(module.router)
    return app


async def _tick_until(stopping: asyncio.Event, engine: Engine) -> None:
    """Match open orders as the clock moves (fills, the open, day-order expiry) until ``stopping``
    is set. Not cancelled: cancelling would not stop a tick already running in its worker thread."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), TICK_SECONDS)
            return
        try:
            await run_in_threadpool(engine.tick)
        except Exception:  # a bad tick must not stop matching for good
            log.exception("paper broker: matching tick failed")
