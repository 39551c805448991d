"""Operations commands: ``trader status``, ``trader circuit ...`` and ``trader kill``.

Exit codes: 0 done, 1 refused or failed (a recovery not allowed yet, a declined confirmation, a broker
that cannot be reached), 2 bad usage or configuration.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from sqlalchemy import Engine, desc, select
from sqlalchemy.orm import Session

from trader.broker.base import Broker
from trader.broker.errors import BrokerError
from trader.cli.output import console, key_value_table
from trader.config import Settings, load_settings, mask_url_password
from trader.errors import UsageError
from trader.ops.breakers import (
    DEFAULT_QUIET_PERIOD,
    BreakerState,
    BreakerStatus,
    BreakerStoreError,
    CircuitBreaker,
    TripReason,
    breaker_from_settings,
)
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Snapshot

if TYPE_CHECKING:
    from trader.ops.monitor import ErrorRateTracker

circuit_app = typer.Typer(
    help="Trip, approve and clear the circuit breaker (safe mode: only exits go out while tripped).",
    no_args_is_help=True,
)

Actor = Annotated[str | None, typer.Option("--actor", help="Who is acting (default: the login name).")]
QuietMinutes = Annotated[
    float,
    typer.Option(
        "--quiet-minutes",
        help="Quiet period after a trip before the breaker may be cleared, 0-1440 minutes.",
    ),
]
DEFAULT_QUIET_MINUTES = DEFAULT_QUIET_PERIOD.total_seconds() / 60
#: Longest quiet period accepted: a day. A larger value is a typo, and 1e300 would overflow timedelta.
MAX_QUIET_MINUTES = 1440.0


def _actor(actor: str | None) -> str:
    if actor is not None:
        if not actor.strip():
            raise UsageError("--actor must not be empty")
        return actor.strip()
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "operator"


def _engine(settings: Settings) -> Engine:
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
    except UsageError:
        engine.dispose()
        raise
    return engine


def _breaker(
    settings: Settings, engine: Engine, quiet_minutes: float = DEFAULT_QUIET_MINUTES
) -> CircuitBreaker:
    return breaker_from_settings(settings, engine, quiet_period=_quiet_period(quiet_minutes))


def _quiet_period(minutes: float) -> timedelta:
    """``--quiet-minutes`` as a period; NaN, infinities and values outside 0-1440 are bad usage."""
    if not 0 <= minutes <= MAX_QUIET_MINUTES:  # NaN fails both comparisons
        raise UsageError(
            f"--quiet-minutes: {minutes:g} is out of range; use 0 to {MAX_QUIET_MINUTES:g} minutes"
        )
    return timedelta(minutes=minutes)


def _broker(settings: Settings) -> Broker:
    from trader.broker.alpaca import AlpacaBroker

    return AlpacaBroker.from_settings(settings)


def _show_breaker(breaker: CircuitBreaker, status: BreakerStatus) -> None:
    rows = {"state": status.state.value, "store": breaker.store.describe()}
    if status.state is BreakerState.TRIPPED:
        rows["reason"] = status.reason or "-"
        rows["tripped at"] = _when(status.changed_at)
        rows["approved"] = (
            f"by {status.approved_by} at {_when(status.approved_at)}" if status.approved else "no"
        )
        rows["quiet period left"] = str(breaker.quiet_left(status)).split(".")[0]
        rows["new entries"] = "BLOCKED (exits allowed)"
    else:
        rows["new entries"] = "allowed"
    console.print(key_value_table("Circuit breaker", rows))


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


# ---------------------------------------------------------------------------- circuit


@circuit_app.command("status")
def circuit_status() -> None:
    """Show the breaker: state, reason, approval, quiet period left."""
    settings = load_settings()
    breaker = _breaker(settings, _engine(settings))
    _show_breaker(breaker, breaker.status())


@circuit_app.command("trip")
def circuit_trip(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
    actor: Actor = None,
) -> None:
    """Trip the breaker by hand: new entries are blocked, exits still go out."""
    if not reason.strip():
        raise UsageError("--reason must not be empty")
    settings = load_settings()
    breaker = _breaker(settings, _engine(settings))
    status = breaker.trip(TripReason.MANUAL, reason.strip(), _actor(actor))
    console.print(f"circuit breaker TRIPPED: {status.reason}")


@circuit_app.command("approve")
def circuit_approve(
    actor: Actor = None,
    note: Annotated[str | None, typer.Option("--note", help="Why it is safe (audit log).")] = None,
) -> None:
    """Approve recovery of a tripped breaker (required before 'trader circuit clear')."""
    settings = load_settings()
    breaker = _breaker(settings, _engine(settings))
    status = breaker.approve(_actor(actor), note)
    console.print(f"recovery approved by {status.approved_by}; clear it with 'trader circuit clear'")
    _show_breaker(breaker, status)


@circuit_app.command("clear")
def circuit_clear(actor: Actor = None, quiet_minutes: QuietMinutes = DEFAULT_QUIET_MINUTES) -> None:
    """Return the breaker to OPEN: needs an approval since the trip, the quiet period passed, and (for
    a drawdown or broker-error trip) the condition clear at the broker now."""
    _quiet_period(quiet_minutes)  # bad usage before the database is even opened
    settings = load_settings()
    engine = _engine(settings)
    breaker = _breaker(settings, engine, quiet_minutes)
    status = breaker.status()
    if status.state is BreakerState.OPEN:
        console.print("circuit breaker is already OPEN")
        return
    clear = _conditions_clear(settings, breaker, status, engine)
    breaker.clear(_actor(actor), conditions_clear=clear)
    console.print("circuit breaker OPEN: new entries allowed again")


def _conditions_clear(
    settings: Settings, breaker: CircuitBreaker, status: BreakerStatus, engine: Engine
) -> bool:
    """Re-measure an automatic trip's condition at the broker (manual and kill trips: the operator's
    approval is the judgement). Staleness is the monitor's to judge: its trip clears when it recovers."""
    kind = status.kind
    if kind is None or not kind.automatic:
        return True
    if kind is TripReason.STALE_DATA:
        raise UsageError(
            "a stale-data trip is cleared by the monitor once fresh data arrived (after approval and "
            "the quiet period); fix the data feed and approve"
        )
    return _measure(settings, breaker, engine, probe=kind is TripReason.BROKER_ERRORS)


