"""The pre-trade risk engine: checks a batch of orders in order, each against the account as it will
be once the batch's earlier approved orders fill.

Projecting the batch matters: two orders each under the gross exposure cap can be over it together,
and the second must see the first. A refused order changes nothing in the projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from trader.risk.checks import RULES, OrderContext, ProposedOrder, RiskDecision, RiskOptions, Rule
from trader.risk.limits import EffectiveLimits, money
from trader.risk.snapshot import PortfolioSnapshot


@dataclass(frozen=True)
class OrderVerdict:
    """The engine's answer for one order of a batch."""

    strategy_id: str
    order: ProposedOrder
    decision: RiskDecision

    @property
    def approved(self) -> bool:
        return self.decision.approved


class _Projection:
    """Positions, marks, gross exposure and buying power as they will be after the approved orders."""

    def __init__(self, snapshot: PortfolioSnapshot) -> None:
        self.positions = {symbol: holding.qty for symbol, holding in snapshot.positions.items()}
        self.marks = {symbol: holding.price for symbol, holding in snapshot.positions.items()}
        self.gross = snapshot.gross_exposure
        self.buying_power = snapshot.buying_power

    def apply(self, ctx: OrderContext) -> None:
        symbol = ctx.order.symbol
        self.gross = ctx.gross_after
        self.positions[symbol] = ctx.position_after
        self.marks[symbol] = ctx.order.price
        if not ctx.risk_reducing:
            self.buying_power -= ctx.order.notional


class RiskEngine:
    """Checks orders for one strategy against its :class:`EffectiveLimits` and :class:`RiskOptions`."""

    def __init__(self, limits: EffectiveLimits, options: RiskOptions | None = None) -> None:
        self.limits = limits
        self.options = options or RiskOptions()

    def check(self, orders: Sequence[ProposedOrder], snapshot: PortfolioSnapshot) -> list[OrderVerdict]:
        """One verdict per order, in the given order; approved orders update the projection."""
        projection = _Projection(snapshot)
        verdicts: list[OrderVerdict] = []
        for order in orders:
            ctx = OrderContext(
                order=order,
                limits=self.limits,
                options=self.options,
                position_before=projection.positions.get(order.symbol, Decimal(0)),
                mark_before=projection.marks.get(order.symbol),
                gross_before=projection.gross,
                buying_power=projection.buying_power,
                day_pnl=snapshot.day_pnl,
                market_open=snapshot.market_open,
            )
            decision = self.decide(ctx)
            if decision.approved:
                projection.apply(ctx)
            verdicts.append(OrderVerdict(self.limits.strategy_id, order, decision))
        return verdicts

    @staticmethod
    def decide(ctx: OrderContext) -> RiskDecision:
        """The first refusal among :data:`~trader.risk.checks.RULES`, else an approval."""
        for rule in RULES:
            decision = rule(ctx)
            if not decision.approved:
                return decision
        reason = (
            f"passed {len(RULES)} rules: order notional {money(ctx.order.notional)}, "
            f"{ctx.order.symbol} position after {money(ctx.position_notional_after)}, "
            f"gross exposure after {money(ctx.gross_after)}"
            + ("; risk-reducing" if ctx.risk_reducing else "")
        )
        details = ctx.details(gross_after=ctx.gross_after, buying_power=ctx.buying_power)
        return RiskDecision(True, Rule.ALL.value, reason, details)


def check_orders(
    orders: Sequence[ProposedOrder],
    snapshot: PortfolioSnapshot,
    limits: EffectiveLimits,
    options: RiskOptions | None = None,
) -> list[OrderVerdict]:
    """Shorthand for ``RiskEngine(limits, options).check(orders, snapshot)``."""
    return RiskEngine(limits, options).check(orders, snapshot)
