"""Simulated trade prices from daily bars, and the assets the broker knows.

Within a session the price walks a fixed path through the day's *raw* bar: open → low → high → close
on an up day, open → high → low → close on a down day, straight lines between, at 0, 1/3, 2/3 and the
whole of the session. So a limit or stop order crosses exactly when the day's range says it could,
and every price is reproducible. Outside a session the price is the last close. A symbol without a
bar for a session (halted that day) does not trade; when the clock is past the newest bar in the data
store (real time on old data), every symbol trades flat at its newest close.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import polars as pl

from trader.paperbroker.clock import MarketHours, Session
from trader.paperbroker.market import MarketData

#: Prices are quoted to 1/100 of a cent, like Alpaca's fill prices.
PRICE_STEP = Decimal("0.0001")
_LOOKBACK = timedelta(days=14)
_CACHE_DAYS = 8
#: Cached bars are re-read after this many seconds, so bars ingested while the broker runs appear.
CACHE_SECONDS = 60.0
_ASSET_NAMESPACE = uuid.UUID("6f1c3a3e-2b7d-4c1a-9a57-2f0c8f6a6b10")


def asset_id(symbol: str) -> str:
    """A stable asset UUID for ``symbol`` (the same on every broker start)."""
    return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))


def is_asset_id(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def asset_key(symbol_or_id: str) -> str:
    """How assets are looked up: a symbol in capitals, an asset id in its canonical lower-case form
    (Alpaca takes either, in any case, wherever a symbol goes)."""
    text = symbol_or_id.strip()
    return str(uuid.UUID(text)) if is_asset_id(text) else text.upper()


def to_price(value: float) -> Decimal:
    return Decimal(repr(value)).quantize(PRICE_STEP, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class DayBar:
    """One raw daily bar."""

    day: date
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal

    def knots(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """Prices at 0, 1/3, 2/3 and 1 of the session."""
        if self.close >= self.open:
            return (self.open, self.low, self.high, self.close)
        return (self.open, self.high, self.low, self.close)


def session_fraction(session: Session, moment: datetime) -> float:
    """How much of ``session`` has passed at ``moment`` (0 before the open, 1 after the close)."""
    span = (session.close - session.open).total_seconds()
    return min(max((moment - session.open).total_seconds() / span, 0.0), 1.0)


def path_price(bar: DayBar, fraction: float) -> Decimal:
    """The price at ``fraction`` (0..1) of the session on ``bar``'s path."""
    knots = bar.knots()
    scaled = fraction * 3
    leg = min(int(scaled), 2)
    weight = Decimal(repr(scaled - leg))
    start, end = knots[leg], knots[leg + 1]
    return (start + (end - start) * weight).quantize(PRICE_STEP, rounding=ROUND_HALF_UP)


def path_range(bar: DayBar, first: float, last: float) -> tuple[Decimal, Decimal]:
    """Lowest and highest price on the path between fractions ``first`` and ``last`` (inclusive)."""
    points = [path_price(bar, first), path_price(bar, last)]
    knots = bar.knots()
    points += [knots[i] for i in (1, 2) if first < i / 3 < last]
    return min(points), max(points)


def bar_so_far(bar: DayBar, fraction: float) -> DayBar:
    """What ``bar`` looks like once ``fraction`` of its session has traded: its open, the path's
    highest and lowest price so far, and the price now as its close."""
    low, high = path_range(bar, 0.0, fraction)
    return DayBar(bar.day, bar.open, high, low, path_price(bar, fraction))


@dataclass(frozen=True)
class DayIndex:
    """One day's bars and each symbol's previous close, for constant-time lookups while matching."""

    bars: dict[str, DayBar]
    closes: dict[str, Decimal]


@dataclass(frozen=True)
class Asset:
    """What ``/v2/assets`` says about a symbol."""

    symbol: str
    active: bool

    @property
    def id(self) -> str:
        return asset_id(self.symbol)