def _measure(settings: Settings, breaker: CircuitBreaker, engine: Engine, *, probe: bool) -> bool:
    """One monitor reading with the limits 'trader serve monitor' applies (the stricter drawdown limit
    of ``risk_limits``, not a laxer default), printing what is not clear. ``probe``: read the broker
    the monitor's ``min_calls`` times first, so its error-rate limit applies to calls made now."""
    from trader.ops.monitor import ErrorRateTracker, MonitorLimits, PostTradeMonitor, drawdown_limit

    limit = drawdown_limit(engine, settings.strategy_id)
    limits = MonitorLimits(max_drawdown_pct=limit) if limit is not None else MonitorLimits()
    broker = _broker(settings)
    errors = ErrorRateTracker(limits.error_window)
    failures = _probe_broker(broker, errors, limits.min_calls) if probe else []
    # With the engine the monitor knows the day's peak from its own snapshots (not only the start).
    reading = PostTradeMonitor(broker, breaker, limits=limits, engine=engine, errors=errors).assess()
    for failure in failures:
        console.print(f"[yellow]broker call failed:[/yellow] {failure}")
    for problem in (*reading.errors, *(f"{b.kind.value}: {b.detail}" for b in reading.breaches)):
        console.print(f"[red]not clear:[/red] {problem}")
    return reading.clear


def _probe_broker(broker: Broker, errors: ErrorRateTracker, calls: int) -> list[str]:
    """Read the account ``calls`` times, recording each outcome in ``errors``; the failures' messages.

    A fresh tracker holds no calls, and the monitor judges the error rate only from ``min_calls`` on:
    without these reads a single lucky call would pass a broker that still fails most of them.
    """
    failures: list[str] = []
    for attempt in range(1, calls + 1):
        try:
            broker.get_account()
        except BrokerError as exc:
            errors.record(False)
            failures.append(f"read {attempt} of {calls}: {exc}")
        else:
            errors.record(True)
    return failures


# ---------------------------------------------------------------------------- kill


