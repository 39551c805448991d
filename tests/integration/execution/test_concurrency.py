"""A status update and a fill of the same order, in two transactions at once, in opposite orders.

Both writers take the position lock before the order row, so neither waits for the other in the
opposite order (no deadlock), and both changes are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.integration.execution.test_orders import broker_order
from tests.integration.portfolio.ledger_support import BUY, at, books, fill, new_order
from trader.broker.base import TradeUpdate
from trader.domain.enums import OrderStatus
from trader.execution.orders import apply_broker_update, get_order
from trader.portfolio.ledger import Fill, apply_fill
from trader.store.db import session_factory, transaction

D = Decimal
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def run_together(engine: Engine, jobs: list[Callable[[Session], None]]) -> list[BaseException]:
    factory = session_factory(engine)
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def thread(job: Callable[[Session], None]) -> None:
        try:
            barrier.wait(timeout=10)
            with transaction(factory) as session:
                job(session)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_status_then_fill_and_fill_then_status_do_not_deadlock(migrated_engine: Engine) -> None:
    for n in range(5):
        strategy = f"dl{n}"
        coid = new_order(migrated_engine, strategy, BUY, "10")
        partial = TradeUpdate(
            "partial_fill", broker_order(coid, OrderStatus.PARTIALLY_FILLED, order_id=f"b{n}"), T0
        )
        filled = TradeUpdate("fill", broker_order(coid, OrderStatus.FILLED, order_id=f"b{n}"), T0)
        first = fill(coid, f"{strategy}-1", BUY, "4", "100", at(15), cumulative="4", average="100")
        second = fill(coid, f"{strategy}-2", BUY, "6", "100", at(15, 1), cumulative="10", average="100")

        def status_first(session: Session, update: TradeUpdate = partial, f: Fill = first) -> None:
            apply_broker_update(session, update)
            apply_fill(session, f)

        def fill_first(session: Session, update: TradeUpdate = filled, f: Fill = second) -> None:
            apply_fill(session, f)
            apply_broker_update(session, update)

        assert run_together(migrated_engine, [status_first, fill_first]) == []
        assert books(migrated_engine, strategy).position == (10, 100, 0)
        with session_factory(migrated_engine)() as session:
            order = get_order(session, coid)
            assert order is not None and (order.status, order.filled_qty) == ("filled", 10)
