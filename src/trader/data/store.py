"""The derived and reference stores of the data layer: adjusted bars, corporate actions, universe,
quarantine and gaps, as Parquet under ``DATA_DIR`` (see :class:`~trader.data.paths.DataPaths`).

Every write is atomic: a file is written under a temporary name in its own folder and then renamed
into place, so a reader (or a crash) sees the old file or the new one, never half of one. Files that
are part of an append-only record (raw bars, quarantine) are published with :func:`write_new`, which
refuses to overwrite; derived files (adjusted years, reference tables) with :func:`write_replace`.

All work is vectorised over whole frames: one call writes one file per touched partition, never one
per row, day or symbol.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl
from sqlalchemy import Connection, Engine, delete, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trader.data.bars import (
    ACTION_SCHEMA,
    ADJ_BAR_SCHEMA,
    KEY,
    LISTING_SCHEMA,
    QUARANTINE_SCHEMA,
    conform,
    empty,
)
from trader.data.paths import DataPaths
from trader.store.models import Quarantine, Universe

#: A trading session missing inside a symbol's listing, and why it counts as a gap.
GAP_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "reason": pl.String(),
}

#: Folder name of the partition that holds rows without a date (Hive's spelling of a null partition).
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
#: Written into the ``source`` column of the SQL ``quarantine`` table when a row does not say (NOT NULL).
UNKNOWN_SOURCE = "unknown"

_T = TypeVar("_T")
_log = logging.getLogger(__name__)

#: Parquet compression of every file the data layer writes. LZ4: encoding is a third of an ingest's
#: CPU time, and LZ4 writes bar data ~25 % faster than zstd level 1 for files ~40 % larger (zstd at
#: any level costs more CPU; snappy is as fast as LZ4 and a little larger). Readers need nothing.
COMPRESSION: Literal["zstd", "lz4", "snappy"] = "lz4"
COMPRESSION_LEVEL: int | None = None

#: Threads that write partition files in parallel. More than the CPUs: a writer spends much of its
#: time waiting in ``fsync`` (no CPU used), and Parquet encoding releases the GIL, so extra threads
#: keep every CPU encoding while others wait for the disk (on 2 CPUs, 8 threads write the 120 month
#: files of a 10-year batch about 35 % faster than 2).
WRITERS = min(16, 4 * (os.cpu_count() or 1))


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _temp_name(path: Path) -> Path:
    # Same folder, so the rename is atomic (same file system); a ``.tmp`` suffix and a leading dot so
    # no ``*.parquet`` glob (ours, DuckDB's or a user's) ever picks up a half-written file.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def staging_folder(root: Path, file_id: str) -> Path:
    """A new hidden folder name under ``root`` in which the raw recorder stages an ingest's files
    (see :class:`~trader.data.raw.PendingRecord`): ``.staging-<ingest id>-<8 hex digits>``."""
    return root / f".staging-{file_id}-{uuid.uuid4().hex[:8]}"


#: A temporary file or staging folder older than this was left by a writer that died mid-write: a
#: write takes seconds, so a live writer's files are never this old.
LEFTOVER_AGE_SECONDS = 3600.0
_TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{32}\.tmp")  # what _temp_name makes
_STAGING_FOLDER = re.compile(r"\.staging-.+-[0-9a-f]{8}")  # what staging_folder makes


def sweep_leftovers(paths: DataPaths, *, now: float, older_than: float = LEFTOVER_AGE_SECONDS) -> list[Path]:
    """Remove what writers that died mid-write left under ``paths``: temporary files named as
    :func:`_temp_name` names them (``.<name>.<32 hex digits>.tmp``) in the raw, adjusted, reference
    and quality folders, and staging folders (``.staging-<id>-<8 hex digits>``) directly in the raw
    bars folder, last modified more than ``older_than`` seconds before ``now`` (Unix time). Returns
    what was removed.

    Leftovers are never read (every reader skips hidden names), so removing them changes no data; it
    only stops them from piling up. The caller holds the ingest lock, so no writer of ours is at work;
    the age test is a second guard. Symbolic links are never followed or removed (we make none), and
    an entry that cannot be removed is logged and left: cleaning up never blocks an ingest.
    """
    candidates = [
        entry
        for folder in (
            paths.raw_bars.parent,
            paths.adjusted_bars.parent,
            paths.actions.parent,
            paths.quarantine.parent,
        )
        for entry in _temp_files(folder)
    ]
    if paths.raw_bars.is_dir():
        candidates += [entry for entry in paths.raw_bars.iterdir() if _STAGING_FOLDER.fullmatch(entry.name)]
    removed: list[Path] = []
    for leftover in sorted(candidates):
        try:
            status = leftover.lstat()
            if stat.S_ISLNK(status.st_mode) or now - status.st_mtime <= older_than:
                continue
            if stat.S_ISDIR(status.st_mode):
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        except FileNotFoundError:  # removed meanwhile
            continue
        except OSError as exc:
            _log.warning("could not remove leftover %s: %s", leftover, exc)
            continue
        removed.append(leftover)
    return removed


def _temp_files(folder: Path) -> Iterable[Path]:
    for parent, _dirs, files in os.walk(folder):  # does not descend into linked folders
        yield from (Path(parent) / name for name in files if _TEMP_FILE.fullmatch(name))


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Flush ``folder``'s entries: a rename is only durable once its folder entry is flushed."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk (for files inside a folder renamed into place)."""
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        write_synced(tmp, data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_temp(frame: pl.DataFrame, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(target)
    try:
        frame.write_parquet(
            tmp, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL, statistics=True
        )
        fsync_file(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_replace(frame: pl.DataFrame, path: Path) -> Path:
    """Write ``frame`` to ``path`` atomically, replacing the file if it exists (derived data)."""
    staged = StagedFiles([(path, _write_temp(frame, path))], rows=frame.height)
    try:
        staged.commit()
    finally:
        staged.discard()  # the temporary file, should the rename have failed
    return path


def write_new(frame: pl.DataFrame, folder: Path, stem: str) -> Path:
    """Publish ``frame`` as a new file ``folder/<stem>.parquet`` that never overwrites an existing one.

    When the name is taken (same id twice) a ``-1``, ``-2``... suffix is added. The file is written
    under a temporary name and hard-linked to its final name: ``link`` fails instead of replacing an
    existing file, so even a concurrent writer cannot clobber a published file (``rename`` would).
    """
    return publish_new(_write_temp(frame, folder / f"{stem}.parquet"), folder, stem)


def publish_new(tmp: Path, folder: Path, stem: str) -> Path:
    """Publish ``tmp``, a written and flushed file on the same file system, as the first free name
    ``folder/<stem>[-N].parquet``: linked under that name (never replacing a file), ``tmp`` removed
    and the folder entry flushed. Returns the published path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = _link_new(tmp, folder, stem)
    fsync_dir(folder)
    return target


def _link_new(tmp: Path, folder: Path, stem: str) -> Path:
    """Give the written temporary file ``tmp`` its first free name ``<stem>[-N].parquet`` in ``folder``."""
    try:
        attempt = 0
        while True:
            target = folder / (f"{stem}.parquet" if attempt == 0 else f"{stem}-{attempt}.parquet")
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                attempt += 1
            except OSError:  # pragma: no cover - file systems without hard links
                if target.exists():
                    attempt += 1
                    continue
                tmp.rename(target)
                break
    finally:
        tmp.unlink(missing_ok=True)
    return target


def parquet_files(folder: Path, pattern: str = "*.parquet") -> list[Path]:
    """The published Parquet files under ``folder`` matching ``pattern``, sorted (temp files excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def scan(files: Sequence[Path], schema: dict[str, pl.DataType]) -> pl.LazyFrame:
    """Lazy scan of ``files`` with exactly ``schema``'s columns; an empty typed frame when there are none."""
    if not files:
        return empty(schema).lazy()
    # Hive partitioning off: the partition folders are derived from columns the files already hold,
    # and parsing ``month=2024-01`` as a column would only add a duplicate of ``date``.
    return pl.scan_parquet(list(files), hive_partitioning=False).select(
        pl.col(name).cast(dtype) for name, dtype in schema.items()
    )


def month_folder(month: str | None) -> str:
    """Folder name of a month partition; rows without a date go to Hive's null partition."""
    return f"month={month if month is not None else NULL_PARTITION}"


def _month_of(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


def month_partitions(root: Path, start: date | None = None, end: date | None = None) -> list[Path]:
    """The ``month=`` folders under ``root`` that can hold dates in ``start``..``end`` (pruning)."""
    first = _month_of(start) if start is not None else None
    last = _month_of(end) if end is not None else None
    return _partitions(root, "month", first, last)


def year_partitions(root: Path, start: date | None = None, end: date | None = None) -> list[Path]:
    """The ``year=`` folders under ``root`` that can hold dates in ``start``..``end`` (pruning)."""
    first = f"{start.year:04d}" if start is not None else None
    last = f"{end.year:04d}" if end is not None else None
    return _partitions(root, "year", first, last)


def _partitions(root: Path, key: str, first: str | None, last: str | None) -> list[Path]:
    # Partition values (``YYYY-MM``, ``YYYY``) sort as text in date order.
    if not root.is_dir():
        return []
    folders = []
    for folder in sorted(root.glob(f"{key}=*")):
        value = folder.name.removeprefix(f"{key}=")
        if value == NULL_PARTITION:
            # Undated rows cannot satisfy a date bound; without bounds they belong to the answer.
            if first is None and last is None:
                folders.append(folder)
            continue
        if (first is not None and value < first) or (last is not None and value > last):
            continue
        folders.append(folder)
    return folders


def year_folder(year: int | str | None) -> str:
    """Folder name of a year partition (``year=2024``); rows without a date go to Hive's null partition."""
    return f"year={NULL_PARTITION}" if year is None else f"year={int(year):04d}"


def month_number(column: str = "date") -> pl.Expr:
    """``YYYYMM`` of a date column as an integer (null for a null date): a cheap partition key."""
    day = pl.col(column)
    return day.dt.year().cast(pl.Int32) * 100 + day.dt.month().cast(pl.Int32)


def month_text(number: int | None) -> str | None:
    """``YYYY-MM`` of a :func:`month_number` value (``None`` stays ``None``: the null partition)."""
    return None if number is None else f"{number // 100:04d}-{number % 100:02d}"


def _require_keys(frame: pl.DataFrame, columns: Iterable[str], what: str) -> None:
    nulls = frame.select(pl.col(c).null_count() for c in columns).row(0, named=True)
    bad = {c: n for c, n in nulls.items() if n}
    if bad:
        raise ValueError(f"{what}: null key value(s) {bad}")


def strictly_sorted(frame: pl.DataFrame, key: Sequence[str]) -> bool:
    """Whether ``frame`` is sorted by the two columns of ``key`` with no key repeated (and no null)."""
    return sorted_by(frame, key, unique=True)


def symbol_starts(column: str = "symbol") -> pl.Expr:
    """True on the first row of each symbol in a frame sorted by ``column`` (and on the first row)."""
    return (pl.col(column) != pl.col(column).shift(1)).fill_null(True)


def sorted_by(frame: pl.DataFrame, key: Sequence[str], unique: bool = False) -> bool:
    """Whether ``frame`` is sorted ascending by the two columns of ``key`` and has no null in them.

    With ``unique`` no key may repeat; without, repeats must be adjacent (as a stable sort leaves
    them). Cheap: when it says yes, a stable sort by ``key`` would change nothing, so callers skip it
    (sources deliver sorted batches; each stage keeps them sorted).
    """
    first, second = (frame.get_column(name) for name in key)
    if first.null_count() or second.null_count():
        return False  # a null key counts as unsorted
    numbers = second.to_physical()
    if not numbers.dtype.is_numeric():
        return _sorted_by_comparing(frame, key, unique)
    if not first.is_sorted():
        return False
    # The second column may only fail to advance where the first one changes: comparing the (few)
    # such rows costs far less than comparing every row's text with its neighbour's.
    step = numbers.diff()
    stalls = (step <= 0 if unique else step < 0).arg_true()
    if stalls.is_empty():
        return True
    return bool((first.gather(stalls) != first.gather(stalls - 1)).all())


def _sorted_by_comparing(frame: pl.DataFrame, key: Sequence[str], unique: bool) -> bool:
    first, second = (pl.col(name) for name in key)
    later = second > second.shift() if unique else second >= second.shift()
    ascending = (first > first.shift()) | ((first == first.shift()) & later)
    return bool(frame.select(ascending.slice(1).fill_null(False).all()).item())


def _symbol_filter(frame: pl.LazyFrame, symbols: Sequence[str] | None) -> pl.LazyFrame:
    if symbols is None:
        return frame
    return frame.filter(pl.col("symbol").is_in(list(symbols)))


def _date_filter(frame: pl.LazyFrame, column: str, start: date | None, end: date | None) -> pl.LazyFrame:
    if start is not None:
        frame = frame.filter(pl.col(column) >= start)
    if end is not None:
        frame = frame.filter(pl.col(column) <= end)
    return frame


# --------------------------------------------------------------------------------------------------
# Database helpers
# --------------------------------------------------------------------------------------------------


def _in_transaction(target: Engine | Session, work: Callable[[Connection | Session], _T]) -> _T:
    # An engine gets a transaction of its own; a session is the caller's unit of work, so the
    # statements join its transaction and the caller commits (or rolls back) with the rest.
    if isinstance(target, Engine):
        with target.begin() as connection:
            return work(connection)
    return work(target)


def _dialect_name(target: Connection | Session) -> str:
    bind = target.get_bind() if isinstance(target, Session) else target
    return bind.dialect.name


# --------------------------------------------------------------------------------------------------
# Adjusted bars
# --------------------------------------------------------------------------------------------------


class StagedFiles:
    """Files written under temporary names beside their targets, published together by :meth:`commit`.

    Each file is replaced atomically (a crash between two leaves some replaced and some not; the
    adjusted store repairs that on the next ingest of those symbols).
    """

    def __init__(self, changes: list[tuple[Path, Path | None]], rows: int) -> None:
        #: ``(target, temporary file)``; no temporary file means the target is deleted.
        self._changes = changes
        self.rows = rows

    def commit(self) -> int:
        """Move every file into place (or delete it); returns the rows the staging stored."""
        for target, tmp in self._changes:
            if tmp is None:
                target.unlink(missing_ok=True)
            else:
                tmp.replace(target)
        for folder in {target.parent for target, _ in self._changes}:
            fsync_dir(folder)
        self._changes = []
        return self.rows

    def discard(self) -> None:
        """Remove the temporary files; nothing visible changes. A no-op after :meth:`commit`."""
        for _, tmp in self._changes:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._changes = []


class AdjustedStore:
    """Back-adjusted bars that passed the quality gate: ``adjusted/bars/year=YYYY/data.parquet``.

    Derived data: a symbol's whole history is replaced at once (a new corporate action changes every
    earlier price), and only the year files whose contents change are rewritten. Each file is
    replaced atomically; a crash between two years leaves a mix of old and new years, which the next
    ingest of those symbols repairs (the raw record is the source of truth).
    """

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths

    @property
    def root(self) -> Path:
        return self.paths.adjusted_bars

    def _year_files(self) -> dict[int, Path]:
        files: dict[int, Path] = {}
        if not self.root.is_dir():
            return files
        for folder in self.root.glob("year=*"):
            path = folder / "data.parquet"
            if path.is_file():
                files[int(folder.name.removeprefix("year="))] = path
        return files

    def files(self) -> list[Path]:
        """The year files, oldest first."""
        return [path for _, path in sorted(self._year_files().items())]

    def replace_symbols(self, adj: pl.DataFrame, symbols: Sequence[str] | None = None) -> int:
        """Make ``adj`` the complete adjusted history of its symbols; other symbols are untouched.

        ``symbols`` names the symbols being replaced when that is more than those with rows in
        ``adj``: a listed symbol without rows loses its stored history (say every bar was refused).
        Returns the number of rows stored for the replaced symbols. Raises ``ValueError`` on a null
        key or a repeated (symbol, date): the store holds one bar per symbol and day.
        """
        return self.stage(adj, symbols).commit()

    def stage(self, adj: pl.DataFrame, symbols: Sequence[str] | None = None) -> StagedFiles:
        """:meth:`replace_symbols` up to the point of no return: the year files that change are written
        under temporary names, and nothing is visible until :meth:`StagedFiles.commit` (or removed
        by :meth:`StagedFiles.discard`). The pipeline encodes while it looks for calendar gaps.
        """
        frame = conform(adj, ADJ_BAR_SCHEMA)
        _require_keys(frame, KEY, "adjusted bars")
        # The gate hands over bars sorted by (symbol, date) and unique: one cheap pass proves both and
        # saves a sort and a duplicate search; anything else is checked and sorted here.
        if not strictly_sorted(frame, KEY):
            if frame.group_by(KEY).len().filter(pl.col("len") > 1).height:
                raise ValueError("adjusted bars: more than one row for the same (symbol, date)")
            frame = frame.sort(KEY)
        # Sorted now: the symbols are where the symbol changes (no hashing of every row's text).
        replaced = set(frame.filter(symbol_starts()).get_column("symbol").to_list()) | set(symbols or ())
        if not replaced:
            return StagedFiles([], rows=0)
        wanted = sorted(replaced)

        frame = frame.with_columns(_year=pl.col("date").dt.year())
        incoming = {
            int(key[0]): part.drop("_year")
            for key, part in frame.partition_by("_year", as_dict=True, maintain_order=True).items()
        }
        existing = self._year_files()
        # Years whose file holds any replaced symbol must be rewritten too (their rows go away or
        # change); reading just the symbol column of each file is cheap (dictionary-encoded).
        holding = {
            year
            for year, path in existing.items()
            if pl.scan_parquet(path).select(pl.col("symbol").is_in(wanted).any()).collect().item()
        }

        def rewrite(year: int) -> tuple[Path, Path | None] | None:
            """``(file, its new contents under a temporary name or None to delete it)``, or None."""
            path = self.root / year_folder(year) / "data.parquet"
            old = conform(pl.read_parquet(path), ADJ_BAR_SCHEMA) if year in existing else None
            new = incoming.get(year, empty(ADJ_BAR_SCHEMA))  # sorted: partitioning keeps order
            kept = None if old is None else old.filter(~pl.col("symbol").is_in(wanted))
            if kept is not None and not kept.is_empty():
                new = pl.concat([kept, new]).sort(KEY)
            if old is not None and new.equals(old, null_equal=True):
                return None  # same contents: leave the file (and its mtime) alone
            return (path, None) if new.is_empty() else (path, _write_temp(new, path))

        # Parquet encoding releases the GIL, so years are written in parallel.
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            attempts = [pool.submit(rewrite, year) for year in sorted(set(incoming) | holding)]
        written = [attempt.result() for attempt in attempts if attempt.exception() is None]
        staged = StagedFiles([item for item in written if item is not None], rows=frame.height)
        errors = [error for attempt in attempts if (error := attempt.exception()) is not None]
        if errors:  # nothing half-staged survives a failed year
            staged.discard()
            raise errors[0]
        return staged

    def read(
        self, symbols: Sequence[str] | None = None, start: date | None = None, end: date | None = None
    ) -> pl.DataFrame:
        """Adjusted bars (:data:`ADJ_BAR_SCHEMA`), sorted by symbol and date, optionally filtered."""
        files = [
            path
            for year, path in sorted(self._year_files().items())
            if (start is None or year >= start.year) and (end is None or year <= end.year)
        ]
        lazy = _date_filter(_symbol_filter(scan(files, ADJ_BAR_SCHEMA), symbols), "date", start, end)
        return lazy.sort(KEY).collect()

    def symbols(self) -> list[str]:
        """Every symbol with at least one adjusted bar, sorted."""
        found = scan(self.files(), ADJ_BAR_SCHEMA).select(pl.col("symbol").unique()).collect()
        return sorted(found.get_column("symbol").to_list())


# --------------------------------------------------------------------------------------------------
# Keyed reference tables (one Parquet file each)
# --------------------------------------------------------------------------------------------------


class _KeyedFile:
    """A small reference table in one Parquet file with a key; a newer row replaces an older one."""

    schema: dict[str, pl.DataType]
    key: tuple[str, ...]
    what: str

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read_all(self) -> pl.DataFrame:
        if not self.path.is_file():
            return empty(self.schema)
        return conform(pl.read_parquet(self.path), self.schema)

    def _prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        incoming = conform(frame, self.schema)
        _require_keys(incoming, self.key, self.what)
        # Within one batch the later row for a key wins, like a later batch does.
        return incoming.unique(subset=list(self.key), keep="last", maintain_order=True)

    def _changed(self, incoming: pl.DataFrame, current: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``incoming`` not stored as they are (new, or a changed value)."""
        return incoming.join(current, on=list(self.schema), how="anti", nulls_equal=True)

    def _merge(self, frame: pl.DataFrame) -> int:
        incoming = self._prepare(frame)
        if incoming.is_empty():
            return 0
        current = self._read_all()
        changed = self._changed(incoming, current)
        if changed.is_empty():
            return 0  # nothing new: do not rewrite the file
        kept = current.join(incoming.select(self.key), on=list(self.key), how="anti", nulls_equal=True)
        write_replace(pl.concat([kept, incoming]).sort(list(self.key)), self.path)
        return changed.height


class ActionStore(_KeyedFile):
    """Corporate actions (:data:`ACTION_SCHEMA`) in ``reference/corporate_actions.parquet``.

    One row per (symbol, ex_date): a newer record for the same key replaces the stored one (a
    source's correction of a ratio or an amount).
    """

    schema = ACTION_SCHEMA
    key = ("symbol", "ex_date")
    what = "corporate actions"

    def __init__(self, paths: DataPaths) -> None:
        super().__init__(paths.actions)

    def merge(self, actions: pl.DataFrame) -> int:
        """Merge ``actions`` into the store; returns how many rows were new or changed."""
        return self._merge(actions)

    def read(self, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """Stored actions, optionally of ``symbols`` only, sorted by symbol and ex_date."""
        return _symbol_filter(self._read_all().lazy(), symbols).collect()

    def changed_symbols(self, actions: pl.DataFrame) -> set[str]:
        """Symbols of which ``actions`` holds an action not stored as it is (new, or a correction)."""
        incoming = self._prepare(actions)
        if incoming.is_empty():
            return set()
        changed = self._changed(incoming, self._read_all())
        return set(changed.get_column("symbol").drop_nulls().to_list())

    def read_merged(self, actions: pl.DataFrame, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """What :meth:`read` would return after ``merge(actions)``, without writing anything.

        Lets the pipeline check new actions (by adjusting with them) before they are stored.
        """
        incoming = self._prepare(actions)
        kept = self._read_all().join(
            incoming.select(self.key), on=list(self.key), how="anti", nulls_equal=True
        )
        merged = pl.concat([kept, incoming]).sort(list(self.key))
        return _symbol_filter(merged.lazy(), symbols).collect()


#: A bar whose close-to-close move a person confirmed as real (an earnings gap, a takeover bid): the
#: outlier rule does not quarantine its move in while the bar's raw ``close`` is the one confirmed
#: (a re-delivered bar with another close is judged again). ``accepted_at`` is when (UTC).
ACCEPTED_MOVE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "close": pl.Float64(),
    "reason": pl.String(),
    "accepted_at": pl.Datetime("us", "UTC"),
}


class AcceptedMoveStore(_KeyedFile):
    """Accepted moves (:data:`ACCEPTED_MOVE_SCHEMA`) in ``reference/accepted_moves.parquet``.

    One row per (symbol, date); accepting the bar again replaces the row. Every ingest hands the
    quality gate the affected symbols' accepted moves whose close is still the recorded one, so an
    accepted bar stays clean when the history is re-checked (see
    :meth:`trader.data.pipeline.DataPipeline.accept_move`).
    """

    schema = ACCEPTED_MOVE_SCHEMA
    key = ("symbol", "date")
    what = "accepted moves"

    def __init__(self, paths: DataPaths) -> None:
        super().__init__(paths.accepted_moves)

    def read(self, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """Accepted moves, optionally of ``symbols`` only, sorted by symbol and date."""
        return _symbol_filter(self._read_all().lazy(), symbols).collect()

    def accept(self, symbol: str, day: date, close: float, reason: str, at: datetime) -> None:
        """Record the move into ``symbol``'s bar on ``day`` (raw ``close``) as confirmed."""
        row = {"symbol": [symbol], "date": [day], "close": [close], "reason": [reason], "accepted_at": [at]}
        self._merge(pl.DataFrame(row, schema=self.schema))

    def matching(self, bars: pl.DataFrame, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """The accepted moves (of ``symbols``) whose bar in ``bars`` (raw: ``symbol, date, close``)
        still has the confirmed close: the ones the quality gate honours."""
        accepted = self.read(symbols)
        if accepted.is_empty():
            return accepted
        return accepted.join(
            bars.select("symbol", "date", "close"), on=["symbol", "date", "close"], how="semi"
        )

    def revoke(self, symbol: str, day: date) -> bool:
        """Forget the acceptance of ``symbol`` on ``day``; False when there was none."""
        current = self._read_all()
        kept = current.filter(~((pl.col("symbol") == symbol) & (pl.col("date") == day)))
        if kept.height == current.height:
            return False
        self.replace(kept)
        return True

    def replace(self, moves: pl.DataFrame) -> None:
        """Make ``moves`` the whole store (an empty frame removes the file's rows)."""
        if moves.is_empty() and not self.path.is_file():
            return  # nothing accepted, nothing to write
        write_replace(conform(moves, self.schema).sort(list(self.key)), self.path)


#: The universe rows the pipeline derived from bars (no source listed the symbol), one per symbol.
DERIVED_LISTING_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "start_date": pl.Date()}


@dataclass(frozen=True)
class UniverseUpdate:
    """What :meth:`UniverseStore.plan` decided; :meth:`UniverseStore.apply` writes it."""

    #: The whole universe after the update (:data:`~trader.data.bars.LISTING_SCHEMA`, sorted).
    listings: pl.DataFrame
    #: Which of those rows were derived from bars (:data:`DERIVED_LISTING_SCHEMA`, sorted).
    derived: pl.DataFrame
    #: Rows of ``listings`` that are new or changed.
    changed_rows: int
    #: Whether anything differs from what is stored (else :meth:`UniverseStore.apply` writes nothing).
    changed: bool


class UniverseStore(_KeyedFile):
    """Point-in-time listings (:data:`LISTING_SCHEMA`) in ``reference/universe.parquet``.

    One row per (symbol, start_date), so a symbol delisted and listed again has two rows. A listing
    that does not say whether it is tradable is stored as tradable (the SQL column is NOT NULL and
    a listed symbol is tradable unless a source says otherwise).

    Symbols no source lists get a *derived* listing (from their first bar, still listed), recorded
    in ``reference/derived_listings.parquet`` so that it can move: a backfill of older bars moves its
    start earlier, and a source's listing of the symbol replaces it.
    """

    schema = LISTING_SCHEMA
    key = ("symbol", "start_date")
    what = "listings"

    def __init__(self, paths: DataPaths) -> None:
        super().__init__(paths.universe)
        self.derived_path = paths.derived_listings

    def _prepare(self, frame: pl.DataFrame) -> pl.DataFrame:
        incoming = super()._prepare(frame).with_columns(pl.col("tradable").fill_null(True))
        # Refuse here what the SQL table would refuse later, so Parquet and database cannot disagree.
        bad = incoming.filter(
            (pl.col("symbol").str.len_chars() == 0) | (pl.col("end_date") < pl.col("start_date"))
        )
        if not bad.is_empty():
            raise ValueError(f"listings: empty symbol or end_date before start_date in {bad.head(5).rows()}")
        return incoming

    def read_derived(self) -> pl.DataFrame:
        """The derived listings (:data:`DERIVED_LISTING_SCHEMA`), sorted by symbol."""
        if not self.derived_path.is_file():
            return empty(DERIVED_LISTING_SCHEMA)
        return conform(pl.read_parquet(self.derived_path), DERIVED_LISTING_SCHEMA)

    def plan(self, listings: pl.DataFrame, first_bars: pl.DataFrame | None = None) -> UniverseUpdate:
        """The universe after merging a source's ``listings`` and deriving listings, without writing.

        ``listings`` (:data:`LISTING_SCHEMA`) replace stored rows with the same (symbol, start_date)
        and any derived listing of their symbols. ``first_bars`` (``symbol``, ``start_date``: each
        symbol's earliest bar) gives every symbol no source lists a listing from that date (or from
        its earlier derived start), still listed and tradable.
        """
        key = list(self.key)
        stored, stored_derived = self._read_all(), self.read_derived()
        incoming = self._prepare(listings)
        sourced = incoming.select("symbol").unique()
        # A source now describes these symbols: their derived rows go.
        replaced = stored_derived.join(sourced, on="symbol", how="semi")
        table = stored.join(replaced, on=key, how="anti", nulls_equal=True)
        table = pl.concat([table.join(incoming.select(key), on=key, how="anti", nulls_equal=True), incoming])
        derived = stored_derived.join(sourced, on="symbol", how="anti")

        if first_bars is not None and not first_bars.is_empty():
            described = (
                table.select("symbol").unique().join(derived.select("symbol"), on="symbol", how="anti")
            )
            starts = (
                first_bars.select(pl.col("symbol").cast(pl.String), pl.col("start_date").cast(pl.Date))
                .drop_nulls()
                .group_by("symbol")
                .agg(pl.col("start_date").min())
                .join(described, on="symbol", how="anti")
                .join(derived, on="symbol", how="left", suffix="_before")
                # Raw bars are never deleted, so a derived start only ever moves earlier.
                .select("symbol", pl.min_horizontal("start_date", "start_date_before").alias("start_date"))
            )
            # A derived symbol has no other rows (a source's listing would have replaced them), so all
            # of its rows are replaced: also right after a crash between the two files' writes.
            table = pl.concat(
                [
                    table.join(starts.select("symbol"), on="symbol", how="anti"),
                    starts.with_columns(
                        end_date=pl.lit(None, pl.Date),
                        tradable=pl.lit(True),
                        sector=pl.lit(None, pl.String),
                    ).select(*LISTING_SCHEMA),
                ]
            )
            derived = pl.concat([derived.join(starts, on="symbol", how="anti"), starts])

        table = conform(table, LISTING_SCHEMA).sort(key)
        derived = conform(derived, DERIVED_LISTING_SCHEMA).sort("symbol")
        changed_rows = table.join(stored, on=list(LISTING_SCHEMA), how="anti", nulls_equal=True).height
        changed = not (
            table.equals(stored, null_equal=True) and derived.equals(stored_derived, null_equal=True)
        )
        return UniverseUpdate(listings=table, derived=derived, changed_rows=changed_rows, changed=changed)

    def apply(self, update: UniverseUpdate) -> int:
        """Write what :meth:`plan` decided (nothing when it changed nothing); returns rows new or changed."""
        if not update.changed:
            return 0
        # The universe first: a crash before the second write leaves derived listings that the next
        # derivation replaces whole (see plan), never a listing the universe lost.
        write_replace(update.listings, self.path)
        write_replace(update.derived, self.derived_path)
        return update.changed_rows

    def merge(self, listings: pl.DataFrame) -> int:
        """Merge ``listings`` into the store; returns how many rows were new or changed."""
        return self.apply(self.plan(listings))

    def read(self) -> pl.DataFrame:
        """Every stored listing, sorted by symbol and start_date."""
        return self._read_all()

    def listed_on(self, day: date) -> list[str]:
        """Symbols listed and tradable on ``day``: ``start_date <= day <= end_date`` (open end: listed)."""
        listed = self._read_all().filter(
            (pl.col("start_date") <= day)
            & (pl.col("end_date").is_null() | (pl.col("end_date") >= day))
            & pl.col("tradable")
        )
        return sorted(listed.get_column("symbol").unique().to_list())

    def sync_to_db(self, target: Engine | Session) -> int:
        """Upsert every stored listing into the SQL ``universe`` table in one transaction.

        Rows are matched on (symbol, start_date); ``end_date``, ``tradable`` and ``sector`` are
        updated, columns the Parquet table does not hold (``name``, ``exchange``) are left as they
        are. A table row of a symbol the Parquet table holds, under a start date it no longer holds
        (a derived listing that moved or that a source's listing replaced), is deleted. With a
        session the statements join its transaction and the caller commits. Returns the number of
        rows sent.
        """
        stored = self._read_all()
        rows = stored.to_dicts()
        if not rows:
            return 0
        keys = set(stored.select(self.key).iter_rows())
        symbols = sorted({symbol for symbol, _ in keys})

        def work(conn: Connection | Session) -> int:
            dialect = _dialect_name(conn)
            if dialect == "postgresql":
                pg_stmt = postgresql.insert(Universe)
                stmt: Any = pg_stmt.on_conflict_do_update(
                    index_elements=["symbol", "start_date"],
                    set_={c: pg_stmt.excluded[c] for c in ("end_date", "tradable", "sector")},
                )
            elif dialect == "sqlite":
                lite_stmt = sqlite.insert(Universe)
                stmt = lite_stmt.on_conflict_do_update(
                    index_elements=["symbol", "start_date"],
                    set_={c: lite_stmt.excluded[c] for c in ("end_date", "tradable", "sector")},
                )
            else:  # pragma: no cover - only the two supported engines
                raise NotImplementedError(f"universe upsert is not implemented for {dialect}")
            conn.execute(stmt, rows)
            present = conn.execute(
                select(Universe.symbol, Universe.start_date).where(Universe.symbol.in_(symbols))
            )
            for symbol, start in [tuple(row) for row in present if tuple(row) not in keys]:
                conn.execute(delete(Universe).where(Universe.symbol == symbol, Universe.start_date == start))
            return len(rows)

        return _in_transaction(target, work)


class GapStore(_KeyedFile):
    """Sessions missing inside a symbol's listing (:data:`GAP_SCHEMA`) in ``quality/gaps.parquet``."""

    schema = GAP_SCHEMA
    key = ("symbol", "date")
    what = "gaps"

    def __init__(self, paths: DataPaths) -> None:
        super().__init__(paths.gaps)

    def merge(self, gaps: pl.DataFrame) -> int:
        """Merge ``gaps`` into the store (a newer reason replaces the old); returns rows new or changed."""
        return self._merge(gaps)

    def replace_symbols(self, gaps: pl.DataFrame, symbols: Sequence[str]) -> int:
        """Make ``gaps`` the complete list of gaps of ``symbols`` (and of the symbols it has rows of).

        A gap the source has since filled disappears. Returns the number of gap rows of those symbols.
        """
        incoming = self._prepare(gaps)
        replaced = sorted(set(symbols) | set(incoming.get_column("symbol").to_list()))
        if not replaced:
            return 0
        current = self._read_all()
        merged = pl.concat([current.filter(~pl.col("symbol").is_in(replaced)), incoming]).sort(list(self.key))
        if not merged.equals(current, null_equal=True):
            if merged.is_empty() and not self.path.exists():
                return 0
            write_replace(merged, self.path)
        return incoming.height

    def read(self) -> pl.DataFrame:
        """Every recorded gap, sorted by symbol and date."""
        return self._read_all()


# --------------------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------------------

#: Same key in Parquet and the table: a row whose adjusted values change (a new dividend moves its
#: factor) is the same refused bar, not a new one. Several rows of one key (the two versions of a
#: conflicting duplicate, two rows whose dates could not be read) are kept as several: a key is
#: stored as many times as the largest batch refused it (see :func:`_beyond_stored`).
_QUARANTINE_PARQUET_KEY = ("symbol", "date", "rule", "source")
_QUARANTINE_DB_KEY = ("symbol", "date", "rule", "source")


def _beyond_stored(frame: pl.DataFrame, stored: pl.DataFrame, key: Sequence[str]) -> pl.DataFrame:
    """The rows of ``frame`` past the number of rows ``stored`` already holds for their key.

    Re-gating the same data gives as many rows per key as before, so nothing is added twice; a batch
    with more rows for a key than stored (a second version of a bar) adds the extra ones.
    """
    counted = stored.group_by(key).agg(_stored=pl.len())
    numbered = frame.with_columns(_nth=pl.int_range(pl.len()).over(key))
    joined = numbered.join(counted, on=list(key), how="left", nulls_equal=True, maintain_order="left")
    return joined.filter(pl.col("_nth") >= pl.col("_stored").fill_null(0)).drop("_nth", "_stored")


def _payload_object(text: str | None) -> dict[str, Any]:
    # The SQL column holds a JSON object; keep anything else whole rather than lose it.
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


class QuarantineStore:
    """Rows the quality gate refused, with rule and reason.

    Parquet: ``quality/quarantine/year=YYYY/<ingest-id>.parquet``, append-only like the raw record
    (by year, not month: quarantine is small, and a file per month would cost more than its rows).
    Database: the ``quarantine`` table, for operators and alerts. Both are idempotent, so re-ingesting
    the same data quarantines nothing twice.
    """

    def __init__(self, paths: DataPaths) -> None:
        self.paths = paths

    @property
    def root(self) -> Path:
        return self.paths.quarantine

    def files(self, start: date | None = None, end: date | None = None) -> list[Path]:
        """The quarantine files whose year can hold dates in ``start``..``end``."""
        return [f for folder in year_partitions(self.root, start, end) for f in parquet_files(folder)]

    def append(self, quarantined: pl.DataFrame, ingest_id: str) -> int:
        """Append ``quarantined`` (:data:`QUARANTINE_SCHEMA`) as one new file per year; returns rows added.

        Rows of a (symbol, date, rule, source) already quarantined are skipped, up to as many as are
        stored for it (re-ingesting the same data adds nothing; see :func:`_beyond_stored`).
        """
        if not ingest_id or "/" in ingest_id or ingest_id.startswith("."):
            raise ValueError(f"ingest id {ingest_id!r} cannot name a file")
        frame = conform(quarantined, QUARANTINE_SCHEMA)
        if frame.is_empty():
            return 0
        frame = frame.with_columns(_year=pl.col("date").dt.year())
        years = frame.get_column("_year").unique().to_list()
        files = [f for y in years for f in parquet_files(self.root / year_folder(y))]
        seen = (
            scan(files, QUARANTINE_SCHEMA).select(_QUARANTINE_PARQUET_KEY).collect()
            if files
            else empty({k: QUARANTINE_SCHEMA[k] for k in _QUARANTINE_PARQUET_KEY})
        )
        frame = _beyond_stored(frame, seen, _QUARANTINE_PARQUET_KEY)
        for (year,), part in frame.partition_by("_year", as_dict=True).items():
            write_new(part.drop("_year"), self.root / year_folder(year), ingest_id)
        return frame.height

    def read(self, start: date | None = None, end: date | None = None) -> pl.DataFrame:
        """Every quarantined row (:data:`QUARANTINE_SCHEMA`), optionally of dates in ``start``..``end``."""
        lazy = _date_filter(scan(self.files(start, end), QUARANTINE_SCHEMA), "date", start, end)
        return lazy.sort(["symbol", "date", "rule"], nulls_last=True, maintain_order=True).collect()

    def record_in_db(self, target: Engine | Session, quarantined: pl.DataFrame) -> int:
        """Insert ``quarantined`` into the SQL ``quarantine`` table in one transaction; returns rows added.

        Rows of a (symbol, date, rule, source) the table already holds are skipped, up to as many as
        it holds (re-ingest is idempotent; see :func:`_beyond_stored`). ``payload`` (JSON text) is
        stored as a JSON object; a null ``source`` is stored as ``unknown`` (the column is NOT NULL).
        With a session the insert joins its transaction and the caller commits.
        """
        frame = conform(quarantined, QUARANTINE_SCHEMA).with_columns(
            pl.col("source").fill_null(UNKNOWN_SOURCE)
        )
        if frame.is_empty():
            return 0
        blank = frame.filter(
            pl.col("rule").is_null()
            | (pl.col("rule").str.len_chars() == 0)
            | pl.col("reason").is_null()
            | (pl.col("reason").str.len_chars() == 0)
        )
        if not blank.is_empty():
            raise ValueError(f"quarantine rows need a rule and a reason: {blank.head(5).rows()}")
        rules = frame.get_column("rule").unique().to_list()
        first, last = frame.get_column("date").min(), frame.get_column("date").max()

        def work(conn: Connection | Session) -> int:
            # Only the existing rows that could match: same rules, dates inside the batch's range.
            q = Quarantine
            dated = q.date.between(first, last) if first is not None else q.date.is_(None)
            query = select(q.symbol, q.date, q.rule, q.source).where(
                q.rule.in_(rules), or_(dated, q.date.is_(None))
            )
            present = pl.DataFrame(
                [tuple(row) for row in conn.execute(query)],
                schema={k: QUARANTINE_SCHEMA[k] for k in _QUARANTINE_DB_KEY},
                orient="row",
            )
            fresh = _beyond_stored(frame, present, _QUARANTINE_DB_KEY)
            if fresh.is_empty():
                return 0
            rows = [
                {**row, "payload": _payload_object(row["payload"])}
                for row in fresh.select("symbol", "date", "source", "rule", "reason", "payload").to_dicts()
            ]
            conn.execute(insert(Quarantine), rows)
            return len(rows)

        return _in_transaction(target, work)
