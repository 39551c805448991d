"""``trader serve signal``: the signal service as a long-running process.

Each tick (every ``poll_seconds``, or at once when PostgreSQL notifies a promotion on the channel
``model_registry``):

1. asks the registry for the production model (:meth:`SignalService.model` reloads it when a
   promotion or rollback changed it — within one tick, i.e. seconds);
2. works out the next trading session after the last closed one and, once the bars of that closed
   session are in the store, computes and publishes its signal (recorded once per day and model: a
   new production model computes the day again, the old one's run stays recorded).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.paths import DataPaths
from trader.data.store import AdjustedStore
from trader.research.registry import NOTIFY_CHANNEL
from trader.signal.service import NoProductionModelError, SignalOutcome, SignalService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TickResult:
    """What one tick did: the model version in use, the day it looked at, and the run if one was made."""

    model_version: str | None
    trading_date: date
    outcome: SignalOutcome | None
    waiting_for: date | None = None
    reloaded: bool = False


class SignalLoop:
    """Runs :class:`SignalService` on a schedule (see the module docstring)."""

    def __init__(
        self,
        service: SignalService,
        paths: DataPaths,
        *,
        calendar: TradingCalendar | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._service = service
        self._paths = paths
        self._calendar = calendar or trading_calendar()
        self._clock = clock
        self._version: str | None = None

    def next_trading_date(self) -> date:
        """The session after the last closed one: the day whose orders the next signal is for."""
        return self._calendar.next_session(self._calendar.last_closed_session(self._clock()))

    def tick(self) -> TickResult:
        day = self.next_trading_date()
        try:
            loaded = self._service.model()
        except NoProductionModelError as exc:
            log.warning("%s", exc)
            return TickResult(None, day, None)
        reloaded = self._version is not None and loaded.version != self._version
        if reloaded:
            log.warning("production model changed: %s -> %s", self._version, loaded.version)
        self._version = loaded.version
        as_of = self._service.as_of(day)
        if AdjustedStore(self._paths).read(start=as_of, end=as_of).is_empty():
            return TickResult(loaded.version, day, None, waiting_for=as_of, reloaded=reloaded)
        return TickResult(loaded.version, day, self._service.run(day), reloaded=reloaded)

    def run(self, stop: threading.Event, wait: Callable[[float], None], poll_seconds: float) -> None:
        """Tick until ``stop`` is set; ``wait`` sleeps up to ``poll_seconds`` (or less when notified)."""
        while not stop.is_set():
            try:
                result = self.tick()
                if result.outcome is not None and result.outcome.computed:
                    log.warning("signal for %s computed (run %s)", result.trading_date, result.outcome.run_id)
            except Exception:  # a bad tick must not stop the service; the next one tries again
                log.exception("signal tick failed")
            wait(poll_seconds)


def notification_waiter(engine: Engine) -> Callable[[float], None]:
    """A wait that returns early on ``NOTIFY model_registry`` (PostgreSQL), else a plain sleep."""
    if engine.dialect.name != "postgresql":
        return time.sleep
    import psycopg

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    connection: Any = psycopg.connect(url, autocommit=True)
    connection.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(seconds: float) -> None:
        for _ in connection.notifies(timeout=seconds, stop_after=1):
            return

    return wait
