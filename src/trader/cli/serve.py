"""``trader serve``: run a service (paper broker, gateway, signal, reconciler, monitor)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy.engine import make_url

from trader.cli.paper import serve_signal
from trader.config import (
    configure_logging,
    load_settings,
    mask_url_password,
    normalize_database_url,
    uvicorn_logging,
)
from trader.errors import ConfigError, UsageError
from trader.paperbroker.settings import DEFAULT_RATE_LIMIT_PER_MINUTE, FaultSettings
from trader.reconcile.cli import check_number
from trader.reconcile.cli import reconciler as reconciler_command

if TYPE_CHECKING:
    from trader.ops.cleanup import CleanupReport
    from trader.ops.monitor import MonitorReading

app = typer.Typer(
    help="Run a service: paper-broker, gateway, signal, reconciler, monitor.",
    no_args_is_help=True,
)


def describe_reading(reading: MonitorReading) -> list[str]:
    """One monitor tick as lines a person reads (``serve monitor --once``)."""

    def money(value: Decimal | None) -> str:
        return "unknown (broker not read)" if value is None else f"{value:,.2f}"

    def pct(value: Decimal | None) -> str:
        return "unknown" if value is None else f"{value:.2%}"

    lines = [
        f"monitor at {reading.ts:%Y-%m-%d %H:%M:%S} UTC: {'clear' if reading.clear else 'NOT CLEAR'}",
        f"  equity {money(reading.equity)} (day start {money(reading.start_equity)}, "
        f"peak {money(reading.peak_equity)}); drawdown {pct(reading.drawdown_pct)} from the peak",
        f"  exposure gross {money(reading.gross_exposure)} ({pct(reading.gross_pct)}), "
        f"net {money(reading.net_exposure)} ({pct(reading.net_pct)})",
        f"  broker calls failed {reading.broker_failures} of {reading.broker_calls}; newest bar "
        f"{reading.latest_bar or 'none'}; breaker {reading.breaker.value if reading.breaker else 'unknown'}",
    ]
    lines += [f"  breach ({breach.kind.value}): {breach.detail}" for breach in reading.breaches]
    lines += [f"  error: {error}" for error in reading.errors]
    return lines


def describe_cleanup(report: CleanupReport) -> list[str]:
    """One stale-order cleanup pass as lines a person reads."""
    lines = [
        f"cleanup: {report.checked} open order(s) checked, {len(report.canceled)} stale canceled, "
        f"{len(report.failed)} cancel(s) failed, {len(report.kept)} kill-switch order(s) kept"
    ]
    for order in report.stale:
        outcome = "canceled" if order.canceled else f"NOT canceled: {order.error}"
        lines.append(
            f"  {order.client_order_id} {order.symbol} open {order.age} ({order.status.value}): {outcome}"
        )
    return lines


def check_port(port: int) -> int:
    """``port`` when it is a TCP port number (1-65535), else a :class:`UsageError`."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port: {port} is not a TCP port; use 1-65535")
    return port


def check_data_dir(path: Path) -> Path:
    """``path`` when it is a directory or does not exist yet (then the synthetic market is served)."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"--data-dir: {path} is not a directory")
    return path


def check_rate(value: float, flag: str) -> float:
    """``value`` when it is a probability in [0, 1], else a :class:`UsageError` naming ``flag``."""
    if not 0 <= value <= 1:
        raise UsageError(f"{flag}: {value} is not a rate; use a number from 0 to 1 (0.2 = 20 %)")
    return value


def check_instant(value: str | None) -> datetime | None:
    """``--at``: an RFC-3339 instant with a timezone, or ``None`` (real time)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--at: '{value}' is not a time; use RFC-3339, e.g. 2024-03-05T15:00:00Z") from None
    if moment.tzinfo is None:
        raise UsageError(f"--at: '{value}' has no timezone; add Z (UTC) or an offset like -05:00")
    return moment


