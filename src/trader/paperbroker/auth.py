"""Key-pair authentication: every request needs ``APCA-API-KEY-ID`` and ``APCA-API-SECRET-KEY``."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from trader.paperbroker.errors import unauthorized

KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"  # noqa: S105 - a header name, not a secret


def credentials_match(key: str | None, secret: str | None, expected_key: str, expected_secret: str) -> bool:
    """Whether the presented pair equals the expected one (constant-time comparison)."""
    if key is None or secret is None:
        return False
    key_ok = hmac.compare_digest(key.encode(), expected_key.encode())
    secret_ok = hmac.compare_digest(secret.encode(), expected_secret.encode())
    return key_ok and secret_ok


def install_auth(app: FastAPI, key_id: str, secret_key: str) -> None:
    """Refuse every request without the configured key pair with 401 ``{"message": "unauthorized."}``.

    Runs before routing and parameter validation, so an unauthenticated caller learns nothing else.
    """

    @app.middleware("http")
    async def check_keys(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        headers = request.headers
        if not credentials_match(headers.get(KEY_HEADER), headers.get(SECRET_HEADER), key_id, secret_key):
            return unauthorized()
        return await call_next(request)
