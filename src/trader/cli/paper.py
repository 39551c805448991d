"""``trader paper-run``: whole paper-trading days (see :mod:`trader.ops.paper_day`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from trader.broker.base import Broker
from trader.cli.data import parse_day, pipeline_for
from trader.cli.output import console
from trader.config import Settings, configure_logging, load_settings, mask_url_password
from trader.data.calendar import trading_calendar
from trader.data.paths import DataPaths
from trader.domain.ids import STRATEGY_ID_RULE, is_strategy_id
from trader.errors import ConfigError, TraderError, UsageError, first_line
from trader.ops.breakers import breaker_from_settings
from trader.ops.paper_day import DayResult, PaperDay, PaperDayError
from trader.paperbroker.runner import PaperBrokerAdmin, paper_broker_running
from trader.signal.service import SignalService
from trader.store import migrate
from trader.store.db import make_engine

NEW_YORK = ZoneInfo("America/New_York")


def parse_known_day(value: str, flag: str) -> date:
    """``value`` as a date inside the exchange calendar, else a :class:`UsageError` naming ``flag``."""
    chosen = parse_day(value, flag)
    calendar = trading_calendar()
    if not calendar.knows(chosen):
        raise UsageError(f"{flag}: {chosen} is outside the calendar, which knows {calendar.range_text()}")
    return chosen


def parse_session(value: str, flag: str) -> date:
    """``value`` as a trading session of the exchange calendar, else a :class:`UsageError`."""
    chosen = parse_known_day(value, flag)
    if not trading_calendar().is_session(chosen):
        raise UsageError(f"{flag}: {chosen} is not a trading session (weekend or holiday)")
    return chosen


def strategy_or_default(value: str | None, settings: Settings) -> str:
    """``--strategy`` checked like ``STRATEGY_ID`` (it names orders and keys), or ``STRATEGY_ID``."""
    if value is None:
        return settings.strategy_id
    if not is_strategy_id(value):
        raise UsageError(f"--strategy: {value!r} is not a strategy id; use {STRATEGY_ID_RULE}")
    return value


def trading_days(day: str | None, first: str | None, last: str | None) -> list[date]:
    """The sessions asked for: ``--date D`` or ``--from D1 --to D2`` (holidays and weekends skipped)."""
    if day is not None and (first is not None or last is not None):
        raise UsageError("give either --date or --from/--to, not both")
    calendar = trading_calendar()
    if day is not None:
        return [parse_session(day, "--date")]
    if first is None or last is None:
        raise UsageError("give --date D, or both --from D1 and --to D2")
    start, end = parse_known_day(first, "--from"), parse_known_day(last, "--to")
    if start > end:
        raise UsageError(f"--from {start} is after --to {end}")
    days: list[date] = calendar.sessions(start, end).to_list()
    if not days:
        raise UsageError(f"no trading session between {start} and {end}")
    return days


@contextmanager
def _broker_for(settings: Settings, days: list[date]) -> Iterator[tuple[Broker, PaperBrokerAdmin | None]]:
    """The configured broker; the built-in paper broker is started here when it is not running."""
    from trader.broker.alpaca import AlpacaBroker

    if not settings.uses_local_paper_broker:
        if days != [datetime.now(NEW_YORK).date()]:
            raise UsageError(
                "past days can only be run against the built-in paper broker (it replays history); "
                f"{mask_url_password(str(settings.alpaca_base_url))} trades in real time"
            )
        yield AlpacaBroker.from_settings(settings), None
        return
    from trader.paperbroker import PaperBrokerSettings

    calendar = trading_calendar()
    broker_settings = PaperBrokerSettings(
        data_dir=settings.data_dir,
        api_key_id=settings.alpaca_api_key_id.get_secret_value(),
        api_secret_key=settings.alpaca_api_secret_key.get_secret_value(),
        database_url=settings.paper_broker_database_url,
        start_at=calendar.session_open(days[0]),
    )
    url = str(settings.alpaca_base_url).rstrip("/")
    with ExitStack() as stack:
        try:
            running = stack.enter_context(paper_broker_running(url, broker_settings))
        except SQLAlchemyError as exc:
            where = mask_url_password(settings.paper_broker_database_url)
            raise ConfigError(
                f"PAPER_BROKER_DATABASE_URL: the built-in paper broker cannot open its database {where} "
                f"({first_line(exc)}); start that server or point the URL at one that runs"
            ) from None
        if running.started_here:
            console.print(
                f"[dim]started the built-in paper broker at {running.url} (stopped at the end)[/dim]"
            )
        with PaperBrokerAdmin(
            running.url, broker_settings.api_key_id, broker_settings.api_secret_key
        ) as admin:
            yield AlpacaBroker.from_settings(settings), admin


def _ingest_from_broker(settings: Settings, engine: Engine) -> Callable[[date], None]:
    from trader.data.sources import SourceError
    from trader.data.sources.alpaca_source import AlpacaSource
    from trader.ops.paper_day import raw_closes
    from trader.signal.service import tradable_on

    paths = DataPaths(settings.data_dir)
    pipeline = pipeline_for(settings, engine)

    def ingest(day: date) -> None:
        # Alpaca has no "every symbol" bar query: ask for the symbols listed that day, unless the store
        # has that day already (re-fetching it from another source would record it again as newer).
        stored = set(raw_closes(paths, day))
        symbols = sorted(tradable_on(paths, day) - stored)
        if not symbols:
            return
        try:
            pipeline.ingest(AlpacaSource.from_settings(settings), symbols, day, day)
        except SourceError as exc:
            if not stored:  # fail closed: no bar of the session before the day, no trading
                raise PaperDayError(f"no bars of {day} to trade on: {exc}") from None
            # The store has the day; the symbols still missing had no bar (halted that session), so
            # the source has nothing for them either. PaperDay trades on what the store holds.

    return ingest


def _summary(results: list[DayResult], dry_run: bool) -> Table:
    table = Table(title="Paper days", title_justify="left")
    for column in ("date", "orders", "sent", "rejected", "fills", "open", "equity", "realized", "unrealized"):
        table.add_column(column, justify="left" if column == "date" else "right")
    for r in results:
        table.add_row(
            str(r.trading_date), str(len(r.orders)) + (" (reused)" if r.reused_orders else ""),
            str(r.sent), str(len(r.rejected)), str(r.fills), str(len(r.unfinished)),
            f"{r.equity:,.2f}" if r.equity is not None else "-", f"{r.realized:,.2f}", f"{r.unrealized:,.2f}",
        )  # fmt: skip
    models = sorted({r.signal.result.model_version for r in results if r.signal})
    notes = [f"model {', '.join(models)}", f"reports in {Path(results[-1].report_dir or '.').parent}/<date>/"]
    if any(r.rejected for r in results):
        notes.append("rejection reasons: reject_reason in each day's blotter.csv")
    if dry_run:
        notes.append("DRY_RUN=true: orders were recorded, not sent (set DRY_RUN=false to paper trade)")
    table.caption = "; ".join(notes)
    return table


def paper_run(
    day: Annotated[str | None, typer.Option("--date", help="The trading day to run, YYYY-MM-DD.")] = None,
    first: Annotated[str | None, typer.Option("--from", help="First day of a range, YYYY-MM-DD.")] = None,
    last: Annotated[str | None, typer.Option("--to", help="Last day of a range, YYYY-MM-DD.")] = None,
    strategy: Annotated[
        str | None, typer.Option(help="Strategy whose production model trades (default: STRATEGY_ID).")
    ] = None,
    fill_timeout: Annotated[
        float, typer.Option(min=1.0, max=3600.0, help="Seconds to wait for the day's fills.")
    ] = 60.0,
    ingest: Annotated[
        bool,
        typer.Option(
            help="Ingest the previous session's bars from the broker's market data first (symbols "
            "the store has for that day already are not fetched again)."
        ),
    ] = True,
) -> None:
    """Run whole paper-trading days: ingest -> signal -> allocation -> risk -> orders -> fills ->
    positions -> P&L report, on the code path live trading uses.

    Against the built-in paper broker (the default ALPACA_BASE_URL) any past day can be run: the
    command starts the broker if it is not running and moves its clock through the day. Running a day
    twice sends no second set of orders. Reports go to ARTIFACTS_DIR/reports/<date>/.
    """
    settings = load_settings()
    days = trading_days(day, first, last)
    name = strategy_or_default(strategy, settings)
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        results: list[DayResult] = []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with (
            _broker_for(settings, days) as (broker, admin),
            Progress(*columns, console=console, transient=True) as progress,
        ):
            task = progress.add_task("paper days", total=len(days))
            current = {"day": days[0]}

            def show(stage: str) -> None:
                progress.update(task, description=f"{current['day']}: {stage}")

            runner = PaperDay(
                settings, engine, broker, strategy=name, admin=admin, fill_timeout=fill_timeout,
                ingest=_ingest_from_broker(settings, engine) if ingest else None, on_stage=show,
                redis=_redis_client(settings),
            )  # fmt: skip
            for trading_day in days:
                current["day"] = trading_day
                results.append(runner.run(trading_day))
                progress.advance(task)
    finally:
        engine.dispose()
    console.print(_summary(results, settings.dry_run))


def replay(
    day: Annotated[str, typer.Option("--date", help="The recorded paper day to replay, YYYY-MM-DD.")],
    strategy: Annotated[str | None, typer.Option(help="Strategy (default: STRATEGY_ID).")] = None,
) -> None:
    """Replay a recorded paper day through the same code in dry-run and write a parity report.

    The raw recorded bars are run through the pipeline again (point in time), the recorded model
    version scores them, and the allocator and the risk check decide on the recorded account
    snapshot. Weights, orders and risk verdicts must be identical (scores within 1e-9 relative).
    Exit 1 when anything differs. Report: ARTIFACTS_DIR/reports/<date>/replay.md.
    """
    from trader.ops.replay import Replayer, write_replay_report

    settings = load_settings()
    chosen = parse_session(day, "--date")
    name = strategy_or_default(strategy, settings)
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        with console.status(f"replaying {chosen} ..."):
            report = Replayer(settings, engine, strategy=name).replay(chosen)
    finally:
        engine.dispose()
    folder = write_replay_report(report, settings.artifacts_dir / "reports")
    console.print(report.to_markdown())
    console.print(f"report: {folder / 'replay.md'}")
    if not report.passed:
        raise typer.Exit(1)


report_app = typer.Typer(help="Daily reports: blotter, P&L by symbol and strategy, equity curve.")


@report_app.command("pnl")
def report_pnl(
    day: Annotated[str, typer.Option("--date", help="Trading day, YYYY-MM-DD.")],
) -> None:
    """Write the day's report (blotter CSV, P&L Markdown/HTML/JSON with the equity curve) from the
    database, marking positions at the day's raw closes (of the bars the quality gate accepted), and
    print its summary."""
    from sqlalchemy.orm import Session

    from trader.ops.paper_day import clean_closes
    from trader.portfolio.report import build_daily_report, write_daily_report

    settings = load_settings()
    chosen = parse_session(day, "--date")
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        marks = clean_closes(DataPaths(settings.data_dir), chosen)
        with Session(engine) as session:
            report = build_daily_report(session, chosen, marks)
    finally:
        engine.dispose()
    held = {s.symbol for s in report.symbols if s.qty != 0}
    if held and held <= set(report.missing_prices):
        # No held symbol has a price: the session is not in this DATA_DIR at all. Written anyway, the
        # report's totals would leave every position out and replace a correct one. (A few symbols
        # without a price, halted that day, are written as "value unknown".)
        raise TraderError(
            f"no clean close on {chosen} in {settings.data_dir} for {', '.join(report.missing_prices[:10])}: "
            "nothing written; ingest that session first (trader data ingest, or trader paper-run)"
        )
    folder = write_daily_report(report, settings.artifacts_dir / "reports")
    console.print((folder / "pnl.md").read_text(encoding="utf-8"))
    console.print(f"report: {folder}")


def signal(
    day: Annotated[str, typer.Option("--date", help="Trading day to compute the weights for, YYYY-MM-DD.")],
    strategy: Annotated[str | None, typer.Option(help="Strategy (default: STRATEGY_ID).")] = None,
) -> None:
    """Compute (or show, when already recorded) the production model's target weights for a day.

    Scores come from the session before the date; the run is recorded in signal_runs and published
    (Redis stream when REDIS_URL is set, else the events table).
    """
    settings = load_settings()
    chosen = parse_session(day, "--date")
    name = strategy_or_default(strategy, settings)
    engine = make_engine(settings.database_url)
    try:
        migrate.require_current(engine)
        outcome = _signal_service(settings, engine, name).run(chosen)
    finally:
        engine.dispose()
    result = outcome.result
    table = Table(
        title=f"Signal {chosen} (from {outcome.as_of}), model {result.model_version}", title_justify="left"
    )
    table.add_column("symbol")
    table.add_column("score", justify="right")
    table.add_column("weight", justify="right")
    for symbol, weight in sorted(result.weights.items(), key=lambda item: -result.scores.get(item[0], 0.0)):
        table.add_row(symbol, f"{result.scores.get(symbol, float('nan')):+.5f}", f"{weight:.4f}")
    console.print(table)
    state = "computed and recorded" if outcome.computed else "already recorded (not recomputed)"
    console.print(f"{len(result.scores)} symbols scored; run #{outcome.run_id} {state}")


def _signal_service(settings: Settings, engine: Engine, strategy: str) -> SignalService:
    """The signal service as the settings configure it (intents to Redis under REDIS_KEY_PREFIX when
    REDIS_URL is set, else to the events table), refusing new signals after a kill."""
    return SignalService(
        engine,
        DataPaths(settings.data_dir),
        strategy=strategy,
        redis=_redis_client(settings),
        redis_prefix=settings.redis_key_prefix,
        breaker=breaker_from_settings(settings, engine),
    )


def _redis_client(settings: Settings) -> object | None:
    if not settings.redis_url:
        return None
    import redis

    return redis.Redis.from_url(settings.redis_url)


def serve_signal(
    poll_seconds: Annotated[
        float, typer.Option(min=0.5, max=3600.0, help="Seconds between checks of the registry and the data.")
    ] = 5.0,
    strategy: Annotated[str | None, typer.Option(help="Strategy (default: STRATEGY_ID).")] = None,
) -> None:
    """Run the signal service: follow the production model (reloaded within one poll of a promotion or
    rollback; at once on PostgreSQL, which notifies on channel model_registry) and compute the next
    trading day's target weights once the previous session's bars are in the store. Stop with Ctrl-C.
    """
    import threading

    from trader.signal.runner import SignalLoop, notification_waiter

    settings = load_settings()
    configure_logging(settings)
    name = strategy_or_default(strategy, settings)
    engine = make_engine(settings.database_url)
    stop = threading.Event()
    try:
        migrate.require_current(engine)
        paths = DataPaths(settings.data_dir)
        service = _signal_service(settings, engine, name)
        loop = SignalLoop(service, paths)
        where = "Redis stream" if settings.redis_url else "events table"
        console.print(f"signal service for {name}: polling every {poll_seconds}s, intents to the {where}")
        try:
            loop.run(stop, notification_waiter(engine), poll_seconds)
        except KeyboardInterrupt:
            stop.set()
    finally:
        engine.dispose()
