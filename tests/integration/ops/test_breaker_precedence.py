"""Trip precedence (kill > manual > automatic) on both stores: a lower trip never replaces a higher
one, the monitor never lifts a kill or a manual trip, and concurrent writers cannot undo a trip."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.ops.support import QUIET, ManualClock, audit_actions
from trader.broker.base import Account, Broker, Position
from trader.data.paths import DataPaths
from trader.ops.breakers import (
    NEVER_TRIPPED,
    BreakerError,
    BreakerState,
    BreakerStatus,
    BreakerStore,
    CircuitBreaker,
    TripReason,
)
from trader.ops.monitor import PostTradeMonitor
from trader.signal.service import SignalBlockedError, SignalService
from trader.store.models import AuditLog

K = TripReason


class SteadyBroker:
    """Just the account and positions the monitor reads; ``equity`` is set by the test."""

    def __init__(self, equity: str, last_equity: str) -> None:
        self.equity, self.last_equity = Decimal(equity), Decimal(last_equity)

    def get_account(self) -> Account:
        return Account("a", "1", "ACTIVE", "USD", self.equity, self.equity, self.equity,
                       last_equity=self.last_equity)  # fmt: skip

    def get_positions(self) -> list[Position]:
        return []


class StaleFirstLoad:
    """A store whose first ``load`` returns ``old``: another writer changed the state after we read."""

    def __init__(self, store: BreakerStore, old: BreakerStatus) -> None:
        self._store = store
        self._old: BreakerStatus | None = old

    def load(self) -> BreakerStatus:
        old, self._old = self._old, None
        return old if old is not None else self._store.load()

    def save(self, status: BreakerStatus) -> None:
        self._store.save(status)

    def save_if(self, expected: BreakerStatus, status: BreakerStatus) -> bool:
        return self._store.save_if(expected, status)

    def describe(self) -> str:
        return self._store.describe()


def _monitor(breaker: CircuitBreaker, clock: ManualClock, broker: SteadyBroker) -> PostTradeMonitor:
    return PostTradeMonitor(cast(Broker, broker), breaker, clock=clock)


def _audit_details(engine: Engine, action: str) -> list[dict[str, object]]:
    with Session(engine) as session:
        return list(session.scalars(select(AuditLog.details).where(AuditLog.action == action)))


@pytest.mark.parametrize(
    ("held", "lower"),
    [(K.KILL, K.DRAWDOWN), (K.KILL, K.MANUAL), (K.MANUAL, K.STALE_DATA), (K.MANUAL, K.BROKER_ERRORS)],
)
def test_a_lower_trip_never_replaces_a_higher_one(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine, held: K, lower: K
) -> None:
    first = breaker.trip(held, "operator", "alice")
    clock.advance(timedelta(minutes=1))
    assert breaker.trip(lower, "6% below the peak", "monitor") == first
    clock.advance(timedelta(minutes=1))
    breaker.trip(lower, "7% below the peak", "monitor")  # the monitor's next tick: audited once
    assert breaker.status() == first and breaker.status().kind is held
    assert not breaker.allows(risk_reducing=False)
    assert audit_actions(migrated_engine) == [
        ("circuit.trip", "alice"),
        ("circuit.trip_suppressed", "monitor"),
    ]
    [details] = _audit_details(migrated_engine, "circuit.trip_suppressed")
    assert details["kind"] == lower.value and details["holding"] == {
        "state": "TRIPPED",
        "reason": first.reason,
    }


def test_a_trip_of_an_unrecognised_kind_ranks_as_manual(breaker: CircuitBreaker, clock: ManualClock) -> None:
    """A reason this version does not know (written by hand, or by a newer version) may stand for
    anything: the monitor's trips do not replace it, an operator's do."""
    legacy = BreakerStatus(BreakerState.TRIPPED, "legacy: halted by hand", clock.now)
    breaker.store.save(legacy)
    assert breaker.trip(K.BROKER_ERRORS, "9 of 10 calls failed", "monitor") == legacy
    assert breaker.trip(K.MANUAL, "looked at it", "alice").kind is K.MANUAL


def test_after_a_kill_a_drawdown_keeps_signals_blocked_and_the_monitor_never_lifts_it(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine, tmp_path: Path
) -> None:
    breaker.trip(K.KILL, "runaway strategy", "alice")
    # Closing everything realised a loss: the monitor measures a 6% drawdown on its next tick.
    account = SteadyBroker("94000", "100000")
    clock.advance(timedelta(minutes=1))
    assert _monitor(breaker, clock, account).check().breaches[0].kind is K.DRAWDOWN
    assert breaker.status().kind is K.KILL and breaker.status().reason == "kill: runaway strategy"
    signals = SignalService(migrated_engine, DataPaths(tmp_path), strategy="gate", breaker=breaker)
    with pytest.raises(SignalBlockedError, match="kill switch"):
        signals.run(clock.now.date())

    # Next day: no drawdown, the kill approved, the quiet period over. Still the operator's to lift.
    account.last_equity = account.equity
    clock.advance(timedelta(days=1))
    breaker.approve("bob", "looked at the kill")
    clock.advance(QUIET + timedelta(seconds=1))
    reading = _monitor(breaker, clock, account).check()
    assert reading.clear and reading.breaker is BreakerState.TRIPPED
    assert breaker.status().kind is K.KILL
    assert ("circuit.clear", "monitor") not in audit_actions(migrated_engine)
    assert breaker.clear("bob").state is BreakerState.OPEN  # the operator's clear still works


def test_the_monitor_does_not_lift_a_manual_trip(breaker: CircuitBreaker, clock: ManualClock) -> None:
    breaker.trip(K.MANUAL, "maintenance", "alice")
    breaker.trip(K.STALE_DATA, "newest bar 2 sessions behind", "monitor")
    breaker.approve("bob")
    clock.advance(QUIET + timedelta(seconds=1))
    decision = breaker.try_recover(conditions_clear=True, actor="monitor", automatic_only=True)
    assert not decision.recovered
    assert decision.blockers == ("a manual trip is lifted only by an operator: 'trader circuit clear'",)
    assert breaker.status().kind is K.MANUAL


@pytest.mark.parametrize(
    ("lower", "higher"), [(K.DRAWDOWN, K.KILL), (K.STALE_DATA, K.MANUAL), (K.MANUAL, K.KILL)]
)
def test_a_higher_trip_replaces_a_lower_one(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine, lower: K, higher: K
) -> None:
    breaker.trip(lower, "first problem", "monitor")
    breaker.approve("alice")
    clock.advance(timedelta(minutes=1))
    status = breaker.trip(higher, "runaway strategy", "carol")
    assert breaker.status() == status
    assert status.kind is higher and status.changed_at == clock.now and not status.approved
    assert audit_actions(migrated_engine) == [
        ("circuit.trip", "monitor"),
        ("circuit.approve", "alice"),
        ("circuit.trip", "carol"),
    ]


def test_a_trip_that_lost_a_race_with_a_kill_does_not_replace_it(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    """The monitor read OPEN, then a kill landed before it wrote its drawdown: the kill holds."""
    kill = breaker.trip(K.KILL, "runaway strategy", "alice")
    late = CircuitBreaker(StaleFirstLoad(breaker.store, NEVER_TRIPPED), migrated_engine, clock=clock)
    assert late.trip(K.DRAWDOWN, "6% below the peak", "monitor") == kill
    assert breaker.status() == kill
    assert audit_actions(migrated_engine)[-1] == ("circuit.trip_suppressed", "monitor")


def test_a_kill_during_a_recovery_stops_it(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    """The monitor read an approved drawdown, then a kill landed before it reopened: no reopening."""
    breaker.trip(K.DRAWDOWN, "6% below the peak", "monitor")
    breaker.approve("bob")
    clock.advance(QUIET + timedelta(seconds=1))
    approved = breaker.status()
    kill = breaker.trip(K.KILL, "runaway strategy", "alice")
    late = CircuitBreaker(
        StaleFirstLoad(breaker.store, approved), migrated_engine, clock=clock, quiet_period=QUIET
    )
    decision = late.try_recover(conditions_clear=True, automatic_only=True)
    assert not decision.recovered
    assert decision.blockers == ("the breaker changed while recovering: check it again",)
    assert breaker.status() == kill
    # The clear was audited before the attempt (as always), then its abort.
    assert [a for a, _ in audit_actions(migrated_engine)][-2:] == ["circuit.clear", "circuit.clear_aborted"]


def test_an_approval_that_lost_a_race_with_a_new_trip_is_refused(
    breaker: CircuitBreaker, clock: ManualClock, migrated_engine: Engine
) -> None:
    breaker.trip(K.DRAWDOWN, "6% below the peak", "monitor")
    before = breaker.status()
    kill = breaker.trip(K.KILL, "runaway strategy", "alice")
    late = CircuitBreaker(StaleFirstLoad(breaker.store, before), migrated_engine, clock=clock)
    with pytest.raises(BreakerError, match="changed while approving"):
        late.approve("bob")
    assert breaker.status() == kill and not breaker.status().approved
    assert [a for a, _ in audit_actions(migrated_engine)][-1] == "circuit.approve_aborted"


def test_save_if_only_writes_over_the_expected_status(breaker: CircuitBreaker, clock: ManualClock) -> None:
    store = breaker.store
    tripped = BreakerStatus(BreakerState.TRIPPED, "manual: x", clock.now)
    assert store.save_if(NEVER_TRIPPED, tripped) and store.load() == tripped
    assert not store.save_if(NEVER_TRIPPED, BreakerStatus(BreakerState.OPEN, None, clock.now))
    reopened = BreakerStatus(BreakerState.OPEN, None, clock.now + timedelta(minutes=1))
    assert store.save_if(tripped, reopened) and store.load() == reopened
