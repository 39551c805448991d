"""The circuit breaker: one account-wide switch between OPEN (normal) and TRIPPED (safe mode).

While TRIPPED only risk-reducing orders (exits) may go out; new entries are blocked. A trip names its
kind (:class:`TripReason`) and a detail; every change is written to ``audit_log``.

Recovery is deliberately slow: back to OPEN only when

1. the conditions that tripped it are clear (the caller says so: the monitor measures them),
2. an operator approved *after* the trip (``trader circuit approve``), and
3. a quiet period (15 minutes by default) has passed since the trip.

A breaker never resets by itself without all three, and a refused recovery says what is missing, so it
is never silently stuck either.

State lives in Redis (``cb:state``, ``cb:reason``, ``cb:ts``, ``cb:approved_by``, ``cb:approved_at``
under an optional key prefix) when ``REDIS_URL`` is set, otherwise in the ``circuit_breakers`` table
(row ``global``). Both stores hold the same :class:`BreakerStatus`, so the breaker behaves identically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trader.config import Settings
from trader.domain.enums import OrderSide
from trader.errors import TraderError, UsageError
from trader.store.models import AuditLog, CircuitBreakerState

log = logging.getLogger(__name__)

#: Name of the account-wide breaker row in ``circuit_breakers``.
GLOBAL_BREAKER = "global"
DEFAULT_QUIET_PERIOD = timedelta(minutes=15)
AUDIT_TARGET = "circuit_breaker"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class BreakerState(StrEnum):
    OPEN = "OPEN"
    TRIPPED = "TRIPPED"


class TripReason(StrEnum):
    """Why the breaker tripped. The first three are measured by the monitor and cleared by it."""

    DRAWDOWN = "drawdown"
    BROKER_ERRORS = "broker_errors"
    STALE_DATA = "stale_data"
    MANUAL = "manual"
    KILL = "kill"

    @property
    def automatic(self) -> bool:
        """Measured conditions (the monitor may recover them); manual and kill trips need an operator."""
        return self in (TripReason.DRAWDOWN, TripReason.BROKER_ERRORS, TripReason.STALE_DATA)


class BreakerError(TraderError):
    """A breaker operation was refused (nothing to approve, recovery conditions not met)."""


class BreakerStoreError(TraderError):
    """The breaker state could not be read or written (Redis or the database is unreachable)."""


@dataclass(frozen=True)
class BreakerStatus:
    """The breaker as stored. ``reason`` is ``"<kind>: <detail>"``; ``changed_at`` the last change."""

    state: BreakerState
    reason: str | None = None
    changed_at: datetime | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None

    @property
    def kind(self) -> TripReason | None:
        """The trip kind, parsed from ``reason`` (``None`` when OPEN or unparseable)."""
        if self.state is not BreakerState.TRIPPED or not self.reason:
            return None
        head = self.reason.split(":", 1)[0].strip()
        try:
            return TripReason(head)
        except ValueError:
            return None

    @property
    def approved(self) -> bool:
        """An approval counts only when given after the current trip."""
        return (
            self.state is BreakerState.TRIPPED
            and self.approved_at is not None
            and self.changed_at is not None
            and self.approved_at >= self.changed_at
        )


NEVER_TRIPPED = BreakerStatus(BreakerState.OPEN)


class BreakerStore(Protocol):
    """Where the breaker's state lives."""

    def load(self) -> BreakerStatus:
        """The stored status (:data:`NEVER_TRIPPED` when nothing is stored)."""
        ...

    def save(self, status: BreakerStatus) -> None:
        """Replace the stored status."""
        ...

    def describe(self) -> str:
        """Where the state is kept, for people (``redis cb:*``, ``database circuit_breakers``)."""
        ...


class RedisBreakerStore:
    """``cb:*`` keys in Redis (``prefix`` in front of each, for tests and several deployments)."""

    FIELDS = ("state", "reason", "ts", "approved_by", "approved_at")

    def __init__(self, client: Any, prefix: str = "") -> None:
        self._client = client
        self._prefix = prefix

    def key(self, field: str) -> str:
        return f"{self._prefix}cb:{field}"

    def describe(self) -> str:
        return f"redis {self.key('*')}"

    def load(self) -> BreakerStatus:
        try:
            raw = self._client.mget([self.key(field) for field in self.FIELDS])
        except Exception as exc:  # redis.RedisError and connection errors alike
            raise BreakerStoreError(f"cannot read the breaker state from Redis: {exc}") from exc
        state, reason, ts, approved_by, approved_at = (_text(value) for value in raw)
        if state is None:
            return NEVER_TRIPPED
        return BreakerStatus(
            state=BreakerState(state),
            reason=reason,
            changed_at=_parse_time(ts),
            approved_by=approved_by,
            approved_at=_parse_time(approved_at),
        )

    def save(self, status: BreakerStatus) -> None:
        values = {
            "state": status.state.value,
            "reason": status.reason,
            "ts": _format_time(status.changed_at),
            "approved_by": status.approved_by,
            "approved_at": _format_time(status.approved_at),
        }
        try:
            # One MULTI/EXEC: a reader never sees half a change.
            pipe = self._client.pipeline(transaction=True)
            for field, value in values.items():
                if value is None:
                    pipe.delete(self.key(field))
                else:
                    pipe.set(self.key(field), value)
            pipe.execute()
        except Exception as exc:
            raise BreakerStoreError(f"cannot write the breaker state to Redis: {exc}") from exc


