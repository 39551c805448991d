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


def _decimal(value: str, flag: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise UsageError(f"{flag}: '{value}' is not a number; use e.g. 0 or 2.5") from None
    if not number.is_finite() or number < 0:
        raise UsageError(f"{flag}: {value} must be a number of 0 or more")
    return number


def reconciler(
    interval: Annotated[float, typer.Option(help="Seconds between runs (the first runs at once).")] = 60.0,
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
            help="A pending_submit order the broker does not know becomes submit_failed after this."
        ),
    ] = 10.0,
    lookback_days: Annotated[
        float, typer.Option(help="List the broker's orders submitted this many days back (plus all open).")
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
    from trader.config import configure_logging, load_settings
    from trader.reconcile.drift import ReconcileConfig
    from trader.reconcile.reconciler import Reconciler, ReconcileReport
    from trader.store import migrate
    from trader.store.db import make_engine

    if not interval > 0:
        raise UsageError(f"--interval: {interval} must be more than 0 seconds")
    if grace_minutes < 0 or not lookback_days > 0:
        raise UsageError("--grace-minutes must be 0 or more and --lookback-days more than 0")
    config = ReconcileConfig(
        drift_shares=_decimal(drift_shares, "--drift-shares"),
        drift_notional=_decimal(drift_notional, "--drift-notional"),
        pending_grace=timedelta(minutes=grace_minutes),
        lookback=timedelta(days=lookback_days),
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
                raise UsageError(f"the broker at {settings.alpaca_base_url} cannot be read: {exc}") from None
            return
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"reconciler: every {interval:g} s against {str(settings.alpaca_base_url).rstrip('/')}")
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
