"""Validation of order bodies (``POST /v2/orders``, ``PATCH /v2/orders/{id}``) as Alpaca does it.

Every problem is an :class:`AlpacaError` 422 with Alpaca's code (42210000, or 40010001 for
``client_order_id`` problems) and a message naming the field. Numbers may come as JSON numbers or
strings, as Alpaca accepts both.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from trader.domain.enums import OrderSide, OrderType, TimeInForce
from trader.paperbroker.errors import AlpacaError, invalid
from trader.paperbroker.prices import asset_key

#: Alpaca's limit for ``client_order_id``.
MAX_CLIENT_ORDER_ID = 128
#: Code Alpaca uses for ``client_order_id`` and asset-lookup problems (with HTTP 422).
CODE_BAD_REQUEST = 40010001
#: Types the paper broker matches (Alpaca also has ``trailing_stop``).
SUPPORTED_TYPES = {OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT}
#: Times in force the paper broker supports (Alpaca also has ``opg`` and ``cls`` auctions).
SUPPORTED_TIF = {TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK}
_MAX_PLACES = 9


def bad_request(message: str) -> AlpacaError:
    """422 with code 40010001, as Alpaca answers ``client_order_id`` problems."""
    return AlpacaError(422, message, CODE_BAD_REQUEST)


@dataclass(frozen=True)
class NewOrder:
    """A checked ``POST /v2/orders`` body."""

    symbol: str
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    client_order_id: str | None

    @property
    def fractional(self) -> bool:
        return self.notional is not None or (
            self.qty is not None and self.qty != self.qty.to_integral_value()
        )


@dataclass(frozen=True)
class Replacement:
    """A checked ``PATCH /v2/orders/{id}`` body: only the fields given are changed."""

    qty: Decimal | None
    time_in_force: TimeInForce | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    client_order_id: str | None


def decimal_field(body: dict[str, Any], name: str) -> Decimal | None:
    """``body[name]`` as a finite Decimal with at most 9 places, ``None`` when absent or null."""
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid(f"invalid {name}: must be a number or a decimal string")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise invalid(f"invalid {name}: '{value}' is not a number") from None
    if not number.is_finite():
        raise invalid(f"invalid {name}: '{value}' is not a finite number")
    return tidy(number, name, value)


def tidy(number: Decimal, name: str = "value", shown: object = None) -> Decimal:
    """``number`` without trailing zeros (whole numbers as integers); 422 past 9 decimal places."""
    normal = number.normalize()
    exponent = normal.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _MAX_PLACES:
        raise invalid(f"invalid {name}: '{shown or number}' has more than {_MAX_PLACES} decimal places")
    return normal.quantize(Decimal(1)) if normal == normal.to_integral_value() else normal


def _enum(body: dict[str, Any], name: str, kind: type[Any], required: bool = True) -> Any:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise invalid(f"{name} is required")
        return None
    try:
        return kind(str(value).lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise invalid(f"invalid {name}: '{value}' (use one of {allowed})") from None


def _client_order_id(body: dict[str, Any]) -> str | None:
    value = body.get("client_order_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_request("client_order_id must be a string")
    if len(value) > MAX_CLIENT_ORDER_ID:
        raise bad_request(f"client_order_id must be no more than {MAX_CLIENT_ORDER_ID} characters")
    return value


def _check_price(name: str, price: Decimal | None) -> None:
    """Positive, and no sub-penny increments: 2 places from $1, 4 places below."""
    if price is None:
        return
    if price <= 0:
        raise invalid(f"invalid {name}: must be greater than 0")
    places = price.normalize().as_tuple().exponent
    allowed = 2 if price >= 1 else 4
    if isinstance(places, int) and -places > allowed:
        raise invalid(
            f"invalid {name} {price}. sub-penny increment does not fulfill minimum pricing criteria"
        )


def _check_prices_for_type(kind: OrderType, limit: Decimal | None, stop: Decimal | None) -> None:
    needs_limit = kind in {OrderType.LIMIT, OrderType.STOP_LIMIT}
    needs_stop = kind in {OrderType.STOP, OrderType.STOP_LIMIT}
    if needs_limit and limit is None:
        raise invalid(f"{kind.value} orders require a limit price")
    if needs_stop and stop is None:
        raise invalid(f"{kind.value} orders require a stop price")
    if not needs_limit and limit is not None:
        raise invalid(f"limit_price is not allowed for {kind.value} orders")
    if not needs_stop and stop is not None:
        raise invalid(f"stop_price is not allowed for {kind.value} orders")
    _check_price("limit_price", limit)
    _check_price("stop_price", stop)


def _check_amounts(order: NewOrder) -> None:
    if order.qty is None and order.notional is None:
        raise invalid("qty or notional is required")
    if order.qty is not None and order.notional is not None:
        raise invalid("qty and notional are mutually exclusive: send one of them")
    if order.qty is not None and order.qty <= 0:
        raise invalid("invalid qty: must be greater than 0")
    if order.notional is not None:
        if order.notional < 1:
            raise invalid("invalid notional: the minimum is $1")
        if order.type is not OrderType.MARKET:
            raise invalid("notional orders must be market orders")
    if order.fractional and order.time_in_force is not TimeInForce.DAY:
        raise invalid("fractional orders must be DAY orders")


def check_new_order(order: NewOrder) -> None:
    """The rules every order must pass, posted or made by a replace (``PATCH`` changes fields of an
    order, and the result must still be an order ``POST`` would take)."""
    if order.type not in SUPPORTED_TYPES:
        raise invalid(f"order type {order.type.value} is not supported by the paper broker")
    if order.time_in_force not in SUPPORTED_TIF:
        raise invalid(f"time_in_force {order.time_in_force.value} is not supported by the paper broker")
    if order.extended_hours and (
        order.type is not OrderType.LIMIT or order.time_in_force not in {TimeInForce.DAY, TimeInForce.GTC}
    ):
        raise invalid("extended hours order must be DAY or GTC limit orders")
    _check_amounts(order)
    _check_prices_for_type(order.type, order.limit_price, order.stop_price)


def parse_new_order(body: Any) -> NewOrder:
    """Check a ``POST /v2/orders`` body (already JSON-decoded)."""
    if not isinstance(body, dict):
        raise AlpacaError(400, "request body format is invalid", 40010000)
    order_class = body.get("order_class")
    if order_class not in (None, "", "simple"):
        raise invalid(f"order_class {order_class} is not supported by the paper broker (use simple)")
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or not symbol.strip():
        raise invalid("symbol is required")
    extended = body.get("extended_hours", False)
    if not isinstance(extended, bool):
        raise invalid("invalid extended_hours: must be true or false")
    order = NewOrder(
        symbol=asset_key(symbol),
        side=_enum(body, "side", OrderSide),
        type=_enum(body, "type", OrderType),
        time_in_force=_enum(body, "time_in_force", TimeInForce),
        qty=decimal_field(body, "qty"),
        notional=decimal_field(body, "notional"),
        limit_price=decimal_field(body, "limit_price"),
        stop_price=decimal_field(body, "stop_price"),
        extended_hours=extended,
        client_order_id=_client_order_id(body),
    )
    check_new_order(order)
    return order


def parse_replacement(body: Any) -> Replacement:
    """Check a ``PATCH /v2/orders/{id}`` body on its own (the order it makes is checked with
    :func:`check_new_order` once the old order's fields are known)."""
    if not isinstance(body, dict):
        raise AlpacaError(400, "request body format is invalid", 40010000)
    qty = decimal_field(body, "qty")
    if qty is not None and (qty <= 0 or qty != qty.to_integral_value()):
        raise invalid("invalid qty: a replacement qty must be a whole number of shares greater than 0")
    return Replacement(
        qty=qty,
        time_in_force=_enum(body, "time_in_force", TimeInForce, required=False),
        limit_price=decimal_field(body, "limit_price"),
        stop_price=decimal_field(body, "stop_price"),
        client_order_id=_client_order_id(body),
    )
