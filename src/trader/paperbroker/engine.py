"""The paper broker's matching engine: accepts, checks, fills, cancels, replaces and expires orders,
keeps positions and cash, and publishes ``trade_updates`` events.

One lock serialises every use case, and each use case writes its changes in one transaction
(:class:`StateStore.save`), so the order, its fill, the position and the cash change together.

Matching rules (documented in docs/paper-broker.md): market orders fill at the path price
(:mod:`trader.paperbroker.prices`) plus ``slippage_bps`` against the taker; limit orders fill when the
path crosses the limit (at the limit, or at the better first price when already marketable); stop
orders trigger when the path reaches the stop and fill like market orders; orders submitted while the
market is closed are ``accepted`` and trade from the next open; ``day`` orders expire at the close.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from trader.domain.enums import OrderSide, OrderType, TimeInForce
from trader.paperbroker.clock import MarketHours, Session, SimClock
from trader.paperbroker.errors import AlpacaError, invalid
from trader.paperbroker.order_requests import NewOrder, Replacement, bad_request, check_new_order
from trader.paperbroker.prices import PRICE_STEP, PriceBook, asset_id, asset_key, is_asset_id
from trader.paperbroker.serialize import PositionView, iso, order_json, text
from trader.paperbroker.settings import PaperBrokerSettings
from trader.paperbroker.state import Account, Fill, Position, SimOrder, StateStore, new_id

#: Market buys hold buying power at this much above the current price (Alpaca: 2.5-4 %).
MARKET_BUY_BUFFER = Decimal("1.03")
#: Reg-T initial margin (50 %): buying power is twice the excess equity.
INITIAL_MARGIN = Decimal("0.5")
MAINTENANCE_MARGIN = Decimal("0.3")
_QTY_STEP = Decimal("0.000000001")
#: Alpaca cancels ``gtc`` orders that are still open 90 days after they were placed.
GTC_LIFETIME = timedelta(days=90)
#: Statuses in which Alpaca refuses a replace because the order has not reached the exchange yet
#: (it also refuses ``pending_cancel``/``pending_replace``, which cancels and replaces here never
#: pass through: they take effect at once).
NOT_SENT_YET = frozenset({"accepted", "pending_new"})
_FORBIDDEN = 40310000


@dataclass
class Changes:
    """What one use case changed: written in one transaction, then its events published."""

    orders: dict[str, SimOrder] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    account: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)


def forbidden(message: str, **extra: Any) -> AlpacaError:
    """403 with code 40310000 and extra keys, as Alpaca reports buying-power and quantity problems."""
    return AlpacaError(403, message, _FORBIDDEN, **extra)


def _qty_message(requested: Decimal, available: Decimal) -> str:
    detail = f"requested: {text(requested)}, available: {text(available)}"
    return f"insufficient qty available for order ({detail})"


def not_found(what: str) -> AlpacaError:
    return AlpacaError(404, what, 40410000)


def shares_for(notional: Decimal, price: Decimal) -> Decimal:
    """How many shares ``notional`` dollars buy at ``price`` (rounded down to 9 places)."""
    return (notional / price).quantize(_QTY_STEP, ROUND_DOWN)


class Engine:
    """Every trading use case of the paper broker."""

    def __init__(
        self,
        settings: PaperBrokerSettings,
        prices: PriceBook,
        clock: SimClock,
        store: StateStore,
        publish: Callable[[dict[str, Any]], None],
    ) -> None:
        self.settings = settings
        self.prices = prices
        self.hours: MarketHours = prices.hours
        self.clock = clock
        self.store = store
        self.publish = publish
        self._lock = threading.RLock()
        self._rng = random.Random(settings.faults.seed)  # noqa: S311 - simulation, not security
        snapshot = store.load()
        now = clock.now()
        self.account = snapshot.account or Account(
            id=new_id(),
            account_number="PA" + new_id().replace("-", "")[:10].upper(),
            cash=settings.initial_cash,
            created_at=now,
            last_equity=settings.initial_cash,
        )
        if snapshot.account is None:
            store.save(account=self.account)
        self.orders: dict[str, SimOrder] = {order.id: order for order in snapshot.orders}
        self.by_client_id = {order.client_order_id: order.id for order in snapshot.orders}
        self.fills: list[Fill] = snapshot.fills
        self.positions: dict[str, Position] = {p.symbol: p for p in snapshot.positions}
        self._last_stamp = max((order.created_at for order in snapshot.orders), default=None)

    def close(self) -> None:
        """Close the state store once no use case runs (each one holds the lock throughout)."""
        with self._lock:
            self.store.close()

    # --- queries ----------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now()

    def order(self, order_id: str) -> SimOrder:
        with self._lock:
            found = self.orders.get(order_id)
            if found is None:
                raise not_found(f"order not found for {order_id}")
            return replace(found)

    def order_by_client_id(self, client_order_id: str) -> SimOrder:
        with self._lock:
            order_id = self.by_client_id.get(client_order_id)
            if order_id is None:
                raise not_found(f"order not found for {client_order_id}")
            return replace(self.orders[order_id])

    def all_orders(self) -> list[SimOrder]:
        with self._lock:
            return [replace(order) for order in self.orders.values()]

    def all_fills(self) -> list[Fill]:
        with self._lock:
            return list(self.fills)

    def mark(self, symbol: str, moment: datetime) -> Decimal:
        """The price positions and buying power are valued at (the entry price when none is known)."""
        price = self.prices.price(symbol, moment)
        if price is None:
            position = self.positions.get(symbol)
            return position.avg_entry_price if position else Decimal(0)
        return price

    def position_rows(self) -> list[PositionView]:
        """Open positions as ``/v2/positions`` shows them, by symbol."""
        now = self.now()
        with self._lock:
            return [self._view(self.positions[symbol], now) for symbol in sorted(self.positions)]

    def _view(self, position: Position, now: datetime) -> PositionView:
        price = self.mark(position.symbol, now)
        lastday = self.prices.previous_close(position.symbol, now) or price
        return PositionView(replace(position), price, lastday, self._qty_available(position, now))

    def _qty_available(self, position: Position, now: datetime) -> Decimal:
        """The position less what open orders closing it hold, signed like ``qty``."""
        closing = OrderSide.SELL if position.qty > 0 else OrderSide.BUY
        held, _ = self._held_by_orders(position.symbol, closing, now)
        free = max(abs(position.qty) - held, Decimal(0))
        return free if position.qty > 0 else -free

    def account_values(self) -> dict[str, Decimal]:
        """Cash, market values, equity, margins and buying power now."""
        with self._lock:
            now = self.now()
            self._roll_last_equity(now)
            values = self._values(now)
            values["last_equity"] = self.account.last_equity
            return values

    def _values(self, now: datetime) -> dict[str, Decimal]:
        long_value, short_value = self._market_values(now)
        gross = long_value - short_value
        buying_power = self._buying_power(now)
        return {
            "cash": self.account.cash,
            "long_market_value": long_value,
            "short_market_value": short_value,
            "equity": self.account.cash + long_value + short_value,
            "initial_margin": gross * INITIAL_MARGIN,
            "maintenance_margin": gross * MAINTENANCE_MARGIN,
            "buying_power": buying_power,
            "non_marginable_buying_power": max(min(self.account.cash, buying_power), Decimal(0)),
        }

    def _market_values(self, now: datetime) -> tuple[Decimal, Decimal]:
        """Market value of the long positions and of the short ones (negative) at ``now``."""
        long_value = short_value = Decimal(0)
        for symbol, position in self.positions.items():
            worth = position.qty * self.mark(symbol, now)
            if worth > 0:
                long_value += worth
            else:
                short_value += worth
        return long_value, short_value

    def _buying_power(self, now: datetime, ignore: str | None = None) -> Decimal:
        """Reg-T buying power: twice the equity above initial margin, less what open orders hold
        (except order ``ignore``, which is being replaced)."""
        long_value, short_value = self._market_values(now)
        equity = self.account.cash + long_value + short_value
        excess = max(equity - (long_value - short_value) * INITIAL_MARGIN, Decimal(0))
        return max(excess * 2 - self._held_for_orders(now, ignore), Decimal(0))

    def _held_for_orders(self, now: datetime, ignore: str | None = None) -> Decimal:
        """Buying power held by open orders that open or add to a position (buys and short sells)."""
        held = Decimal(0)
        for order in self.orders.values():
            if not order.open or order.id == ignore:
                continue
            position = self.positions.get(order.symbol)
            existing = position.qty if position else Decimal(0)
            opening = (order.side == OrderSide.BUY and existing >= 0) or (
                order.side == OrderSide.SELL and existing <= 0
            )
            if opening:
                held += self._order_cost(order, now)
        return held

    def _order_cost(self, order: SimOrder | NewOrder, now: datetime) -> Decimal:
        if order.notional is not None:
            return order.notional
        quantity = order.qty if isinstance(order, NewOrder) else order.remaining()
        assert quantity is not None
        if order.limit_price is not None:
            return quantity * order.limit_price
        return quantity * self.mark(order.symbol, now) * MARKET_BUY_BUFFER

    def _roll_last_equity(self, now: datetime) -> None:
        """Take ``last_equity`` at the newest close at or before ``now``, once per close.

        Open orders are matched up to that close first and nothing after it counts: the clock may
        jump across a close, and fills after it belong to the next day's equity, not to this one.
        """
        try:
            close = self.hours.last_close(now)
        except ValueError:  # outside the exchange calendar
            return
        taken = self.account.last_equity_at
        if close is None or (taken is not None and taken >= close):
            return
        self._match_open(close)
        self.account.last_equity = self._values(close)["equity"]
        self.account.last_equity_at = close
        self.store.save(account=self.account)

    # --- orders -------------------------------------------------------------------------------
    def submit(self, request: NewOrder) -> dict[str, Any]:
        """Check and accept an order; returns its JSON as accepted (fills follow, as on Alpaca)."""
        with self._lock:
            now = self.now()
            self.tick(now)
            order = self._accept(request, now)
            changes = Changes()
            self._touch(changes, order)
            self._activate(order, now, changes)
            accepted = order_json(order)
            self._commit(changes)
            self._match_one(order, now)
            return accepted

    def _accept(self, request: NewOrder, now: datetime, replaces: SimOrder | None = None) -> SimOrder:
        client_order_id = request.client_order_id or new_id()
        if client_order_id in self.by_client_id:
            raise bad_request("client_order_id must be unique")
        asset = self.prices.asset(request.symbol, now.date())
        if asset is None and is_asset_id(request.symbol):
            raise bad_request(f"could not find us_equity '{request.symbol}'")
        if asset is None:
            raise invalid(f'asset "{request.symbol}" not found')
        if not asset.active:
            raise bad_request(f"asset {asset.symbol} is not active")
        request = replace(request, symbol=asset.symbol)
        if self.prices.price(request.symbol, now) is None:
            raise invalid(f"asset {request.symbol} has no price to trade at")
        self._check_wash_trade(request, replaces)
        self._check_position(request, now, replaces)
        session = self.hours.next_session(now)
        active_from = max(now, session.open)
        stamp = self._stamp(now)
        expires = self._expiry(request.time_in_force, session, now)
        order = SimOrder(
            id=new_id(),
            client_order_id=client_order_id,
            symbol=request.symbol,
            side=request.side.value,
            type=request.type.value,
            time_in_force=request.time_in_force.value,
            qty=request.qty,
            notional=request.notional,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            extended_hours=request.extended_hours,
            status="accepted",
            created_at=stamp,
            updated_at=stamp,
            submitted_at=stamp,
            active_from=active_from,
            expires_at=expires,
            evaluated_at=active_from,
            replaces=replaces.id if replaces else None,
        )
        self.orders[order.id] = order
        self.by_client_id[order.client_order_id] = order.id
        return order

    def _stamp(self, now: datetime) -> datetime:
        """``now``, or a microsecond after the previous order's stamp: creation times are unique, so
        paging ``GET /v2/orders`` by ``after``/``until`` never stalls (a frozen clock repeats ``now``)."""
        newest = self._last_stamp
        self._last_stamp = now if newest is None or now > newest else newest + timedelta(microseconds=1)
        return self._last_stamp

    def _expiry(self, tif: TimeInForce, session: Session, placed: datetime) -> datetime:
        """When an order ends by itself: at the close of its session (``day``; ``ioc``/``fok`` end
        sooner), or like Alpaca's ``gtc`` orders, at the first close 90 days after it was placed."""
        if tif != TimeInForce.GTC:
            return session.close
        return self.hours.next_session(placed + GTC_LIFETIME).close

    def _check_wash_trade(self, request: NewOrder, replaces: SimOrder | None) -> None:
        for order in self.orders.values():
            if (
                order.open
                and order.symbol == request.symbol
                and order.side != request.side.value
                and order.type in (OrderType.MARKET, OrderType.STOP)
                and (replaces is None or order.id != replaces.id)
            ):
                raise forbidden(
                    "potential wash trade detected. use complex orders",
                    reject_reason="opposite side market/stop order exists",
                )

    def _check_position(self, request: NewOrder, now: datetime, replaces: SimOrder | None) -> None:
        """Selling more than is held (or covering more than is short) is refused; opening or adding
        needs buying power. A position cannot flip side in one order (close it first)."""
        position = self.positions.get(request.symbol)
        existing = position.qty if position else Decimal(0)
        reducing = (request.side == OrderSide.SELL and existing > 0) or (
            request.side == OrderSide.BUY and existing < 0
        )
        ignore = replaces.id if replaces else None
        if reducing:
            self._check_available(request, existing, now, ignore)
            return
        if request.side == OrderSide.SELL and request.fractional:
            raise invalid("fractional orders cannot be sold short")
        cost = self._order_cost(request, now)
        available = self._buying_power(now, ignore)
        if cost > available:
            raise forbidden(
                "insufficient buying power",
                buying_power=text(available.quantize(PRICE_STEP)),
                cost_basis=text(cost.quantize(PRICE_STEP)),
            )

    def _check_available(
        self, request: NewOrder, existing: Decimal, now: datetime, ignore: str | None
    ) -> None:
        held, related = self._held_by_orders(request.symbol, request.side, now, ignore)
        available = abs(existing) - held
        wanted = request.qty
        if wanted is None:
            assert request.notional is not None
            wanted = shares_for(request.notional, self.mark(request.symbol, now))
        if wanted > available:
            raise forbidden(
                _qty_message(wanted, available),
                available=text(available),
                existing_qty=text(abs(existing)),
                held_for_orders=text(held),
                related_orders=[order.id for order in related],
                symbol=request.symbol,
            )

    def _held_by_orders(
        self, symbol: str, side: OrderSide, now: datetime, ignore: str | None = None
    ) -> tuple[Decimal, list[SimOrder]]:
        """Shares of ``symbol`` that open ``side`` orders (but ``ignore``) may still trade, and those
        orders."""
        related = [
            order
            for order in self.orders.values()
            if order.open and order.symbol == symbol and order.side == side and order.id != ignore
        ]
        return sum((self._shares_held(order, now) for order in related), Decimal(0)), related

    def _shares_held(self, order: SimOrder, now: datetime) -> Decimal:
        """What ``order`` may still trade: what it has left to fill or, for a notional order (its
        quantity is known only at the fill), its notional at the current price, at most the position."""
        remaining = order.remaining()
        if remaining is not None:
            return remaining
        assert order.notional is not None
        position = self.positions.get(order.symbol)
        size = abs(position.qty) if position else Decimal(0)
        return min(shares_for(order.notional, self.mark(order.symbol, now)), size)

    def cancel(self, order_id: str) -> None:
        """Cancel an open order now (``canceled`` event); 422 when it is already final."""
        with self._lock:
            now = self.now()
            self.tick(now)
            order = self._open_order(order_id)
            changes = Changes()
            self._finish(order, "canceled", now, changes)
            self._commit(changes)

    def _open_order(self, order_id: str) -> SimOrder:
        """The order ``order_id`` if it can still change: 404 when unknown, 422 when final."""
        order = self.orders.get(order_id)
        if order is None:
            raise not_found(f"order not found for {order_id}")
        if not order.open:
            raise invalid(f'order is already in "{order.status}" state')
        return order

    def cancel_all(self) -> list[dict[str, Any]]:
        """Cancel every open order; one ``{"id", "status"}`` item per order (207 body)."""
        with self._lock:
            now = self.now()
            self.tick(now)
            changes = Changes()
            results = []
            for order in list(self.orders.values()):
                if order.open:
                    self._finish(order, "canceled", now, changes)
                    results.append({"id": order.id, "status": 200})
            self._commit(changes)
            return results

    def replace(self, order_id: str, change: Replacement) -> dict[str, Any]:
        """Replace an open order by a new one (new id, ``replaces`` = old id); the old one ends
        ``replaced``. The new quantity defaults to what the old order had left to fill."""
        with self._lock:
            now = self.now()
            self.tick(now)
            old = self._open_order(order_id)
            if old.status in NOT_SENT_YET:
                raise bad_request("unable to replace order, order isn't sent to exchange yet")
            if old.notional is not None:
                raise invalid("notional orders cannot be replaced")
            request = self._replacement_request(old, change)
            new = self._accept(request, now, replaces=old)
            changes = Changes()
            old.replaced_by, old.replaced_at = new.id, now
            self._finish(old, "replaced", now, changes)
            self._touch(changes, new)
            self._activate(new, now, changes)
            answer = order_json(new)
            self._commit(changes)
            self._match_one(new, now)
            return answer

    def _replacement_request(self, old: SimOrder, change: Replacement) -> NewOrder:
        """``old`` with ``change``'s fields, checked like a new order (``PATCH`` must not make an
        order ``POST`` would refuse)."""
        assert old.qty is not None  # notional orders are not replaced
        if change.qty is not None and old.qty != old.qty.to_integral_value():
            raise invalid("qty of fractional orders cannot be changed")
        request = NewOrder(
            symbol=old.symbol,
            side=OrderSide(old.side),
            type=OrderType(old.type),
            time_in_force=change.time_in_force or TimeInForce(old.time_in_force),
            qty=change.qty if change.qty is not None else old.remaining(),
            notional=None,
            limit_price=change.limit_price if change.limit_price is not None else old.limit_price,
            stop_price=change.stop_price if change.stop_price is not None else old.stop_price,
            extended_hours=old.extended_hours,
            client_order_id=change.client_order_id,
        )
        check_new_order(request)
        return request

    # --- positions ----------------------------------------------------------------------------
    def close_position(self, symbol: str, qty: Decimal | None, percentage: Decimal | None) -> dict[str, Any]:
        """Submit a market order that closes all (or ``qty``, or ``percentage`` %) of a position."""
        with self._lock:
            position = self._position(symbol)
            size = abs(position.qty)
            if qty is not None:
                amount = qty
            elif percentage is not None:
                amount = self._share_of(size, percentage)
            else:
                amount = size
            if amount > size:
                raise forbidden(
                    _qty_message(amount, size),
                    available=text(size),
                    symbol=position.symbol,
                )
            side = OrderSide.SELL if position.qty > 0 else OrderSide.BUY
            return self.submit(
                NewOrder(
                    symbol=position.symbol,
                    side=side,
                    type=OrderType.MARKET,
                    time_in_force=TimeInForce.DAY,
                    qty=amount,
                    notional=None,
                    limit_price=None,
                    stop_price=None,
                    extended_hours=False,
                    client_order_id=None,
                )
            )

    @staticmethod
    def _share_of(size: Decimal, percentage: Decimal) -> Decimal:
        """``percentage`` % of a position of ``size``: whole shares of a whole position (Alpaca
        "would only sell fractional if position is originally fractional"); 422 when that is none."""
        whole = size == size.to_integral_value()
        amount = (size * percentage / 100).quantize(Decimal(1) if whole else _QTY_STEP, ROUND_DOWN)
        if amount == 0:
            raise invalid(
                f"invalid percentage: {text(percentage)}% of {text(size)} shares is less than one share"
            )
        return amount

    def _position(self, symbol_or_id: str) -> Position:
        key = asset_key(symbol_or_id)
        for position in self.positions.values():
            if key in (position.symbol, asset_id(position.symbol)):
                return position
        raise not_found("position does not exist")

    def position(self, symbol_or_id: str) -> PositionView:
        with self._lock:
            return self._view(self._position(symbol_or_id), self.now())

    def close_all(self, cancel_orders: bool) -> list[dict[str, Any]]:
        """Close every position (207 body: ``{"symbol", "status", "body"}`` per position)."""
        with self._lock:
            if cancel_orders:
                self.cancel_all()
            results = []
            for symbol in sorted(self.positions):
                try:
                    body = self.close_position(symbol, None, None)
                    results.append({"symbol": symbol, "status": 200, "body": body})
                except AlpacaError as error:
                    results.append({"symbol": symbol, "status": error.status, "body": error.body()})
            return results

    # --- matching -----------------------------------------------------------------------------
    def tick(self, now: datetime | None = None) -> None:
        """Bring every open order up to ``now``: activate at the open, fill, expire."""
        with self._lock:
            moment = now or self.now()
            self._roll_last_equity(moment)
            self._match_open(moment)

    def _match_open(self, moment: datetime) -> None:
        for order in [o for o in self.orders.values() if o.open]:
            self._match_one(order, moment)

    def _match_one(self, order: SimOrder, now: datetime) -> None:
        if not order.open or now < order.active_from:
            return
        changes = Changes()
        self._activate(order, now, changes)
        until = min(now, order.expires_at) if order.expires_at else now
        since = order.evaluated_at or order.active_from
        for session in self._sessions_between(since, until):
            start = max(since, session.open)
            end = min(until, session.close)
            if start > end:
                continue
            if self._try_fill(order, session, start, end, changes):
                break
        order.evaluated_at = max(since, until)
        if order.open and order.time_in_force in (TimeInForce.IOC, TimeInForce.FOK):
            self._finish(order, "canceled", until, changes)
        elif order.open and order.expires_at is not None and now >= order.expires_at:
            order.expired_at = order.expires_at
            self._finish(order, "expired", order.expires_at, changes)
        self._commit(changes)

    def _sessions_between(self, since: datetime, until: datetime) -> list[Session]:
        if until < since:
            return []
        return [
            s for s in self.hours.sessions(since.date(), until.date()) if s.close >= since and s.open <= until
        ]

    def _activate(self, order: SimOrder, now: datetime, changes: Changes) -> None:
        """``accepted`` → ``new`` once the order may trade (at submission in hours, else at the open)."""
        if order.status == "accepted" and now >= order.active_from:
            order.status = "new"
            at = order.mark_updated(order.active_from)
            self._touch(changes, order)
            changes.events.append(self._event("new", order, at))

    def _try_fill(
        self, order: SimOrder, session: Session, start: datetime, end: datetime, changes: Changes
    ) -> bool:
        """Fill ``order`` if it could trade between ``start`` and ``end``; True when it did."""
        traded = self.prices.traded_range(order.symbol, session, start, end)
        if traded is None:
            return False
        price = self._execution_price(order, traded.start, traded.low, traded.high)
        if price is None:
            return False
        at = end if order.type != OrderType.MARKET else start
        self._execute(order, price, at, changes)
        return True

    def _execution_price(
        self, order: SimOrder, start: Decimal, low: Decimal, high: Decimal
    ) -> Decimal | None:
        """The price ``order`` fills at given the path's first, lowest and highest price, or None."""
        buy = order.side == OrderSide.BUY
        kind = OrderType(order.type)
        if kind in (OrderType.STOP, OrderType.STOP_LIMIT) and not order.stop_triggered:
            assert order.stop_price is not None
            if (buy and high < order.stop_price) or (not buy and low > order.stop_price):
                return None
            order.stop_triggered = True
            start = max(start, order.stop_price) if buy else min(start, order.stop_price)
            if kind == OrderType.STOP:
                return self._slipped(start, buy)
        if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            limit = order.limit_price
            assert limit is not None
            if buy:
                return start if start <= limit else (limit if low <= limit else None)
            return start if start >= limit else (limit if high >= limit else None)
        return self._slipped(start, buy)

    def _slipped(self, price: Decimal, buy: bool) -> Decimal:
        move = price * self.settings.slippage_bps / Decimal(10_000)
        return (price + move if buy else price - move).quantize(PRICE_STEP)

    def _execute(self, order: SimOrder, price: Decimal, at: datetime, changes: Changes) -> None:
        """One execution: the order, the position, the cash and a fill record change together."""
        remaining = order.remaining()
        if remaining is None:
            remaining = self._notional_fill(order, price, at)
            if remaining == 0:  # the long position it was to sell is gone
                self._finish(order, "canceled", at, changes)
                return
        quantity = self._execution_size(order, remaining)
        before = order.filled_qty
        order.filled_qty = before + quantity
        paid = (order.filled_avg_price or Decimal(0)) * before + price * quantity
        order.filled_avg_price = (paid / order.filled_qty).quantize(PRICE_STEP)
        order.executions += 1
        at = order.mark_updated(at)
        leaves = order.remaining() or Decimal(0)  # a notional order fills at once, leaving nothing
        order.status = "partially_filled" if leaves else "filled"
        if not leaves:
            order.filled_at = at
        position = self._apply_to_position(
            order.symbol, quantity if order.side == OrderSide.BUY else -quantity, price
        )
        self.account.cash += -quantity * price if order.side == OrderSide.BUY else quantity * price
        fill = Fill(
            id=f"{at.astimezone(UTC).strftime('%Y%m%d%H%M%S%f')[:17]}::{new_id()}",
            execution_id=new_id(),
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            qty=quantity,
            price=price,
            transaction_time=at,
            type="partial_fill" if leaves else "fill",
            leaves_qty=leaves,
            cum_qty=order.filled_qty,
            order_status=order.status,
        )
        self.fills.append(fill)
        changes.fills.append(fill)
        changes.positions[position.symbol] = replace(position)
        changes.account = True
        self._touch(changes, order)
        event = self._event(fill.type, order, at)
        event.update(
            price=text(price),
            qty=text(quantity),
            position_qty=text(position.qty),
            execution_id=fill.execution_id,
        )
        changes.events.append(event)

    def _notional_fill(self, order: SimOrder, price: Decimal, at: datetime) -> Decimal:
        """The shares a notional order fills at ``price``; a sell at most the long position it
        reduces less what the other open sells still hold (they were accepted against it), since
        Alpaca never lets a fractional order open a short."""
        assert order.notional is not None
        quantity = shares_for(order.notional, price)
        if order.side == OrderSide.SELL:
            position = self.positions.get(order.symbol)
            others, _ = self._held_by_orders(order.symbol, OrderSide.SELL, at, ignore=order.id)
            long = max(position.qty if position else Decimal(0), Decimal(0))
            quantity = min(quantity, max(long - others, Decimal(0)))
        return quantity

    def _execution_size(self, order: SimOrder, remaining: Decimal) -> Decimal:
        """All of ``remaining``, or (first execution, ``partial_fill_rate`` draw) about half of it."""
        first = order.executions == 0 and order.notional is None and order.time_in_force != TimeInForce.FOK
        if (
            first
            and self.settings.partial_fill_rate > 0
            and self._rng.random() < self.settings.partial_fill_rate
        ):
            whole = remaining == remaining.to_integral_value()
            part = (remaining / 2).quantize(Decimal(1) if whole else _QTY_STEP, ROUND_DOWN)
            if 0 < part < remaining:
                return part
        return remaining

    def _apply_to_position(self, symbol: str, delta: Decimal, price: Decimal) -> Position:
        position = self.positions.get(symbol) or Position(symbol, Decimal(0), Decimal(0))
        total = position.qty + delta
        if position.qty == 0 or (position.qty > 0) == (delta > 0):
            cost = abs(position.qty) * position.avg_entry_price + abs(delta) * price
            position.avg_entry_price = (cost / abs(total)).quantize(PRICE_STEP) if total else Decimal(0)
        elif (position.qty > 0) != (total > 0) and total != 0:
            position.avg_entry_price = price  # flipped side: the remainder was opened at this price
        position.qty = total
        if total == 0:
            self.positions.pop(symbol, None)
        else:
            self.positions[symbol] = position
        return position

    def _finish(self, order: SimOrder, status: str, at: datetime, changes: Changes) -> None:
        order.status = status
        at = order.mark_updated(at)
        if status == "canceled":
            order.canceled_at = at
        self._touch(changes, order)
        changes.events.append(self._event(status, order, at))

    # --- plumbing -----------------------------------------------------------------------------
    @staticmethod
    def _touch(changes: Changes, order: SimOrder) -> None:
        changes.orders[order.id] = order

    @staticmethod
    def _event(name: str, order: SimOrder, at: datetime) -> dict[str, Any]:
        return {"event": name, "order": order_json(order), "timestamp": iso(at)}

    def _commit(self, changes: Changes) -> None:
        if not (changes.orders or changes.fills or changes.positions or changes.account):
            return
        self.store.save(
            account=self.account if changes.account else None,
            changed_orders=[replace(order) for order in changes.orders.values()],
            new_fills=changes.fills,
            changed_positions=self._position_states(changes.positions.values()),
        )
        for event in changes.events:
            self.publish(event)

    def _position_states(self, touched: Iterable[Position]) -> list[Position]:
        """Touched positions as they are now (a closed one with qty 0, so the store deletes it)."""
        return [self.positions.get(p.symbol) or Position(p.symbol, Decimal(0), Decimal(0)) for p in touched]
