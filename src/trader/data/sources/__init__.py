"""Where bars come from. Every source implements :class:`BarSource`; the pipeline does not care which."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol, runtime_checkable

from trader.data.bars import BarBatch


@dataclass(frozen=True)
class SourceHealth:
    """Result of a source's health check: is it usable now, and why not."""

    source: str
    ok: bool
    detail: str = ""
    latency_ms: float | None = None


class SourceError(Exception):
    """A source could not deliver (unreachable, refused, unreadable); the failover tries the next one."""


@runtime_checkable
class BarSource(Protocol):
    """A provider of raw daily bars and the corporate actions it knows about."""

    @property
    def name(self) -> str:
        """Short name recorded in the ``source`` column of every row it supplies (``csv``, ``alpaca``...)."""
        ...

    def health(self) -> SourceHealth:
        """Cheap check that the source can be used right now."""
        ...

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        """Raw (unadjusted) daily bars of ``symbols`` (``None``: all it has) from ``start`` to ``end``.

        The bars carry :data:`trader.data.bars.BAR_SCHEMA`'s columns; raises :class:`SourceError` when
        the source cannot deliver.
        """
        ...
