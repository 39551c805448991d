"""The pre-trade risk rules, one function each.

Every rule looks at one order in an :class:`OrderContext` (the order, the applied limits, and the
account as projected after the orders already approved in the same batch) and returns a
:class:`RiskDecision`: approved, or refused with a reason that names the limit and the numbers.

An order is **risk-reducing** when it makes |position| smaller without crossing zero (a sell of a long
position, a buy that covers part or all of a short). Exits must always be possible, so risk-reducing
orders pass the disabled-strategy, blacklist, position, gross exposure, daily loss and buying power
rules. They still obey the order-size limit and market hours.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from functools import cached_property
from typing import Any

from trader.domain.enums import OrderSide
from trader.domain.json import json_ready
from trader.portfolio.allocator import OrderIntent
from trader.risk.limits import EffectiveLimits, Limit, RiskError, finite, money


class Rule(StrEnum):
    """Rule names, as stored in ``risk_decisions.rule``."""

    STRATEGY_ENABLED = "strategy_enabled"
    BLACKLIST = "blacklist"
    POSITION_FLIP = "position_flip"
    SHORT_SELLING = "short_selling"
    MAX_ORDER_NOTIONAL = "max_order_notional"
    MAX_POSITION_NOTIONAL = "max_position_notional"
    MAX_GROSS_EXPOSURE = "max_gross_exposure"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    BUYING_POWER = "buying_power"
    MARKET_HOURS = "market_hours"
    #: The rule of an approved order's decision: every rule passed.
    ALL = "all_rules"


@dataclass(frozen=True)
class RiskOptions:
    """Switches of the risk check (not limits): whether orders may open or add to a short position,
    take a position through zero in one order, and be accepted while the market is closed (they are
    then queued by the broker for the next open)."""

    allow_short: bool = False
    allow_flip: bool = False
    queue_outside_hours: bool = False


@dataclass(frozen=True)
class ProposedOrder:
    """An order to check: positive ``qty``, and the ``price`` its notional is valued at.

    ``client_order_id`` is needed only to record the decision (the gateway sets it).
    """

    symbol: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    client_order_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise RiskError(f"order symbol must be a non-empty string (got {self.symbol!r})")
        object.__setattr__(self, "symbol", self.symbol.strip().upper())
        object.__setattr__(self, "side", OrderSide(self.side))
        for name in ("qty", "price"):
            value = finite(getattr(self, name), f"order {name} ({self.symbol})")
            if value <= 0:
                raise RiskError(f"order {name} ({self.symbol}) must be positive (got {value})")
            object.__setattr__(self, name, value)

    @classmethod
    def from_intent(cls, intent: OrderIntent, client_order_id: str | None = None) -> ProposedOrder:
        """The allocator's order, valued at its reference price."""
        return cls(intent.symbol, intent.side, intent.qty, intent.reference_price, client_order_id)

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price

    @property
    def signed_qty(self) -> Decimal:
        return self.qty if self.side == OrderSide.BUY else -self.qty


@dataclass(frozen=True)
class RiskDecision:
    """One verdict: ``approved``, the ``rule`` that decided, a human ``reason`` and JSON-ready
    ``details`` (numbers as strings, exact)."""

    approved: bool
    rule: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderContext:
    """One order and the account as projected just before it (after the batch's earlier approvals).

    ``mark_before`` is the price the current position is valued at in ``gross_before`` (``None``
    when there is no position).
    """

    order: ProposedOrder
    limits: EffectiveLimits
    options: RiskOptions
    position_before: Decimal
    mark_before: Decimal | None
    gross_before: Decimal
    buying_power: Decimal
    day_pnl: Decimal
    market_open: bool

    @cached_property
    def position_after(self) -> Decimal:
        return self.position_before + self.order.signed_qty

    @cached_property
    def flips(self) -> bool:
        """The order takes the position through zero to the other side."""
        return self.position_before * self.position_after < 0

    @cached_property
    def risk_reducing(self) -> bool:
        """|position| shrinks (possibly to zero) without changing side."""
        return not self.flips and abs(self.position_after) < abs(self.position_before)

    @cached_property
    def position_notional_after(self) -> Decimal:
        return abs(self.position_after) * self.order.price

    @cached_property
    def gross_after(self) -> Decimal:
        """Gross exposure once the order fills, this symbol re-marked at the order's price."""
        before = abs(self.position_before) * (self.mark_before or Decimal(0))
        return self.gross_before - before + self.position_notional_after

    @cached_property
    def _facts(self) -> dict[str, Any]:
        facts = {
            "strategy_id": self.limits.strategy_id,
            "symbol": self.order.symbol,
            "side": self.order.side.value,
            "qty": self.order.qty,
            "price": self.order.price,
            "notional": self.order.notional,
            "position_before": self.position_before,
            "position_after": self.position_after,
            "risk_reducing": self.risk_reducing,
        }
        ready: dict[str, Any] = json_ready(facts)
        return ready

    def details(self, **extra: Any) -> dict[str, Any]:
        """The facts every decision records, plus ``extra`` (Decimals become exact strings)."""
        return {**self._facts, **json_ready(extra)} if extra else dict(self._facts)


