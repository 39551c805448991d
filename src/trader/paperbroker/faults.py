"""Fault injection (off by default) and Alpaca's rate limits, as one HTTP middleware.

Faults apply to the Trading and Market Data routes, never to ``/admin``. Each request draws, in this
order: the rate limit (429), added latency, a timeout (held, then 504, nothing done), a 5xx (nothing
done) and, for ``POST /v2/orders`` only, *accept-then-lose*: the order is created and the client gets
a 500 instead of it. Trading and Market Data requests are counted apart, as Alpaca counts them.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from trader.paperbroker.settings import FaultSettings

_WINDOW_SECONDS = 60.0
#: Path prefixes of the Market Data API (its own rate-limit budget); every other route is trading.
DATA_PREFIXES = ("/v2/stocks/", "/v1/corporate-actions")
TRADING, DATA = "trading", "data"


def budget_of(path: str) -> str:
    """Which rate-limit budget a request to ``path`` counts against."""
    return DATA if path.startswith(DATA_PREFIXES) else TRADING


class FaultInjector:
    """The current fault settings, their random draws and the rate-limit window."""

    def __init__(self, settings: FaultSettings) -> None:
        self._lock = threading.Lock()
        self.settings = settings
        self._rng = random.Random(settings.seed)  # noqa: S311 - simulation, not security
        self._recent: dict[str, deque[float]] = {TRADING: deque(), DATA: deque()}
        self.injected: dict[str, int] = {}

    def update(self, **changes: Any) -> FaultSettings:
        """Change some settings (unknown names or bad values raise ``ValueError``)."""
        unknown = set(changes) - set(asdict(self.settings))
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        updated = replace(self.settings, **changes)
        check(updated)
        with self._lock:
            if updated.seed != self.settings.seed:
                self._rng = random.Random(updated.seed)  # noqa: S311
            self.settings = updated
        return updated

    def draw(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._rng.random() < rate

    def server_error_status(self) -> int:
        """Which 5xx an injected error uses: 500, 502 or 503."""
        with self._lock:
            return self._rng.choice((500, 502, 503))

    def count(self, kind: str) -> None:
        with self._lock:
            self.injected[kind] = self.injected.get(kind, 0) + 1

    def limit_of(self, budget: str) -> int:
        """Requests per minute of ``budget`` (0: no limit)."""
        return self.settings.data_limit if budget == DATA else self.settings.rate_limit_per_minute

    def rate_limited(self, budget: str = TRADING) -> tuple[bool, int, int]:
        """Whether this request is over ``budget``'s limit, the requests left, and the reset (epoch s)."""
        limit = self.limit_of(budget)
        now = time.monotonic()
        with self._lock:
            recent = self._recent[budget]
            while recent and now - recent[0] >= _WINDOW_SECONDS:
                recent.popleft()
            oldest = recent[0] if recent else now
            reset = int(time.time() + _WINDOW_SECONDS - (now - oldest)) + 1
            if limit and len(recent) >= limit:
                return True, 0, reset
            recent.append(now)
            return False, max(limit - len(recent), 0), reset

    def event_copies(self) -> int:
        """How many times to send the next stream event: 0 (dropped), 1, or 2 (duplicated)."""
        if self.draw(self.settings.drop_event_rate):
            self.count("dropped_event")
            return 0
        if self.draw(self.settings.duplicate_event_rate):
            self.count("duplicated_event")
            return 2
        return 1


def _is_number(value: Any) -> bool:
    """A finite int or float, but not a bool (JSON ``true`` is not a rate of 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check(settings: FaultSettings) -> None:
    """Refuse rates outside [0, 1], negative durations, and limits or seeds that are not whole
    numbers, naming the field."""
    for name in (
        "error_rate",
        "timeout_rate",
        "lose_response_rate",
        "drop_event_rate",
        "duplicate_event_rate",
    ):
        value = getattr(settings, name)
        if not _is_number(value) or not 0 <= value <= 1:
            raise ValueError(f"{name} must be a probability between 0 and 1 (got {value!r})")
    for name in ("latency_ms", "timeout_seconds"):
        value = getattr(settings, name)
        if not _is_number(value) or value < 0:
            raise ValueError(f"{name} must be a number ≥ 0 (got {value!r})")
    limits = {
        "rate_limit_per_minute": settings.rate_limit_per_minute,
        "data_rate_limit_per_minute": settings.data_limit,  # None stands for the trading limit
    }
    for name, limit in limits.items():
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"{name} must be a whole number ≥ 0 (got {limit!r})")
    if not isinstance(settings.seed, int) or isinstance(settings.seed, bool):
        raise ValueError(f"seed must be a whole number (got {settings.seed!r})")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status * 100_000 + 10_000, "message": message}, status_code=status)


def install_faults(app: FastAPI, faults: FaultInjector) -> None:
    """Add the fault and rate-limit middleware (runs after authentication)."""

    @app.middleware("http")
    async def inject(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path.startswith("/admin"):
            return await call_next(request)
        settings = faults.settings
        budget = budget_of(request.url.path)
        limit = faults.limit_of(budget)
        limited, remaining, reset = faults.rate_limited(budget)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if limited:
            faults.count("rate_limited")
            response: Response = JSONResponse(
                {"code": 42910000, "message": "rate limit exceeded"}, status_code=429
            )
        else:
            response = await _faulty(request, call_next, faults, settings)
        if limit:
            response.headers.update(headers)
        return response


async def _faulty(
    request: Request,
    call_next: Callable[[Request], Awaitable[Response]],
    faults: FaultInjector,
    settings: FaultSettings,
) -> Response:
    if settings.latency_ms:
        await asyncio.sleep(settings.latency_ms / 1000)
    if faults.draw(settings.timeout_rate):
        faults.count("timeout")
        await asyncio.sleep(settings.timeout_seconds)
        return _error(504, "gateway timeout (injected)")
    if faults.draw(settings.error_rate):
        faults.count("server_error")
        return _error(faults.server_error_status(), "internal server error (injected)")
    submitting = request.method == "POST" and request.url.path.rstrip("/") == "/v2/orders"
    if submitting and faults.draw(settings.lose_response_rate):
        response = await call_next(request)
        if response.status_code == 200:
            faults.count("lost_response")
            return _error(500, "internal server error (injected after the order was accepted)")
        return response
    return await call_next(request)
