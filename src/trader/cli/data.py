"""``trader data``: ingest bars, generate the synthetic market, query the catalog, show data status."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.status import Status
from sqlalchemy import Engine

from trader.cli.output import console, key_value_table
from trader.config import Settings, load_settings
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline, IngestReport
from trader.data.quality import GateConfig
from trader.data.sources import BarSource, SourceError
from trader.errors import TraderError, UsageError
from trader.store.db import make_engine

app = typer.Typer(
    help=(
        "Market data: ingest bars (Alpaca, CSV, synthetic) through raw -> adjust -> quality gate -> "
        "adjusted store, query the DuckDB catalog, and check coverage and freshness."
    ),
    no_args_is_help=True,
)


class SourceName(StrEnum):
    ALPACA = "alpaca"
    CSV = "csv"
    SYNTHETIC = "synthetic"


def parse_day(value: str, flag: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: '{value}' is not a date; use YYYY-MM-DD") from None


def parse_symbols(value: str | None) -> list[str] | None:
    if value is None:
        return None
    symbols = [s.strip().upper() for s in value.split(",") if s.strip()]
    if not symbols:
        raise UsageError("--symbols: give a comma-separated list such as AAPL,MSFT")
    return symbols


def pipeline_for(settings: Settings, engine: Engine) -> DataPipeline:
    """The ingest pipeline of ``settings``: its ``DATA_DIR``, the database of ``engine`` (quarantine,
    universe, events) and, when ``REDIS_URL`` is set, the online store. Every command that ingests
    builds it here, so none of them leaves a store behind."""
    online = None
    if settings.redis_url:
        import redis

        from trader.data.online import KEY_PREFIX, OnlineStore

        online = OnlineStore(
            redis.Redis.from_url(settings.redis_url), prefix=settings.redis_key_prefix + KEY_PREFIX
        )
    return DataPipeline(
        DataPaths(settings.data_dir), engine=engine, online=online, gate=GateConfig.from_settings(settings)
    )


@contextmanager
def _pipeline(settings: Settings) -> Iterator[DataPipeline]:
    engine = make_engine(settings.database_url)
    try:
        yield pipeline_for(settings, engine)
    finally:
        engine.dispose()


def _run_ingest(
    settings: Settings,
    source: BarSource,
    symbols: list[str] | None,
    start: date,
    end: date,
    require_fresh: bool,
) -> IngestReport:
    from trader.store.migrate import upgrade

    with _pipeline(settings) as pipeline:
        assert pipeline.engine is not None
        upgrade(pipeline.engine)  # the quarantine and universe tables must exist; no-op when current
        with Status("starting", console=console) as status:
            report = pipeline.ingest(
                source,
                symbols,
                start,
                end,
                require_fresh=require_fresh,
                on_stage=lambda stage: status.update(f"ingest: {stage} ..."),
            )
    _print_report(report, settings.data_dir)
    for note in source_notes(source):
        console.print(f"note: {note}")
    if report.online_error:
        console.print(f"[yellow]warning: {report.online_error}[/yellow]")
    if report.leftovers_removed:
        console.print(
            f"removed {report.leftovers_removed} temporary file(s) or folder(s) that an interrupted "
            "earlier write left in the data dir (never read; no data changed)"
        )
    return report


def source_notes(source: BarSource) -> list[str]:
    """What the last fetch of ``source`` (each source of a failover) left out and why.

    Rows outside the dates, daily bars of sessions still trading: a count the user should see
    rather than a silent gap. Sources without notes give none.
    """
    from trader.data.sources.failover import FailoverSource

    if isinstance(source, FailoverSource):
        return [note for inner in source.sources for note in source_notes(inner)]
    notes: list[str] = getattr(source, "last_notes", [])
    return [f"{source.name}: {note}" for note in notes]


def _failed(what: str, error: SourceError, source: BarSource) -> TraderError:
    """The one-line error of a failed ingest, with the notes that may explain it (no bars left)."""
    notes = source_notes(source)
    return TraderError(f"{what} failed: {error}" + (f" ({'; '.join(notes)})" if notes else ""))


def _print_report(report: IngestReport, data_dir: Path) -> None:
    rules = ", ".join(f"{rule} {n}" for rule, n in report.quarantined_by_rule.items()) or "none"
    stages = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.stage_seconds.items())
    console.print(
        key_value_table(
            f"Ingest {report.ingest_id}",
            {
                "source": report.source,
                "symbols": str(report.symbols),
                "rows received": f"{report.rows_received:,}",
                "raw rows recorded": (
                    f"{report.raw_new_rows:,} new, {report.raw_skipped_rows:,} already recorded"
                ),
                "clean rows (whole history)": f"{report.clean_rows:,}",
                "quarantined (whole history)": f"{report.quarantined_rows:,} ({rules})",
                "gaps (whole history)": f"{report.gaps:,}",
                "corporate actions": f"{report.actions:,}",
                "newest clean bar": str(report.newest_bar),
                "freshness": report.freshness,
                "time": f"{report.seconds:.2f}s ({stages})",
                "data dir": str(data_dir),
            },
        )
    )


@app.command()
def ingest(
    source: Annotated[
        list[SourceName],
        typer.Option(
            "--source", help="Where bars come from; repeat for failover in order (e.g. alpaca then csv)."
        ),
    ],
    path: Annotated[
        Path | None,
        typer.Option(help="CSV file or folder (*.csv, *.csv.gz, any case) for --source csv."),
    ] = None,
    actions: Annotated[
        Path | None, typer.Option(help="CSV of corporate actions: symbol,ex_date,split_ratio,cash_dividend.")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: all the source has).")
    ] = None,
    start: Annotated[str, typer.Option(help="First date, YYYY-MM-DD.")] = "2015-01-01",
    end: Annotated[
        str | None,
        typer.Option(
            help="Last date, YYYY-MM-DD (default: the last session that has closed: a daily bar of a "
            "session still trading would be partial)."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of --source synthetic (0 or more).")] = 7,
    require_fresh: Annotated[
        bool,
        typer.Option("--require-fresh", help="Fail (exit 1) if the newest bar is stale for the calendar."),
    ] = False,
) -> None:
    """Ingest bars: raw recorder -> corporate-action adjustment -> quality gate -> adjusted store.

    Re-running the same ingest records nothing new. Rows that fail the gate go to quarantine with the
    rule and reason; see them with `trader data sql "select * from quarantine"`.
    """
    settings = load_settings()
    first = parse_day(start, "--start")
    last = parse_day(end, "--end") if end else _last_closed_session()
    if first > last:
        raise UsageError(f"--start {first} is after --end {last}")
    chosen = [_make_source(name, settings, path, actions, first, last, seed) for name in source]
    if len(chosen) == 1:
        bar_source = chosen[0]
    else:
        from trader.data.sources.failover import FailoverSource

        bar_source = FailoverSource(chosen)
    try:
        _run_ingest(settings, bar_source, parse_symbols(symbols), first, last, require_fresh)
    except SourceError as exc:
        raise _failed("ingest", exc, bar_source) from None


def _last_closed_session() -> date:
    from trader.data.calendar import CalendarRangeError, trading_calendar

    try:
        return trading_calendar().last_closed_session(datetime.now(UTC))
    except CalendarRangeError as exc:
        raise UsageError(f"--end: give it explicitly ({exc})") from None


def _make_source(
    name: SourceName,
    settings: Settings,
    path: Path | None,
    actions: Path | None,
    start: date,
    end: date,
    seed: int,
) -> BarSource:
    if name is SourceName.CSV:
        if path is None:
            raise UsageError("--path is required with --source csv (a CSV file or a folder of them)")
        if not path.exists():
            raise UsageError(f"--path: {path} does not exist")
        if actions is not None and not actions.is_file():
            raise UsageError(f"--actions: {actions} is not a file")
        from trader.data.sources.csv_source import CsvSource

        return CsvSource(path, actions_path=actions)
    if name is SourceName.ALPACA:
        from trader.data.sources.alpaca_source import AlpacaSource

        return AlpacaSource.from_settings(settings)
    from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource

    if start >= end:
        raise UsageError(f"--start {start} must be before --end {end} for --source synthetic")
    check_synthetic_range(start, end)
    return SyntheticSource(SyntheticConfig(symbols=50, start=start, end=end, seed=seed))


def check_synthetic_range(start: date, end: date) -> None:
    """Refuse dates the synthetic market cannot fill: it generates bars on calendar sessions only.

    Without this, a range beyond the calendar was cut short silently and a range without a session
    ended in the source's "no bars" error.
    """
    from trader.data.calendar import trading_calendar

    calendar = trading_calendar()
    known = f"the calendar knows {calendar.range_text()}"
    if start < calendar.first_session:
        raise UsageError(f"--start {start} is before the calendar's first session: {known}")
    if end > calendar.last_session:
        raise UsageError(f"--end {end} is after the calendar's last session: {known}")
    if calendar.sessions(start, end).is_empty():
        raise UsageError(
            f"--start {start} to --end {end} holds no {calendar.name} session (a weekend or holidays): "
            "give a range with at least one trading day"
        )


@app.command()
def synth(
    symbols: Annotated[int, typer.Option(min=1, max=5000, help="How many symbols to generate.")] = 50,
    start: Annotated[str, typer.Option(help="First date, YYYY-MM-DD.")] = "2019-01-02",
    end: Annotated[str, typer.Option(help="Last date, YYYY-MM-DD.")] = "2024-12-31",
    seed: Annotated[
        int, typer.Option(min=0, help="Random seed (0 or more); the same seed gives the same market.")
    ] = 7,
    momentum: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Weak momentum planted in the returns (0 = pure random walks; the demo uses 0.3, an "
            "information coefficient of about 0.06 for a 20-day momentum ranking).",
        ),
    ] = 0.0,
) -> None:
    """Generate the deterministic synthetic market and ingest it through the same pipeline.

    The market has a common factor, sectors, fat tails and volume, plus the events real data has:
    splits and dividends (with their corporate-action records), bad ticks, missing days, halts, IPOs
    and delistings. It is the embedded data set of `make demo`.
    """
    settings = load_settings()
    first, last = parse_day(start, "--start"), parse_day(end, "--end")
    if first >= last:
        raise UsageError(f"--start {first} must be before --end {last}")
    check_synthetic_range(first, last)
    from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource

    source = SyntheticSource(
        SyntheticConfig(symbols=symbols, start=first, end=last, seed=seed, momentum=momentum)
    )
    try:
        _run_ingest(settings, source, None, first, last, require_fresh=False)
    except SourceError as exc:
        raise _failed("synth", exc, source) from None


@app.command()
def accept(
    symbol: Annotated[str, typer.Argument(metavar="SYMBOL", help="The symbol, e.g. NFLX.")],
    day: Annotated[str, typer.Argument(metavar="DATE", help="The bar's date, YYYY-MM-DD (a session).")],
    reason: Annotated[
        str | None,
        typer.Option(help="Why the move is real (e.g. 'Q1 earnings: subscriber loss'); kept with it."),
    ] = None,
    undo: Annotated[
        bool, typer.Option("--undo", help="Take an acceptance back: the outlier rule judges the bar again.")
    ] = False,
) -> None:
    """Accept a bar's close-to-close move as real, so the outlier rule stops quarantining it.

    The quality gate quarantines a move beyond DATA_OUTLIER_THRESHOLD (30 %) with no corporate action
    between the two bars, because most such moves are bad ticks. Real ones happen (an earnings gap, a
    takeover bid): check the price elsewhere, then accept that one bar. The symbol's recorded history
    is re-checked at once (the bar moves to the adjusted store) and every later ingest keeps it clean.
    Each acceptance is journaled (event data_move_accepted); list them with
    `trader data sql "select * from accepted_moves"`.
    """
    settings = load_settings()
    name = _one_symbol(symbol)
    when = parse_day(day, "DATE")
    _require_session(when)
    if undo and reason is not None:
        raise UsageError("--reason is not used with --undo: give one or the other")
    text = None if undo else _reason(reason)
    from trader.data.pipeline import DataError
    from trader.store.migrate import upgrade

    with _pipeline(settings) as pipeline:
        assert pipeline.engine is not None
        upgrade(pipeline.engine)
        try:
            if text is None:
                report = pipeline.revoke_move(name, when)
            else:
                report = pipeline.accept_move(name, when, text)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        still = _refusals_of(pipeline, name, when, accepted=text is not None)
    verb = "took back the acceptance of" if text is None else "accepted the move of"
    console.print(f"{verb} {name} on {when}; {name}'s recorded history was checked again")
    _print_report(report, settings.data_dir)
    if still:
        console.print(f"{name} on {when} is quarantined: {still}")
    else:
        console.print(f"{name} on {when} is clean")


def _one_symbol(value: str) -> str:
    symbol = value.strip().upper()
    if not symbol or any(c in symbol for c in ", \t"):
        raise UsageError(f"SYMBOL: '{value}' is not one symbol; give one such as NFLX")
    return symbol


def _require_session(day: date) -> None:
    from trader.data.calendar import trading_calendar

    calendar = trading_calendar()
    if not calendar.knows(day):
        raise UsageError(f"DATE {day} is outside the calendar: it knows {calendar.range_text()}")
    if not calendar.is_session(day):
        raise UsageError(f"DATE {day} is not a {calendar.name} session: give the date of the bar")


def _reason(value: str | None) -> str:
    text = (value or "").strip()
    if not text:
        raise UsageError("--reason is required: say why the move is real (it is kept with the acceptance)")
    if len(text) > 500:
        raise UsageError(f"--reason is {len(text)} characters long: keep it to 500")
    return text


def _refusals_of(pipeline: DataPipeline, symbol: str, day: date, *, accepted: bool) -> str | None:
    """Why the bar of ``symbol`` on ``day`` is not in the adjusted store now, or None when it is.

    Quarantine is a log: an accepted bar's earlier ``outlier`` row stays in it, so once the move is
    accepted, another rule is what keeps the bar out.
    """
    from trader.data.store import AdjustedStore, QuarantineStore

    clean = AdjustedStore(pipeline.paths).read(symbols=[symbol], start=day, end=day)
    if not clean.is_empty():
        return None
    rows = QuarantineStore(pipeline.paths).read(start=day, end=day).filter(pl.col("symbol") == symbol)
    if accepted and not rows.filter(pl.col("rule") != "outlier").is_empty():
        rows = rows.filter(pl.col("rule") != "outlier")
    if rows.is_empty():
        return "no bar"
    last = rows.row(-1, named=True)
    return f"{last['rule']}: {last['reason']}"


@app.command()
def sql(
    query: Annotated[
        str,
        typer.Argument(
            help="SQL over the views bars_raw, bars_adj, corporate_actions, quarantine, universe, gaps, "
            "accepted_moves."
        ),
    ],
    csv: Annotated[
        bool, typer.Option("--csv", help="Print CSV with a header row instead of a table.")
    ] = False,
) -> None:
    """Run a read-only SQL query against the DuckDB catalog of the data store."""
    from trader.data.catalog import Catalog, CatalogError, format_table

    settings = load_settings()
    try:
        result = Catalog(DataPaths(settings.data_dir)).query(query)
    except CatalogError as exc:
        raise UsageError(f"QUERY: {exc}") from None
    typer.echo(format_table(result, csv=csv), nl=not csv)


@app.command()
def status(
    now: Annotated[
        str | None,
        typer.Option(
            help="Judge freshness as of this time (ISO 8601, UTC when no zone is given); default: now."
        ),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option(help="Comma-separated symbols (default: every symbol).")
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List every symbol (default: at most 50, stale ones first).")
    ] = False,
) -> None:
    """Coverage per symbol, newest bar, freshness verdict and quarantine counts by reason.

    Exits 1 when no clean bar is stored, so scripts can check that there is data to trade on.
    """
    from trader.data.status import data_status, render_status

    settings = load_settings()
    as_of = parse_moment(now, "--now") if now is not None else datetime.now(UTC)
    check_in_calendar(as_of, "--now" if now is not None else "the current time")
    report = data_status(
        DataPaths(settings.data_dir),
        as_of,
        symbols=parse_symbols(symbols),
        threshold=settings.data_outlier_threshold,
    )
    render_status(report, console, limit=None if show_all else 50)
    if report.empty:
        raise typer.Exit(1)


def parse_moment(value: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag}: '{value}' is not an ISO 8601 time such as 2024-03-05T15:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_in_calendar(moment: datetime, flag: str) -> None:
    """Refuse a time the calendar cannot judge freshness at (before its first close, after its end)."""
    from trader.data.calendar import CalendarRangeError, trading_calendar

    try:
        trading_calendar().last_closed_session(moment)
    except CalendarRangeError as exc:
        raise UsageError(f"{flag}: {exc}") from None