class DatabaseBreakerStore:
    """The ``circuit_breakers`` row ``name`` (``global``) in the platform database."""

    def __init__(self, engine: Engine, name: str = GLOBAL_BREAKER) -> None:
        self._engine = engine
        self._name = name

    def describe(self) -> str:
        return f"database circuit_breakers[{self._name}]"

    def load(self) -> BreakerStatus:
        try:
            with Session(self._engine) as session:
                row = session.get(CircuitBreakerState, self._name)
        except Exception as exc:
            raise BreakerStoreError(f"cannot read the breaker state from the database: {exc}") from exc
        if row is None:
            return NEVER_TRIPPED
        return BreakerStatus(
            state=BreakerState(row.state),
            reason=row.reason,
            changed_at=row.changed_at,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
        )

    def save(self, status: BreakerStatus) -> None:
        try:
            with Session(self._engine) as session, session.begin():
                row = session.get(CircuitBreakerState, self._name)
                if row is None:
                    row = CircuitBreakerState(name=self._name)
                    session.add(row)
                row.state = status.state.value
                row.reason = status.reason
                row.changed_at = status.changed_at or utc_now()
                row.approved_by = status.approved_by
                row.approved_at = status.approved_at
        except Exception as exc:
            raise BreakerStoreError(f"cannot write the breaker state to the database: {exc}") from exc


@dataclass(frozen=True)
class RecoveryDecision:
    """Whether a recovery attempt returned the breaker to OPEN, and if not, what is missing."""

    recovered: bool
    status: BreakerStatus
    blockers: tuple[str, ...] = ()