def _pass(ctx: OrderContext, rule: Rule, reason: str) -> RiskDecision:
    return RiskDecision(True, rule.value, reason, ctx.details())


def _fail(ctx: OrderContext, rule: Rule, reason: str, **extra: Any) -> RiskDecision:
    return RiskDecision(False, rule.value, reason, ctx.details(**extra))


def _over(ctx: OrderContext, rule: Rule, limit: Limit | None, value: Decimal, what: str) -> RiskDecision:
    """Refuse when ``value`` > ``limit`` (equal passes); ``what`` names the value in the reason."""
    if limit is None:
        return _pass(ctx, rule, f"no {rule.value} limit")
    if value > limit.value:
        return _fail(
            ctx,
            rule,
            f"{what} {money(value)} > {limit.describe()}",
            limit=limit.value,
            limit_source=limit.source,
            value=value,
        )
    return _pass(ctx, rule, f"{what} {money(value)} ≤ {limit.describe()}")


def _describe(order: ProposedOrder) -> str:
    return f"{order.side.value} {order.qty} {order.symbol}"


def check_strategy_enabled(ctx: OrderContext) -> RiskDecision:
    """A disabled strategy (``enabled = false`` in its row or the global row) may only reduce."""
    source = ctx.limits.disabled_by
    if source is None:
        return _pass(ctx, Rule.STRATEGY_ENABLED, "trading enabled")
    if ctx.risk_reducing:
        return _pass(ctx, Rule.STRATEGY_ENABLED, f"trading disabled ({source}) but the order reduces")
    return _fail(
        ctx,
        Rule.STRATEGY_ENABLED,
        f"trading is disabled for strategy {ctx.limits.strategy_id} (enabled = false, {source}); "
        "only orders that reduce a position pass",
        limit_source=source,
    )


def check_blacklist(ctx: OrderContext) -> RiskDecision:
    """A blacklisted symbol may only be reduced (an existing position can always be sold)."""
    source = ctx.limits.blacklist.get(ctx.order.symbol)
    if source is None:
        return _pass(ctx, Rule.BLACKLIST, f"{ctx.order.symbol} not blacklisted")
    if ctx.risk_reducing:
        return _pass(ctx, Rule.BLACKLIST, f"{ctx.order.symbol} blacklisted ({source}) but the order reduces")
    return _fail(
        ctx,
        Rule.BLACKLIST,
        f"{ctx.order.symbol} is blacklisted ({source}); only orders that reduce the position pass",
        limit_source=source,
    )


def check_position_flip(ctx: OrderContext) -> RiskDecision:
    """One order may not take a position through zero unless ``allow_flip``."""
    if not ctx.flips or ctx.options.allow_flip:
        return _pass(
            ctx, Rule.POSITION_FLIP, "does not flip the position" if not ctx.flips else "flip allowed"
        )
    return _fail(
        ctx,
        Rule.POSITION_FLIP,
        f"{_describe(ctx.order)} would take the position from {ctx.position_before} to "
        f"{ctx.position_after}, through zero; close it first (allow_flip is off)",
    )


def check_short_selling(ctx: OrderContext) -> RiskDecision:
    """Opening or adding to a short position needs ``allow_short``; covering never does."""
    adds_short = ctx.position_after < 0 and not ctx.risk_reducing
    if not adds_short or ctx.options.allow_short:
        return _pass(ctx, Rule.SHORT_SELLING, "no new short" if not adds_short else "shorting allowed")
    return _fail(
        ctx,
        Rule.SHORT_SELLING,
        f"{_describe(ctx.order)} would leave a short position of {ctx.position_after}; "
        "shorting is off (allow_short)",
    )


