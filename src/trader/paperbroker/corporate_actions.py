"""``GET /v1/corporate-actions``: the store's splits and cash dividends in Alpaca's shape.

One stored action row (``symbol, ex_date, split_ratio, cash_dividend``) becomes up to two Alpaca
actions: a ``forward_split`` (ratio > 1) or ``reverse_split`` (ratio < 1) with integer
``new_rate``/``old_rate`` when the ratio is a simple fraction (2.0 -> 2/1, 0.1 -> 1/10), and a
``cash_dividend`` with ``rate`` = the dividend per share. This is the exact inverse of
:func:`trader.data.sources.alpaca_source.corporate_actions_to_frame` (ratio = new/old, merged per
symbol and ex-date), so an ingest through :class:`AlpacaSource` preserves every action.

The store has no process, record or payable dates and no CUSIPs: ``process_date`` is the ex-date
(``start``/``end`` filter on it, as on Alpaca, default today), ``cusip`` is ``""``, dividends are
neither ``special`` nor ``foreign``. ``id`` is a UUID derived from the type, symbol and ex-date, stable
across restarts. Results are sorted by process date (then symbol, then type); ``limit`` (1-1000,
default 100) counts actions across all types.
"""

from __future__ import annotations

import uuid
from datetime import date
from fractions import Fraction
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from trader.paperbroker.clock import SimClock
from trader.paperbroker.errors import invalid
from trader.paperbroker.market import MarketData
from trader.paperbroker.params import (
    MARKET_TZ,
    Sort,
    decode_token,
    encode_token,
    parse_date,
    parse_list,
    parse_sort,
)

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
FORWARD_SPLITS = "forward_splits"
REVERSE_SPLITS = "reverse_splits"
CASH_DIVIDENDS = "cash_dividends"
#: Type names of the ``types`` filter, and the response key each one fills.
TYPES = {"forward_split": FORWARD_SPLITS, "reverse_split": REVERSE_SPLITS, "cash_dividend": CASH_DIVIDENDS}
#: Types Alpaca knows that the store never holds: accepted in ``types``, never returned.
OTHER_TYPES = {
    "unit_split",
    "stock_dividend",
    "spin_off",
    "cash_merger",
    "stock_merger",
    "stock_and_cash_merger",
    "redemption",
    "name_change",
    "worthless_removal",
    "rights_distribution",
    "partial_call",
    "reorganization",
}
_ID_NAMESPACE = uuid.UUID("6f1c1f2e-2f4b-4c43-9a52-6d0f7f1d5a10")

router = APIRouter()
Text = Annotated[str | None, Query()]


def split_rates(ratio: float) -> tuple[float, float]:
    """``(new_rate, old_rate)`` with ``new_rate / old_rate == ratio`` exactly (in floating point).

    Simple fractions become whole numbers (2.0 -> (2, 1), 0.1 -> (1, 10), 1.5 -> (3, 2)); anything
    else is ``(ratio, 1)``.
    """
    fraction = Fraction(ratio).limit_denominator(10_000)
    new, old = float(fraction.numerator), float(fraction.denominator)
    if new / old == ratio:
        return new, old
    return ratio, 1.0


def _action_id(kind: str, symbol: str, ex_date: date) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{kind}|{symbol}|{ex_date.isoformat()}"))


def actions_json(row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The Alpaca actions (response key, object) for one stored action row."""
    symbol = str(row["symbol"])
    ex_date: date = row["ex_date"]
    ratio = 1.0 if row["split_ratio"] is None else float(row["split_ratio"])
    dividend = 0.0 if row["cash_dividend"] is None else float(row["cash_dividend"])
    day = ex_date.isoformat()
    found: list[tuple[str, dict[str, Any]]] = []
    if ratio != 1.0:
        new_rate, old_rate = split_rates(ratio)
        if ratio > 1.0:
            found.append(
                (
                    FORWARD_SPLITS,
                    {
                        "id": _action_id("forward_split", symbol, ex_date),
                        "symbol": symbol,
                        "cusip": "",
                        "new_rate": new_rate,
                        "old_rate": old_rate,
                        "process_date": day,
                        "ex_date": day,
                    },
                )
            )
        else:
            found.append(
                (
                    REVERSE_SPLITS,
                    {
                        "id": _action_id("reverse_split", symbol, ex_date),
                        "symbol": symbol,
                        "old_cusip": "",
                        "new_cusip": "",
                        "new_rate": new_rate,
                        "old_rate": old_rate,
                        "process_date": day,
                        "ex_date": day,
                    },
                )
            )
    if dividend != 0.0:
        found.append(
            (
                CASH_DIVIDENDS,
                {
                    "id": _action_id("cash_dividend", symbol, ex_date),
                    "symbol": symbol,
                    "cusip": "",
                    "rate": dividend,
                    "special": False,
                    "foreign": False,
                    "process_date": day,
                    "ex_date": day,
                },
            )
        )
    return found


@router.get("/v1/corporate-actions")
def corporate_actions(
    request: Request,
    symbols: Text = None,
    cusips: Text = None,
    types: Text = None,
    region: Text = None,
    start: Text = None,
    end: Text = None,
    ids: Text = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    page_token: Text = None,
    sort: Text = None,
) -> dict[str, Any]:
    """``{"corporate_actions": {"forward_splits": [...], ...}, "next_page_token": str | null}``."""
    market = request.app.state.market
    assert isinstance(market, MarketData)
    order = parse_sort(sort)
    wanted_ids = set(parse_list(ids))
    if wanted_ids and any(value for value in (symbols, cusips, types, start, end)):
        raise invalid("ids cannot be combined with symbols, cusips, types, start or end")
    kinds = {name.lower() for name in parse_list(types)}
    unknown = sorted(kinds - set(TYPES) - OTHER_TYPES)
    if unknown:
        raise invalid(f"invalid types: '{unknown[0]}'")
    keys = {TYPES[kind] for kind in kinds if kind in TYPES} if kinds else set(TYPES.values())
    clock = request.app.state.clock
    assert isinstance(clock, SimClock)
    today = clock.now().astimezone(MARKET_TZ).date()  # the broker's today, simulated or not
    first = parse_date(start, "start") or today
    last = parse_date(end, "end") or today
    if last < first:
        raise invalid("end should not be before start")
    after = decode_token(page_token, 4)
    wanted_symbols = parse_list(symbols, upper=True)
    no_cusip_match = bool(parse_list(cusips))  # the store has no CUSIPs: a CUSIP filter matches nothing

    items: list[tuple[list[str], str, dict[str, Any]]] = []
    if not no_cusip_match:
        rows = market.actions(wanted_symbols or None).to_dicts()
        for row in rows:
            for key, action in actions_json(row):
                if wanted_ids:
                    if action["id"] not in wanted_ids:
                        continue
                elif key not in keys or not first.isoformat() <= action["process_date"] <= last.isoformat():
                    continue
                sort_key = [action["process_date"], action["symbol"], key, action["id"]]
                items.append((sort_key, key, action))
    descending = order is Sort.DESC
    items.sort(key=lambda item: item[0], reverse=descending)
    if after is not None:
        items = [item for item in items if (item[0] < after if descending else item[0] > after)]
    page = items[:limit]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for _, key, action in page:
        grouped.setdefault(key, []).append(action)
    token = encode_token(page[-1][0]) if len(items) > limit else None
    return {"corporate_actions": grouped, "next_page_token": token}
