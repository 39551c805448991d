"""Target weights → orders: the allocator.

Given what the signal wants (a fraction of equity per symbol), what the account holds and the last
prices, the allocator works out the orders that move the account to the targets:

- target quantity = weight × equity × (1 − cash buffer) / price, rounded **toward zero** (whole shares
  by default, 9 decimals with fractional shares) so a target is never exceeded;
- order = target − current position; no order when the difference is zero, and none below the minimum
  notional (except a close to zero, so no dust is left behind);
- a position that changes side is closed by one order and re-opened by a second (brokers refuse a
  flip in one order);
- sells come before buys (they free buying power), then symbols in alphabetical order, so the same
  inputs always give the same list;
- a symbol without a price is not traded and is reported, never priced by guess.

Everything is pure ``Decimal`` arithmetic; nothing here talks to a broker or a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from enum import StrEnum
from typing import Any

from trader.domain.enums import OrderSide
from trader.errors import TraderError

#: Alpaca accepts fractional quantities with up to 9 decimal places.
FRACTIONAL_DECIMALS = 9
#: Enough digits that weight × equity × (1 − buffer) is exact before the rounding we choose.
_EXACT_PRECISION = 80

_ZERO = Decimal(0)
_ONE = Decimal(1)


class AllocationError(TraderError):
    """Weights, positions, prices or options the allocator cannot work with."""

    exit_code = 2


class IntentReason(StrEnum):
    """Why an order exists, from the position's point of view."""

    OPEN = "open"  # from flat to a position
    INCREASE = "increase"  # a bigger position on the same side
    REDUCE = "reduce"  # a smaller position on the same side
    CLOSE = "close"  # to flat (a zero target, or the first leg of a side change)


class SkipReason(StrEnum):
    NO_PRICE = "no_price"
    BELOW_MIN_NOTIONAL = "below_min_notional"


@dataclass(frozen=True)
class AllocationOptions:
    """How weights become orders.

    ``fractional``: target quantities keep 9 decimals instead of whole shares (short targets stay
    whole: fractional shares cannot be sold short). ``min_order_notional``: no order below this many
    dollars, except a close to zero. ``cash_buffer``: fraction of equity left uninvested (0.02 keeps 2%).
    ``close_absent``: positions in symbols absent from the targets are closed (else left alone).
    ``allow_short``: negative weights are accepted. ``max_gross_weight``: Σ|weight| may not exceed this
    (plus ``weight_tolerance``, which absorbs rounding such as 3 × 0.3333...).
    """

    fractional: bool = False
    min_order_notional: Decimal = _ZERO
    cash_buffer: Decimal = _ZERO
    close_absent: bool = True
    allow_short: bool = False
    max_gross_weight: Decimal = _ONE
    weight_tolerance: Decimal = Decimal("0.000001")

    def __post_init__(self) -> None:
        min_notional = _decimal(self.min_order_notional, "min_order_notional")
        buffer = _decimal(self.cash_buffer, "cash_buffer")
        gross = _decimal(self.max_gross_weight, "max_gross_weight")
        tolerance = _decimal(self.weight_tolerance, "weight_tolerance")
        if min_notional < 0:
            raise AllocationError(f"min_order_notional must be ≥ 0 dollars (got {min_notional})")
        if not _ZERO <= buffer < _ONE:
            raise AllocationError(f"cash_buffer must be a fraction in [0, 1), e.g. 0.02 (got {buffer})")
        if gross <= 0:
            raise AllocationError(f"max_gross_weight must be > 0, e.g. 1 for fully invested (got {gross})")
        if tolerance < 0:
            raise AllocationError(f"weight_tolerance must be ≥ 0 (got {tolerance})")


@dataclass(frozen=True)
class OrderIntent:
    """One order the allocator wants: not yet risk-checked, not yet sent.

    ``qty`` is positive (the side says the direction); ``notional`` = qty × ``reference_price``.
    ``current_qty`` is the signed position before this order and ``target_qty`` the signed position it
    aims at (0 for the first leg of a side change).
    """

    symbol: str
    side: OrderSide
    qty: Decimal
    reference_price: Decimal
    notional: Decimal
    reason: IntentReason
    current_qty: Decimal
    target_qty: Decimal

    @property
    def signed_qty(self) -> Decimal:
        """``qty`` with the sign of its effect on the position (sells negative)."""
        return self.qty if self.side == OrderSide.BUY else -self.qty

    @property
    def position_after(self) -> Decimal:
        """The signed position once this order fills completely."""
        return self.current_qty + self.signed_qty


