"""A submitting process for the SIGKILL test, run as a child: records a batch of intents and sends
them one by one through ``ExecutionService`` and ``AlpacaBroker``, as the gateway does.

    python submitter.py DATABASE_URL BROKER_URL KEY_ID SECRET_KEY COUNT HANG_AT

With ``HANG_AT`` >= 0 it stops right after the broker accepted order number ``HANG_AT`` — before the
answer is written to the database, the worst moment to die — prints ``HANG`` and waits to be killed.
"""

from __future__ import annotations

import sys
import time
from datetime import date
from decimal import Decimal
from typing import Any

from trader.broker import RetryPolicy
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import BrokerOrder, OrderRequest
from trader.config import Settings
from trader.domain.enums import OrderSide
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.risk.snapshot import PortfolioSnapshot
from trader.store.db import make_engine

DAY = date(2024, 3, 5)


def intents(count: int) -> list[OrderIntent]:
    """The batch: one market buy per symbol, the same every run (so the ids are the same)."""
    return [
        OrderIntent("kill", DAY, f"SYN{i + 1:03d}", OrderSide.BUY, qty=Decimal(5 + i)) for i in range(count)
    ]


class Hanging:
    """The real broker, except that it never returns from the ``hang_at``-th submission."""

    def __init__(self, broker: AlpacaBroker, hang_at: int) -> None:
        self._broker, self._hang_at, self._sent = broker, hang_at, 0

    def submit_order(self, request: OrderRequest) -> BrokerOrder:
        order = self._broker.submit_order(request)
        if self._sent == self._hang_at:
            print("HANG", flush=True)
            time.sleep(120)
        self._sent += 1
        print(f"SENT {request.client_order_id}", flush=True)
        return order

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)


def main(argv: list[str]) -> None:
    database_url, broker_url, key, secret, count, hang_at = argv
    settings = Settings(
        dry_run=False, alpaca_base_url=broker_url, alpaca_api_key_id=key, alpaca_api_secret_key=secret
    )
    broker = AlpacaBroker.from_settings(settings, policy=RetryPolicy(max_retries=5, base_delay=0.01))
    engine = make_engine(database_url)
    service = ExecutionService(engine, Hanging(broker, int(hang_at)), settings)
    account = PortfolioSnapshot(Decimal(100_000), Decimal(100_000), Decimal(100_000))
    outcomes = service.submit_batch(intents(int(count)), account, lambda _symbol: Decimal(30))
    print("DONE " + " ".join(o.status.value for o in outcomes), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
