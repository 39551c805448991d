"""Alpaca-shaped JSON errors: ``{"code": <8 digits>, "message": "..."}``, never HTML or ``{"detail"}``.

The first three digits of ``code`` are the HTTP status (``42210000`` for a 422), as on Alpaca.
Market data answers bad credentials with a code-less body (``{"message": "unauthorized."}``), see
:func:`unauthorized`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

#: The code Alpaca's market-data API uses for an invalid parameter (HTTP 422).
INVALID_PARAMETER = 42210000


class AlpacaError(Exception):
    """An error answered as ``status`` with ``{"code": code, "message": message}``.

    ``code`` ``None`` leaves the code out, as Alpaca does for some errors.
    """

    def __init__(self, status: int, message: str, code: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        #: Further keys of the body, e.g. ``buying_power`` on an insufficient-buying-power 403.
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        if self.code is None:
            return {"message": self.message, **self.extra}
        return {"code": self.code, "message": self.message, **self.extra}


def invalid(message: str) -> AlpacaError:
    """A 422 for an invalid parameter, e.g. ``{"code":42210000,"message":"invalid timeframe"}``."""
    return AlpacaError(422, message, INVALID_PARAMETER)


def unauthorized() -> JSONResponse:
    """401 for missing or wrong keys, with the code-less body Alpaca sends (reference §4)."""
    return JSONResponse({"message": "unauthorized."}, status_code=401)


def _default_code(status: int) -> int:
    return status * 100_000 + 10_000  # 404 -> 40410000, like Alpaca's 4041xxxx codes


def _describe_validation(exc: RequestValidationError) -> str:
    problems: list[str] = []
    for item in exc.errors():
        location = [str(part) for part in item.get("loc", ()) if part not in ("query", "path", "body")]
        name = ".".join(location) or "request"
        kind = str(item.get("type", ""))
        if kind == "missing":
            problems.append(f"missing required parameter: {name}")
        else:
            problems.append(f"invalid {name}: {item.get('msg', 'invalid value')}")
    return "; ".join(problems) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error, including FastAPI's validation and routing errors, in Alpaca's shape."""

    async def alpaca_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AlpacaError)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        error = invalid(_describe_validation(exc))
        return JSONResponse(error.body(), status_code=error.status)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        message = str(exc.detail).lower() if exc.detail else "error"
        return JSONResponse(
            {"code": _default_code(exc.status_code), "message": message},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"code": 50010000, "message": f"internal server error: {type(exc).__name__}"},
            status_code=500,
        )

    app.add_exception_handler(AlpacaError, alpaca_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)