@dataclass(frozen=True)
class Skipped:
    """A symbol that needed a trade but got no order, and why."""

    symbol: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True)
class Allocation:
    """The allocator's answer: the orders in the order to send them, the skipped symbols, and the
    rounded target quantity of every symbol that has a price (signed; 0 for a close)."""

    orders: tuple[OrderIntent, ...]
    skipped: tuple[Skipped, ...]
    target_qty: Mapping[str, Decimal] = field(default_factory=dict)


def allocate(
    weights: Mapping[str, Decimal],
    equity: Decimal,
    positions: Mapping[str, Decimal],
    prices: Mapping[str, Decimal],
    options: AllocationOptions | None = None,
) -> Allocation:
    """The orders that move ``positions`` to ``weights`` of ``equity`` at ``prices``.

    ``weights``: symbol → fraction of equity (negative = short, only with ``allow_short``); a symbol
    with weight 0 is closed. ``positions``: symbol → signed quantity held. ``prices``: symbol → last
    price. Raises :class:`AllocationError` on invalid input (the message names the field and symbol).
    """
    opts = options or AllocationOptions()
    equity = _decimal(equity, "equity")
    if equity <= 0:
        raise AllocationError(f"equity must be a positive number of dollars (got {equity})")
    clean_weights = _checked_weights(weights, opts)
    held = {symbol: qty for symbol, qty in _checked_positions(positions).items() if qty != 0}
    wanted = dict(clean_weights)
    if opts.close_absent:
        wanted.update({symbol: _ZERO for symbol in held if symbol not in clean_weights})

    with localcontext() as ctx:
        ctx.prec = _EXACT_PRECISION
        investable = equity * (_ONE - opts.cash_buffer)
        legs: list[tuple[int, str, int, OrderIntent]] = []
        skipped: list[Skipped] = []
        targets: dict[str, Decimal] = {}
        for symbol in sorted(wanted):
            current = held.get(symbol, _ZERO)
            if wanted[symbol] == 0 and current == 0:
                continue
            price = _checked_price(prices, symbol)
            if price is None:
                skipped.append(
                    Skipped(symbol, SkipReason.NO_PRICE, f"no last price for {symbol}; not traded")
                )
                continue
            target = _target_qty(wanted[symbol], investable, price, opts)
            targets[symbol] = target
            for leg_index, intent in enumerate(_legs(symbol, current, target, price, opts)):
                if isinstance(intent, Skipped):
                    skipped.append(intent)
                else:
                    sells_first = 0 if intent.side == OrderSide.SELL else 1
                    legs.append((sells_first, symbol, leg_index, intent))
    legs.sort(key=lambda leg: leg[:3])
    return Allocation(tuple(leg[3] for leg in legs), tuple(skipped), targets)


