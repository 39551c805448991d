"""``trader circuit clear`` re-measures a broker-error trip at the paper broker, faults injected."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from tests.integration.broker.conftest import set_faults
from tests.support.paper_broker import RunningBroker
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import Account
from trader.cli.main import run
from trader.ops.breakers import BreakerState, CircuitBreaker, DatabaseBreakerStore, TripReason


class _FailingThreeInFour:
    """The paper broker with its fault injection on for three of every four account reads (the first
    of each four succeeds): a broker that still fails most calls, but not the first one."""

    def __init__(self, paper: RunningBroker, broker: AlpacaBroker) -> None:
        self._paper, self._broker, self.reads = paper, broker, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._broker, name)

    def get_account(self) -> Account:
        self.reads += 1
        set_faults(self._paper, error_rate=0.0 if self.reads % 4 == 1 else 1.0)
        return self._broker.get_account()


@pytest.fixture
def tripped(cli_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> CircuitBreaker:
    """A broker-error trip, approved; the CLI on the same database (no Redis), without retries so
    every injected 5xx is a failed call, as the monitor counts them."""
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("BROKER_MAX_RETRIES", "0")
    breaker = CircuitBreaker(DatabaseBreakerStore(cli_engine), cli_engine, quiet_period=timedelta(0))
    breaker.trip(TripReason.BROKER_ERRORS, "3 of the last 4 broker calls failed", "monitor")
    breaker.approve("bob")
    return breaker


def test_a_broker_failing_most_calls_is_not_judged_clear_by_one_good_read(
    paper: RunningBroker,
    broker: AlpacaBroker,
    tripped: CircuitBreaker,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    flaky = _FailingThreeInFour(paper, broker)
    monkeypatch.setattr("trader.cli.ops._broker", lambda settings: flaky)

    assert run(["circuit", "clear", "--actor", "bob", "--quiet-minutes", "0"]) == 1

    captured = capsys.readouterr()
    assert flaky.reads == 5  # four probes, then the monitor's own read
    assert "not clear: broker_errors: 3 of the last 5 broker calls failed (limit 50% over 0:05:00)" in (
        captured.out
    )
    assert "broker call failed: read 2 of 4:" in captured.out and "injected" in captured.out
    assert "the tripping conditions are not clear yet" in captured.err
    assert tripped.state() is BreakerState.TRIPPED


def test_a_broker_failing_every_call_is_not_clear(
    paper: RunningBroker, tripped: CircuitBreaker, capsys: pytest.CaptureFixture[str]
) -> None:
    set_faults(paper, error_rate=1.0)
    assert run(["circuit", "clear", "--actor", "bob", "--quiet-minutes", "0"]) == 1
    out = capsys.readouterr().out
    assert "not clear: broker unreadable:" in out
    assert "not clear: broker_errors: 5 of the last 5 broker calls failed" in out
    assert tripped.state() is BreakerState.TRIPPED


def test_a_healthy_broker_clears_the_trip(
    paper: RunningBroker, tripped: CircuitBreaker, capsys: pytest.CaptureFixture[str]
) -> None:
    set_faults(paper, error_rate=0.0)
    assert run(["circuit", "clear", "--actor", "bob", "--quiet-minutes", "0"]) == 0
    out = capsys.readouterr().out
    assert "circuit breaker OPEN" in out and "not clear" not in out and "failed" not in out
    assert tripped.state() is BreakerState.OPEN