def kill(
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the audit log).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    actor: Actor = None,
) -> None:
    """Kill switch: trip the breaker, cancel all open orders, close all positions, block new signals
    until 'trader circuit approve' and 'trader circuit clear'."""
    if not reason.strip():
        raise UsageError("--reason must not be empty")
    settings = load_settings()
    engine = _engine(settings)
    if not yes:
        typer.confirm(
            f"KILL: cancel every open order and close every position at "
            f"{mask_url_password(str(settings.alpaca_base_url))}?",
            abort=True,
        )
    from trader.ops.kill import kill_switch

    report = kill_switch(
        _broker(settings), _breaker(settings, engine), engine, reason=reason.strip(), actor=_actor(actor)
    )
    if report.breaker is not None:
        console.print(f"circuit breaker TRIPPED: {report.breaker.reason}")
    else:
        console.print(
            "[red]circuit breaker NOT tripped[/red]: its store failed (entries stay blocked meanwhile)"
        )
    console.print(f"canceled {sum(r.ok for r in report.canceled)} order(s)")
    closed = {r.symbol for r in report.closed if r.ok}
    console.print(f"closing orders sent for {len(closed)} position(s)")
    if report.booked:
        booked = len(report.booked)
        console.print(f"{booked} closing order(s) booked, one per strategy holding the position")
    if report.unattributed:
        symbols = ", ".join(report.unattributed)
        console.print(
            f"[yellow]positions our books do not explain, closed whole:[/yellow] {symbols} (the reconciler "
            "books those orders under its adopt strategy; move them to the right books by hand)"
        )
    if report.working:
        console.print(f"{len(report.working)} closing order(s) of an earlier kill still working: kept")
    for failure in report.failures:
        console.print(f"[red]failed:[/red] {failure}")
    for line in report.positions_left:
        console.print(f"[yellow]position still open:[/yellow] {line} (closing order waits for the market)")
    for line in report.open_orders_left:
        console.print(f"[yellow]order still open:[/yellow] {line}")
    if report.failures:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------- status


def status() -> None:
    """Positions, open orders, today's P&L, circuit-breaker state and the last reconcile."""
    settings = load_settings()
    engine = _engine(settings)
    breaker = _breaker(settings, engine)
    unreadable = False
    try:
        _show_breaker(breaker, breaker.status())
    except BreakerStoreError as exc:
        # The rest of the status still matters (more so) when the breaker cannot be read.
        console.print(f"[red]circuit breaker UNREADABLE (new entries blocked):[/red] {exc}")
        unreadable = True
    console.print(f"last reconcile: {_last_reconcile(engine)}")
    try:
        _show_broker(_broker(settings))
    except BrokerError as exc:
        console.print(f"[red]broker unreachable:[/red] {exc}")
        raise typer.Exit(1) from exc
    if unreadable:
        raise typer.Exit(1)


def _last_reconcile(engine: Engine) -> str:
    with Session(engine) as session:
        ts = session.scalar(
            select(Snapshot.ts).where(Snapshot.kind == "reconcile").order_by(desc(Snapshot.ts))
        )
    return _when(ts) if ts else "never"


def _show_broker(broker: Broker) -> None:
    account = broker.get_account()
    positions = broker.get_positions()
    orders = broker.list_open_orders()
    start = account.last_equity
    pnl = account.equity - start if start is not None else None
    console.print(
        key_value_table(
            "Account",
            {
                "equity": f"{account.equity:,.2f}",
                "cash": f"{account.cash:,.2f}",
                "today's P&L": "-" if pnl is None else f"{pnl:+,.2f} (since the last close {start:,.2f})",
            },
        )
    )
    table = Table(title=f"Positions ({len(positions)})", title_justify="left")
    for column in ("symbol", "qty", "avg price", "price", "market value", "unrealized P&L"):
        table.add_column(column, justify="left" if column == "symbol" else "right")
    for p in positions:
        table.add_row(p.symbol, str(p.qty), f"{p.avg_entry_price:.2f}", _money(p.current_price),
                      _money(p.market_value), _money(p.unrealized_pl))  # fmt: skip
    console.print(table)
    table = Table(title=f"Open orders ({len(orders)})", title_justify="left")
    for column in ("client_order_id", "symbol", "side", "qty", "type", "limit", "status", "submitted"):
        table.add_column(column)
    for o in orders:
        table.add_row(o.client_order_id, o.symbol, o.side.value, str(o.qty or o.notional), o.type.value,
                      _money(o.limit_price), o.status.value, _when(o.submitted_at))  # fmt: skip
    console.print(table)


def _money(value: object) -> str:
    return "-" if value is None else f"{value:,.2f}"
