"""The paper broker's ASGI app factory."""

from __future__ import annotations

from fastapi import FastAPI

from trader import __version__
from trader.data.paths import DataPaths
from trader.paperbroker import bars, corporate_actions
from trader.paperbroker.auth import install_auth
from trader.paperbroker.errors import install_error_handlers
from trader.paperbroker.market import MarketData
from trader.paperbroker.settings import PaperBrokerSettings


def create_app(settings: PaperBrokerSettings) -> FastAPI:
    """An Alpaca-compatible paper broker serving ``settings.data_dir`` (no I/O until a request).

    Routes: ``GET /v2/stocks/bars``, ``GET /v2/stocks/{symbol}/bars``, ``GET /v1/corporate-actions``.
    Every route needs the configured ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY`` pair; every error
    is JSON in Alpaca's shape.
    """
    app = FastAPI(
        title="trader paper broker",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.market = MarketData(DataPaths(settings.data_dir), settings.synthetic_seed)
    install_error_handlers(app)
    install_auth(app, settings.api_key_id, settings.api_secret_key)
    app.include_router(bars.router)
    app.include_router(corporate_actions.router)
    return app
