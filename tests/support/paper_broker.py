"""Run the paper broker in-process: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.services import free_port
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.runner import serve_in_thread


@dataclass(frozen=True)
class RunningBroker:
    """A started broker: its base URL (for ``url_override``) and the settings it runs with."""

    url: str
    settings: PaperBrokerSettings

    @property
    def key_id(self) -> str:
        return self.settings.api_key_id

    @property
    def secret_key(self) -> str:
        return self.settings.api_secret_key

    @property
    def headers(self) -> dict[str, str]:
        """Auth headers for hand-made requests."""
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret_key}


@contextmanager
def running_paper_broker(
    settings: PaperBrokerSettings, startup_timeout: float = 10.0
) -> Iterator[RunningBroker]:
    """Serve ``create_app(settings)`` on ``127.0.0.1:<free port>`` until the block exits."""
    with serve_in_thread(settings, port=free_port(), startup_timeout=startup_timeout) as url:
        yield RunningBroker(url=url, settings=settings)
