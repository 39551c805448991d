"""Where the gateway's pre-trade check gets the account and the reference prices from.

The risk rules are pure (:mod:`trader.risk`); they need a :class:`~trader.risk.snapshot.PortfolioSnapshot`
(equity, cash, buying power, positions, today's P&L, market open) and, for every order, the price its
notional is valued at. A :class:`RiskInputsProvider` supplies both, fresh for each request:

- :class:`BrokerRiskInputs` — production: the broker's account, positions and clock (three REST calls
  per request, never cached: a stale account would let two orders through a limit), and the reference
  price of a symbol is the position's current price when it is held, else the close of the last
  completed session's daily bar from the broker's market data (cached: a closed bar never changes).
- :class:`StaticRiskInputs` — a fixed snapshot and price table, for tests and benchmarks where the broker
  must stay out of the loop.

A provider raises :class:`RiskInputsUnavailableError` when it cannot answer (broker down): the gateway
then refuses the request with 503 before recording anything, and the client retries.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

import polars as pl

from trader.broker.base import Broker
from trader.broker.errors import BrokerError
from trader.data.calendar import TradingCalendar, trading_calendar
from trader.data.sources import BarSource, SourceError
from trader.errors import TraderError
from trader.risk.limits import RiskError
from trader.risk.snapshot import PortfolioSnapshot

#: The price a risk check values an order at, by symbol (``None``: unknown, the order is refused).
PriceLookup = Callable[[str], Decimal | None]
#: The close of ``symbol``'s daily bar of session ``day`` (``None`` when there is none).
CloseLookup = Callable[[str, date], Decimal | None]
#: How far back the market-data query looks for the last bar (holidays, a halted symbol).
BAR_LOOKBACK = timedelta(days=10)
#: Daily closes remembered (symbol, session).
CLOSE_CACHE_SIZE = 10_000
NEW_YORK = ZoneInfo("America/New_York")


class RiskInputsUnavailableError(TraderError):
    """The account or a reference price could not be read (the broker or its market data is down)."""


@dataclass(frozen=True)
class RiskInputs:
    """What one request's risk check sees: the account now, and a price per symbol."""

    snapshot: PortfolioSnapshot
    price_of: PriceLookup


class RiskInputsProvider(Protocol):
    """Supplies :class:`RiskInputs`; called once per ``POST /orders``, from worker threads."""

    def risk_inputs(self) -> RiskInputs:
        """The account now; raises :class:`RiskInputsUnavailableError` when it cannot be read."""
        ...


@dataclass(frozen=True)
class StaticRiskInputs:
    """A fixed snapshot and price table (symbols upper-case), for tests and benchmarks."""

    snapshot: PortfolioSnapshot
    prices: Mapping[str, Decimal] = field(default_factory=dict)

    def risk_inputs(self) -> RiskInputs:
        prices = {symbol.upper(): price for symbol, price in self.prices.items()}
        return RiskInputs(self.snapshot, lambda symbol: prices.get(symbol.strip().upper()))


class MarketDataCloses:
    """Daily closes from a bar source (the broker's market data), cached per (symbol, session).

    ``close(symbol, day)`` is the close of the newest daily bar on or before ``day`` within
    :data:`BAR_LOOKBACK`: a raw (unadjusted) price, as orders are priced. The source is built on first
    use, so a gateway whose market data is down still starts.
    """

    def __init__(
        self, source_factory: Callable[[], BarSource], *, cache_size: int = CLOSE_CACHE_SIZE
    ) -> None:
        self._factory = source_factory
        self._source: BarSource | None = None
        self._cache: OrderedDict[tuple[str, date], Decimal | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def close(self, symbol: str, day: date) -> Decimal | None:
        key = (symbol.strip().upper(), day)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        price = self._fetch(key[0], day)
        with self._lock:
            self._cache[key] = price
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return price

    def _fetch(self, symbol: str, day: date) -> Decimal | None:
        try:
            bars = self._get_source().fetch([symbol], day - BAR_LOOKBACK, day).bars
        except (SourceError, BrokerError) as exc:
            raise RiskInputsUnavailableError(f"reference price of {symbol}: {exc}") from None
        rows = bars.filter(pl.col("symbol") == symbol).sort("date")
        if rows.is_empty():
            return None
        close = rows["close"][-1]
        # The float was parsed from the JSON text: repr gives back that text's digits exactly.
        return Decimal(repr(close)) if close is not None and math.isfinite(close) and close > 0 else None

    def _get_source(self) -> BarSource:
        with self._lock:
            if self._source is None:
                self._source = self._factory()
            return self._source


class BrokerRiskInputs:
    """The account, positions and clock from ``broker``; prices from positions, else daily closes.

    ``closes`` defaults to the broker's own market data (``broker.market_data()``, an
    :class:`~trader.broker.alpaca.AlpacaBroker` built by ``from_settings``). The close used is the one
    of the last session completed at the broker clock's time.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        closes: CloseLookup | None = None,
        calendar: TradingCalendar | None = None,
    ) -> None:
        self._broker = broker
        self._closes = closes if closes is not None else self._market_data_closes(broker)
        self._calendar = calendar

    @staticmethod
    def _market_data_closes(broker: Broker) -> CloseLookup:
        market_data = getattr(broker, "market_data", None)
        if market_data is None:
            return lambda _symbol, _day: None  # no market data: only held symbols have a price
        return MarketDataCloses(lambda: market_data(include_actions=False)).close

    def risk_inputs(self) -> RiskInputs:
        try:
            account = self._broker.get_account()
            positions = self._broker.get_positions()
            clock = self._broker.get_clock()
        except BrokerError as exc:
            raise RiskInputsUnavailableError(f"the broker account could not be read: {exc}") from None
        try:
            snapshot = PortfolioSnapshot.from_broker(account, positions, clock)
        except RiskError as exc:
            raise RiskInputsUnavailableError(f"the broker's account cannot be risk-checked: {exc}") from None
        marks = {symbol: holding.price for symbol, holding in snapshot.positions.items()}
        calendar = self._calendar or trading_calendar()
        last_session = calendar.last_closed_session(clock.timestamp)

        def price_of(symbol: str) -> Decimal | None:
            key = symbol.strip().upper()
            return marks[key] if key in marks else self._closes(key, last_session)

        return RiskInputs(snapshot, price_of)


def default_trading_date(now: datetime, calendar: TradingCalendar | None = None) -> date:
    """The XNYS session an order placed at ``now`` belongs to: today's (New York) until its close,
    else the next one (after the close, on a weekend or a holiday)."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    cal = calendar or trading_calendar()
    today = now.astimezone(NEW_YORK).date()
    if cal.is_session(today) and now < cal.session_close(today):
        return today
    return cal.next_session(today)
