"""What the risk check needs to know about the account at one moment: a small, typed snapshot.

The gateway builds it from the broker adapter (:meth:`PortfolioSnapshot.from_broker`, from the
:mod:`trader.broker.base` ``Account``, ``Position`` and ``Clock``) or from the database; the risk
rules never call a broker themselves, so they stay pure and fast.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from trader.broker.base import Account, Clock, Position
from trader.risk.limits import RiskError, finite


@dataclass(frozen=True)
class Holding:
    """A position: signed quantity (negative when short) and the price it is marked at."""

    qty: Decimal
    price: Decimal

    def __post_init__(self) -> None:
        object.__setattr__(self, "qty", finite(self.qty, "holding qty"))
        price = finite(self.price, "holding price")
        if price <= 0:
            raise RiskError(f"holding price must be positive (got {price})")
        object.__setattr__(self, "price", price)

    @property
    def exposure(self) -> Decimal:
        """|qty| × price: the dollars this position puts at risk."""
        return abs(self.qty) * self.price


@dataclass(frozen=True)
class PortfolioSnapshot:
    """The account as the pre-trade check sees it.

    ``day_pnl`` is today's realized + unrealized P&L in dollars (negative on a losing day);
    ``market_open`` is the broker clock's answer; ``as_of`` is when the snapshot was taken (UTC).
    """

    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    positions: Mapping[str, Holding] = field(default_factory=dict)
    day_pnl: Decimal = Decimal(0)
    market_open: bool = True
    as_of: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("equity", "cash", "buying_power", "day_pnl"):
            object.__setattr__(self, name, finite(getattr(self, name), name))
        if self.as_of is not None and self.as_of.utcoffset() is None:
            raise RiskError(f"as_of {self.as_of.isoformat()} is naive: give a UTC-aware datetime")
        object.__setattr__(self, "positions", {s.upper(): h for s, h in self.positions.items()})

    @property
    def gross_exposure(self) -> Decimal:
        """Σ |qty| × price over the positions."""
        return sum((holding.exposure for holding in self.positions.values()), Decimal(0))

    @classmethod
    def from_broker(
        cls,
        account: Account,
        positions: Iterable[Position],
        clock: Clock,
        *,
        day_pnl: Decimal | None = None,
    ) -> PortfolioSnapshot:
        """The snapshot from the broker's account, positions and clock.

        Today's P&L defaults to ``equity − last_equity`` (the broker's close of the previous day), which
        counts realized and unrealized P&L alike; pass ``day_pnl`` when the account cannot say.
        Positions are marked at the broker's current price, else market value / qty, else the average
        entry price (a position with no better mark still counts towards exposure).
        """
        if day_pnl is None:
            if account.last_equity is None:
                raise RiskError("today's P&L is unknown: the account has no last_equity; pass day_pnl")
            day_pnl = account.equity - account.last_equity
        return cls(
            equity=account.equity,
            cash=account.cash,
            buying_power=account.buying_power,
            positions={p.symbol.upper(): Holding(p.qty, _mark(p)) for p in positions if p.qty != 0},
            day_pnl=day_pnl,
            market_open=clock.is_open,
            as_of=clock.timestamp,
        )


def _mark(position: Position) -> Decimal:
    if position.current_price is not None and position.current_price > 0:
        return position.current_price
    if position.market_value is not None and position.qty != 0:
        per_share = abs(position.market_value / position.qty)
        if per_share > 0:
            return per_share
    return position.avg_entry_price
