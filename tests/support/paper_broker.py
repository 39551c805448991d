"""Run the paper broker in-process: uvicorn in a background thread on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from tests.support.services import free_port
from trader.paperbroker import PaperBrokerSettings, create_app


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
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"paper-broker-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"paper broker did not start on port {port}")
        time.sleep(0.01)
    try:
        yield RunningBroker(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
