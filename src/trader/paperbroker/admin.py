"""Admin endpoints of the paper broker (same key pair; never subject to fault injection).

- ``GET /admin/faults`` / ``PUT /admin/faults`` (JSON with any :class:`FaultSettings` fields) — read or
  change fault injection at run time; the answer includes how many faults were injected so far.
- ``GET /admin/clock`` / ``POST /admin/clock`` (``{"at": RFC-3339, "frozen": bool}`` or
  ``{"advance_seconds": N}`` or ``{"real_time": true}``) — read or move the simulated clock; open
  orders are matched up to the new instant before the answer.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from trader.paperbroker.clock import SimClock
from trader.paperbroker.engine import Engine
from trader.paperbroker.errors import invalid
from trader.paperbroker.faults import FaultInjector
from trader.paperbroker.serialize import iso
from trader.paperbroker.trading import json_body

router = APIRouter(prefix="/admin")
#: The clock stays this many days before the calendar's last session (``MarketHours.next_session``
#: looks up to two weeks ahead).
_LOOKAHEAD_DAYS = 15


def _faults(request: Request) -> FaultInjector:
    faults: FaultInjector = request.app.state.faults
    return faults


def _faults_json(faults: FaultInjector) -> dict[str, Any]:
    return {"settings": vars(faults.settings) | {}, "injected": dict(faults.injected)}


@router.get("/faults")
def get_faults(request: Request) -> dict[str, Any]:
    return _faults_json(_faults(request))


@router.put("/faults")
async def put_faults(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid('send a JSON object of fault settings, e.g. {"error_rate": 0.2}')
    faults = _faults(request)
    try:
        faults.update(**body)
    except (TypeError, ValueError) as error:
        raise invalid(str(error)) from None
    return _faults_json(faults)


def _clock_json(clock: SimClock) -> dict[str, Any]:
    return {"now": iso(clock.now()), "simulated": clock.simulated, "frozen": clock.frozen}


@router.get("/clock")
def get_clock(request: Request) -> dict[str, Any]:
    clock: SimClock = request.app.state.clock
    return _clock_json(clock)


@router.post("/clock")
async def set_clock(request: Request) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise invalid('send {"at": "2024-03-05T15:00:00Z"}, {"advance_seconds": 60} or {"real_time": true}')
    clock: SimClock = request.app.state.clock
    engine: Engine = request.app.state.engine
    if body.get("real_time") is True:
        clock.use_real_time()
    elif "advance_seconds" in body:
        seconds = body["advance_seconds"]
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise invalid("invalid advance_seconds: must be a number ≥ 0")
        if not clock.simulated:
            raise invalid('the clock runs on real time; set it first with {"at": ...}')
        last = _clock_range(engine)[1]
        if seconds > (last - clock.now()).total_seconds():
            raise invalid(f"invalid advance_seconds: the clock must stay before {iso(last)}")
        clock.advance(float(seconds))
    elif "at" in body:
        frozen = body.get("frozen")
        if frozen is not None and not isinstance(frozen, bool):
            raise invalid("invalid frozen: must be true or false")
        moment = _instant(body["at"])
        first, last = _clock_range(engine)
        if not first <= moment <= last:
            raise invalid(f"invalid at: '{body['at']}' must be between {iso(first)} and {iso(last)}")
        clock.set(moment, frozen=frozen)
    else:
        raise invalid('send one of "at", "advance_seconds" or "real_time"')
    await run_in_threadpool(engine.tick)
    return _clock_json(clock)


def _clock_range(engine: Engine) -> tuple[datetime, datetime]:
    """Instants the simulated clock may show: within the exchange calendar, leaving room for the
    two weeks of sessions the broker looks ahead (the next open, day-order expiry)."""
    sessions = engine.hours.calendar.all_sessions()
    first: date = sessions[0]
    last: date = sessions[-1]
    start = datetime.combine(first, time.min, tzinfo=UTC)
    return start, datetime.combine(last - timedelta(days=_LOOKAHEAD_DAYS), time.min, tzinfo=UTC)


def _instant(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"invalid at: '{value}' (use RFC-3339, e.g. 2024-03-05T15:00:00Z)") from None
    if moment.tzinfo is None:
        raise invalid(f"invalid at: '{value}' needs a timezone (e.g. Z)")
    return moment
