"""One broker trade update, applied whole: its fill (if any) to the ledger, then its status.

This is what the trade-update consumer (stream or webhook) calls, one update per transaction::

    with transaction(factory) as session:
        handle_trade_update(session, update)

Both parts are idempotent, so a repeated, late or replayed update is safe: a fill counts once by its
execution id (or, for a REST catch-up, by the cumulative quantity it covers), and the status only
moves forward (:mod:`trader.execution.state_machine`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.orm import Session

from trader.broker.base import TradeUpdate
from trader.execution.orders import StatusChange, apply_broker_update
from trader.portfolio.ledger import Fill, FillResult, apply_fill


@dataclass(frozen=True)
class UpdateResult:
    """What one trade update did: the fill applied (``None`` if the update carried none) and the status."""

    fill: FillResult | None
    status: StatusChange


def handle_trade_update(
    session: Session, update: TradeUpdate, *, fee: Decimal = Decimal(0), source: str | None = None
) -> UpdateResult:
    """Apply ``update``'s fill, then its status, in the caller's transaction (the caller commits).

    ``fee`` is the fee of this execution when known (Alpaca's stream carries none; fees arrive as
    account activities). ``source`` names the caller in the ``events`` journal (default: each step's
    own). Raises :class:`~trader.execution.orders.UnknownOrderError` for an order never recorded,
    and the ledger's :class:`~trader.portfolio.ledger.FillConflictError` for a fill that contradicts
    its order.
    """
    journal = {"source": source} if source is not None else {}
    fill = Fill.from_trade_update(update, fee=fee)
    applied = apply_fill(session, fill, **journal) if fill is not None else None
    return UpdateResult(fill=applied, status=apply_broker_update(session, update, **journal))
