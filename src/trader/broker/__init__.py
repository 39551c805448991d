"""The broker adapter: one :class:`Broker` interface, Alpaca behind it, a dry run beside it.

``AlpacaBroker`` (real Alpaca or our paper broker: only URL and keys change), ``DryRunBroker``
(records, never sends), typed errors that say whether a retry is safe, and a trade-update stream that
catches up from REST after every reconnect. See ``docs/broker.md``.

Importing this package does no I/O; :func:`broker_from_settings` builds the configured broker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trader.broker.base import (
    Account,
    Broker,
    BrokerOrder,
    CancelResult,
    Clock,
    ClosePositionResult,
    OrderQuery,
    OrderRequest,
    Position,
    TradeEvent,
    TradeUpdate,
    TradeUpdateHandler,
    UpdateStream,
    new_client_order_id,
)
from trader.broker.errors import (
    AmbiguousBrokerError,
    AuthError,
    BrokerError,
    DuplicateClientOrderIdError,
    InsufficientFundsError,
    InvalidOrderError,
    NotCancelableError,
    NotFoundError,
    RateLimitError,
    RejectedOrderError,
    TemporaryBrokerError,
    UnexpectedResponseError,
)
from trader.broker.retry import Retrier, RetryPolicy

if TYPE_CHECKING:
    from trader.config import Settings


def broker_from_settings(settings: Settings) -> Broker:
    """``DryRunBroker`` (reading from the configured broker) under ``DRY_RUN``, else ``AlpacaBroker``."""
    from trader.broker.alpaca import AlpacaBroker
    from trader.broker.dryrun import DryRunBroker

    real: Broker = AlpacaBroker.from_settings(settings)
    return DryRunBroker(reader=real) if settings.dry_run else real


__all__ = [
    "Account",
    "AmbiguousBrokerError",
    "AuthError",
    "Broker",
    "BrokerError",
    "BrokerOrder",
    "CancelResult",
    "Clock",
    "ClosePositionResult",
    "DuplicateClientOrderIdError",
    "InsufficientFundsError",
    "InvalidOrderError",
    "NotCancelableError",
    "NotFoundError",
    "OrderQuery",
    "OrderRequest",
    "Position",
    "RateLimitError",
    "RejectedOrderError",
    "Retrier",
    "RetryPolicy",
    "TemporaryBrokerError",
    "TradeEvent",
    "TradeUpdate",
    "TradeUpdateHandler",
    "UnexpectedResponseError",
    "UpdateStream",
    "broker_from_settings",
    "new_client_order_id",
]
