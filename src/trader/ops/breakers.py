"""The circuit breaker: one account-wide switch between OPEN (normal) and TRIPPED (safe mode).

While TRIPPED only risk-reducing orders (exits) may go out; new entries are blocked. A trip names its
kind (:class:`TripReason`) and a detail; every change is written to ``audit_log``.

Recovery is deliberately slow: back to OPEN only when

1. the conditions that tripped it are clear (the caller says so: the monitor measures them),
2. an operator approved *after* the trip (``trader circuit approve``), and
3. a quiet period (15 minutes by default) has passed since the trip.

A breaker never resets by itself without all three, and a refused recovery says what is missing, so it
is never silently stuck either.

Trips have a precedence: ``kill`` > ``manual`` > the automatic kinds (``drawdown``, ``broker_errors``,
``stale_data``). A trip never replaces one of a higher kind (the monitor's drawdown after a kill is
recorded as ``circuit.trip_suppressed`` and the kill holds), so what only an operator may lift is never
turned into something the monitor lifts by itself.

Every change is a compare-and-set on the store (:meth:`BreakerStore.save_if`), so two writers at the same
instant cannot undo each other's trip. A trip is always safe: it is stored first and then audited (an
unwritable audit log is logged, not raised, so a kill goes on), and it overwrites a stored state that
cannot be read. A change toward OPEN (approve, clear) is audited first and made only if that worked.

State lives in Redis (``cb:state``, ``cb:reason``, ``cb:ts``, ``cb:approved_by``, ``cb:approved_at``
under an optional key prefix) when ``REDIS_URL`` is set, otherwise in the ``circuit_breakers`` table
(row ``global``). Both stores hold the same :class:`BreakerStatus`, so the breaker behaves identically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from redis.exceptions import WatchError
from sqlalchemy import Connection, Engine, Update, insert, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from trader.config import Settings
from trader.domain.enums import OrderSide
from trader.errors import TraderError, UsageError, first_line
from trader.store.models import AuditLog, CircuitBreakerState

log = logging.getLogger(__name__)

#: Name of the account-wide breaker row in ``circuit_breakers``.
GLOBAL_BREAKER = "global"
DEFAULT_QUIET_PERIOD = timedelta(minutes=15)
AUDIT_TARGET = "circuit_breaker"
#: Compare-and-set attempts of one trip before giving up (only a storm of concurrent writers needs more).
TRIP_ATTEMPTS = 5

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

    @property
    def precedence(self) -> int:
        """Rank among trips: kill 2 > manual 1 > automatic 0. A trip never replaces a higher one."""
        if self is TripReason.KILL:
            return 2
        return 1 if self is TripReason.MANUAL else 0


class BreakerError(TraderError):
    """A breaker operation was refused (nothing to approve, recovery conditions not met)."""


class BreakerStoreError(TraderError):
    """The breaker state could not be read or written (Redis or the database is unreachable)."""


class BreakerStateUnreadableError(BreakerStoreError):
    """The stored breaker state is there but malformed or incomplete (garbage, a partial key set).

    Entries stay blocked (:meth:`CircuitBreaker.allows` fails closed); a trip overwrites it."""


class BreakerAuditError(TraderError):
    """The audit log could not be written, so a change that must be audited first was not made."""


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
        """The stored status (:data:`NEVER_TRIPPED` when nothing is stored); :class:`BreakerStoreError`
        when unreachable, :class:`BreakerStateUnreadableError` when malformed or incomplete."""
        ...

    def save(self, status: BreakerStatus) -> None:
        """Replace the stored status, whatever it is (also a malformed one)."""
        ...

    def save_if(self, expected: BreakerStatus, status: BreakerStatus) -> bool:
        """Replace the stored status only if it still equals ``expected`` (compare-and-set); ``False``
        when another writer changed it first."""
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
            raw = self._client.mget(self._keys())
        except Exception as exc:  # redis.RedisError and connection errors alike
            raise BreakerStoreError(f"cannot read the breaker state from Redis: {exc}") from exc
        return self._decode(raw)

    def save(self, status: BreakerStatus) -> None:
        try:
            # One MULTI/EXEC: a reader never sees half a change.
            pipe = self._client.pipeline(transaction=True)
            self._queue(pipe, status)
            pipe.execute()
        except Exception as exc:
            raise BreakerStoreError(f"cannot write the breaker state to Redis: {exc}") from exc

    def save_if(self, expected: BreakerStatus, status: BreakerStatus) -> bool:
        keys = self._keys()
        try:
            with self._client.pipeline(transaction=True) as pipe:
                # WATCH: the MULTI/EXEC fails if any key changes after this read.
                pipe.watch(*keys)
                if self._decode(pipe.mget(keys)) != expected:
                    return False
                pipe.multi()
                self._queue(pipe, status)
                pipe.execute()
        except WatchError:
            return False
        except BreakerStoreError:
            raise
        except Exception as exc:
            raise BreakerStoreError(f"cannot write the breaker state to Redis: {exc}") from exc
        return True

    def _keys(self) -> list[str]:
        return [self.key(field) for field in self.FIELDS]

    def _queue(self, pipe: Any, status: BreakerStatus) -> None:
        values = {
            "state": status.state.value,
            "reason": status.reason,
            "ts": _format_time(status.changed_at),
            "approved_by": status.approved_by,
            "approved_at": _format_time(status.approved_at),
        }
        for field, value in values.items():
            if value is None:
                pipe.delete(self.key(field))
            else:
                pipe.set(self.key(field), value)

    def _decode(self, raw: Sequence[Any]) -> BreakerStatus:
        try:
            state, reason, ts, approved_by, approved_at = (_text(value) for value in raw)
            if state is None:
                # Other keys without cb:state: evicted or deleted by hand, never written so by save().
                # Reading it as "never tripped" would reopen a tripped breaker silently.
                if any(value is not None for value in (reason, ts, approved_by, approved_at)):
                    raise ValueError(f"{self.key('state')} is missing but other {self.key('*')} keys exist")
                return NEVER_TRIPPED
            status = BreakerStatus(
                BreakerState(state), reason, _parse_time(ts), approved_by, _parse_time(approved_at)
            )
        except ValueError as exc:
            raise _unreadable(self.describe(), str(exc)) from exc
        return _checked(status, self.describe())


class DatabaseBreakerStore:
    """The ``circuit_breakers`` row ``name`` (``global``) in the platform database."""

    def __init__(self, engine: Engine, name: str = GLOBAL_BREAKER) -> None:
        self._engine = engine
        self._name = name

    def describe(self) -> str:
        return f"database circuit_breakers[{self._name}]"

    def load(self) -> BreakerStatus:
        with self._errors("read"), Session(self._engine) as session:
            return self._decode(session.get(CircuitBreakerState, self._name))

    def save(self, status: BreakerStatus) -> None:
        with self._errors("write"), Session(self._engine) as session, session.begin():
            self._write(session.connection(), status)

    def save_if(self, expected: BreakerStatus, status: BreakerStatus) -> bool:
        with self._errors("write"):
            try:
                with Session(self._engine) as session, session.begin():
                    connection = session.connection()
                    # A no-op write before the read: it takes the row lock on PostgreSQL and the
                    # write lock on SQLite, so nobody changes the state between comparing and writing.
                    connection.execute(self._update().values(name=CircuitBreakerState.name))
                    if self._decode(session.get(CircuitBreakerState, self._name)) != expected:
                        return False
                    self._write(connection, status)
            except IntegrityError:
                return False  # another writer created the row first
        return True

    def _update(self) -> Update:
        return update(CircuitBreakerState).where(CircuitBreakerState.name == self._name)

    def _write(self, connection: Connection, status: BreakerStatus) -> None:
        # Plain statements, not the ORM row: a row that does not parse is overwritten, never read.
        values = {
            "state": status.state.value,
            "reason": status.reason,
            "changed_at": status.changed_at or utc_now(),
            "approved_by": status.approved_by,
            "approved_at": status.approved_at,
        }
        if connection.execute(self._update().values(**values)).rowcount == 0:
            connection.execute(insert(CircuitBreakerState).values(name=self._name, **values))

    def _decode(self, row: CircuitBreakerState | None) -> BreakerStatus:
        if row is None:
            return NEVER_TRIPPED
        status = BreakerStatus(
            state=BreakerState(row.state),
            reason=row.reason,
            changed_at=row.changed_at,
            approved_by=row.approved_by,
            approved_at=row.approved_at,
        )
        return _checked(status, self.describe())

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Any failure as :class:`BreakerStoreError`; a value that does not parse (a state outside the
        enum, a time SQLite cannot read) as :class:`BreakerStateUnreadableError`."""
        try:
            yield
        except BreakerStoreError:
            raise
        except ValueError as exc:
            raise _unreadable(self.describe(), str(exc)) from exc
        except Exception as exc:
            raise BreakerStoreError(f"cannot {action} the breaker state in the database: {exc}") from exc


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
        #: (holding reason, its time, suppressed kind) already audited: the monitor repeats every tick.
        self._suppressed: set[tuple[str | None, datetime | None, TripReason]] = set()

    def status(self) -> BreakerStatus:
        """The stored status; :class:`BreakerStoreError` when it cannot be read or understood."""
        return self.store.load()

    def state(self) -> BreakerState:
        """The stored state; :class:`BreakerStoreError` when it cannot be read or understood."""
        return self.store.load().state

    def allows(self, risk_reducing: bool) -> bool:
        """Whether an order may go out: always when OPEN; only risk-reducing ones when TRIPPED.

        Fails closed: when the state cannot be read or understood, only risk-reducing orders pass.
        """
        if risk_reducing:
            return True
        try:
            return self.store.load().state is BreakerState.OPEN
        except BreakerStoreError as exc:
            log.error("breaker state unreadable, blocking new entries: %s", exc)
            return False

    def trip(self, reason: TripReason, detail: str, actor: str) -> BreakerStatus:
        """Trip (or stay tripped) and return the trip that holds afterwards.

        A repeat of the current kind changes nothing (the monitor trips on every tick while a condition
        lasts). A kind of lower precedence than the current trip (:attr:`TripReason.precedence`) is
        suppressed: the current trip holds and the attempt is audited as ``circuit.trip_suppressed``.
        Otherwise the new kind replaces the reason, restarts the quiet period and voids an approval,
        because the new problem has not been looked at.

        Tripping is always safe, so it does not fail where it need not: a stored state that cannot be
        understood is overwritten, and an audit row that cannot be written is logged as an error (the
        kill switch trips first and must go on to cancel and close). :class:`BreakerStoreError` only
        when the state cannot be read or written at all.
        """
        for _ in range(TRIP_ATTEMPTS):
            try:
                done = self._trip_over(self.store.load(), reason, detail, actor)
            except BreakerStateUnreadableError as exc:
                return self._trip_unreadable(reason, detail, actor, exc)
            if done is not None:
                return done
        raise BreakerStoreError("the breaker state kept changing while tripping; trip again")

    def _trip_over(
        self, current: BreakerStatus, reason: TripReason, detail: str, actor: str
    ) -> BreakerStatus | None:
        """Trip over ``current``; ``None`` when another writer changed the state meanwhile."""
        if current.state is BreakerState.TRIPPED and current.kind is reason:
            return current
        if reason.precedence < _precedence(current):
            return self._suppress(current, reason, detail, actor)
        status = BreakerStatus(BreakerState.TRIPPED, f"{reason.value}: {detail}", self._clock())
        if not self.store.save_if(current, status):
            return None
        log.warning("circuit breaker TRIPPED by %s: %s", actor, status.reason)
        details = {"kind": reason.value, "previous": _brief(current)}
        self._audit_done(actor, "circuit.trip", status.reason, details)
        return status

    def _trip_unreadable(
        self, reason: TripReason, detail: str, actor: str, error: BreakerStoreError
    ) -> BreakerStatus:
        """Overwrite a state that cannot be understood. It may have held a kill or a manual trip, so an
        automatic trip is written as ``manual``: the monitor must not lift what it cannot see."""
        kind = TripReason.MANUAL if reason.automatic else reason
        text = f"{reason.value} over an unreadable breaker state: {detail}" if reason.automatic else detail
        status = BreakerStatus(BreakerState.TRIPPED, f"{kind.value}: {text}", self._clock())
        self.store.save(status)
        log.error("circuit breaker TRIPPED by %s over an unreadable state: %s (was: %s)", actor, text, error)
        details = {"kind": kind.value, "requested_kind": reason.value, "previous": {"unreadable": str(error)}}
        self._audit_done(actor, "circuit.trip", status.reason, details)
        return status

    def _suppress(self, current: BreakerStatus, reason: TripReason, detail: str, actor: str) -> BreakerStatus:
        """Keep ``current`` (a higher kind holds); log and audit the suppressed trip once per holding
        trip and kind, not on every tick of the monitor."""
        key = (current.reason, current.changed_at, reason)
        if key not in self._suppressed:
            self._suppressed = {seen for seen in self._suppressed if seen[:2] == key[:2]} | {key}
            log.warning(
                "circuit breaker: %s trip by %s suppressed, %r holds", reason.value, actor, current.reason
            )
            details = {"kind": reason.value, "holding": _brief(current)}
            self._audit_done(actor, "circuit.trip_suppressed", f"{reason.value}: {detail}", details)
        return current

    def approve(self, actor: str, note: str | None = None) -> BreakerStatus:
        """Record an operator's approval to recover (required before any return to OPEN).

        Audited first: :class:`BreakerAuditError` (nothing approved) when the audit log cannot be
        written; :class:`BreakerError` when the breaker changed meanwhile (a new trip to look at)."""
        current = self.store.load()
        if current.state is not BreakerState.TRIPPED:
            raise BreakerError("nothing to approve: the circuit breaker is OPEN")
        status = replace(current, approved_by=actor, approved_at=self._clock())
        if not self._audited_change(
            current, status, actor, "circuit.approve", note, {"trip": current.reason}
        ):
            raise BreakerError(
                "the circuit breaker changed while approving: check 'trader circuit status' and approve again"
            )
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
        """How much of the quiet period is still to run for ``status`` (zero when OPEN or over)."""
        if status.state is BreakerState.OPEN or status.changed_at is None:
            return timedelta(0)
        return max(timedelta(0), status.changed_at + self.quiet_period - self._clock())

    def try_recover(
        self, conditions_clear: bool, actor: str = "monitor", *, automatic_only: bool = False
    ) -> RecoveryDecision:
        """Return to OPEN if conditions are clear, an approval exists and the quiet period passed.

        ``automatic_only`` (the monitor) also refuses manual, kill and unrecognised trips: only an
        operator lifts those. The ``circuit.clear`` row is written before the state changes:
        :class:`BreakerAuditError` (the breaker stays TRIPPED) when it cannot be.
        """
        current = self.store.load()
        if current.state is BreakerState.OPEN:
            return RecoveryDecision(True, current)
        missing = self._recovery_blockers(conditions_clear, current, automatic_only)
        if missing:
            return RecoveryDecision(False, current, missing)
        status = BreakerStatus(BreakerState.OPEN, None, self._clock())
        if not self._audited_change(
            current, status, actor, "circuit.clear", current.reason, self._clear_details(current)
        ):
            return RecoveryDecision(False, current, ("the breaker changed while recovering: check it again",))
        log.warning("circuit breaker back to OPEN (%s, approved by %s)", actor, current.approved_by)
        return RecoveryDecision(True, status)

    def _recovery_blockers(
        self, conditions_clear: bool, current: BreakerStatus, automatic_only: bool
    ) -> tuple[str, ...]:
        missing = self.blockers(conditions_clear, current)
        if automatic_only and not (current.kind is not None and current.kind.automatic):
            kind = current.kind.value if current.kind is not None else "unrecognised"
            return (f"a {kind} trip is lifted only by an operator: 'trader circuit clear'", *missing)
        return missing

    def _clear_details(self, current: BreakerStatus) -> dict[str, Any]:
        return {
            "approved_by": current.approved_by,
            "tripped_at": _format_time(current.changed_at),
            "quiet_period_s": int(self.quiet_period.total_seconds()),
        }

    def clear(self, actor: str, conditions_clear: bool = True) -> BreakerStatus:
        """An operator's recovery: like :meth:`try_recover` but a refusal raises :class:`BreakerError`
        naming everything still missing."""
        decision = self.try_recover(conditions_clear, actor)
        if not decision.recovered:
            raise BreakerError("cannot clear the circuit breaker: " + "; ".join(decision.blockers))
        return decision.status

    def _audited_change(
        self,
        current: BreakerStatus,
        status: BreakerStatus,
        actor: str,
        action: str,
        reason: str | None,
        details: dict[str, Any],
    ) -> bool:
        """Audit ``action`` first, then store ``status`` if the state is still ``current``: a step
        toward OPEN must never happen without its audit row. ``False`` when another writer changed
        the state in between (then ``<action>_aborted`` is audited too)."""
        self._audit(actor, action, reason, details)
        try:
            changed = self.store.save_if(current, status)
        except BreakerStoreError as exc:
            self._audit_done(actor, f"{action}_aborted", reason, {"error": str(exc)})
            raise
        if not changed:
            self._audit_done(actor, f"{action}_aborted", reason, {"error": "the breaker changed meanwhile"})
        return changed

    def _audit(self, actor: str, action: str, reason: str | None, details: dict[str, Any]) -> None:
        try:
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
        except SQLAlchemyError as exc:
            raise BreakerAuditError(f"cannot write {action} to the audit log: {first_line(exc)}") from exc

    def _audit_done(self, actor: str, action: str, reason: str | None, details: dict[str, Any]) -> None:
        """Audit a change already stored. A failure is logged loudly, not raised: the change (a trip)
        stands either way, and raising would stop a kill before it cancels and closes anything."""
        try:
            self._audit(actor, action, reason, details)
        except BreakerAuditError as exc:
            log.error(
                "circuit breaker: %s by %s (%s) is NOT in the audit log: %s", action, actor, reason, exc
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


def _precedence(status: BreakerStatus) -> int:
    """The precedence of the trip ``status`` holds (-1 when OPEN). An unrecognised kind ranks as
    manual: it may have been anything, so only an operator's trip or a kill replaces it."""
    if status.state is BreakerState.OPEN:
        return -1
    return (status.kind or TripReason.MANUAL).precedence


def _checked(status: BreakerStatus, where: str) -> BreakerStatus:
    """``status`` if it is whole: a trip always stores its reason and time."""
    if status.state is BreakerState.TRIPPED and (status.reason is None or status.changed_at is None):
        raise _unreadable(where, "TRIPPED without a reason or a time")
    return status


def _unreadable(where: str, problem: str) -> BreakerStateUnreadableError:
    return BreakerStateUnreadableError(
        f"the circuit breaker state in {where} is unreadable ({problem}); new entries stay blocked. "
        "'trader circuit trip --reason ...' (or 'trader kill') overwrites it, then approve and clear"
    )


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
