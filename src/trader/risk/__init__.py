"""Pre-trade risk: limits per strategy and global, the rules, the batch engine, and their storage.

Typical use (the execution gateway)::

    limits = resolve_limits(session, "alpha_baseline", settings)
    snapshot = PortfolioSnapshot.from_broker(broker.get_account(), broker.get_positions(), broker.get_clock())
    verdicts = RiskEngine(limits).check([ProposedOrder.from_intent(i, cid) for i, cid in orders], snapshot)
    record_decisions(session, verdicts)  # after the order rows are written

See docs/risk.md for every rule.
"""

from trader.risk.checks import RULES, OrderContext, ProposedOrder, RiskDecision, RiskOptions, Rule
from trader.risk.engine import OrderVerdict, RiskEngine, check_orders
from trader.risk.limits import (
    EffectiveLimits,
    Limit,
    RiskError,
    RiskLimits,
    combine_limits,
    limits_from_settings,
)
from trader.risk.snapshot import Holding, PortfolioSnapshot
from trader.risk.store import (
    delete_limits,
    list_limits,
    load_limits,
    record_decisions,
    resolve_limits,
    upsert_limits,
)

__all__ = [
    "RULES",
    "EffectiveLimits",
    "Holding",
    "Limit",
    "OrderContext",
    "OrderVerdict",
    "PortfolioSnapshot",
    "ProposedOrder",
    "RiskDecision",
    "RiskEngine",
    "RiskError",
    "RiskLimits",
    "RiskOptions",
    "Rule",
    "check_orders",
    "combine_limits",
    "delete_limits",
    "limits_from_settings",
    "list_limits",
    "load_limits",
    "record_decisions",
    "resolve_limits",
    "upsert_limits",
]
