"""The ingest pipeline: source -> raw recorder -> adjust -> quality gate -> adjusted store.

One call of :meth:`DataPipeline.ingest` takes a batch from a source and leaves every store consistent:
raw rows recorded (append-only), corporate actions and listings merged, the affected symbols' whole
history re-adjusted (so a new split re-adjusts the past), clean rows in the adjusted store, refused
rows in quarantine (Parquet and the ``quarantine`` table), gaps recorded, the universe synced to the
database, the online store refreshed when Redis is configured, and one ``data_ingested`` event.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from redis.exceptions import RedisError
from sqlalchemy import Engine

from trader.data.adjust import adjust
from trader.data.bars import BAR_SCHEMA, LISTING_SCHEMA
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import StalenessError, check_freshness
from trader.data.online import OnlineStore
from trader.data.paths import DataPaths
from trader.data.quality import GateConfig, validate
from trader.data.raw import RawRecorder, as_recorded, newest_arrival
from trader.data.raw import ingest_id as raw_ingest_id
from trader.data.sources import BarSource, SourceError
from trader.data.store import ActionStore, AdjustedStore, GapStore, QuarantineStore, UniverseStore
from trader.errors import TraderError
from trader.store.db import session_factory, transaction
from trader.store.models import Event

StageCallback = Callable[[str], None]


class DataError(TraderError):
    """An ingest refused its input as a whole (e.g. an impossible corporate action)."""


@dataclass
class IngestReport:
    """What one ingest did, for the CLI summary, the ``events`` journal and the benchmark."""

    ingest_id: str
    source: str
    symbols: int
    rows_received: int
    raw_new_rows: int
    raw_skipped_rows: int
    clean_rows: int
    quarantined_rows: int
    quarantined_by_rule: dict[str, int]
    gaps: int
    actions: int
    newest_bar: date | None
    fresh: bool | None
    freshness: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    online_error: str | None = None

    def as_payload(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["newest_bar"] = self.newest_bar.isoformat() if self.newest_bar else None
        return payload


class DataPipeline:
    """Runs ingests into one ``DATA_DIR`` (and the database for quarantine, universe and events)."""

    def __init__(
        self,
        paths: DataPaths,
        engine: Engine | None = None,
        calendar: TradingCalendar | None = None,
        gate: GateConfig | None = None,
        online: OnlineStore | None = None,
    ) -> None:
        self.paths = paths
        self.engine = engine
        self.calendar = calendar or trading_calendar()
        self.gate = gate or GateConfig()
        self.online = online
        self.raw = RawRecorder(paths)
        self.adjusted = AdjustedStore(paths)
        self.actions = ActionStore(paths)
        self.universe = UniverseStore(paths)
        self.quarantine = QuarantineStore(paths)
        self.gaps = GapStore(paths)

    def ingest(
        self,
        source: BarSource,
        symbols: Sequence[str] | None,
        start: date,
        end: date,
        *,
        now: datetime | None = None,
        require_fresh: bool = False,
        on_stage: StageCallback | None = None,
    ) -> IngestReport:
        """Fetch ``symbols`` from ``source`` for ``start``..``end`` and push them through every stage.

        With ``require_fresh`` a stale batch raises :class:`StalenessError` after the raw rows are
        recorded (raw keeps everything received) but before anything downstream changes.
        """
        now = now or datetime.now(UTC)
        timer = _StageTimer(on_stage)

        with timer("fetch"):
            batch = source.fetch(symbols, start, end)
            bars = (
                batch.bars
                if "source" in batch.bars.columns
                else batch.bars.with_columns(source=pl.lit(source.name))
            )
        if bars.is_empty():
            raise SourceError(f"{source.name} returned no bars for {_describe(symbols)} {start}..{end}")
        affected = sorted(bars.get_column("symbol").drop_nulls().unique().to_list())

        with timer("raw"):
            first_ingest = not self.raw.files()
            recorded = self.raw.record(bars.select([*BAR_SCHEMA, "source"]), ingested_at=now)
            self.universe.merge(batch.listings)
        # The raw files' id names the ingest; when nothing was new, a hash of the batch does.
        ingest_id = recorded.ingest_id or raw_ingest_id(now, bars)

        newest = _newest_date(bars)
        stale = self._staleness(newest, now)
        if require_fresh and stale is not None:
            raise stale

        with timer("adjust"):
            if first_ingest:
                # The raw record is exactly this batch: use it rather than read back what was just written.
                history = as_recorded(bars, now)
            else:
                history = newest_arrival(self.raw.scan(affected).collect())
                # Rows without a symbol cannot be found by symbol in the raw record: take this
                # batch's, so the gate quarantines them (they are recorded in raw above).
                history = pl.concat([history, _unkeyed(bars, now)])
            actions = self.actions.read_merged(batch.actions, affected)
            adjusted = _adjust_or_refuse(history, actions)
            # Stored only once they proved usable: a bad action must not block the symbol forever.
            self.actions.merge(batch.actions)

        with timer("validate"):
            self.universe.merge(_derived_listings(history, self.universe.read()))
            listings = self.universe.read()
            result = validate(adjusted, actions, self.calendar, listings=listings, config=self.gate)

        with timer("store"):
            self.adjusted.replace_symbols(result.clean, symbols=affected)
            self.quarantine.append(result.quarantined, ingest_id)
            self.gaps.replace_symbols(result.gaps, affected)
            if self.engine is not None:
                self.quarantine.record_in_db(self.engine, result.quarantined)
                self.universe.sync_to_db(self.engine)

        online_error = None
        if self.online is not None:
            with timer("online"):
                try:
                    self.online.push_bars(result.clean)
                    self.online.update_features(affected)
                except RedisError as exc:
                    # The stores are written; a Redis outage must not turn the ingest into a failure.
                    online_error = f"online store not updated: {type(exc).__name__}: {exc}"

        by_rule = dict(sorted(result.counts().items()))
        report = IngestReport(
            ingest_id=ingest_id,
            source=_supplying_sources(bars),
            symbols=len(affected),
            rows_received=bars.height,
            raw_new_rows=recorded.new_rows,
            raw_skipped_rows=recorded.skipped_rows,
            clean_rows=result.clean.height,
            quarantined_rows=result.quarantined.height,
            quarantined_by_rule=by_rule,
            gaps=result.gaps.height,
            actions=batch.actions.height,
            newest_bar=newest,
            fresh=stale is None,
            freshness=_verdict(newest, stale),
            seconds=timer.total,
            stage_seconds=timer.stages,
            online_error=online_error,
        )
        if self.engine is not None:
            self._journal(report)
        return report

    def _staleness(self, newest: date, now: datetime) -> StalenessError | None:
        try:
            check_freshness(newest, now, self.calendar)
        except StalenessError as stale:
            return stale
        return None

    def _journal(self, report: IngestReport) -> None:
        assert self.engine is not None
        with transaction(session_factory(self.engine)) as session:
            session.add(
                Event(
                    kind="data_ingested",
                    source="data.pipeline",
                    correlation_id=report.ingest_id,
                    payload=report.as_payload(),
                )
            )


class _StageTimer:
    """Times named stages and tells an optional callback which stage is starting (for progress output)."""

    def __init__(self, on_stage: StageCallback | None) -> None:
        self.on_stage = on_stage
        self.stages: dict[str, float] = {}
        self._started = time.perf_counter()

    def __call__(self, name: str) -> _Stage:
        if self.on_stage is not None:
            self.on_stage(name)
        return _Stage(self, name)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self._started, 4)


class _Stage:
    def __init__(self, timer: _StageTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.stages[self.name] = round(time.perf_counter() - self.start, 4)


def _newest_date(bars: pl.DataFrame) -> date:
    newest = bars.get_column("date").max()
    if not isinstance(newest, date):
        raise SourceError("the source delivered bars without a usable date column")
    return newest


def _verdict(newest: date, stale: StalenessError | None) -> str:
    return str(stale) if stale else f"fresh: newest bar {newest} is the last closed session or later"


def _derived_listings(history: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """Listings for symbols no source described: listed from their first bar, still listed.

    CSV files and Alpaca bars carry no listing dates; without a row here such a symbol would be
    missing from the point-in-time universe. Symbols with a listing from a source are left alone.
    """
    described = known.get_column("symbol").unique().implode()
    return (
        history.filter(
            pl.col("symbol").is_not_null() & pl.col("date").is_not_null() & ~pl.col("symbol").is_in(described)
        )
        .group_by("symbol")
        .agg(pl.col("date").min().alias("start_date"))
        .with_columns(end_date=pl.lit(None, pl.Date), tradable=pl.lit(True), sector=pl.lit(None, pl.String))
        .select(*LISTING_SCHEMA)
        .sort("symbol")
    )


def _unkeyed(bars: pl.DataFrame, now: datetime) -> pl.DataFrame:
    return as_recorded(bars, now).filter(pl.col("symbol").is_null())


def _adjust_or_refuse(history: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    try:
        return adjust(history, actions)
    except ValueError as exc:
        raise DataError(f"corporate actions refused, nothing adjusted or stored: {exc}") from None


def _supplying_sources(bars: pl.DataFrame) -> str:
    return ",".join(sorted(bars.get_column("source").unique().to_list()))


def _describe(symbols: Sequence[str] | None) -> str:
    if symbols is None:
        return "all symbols"
    return ", ".join(symbols[:5]) + (f" and {len(symbols) - 5} more" if len(symbols) > 5 else "")