@app.command("paper-broker")
def paper_broker(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on (1-65535).")] = 8765,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="DATA_DIR to serve market data from (default: DATA_DIR setting)."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the synthetic market served when DATA_DIR holds no raw bars.")
    ] = 7,
    at: Annotated[
        str | None,
        typer.Option(help="Start the simulated clock at this instant (RFC-3339); default: real time."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The broker's own state database (default: PAPER_BROKER_DATABASE_URL)."),
    ] = None,
    slippage_bps: Annotated[
        float, typer.Option(help="Market and stop fills move this many basis points against you.")
    ] = 0.0,
    partial_fill_rate: Annotated[
        float, typer.Option(help="Chance (0-1) that an order's first fill takes only half of it.")
    ] = 0.0,
    fault_error_rate: Annotated[float, typer.Option(help="Fault: share (0-1) of requests answered 5xx")] = 0,
    fault_lose_response_rate: Annotated[
        float, typer.Option(help="Fault: share (0-1) of order submissions accepted but answered 500.")
    ] = 0.0,
    fault_timeout_rate: Annotated[
        float, typer.Option(help="Fault: share (0-1) of requests held 30 s and answered 504.")
    ] = 0.0,
    fault_latency_ms: Annotated[int, typer.Option(help="Fault: added latency of every request, ms.")] = 0,
    fault_drop_event_rate: Annotated[
        float, typer.Option(help="Fault: share (0-1) of trade_updates events dropped.")
    ] = 0.0,
    fault_duplicate_event_rate: Annotated[
        float, typer.Option(help="Fault: share (0-1) of trade_updates events sent twice.")
    ] = 0.0,
    rate_limit: Annotated[
        int, typer.Option(help="Requests per minute before 429, as Alpaca (0 turns the limit off).")
    ] = DEFAULT_RATE_LIMIT_PER_MINUTE,
) -> None:
    """Run the built-in Alpaca-compatible paper broker: Trading API v2, the trade_updates stream at
    /stream, and market data (daily bars, corporate actions), all on one port.

    Accepts the key pair of ALPACA_API_KEY_ID / ALPACA_API_SECRET_KEY (default: the local paper keys).
    Its orders, fills and positions persist in PAPER_BROKER_DATABASE_URL. Faults are off by default;
    they can also be changed while it runs (PUT /admin/faults), as can the clock (POST /admin/clock).
    """
    import uvicorn

    from trader.paperbroker import PaperBrokerSettings, create_app

    check_port(port)
    if seed < 0:
        raise UsageError(f"--seed: {seed} must be a non-negative integer")
    if not 0 <= slippage_bps <= 1000:
        raise UsageError(f"--slippage-bps: {slippage_bps} must be between 0 and 1000")
    if fault_latency_ms < 0 or rate_limit < 0:
        raise UsageError("--fault-latency-ms and --rate-limit must be 0 or more")
    faults = FaultSettings(
        error_rate=check_rate(fault_error_rate, "--fault-error-rate"),
        lose_response_rate=check_rate(fault_lose_response_rate, "--fault-lose-response-rate"),
        timeout_rate=check_rate(fault_timeout_rate, "--fault-timeout-rate"),
        latency_ms=fault_latency_ms,
        drop_event_rate=check_rate(fault_drop_event_rate, "--fault-drop-event-rate"),
        duplicate_event_rate=check_rate(fault_duplicate_event_rate, "--fault-duplicate-event-rate"),
        rate_limit_per_minute=rate_limit,
    )
    start_at = check_instant(at)
    settings = load_settings()
    directory = check_data_dir(data_dir if data_dir is not None else settings.data_dir)
    state_url = settings.paper_broker_database_url if database_url is None else _check_url(database_url)
    _make_sqlite_folder(state_url)
    broker = PaperBrokerSettings(
        data_dir=directory,
        api_key_id=settings.alpaca_api_key_id.get_secret_value(),
        api_secret_key=settings.alpaca_api_secret_key.get_secret_value(),
        synthetic_seed=seed,
        database_url=state_url,
        start_at=start_at,
        slippage_bps=Decimal(str(slippage_bps)),
        partial_fill_rate=check_rate(partial_fill_rate, "--partial-fill-rate"),
        faults=faults,
    )
    clock = f"simulated from {start_at.isoformat()}" if start_at else "real time"
    configure_logging(settings)  # uvicorn's own lines go through the root handlers: redacted
    print(
        f"paper broker on http://{host}:{port} (trading, market data, ws://{host}:{port}/stream); "
        f"data {directory}; state {mask_url_password(state_url)}; clock {clock}"
    )
    uvicorn.run(create_app(broker), host=host, port=port, **uvicorn_logging("warning"))


