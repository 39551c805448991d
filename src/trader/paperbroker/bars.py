"""``GET /v2/stocks/bars`` and ``GET /v2/stocks/{symbol}/bars``: daily stock bars, Alpaca-shaped.

- Only ``1Day``/``1D`` is served; any other valid timeframe is a 422 ``unsupported timeframe``.
- ``t`` is 00:00 New York time of the session in UTC (``2023-01-03T05:00:00Z``).
- ``v`` is the volume rounded to an integer. The store knows neither the trade count nor the VWAP:
  ``n`` is ``0`` (unknown) and ``vw`` is the typical price ``(h + l + c) / 3`` rounded to 6 decimals.
- ``limit`` (1-10000, default 1000) counts bars across all symbols; results are sorted by symbol,
  then time (``sort=desc`` reverses time within each symbol). ``next_page_token`` is an opaque token
  holding the last returned (symbol, date), or ``null`` on the last page.
- ``feed``, ``asof`` and ``currency`` are accepted and ignored (one feed, no renames, USD only).
- Nothing later than the broker's clock is served: ``start`` defaults to the start of the current
  (New York) day and ``end`` to now, as on Alpaca; a later ``end`` stops at now. The bar of a session
  still trading is partial, as Alpaca's is: its open, the high and low so far and the price now on the
  path the broker trades on (:func:`~trader.paperbroker.prices.bar_so_far`), the volume pro rata of
  the session passed; before the open it does not exist yet. Adjusted bars use only the corporate
  actions whose ex-date has come.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

import polars as pl
from fastapi import APIRouter, Depends, Query, Request

from trader.paperbroker.clock import MarketHours, Session, SimClock
from trader.paperbroker.errors import invalid
from trader.paperbroker.market import MarketData
from trader.paperbroker.params import (
    MARKET_TZ,
    Sort,
    bar_time,
    check_timeframe,
    decode_token,
    encode_token,
    first_session_on_or_after,
    last_session_on_or_before,
    parse_adjustment,
    parse_list,
    parse_sort,
    parse_time,
)
from trader.paperbroker.prices import DayBar, bar_so_far, session_fraction, to_price

MAX_LIMIT = 10_000
DEFAULT_LIMIT = 1000

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Text = Annotated[str | None, Query()]


@dataclass(frozen=True)
class Sources:
    """What the bars routes read: the market data, and the broker's clock and calendar (no bar is
    served before it exists)."""

    market: MarketData
    hours: MarketHours
    now: datetime


def _sources(request: Request) -> Sources:
    state = request.app.state
    assert isinstance(state.market, MarketData) and isinstance(state.clock, SimClock)
    return Sources(state.market, state.hours, state.clock.now())


def bar_json(row: dict[str, Any]) -> dict[str, Any]:
    """One bar row (``symbol, date, open, high, low, close, volume``) as Alpaca's bar object."""
    high, low, close = float(row["high"]), float(row["low"]), float(row["close"])
    stamp: date = row["date"]
    return {
        "t": bar_time(stamp).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "o": float(row["open"]),
        "h": high,
        "l": low,
        "c": close,
        "v": round(float(row["volume"])),
        "n": 0,
        "vw": round((high + low + close) / 3, 6),
    }


@dataclass(frozen=True)
class BarsQuery:
    """The query parameters both bars routes take (``feed``, ``asof``, ``currency`` are accepted and
    change nothing: there is one feed, no symbol history and only USD)."""

    timeframe: Annotated[str, Query()]
    start: Text = None
    end: Text = None
    limit: Limit = DEFAULT_LIMIT
    page_token: Text = None
    sort: Text = None
    adjustment: Text = None
    feed: Text = None
    asof: Text = None
    currency: Text = None


def _page(
    sources: Sources, symbols: list[str], query: BarsQuery
) -> tuple[dict[str, list[dict[str, Any]]], str | None]:
    """One page of bars per symbol and the next page token."""
    check_timeframe(query.timeframe)
    order = parse_sort(query.sort)
    adjust_for = parse_adjustment(query.adjustment)
    begin = parse_time(query.start, "start")
    finish = parse_time(query.end, "end")
    if begin is not None and finish is not None and finish < begin:
        raise invalid("end should not be before start")
    after = decode_token(query.page_token, 2)
    if not symbols:
        raise invalid("missing required parameter: symbols")

    now = sources.now
    today = now.astimezone(MARKET_TZ).date()
    first = today if begin is None else first_session_on_or_after(begin)
    last = last_session_on_or_before(now if finish is None else min(finish, now))
    frame = sources.market.bars(symbols, first, last, adjust_for, today)
    frame = _as_of(frame, sources.hours.session(today), now)
    descending = order is Sort.DESC
    frame = frame.sort(["symbol", "date"], descending=[False, descending])
    if after is not None:
        symbol, day_text = after
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise invalid("invalid page_token") from None
        later = pl.col("date") < day if descending else pl.col("date") > day
        frame = frame.filter((pl.col("symbol") > symbol) | ((pl.col("symbol") == symbol) & later))
    chunk = frame.head(query.limit + 1)
    rows = chunk.head(query.limit).to_dicts()
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["symbol"]), []).append(bar_json(row))
    token = None
    if chunk.height > query.limit and rows:
        final = rows[-1]
        token = encode_token([str(final["symbol"]), final["date"].isoformat()])
    return grouped, token


def _as_of(frame: pl.DataFrame, session: Session | None, now: datetime) -> pl.DataFrame:
    """``frame`` as it stands at ``now`` when ``session`` (today's, if any) is not over: its bars
    dropped before the open, made partial during it (see the module doc)."""
    if session is None or now >= session.close:
        return frame
    today = pl.col("date") == session.day
    if now < session.open:
        return frame.filter(~today)
    fraction = session_fraction(session, now)
    partial = [_so_far(row, fraction) for row in frame.filter(today).iter_rows(named=True)]
    return pl.concat([frame.filter(~today), pl.DataFrame(partial, schema=frame.schema)])


def _so_far(row: dict[str, Any], fraction: float) -> dict[str, Any]:
    prices = (to_price(row[name]) for name in ("open", "high", "low", "close"))
    bar = bar_so_far(DayBar(row["date"], *prices), fraction)
    return row | {
        "open": float(bar.open),
        "high": float(bar.high),
        "low": float(bar.low),
        "close": float(bar.close),
        "volume": row["volume"] * fraction,
    }


@router.get("/v2/stocks/bars")
def stock_bars(
    request: Request, symbols: Annotated[str, Query()], query: Annotated[BarsQuery, Depends()]
) -> dict[str, Any]:
    """Bars of several symbols: ``{"bars": {"SYM": [bar, ...]}, "next_page_token": str | null}``."""
    grouped, token = _page(_sources(request), parse_list(symbols, upper=True), query)
    return {"bars": grouped, "next_page_token": token}


@router.get("/v2/stocks/{symbol}/bars")
def stock_bars_single(
    request: Request, symbol: str, query: Annotated[BarsQuery, Depends()]
) -> dict[str, Any]:
    """Bars of one symbol: ``{"bars": [bar, ...], "symbol": "SYM", "next_page_token": str | null}``."""
    name = symbol.strip().upper()
    grouped, token = _page(_sources(request), [name], query)
    return {"bars": grouped.get(name, []), "symbol": name, "next_page_token": token}
