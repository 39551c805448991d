"""Alpaca's JSON shapes for orders, positions, the account, assets, fills and the clock.

Money and quantities are decimal strings, times RFC-3339 UTC with ``Z``, every key the SDK's models
require is present (nullable ones as ``null``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from trader.paperbroker.params import MARKET_TZ
from trader.paperbroker.prices import Asset, asset_id
from trader.paperbroker.state import Fill, Position, SimOrder

#: Every asset is listed on this exchange (the data store does not record listing venues).
EXCHANGE = "NYSE"
_CENT = Decimal("0.01")


def iso(moment: datetime | None) -> str | None:
    """RFC-3339 in UTC with a ``Z``, microsecond precision."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def iso_et(moment: datetime) -> str:
    """RFC-3339 with the New York offset, as ``/v2/clock`` sends it."""
    return moment.astimezone(MARKET_TZ).isoformat(timespec="seconds")


def text(value: Decimal | None) -> str | None:
    """A decimal as Alpaca's decimal string, without exponent or trailing zeros (nor a minus on 0)."""
    if value is None:
        return None
    normal = _unsigned_zero(value.normalize())
    return format(normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal, "f")


def money(value: Decimal) -> str:
    """An amount of dollars to the cent ("0.00", never "-0.00", for less than half a cent)."""
    return format(_unsigned_zero(value.quantize(_CENT)), "f")


def _unsigned_zero(value: Decimal) -> Decimal:
    return abs(value) if value == 0 else value


def order_json(order: SimOrder) -> dict[str, Any]:
    """An order in Alpaca's ``Order`` shape."""
    return {
        "id": order.id,
        "client_order_id": order.client_order_id,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at or order.created_at),
        "submitted_at": iso(order.submitted_at or order.created_at),
        "filled_at": iso(order.filled_at),
        "expired_at": iso(order.expired_at),
        "expires_at": iso(order.expires_at),
        "canceled_at": iso(order.canceled_at),
        "failed_at": iso(order.failed_at),
        "replaced_at": iso(order.replaced_at),
        "replaced_by": order.replaced_by,
        "replaces": order.replaces,
        "asset_id": asset_id(order.symbol),
        "symbol": order.symbol,
        "asset_class": "us_equity",
        "notional": text(order.notional),
        "qty": text(order.qty),
        "filled_qty": text(order.filled_qty),
        "filled_avg_price": text(order.filled_avg_price),
        "order_class": "simple",
        "order_type": order.type,
        "type": order.type,
        "side": order.side,
        "time_in_force": order.time_in_force,
        "limit_price": text(order.limit_price),
        "stop_price": text(order.stop_price),
        "status": order.status,
        "extended_hours": order.extended_hours,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def asset_json(asset: Asset) -> dict[str, Any]:
    """An asset in Alpaca's ``Assets`` shape (every symbol fractionable, shortable, easy to borrow)."""
    return {
        "id": asset.id,
        "class": "us_equity",
        "exchange": EXCHANGE,
        "symbol": asset.symbol,
        "name": f"{asset.symbol} (paper broker)",
        "status": "active" if asset.active else "inactive",
        "tradable": asset.active,
        "marginable": True,
        "shortable": True,
        "easy_to_borrow": True,
        "fractionable": True,
        "attributes": [],
    }


@dataclass(frozen=True)
class PositionView:
    """A position with what ``/v2/positions`` shows beside it: the price now, the previous close and
    the quantity open orders do not hold (signed like ``qty``)."""

    position: Position
    price: Decimal
    lastday: Decimal
    qty_available: Decimal


def position_json(view: PositionView) -> dict[str, Any]:
    """A position in Alpaca's ``Position`` shape (``qty`` negative for a short)."""
    symbol, qty, price, lastday = view.position.symbol, view.position.qty, view.price, view.lastday
    avg_entry = view.position.avg_entry_price
    size = abs(qty)
    market_value = qty * price
    cost_basis = qty * avg_entry
    unrealized = market_value - cost_basis
    intraday = qty * (price - lastday)
    return {
        "asset_id": asset_id(symbol),
        "symbol": symbol,
        "exchange": EXCHANGE,
        "asset_class": "us_equity",
        "asset_marginable": True,
        "avg_entry_price": text(avg_entry),
        "qty": text(qty),
        "qty_available": text(view.qty_available),
        "side": "long" if qty > 0 else "short",
        "market_value": money(market_value),
        "cost_basis": money(cost_basis),
        "unrealized_pl": money(unrealized),
        "unrealized_plpc": text(_ratio(unrealized, abs(cost_basis))),
        "unrealized_intraday_pl": money(intraday),
        "unrealized_intraday_plpc": text(_ratio(intraday, size * lastday)),
        "current_price": text(price),
        "lastday_price": text(lastday),
        "change_today": text(_ratio(price - lastday, lastday)),
    }


def _ratio(part: Decimal, whole: Decimal) -> Decimal:
    return (part / whole).quantize(Decimal("0.0000000001")) if whole else Decimal(0)


def activity_json(fill: Fill) -> dict[str, Any]:
    """A fill in Alpaca's trade-activity shape (``activity_type`` ``FILL``)."""
    return {
        "id": fill.id,
        "activity_type": "FILL",
        "transaction_time": iso(fill.transaction_time),
        "type": fill.type,
        "price": text(fill.price),
        "qty": text(fill.qty),
        "side": fill.side,
        "symbol": fill.symbol,
        "leaves_qty": text(fill.leaves_qty),
        "order_id": fill.order_id,
        "cum_qty": text(fill.cum_qty),
        "order_status": fill.order_status,
    }


def calendar_json(day: date, opened: datetime, closed: datetime, settlement: date) -> dict[str, str]:
    """A ``/v2/calendar`` day: ``open``/``close`` as ``HH:MM`` New York time (the SDK parses exactly
    that), ``session_open``/``session_close`` as ``HHMM``."""
    return {
        "date": day.isoformat(),
        "open": opened.astimezone(MARKET_TZ).strftime("%H:%M"),
        "close": closed.astimezone(MARKET_TZ).strftime("%H:%M"),
        "session_open": "0400",
        "session_close": "2000",
        "settlement_date": settlement.isoformat(),
    }