def check_max_order_notional(ctx: OrderContext) -> RiskDecision:
    """qty × price of this order ≤ ``max_order_notional`` (applies to exits too: split big ones)."""
    return _over(
        ctx, Rule.MAX_ORDER_NOTIONAL, ctx.limits.max_order_notional, ctx.order.notional, "order notional"
    )


def check_max_position_notional(ctx: OrderContext) -> RiskDecision:
    """|position after the order| × price ≤ ``max_position_notional`` (reducing orders pass)."""
    if ctx.risk_reducing:
        return _pass(ctx, Rule.MAX_POSITION_NOTIONAL, "reduces the position")
    return _over(
        ctx,
        Rule.MAX_POSITION_NOTIONAL,
        ctx.limits.max_position_notional,
        ctx.position_notional_after,
        f"{ctx.order.symbol} position notional after the order",
    )


def check_max_gross_exposure(ctx: OrderContext) -> RiskDecision:
    """Σ |position| × price after the order ≤ ``max_gross_exposure`` (reducing orders pass)."""
    if ctx.risk_reducing:
        return _pass(ctx, Rule.MAX_GROSS_EXPOSURE, "reduces gross exposure")
    return _over(
        ctx,
        Rule.MAX_GROSS_EXPOSURE,
        ctx.limits.max_gross_exposure,
        ctx.gross_after,
        "gross exposure after the order",
    )


def check_daily_loss_limit(ctx: OrderContext) -> RiskDecision:
    """Once today's P&L is below −``daily_loss_limit``, only risk-reducing orders pass."""
    limit = ctx.limits.daily_loss_limit
    if limit is None:
        return _pass(ctx, Rule.DAILY_LOSS_LIMIT, "no daily_loss_limit")
    if ctx.day_pnl >= -limit.value:
        return _pass(ctx, Rule.DAILY_LOSS_LIMIT, f"today's P&L {money(ctx.day_pnl)} ≥ −{limit.describe()}")
    if ctx.risk_reducing:
        return _pass(ctx, Rule.DAILY_LOSS_LIMIT, "daily loss limit breached but the order reduces")
    return _fail(
        ctx,
        Rule.DAILY_LOSS_LIMIT,
        f"today's P&L {money(ctx.day_pnl)} < −{limit.describe()}; only orders that reduce a position pass",
        limit=limit.value,
        limit_source=limit.source,
        value=ctx.day_pnl,
    )


def check_buying_power(ctx: OrderContext) -> RiskDecision:
    """An order that opens or adds must fit in the buying power left (reducing orders need none).

    Sells do not add buying power back before they fill (as at Alpaca), so the batch never counts on
    money it has not received yet.
    """
    if ctx.risk_reducing:
        return _pass(ctx, Rule.BUYING_POWER, "reduces a position: needs no buying power")
    if ctx.order.notional > ctx.buying_power:
        return _fail(
            ctx,
            Rule.BUYING_POWER,
            f"order notional {money(ctx.order.notional)} > buying power left {money(ctx.buying_power)}",
            value=ctx.order.notional,
            buying_power=ctx.buying_power,
        )
    return _pass(ctx, Rule.BUYING_POWER, f"buying power left {money(ctx.buying_power)}")


def check_market_hours(ctx: OrderContext) -> RiskDecision:
    """Orders go out while the market is open, or any time when ``queue_outside_hours`` is on."""
    if ctx.market_open:
        return _pass(ctx, Rule.MARKET_HOURS, "market open")
    if ctx.options.queue_outside_hours:
        return _pass(ctx, Rule.MARKET_HOURS, "market closed; order queued for the open")
    return _fail(
        ctx,
        Rule.MARKET_HOURS,
        "market is closed (broker clock) and queue_outside_hours is off; send during market hours",
    )


#: Every rule, in the order they are checked: the first refusal decides.
RULES: tuple[Callable[[OrderContext], RiskDecision], ...] = (
    check_strategy_enabled,
    check_blacklist,
    check_position_flip,
    check_short_selling,
    check_max_order_notional,
    check_max_position_notional,
    check_max_gross_exposure,
    check_daily_loss_limit,
    check_buying_power,
    check_market_hours,
)
