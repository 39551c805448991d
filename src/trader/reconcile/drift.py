"""The pure parts of reconciliation: the configuration, the drift rule and the position rebuild.

Nothing here touches the database or the broker, so the rules can be tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from trader.domain.enums import OrderSide
from trader.errors import ConfigError
from trader.portfolio.ledger import PositionState, position_step

ZERO = Decimal(0)
#: Average prices and realized P&L closer than this are the same (the ledger keeps 34 digits; an
#: edit by hand is never this small).
PRICE_TOLERANCE = Decimal("1e-9")


class ReconcileConfigError(ConfigError):
    """A reconciler setting that cannot work (the message names the field and the fix)."""


@dataclass(frozen=True)
class ReconcileConfig:
    """What the reconciler tolerates and how far back it looks.

    - ``drift_shares`` / ``drift_notional``: a symbol whose broker quantity and internal quantity
      differ by **more than** ``drift_shares`` shares **or** more than ``drift_notional`` dollars
      (the gap valued at the broker's current price) raises a ``reconcile.drift`` alert. Both 0
      (the default): every difference is an alert.
    - ``pending_grace``: a ``pending_submit`` order the broker does not know is left alone this long
      after it was recorded (its sender may still be retrying, or a restarted sender will send it);
      after that it becomes ``submit_failed``. It is never re-sent by the reconciler.
    - ``lookback``: broker orders submitted this long before the broker's clock are listed (plus
      every open order, whatever its age) to find missed fills and orders we never recorded.
    - ``adopt_strategy``: the strategy an order found at the broker but never recorded by us is
      booked under, so the books still add up to the broker's positions.
    - ``snapshots``: write ``snapshots`` rows (positions, open orders, P&L, the run) each run.
    """

    drift_shares: Decimal = ZERO
    drift_notional: Decimal = ZERO
    pending_grace: timedelta = timedelta(minutes=10)
    lookback: timedelta = timedelta(days=3)
    adopt_strategy: str = "external"
    snapshots: bool = True

    def __post_init__(self) -> None:
        for name in ("drift_shares", "drift_notional"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Decimal | int) or not value >= 0:
                raise ReconcileConfigError(f"{name} must be a number of 0 or more (got {value!r})")
        for name in ("pending_grace", "lookback"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value < timedelta(0):
                raise ReconcileConfigError(f"{name} must be a duration of 0 or more (got {value!r})")
        if self.lookback <= timedelta(0):
            raise ReconcileConfigError("lookback must be longer than 0 (e.g. 3 days)")
        if not self.adopt_strategy.strip():
            raise ReconcileConfigError("adopt_strategy is empty: name the strategy for adopted orders")


@dataclass(frozen=True)
class DriftAlert:
    """One symbol whose quantity at the broker differs from ours beyond the thresholds.

    ``recorded_qty`` is the ``positions`` table as the reconciler found it (summed over strategies),
    ``ledger_qty`` what the executions give (what the table holds after healing). ``resolved`` is
    True when healing made the books agree with the broker again (the table had been edited), False
    when the executions themselves disagree with the broker (a trade we cannot see: act by hand).
    """

    symbol: str
    broker_qty: Decimal
    recorded_qty: Decimal
    ledger_qty: Decimal
    price: Decimal | None
    gap_shares: Decimal
    gap_notional: Decimal | None
    resolved: bool


def exceeds(gap_shares: Decimal, price: Decimal | None, config: ReconcileConfig) -> bool:
    """Whether a quantity gap is a drift: more than ``drift_shares`` shares or ``drift_notional`` $.

    Without a price only the share threshold applies.
    """
    gap = abs(gap_shares)
    if gap == 0:
        return False
    if gap > config.drift_shares:
        return True
    return price is not None and gap * abs(price) > config.drift_notional


def drift_alert(
    symbol: str,
    broker_qty: Decimal,
    recorded_qty: Decimal,
    ledger_qty: Decimal,
    price: Decimal | None,
    config: ReconcileConfig,
) -> DriftAlert | None:
    """The alert for one symbol, or ``None`` when neither our table nor our ledger drifted."""
    recorded_gap, ledger_gap = broker_qty - recorded_qty, broker_qty - ledger_qty
    worst = recorded_gap if abs(recorded_gap) >= abs(ledger_gap) else ledger_gap
    if not exceeds(worst, price, config):
        return None
    return DriftAlert(
        symbol=symbol,
        broker_qty=broker_qty,
        recorded_qty=recorded_qty,
        ledger_qty=ledger_qty,
        price=price,
        gap_shares=worst,
        gap_notional=None if price is None else abs(worst * price),
        resolved=not exceeds(ledger_gap, price, config),
    )


@dataclass(frozen=True)
class ExecutionFact:
    """What the position rebuild needs of one execution."""

    executed_at: datetime
    execution_id: str
    side: OrderSide
    qty: Decimal
    price: Decimal
    fee: Decimal = ZERO


def rebuild_position(executions: Iterable[ExecutionFact]) -> PositionState:
    """The position the executions give, applied in execution-time order (as the ledger does)."""
    state = PositionState()
    for fact in sorted(executions, key=lambda e: (e.executed_at, e.execution_id)):
        state = position_step(state, fact.side, fact.qty, fact.price, fact.fee).state
    return state


def same_position(found: PositionState, expected: PositionState) -> bool:
    """Whether a ``positions`` row holds what its executions give (quantity exactly, prices to 1e-9)."""
    return (
        found.qty == expected.qty
        and abs(found.avg_price - expected.avg_price) <= PRICE_TOLERANCE
        and abs(found.realized - expected.realized) <= PRICE_TOLERANCE
    )
