"""The built-in Alpaca-compatible paper broker (``trader serve paper-broker``).

This first slice serves Alpaca's Market Data endpoints (daily stock bars and corporate actions) from
the project's data store, so the unmodified ``alpaca-py`` SDK (and :class:`AlpacaSource`) can ingest
offline. Build the ASGI app with :func:`trader.paperbroker.app.create_app`.
"""

from __future__ import annotations

from trader.paperbroker.app import create_app
from trader.paperbroker.settings import PaperBrokerSettings

__all__ = ["PaperBrokerSettings", "create_app"]
