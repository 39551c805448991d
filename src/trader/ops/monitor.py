"""The post-trade monitor: measures the account after trades and feeds the circuit breaker.

On each :meth:`PostTradeMonitor.check` (one per tick; :meth:`PostTradeMonitor.run` loops for a
service) it reads the broker's account and positions and computes

- **drawdown**: how far equity is below the day's peak (the peak starts at the day's start equity,
  Alpaca's ``last_equity``, and rises with every higher equity seen that day), and below the start.
  With an engine, a monitor that starts during a day takes over the peak and the equities its
  earlier run recorded that day in ``account`` snapshots: a restart must not hide a drawdown;
- **realized volatility**: the standard deviation of the tick-to-tick equity returns seen today;
- **gross / net exposure**: Σ|market value| and Σ market value of the positions, in dollars and as a
  fraction of equity;
- **broker error rate**: failed broker calls over a sliding window (:class:`ErrorRateTracker`, which
  the execution service may share to count its own calls);
- **data staleness**: the newest bar judged by :func:`trader.data.freshness.check_freshness`.

A breached limit trips the breaker (which keeps a kill or a manual trip: those outrank the monitor's);
once nothing is breached and the trip was automatic, the monitor tries to recover it (which still needs
an operator's approval and the quiet period). It never lifts a kill or a manual trip.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from trader.broker.base import Account, Broker, Position
from trader.broker.errors import BrokerError
from trader.data.calendar import TradingCalendar
from trader.data.freshness import StalenessError, check_freshness
from trader.errors import UsageError
from trader.ops.breakers import (
    BreakerAuditError,
    BreakerState,
    BreakerStoreError,
    CircuitBreaker,
    Clock,
    TripReason,
    utc_now,
)
from trader.store.models import ALL_STRATEGIES, RiskLimit, Snapshot

log = logging.getLogger(__name__)

NEW_YORK = ZoneInfo("America/New_York")
ACTOR = "monitor"


@dataclass(frozen=True)
class MonitorLimits:
    """What trips the breaker. ``max_drawdown_pct``: fraction of the day's peak equity (0.05 = 5%);
    ``max_error_rate``: fraction of failed broker calls in ``error_window`` once at least
    ``min_calls`` were made; ``max_sessions_behind``: closed sessions the newest bar may lag."""

    max_drawdown_pct: Decimal = Decimal("0.05")
    max_error_rate: float = 0.5
    min_calls: int = 4
    error_window: timedelta = timedelta(minutes=5)
    max_sessions_behind: int = 0

    def __post_init__(self) -> None:
        if not Decimal(0) < self.max_drawdown_pct <= Decimal(1):
            raise UsageError(f"max_drawdown_pct must be in (0, 1], got {self.max_drawdown_pct}")
        if not 0 < self.max_error_rate <= 1:
            raise UsageError(f"max_error_rate must be in (0, 1], got {self.max_error_rate}")
        if self.min_calls < 1:
            raise UsageError(f"min_calls must be >= 1, got {self.min_calls}")
        if self.error_window <= timedelta(0):
            raise UsageError(f"error_window must be positive, got {self.error_window}")
        if self.max_sessions_behind < 0:
            raise UsageError(f"max_sessions_behind must be >= 0, got {self.max_sessions_behind}")


def drawdown_limit(engine: Engine, strategy_id: str) -> Decimal | None:
    """The stricter ``max_drawdown_pct`` of the strategy's and the global ``risk_limits`` rows."""
    with Session(engine) as session:
        values = session.scalars(
            select(RiskLimit.max_drawdown_pct).where(RiskLimit.strategy_id.in_([strategy_id, ALL_STRATEGIES]))
        ).all()
    present = [value for value in values if value is not None]
    return min(present) if present else None


