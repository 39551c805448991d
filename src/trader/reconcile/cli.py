"""``trader serve reconciler``: reconcile now, then every ``--interval`` seconds (registered in
:mod:`trader.cli.serve`). Heavy imports happen inside the command, not at import."""

from __future__ import annotations

import json
import signal
import threading
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer

from trader.errors import UsageError

#: Valid ranges of the numeric flags: a value outside them is a typo (or NaN / infinity), and one that
#: large would overflow ``timedelta`` or ``Event.wait`` instead of failing as bad usage.
INTERVAL_SECONDS = (1.0, 86_400.0)
GRACE_MINUTES = (0.0, 10_080.0)
LOOKBACK_DAYS = (0.0, 366.0)
MAX_DRIFT_SHARES = Decimal(1_000_000_000)
MAX_DRIFT_NOTIONAL = Decimal(1_000_000_000_000)


def check_number(
    value: float, flag: str, bounds: tuple[float, float], unit: str, *, above: bool = False
) -> float:
    """``value`` when it lies in ``bounds`` (``above``: strictly more than the low end), else a
    :class:`UsageError` naming ``flag`` and the range. NaN fails every comparison, so it is refused."""
    low, high = bounds
    if (low < value if above else low <= value) and value <= high:
        return value
    low_text = f"more than {low:g}" if above else f"{low:g}"
    raise UsageError(f"{flag}: {value:g} is out of range; use {low_text} to {high:g} {unit}")


def _decimal(value: str, flag: str, high: Decimal) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{flag}: '{value}' is not a number; use e.g. 0 or 2.5") from None
    if not number.is_finite() or not 0 <= number <= high:
        raise UsageError(f"{flag}: {value} is out of range; use a number from 0 to {high:,}")
    return number


def reconciler(
    interval: Annotated[
        float, typer.Option(help="Seconds between runs, 1-86400 (the first runs at once).")
    ] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="Run once, print the report and exit.")] = False,
    drift_shares: Annotated[
        str, typer.Option(help="Alert when broker and internal quantities differ by more shares than this.")
    ] = "0",
    drift_notional: Annotated[
        str, typer.Option(help="Alert when the quantity gap is worth more dollars than this.")
    ] = "0",
    grace_minutes: Annotated[
        float,
        typer.Option(
            help="Minutes (0-10080) after which a pending_submit order the broker does not know "
            "becomes submit_failed."
        ),
    ] = 10.0,
    lookback_days: Annotated[
        float,
        typer.Option(
            help="List the broker's orders submitted this many days back, up to 366 (plus all open)."
        ),
    ] = 3.0,
    adopt_strategy: Annotated[
        str,
        typer.Option(help="Strategy that orders found at the broker but never recorded are booked under."),
    ] = "external",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each run's report as one JSON line.")
    ] = False,
) -> None:
    """Run the reconciler: pull the broker's positions and orders, heal the database (missed fills,
    order statuses, unsent pending orders, orders we never recorded, edited positions), journal every
    correction in events (reconcile.*), alert on drift (reconcile.drift) and write snapshots.

    It never sends an order. Reads the broker at ALPACA_BASE_URL (even under DRY_RUN) and the database
    at DATABASE_URL (at the newest schema: trader db upgrade). See docs/reconciler.md.
    """

    from trader.broker.alpaca import AlpacaBroker
    from trader.broker.errors import BrokerError
    from trader.config import configure_logging, load_settings, mask_url_password
    from trader.reconcile.drift import ReconcileConfig
    from trader.reconcile.reconciler import Reconciler, ReconcileReport
    from trader.store import migrate
    from trader.store.db import make_engine

    check_number(interval, "--interval", INTERVAL_SECONDS, "seconds")
    config = ReconcileConfig(
        drift_shares=_decimal(drift_shares, "--drift-shares", MAX_DRIFT_SHARES),
        drift_notional=_decimal(drift_notional, "--drift-notional", MAX_DRIFT_NOTIONAL),
        pending_grace=timedelta(
            minutes=check_number(grace_minutes, "--grace-minutes", GRACE_MINUTES, "minutes")
        ),
        lookback=timedelta(
            days=check_number(lookback_days, "--lookback-days", LOOKBACK_DAYS, "days", above=True)
        ),
        adopt_strategy=adopt_strategy,
    )
    settings = load_settings()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        service = Reconciler(engine, AlpacaBroker.from_settings(settings), config)

        def show(report: ReconcileReport) -> None:
            typer.echo(json.dumps(report.summary()) if as_json else _line(report.summary()))

        if once:
            try:
                show(service.run_once())
            except BrokerError as exc:
                broker = mask_url_password(str(settings.alpaca_base_url))
                raise UsageError(f"the broker at {broker} cannot be read: {exc}") from None
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        broker = mask_url_password(str(settings.alpaca_base_url).rstrip("/"))
        typer.echo(f"reconciler: every {interval:g} s against {broker}")
        shown: ReconcileReport | None = None
        while not stop.is_set():
            service.run_forever(interval, stop, max_runs=1)  # a failed run is logged, not fatal
            if service.last_report is not None and service.last_report is not shown:
                shown = service.last_report
                show(shown)
            stop.wait(interval)
    finally:
        engine.dispose()


def _line(summary: dict[str, Any]) -> str:
    """One line a person reads: clean, or what was corrected and which symbols drifted."""
    head = f"reconcile {summary['finished_at']}: "
    checked = f"{summary['orders_checked']} orders, {summary['positions_checked']} positions checked"
    if summary["clean"]:
        return head + f"clean ({checked}, {summary['seconds']} s)"
    fixes = ", ".join(f"{kind.removeprefix('reconcile.')} {n}" for kind, n in summary["corrections"].items())
    drift = ", ".join(
        f"{d['symbol']} broker {d['broker_qty']} vs ours {d['recorded_qty']}"
        + ("" if d["resolved"] else " (NOT resolved)")
        for d in summary["drift"]
    )
    parts = [p for p in (fixes, f"drift: {drift}" if drift else "") if p]
    return head + "; ".join(parts) + f" ({checked}, {summary['seconds']} s)"
