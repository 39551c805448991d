"""Export the adjusted store into Qlib's binary data layout, incrementally and atomically.

The pyqlib wheel does not ship Qlib's ``scripts/dump_bin.py``, and upstream's incremental update
mis-slots a day after a halt, so this is our own writer of the layout that
``qlib/data/storage/file_storage.py`` reads::

    <target>/calendars/day.txt            one session per line (YYYY-MM-DD), first bar .. last bar
    <target>/calendars/day_future.txt     day.txt plus the next FUTURE_SESSIONS sessions
    <target>/instruments/all.txt          SYMBOL<TAB>START<TAB>END, one line per listing
    <target>/features/<symbol>/<field>.day.bin
    <target>/.trader-export.json          our manifest: a digest of every file we wrote

A ``.day.bin`` file is little-endian float32: the calendar index of its first value, then one value
per session from there to the symbol's last bar, NaN for a session without a bar (a halt, a missing
day). Feature folders are the lower-cased symbol (Qlib lower-cases the path it reads); Windows device
names get Qlib's ``_qlib_`` prefix. ``all.txt`` keeps the symbols as stored (upper case).

Fields: ``open high low close volume factor`` exactly as the adjusted store holds them (prices
back-adjusted, ``factor = adjusted / raw``), plus two derived ones Qlib needs: ``vwap`` (Alpha158 reads
``$vwap``; the store has no traded VWAP, so it is the typical price ``(high + low + close) / 3``) and
``change`` (the backtest's exchange loads ``$change``: ``close / previous bar's close - 1``, NaN on a
symbol's first bar).

Incremental: each file's content is encoded in memory and compared (by digest, kept in the manifest,
and by size on disk) with what is there; only files whose bytes change are written. Appending a day
therefore rewrites the files of the symbols that traded that day plus the calendar, and leaves a
delisted symbol's files alone; a split, which changes a symbol's whole adjusted history, rewrites
that symbol's files in full. Every write goes to a temporary file in the same folder, is fsynced and
renamed over the old one, so a crash leaves the old file or the new one, never half of one; the
manifest is written last, and a file written by an interrupted run is recognised by its bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.paths import DataPaths
from trader.data.store import AdjustedStore, UniverseStore, fsync_dir, write_atomic
from trader.errors import TraderError

#: Fields taken from the adjusted store as they are.
STORE_FIELDS = ("open", "high", "low", "close", "volume", "factor")
#: Fields derived here (see the module docstring).
DERIVED_FIELDS = ("vwap", "change")
FIELDS = STORE_FIELDS + DERIVED_FIELDS
FREQ = "day"
MARKET = "all"
#: Sessions after the last bar listed in ``day_future.txt``: Qlib's backtest asks for the session
#: after its end date and fails on the last calendar day without them (about one year is plenty).
FUTURE_SESSIONS = 252
MANIFEST = ".trader-export.json"
MANIFEST_FORMAT = 1
#: What may already be in a target folder that has no manifest (an earlier export whose manifest
#: was lost); anything else means the folder is not ours and nothing is written into it.
KNOWN_ENTRIES = frozenset({"calendars", "instruments", "features", MANIFEST})
#: Qlib (``qlib.utils.code_to_fname``) prefixes these names so the folder can exist on Windows.
RESERVED_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}
)
RESERVED_PREFIX = "_qlib_"
#: A symbol becomes a folder name and a field of a tab-separated file: no separators, no whitespace.
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]*$")
#: Files written in parallel: small writes spend most of their time in ``fsync``, not on a CPU.
WRITERS = min(16, 4 * (os.cpu_count() or 1))


class UnknownMarketError(TraderError):
    """A strategy's ``market`` is not one of the export's instrument lists."""

    exit_code = 2


def require_market(provider_uri: Path, market: str) -> None:
    """Refuse a ``market`` without ``instruments/<market>.txt`` in the export at ``provider_uri``
    (Qlib would fail deep inside with an internal error), naming the markets the export has."""
    if (provider_uri / "instruments" / f"{market}.txt").is_file():
        return
    available = sorted(path.stem for path in (provider_uri / "instruments").glob("*.txt"))
    raise UnknownMarketError(
        f"market: {market!r} is not a market of the Qlib export at {provider_uri} "
        f"(it has: {', '.join(available) or 'none'}); set market in the strategy file to one of them"
    )


class QlibExportError(TraderError):
    """The store cannot be exported (empty, invalid values) or the target folder is not usable."""


@dataclass(frozen=True)
class ExportReport:
    """What an export did. ``files_*`` count every file of the layout (calendars, instruments, features)."""

    target: Path
    symbols: int
    instruments: int
    days: int
    first_day: date
    last_day: date
    files_written: int
    files_unchanged: int
    files_removed: int
    changed_symbols: tuple[str, ...]
    seconds: float


# --------------------------------------------------------------------------------------------------
# Pure parts: encoding, names, instrument ranges
# --------------------------------------------------------------------------------------------------


def encode_feature(start_index: int, values: npt.ArrayLike) -> bytes:
    """The bytes of a ``.day.bin`` file: ``start_index`` then ``values``, all little-endian float32."""
    if start_index < 0:
        raise ValueError(f"start_index must be >= 0, got {start_index}")
    body = np.asarray(values, dtype="<f4")
    if body.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {body.shape}")
    header = np.array([start_index], dtype="<f4")
    # A float32 holds every integer up to 2**24 exactly: 66,000 years of sessions.
    if int(header[0]) != start_index:
        raise ValueError(f"start_index {start_index} does not fit a float32 exactly")
    return header.tobytes() + body.tobytes()


def decode_feature(data: bytes) -> tuple[int, npt.NDArray[np.float32]]:
    """``(start_index, values)`` of a ``.day.bin`` file's bytes (the inverse of :func:`encode_feature`)."""
    if len(data) < 4 or len(data) % 4:
        raise ValueError(f"a .bin file holds whole float32 values and a header; got {len(data)} bytes")
    array = np.frombuffer(data, dtype="<f4")
    return int(array[0]), array[1:].astype(np.float32)