class ErrorRateTracker:
    """Outcomes of broker calls over a sliding time window (thread-safe)."""

    def __init__(self, window: timedelta = timedelta(minutes=5), clock: Clock = utc_now) -> None:
        self._window = window
        self._clock = clock
        self._calls: deque[tuple[datetime, bool]] = deque()
        self._lock = threading.Lock()

    def record(self, ok: bool) -> None:
        with self._lock:
            self._calls.append((self._clock(), ok))
            self._trim()

    def counts(self) -> tuple[int, int]:
        """``(failures, calls)`` within the window."""
        with self._lock:
            self._trim()
            failures = sum(1 for _, ok in self._calls if not ok)
            return failures, len(self._calls)

    def _trim(self) -> None:
        horizon = self._clock() - self._window
        while self._calls and self._calls[0][0] < horizon:
            self._calls.popleft()


@dataclass(frozen=True)
class Breach:
    kind: TripReason
    detail: str


@dataclass(frozen=True)
class MonitorReading:
    """One tick's measurements. Money fields are ``None`` when the broker could not be read."""

    ts: datetime
    equity: Decimal | None = None
    start_equity: Decimal | None = None
    peak_equity: Decimal | None = None
    #: Below the day's peak, as a fraction of it (0.02 = 2% down).
    drawdown_pct: Decimal | None = None
    #: Below the day's start equity (negative when above it).
    day_drawdown_pct: Decimal | None = None
    #: Standard deviation of tick-to-tick equity returns today (``None`` before three samples).
    realized_vol: float | None = None
    gross_exposure: Decimal | None = None
    net_exposure: Decimal | None = None
    gross_pct: Decimal | None = None
    net_pct: Decimal | None = None
    broker_failures: int = 0
    broker_calls: int = 0
    latest_bar: date | None = None
    breaches: tuple[Breach, ...] = ()
    breaker: BreakerState | None = None
    errors: tuple[str, ...] = field(default=())

    @property
    def clear(self) -> bool:
        """Nothing breached and everything was measured."""
        return not self.breaches and not self.errors


def exposures(positions: Sequence[Position]) -> tuple[Decimal, Decimal]:
    """``(gross, net)`` dollars: Σ|value| and Σ value (short positions count negative)."""
    values = [_market_value(p) for p in positions]
    return sum((abs(v) for v in values), Decimal(0)), sum(values, Decimal(0))


def _market_value(position: Position) -> Decimal:
    if position.market_value is not None:
        return position.market_value
    price = position.current_price if position.current_price is not None else position.avg_entry_price
    return position.qty * price