@app.command("gateway")
def gateway(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on (1-65535).")] = 8000,
) -> None:
    """Run the execution gateway (HTTP API): POST /orders (record -> risk -> send, or record only under
    DRY_RUN), GET /orders, GET /orders/{client_order_id}, GET /positions, GET /health and
    POST /webhooks/trade-updates, plus the broker's trade-update stream applied to the ledger.

    Needs TRADER_API_KEY (clients send it as X-API-Key or Authorization: Bearer) and a database at the
    newest schema (trader db upgrade). Orders go to the broker at ALPACA_BASE_URL, which also gives the
    account and prices for the risk check: start 'trader serve paper-broker' first for the built-in one.
    See docs/gateway.md.
    """

    import uvicorn

    from trader.broker.alpaca import AlpacaBroker
    from trader.execution.gateway import create_gateway_app
    from trader.store import migrate
    from trader.store.db import make_engine

    check_port(port)
    settings = load_settings()
    if settings.trader_api_key is None:
        raise ConfigError(
            "TRADER_API_KEY is not set: the gateway refuses to start without an API key; set it to a "
            "long random secret (e.g. the output of: openssl rand -hex 32)"
        )
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        configure_logging(settings)
        app_ = create_gateway_app(settings, broker=AlpacaBroker.from_settings(settings), engine=engine)
        mode = "DRY_RUN: orders recorded, never sent" if settings.dry_run else "orders are sent"
        broker_url = mask_url_password(str(settings.alpaca_base_url).rstrip("/"))
        print(
            f"execution gateway on http://{host}:{port} ({mode}); broker {broker_url}; "
            f"database {mask_url_password(settings.database_url)}"
        )
        uvicorn.run(app_, host=host, port=port, **uvicorn_logging(settings.log_level.value.lower()))
    finally:
        engine.dispose()


def _check_url(url: str) -> str:
    try:
        return normalize_database_url(url)
    except ValueError as error:
        raise UsageError(f"--database-url: {error}") from None


def _make_sqlite_folder(url: str) -> None:
    """SQLite creates the file but not its folder (``var/`` on a fresh clone)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


app.command("reconciler")(reconciler_command)
app.command("signal")(serve_signal)


#: Valid ranges of ``trader serve monitor``'s numeric flags.
MONITOR_INTERVAL_SECONDS = (1.0, 3600.0)
STALE_MINUTES = (1.0, 1440.0)


@app.command("monitor")
def monitor(
    interval: Annotated[float, typer.Option(help="Seconds between two checks, 1-3600.")] = 30.0,
    stale_minutes: Annotated[
        float,
        typer.Option(help="Cancel orders open longer than this many minutes of market hours, 1-1440."),
    ] = 15.0,
    once: Annotated[bool, typer.Option("--once", help="One check and one cleanup pass, then exit.")] = False,
) -> None:
    """Run the post-trade monitor and the stale-order cleanup: drawdown, broker error rate and data
    staleness trip the circuit breaker (automatic trips recover once clear, after approval and the
    quiet period); orders open longer than --stale-minutes of market hours are canceled and recorded
    (the kill switch's closing orders never). See docs/operations.md.
    """
    import threading
    from datetime import UTC, date, datetime, timedelta

    from trader.broker.alpaca import AlpacaBroker
    from trader.data.calendar import trading_calendar
    from trader.data.paths import DataPaths
    from trader.data.store import AdjustedStore
    from trader.ops.breakers import breaker_from_settings
    from trader.ops.cleanup import cancel_stale_orders, run_cleanup
    from trader.ops.monitor import MonitorLimits, PostTradeMonitor, drawdown_limit
    from trader.store import migrate
    from trader.store.db import make_engine

    # Explicit checks: typer's ranges let NaN through on some versions and name only one end.
    check_number(interval, "--interval", MONITOR_INTERVAL_SECONDS, "seconds")
    check_number(stale_minutes, "--stale-minutes", STALE_MINUTES, "minutes")
    settings = load_settings()
    configure_logging(settings)
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        broker = AlpacaBroker.from_settings(settings)
        limit = drawdown_limit(engine, settings.strategy_id)
        limits = MonitorLimits(max_drawdown_pct=limit) if limit is not None else MonitorLimits()
        store = AdjustedStore(DataPaths(settings.data_dir))

        def latest_bar() -> date | None:
            # The newest bar is recent when the data is fresh; a month back is enough to judge it.
            recent = store.read(start=datetime.now(UTC).date() - timedelta(days=31))
            newest = recent.get_column("date").max() if not recent.is_empty() else None
            return newest if isinstance(newest, date) else None

        watcher = PostTradeMonitor(
            broker, breaker_from_settings(settings, engine), limits=limits, latest_bar=latest_bar,
            calendar=trading_calendar(), engine=engine,
        )  # fmt: skip
        max_age = timedelta(minutes=stale_minutes)
        if once:
            reading = watcher.check()
            report = cancel_stale_orders(broker, engine, max_age=max_age)
            print("\n".join([*describe_reading(reading), *describe_cleanup(report)]))
            return
        drawdown = f"{limits.max_drawdown_pct:.2%}"
        print(f"monitor every {interval}s (drawdown limit {drawdown}); stale orders > {stale_minutes} min")
        stop = threading.Event()
        cleaner = threading.Thread(
            target=run_cleanup,
            args=(broker, engine, stop),
            kwargs={"interval": interval, "max_age": max_age},
            daemon=True,
        )
        cleaner.start()
        try:
            watcher.run(stop, interval)
        except KeyboardInterrupt:
            stop.set()
    finally:
        engine.dispose()
