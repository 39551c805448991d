"""The built-in Alpaca-compatible paper broker (``trader serve paper-broker``).

It speaks Alpaca's Trading API v2 (orders, positions, account, clock, calendar, assets, activities),
the ``trade_updates`` websocket at ``/stream`` and Market Data v2 daily bars plus corporate actions,
all on one port, so the unmodified ``alpaca-py`` SDK drives it exactly as it drives Alpaca. Build the
ASGI app with :func:`trader.paperbroker.app.create_app`; behaviour is documented in
docs/paper-broker.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trader.paperbroker.settings import PaperBrokerSettings

if TYPE_CHECKING:
    from trader.paperbroker.app import create_app

__all__ = ["PaperBrokerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # The app pulls in FastAPI, Polars and the calendar; the CLI only needs the settings at import.
    if name == "create_app":
        from trader.paperbroker.app import create_app

        return create_app
    raise AttributeError(name)
