"""Run the paper broker inside another process, and drive its admin endpoints.

``trader paper-run`` uses the built-in paper broker when ``ALPACA_BASE_URL`` points at it: if nothing
answers there, :func:`paper_broker_running` starts one in a background thread of the same process (the
same app ``trader serve paper-broker`` runs) and stops it afterwards. :class:`PaperBrokerAdmin` moves
its simulated clock (``POST /admin/clock``) and sets faults (``PUT /admin/faults``), which only the
built-in broker has: a real Alpaca account keeps real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from trader.config import is_local_host, uvicorn_logging
from trader.errors import TraderError
from trader.paperbroker.settings import PaperBrokerSettings


class PaperBrokerUnavailableError(TraderError):
    """The paper broker could not be reached or started."""


@dataclass(frozen=True)
class RunningPaperBroker:
    """A reachable paper broker: its base URL, and whether this process started it."""

    url: str
    started_here: bool


def _auth_headers(key_id: str, secret_key: str) -> dict[str, str]:
    return {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret_key}


def is_answering(url: str, key_id: str, secret_key: str, timeout: float = 2.0) -> bool:
    """True when an Alpaca-compatible server answers ``GET /v2/clock`` at ``url`` with these keys."""
    try:
        response = httpx.get(
            f"{url.rstrip('/')}/v2/clock", headers=_auth_headers(key_id, secret_key), timeout=timeout
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@contextmanager
def serve_in_thread(
    settings: PaperBrokerSettings, *, host: str = "127.0.0.1", port: int, startup_timeout: float = 15.0
) -> Iterator[str]:
    """Serve the paper broker on ``host:port`` from a daemon thread until the block exits; yields its URL."""
    import uvicorn

    from trader.paperbroker.app import create_app

    config = uvicorn.Config(create_app(settings), host=host, port=port, **uvicorn_logging("warning"))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"paper-broker-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise PaperBrokerUnavailableError(
                f"the built-in paper broker did not start on {host}:{port} (is the port taken by "
                "another program?)"
            )
        time.sleep(0.01)
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{port}"  # an IPv6 address in brackets
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextmanager
def paper_broker_running(url: str, settings: PaperBrokerSettings) -> Iterator[RunningPaperBroker]:
    """Use the paper broker answering at ``url``, or start one there for the duration of the block."""
    if is_answering(url, settings.api_key_id, settings.api_secret_key):
        yield RunningPaperBroker(url=url.rstrip("/"), started_here=False)
        return
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    if host is None or not is_local_host(host) or port is None:
        raise PaperBrokerUnavailableError(f"no paper broker answers at {url}, and it is not a local address")
    with serve_in_thread(settings, host=host.rstrip("."), port=port) as served:
        yield RunningPaperBroker(url=served, started_here=True)


class PaperBrokerAdmin:
    """Client of the built-in paper broker's ``/admin`` endpoints (same key pair as trading)."""

    def __init__(self, url: str, key_id: str, secret_key: str, timeout: float = 30.0) -> None:
        self._client = httpx.Client(
            base_url=f"{url.rstrip('/')}/admin", headers=_auth_headers(key_id, secret_key), timeout=timeout
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PaperBrokerAdmin:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise PaperBrokerUnavailableError(f"paper broker admin {path}: {exc}") from None
        if response.status_code != 200:
            raise PaperBrokerUnavailableError(
                f"paper broker admin {path} answered {response.status_code}: {response.text[:200]} "
                "(is ALPACA_BASE_URL the built-in paper broker?)"
            )
        result: dict[str, Any] = response.json()
        return result

    def set_clock(self, at: datetime, *, frozen: bool = True) -> datetime:
        """Move the simulated clock to ``at`` (UTC-aware); open orders are matched up to it first."""
        answer = self._call("POST", "/clock", {"at": at.isoformat(), "frozen": frozen})
        return datetime.fromisoformat(str(answer["now"]).replace("Z", "+00:00"))

    def now(self) -> datetime:
        answer = self._call("GET", "/clock")
        return datetime.fromisoformat(str(answer["now"]).replace("Z", "+00:00"))

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change fault injection (any ``FaultSettings`` field); returns the settings now in force."""
        return self._call("PUT", "/faults", faults)
