"""Trading API v2 routes: account, clock, calendar, assets, orders, positions, account activities."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from trader.paperbroker.engine import Engine
from trader.paperbroker.errors import AlpacaError, invalid
from trader.paperbroker.order_requests import decimal_field, parse_new_order, parse_replacement
from trader.paperbroker.params import parse_list, parse_time
from trader.paperbroker.prices import asset_key
from trader.paperbroker.serialize import (
    activity_json,
    asset_json,
    calendar_json,
    iso,
    iso_et,
    money,
    order_json,
    position_json,
)
from trader.paperbroker.state import TERMINAL, SimOrder

router = APIRouter()

#: ``GET /v2/orders``: default and largest page.
DEFAULT_ORDER_LIMIT = 50
MAX_ORDER_LIMIT = 500
MAX_ACTIVITY_PAGE = 100
#: ``/v2/calendar`` serves 1970 to 2029, as Alpaca (the exchange calendar itself starts in 1990).
_CALENDAR_FIRST, _CALENDAR_LAST = date(1970, 1, 1), date(2029, 12, 31)
#: US equities settle one session after the trade from this trade date on, two before (T+1 / T+2).
T_PLUS_ONE_FROM = date(2024, 5, 28)
#: Read this far around a calendar query: more than two sessions, whatever the holidays.
_SETTLEMENT_SPAN = timedelta(days=10)
#: ``category`` of ``/v2/account/activities``; the broker records fills only, which are trades.
ACTIVITY_CATEGORIES = ("trade_activity", "non_trade_activity")


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def json_body(request: Request) -> Any:
    """The decoded JSON body, or Alpaca's 400 ``request body format is invalid``."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        raise AlpacaError(400, "request body format is invalid", 40010000) from None


def parse_bool(value: str | None, name: str) -> bool:
    """``true``/``false`` in any capitalisation (the SDK sends Python's ``True``)."""
    if value is None or value == "":
        return False
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise invalid(f"invalid {name}: '{value}' (use true or false)")
    return lowered == "true"