def dense_values(
    slots: npt.NDArray[np.int64], values: npt.NDArray[np.float64]
) -> tuple[int, npt.NDArray[np.float32]]:
    """Spread one symbol's rows over consecutive calendar slots.

    ``slots`` are the rows' calendar indices (ascending, unique); ``values`` has one row per slot and
    one column per field. Returns the first slot and a ``(fields, sessions)`` float32 array with NaN
    in every session between the first and last slot that has no row.
    """
    if slots.size == 0:
        raise ValueError("no rows")
    if slots.size > 1 and not bool(np.all(np.diff(slots) > 0)):
        raise ValueError("slots must be strictly ascending")
    first = int(slots[0])
    width = int(slots[-1]) - first + 1
    dense = np.full((values.shape[1], width), np.nan, dtype=np.float32)
    dense[:, slots - first] = values.T
    return first, dense


def feature_folder(symbol: str) -> str:
    """The folder of ``symbol`` under ``features/`` where Qlib looks for it.

    Lower case (Qlib lower-cases the path it opens); Windows device names get Qlib's prefix.
    """
    name = RESERVED_PREFIX + symbol if symbol.upper() in RESERVED_NAMES else symbol
    return name.lower()


def instrument_ranges(spans: pl.DataFrame, listings: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``instruments/all.txt``: ``symbol, start, end``, sorted.

    ``spans`` has one row per exported symbol: ``symbol, first, last`` (its first and last bar).
    Each tradable listing of ``listings`` (:data:`~trader.data.bars.LISTING_SCHEMA`) gives one
    range, clipped to the symbol's bars (an open end ends at the last bar), so a delisted symbol
    leaves the universe on its end date and a listing without bars gives nothing. A symbol with
    bars but no listing at all (a source that sends no listings) is in the universe for its bars'
    span. A listing marked not tradable is left out: Qlib's ``all`` market is what a strategy may trade.
    """
    tradable = listings.filter(pl.col("tradable").fill_null(True))
    listed = (
        spans.join(tradable, on="symbol", how="inner")
        .select(
            "symbol",
            pl.max_horizontal("start_date", "first").alias("start"),
            pl.min_horizontal(pl.col("end_date").fill_null(pl.col("last")), "last").alias("end"),
        )
        .filter(pl.col("start") <= pl.col("end"))
    )
    unlisted = spans.join(listings.select("symbol").unique(), on="symbol", how="anti").select(
        "symbol", pl.col("first").alias("start"), pl.col("last").alias("end")
    )
    return pl.concat([listed, unlisted]).unique().sort("symbol", "start")


def instruments_text(ranges: pl.DataFrame) -> str:
    """The ``instruments/<market>.txt`` content of :func:`instrument_ranges` rows."""
    return "".join(f"{s}\t{a.isoformat()}\t{b.isoformat()}\n" for s, a, b in ranges.iter_rows())


def calendar_text(days: Sequence[date]) -> str:
    return "".join(f"{day.isoformat()}\n" for day in days)


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def is_unchanged(recorded: str | None, new: bytes, on_disk_size: int | None) -> bool:
    """Whether a file whose manifest digest is ``recorded`` and whose size is ``on_disk_size`` (None:
    missing) already holds ``new``, judged without reading it. ``False`` means "read it and compare"
    or "write it"."""
    return recorded is not None and on_disk_size == len(new) and recorded == digest(new)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


@dataclass
class _Manifest:
    files: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _Manifest:
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError):
            # A damaged manifest only costs reading each file back to compare: start from nothing.
            return cls()
        if not isinstance(raw, dict) or raw.get("format") != MANIFEST_FORMAT:
            return cls()
        files = raw.get("files")
        if not isinstance(files, dict):
            return cls()
        return cls({str(k): str(v) for k, v in files.items()})

    def dump(self, first: date, last: date) -> bytes:
        body = {
            "format": MANIFEST_FORMAT,
            "fields": list(FIELDS),
            "first_day": first.isoformat(),
            "last_day": last.isoformat(),
            "files": dict(sorted(self.files.items())),
        }
        return (json.dumps(body, indent=1) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------------------
# The exporter
# --------------------------------------------------------------------------------------------------

Progress = Callable[[str], None]


class QlibExporter:
    """Writes the adjusted store of ``paths`` into Qlib's layout under ``target`` (see the module doc)."""

    def __init__(self, paths: DataPaths, target: Path, calendar: TradingCalendar | None = None) -> None:
        self.paths = paths
        self.target = target
        self.calendar = calendar or trading_calendar()

    def export(self, on_progress: Progress | None = None) -> ExportReport:
        """Bring ``target`` up to date with the store; returns what was written.

        Raises :class:`QlibExportError` when the store is empty or holds values Qlib cannot take
        (a bar on a non-session, a missing or non-positive factor, a symbol that is no file name),
        or when ``target`` is a non-empty folder that is not an export.
        """
        began = time.perf_counter()
        say = on_progress or (lambda _message: None)
        self._check_target()

        say("reading the adjusted store")
        bars = AdjustedStore(self.paths).read()
        if bars.is_empty():
            raise QlibExportError(
                f"no adjusted bars in DATA_DIR ({self.paths.root}); "
                "run 'trader data synth' or 'trader data ingest' first"
            )
        _validate(bars)
        first_day, last_day = bars.get_column("date").min(), bars.get_column("date").max()
        assert isinstance(first_day, date) and isinstance(last_day, date)
        sessions = self.calendar.sessions(first_day, last_day)
        slotted = _with_slots(bars, sessions, self.calendar.name)
        future = self.calendar.all_sessions().filter(self.calendar.all_sessions() > last_day)

        spans = bars.group_by("symbol").agg(
            pl.col("date").min().alias("first"), pl.col("date").max().alias("last")
        )
        ranges = instrument_ranges(spans, UniverseStore(self.paths).read())
        symbols = sorted(spans.get_column("symbol").to_list())

        manifest = _Manifest.load(self.target / MANIFEST)
        wanted: dict[str, str] = {}
        written: list[str] = []
        changed: set[str] = set()

        def put(relative: str, data: bytes, symbol: str | None = None) -> None:
            wanted[relative] = digest(data)
            path = self.target / relative
            if is_unchanged(manifest.files.get(relative), data, _size(path)):
                return
            if _size(path) == len(data) and path.read_bytes() == data:
                return  # written by a run that stopped before its manifest, or manifest lost
            write_atomic(path, data)
            written.append(relative)
            if symbol is not None:
                changed.add(symbol)

        # Feature files first, the calendar last: a reader that sees the new calendar finds every
        # file already extended to it (Qlib reads past-the-end sessions of a short file as absent).
        with ThreadPoolExecutor(max_workers=WRITERS) as pool:
            pending: list[Future[None]] = []
            for done, (symbol, files) in enumerate(_encode_symbols(slotted), start=1):
                pending.extend(pool.submit(put, rel, data, symbol) for rel, data in files.items())
                if done % 25 == 0 or done == len(symbols):
                    say(f"encoding and writing features: {done}/{len(symbols)} symbols")
            for job in pending:
                job.result()

        put(f"instruments/{MARKET}.txt", instruments_text(ranges).encode())
        put(
            f"calendars/{FREQ}_future.txt", calendar_text([*sessions, *future.head(FUTURE_SESSIONS)]).encode()
        )
        put(f"calendars/{FREQ}.txt", calendar_text(sessions.to_list()).encode())

        say("removing files of symbols no longer in the store")
        removed = self._remove_stale(set(manifest.files) - set(wanted))
        manifest.files = wanted
        body = manifest.dump(first_day, last_day)
        manifest_path = self.target / MANIFEST
        if _size(manifest_path) != len(body) or manifest_path.read_bytes() != body:
            write_atomic(manifest_path, body)
        for folder in {(self.target / rel).parent for rel in written} | {self.target}:
            fsync_dir(folder)

        return ExportReport(
            target=self.target,
            symbols=len(symbols),
            instruments=ranges.height,
            days=sessions.len(),
            first_day=first_day,
            last_day=last_day,
            files_written=len(written),
            files_unchanged=len(wanted) - len(written),
            files_removed=removed,
            changed_symbols=tuple(sorted(changed)),
            seconds=time.perf_counter() - began,
        )

    def _check_target(self) -> None:
        if self.target.exists() and not self.target.is_dir():
            raise QlibExportError(f"export target {self.target} exists and is not a folder")
        if not self.target.is_dir() or (self.target / MANIFEST).is_file():
            return
        strangers = sorted(p.name for p in self.target.iterdir() if p.name not in KNOWN_ENTRIES)
        if strangers:
            raise QlibExportError(
                f"export target {self.target} is not empty and not a Qlib export (it holds "
                f"{', '.join(strangers[:5])}); choose an empty folder with --target"
            )

    def _remove_stale(self, stale: set[str]) -> int:
        removed = 0
        for relative in sorted(stale):
            path = self.target / relative
            if path.is_file():
                path.unlink()
                removed += 1
            folder = path.parent
            # Only the per-symbol feature folders disappear with their last file.
            if folder.parent == self.target / "features" and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        return removed


def _validate(bars: pl.DataFrame) -> None:
    bad_names = [s for s in bars.get_column("symbol").unique().to_list() if not _SYMBOL.match(s)]
    if bad_names:
        raise QlibExportError(
            f"symbol(s) {sorted(bad_names)[:5]} cannot be Qlib instruments: "
            "use letters, digits, '.', '-' and '_'"
        )
    folders: dict[str, list[str]] = {}
    for symbol in bars.get_column("symbol").unique().to_list():
        folders.setdefault(feature_folder(symbol), []).append(symbol)
    clashes = sorted(sorted(names) for names in folders.values() if len(names) > 1)
    if clashes:
        raise QlibExportError(f"symbols {clashes[:3]} differ only in case; Qlib's folders are lower case")
    bad_factor = bars.filter(pl.col("factor").is_null() | ~(pl.col("factor") > 0) | pl.col("factor").is_nan())
    if not bad_factor.is_empty():
        example = bad_factor.select("symbol", "date", "factor").head(3).rows()
        raise QlibExportError(
            f"{bad_factor.height} adjusted bar(s) have a missing or non-positive factor, e.g. {example}; "
            "re-run the ingest so the adjust stage recomputes them"
        )
    if bars.select(pl.struct("symbol", "date").is_duplicated().any()).item():
        raise QlibExportError("the adjusted store holds more than one bar for a (symbol, date)")


def _with_slots(bars: pl.DataFrame, sessions: pl.Series, calendar_name: str) -> pl.DataFrame:
    """``bars`` with ``_slot`` (index of the date in ``sessions``) and the derived fields, sorted."""
    slots = pl.DataFrame(
        {"date": sessions, "_slot": pl.int_range(sessions.len(), dtype=pl.Int64, eager=True)}
    )
    joined = bars.join(slots, on="date", how="left")
    off = joined.filter(pl.col("_slot").is_null())
    if not off.is_empty():
        example = off.select("symbol", "date").head(3).rows()
        raise QlibExportError(
            f"{off.height} adjusted bar(s) fall on days that are not {calendar_name} sessions, e.g. {example}"
        )
    return joined.sort("symbol", "date").with_columns(
        vwap=(pl.col("high") + pl.col("low") + pl.col("close")) / 3.0,
        change=(pl.col("close") / pl.col("close").shift(1) - 1.0).over("symbol"),
    )


def _encode_symbols(slotted: pl.DataFrame) -> Iterator[tuple[str, Mapping[str, bytes]]]:
    """Per symbol: ``{relative path: file bytes}`` of its feature files."""
    for (symbol,), part in slotted.partition_by("symbol", as_dict=True, maintain_order=True).items():
        assert isinstance(symbol, str)
        slots = part.get_column("_slot").to_numpy().astype(np.int64)
        values = part.select(FIELDS).to_numpy().astype(np.float64)
        first, dense = dense_values(slots, values)
        folder = feature_folder(symbol)
        yield (
            symbol,
            {
                f"features/{folder}/{name}.{FREQ}.bin": encode_feature(first, dense[i])
                for i, name in enumerate(FIELDS)
            },
        )
