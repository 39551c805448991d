"""The raw recorder: every bar a source delivered, unmodified, with its source and arrival time.

Layout: ``raw/bars/month=YYYY-MM/<ingest-id>.parquet``, one file per month per :meth:`RawRecorder.record`
call. Files are immutable: published under a name no other file has and never rewritten or deleted,
so the raw record is what ``trader replay`` replays and what every derived store is rebuilt from.

Idempotent: a row identical to the newest recorded arrival of its (symbol, date) is skipped, so
re-ingesting the same data writes nothing. A row whose values differ is a correction and is
appended; :meth:`RawRecorder.read` with ``latest_only`` returns the newest version of each row.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from trader.data.bars import BAR_SCHEMA, RAW_BAR_SCHEMA, conform
from trader.data.paths import DataPaths
from trader.data.store import (
    COMPRESSION,
    COMPRESSION_LEVEL,
    NULL_PARTITION,
    fsync_file,
    month_folder,
    month_number,
    month_partitions,
    month_text,
    parquet_files,
    publish_new,
    scan,
    sorted_by,
    staging_folder,
    strictly_sorted,
)

#: What :meth:`RawRecorder.record` takes: a source's bars plus the name of the source.
RECORD_SCHEMA: dict[str, pl.DataType] = {**BAR_SCHEMA, "source": pl.String()}
#: A recorded row is "the same" as an incoming one when all of these are equal (nulls and NaNs too).
VALUE_COLUMNS = tuple(RECORD_SCHEMA)
#: One version of a row per (symbol, date, source) and arrival time.
ROW_KEY = ("symbol", "date", "source")


@dataclass(frozen=True)
class RecordResult:
    """What one :meth:`RawRecorder.record` call did."""

    new_rows: int
    skipped_rows: int
    files: list[Path] = field(default_factory=list)
    #: Names the files written (``<UTC time>-<content hash>``); ``None`` when nothing was new.
    ingest_id: str | None = None


_MONTH = "_month"


class PendingRecord:
    """Rows :meth:`RawRecorder.prepare` found new, not written yet; :meth:`publish` writes them once."""

    def __init__(self, recorder: RawRecorder, at: datetime, new: pl.DataFrame, skipped_rows: int) -> None:
        self._recorder, self._at, self._new = recorder, at, new
        self.skipped_rows = skipped_rows
        self._result: RecordResult | None = None

    @property
    def new_rows(self) -> int:
        """How many rows :meth:`publish` appends."""
        return self._new.height

    def rows(self) -> pl.DataFrame:
        """The new rows as they will be recorded (:data:`RAW_BAR_SCHEMA`, with their arrival time)."""
        return self._new.with_columns(ingested_at=_arrival(self._at)).select(RAW_BAR_SCHEMA.keys())

    def publish(self) -> RecordResult:
        """Write one new file per month the new rows touch; a second call returns the first result.

        The files are named by :func:`ingest_id` (``RecordResult.ingest_id``), computed here rather
        than in :meth:`RawRecorder.prepare`, so that hashing a large batch happens in the background
        too when the caller publishes in the background.
        """
        if self._result is None:
            self._result = self._publish()
        return self._result

    def _publish(self) -> RecordResult:
        new = self._new
        if new.is_empty():
            return RecordResult(new_rows=0, skipped_rows=self.skipped_rows)
        file_id = ingest_id(self._at, new.drop(_MONTH))
        root = self._recorder.root
        rows = new.lazy().with_columns(ingested_at=_arrival(self._at))
        # Sorted files compress better and let readers skip row groups by min/max statistics. A batch
        # already sorted with unique keys (what sources deliver) stays sorted in each partition.
        if not strictly_sorted(new, ("symbol", "date")):
            rows = rows.sort("symbol", "date", "source", maintain_order=True)
        # Polars' streaming engine splits and encodes every month in one pass (no copy of the batch
        # per month, no thread per file); the files land in a hidden staging folder first and are
        # then published under the ingest's name, so a crash never leaves a partial file visible.
        staging = staging_folder(root, file_id)
        written: list[Path] = []
        try:
            rows.select(*RAW_BAR_SCHEMA, _MONTH).sink_parquet(
                pl.PartitionBy(staging, key=_MONTH, include_key=False, approximate_bytes_per_file=None),
                compression=COMPRESSION,
                compression_level=COMPRESSION_LEVEL,
                statistics=True,
                mkdir=True,
            )
            for part in sorted(staging.iterdir()):  # ``_month=202401``, ``_month=__HIVE_DEFAULT_PARTITION__``
                value = part.name.partition("=")[2]
                month = None if value == NULL_PARTITION else month_text(int(value))
                for tmp in sorted(part.glob("*.parquet")):
                    fsync_file(tmp)
                    written.append(publish_new(tmp, root / month_folder(month), file_id))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return RecordResult(
            new_rows=new.height, skipped_rows=self.skipped_rows, files=written, ingest_id=file_id
        )


def _utc(moment: datetime) -> datetime:
    # Naive times are refused, not guessed (see DECISIONS: UTC everywhere).
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"ingested_at must be timezone-aware, got naive {moment!r}")
    return moment.astimezone(UTC)


def _arrival(at: datetime) -> pl.Expr:
    """``at`` (UTC) as the ``ingested_at`` value of every row of one arrival."""
    return pl.lit(at, dtype=RAW_BAR_SCHEMA["ingested_at"])


def ingest_id(at: datetime, rows: pl.DataFrame) -> str:
    """``<UTC time>-<content hash>``: names the files of one ingest (``at`` must be aware)."""
    # The hashes' buffer is read in place: ``tobytes()`` would copy ~10 MB for a large batch first.
    digest = hashlib.sha256(rows.hash_rows(seed=0).to_numpy().data).hexdigest()[:10]
    return f"{_utc(at):%Y%m%dT%H%M%S%fZ}-{digest}"


def as_recorded(bars: pl.DataFrame, ingested_at: datetime) -> pl.DataFrame:
    """``bars`` (:data:`RECORD_SCHEMA`) as the recorder stores them: with ``ingested_at`` in UTC."""
    return conform(bars, RECORD_SCHEMA).with_columns(ingested_at=_arrival(_utc(ingested_at)))


def _latest(frame: pl.LazyFrame) -> pl.LazyFrame:
    # Every row of the newest arrival of each key: when one arrival held two different rows for a
    # key both are kept, so the quality gate sees the conflict instead of a silent pick.
    return frame.filter(pl.col("ingested_at") == pl.col("ingested_at").max().over(ROW_KEY))


class RawRecorder:
    """Append-only, month-partitioned Parquet record of every bar received.

    One writer per ``DATA_DIR`` at a time (the pipeline holds a lock for it: see
    :func:`~trader.data.pipeline.exclusive_ingest`): two concurrent recorders used without it cannot
    clobber each other's files, but both may append the same new rows; ``latest_only`` then returns
    the later copy, with identical values.
    """

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths

    @property
    def root(self) -> Path:
        return self.paths.raw_bars

    def files(self, start: date | None = None, end: date | None = None) -> list[Path]:
        """The raw files whose month can hold dates in ``start``..``end`` (all when unbounded)."""
        return [f for folder in month_partitions(self.root, start, end) for f in parquet_files(folder)]

    def record(self, bars: pl.DataFrame, ingested_at: datetime) -> RecordResult:
        """Append ``bars`` (:data:`BAR_SCHEMA` + ``source``) with ``ingested_at`` (aware, stored in UTC).

        The rows of one (symbol, date) are skipped when they are exactly the newest recorded arrival
        of that key (every row equal in every value, source included, and as many); otherwise all of
        them are appended as the newest arrival, so a correction is recorded, an old value a source
        returns to is recorded again, a conflicting pair is resolved by re-sending the right version
        alone, and a second version arriving beside a recorded one is a conflict the gate sees (see
        :func:`not_yet_recorded`). Only the month partitions the batch touches are read. Writes one
        new file per touched month; nothing existing is modified.
        """
        return self.prepare(bars, ingested_at).publish()

    def prepare(self, bars: pl.DataFrame, ingested_at: datetime) -> PendingRecord:
        """The first half of :meth:`record`: decide which rows are new and name their files.

        Nothing is written until :meth:`PendingRecord.publish`, so a caller can publish in the
        background while it works on the rows (the pipeline adjusts and validates meanwhile).
        """
        at = _utc(ingested_at)
        frame = conform(bars, RECORD_SCHEMA)
        if frame.is_empty():
            return PendingRecord(self, at, frame, skipped_rows=0)
        # Months as integers (202401): cheaper to compute and to partition on than text per row.
        frame = frame.with_columns(month_number().alias(_MONTH))

        months = [month_text(m) for m in frame.get_column(_MONTH).unique().to_list()]
        folders = [self.root / month_folder(m) for m in months]
        new = frame
        if any(folder.is_dir() for folder in folders):
            # Compared with what downstream uses (the newest arrival of each symbol and date, from any
            # source): a source re-delivering a bar another source replaced in between is recorded again.
            recorded = newest_arrival(self._scan_folders(folders, latest_only=True).collect())
            new = not_yet_recorded(frame, recorded.select(VALUE_COLUMNS))
        return PendingRecord(self, at, new, skipped_rows=frame.height - new.height)

    def _scan_folders(
        self, folders: Sequence[Path], latest_only: bool, where: pl.Expr | None = None
    ) -> pl.LazyFrame:
        """Lazy scan of the files in ``folders`` (month partitions), newest versions only if asked.

        Every file holds one arrival, so a month with a single file cannot hold two arrivals of a
        key (and a key lives in one month): the costly per-key window runs only over months that
        have several files. ``where`` filters before that window (it may only test key columns, so
        filtering first gives the same newest versions, from far fewer rows).
        """
        single: list[Path] = []
        several: list[Path] = []
        for folder in folders:
            files = parquet_files(folder)
            (several if latest_only and len(files) > 1 else single).extend(files)

        def scan_where(files: list[Path]) -> pl.LazyFrame:
            lazy = scan(files, RAW_BAR_SCHEMA)
            return lazy if where is None else lazy.filter(where)

        if not several:
            return scan_where(single)
        newest = _latest(scan_where(several))
        return pl.concat([scan_where(single), newest]) if single else newest

    def scan(
        self,
        symbols: Sequence[str] | None = None,
        start: date | None = None,
        end: date | None = None,
        latest_only: bool = True,
    ) -> pl.LazyFrame:
        """Lazy form of :meth:`read` (unsorted), for callers that add their own steps."""
        conditions = []
        if symbols is not None:
            conditions.append(pl.col("symbol").is_in(list(symbols)))
        if start is not None:
            conditions.append(pl.col("date") >= start)
        if end is not None:
            conditions.append(pl.col("date") <= end)
        where = pl.all_horizontal(conditions) if conditions else None
        return self._scan_folders(month_partitions(self.root, start, end), latest_only, where)

    def read(
        self,
        symbols: Sequence[str] | None = None,
        start: date | None = None,
        end: date | None = None,
        latest_only: bool = True,
    ) -> pl.DataFrame:
        """Recorded rows (:data:`RAW_BAR_SCHEMA`) sorted by symbol, date, source and arrival.

        ``latest_only`` keeps the newest arrival of each (symbol, date, source); otherwise every
        version ever recorded is returned. An empty store gives an empty frame with the schema.
        """
        lazy = self.scan(symbols, start, end, latest_only)
        return lazy.sort([*ROW_KEY, "ingested_at"], nulls_last=True).collect()

    def read_newest(
        self, symbols: Sequence[str] | None = None, start: date | None = None, end: date | None = None
    ) -> pl.DataFrame:
        """:meth:`read`, then :func:`newest_arrival`: the bars downstream uses, one arrival per
        (symbol, date) whichever source sent it. Ingesting them again records nothing."""
        return newest_arrival(self.read(symbols, start, end))


def not_yet_recorded(incoming: pl.DataFrame, recorded: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``incoming`` to append, given the newest ``recorded`` arrival of each (symbol, date).

    Decided per (symbol, date), not per row: a row-by-row check would keep, of an incoming pair
    {101, 101.5} for a key recorded as {101}, only 101.5, which then silently replaces 101 instead of
    reaching the gate as a conflict; and it would skip a lone 101 sent to resolve a recorded conflict
    {101, 101.5}, leaving the day quarantined for good. A key's rows are skipped only when they are
    the recorded arrival exactly (same rows, same count). Where a key has one row on each side (nearly
    always) that is the row check, which is all that runs for those keys. Rows without a symbol or
    date have no key: each is skipped when an equal row is recorded.
    """
    key = ["symbol", "date"]
    on = list(VALUE_COLUMNS)
    changed = incoming.join(recorded, on=on, how="anti", nulls_equal=True)
    several = pl.concat([_repeated_keys(frame) for frame in (incoming, recorded)]).unique()
    if several.is_empty():
        return changed
    singles = changed.join(several, on=key, how="anti")
    groups = incoming.join(several, on=key, how="semi")
    return pl.concat([singles, _whole_groups(groups, recorded.join(several, on=key, how="semi"))])