# --- account, clock, calendar, assets -------------------------------------------------------------
@router.get("/v2/account")
def get_account(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    values = engine.account_values()
    account = engine.account
    return {
        "id": account.id,
        "account_number": account.account_number,
        "status": "ACTIVE",
        "crypto_status": "INACTIVE",
        "currency": "USD",
        "cash": money(values["cash"]),
        "portfolio_value": money(values["equity"]),
        "equity": money(values["equity"]),
        "last_equity": money(values["last_equity"]),
        "long_market_value": money(values["long_market_value"]),
        "short_market_value": money(values["short_market_value"]),
        "position_market_value": money(values["long_market_value"] - values["short_market_value"]),
        "buying_power": money(values["buying_power"]),
        "regt_buying_power": money(values["buying_power"]),
        "non_marginable_buying_power": money(values["non_marginable_buying_power"]),
        "options_buying_power": money(values["non_marginable_buying_power"]),
        "initial_margin": money(values["initial_margin"]),
        "maintenance_margin": money(values["maintenance_margin"]),
        "last_maintenance_margin": money(values["maintenance_margin"]),
        "sma": money(Decimal(0)),
        "multiplier": "2",
        "shorting_enabled": True,
        "trading_blocked": False,
        "transfers_blocked": False,
        "account_blocked": False,
        "trade_suspended_by_user": False,
        "created_at": iso(account.created_at),
        "balance_asof": engine.now().date().isoformat(),
        "accrued_fees": "0",
        "pending_transfer_in": "0",
        "pending_transfer_out": "0",
        "options_approved_level": 0,
        "options_trading_level": 0,
    }


@router.get("/v2/clock")
def get_clock(request: Request) -> dict[str, Any]:
    engine = engine_of(request)
    now = engine.now()
    return {
        "timestamp": iso_et(now),
        "is_open": engine.hours.is_open(now),
        "next_open": iso_et(engine.hours.next_open(now)),
        "next_close": iso_et(engine.hours.next_close(now)),
    }


@router.get("/v2/calendar")
def get_calendar(
    request: Request, start: str | None = None, end: str | None = None, date_type: str | None = None
) -> list[dict[str, str]]:
    """Sessions whose trading date (``date_type=SETTLEMENT``: settlement date) lies from ``start`` to
    ``end``, within 1970-2029; a bad parameter is a 400, as the spec lists for this endpoint."""
    first, last = _calendar_day(start, "start"), _calendar_day(end, "end")
    if first is not None and last is not None and first > last:
        raise _calendar_error("invalid start: after end")
    by_settlement = _by_settlement(date_type)
    first, last = max(first or _CALENDAR_FIRST, _CALENDAR_FIRST), min(last or _CALENDAR_LAST, _CALENDAR_LAST)
    hours = engine_of(request).hours
    trading_days = hours.calendar.sessions(first - _SETTLEMENT_SPAN, last + _SETTLEMENT_SPAN).to_list()
    days = []
    for index, day in enumerate(trading_days):
        later = index + (1 if day >= T_PLUS_ONE_FROM else 2)
        if later >= len(trading_days):
            break
        settlement = trading_days[later]
        if first <= (settlement if by_settlement else day) <= last:
            session = hours.session(day)
            assert session is not None
            days.append(calendar_json(day, session.open, session.close, settlement))
    return days


def _calendar_error(message: str) -> AlpacaError:
    return AlpacaError(400, message, 40010000)


def _calendar_day(value: str | None, name: str) -> date | None:
    """``YYYY-MM-DD``, or the date of an RFC-3339 time (the spec types these as date-times)."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
    except ValueError:
        raise _calendar_error(f"invalid {name}: '{value}' (use YYYY-MM-DD)") from None


def _by_settlement(date_type: str | None) -> bool:
    """Whether ``date_type`` is ``SETTLEMENT`` (the default is ``TRADING``)."""
    kind = (date_type or "TRADING").upper()
    if kind not in ("TRADING", "SETTLEMENT"):
        raise _calendar_error(f"invalid date_type: '{date_type}' (use TRADING or SETTLEMENT)")
    return kind == "SETTLEMENT"


@router.get("/v2/assets")
def get_assets(
    request: Request, status: str | None = None, asset_class: str | None = None
) -> list[dict[str, Any]]:
    if asset_class not in (None, "", "us_equity"):
        return []
    if status not in (None, "", "active", "inactive"):
        raise invalid(f"invalid status: '{status}' (use active or inactive)")
    engine = engine_of(request)
    assets = engine.prices.assets(engine.now().date())
    chosen = [a for a in assets if not status or (status == "active") == a.active]
    return [asset_json(asset) for asset in chosen]


@router.get("/v2/assets/{symbol_or_id}")
def get_asset(request: Request, symbol_or_id: str) -> dict[str, Any]:
    engine = engine_of(request)
    asset = engine.prices.asset(asset_key(symbol_or_id), engine.now().date())
    if asset is None:
        raise AlpacaError(404, "asset not found", 40410000)
    return asset_json(asset)


# --- orders --------------------------------------------------------------------------------------
@router.post("/v2/orders")
async def post_order(request: Request) -> dict[str, Any]:
    order = parse_new_order(await json_body(request))
    result: dict[str, Any] = await run_in_threadpool(engine_of(request).submit, order)
    return result


@router.get("/v2/orders")
def list_orders(
    request: Request,
    status: str | None = None,
    limit: str | None = None,
    after: str | None = None,
    until: str | None = None,
    direction: str | None = None,
    nested: str | None = None,
    symbols: str | None = None,
    side: str | None = None,
    after_order_id: str | None = None,
    before_order_id: str | None = None,
) -> list[dict[str, Any]]:
    """Orders newest first (``direction=asc``: oldest first). ``after``/``until`` bound the submission
    time; ``after_order_id``/``before_order_id`` (exclusive) page by an order instead."""
    parse_bool(nested, "nested")
    if after_order_id and before_order_id:
        raise invalid("after_order_id and before_order_id are mutually exclusive")
    if (after_order_id or before_order_id) and (after or until):
        raise invalid("after_order_id/before_order_id cannot be combined with after/until")
    engine = engine_of(request)
    anchor = (
        engine.order(_order_id(after_order_id or before_order_id or ""))
        if (after_order_id or before_order_id)
        else None
    )
    wanted_status = (status or "open").lower()
    if wanted_status not in ("open", "closed", "all"):
        raise invalid(f"invalid status: '{status}' (use open, closed or all)")
    size = _int_param(limit, "limit", DEFAULT_ORDER_LIMIT, 1)
    descending = _direction(direction)
    since, before = parse_time(after, "after"), parse_time(until, "until")
    names = set(parse_list(symbols, upper=True))
    if side not in (None, "", "buy", "sell"):
        raise invalid(f"invalid side: '{side}' (use buy or sell)")

    def keep(order: SimOrder) -> bool:
        closed = order.status in TERMINAL
        submitted = order.submitted_at or order.created_at
        if anchor is not None:
            key, pivot = (submitted, order.id), (anchor.submitted_at or anchor.created_at, anchor.id)
            if (after_order_id and key <= pivot) or (before_order_id and key >= pivot):
                return False
        return (
            (wanted_status == "all" or closed == (wanted_status == "closed"))
            and (since is None or submitted > since)
            and (before is None or submitted < before)
            and (not names or order.symbol in names)
            and (not side or order.side == side)
        )

    chosen = sorted(
        (o for o in engine.all_orders() if keep(o)),
        key=lambda o: (o.submitted_at or o.created_at, o.id),
        reverse=descending,
    )
    return [order_json(order) for order in chosen[: min(size, MAX_ORDER_LIMIT)]]


@router.get("/v2/orders:by_client_order_id")
def get_by_client_order_id(request: Request, client_order_id: str) -> dict[str, Any]:
    return order_json(engine_of(request).order_by_client_id(client_order_id))


@router.get("/v2/orders/{order_id}")
def get_order(request: Request, order_id: str) -> dict[str, Any]:
    return order_json(engine_of(request).order(_order_id(order_id)))


@router.patch("/v2/orders/{order_id}")
async def patch_order(request: Request, order_id: str) -> dict[str, Any]:
    change = parse_replacement(await json_body(request))
    result: dict[str, Any] = await run_in_threadpool(engine_of(request).replace, _order_id(order_id), change)
    return result


@router.delete("/v2/orders/{order_id}", status_code=204)
def cancel_order(request: Request, order_id: str) -> Response:
    engine_of(request).cancel(_order_id(order_id))
    return Response(status_code=204)


@router.delete("/v2/orders")
def cancel_orders(request: Request) -> JSONResponse:
    return JSONResponse(engine_of(request).cancel_all(), status_code=207)


# --- positions -----------------------------------------------------------------------------------
@router.get("/v2/positions")
def list_positions(request: Request) -> list[dict[str, Any]]:
    return [position_json(view) for view in engine_of(request).position_rows()]


@router.get("/v2/positions/{symbol_or_id}")
def get_position(request: Request, symbol_or_id: str) -> dict[str, Any]:
    return position_json(engine_of(request).position(symbol_or_id))


@router.delete("/v2/positions/{symbol_or_id}")
def close_position(
    request: Request, symbol_or_id: str, qty: str | None = None, percentage: str | None = None
) -> dict[str, Any]:
    amount = decimal_field({"qty": qty}, "qty")
    share = decimal_field({"percentage": percentage}, "percentage")
    if amount is not None and share is not None:
        raise invalid("qty and percentage are mutually exclusive: send one of them")
    if share is not None and not 0 < share <= 100:
        raise invalid("invalid percentage: must be greater than 0 and at most 100")
    if amount is not None and amount <= 0:
        raise invalid("invalid qty: must be greater than 0")
    return engine_of(request).close_position(symbol_or_id, amount, share)


@router.delete("/v2/positions")
def close_positions(request: Request, cancel_orders: str | None = None) -> JSONResponse:
    results = engine_of(request).close_all(parse_bool(cancel_orders, "cancel_orders"))
    return JSONResponse(results, status_code=207)


# --- activities ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActivityQuery:
    """The query parameters of ``GET /v2/account/activities`` (any type or one type)."""

    date: str | None = None
    until: str | None = None
    after: str | None = None
    direction: str | None = None
    page_size: str | None = None
    page_token: str | None = None


@router.get("/v2/account/activities")
def activities(
    request: Request,
    query: Annotated[ActivityQuery, Depends()],
    activity_types: str | None = None,
    category: str | None = None,
) -> list[dict[str, Any]]:
    kinds = {kind.upper() for kind in parse_list(activity_types)}
    return _activities(request, _wants_fills(kinds, category), query)


@router.get("/v2/account/activities/{activity_type}")
def activities_of_type(
    request: Request, activity_type: str, query: Annotated[ActivityQuery, Depends()]
) -> list[dict[str, Any]]:
    return _activities(request, _wants_fills({activity_type.upper()}, None), query)


def _wants_fills(kinds: set[str], category: str | None) -> bool:
    """Whether ``activity_types`` (or else ``category``) lets fills through: the paper broker has no
    dividends, fees or transfers, so fills are the only activities it has."""
    if not category:
        return not kinds or "FILL" in kinds
    if kinds:
        raise invalid("category cannot be used with activity_types")
    if category not in ACTIVITY_CATEGORIES:
        raise invalid(f"invalid category: '{category}' (use {' or '.join(ACTIVITY_CATEGORIES)})")
    return category == "trade_activity"


def _activities(request: Request, fills_wanted: bool, query: ActivityQuery) -> list[dict[str, Any]]:
    if not fills_wanted:
        return []
    descending = _direction(query.direction)
    size = min(_int_param(query.page_size, "page_size", MAX_ACTIVITY_PAGE, 1), MAX_ACTIVITY_PAGE)
    day = parse_time(query.date, "date")  # YYYY-MM-DD or RFC-3339: either way, a UTC date
    on_day = None if day is None else day.date()
    since, before = parse_time(query.after, "after"), parse_time(query.until, "until")
    fills = [
        f
        for f in engine_of(request).all_fills()
        if (on_day is None or f.transaction_time.date() == on_day)
        and (since is None or f.transaction_time > since)
        and (before is None or f.transaction_time < before)
    ]
    fills.sort(key=lambda f: f.id, reverse=descending)
    if query.page_token:
        fills = [f for f in fills if (f.id < query.page_token if descending else f.id > query.page_token)]
    return [activity_json(fill) for fill in fills[:size]]


# --- helpers -------------------------------------------------------------------------------------
def _int_param(value: str | None, name: str, default: int, minimum: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise invalid(f"invalid {name}: '{value}' is not a whole number") from None
    if number < minimum:
        raise invalid(f"invalid {name}: must be at least {minimum}")
    return number


def _direction(value: str | None) -> bool:
    """True for descending (the default), False for ``asc``."""
    if value is None or value == "":
        return True
    if value.lower() not in ("asc", "desc"):
        raise invalid(f"invalid direction: '{value}' (use asc or desc)")
    return value.lower() == "desc"


def _order_id(value: str) -> str:
    """A syntactically valid order id, or Alpaca's 422 for a malformed one."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise AlpacaError(422, "order_id is missing", 40010001) from None
