"""Our one retry policy for broker calls: bounded attempts, exponential backoff, jitter.

The SDK's own re-send (429/504, 3 x 3 s, blind even for order submissions) is switched off in
:mod:`trader.broker.alpaca`, so this is the only place a request is ever repeated, and it repeats only
errors whose ``retry_safe`` is true. ``sleep`` and the random source are injectable for tests.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from trader.broker.errors import BrokerError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` re-sends at most; the n-th waits ``base_delay * 2**(n-1)`` capped at ``max_delay``,
    reduced by up to ``jitter`` (a fraction) at random so that many clients do not retry in step.
    A 429's ``retry_after`` hint is honoured up to ``max_delay``."""

    max_retries: int = 3
    base_delay: float = 0.2
    max_delay: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_delay < 0 or self.max_delay < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("retry policy values must be non-negative (jitter in [0, 1])")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before re-send number ``retry`` (1-based)."""
        capped: float = min(self.max_delay, self.base_delay * 2.0 ** (retry - 1))
        return capped * (1 - self.jitter * rng.random())

    def wait_for(self, retry: int, error: BrokerError, rng: random.Random) -> float:
        """Seconds to wait before re-send ``retry`` after ``error``."""
        wait = self.backoff(retry, rng)
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_delay))
        return wait


@dataclass
class Retrier:
    """Runs a call under a :class:`RetryPolicy`. ``sleep``/``rng`` are swappable for tests."""

    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def call(self, operation: Callable[[], T], what: str = "broker call") -> T:
        """``operation()``, repeated while it raises a retry-safe :class:`BrokerError` and retries remain.

        Anything that is not retry-safe (and the last failure) is raised unchanged.
        """
        retry = 0
        while True:
            try:
                return operation()
            except BrokerError as error:
                if not error.retry_safe or retry >= self.policy.max_retries:
                    raise
                retry += 1
                wait = self.policy.wait_for(retry, error, self.rng)
                log.info("%s: %s; retry %d/%d in %.2fs", what, error, retry, self.policy.max_retries, wait)
                self.sleep(wait)