def _target_qty(weight: Decimal, investable: Decimal, price: Decimal, opts: AllocationOptions) -> Decimal:
    """weight × investable / price, rounded toward zero (whole shares unless fractional and long).

    Decimal's ``//`` is the exact integer part of the quotient, so the rounding can never round up.
    """
    dollars = weight * investable
    if opts.fractional and weight > 0:
        scale = Decimal(10) ** FRACTIONAL_DECIMALS
        return ((dollars * scale) // price).scaleb(-FRACTIONAL_DECIMALS)
    return (dollars // price) + 0  # "+ 0" turns -0 into 0


def _legs(
    symbol: str, current: Decimal, target: Decimal, price: Decimal, opts: AllocationOptions
) -> list[OrderIntent | Skipped]:
    """One order, or two when the position changes side (close, then open); none when nothing moves."""
    steps = [(current, _ZERO), (_ZERO, target)] if current * target < 0 else [(current, target)]
    legs = [_leg(symbol, start, end, price, opts) for start, end in steps]
    return [leg for leg in legs if leg is not None]


def _leg(
    symbol: str, current: Decimal, target: Decimal, price: Decimal, opts: AllocationOptions
) -> OrderIntent | Skipped | None:
    """The order from ``current`` to ``target`` (same side or one of them zero), if there is one."""
    qty = _leg_qty(current, target, opts)
    if qty == 0:
        return None
    notional = qty * price
    if target != 0 and notional < opts.min_order_notional:
        return Skipped(
            symbol,
            SkipReason.BELOW_MIN_NOTIONAL,
            f"{symbol}: {_signed(target - current)} shares = {notional:,.2f} dollars is below "
            f"min_order_notional {opts.min_order_notional:,.2f}",
        )
    side = OrderSide.BUY if target > current else OrderSide.SELL
    return OrderIntent(
        symbol=symbol,
        side=side,
        qty=qty,
        reference_price=price,
        notional=notional,
        reason=_reason(current, target),
        current_qty=current,
        target_qty=target,
    )


def _leg_qty(current: Decimal, target: Decimal, opts: AllocationOptions) -> Decimal:
    """|target − current|, kept whole in whole-share mode.

    The difference is fractional only when the position itself is (bought elsewhere, or before the
    mode changed). A close trades it exactly so nothing is left; otherwise the quantity is rounded so
    the position ends no bigger than the target: down when growing, up when shrinking.
    """
    qty = abs(target - current)
    if opts.fractional or target == 0 or qty == qty.to_integral_value():
        return qty
    growing = abs(target) > abs(current)
    return qty.to_integral_value(rounding=ROUND_FLOOR if growing else ROUND_CEILING)


def _reason(current: Decimal, target: Decimal) -> IntentReason:
    if current == 0:
        return IntentReason.OPEN
    if target == 0:
        return IntentReason.CLOSE
    return IntentReason.INCREASE if abs(target) > abs(current) else IntentReason.REDUCE


def _signed(value: Decimal) -> str:
    return f"+{value}" if value > 0 else str(value)


def _checked_weights(weights: Mapping[str, Decimal], opts: AllocationOptions) -> dict[str, Decimal]:
    clean: dict[str, Decimal] = {}
    for symbol, raw in weights.items():
        _check_symbol(symbol, "weights")
        weight = _decimal(raw, f"weights[{symbol!r}]")
        if weight < 0 and not opts.allow_short:
            raise AllocationError(
                f"weights[{symbol!r}] = {weight} is negative but shorting is off; "
                "use weights ≥ 0 or AllocationOptions(allow_short=True)"
            )
        clean[symbol] = weight
    gross = sum((abs(w) for w in clean.values()), _ZERO)
    if gross > opts.max_gross_weight + opts.weight_tolerance:
        kind = "sum of weights" if not opts.allow_short else "sum of |weights|"
        raise AllocationError(
            f"{kind} is {gross}, above max_gross_weight {opts.max_gross_weight} "
            f"(tolerance {opts.weight_tolerance}); scale the weights down"
        )
    return clean


def _checked_positions(positions: Mapping[str, Decimal]) -> dict[str, Decimal]:
    clean: dict[str, Decimal] = {}
    for symbol, raw in positions.items():
        _check_symbol(symbol, "positions")
        clean[symbol] = _decimal(raw, f"positions[{symbol!r}]")
    return clean


def _checked_price(prices: Mapping[str, Decimal], symbol: str) -> Decimal | None:
    raw = prices.get(symbol)
    if raw is None:
        return None
    price = _decimal(raw, f"prices[{symbol!r}]")
    if price <= 0:
        raise AllocationError(f"prices[{symbol!r}] = {price}: a price must be positive")
    return price


def _check_symbol(symbol: Any, where: str) -> None:
    if not isinstance(symbol, str) or not symbol.strip():
        raise AllocationError(f"{where} has an empty or non-text symbol: {symbol!r}")


def _decimal(value: Any, name: str) -> Decimal:
    """``value`` as a finite Decimal; floats are refused because they already lost the exact value."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise AllocationError(f"{name} must be a Decimal (or int), not {type(value).__name__}: {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise AllocationError(f"{name} must be a finite number (got {number})")
    return number