def _repeated_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """The (symbol, date) pairs that ``frame`` holds more than once."""
    keys = frame.select("symbol", "date").drop_nulls()
    if sorted_by(keys, ("symbol", "date"), unique=True):
        return keys.clear()  # sources deliver sorted batches: no hashing needed to see no repeats
    return keys.filter(pl.struct("symbol", "date").is_duplicated())


def _whole_groups(incoming: pl.DataFrame, recorded: pl.DataFrame) -> pl.DataFrame:
    """:func:`not_yet_recorded` for keys with several rows on one side: all of a key's rows, unless
    they are exactly the recorded ones (each distinct row as many times: {101, 101} is not
    {101, 101.5})."""
    key = ["symbol", "date"]
    values = list(VALUE_COLUMNS)
    arriving = incoming.group_by(values).agg(_n=pl.len())
    held = recorded.group_by(values).agg(_m=pl.len())
    distinct_held = held.group_by(key).agg(_kinds=pl.len())
    repeats = (
        arriving.join(held, on=values, how="left", nulls_equal=True)
        .group_by(key)
        .agg(_same=(pl.col("_m") == pl.col("_n")).fill_null(False).all(), _kinds_in=pl.len())
        .join(distinct_held, on=key, how="inner", nulls_equal=True)
        .filter(pl.col("_same") & (pl.col("_kinds_in") == pl.col("_kinds")))
        .select(key)
    )
    return incoming.join(repeats, on=key, how="anti", nulls_equal=True)


def newest_arrival(history: pl.DataFrame) -> pl.DataFrame:
    """One arrival per (symbol, date): the newest, whichever source delivered it.

    The raw record keeps every source's version; downstream, the most recent delivery of a bar wins
    (a re-fetch from the primary after a fallback day replaces the fallback's bar). Rows of the same
    arrival all stay, so a conflict inside one delivery still reaches the quality gate.
    """
    if history.get_column("ingested_at").n_unique() <= 1:
        return history  # one arrival: nothing to choose between (the common case, and cheap to see)
    newest = pl.col("ingested_at") == pl.col("ingested_at").max().over("symbol", "date")
    return history.filter(newest | pl.col("symbol").is_null() | pl.col("date").is_null())
