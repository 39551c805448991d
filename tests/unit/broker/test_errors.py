"""Error classification: SDK ``APIError``s and real ``requests`` failures → typed, retry-aware errors."""

from __future__ import annotations

import pytest
import requests

from tests.unit.broker.fakes import api_error
from tests.unit.broker.rawserver import closed_port_url, tcp_server
from trader.broker.errors import (
    AmbiguousBrokerError,
    AuthError,
    BrokerError,
    DuplicateClientOrderIdError,
    InsufficientFundsError,
    InvalidOrderError,
    NotCancelableError,
    NotFoundError,
    RateLimitError,
    RejectedOrderError,
    TemporaryBrokerError,
    UnexpectedResponseError,
    classify,
    never_reached_server,
    parse_error_body,
)
from trader.errors import TraderError


@pytest.mark.parametrize(
    ("status", "body", "operation", "expected"),
    [
        (
            422,
            {"code": 40010001, "message": "client_order_id must be unique"},
            "submit order",
            DuplicateClientOrderIdError,
        ),
        (
            403,
            {
                "buying_power": "400000.24",
                "code": 40310000,
                "cost_basis": "31319000.3",
                "message": "insufficient buying power",
            },
            "submit order",
            InsufficientFundsError,
        ),
        (
            403,
            {
                "code": 40310000,
                "message": "insufficient qty available for order (requested: 1000, available: 0)",
            },
            "submit order",
            InsufficientFundsError,
        ),
        (
            403,
            {"code": 40310000, "message": "potential wash trade detected. use complex orders"},
            "submit order",
            RejectedOrderError,
        ),
        (
            422,
            {"code": 42210000, "message": 'asset "ZZZZNOTREAL" not found'},
            "submit order",
            InvalidOrderError,
        ),
        (
            400,
            {"code": 40010000, "message": "request body format is invalid"},
            "submit order",
            InvalidOrderError,
        ),
        (
            422,
            {"code": 42210000, "message": 'order is already in "filled" state'},
            "cancel order",
            NotCancelableError,
        ),
        (404, {"code": 40410000, "message": "order not found for x"}, "get order", NotFoundError),
        (404, {"code": 40410000, "message": "position does not exist"}, "get position", NotFoundError),
        (401, {"code": 40110000, "message": "request is not authorized"}, "get account", AuthError),
        (401, {"message": "unauthorized."}, "get account", AuthError),
        (403, {"message": "forbidden."}, "submit order", AuthError),
        (429, {"code": 42910000, "message": "rate limit exceeded"}, "submit order", RateLimitError),
        (500, {"code": 50010000, "message": "internal server error"}, "get order", TemporaryBrokerError),
        (503, "<html>Service Unavailable</html>", "list orders", TemporaryBrokerError),
        (500, {"code": 50010000, "message": "internal server error"}, "submit order", AmbiguousBrokerError),
        (502, "", "submit order", AmbiguousBrokerError),
        (504, "", "close position", AmbiguousBrokerError),
    ],
)
def test_api_errors_are_classified(status: int, body: object, operation: str, expected: type) -> None:
    idempotent = operation not in {"submit order", "close position"}
    error = classify(api_error(status, body), operation, idempotent=idempotent)  # type: ignore[arg-type]
    assert type(error) is expected
    assert isinstance(error, BrokerError) and isinstance(error, TraderError)
    assert error.status == status
    assert error.retry_safe == issubclass(expected, TemporaryBrokerError)
    assert f"HTTP {status}" in str(error) and operation in str(error)


def test_code_less_and_non_json_bodies_never_raise() -> None:
    # alpaca-py's APIError.code would raise KeyError / JSONDecodeError on these.
    for body in ('{"message": "unauthorized."}', "", "not json", "[1, 2]", '{"code": "abc"}'):
        sdk_error = api_error(401, body)
        error = classify(sdk_error, "get account", idempotent=True)
        assert isinstance(error, AuthError)
        assert error.code is None


def test_error_body_parts() -> None:
    body = parse_error_body('{"code": 40310000, "message": "insufficient buying power", "buying_power": "1"}')
    assert (body.code, body.message, body.fields["buying_power"]) == (
        40310000,
        "insufficient buying power",
        "1",
    )
    assert parse_error_body("<html>oops</html>") == parse_error_body("<html>oops</html>")
    assert parse_error_body("<html>oops</html>").code is None
    assert parse_error_body("").message == ""


def test_rate_limit_reads_the_reset_header() -> None:
    error = classify(
        api_error(429, {"code": 42910000, "message": "rate limit exceeded"}, {"Retry-After": "7"}),
        "get clock",
        idempotent=True,
    )
    assert isinstance(error, RateLimitError)
    assert error.retry_after == 7.0


def test_secrets_never_appear_in_messages() -> None:
    secret = "SECRETKEY123456"
    body = {"code": 40110000, "message": f"key {secret} is not authorized"}
    error = classify(api_error(401, body), "get account", idempotent=True, secrets=[secret])
    assert secret not in str(error)
    assert "***" in str(error)


def test_connection_refused_is_retry_safe_even_for_a_submit() -> None:
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"{closed_port_url()}/v2/orders", json={}, timeout=2)
    assert never_reached_server(caught.value)
    error = classify(caught.value, "submit order", idempotent=False)
    assert type(error) is TemporaryBrokerError
    assert error.retry_safe


def test_read_timeout_is_ambiguous_for_a_submit_and_temporary_for_a_read() -> None:
    with tcp_server("stall") as url, pytest.raises(requests.ReadTimeout) as caught:
        requests.post(f"{url}/v2/orders", json={}, timeout=0.3)
    assert not never_reached_server(caught.value)
    assert type(classify(caught.value, "submit order", idempotent=False)) is AmbiguousBrokerError
    assert type(classify(caught.value, "get order", idempotent=True)) is TemporaryBrokerError


def test_connection_reset_after_sending_is_ambiguous_for_a_submit() -> None:
    with tcp_server("reset") as url, pytest.raises(requests.ConnectionError) as caught:
        requests.post(f"{url}/v2/orders", json={}, timeout=2)
    assert not never_reached_server(caught.value)
    error = classify(caught.value, "submit order", idempotent=False)
    assert type(error) is AmbiguousBrokerError
    assert not error.retry_safe


def test_unreadable_answers_are_unexpected_responses() -> None:
    error = classify(ValueError("1 validation error for Order"), "get order", idempotent=True)
    assert isinstance(error, UnexpectedResponseError)
    assert not error.retry_safe