class CircuitBreaker:
    """The account-wide breaker over a :class:`BreakerStore`; every change goes to ``audit_log``.

    ``engine`` is the platform database (for the audit log, whichever store holds the state);
    ``clock`` returns the current UTC time (inject one in tests).
    """

    def __init__(
        self,
        store: BreakerStore,
        engine: Engine,
        *,
        clock: Clock = utc_now,
        quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
    ) -> None:
        if quiet_period < timedelta(0):
            raise UsageError(f"quiet period must be >= 0, got {quiet_period}")
        self.store = store
        self._engine = engine
        self._clock = clock
        self.quiet_period = quiet_period

    def status(self) -> BreakerStatus:
        return self.store.load()

    def state(self) -> BreakerState:
        return self.store.load().state

    def allows(self, risk_reducing: bool) -> bool:
        """Whether an order may go out: always when OPEN; only risk-reducing ones when TRIPPED.

        Fails closed: when the state cannot be read, only risk-reducing orders pass.
        """
        if risk_reducing:
            return True
        try:
            return self.store.load().state is BreakerState.OPEN
        except BreakerStoreError as exc:
            log.error("breaker state unreadable, blocking new entries: %s", exc)
            return False

    def trip(self, reason: TripReason, detail: str, actor: str) -> BreakerStatus:
        """Trip (or stay tripped). A repeat of the current kind changes nothing (the monitor trips on
        every tick while a condition lasts); another kind replaces the reason, restarts the quiet period
        and voids an approval, because the new problem has not been looked at."""
        current = self.store.load()
        if current.state is BreakerState.TRIPPED and current.kind is reason:
            return current
        now = self._clock()
        status = BreakerStatus(BreakerState.TRIPPED, f"{reason.value}: {detail}", now)
        self.store.save(status)
        self._audit(actor, "circuit.trip", status.reason, {"kind": reason.value, "previous": _brief(current)})
        log.warning("circuit breaker TRIPPED by %s: %s", actor, status.reason)
        return status

    def approve(self, actor: str, note: str | None = None) -> BreakerStatus:
        """Record an operator's approval to recover (required before any return to OPEN)."""
        current = self.store.load()
        if current.state is not BreakerState.TRIPPED:
            raise BreakerError("nothing to approve: the circuit breaker is OPEN")
        status = replace(current, approved_by=actor, approved_at=self._clock())
        self.store.save(status)
        self._audit(actor, "circuit.approve", note, {"trip": current.reason})
        return status

    def blockers(self, conditions_clear: bool, status: BreakerStatus | None = None) -> tuple[str, ...]:
        """What still prevents a recovery (empty: it may recover now)."""
        status = status or self.store.load()
        if status.state is BreakerState.OPEN:
            return ()
        missing: list[str] = []
        if not conditions_clear:
            missing.append("the tripping conditions are not clear yet")
        if not status.approved:
            missing.append("no approval since the trip: run 'trader circuit approve'")
        left = self.quiet_left(status)
        if left > timedelta(0):
            missing.append(f"quiet period: {_minutes(left)} left of {_minutes(self.quiet_period)}")
        return tuple(missing)

    def quiet_left(self, status: BreakerStatus) -> timedelta:
        if status.state is BreakerState.OPEN or status.changed_at is None:
            return timedelta(0)
        return max(timedelta(0), status.changed_at + self.quiet_period - self._clock())

    def try_recover(self, conditions_clear: bool, actor: str = "monitor") -> RecoveryDecision:
        """Return to OPEN if conditions are clear, an approval exists and the quiet period passed."""
        current = self.store.load()
        if current.state is BreakerState.OPEN:
            return RecoveryDecision(True, current)
        missing = self.blockers(conditions_clear, current)
        if missing:
            return RecoveryDecision(False, current, missing)
        status = BreakerStatus(BreakerState.OPEN, None, self._clock())
        self.store.save(status)
        self._audit(
            actor,
            "circuit.clear",
            current.reason,
            {
                "approved_by": current.approved_by,
                "tripped_at": _format_time(current.changed_at),
                "quiet_period_s": int(self.quiet_period.total_seconds()),
            },
        )
        log.warning("circuit breaker back to OPEN (%s, approved by %s)", actor, current.approved_by)
        return RecoveryDecision(True, status)

    def clear(self, actor: str, conditions_clear: bool = True) -> BreakerStatus:
        """An operator's recovery: like :meth:`try_recover` but a refusal raises :class:`BreakerError`
        naming everything still missing."""
        decision = self.try_recover(conditions_clear, actor)
        if not decision.recovered:
            raise BreakerError("cannot clear the circuit breaker: " + "; ".join(decision.blockers))
        return decision.status

    def _audit(self, actor: str, action: str, reason: str | None, details: dict[str, Any]) -> None:
        with Session(self._engine) as session, session.begin():
            session.add(
                AuditLog(
                    actor=actor or "unknown",
                    action=action,
                    target=AUDIT_TARGET,
                    reason=reason,
                    details={**details, "store": self.store.describe()},
                )
            )


def make_store(settings: Settings, engine: Engine, *, redis_prefix: str = "") -> BreakerStore:
    """Redis when ``REDIS_URL`` is set (keys under ``REDIS_KEY_PREFIX``, then ``redis_prefix``), else
    the database table."""
    if settings.redis_url:
        import redis

        return RedisBreakerStore(
            redis.Redis.from_url(settings.redis_url), settings.redis_key_prefix + redis_prefix
        )
    return DatabaseBreakerStore(engine)


def breaker_from_settings(
    settings: Settings,
    engine: Engine,
    *,
    clock: Clock = utc_now,
    quiet_period: timedelta = DEFAULT_QUIET_PERIOD,
    redis_prefix: str = "",
) -> CircuitBreaker:
    """The breaker as the settings configure it (see :func:`make_store`)."""
    return CircuitBreaker(
        make_store(settings, engine, redis_prefix=redis_prefix),
        engine,
        clock=clock,
        quiet_period=quiet_period,
    )


def breaker_allows(breaker: CircuitBreaker, order_is_risk_reducing: bool) -> bool:
    """The question the execution service asks before sending an order (see :meth:`CircuitBreaker.allows`)."""
    return breaker.allows(order_is_risk_reducing)


def is_risk_reducing(side: OrderSide, qty: Decimal, position_qty: Decimal) -> bool:
    """Whether an order only shrinks the position (an exit): a sell of at most a long holding, or a
    buy of at most a short one. Anything that opens, grows or flips a position is not."""
    if qty <= 0:
        return False
    if side is OrderSide.SELL:
        return position_qty > 0 and qty <= position_qty
    return position_qty < 0 and qty <= -position_qty


def _brief(status: BreakerStatus) -> dict[str, Any]:
    return {"state": status.state.value, "reason": status.reason}


def _minutes(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _format_time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
