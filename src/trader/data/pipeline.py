"""The ingest pipeline: source -> raw recorder -> adjust -> quality gate -> adjusted store.

One call of :meth:`DataPipeline.ingest` takes a batch from a source and leaves every store consistent:
raw rows recorded (append-only), corporate actions and listings merged, the affected symbols' whole
history re-adjusted (so a new split re-adjusts the past), clean rows in the adjusted store, refused
rows in quarantine (Parquet and the ``quarantine`` table), gaps recorded, the universe synced to the
database, the online store refreshed when Redis is configured, and one ``data_ingested`` event.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
from redis.exceptions import RedisError
from sqlalchemy import Engine

from trader.data.adjust import adjust
from trader.data.bars import BAR_SCHEMA, BarBatch
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.freshness import judge_symbols
from trader.data.online import OnlineStore
from trader.data.paths import DataPaths
from trader.data.quality import GateConfig, gate
from trader.data.raw import RawRecorder, as_recorded, newest_arrival
from trader.data.raw import ingest_id as raw_ingest_id
from trader.data.sources import BarSource, SourceError, SourceHealth
from trader.data.store import (
    AcceptedMoveStore,
    ActionStore,
    AdjustedStore,
    GapStore,
    QuarantineStore,
    StagedFiles,
    UniverseStore,
    sweep_leftovers,
    symbol_starts,
)
from trader.errors import TraderError
from trader.store.db import session_factory, transaction
from trader.store.models import Event

StageCallback = Callable[[str], None]


class DataError(TraderError):
    """An ingest refused its input as a whole (e.g. an impossible corporate action)."""


class IngestBusyError(DataError):
    """Another ingest is writing to the same ``DATA_DIR``."""


#: Held (``flock``) by the ingest writing to a ``DATA_DIR``; the file itself stays and means nothing.
LOCK_FILE = ".ingest.lock"


@contextmanager
def exclusive_ingest(paths: DataPaths) -> Iterator[None]:
    """Hold the ``DATA_DIR``'s ingest lock, or raise :class:`IngestBusyError` at once if another
    ingest (in this process or another) holds it. The operating system releases the lock when its
    holder exits, so a killed ingest never leaves the data dir locked."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with (paths.root / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IngestBusyError(
                f"another ingest is writing to {paths.root}; run this one again when it has finished"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


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
    #: Symbols of the batch whose newest clean bar is behind the calendar (or that have none).
    stale_symbols: list[str] = field(default_factory=list)
    #: Temporary files and staging folders of writers that died mid-write, removed before this ingest.
    leftovers_removed: int = 0

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
        self.accepted = AcceptedMoveStore(paths)
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

        Freshness is judged per symbol on its newest clean bar (see
        :func:`~trader.data.freshness.judge_symbols`). With ``require_fresh`` a stale batch raises
        :class:`~trader.data.freshness.StalenessError` after the raw rows are recorded (raw keeps
        everything received) but before anything else changes: no corporate action, listing,
        adjusted bar, quarantine row or gap is stored.

        One ingest at a time writes to a ``DATA_DIR``: a second one started meanwhile (another
        process, a cron job running late) raises :class:`IngestBusyError` before it reads anything,
        instead of rewriting the same year files and losing one of the two ingests' changes.
        """
        with exclusive_ingest(self.paths):
            leftovers = sweep_leftovers(self.paths, now=time.time())  # file times are wall-clock times
            return self._ingest(
                source,
                symbols,
                start,
                end,
                now=now,
                require_fresh=require_fresh,
                on_stage=on_stage,
                leftovers_removed=len(leftovers),
            )

    def accept_move(
        self, symbol: str, day: date, reason: str, *, now: datetime | None = None
    ) -> IngestReport:
        """Confirm that ``symbol``'s move into its bar on ``day`` is real, and re-check the symbol.

        The acceptance is tied to the bar's recorded raw close: while a source does not re-deliver
        the bar with another close, the outlier rule leaves its move in alone, here and in every
        later ingest. The symbol's recorded raw history goes through adjust and the gate again at
        once, so the bar moves from quarantine to the adjusted store. Raises :class:`DataError` when
        the raw record holds no bar of ``symbol`` on ``day`` (a typo in the symbol or the date), when
        the bar is clean, or when another rule keeps it out (see :meth:`_change_accepted` for a
        failed re-check). Accepting an accepted bar again re-checks it and keeps the new reason.
        """
        at = now or datetime.now(UTC)

        def record(history: _RecordedHistory) -> None:
            close = history.close_on(day)
            already = self.accepted.matching(history.bars, [symbol]).filter(pl.col("date") == day)
            if already.is_empty():
                self._require_outlier(history, day)
            self.accepted.accept(symbol, day, close, reason, at=at)
            self._journal_move("data_move_accepted", symbol, day, {"close": close, "reason": reason})

        return self._change_accepted(symbol, record, at, retry="run the command again")

    def revoke_move(self, symbol: str, day: date, *, now: datetime | None = None) -> IngestReport:
        """Take back :meth:`accept_move` for ``symbol`` on ``day`` and re-check the symbol, so the
        outlier rule judges that bar again. Raises :class:`DataError` when it was not accepted."""

        def forget(history: _RecordedHistory) -> None:
            if not self.accepted.revoke(symbol, day):
                raise DataError(f"no accepted move of {symbol} on {day} to take back")
            self._journal_move("data_move_revoked", symbol, day, {})

        return self._change_accepted(
            symbol, forget, now or datetime.now(UTC), retry=f"ingest {symbol} again to apply it"
        )

    def _change_accepted(
        self, symbol: str, change: Callable[[_RecordedHistory], None], now: datetime, *, retry: str
    ) -> IngestReport:
        """Under the ingest lock: ``change`` the accepted moves (recorded and journaled), then re-check
        ``symbol``'s recorded history with them.

        A failed re-check leaves the change in place: it is what a person decided, and the stores it
        derives are rebuilt by the next ingest of the symbol. The error says so, with ``retry``:
        what else finishes the job.
        """
        with exclusive_ingest(self.paths):
            leftovers = sweep_leftovers(self.paths, now=time.time())
            history = _RecordedHistory(self.raw, symbol)
            change(history)
            try:
                return self._recheck(history, now, len(leftovers))
            except Exception as exc:
                raise DataError(
                    f"the change to {symbol}'s accepted moves is recorded, but re-checking its history "
                    f"failed ({type(exc).__name__}: {exc}); {retry}, or the next ingest of {symbol} "
                    "applies it"
                ) from exc

    def _require_outlier(self, history: _RecordedHistory, day: date) -> None:
        """Refuse to accept a bar the outlier rule is not keeping out now (judged on the recorded
        history, as an ingest would): a clean bar needs nothing, and one refused by another rule (a
        broken row, a conflict) would stay out all the same."""
        symbol = history.symbol
        actions = self.actions.read([symbol])
        adjusted = _adjust_or_refuse(history.bars, actions, self.gate.outlier_threshold)
        accepted = self.accepted.matching(history.bars, [symbol])
        gated = gate(adjusted, actions, self.calendar, config=self.gate, accepted=accepted)
        rules = set(gated.quarantined.filter(pl.col("date") == day).get_column("rule").to_list())
        if not rules:
            raise DataError(f"{symbol} on {day} is clean (not quarantined): nothing to accept")
        if rules != {"outlier"}:
            raise DataError(
                f"{symbol} on {day} is quarantined as {', '.join(sorted(rules))}, not as an outlier: "
                "accepting its move would not bring it back; fix the row at its source and ingest it again"
            )

    def _recheck(self, history: _RecordedHistory, now: datetime, leftovers: int) -> IngestReport:
        """The recorded history through every stage again (the raw record gains nothing)."""
        first, last = history.span()
        return self._ingest(
            history,
            [history.symbol],
            first,
            last,
            now=now,
            require_fresh=False,
            on_stage=None,
            leftovers_removed=leftovers,
        )

    def _journal_move(self, kind: str, symbol: str, day: date, details: dict[str, Any]) -> None:
        if self.engine is None:
            return
        with transaction(session_factory(self.engine)) as session:
            session.add(
                Event(
                    kind=kind,
                    source="data.pipeline",
                    correlation_id=f"{symbol}:{day.isoformat()}",
                    payload={"symbol": symbol, "date": day.isoformat(), **details},
                )
            )

    def _ingest(
        self,
        source: BarSource,
        symbols: Sequence[str] | None,
        start: date,
        end: date,
        *,
        now: datetime | None,
        require_fresh: bool,
        on_stage: StageCallback | None,
        leftovers_removed: int,
    ) -> IngestReport:
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
        delivered = sorted(bars.get_column("symbol").drop_nulls().unique().to_list())
        # A new or corrected corporate action for a symbol without bars in this batch re-adjusts (and
        # re-checks) that symbol's recorded history too: stored alone, it would leave the history
        # unadjusted, and a bad one would refuse every later ingest of that symbol.
        try:
            acted = self.actions.changed_symbols(batch.actions) - set(delivered)
        except ValueError:
            acted = set()  # actions without a key: refused below, once the raw rows are recorded

        with timer("raw"):
            pending = self.raw.prepare(bars.select([*BAR_SCHEMA, "source"]), ingested_at=now)
            # What the raw record held before this ingest, read before any new file appears; an empty
            # record means the history is exactly this batch (nothing to read back).
            earlier = self.raw.scan([*delivered, *sorted(acted)]).collect() if self.raw.files() else None
            held = set() if earlier is None else set(earlier.get_column("symbol").unique().to_list())
            affected = sorted(set(delivered) | (acted & held))
            # The new raw files are written in the background while the batch is adjusted and
            # validated (Parquet encoding and fsync release the GIL), and waited for before anything
            # else is written, or raised: raw keeps what arrived, even when the ingest is refused.
            background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest")
            publishing = background.submit(pending.publish)
        staging: Future[StagedFiles] | None = None
        try:
            try:
                _newest_date(bars)  # a batch without a single usable date is the source's fault
                with timer("adjust"):
                    if earlier is None:
                        history = as_recorded(bars, now)
                    else:
                        # The raw record after this ingest, for these symbols: what it held plus the
                        # new rows.
                        recorded_rows = pending.rows().filter(pl.col("symbol").is_not_null())
                        history = newest_arrival(pl.concat([earlier, recorded_rows]))
                        # Rows without a symbol cannot be found by symbol in the raw record: take this
                        # batch's, so the gate quarantines them (they are recorded in raw all the same).
                        history = pl.concat([history, _unkeyed(bars, now)])
                    actions = self.actions.read_merged(batch.actions, affected)
                    adjusted = _adjust_or_refuse(history, actions, self.gate.outlier_threshold)

                with timer("validate"):
                    universe = self.universe.plan(batch.listings, first_bars=_first_bars(adjusted))
                    listings = universe.listings
                    # An acceptance holds while the bar's raw close is the one a person confirmed.
                    accepted = self.accepted.matching(history, affected)
                    gated = gate(adjusted, actions, self.calendar, config=self.gate, accepted=accepted)
                    # The clean rows are final: their year files are encoded in the background, under
                    # temporary names that the store stage publishes, while the gaps are looked for.
                    staging = background.submit(self.adjusted.stage, gated.clean, affected)
                    result = gated.result(self.calendar, listings)
                    # Judged per symbol on the bars that passed the gate: a symbol whose newest bars
                    # were all quarantined is stale; a delisted one is not judged.
                    # (only the symbols delivered: one re-adjusted for an action alone is not late)
                    freshness = judge_symbols(result.clean, delivered, now, self.calendar, listings=listings)
            finally:
                with timer("raw_publish"):
                    recorded = publishing.result()
            # The raw files' id names the ingest; when nothing was new, a hash of the batch does.
            ingest_id = recorded.ingest_id or raw_ingest_id(now, bars)
            stale = freshness.error()
            if require_fresh and stale is not None:
                raise stale

            with timer("store"):
                # Corporate actions are stored only once the history adjusted with them passed, so a
                # bad action does not block the symbol forever; listings only once the ingest is
                # accepted.
                self.actions.merge(batch.actions)
                self.universe.apply(universe)
                staging.result().commit()
                self.quarantine.append(result.quarantined, ingest_id)
                self.gaps.replace_symbols(result.gaps, affected)
                if self.engine is not None:
                    self.quarantine.record_in_db(self.engine, result.quarantined)
                    self.universe.sync_to_db(self.engine)
        finally:
            if staging is not None:
                _discard(staging)  # a refused or failed ingest leaves no staged file behind
            background.shutdown()

        online_error = None
        if self.online is not None:
            with timer("online"):
                try:
                    # Rebuild each affected symbol from its clean history (the adjusted store's):
                    # a quarantined bar leaves Redis, a symbol without clean bars is cleared.
                    self.online.replace_symbols(result.clean, affected)
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
            newest_bar=_newest_clean(result.clean),
            fresh=freshness.fresh,
            freshness=freshness.describe(),
            stale_symbols=freshness.stale.get_column("symbol").to_list(),
            seconds=timer.total,
            stage_seconds=timer.stages,
            online_error=online_error,
            leftovers_removed=leftovers_removed,
        )
        if self.engine is not None:
            self._journal(report)
        return report

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


class _RecordedHistory:
    """A :class:`~trader.data.sources.BarSource` over one symbol's recorded raw history (the newest
    arrival of each row, with the source that sent it): ingesting it records nothing new and re-runs
    adjust and the gate on that history with the stored actions."""

    name = "recorded"

    def __init__(self, raw: RawRecorder, symbol: str) -> None:
        self.symbol = symbol
        self.bars = raw.read_newest([symbol]).select(*BAR_SCHEMA, "source")

    def close_on(self, day: date) -> float:
        """The recorded raw close of the bar on ``day``; :class:`DataError` when there is none."""
        closes = self.bars.filter(pl.col("date") == day).get_column("close").drop_nulls().unique()
        if closes.is_empty():
            raise DataError(f"the raw record holds no bar of {self.symbol} on {day}: nothing to accept")
        if closes.len() > 1:
            raise DataError(
                f"{self.symbol} on {day} has conflicting versions in the raw record "
                f"({', '.join(str(c) for c in closes.sort().to_list())}): resolve them at the source first"
            )
        return float(closes.item())

    def span(self) -> tuple[date, date]:
        first, last = self.bars.get_column("date").min(), self.bars.get_column("date").max()
        if not isinstance(first, date) or not isinstance(last, date):
            raise DataError(f"the raw record holds no bar of {self.symbol}")
        return first, last

    def health(self) -> SourceHealth:
        return SourceHealth(source=self.name, ok=True)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        return BarBatch(bars=self.bars)  # no new actions or listings: the stored ones apply


def _newest_date(bars: pl.DataFrame) -> date:
    newest = bars.get_column("date").max()
    if not isinstance(newest, date):
        raise SourceError("the source delivered bars without a usable date column")
    return newest


def _newest_clean(clean: pl.DataFrame) -> date | None:
    newest = clean.get_column("date").max()
    return newest if isinstance(newest, date) else None


def _first_bars(adjusted: pl.DataFrame) -> pl.DataFrame:
    """``symbol, start_date``: each symbol's earliest bar (refused bars count: the symbol traded that
    day), from which a symbol no source lists gets its derived listing.

    ``adjusted`` is :func:`~trader.data.adjust.adjust`'s output, sorted by symbol and date with
    missing dates last, so the first row of each symbol is its earliest (no grouping needed).
    """
    return (
        adjusted.select("symbol", pl.col("date").alias("start_date"))
        .filter(pl.col("symbol").is_not_null() & symbol_starts())
        .drop_nulls("start_date")
    )


def _discard(staging: Future[StagedFiles]) -> None:
    """Remove what ``staging`` wrote unless it was committed (a failed staging cleaned up itself)."""
    if staging.exception() is None:
        staging.result().discard()


def _unkeyed(bars: pl.DataFrame, now: datetime) -> pl.DataFrame:
    return as_recorded(bars, now).filter(pl.col("symbol").is_null())


def _adjust_or_refuse(history: pl.DataFrame, actions: pl.DataFrame, spike_threshold: float) -> pl.DataFrame:
    try:
        return adjust(history, actions, spike_threshold=spike_threshold)
    except ValueError as exc:
        raise DataError(f"corporate actions refused, nothing adjusted or stored: {exc}") from None


def _supplying_sources(bars: pl.DataFrame) -> str:
    return ",".join(sorted(bars.get_column("source").unique().to_list()))


def _describe(symbols: Sequence[str] | None) -> str:
    if symbols is None:
        return "all symbols"
    return ", ".join(symbols[:5]) + (f" and {len(symbols) - 5} more" if len(symbols) > 5 else "")