class PostTradeMonitor:
    """Measures the account each tick and trips / recovers ``breaker`` accordingly.

    ``latest_bar`` (optional) returns the newest bar date of the data the signals use; with it, a
    staleness beyond ``limits.max_sessions_behind`` trips the breaker (``calendar`` required then).
    ``engine`` (optional) receives an ``account`` snapshot per tick. ``errors`` may be shared with the
    execution path so its broker failures count too.
    """

    def __init__(
        self,
        broker: Broker,
        breaker: CircuitBreaker,
        *,
        limits: MonitorLimits | None = None,
        clock: Clock = utc_now,
        latest_bar: Callable[[], date | None] | None = None,
        calendar: TradingCalendar | None = None,
        engine: Engine | None = None,
        errors: ErrorRateTracker | None = None,
    ) -> None:
        if latest_bar is not None and calendar is None:
            raise UsageError("a staleness check (latest_bar) needs a trading calendar")
        self.broker = broker
        self.breaker = breaker
        self.limits = limits or MonitorLimits()
        self._clock = clock
        self._latest_bar = latest_bar
        self._calendar = calendar
        self._engine = engine
        self.errors = errors or ErrorRateTracker(self.limits.error_window, clock)
        self._day: date | None = None
        self._peak: Decimal | None = None
        self._equities: list[Decimal] = []

    # ------------------------------------------------------------------ measuring

    def assess(self) -> MonitorReading:
        """Measure without touching the breaker (used by ``check`` and by ``trader circuit clear``)."""
        now = self._clock()
        problems: list[str] = []
        breaches: list[Breach] = []
        account, positions = self._read_broker(problems)
        reading = MonitorReading(ts=now)
        if account is not None and positions is not None:
            reading = self._money(now, account, positions, breaches)
        failures, calls = self.errors.counts()
        if calls >= self.limits.min_calls and failures / calls > self.limits.max_error_rate:
            breaches.append(
                Breach(
                    TripReason.BROKER_ERRORS,
                    f"{failures} of the last {calls} broker calls failed "
                    f"(limit {self.limits.max_error_rate:.0%} over {self.limits.error_window})",
                )
            )
        latest = self._staleness(now, breaches)
        return _with(reading, failures, calls, latest, breaches, problems)

    def _read_broker(self, problems: list[str]) -> tuple[Account | None, list[Position] | None]:
        try:
            account = self.broker.get_account()
            positions = self.broker.get_positions()
        except BrokerError as exc:
            self.errors.record(False)
            problems.append(f"broker unreadable: {exc}")
            return None, None
        self.errors.record(True)
        return account, positions

    def _money(
        self, now: datetime, account: Account, positions: Sequence[Position], breaches: list[Breach]
    ) -> MonitorReading:
        equity = account.equity
        start = account.last_equity if account.last_equity and account.last_equity > 0 else None
        self._roll_day(now, start or equity)
        assert self._peak is not None
        self._peak = max(self._peak, equity)
        self._equities.append(equity)
        drawdown = (self._peak - equity) / self._peak if self._peak > 0 else Decimal(0)
        base = start or self._equities[0]
        day_drawdown = (base - equity) / base if base > 0 else Decimal(0)
        if drawdown > self.limits.max_drawdown_pct:
            breaches.append(
                Breach(
                    TripReason.DRAWDOWN,
                    f"equity {equity:.2f} is {drawdown:.2%} below the day's peak {self._peak:.2f} "
                    f"(limit {self.limits.max_drawdown_pct:.2%})",
                )
            )
        gross, net = exposures(positions)
        return MonitorReading(
            ts=now,
            equity=equity,
            start_equity=base,
            peak_equity=self._peak,
            drawdown_pct=drawdown,
            day_drawdown_pct=day_drawdown,
            realized_vol=_volatility(self._equities),
            gross_exposure=gross,
            net_exposure=net,
            gross_pct=gross / equity if equity > 0 else None,
            net_pct=net / equity if equity > 0 else None,
        )

    def _roll_day(self, now: datetime, start: Decimal) -> None:
        today = now.astimezone(NEW_YORK).date()
        if today != self._day:
            # Read first, switch after: a failed read leaves the day unswitched, so the next tick
            # tries again instead of going on from the start equity.
            peak, equities = self._resume_day(today, now, start)
            self._day, self._peak, self._equities = today, peak, equities

    def _resume_day(self, day: date, now: datetime, start: Decimal) -> tuple[Decimal, list[Decimal]]:
        """The day's peak and equities so far: ``start``, raised by what this day's earlier monitor
        ticks recorded (another process before a restart), so the drawdown is measured from the day's
        true peak."""
        if self._engine is None:
            return start, []
        first = datetime.combine(day, time.min, NEW_YORK)
        with Session(self._engine) as session:
            rows = session.execute(
                select(Snapshot.nav, Snapshot.details)
                .where(Snapshot.kind == "account", Snapshot.ts >= first, Snapshot.ts <= now)
                .order_by(Snapshot.ts, Snapshot.id)
            ).all()
        peak, equities = start, []
        for nav, details in rows:
            if nav is None or (details or {}).get("source") != ACTOR:
                continue
            recorded_peak = details.get("peak_equity")
            peak = max(peak, nav, Decimal(recorded_peak) if recorded_peak else nav)
            equities.append(nav)
        return peak, equities

    def _staleness(self, now: datetime, breaches: list[Breach]) -> date | None:
        if self._latest_bar is None:
            return None
        assert self._calendar is not None
        latest = self._latest_bar()
        if latest is None:
            expected = self._calendar.last_closed_session(now)
            breaches.append(
                Breach(TripReason.STALE_DATA, f"no bar at all; the last closed session is {expected}")
            )
            return None
        try:
            check_freshness(latest, now, self._calendar, self.limits.max_sessions_behind)
        except StalenessError as exc:
            breaches.append(Breach(TripReason.STALE_DATA, str(exc)))
        return latest

    # ------------------------------------------------------------------ acting

    def check(self) -> MonitorReading:
        """One tick: measure, trip on the first breach, or try to recover an automatic trip when all
        is clear; record an ``account`` snapshot when an engine was given."""
        reading = self.assess()
        if reading.breaches:
            first = reading.breaches[0]
            # The breaker keeps a kill or a manual trip: this one is then only recorded as suppressed.
            self.breaker.trip(first.kind, first.detail, ACTOR)
        elif reading.clear:
            self._recover()
        reading = _replace_breaker(reading, self._breaker_state())
        if self._engine is not None:
            self._snapshot(reading)
        return reading

    def _recover(self) -> None:
        """Lift an automatic trip once approved and quiet; kill and manual trips are the operator's."""
        try:
            self.breaker.try_recover(conditions_clear=True, actor=ACTOR, automatic_only=True)
        except (BreakerStoreError, BreakerAuditError) as exc:
            # The breaker stays as it is (TRIPPED, or unreadable and so failing closed); the tick's
            # measurements are still recorded, and the error comes back every tick until fixed.
            log.error("monitor: the circuit breaker was not recovered: %s", exc)

    def _breaker_state(self) -> BreakerState | None:
        try:
            return self.breaker.state()
        except BreakerStoreError as exc:
            log.error("monitor: the circuit breaker state is unreadable: %s", exc)
            return None

    def run(self, stop: threading.Event, interval: float = 30.0) -> None:
        """Call :meth:`check` every ``interval`` seconds until ``stop`` is set; a failing tick is logged
        and the loop goes on (a monitor that dies silently is worse than a noisy one)."""
        while not stop.is_set():
            try:
                self.check()
            except Exception:
                log.exception("post-trade monitor tick failed")
            stop.wait(interval)

    def _snapshot(self, reading: MonitorReading) -> None:
        details = {
            "drawdown_pct": _s(reading.drawdown_pct),
            "day_drawdown_pct": _s(reading.day_drawdown_pct),
            "peak_equity": _s(reading.peak_equity),
            "realized_vol": reading.realized_vol,
            "gross_exposure": _s(reading.gross_exposure),
            "net_exposure": _s(reading.net_exposure),
            "broker_failures": reading.broker_failures,
            "broker_calls": reading.broker_calls,
            "latest_bar": reading.latest_bar.isoformat() if reading.latest_bar else None,
            "breaches": [f"{b.kind.value}: {b.detail}" for b in reading.breaches],
            "breaker": reading.breaker.value if reading.breaker else None,
            "errors": list(reading.errors),
            "source": ACTOR,
        }
        with Session(self._engine) as session, session.begin():
            session.add(
                Snapshot(
                    ts=reading.ts,
                    kind="account",
                    nav=reading.equity,
                    pnl=None
                    if reading.equity is None or reading.start_equity is None
                    else reading.equity - reading.start_equity,
                    details=details,
                )
            )


def _volatility(equities: Sequence[Decimal]) -> float | None:
    returns = [float(b / a - 1) for a, b in pairwise(equities) if a > 0]
    if len(returns) < 2:
        return None
    value = statistics.stdev(returns)
    return value if math.isfinite(value) else None


def _with(
    reading: MonitorReading,
    failures: int,
    calls: int,
    latest: date | None,
    breaches: list[Breach],
    problems: list[str],
) -> MonitorReading:
    return replace(
        reading,
        broker_failures=failures,
        broker_calls=calls,
        latest_bar=latest,
        breaches=tuple(breaches),
        errors=tuple(problems),
    )


def _replace_breaker(reading: MonitorReading, state: BreakerState | None) -> MonitorReading:
    return replace(reading, breaker=state)


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)
