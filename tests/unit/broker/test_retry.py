"""The retry policy: bounded, exponential with jitter, only for retry-safe errors."""

from __future__ import annotations

import random

import pytest

from trader.broker.errors import (
    AmbiguousBrokerError,
    InvalidOrderError,
    RateLimitError,
    TemporaryBrokerError,
)
from trader.broker.retry import Retrier, RetryPolicy


def _flaky(failures: list[Exception], result: str = "ok") -> tuple[list[int], object]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return calls, operation


def test_backoff_doubles_up_to_the_cap_and_jitter_only_shortens() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.1, max_delay=1.0, jitter=0.5)
    rng = random.Random(3)
    for retry, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        for _ in range(50):
            wait = policy.backoff(retry, rng)
            assert ceiling * 0.5 <= wait <= ceiling + 1e-12
    exact = RetryPolicy(base_delay=0.1, max_delay=1.0, jitter=0.0)
    assert [exact.backoff(n, rng) for n in (1, 2, 3)] == [0.1, 0.2, 0.4]


def test_temporary_errors_are_retried_until_success() -> None:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(max_retries=3, jitter=0), sleep=slept.append)
    calls, operation = _flaky([TemporaryBrokerError("503"), TemporaryBrokerError("503")])
    assert retrier.call(operation) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3
    assert slept == [0.2, 0.4]


def test_retries_are_bounded() -> None:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(max_retries=2), sleep=slept.append)
    calls, operation = _flaky([TemporaryBrokerError(f"503 #{n}") for n in range(5)])
    with pytest.raises(TemporaryBrokerError, match="#2"):
        retrier.call(operation)  # type: ignore[arg-type]
    assert len(calls) == 3 and len(slept) == 2


@pytest.mark.parametrize("error", [InvalidOrderError("422"), AmbiguousBrokerError("timeout on submit")])
def test_unsafe_errors_are_never_retried(error: Exception) -> None:
    slept: list[float] = []
    calls, operation = _flaky([error])
    with pytest.raises(type(error)):
        Retrier(RetryPolicy(max_retries=5), sleep=slept.append).call(operation)  # type: ignore[arg-type]
    assert len(calls) == 1 and slept == []


def test_rate_limit_hint_is_honoured_up_to_the_cap() -> None:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(max_retries=2, base_delay=0.1, max_delay=5.0, jitter=0), sleep=slept.append)
    limits = [RateLimitError("429", retry_after=2.5), RateLimitError("429", retry_after=60)]
    _calls, operation = _flaky(limits)
    assert retrier.call(operation) == "ok"  # type: ignore[arg-type]
    assert slept == [2.5, 5.0]


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError):
        RetryPolicy(jitter=2)
