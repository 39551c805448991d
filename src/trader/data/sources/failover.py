"""Primary → fallback failover across bar sources, recording which source supplied each row.

:class:`FailoverSource` is itself a :class:`~trader.data.sources.BarSource`. On each fetch it walks its
sources in order: a source whose health check fails is skipped; a source whose fetch raises
:class:`~trader.data.sources.SourceError` or delivers nothing is passed over; and when a source
delivers only some of the requested symbols, the remaining ones are asked of the next sources. Every
row carries the name of the source that supplied it in its ``source`` column, and
:attr:`FailoverSource.last_report` says what happened to each source, for the pipeline's log.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import NamedTuple

import polars as pl

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, LISTING_SCHEMA, BarBatch, empty
from trader.data.sources import BarSource, SourceError, SourceHealth


class SourceAttempt(NamedTuple):
    """What happened to one source during a fetch: its health and the outcome, in words."""

    source: str
    health: SourceHealth
    outcome: str


class FailoverSource:
    """Try ``sources`` in order; the first healthy one that delivers wins, per symbol."""

    def __init__(self, sources: Sequence[BarSource]) -> None:
        if not sources:
            raise ValueError("FailoverSource needs at least one source")
        self.sources = list(sources)
        #: One entry per source consulted by the last fetch (sources after the winner are not listed).
        self.last_report: list[SourceAttempt] = []

    @property
    def name(self) -> str:
        return "failover"

    def health(self) -> SourceHealth:
        """OK when any source is healthy; the detail lists every source's verdict."""
        checks = [_check(source) for source in self.sources]
        latency = sum(check.latency_ms or 0.0 for check in checks)
        detail = "; ".join(f"{c.source}: {'ok' if c.ok else c.detail or 'unhealthy'}" for c in checks)
        return SourceHealth(self.name, any(check.ok for check in checks), detail, latency)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        """Bars from the first healthy source that delivers; missing symbols from the next ones.

        Raises :class:`SourceError` listing every source's reason when none delivers anything.
        """
        report: list[SourceAttempt] = []
        self.last_report = report
        missing: list[str] | None = None if symbols is None else _unique_upper(symbols)
        batches: list[BarBatch] = []
        for source in self.sources:
            health = _check(source)
            if not health.ok:
                report.append(SourceAttempt(source.name, health, f"skipped: {health.detail or 'unhealthy'}"))
                continue
            try:
                batch = source.fetch(missing, start, end)
            except SourceError as exc:
                report.append(SourceAttempt(source.name, health, f"failed: {exc}"))
                continue
            delivered = _mark_source(batch, source.name)
            if delivered.bars.is_empty():
                report.append(SourceAttempt(source.name, health, "failed: no bars for the requested symbols"))
                continue
            batches.append(delivered)
            supplied = set(delivered.bars["symbol"].drop_nulls().unique().to_list())
            outcome = f"supplied {delivered.bars.height} rows for {len(supplied)} symbols"
            if missing is None:
                report.append(SourceAttempt(source.name, health, outcome))
                break
            missing = [symbol for symbol in missing if symbol not in supplied]
            if missing:
                outcome += f"; missing {_preview(missing)}, asking the next source"
            report.append(SourceAttempt(source.name, health, outcome))
            if not missing:
                break
        if not batches:
            reasons = "; ".join(f"{attempt.source}: {attempt.outcome}" for attempt in report)
            raise SourceError(f"every source failed: {reasons}")
        return _combine(batches)


def _check(source: BarSource) -> SourceHealth:
    """A source's health; a health check that raises counts as unhealthy rather than crashing the fetch."""
    try:
        return source.health()
    except Exception as exc:  # a broken check must not hide the healthy sources after it
        return SourceHealth(source.name, False, f"health check raised {type(exc).__name__}: {exc}")


def _unique_upper(symbols: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(symbol.strip().upper() for symbol in symbols))


def _preview(symbols: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(symbols[:limit])
    return shown + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


def _with_source(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """Fill the ``source`` column with ``name`` where the inner source did not name one itself."""
    if "source" in frame.columns:
        return frame.with_columns(pl.col("source").cast(pl.String).fill_null(name))
    return frame.with_columns(pl.lit(name, pl.String).alias("source"))


def _mark_source(batch: BarBatch, name: str) -> BarBatch:
    return BarBatch(
        bars=_with_source(batch.bars, name),
        actions=_with_source(batch.actions, name),
        listings=batch.listings,
    )


def _combine(batches: list[BarBatch]) -> BarBatch:
    if len(batches) == 1:
        return batches[0]
    return BarBatch(
        bars=_concat([b.bars for b in batches], {**BAR_SCHEMA, "source": pl.String()}),
        actions=_concat([b.actions for b in batches], ACTION_SCHEMA),
        listings=_concat([b.listings for b in batches], LISTING_SCHEMA),
    )


def _concat(frames: list[pl.DataFrame], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Stack frames whose extra columns may differ (e.g. intraday timestamps from one source only)."""
    present = [frame for frame in frames if not frame.is_empty()]
    return pl.concat(present, how="diagonal_relaxed") if present else empty(schema)
