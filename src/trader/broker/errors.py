"""Typed broker errors, and the one place that turns SDK/HTTP failures into them.

Every error says whether sending the same request again is safe (``retry_safe``):

================================  ===========  =============================================================
class                             retry safe   raised for
================================  ===========  =============================================================
``TemporaryBrokerError``          yes          5xx on a read or an idempotent write, connection refused,
                                               connect timeout, read timeout on a read
``RateLimitError``                yes          429 (wait ``retry_after`` seconds first)
``AmbiguousBrokerError``          no           timeout / reset / 5xx on a non-idempotent write (submit,
                                               replace, close position): the broker may or may not have acted;
                                               resolve by looking the order up by ``client_order_id``
``AuthError``                     no           401, code-less 403 (wrong keys, wrong environment)
``NotFoundError``                 no           404
``InvalidOrderError``             no           400/422 on an order (unknown symbol, bad price, ...)
``RejectedOrderError``            no           403 with a code on an order (wash trade, no shorting, ...)
``InsufficientFundsError``        no           403 insufficient buying power / quantity
``DuplicateClientOrderIdError``   no           422 ``client_order_id must be unique``
``NotCancelableError``            no           422 on a cancel (already filled, canceled, ...)
``UnexpectedResponseError``       no           the broker answered something we cannot read
``BrokerError``                   no           anything else
================================  ===========  =============================================================

``alpaca-py``'s ``APIError.code``/``.message`` run ``json.loads(body)["code"]`` and raise on code-less or
non-JSON bodies (Alpaca sends ``{"message": "unauthorized."}``), so this module never touches them: it
parses ``str(error)`` (the raw body) itself.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from alpaca.common.exceptions import APIError
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from trader.data.sources.alpaca_source import network_reason, status_code_of
from trader.errors import TraderError

#: Alpaca's code for "client_order_id must be unique" (sent with HTTP 422, despite the 400 prefix).
DUPLICATE_CLIENT_ORDER_ID_CODE = 40010001
_MESSAGE_LIMIT = 300


class BrokerError(TraderError):
    """A broker call failed. ``retry_safe`` says whether sending the same request again is safe."""

    retry_safe: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        operation: str = "",
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
        client_order_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.operation = operation
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.client_order_id = client_order_id


class TemporaryBrokerError(BrokerError):
    """The request was not carried out and may succeed later: safe to retry after a pause."""

    retry_safe = True


class RateLimitError(TemporaryBrokerError):
    """HTTP 429: too many requests. ``retry_after`` is the broker's hint in seconds, if it gave one."""


class AmbiguousBrokerError(BrokerError):
    """The broker may or may not have acted (timeout, reset, 5xx after a write).

    Never resend blindly: look the order up by ``client_order_id`` first.
    """


class AuthError(BrokerError):
    """The keys were refused (wrong keys, or paper keys on the live host and vice versa)."""


class NotFoundError(BrokerError):
    """The order, position or asset does not exist."""


class InvalidOrderError(BrokerError):
    """The broker refused the order as invalid; sending it again will fail the same way."""


class RejectedOrderError(InvalidOrderError):
    """The broker refused a valid order because of the account's state (wash trade, no shorting...)."""


class InsufficientFundsError(RejectedOrderError):
    """Not enough buying power, or not enough shares to sell."""


class DuplicateClientOrderIdError(InvalidOrderError):
    """An order with this ``client_order_id`` already exists at the broker."""


class NotCancelableError(BrokerError):
    """The order can no longer be canceled (already filled, canceled, expired...)."""


class UnexpectedResponseError(BrokerError):
    """The broker answered something that is not what its API documents."""


@dataclass(frozen=True)
class ErrorBody:
    """Alpaca's JSON error body, read leniently: ``code`` may be absent, the body may not be JSON."""

    code: int | None
    message: str
    fields: dict[str, Any]


def parse_error_body(text: str) -> ErrorBody:
    """``{"code": 40310000, "message": "..."}`` → its parts; anything else → the text as message."""
    try:
        parsed = json.loads(text) if text else None
    except ValueError:
        return ErrorBody(None, text.strip(), {})
    if not isinstance(parsed, dict):
        return ErrorBody(None, text.strip(), {})
    raw_code = parsed.get("code")
    code = int(raw_code) if isinstance(raw_code, int | str) and str(raw_code).isdigit() else None
    message = str(parsed.get("message", "")) or text.strip()
    return ErrorBody(code, message, parsed)