class PriceBook:
    """Bars by session day, read from :class:`MarketData` and kept for the last few days used."""

    def __init__(self, market: MarketData, hours: MarketHours) -> None:
        self.market = market
        self.hours = hours
        self._lock = threading.Lock()
        self._indexes: OrderedDict[date, DayIndex] = OrderedDict()
        self._assets: dict[date, dict[str, Asset]] = {}
        self._symbols: pl.DataFrame | None = None
        self._read_at = time.monotonic()

    # --- the data store -------------------------------------------------------------------------
    def _window(self, day: date) -> pl.DataFrame:
        """Raw bars of every symbol from two weeks before ``day`` to ``day`` (read for :meth:`_index`,
        which is what is cached)."""
        return self.market.raw_bars(None, day - _LOOKBACK, day)

    def symbol_spans(self) -> pl.DataFrame:
        """``symbol, first, last`` dates of every symbol with bars."""
        self._expire()
        with self._lock:
            if self._symbols is not None:
                return self._symbols
        everything = self.market.raw_bars(None, None, None)
        spans = everything.group_by("symbol").agg(
            pl.col("date").min().alias("first"), pl.col("date").max().alias("last")
        )
        with self._lock:
            self._symbols = spans.sort("symbol")
            return self._symbols

    def newest_day(self) -> date | None:
        spans = self.symbol_spans()
        return None if spans.is_empty() else spans.get_column("last").max()  # type: ignore[return-value]

    def forget(self) -> None:
        """Drop cached bars (the data store changed)."""
        with self._lock:
            self._indexes.clear()
            self._assets = {}
            self._symbols = None
            self._read_at = time.monotonic()

    def _expire(self) -> None:
        if time.monotonic() - self._read_at > CACHE_SECONDS:
            self.forget()

    # --- assets ---------------------------------------------------------------------------------
    def assets(self, today: date) -> list[Asset]:
        """Every symbol with bars; active when listed on ``today`` (first bar ≤ today, and its last
        bar is the newest in the store or not before ``today``)."""
        newest = self.newest_day()
        found = []
        for symbol, first, last in self.symbol_spans().iter_rows():
            delisted = last < (newest or last) and last < today
            found.append(Asset(symbol, active=first <= today and not delisted))
        return found

    def asset(self, symbol_or_id: str, today: date) -> Asset | None:
        """The asset with this symbol or asset id, as of ``today`` (``None``: unknown)."""
        with self._lock:
            known = self._assets.get(today)
        if known is None:
            known = {}
            for asset in self.assets(today):
                known[asset.symbol] = known[asset.id] = asset
            with self._lock:
                self._assets = {today: known}
        return known.get(symbol_or_id)

    # --- prices ---------------------------------------------------------------------------------
    def _index(self, day: date) -> DayIndex:
        """The bars of ``day`` and every symbol's last close before it, by symbol (cached)."""
        self._expire()
        with self._lock:
            found = self._indexes.get(day)
            if found is not None:
                self._indexes.move_to_end(day)
                return found
        window = self._window(day)
        today = window.filter(pl.col("date") == day)
        earlier = (
            window.filter(pl.col("date") < day).sort("date").group_by("symbol").agg(pl.col("close").last())
        )
        index = DayIndex(
            bars={
                row["symbol"]: DayBar(day, *(to_price(row[k]) for k in ("open", "high", "low", "close")))
                for row in today.iter_rows(named=True)
            },
            closes={symbol: to_price(close) for symbol, close in earlier.iter_rows()},
        )
        with self._lock:
            self._indexes[day] = index
            while len(self._indexes) > _CACHE_DAYS:
                self._indexes.popitem(last=False)
        return index

    def bar(self, symbol: str, day: date) -> DayBar | None:
        """The raw bar of ``symbol`` on ``day``; on a day past the newest stored bar, a flat bar at the
        newest close (``None`` when the symbol has no bar that day: halted, or not listed)."""
        newest = self.newest_day()
        if newest is not None and day > newest:
            close = self.last_close(symbol, newest + timedelta(days=1))
            return None if close is None else DayBar(day, close, close, close, close)
        return self._index(day).bars.get(symbol)

    def last_close(self, symbol: str, before: date) -> Decimal | None:
        """The close of the newest bar of ``symbol`` strictly before ``before``."""
        newest = self.newest_day()
        day = before if newest is None or before <= newest else newest + timedelta(days=1)
        close = self._index(day).closes.get(symbol)
        if close is not None:
            return close
        rows = self.market.raw_bars([symbol], None, day - timedelta(days=1))  # halted for weeks: rare
        return None if rows.is_empty() else to_price(rows.sort("date").get_column("close")[-1])

    def price(self, symbol: str, moment: datetime) -> Decimal | None:
        """The price of ``symbol`` at ``moment``: on the day's path during a session, else last close."""
        session = self.hours.session_at(moment)
        if session is not None:
            bar = self.bar(symbol, session.day)
            if bar is not None:
                return path_price(bar, session_fraction(session, moment))
        day = moment.date()
        after_close = (today := self.hours.session(day)) is not None and moment >= today.close
        if after_close:
            bar = self.bar(symbol, day)
            if bar is not None:
                return bar.close
        return self.last_close(symbol, day)

    def previous_close(self, symbol: str, moment: datetime) -> Decimal | None:
        """The close of the session before the one at or after ``moment`` (``lastday_price``)."""
        return self.last_close(symbol, self.hours.next_session(moment).day)

    def traded_range(self, symbol: str, session: Session, since: datetime, until: datetime) -> Traded | None:
        """What ``symbol`` traded at between ``since`` and ``until`` within ``session``; ``None`` when
        it has no bar that session (it does not trade)."""
        bar = self.bar(symbol, session.day)
        if bar is None:
            return None
        first, last = session_fraction(session, max(since, session.open)), session_fraction(session, until)
        low, high = path_range(bar, first, last)
        return Traded(path_price(bar, first), low, high, path_price(bar, last))


@dataclass(frozen=True)
class Traded:
    """Prices of a stretch of a session: the first, the lowest, the highest and the last."""

    start: Decimal
    low: Decimal
    high: Decimal
    last: Decimal