def classify(
    exc: BaseException,
    operation: str,
    *,
    idempotent: bool,
    secrets: Sequence[str] = (),
    client_order_id: str | None = None,
) -> BrokerError:
    """The typed error for a failure of ``operation``.

    ``idempotent`` is False for requests that create something (submit an order, close a position):
    for those a failure after the request may have reached the broker is *ambiguous*, not temporary.
    """
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, APIError):
        return _from_api_error(exc, operation, idempotent, secrets, client_order_id)
    if isinstance(exc, requests.RequestException):
        return _from_network_error(exc, operation, idempotent, secrets, client_order_id)
    # pydantic's ValidationError is a ValueError: the SDK could not read the broker's answer.
    reason = clean(f"{type(exc).__name__}: {exc}", secrets)
    return UnexpectedResponseError(
        f"{operation} failed: unexpected response: {reason}",
        operation=operation,
        client_order_id=client_order_id,
    )


def _from_api_error(
    exc: APIError, operation: str, idempotent: bool, secrets: Sequence[str], client_order_id: str | None
) -> BrokerError:
    status = status_code_of(exc)
    body = parse_error_body(str(exc))
    code_text = f" (code {body.code})" if body.code is not None else ""
    message = f"{operation} failed: HTTP {status or '?'}{code_text}: {clean(body.message, secrets)}"
    kind = _api_error_class(status, body, operation, idempotent)
    retry_after = _retry_after(exc) if kind is RateLimitError else None
    return kind(
        message,
        operation=operation,
        status=status,
        code=body.code,
        retry_after=retry_after,
        client_order_id=client_order_id,
    )


def _api_error_class(
    status: int | None, body: ErrorBody, operation: str, idempotent: bool
) -> type[BrokerError]:
    is_order = operation in {"submit order", "replace order", "close position"}
    if status is None or status >= 500:
        return TemporaryBrokerError if idempotent else AmbiguousBrokerError
    if status == 429:
        return RateLimitError
    if status == 401 or (status == 403 and body.code is None):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 403 and is_order:
        text = body.message.lower()
        return InsufficientFundsError if "insufficient" in text else RejectedOrderError
    if status == 422 and body.code == DUPLICATE_CLIENT_ORDER_ID_CODE and "unique" in body.message.lower():
        return DuplicateClientOrderIdError
    if status == 422 and operation == "cancel order":
        return NotCancelableError
    if status in {400, 422} and is_order:
        return InvalidOrderError
    return BrokerError


def _retry_after(exc: APIError) -> float | None:
    """Seconds to wait from ``Retry-After`` or Alpaca's ``X-RateLimit-Reset`` (unix seconds)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if "Retry-After" in headers:
            return max(0.0, float(headers["Retry-After"]))
        if "X-RateLimit-Reset" in headers:
            return max(0.0, float(headers["X-RateLimit-Reset"]) - time.time())
    except (TypeError, ValueError):
        return None
    return None


def _from_network_error(
    exc: requests.RequestException,
    operation: str,
    idempotent: bool,
    secrets: Sequence[str],
    client_order_id: str | None,
) -> BrokerError:
    reason = clean(network_reason(exc), secrets)
    message = f"{operation} failed: {type(exc).__name__}: {reason}"
    kind: type[BrokerError]
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.InvalidURL):
        kind = BrokerError  # configuration: retrying does not fix a bad certificate or URL
    elif never_reached_server(exc):
        kind = TemporaryBrokerError
    elif isinstance(exc, _MAYBE_PROCESSED):
        kind = TemporaryBrokerError if idempotent else AmbiguousBrokerError
    else:
        kind = BrokerError
    return kind(message, operation=operation, client_order_id=client_order_id)


#: Failures after the request may have been read by the server.
_MAYBE_PROCESSED = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_NO_CONNECTION = (NewConnectionError, NameResolutionError, ConnectTimeoutError, ConnectionRefusedError)


def never_reached_server(exc: BaseException) -> bool:
    """True when the request provably never reached the server (no connection was made).

    Connection refused, DNS failure and connect timeouts happen before a byte of the request is
    sent, so even an order submission is safe to retry. A reset or read timeout is not: the server
    may have read and acted on the request.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    return any(isinstance(cause, _NO_CONNECTION) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps: ``__cause__``, ``__context__``, exception args, ``.reason``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(item for item in linked if isinstance(item, BaseException))


def clean(text: str, secrets: Sequence[str] = (), limit: int = _MESSAGE_LIMIT) -> str:
    """One line, at most ``limit`` characters, with every secret masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    line = re.sub(r"\s+", " ", text).strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."
