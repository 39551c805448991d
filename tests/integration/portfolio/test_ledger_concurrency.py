"""Two workers (own connections, own transactions) applying fills at the same moment.

On PostgreSQL this is real concurrency; on SQLite the write lock serializes the two. Either way the
same fill must count once, and two different fills of one position must both count.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

from sqlalchemy import Engine

from tests.integration.portfolio.ledger_support import BUY, SELL, at, books, fill, new_order
from trader.portfolio.ledger import Fill, FillOutcome, FillResult, apply_fill
from trader.store.db import session_factory, transaction

D = Decimal
ROUNDS = 5


def race(engine: Engine, fills: list[Fill]) -> list[FillResult]:
    """Apply each fill in its own thread and transaction, all released at once."""
    factory = session_factory(engine)
    barrier = threading.Barrier(len(fills))
    results: list[FillResult] = []
    errors: list[BaseException] = []

    def worker(f: Fill) -> Callable[[], None]:
        def run() -> None:
            try:
                with transaction(factory) as session:
                    barrier.wait(timeout=10)
                    results.append(apply_fill(session, f))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        return run

    threads = [threading.Thread(target=worker(f)) for f in fills]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_the_same_fill_applied_at_once_by_two_workers_counts_once(migrated_engine: Engine) -> None:
    for n in range(ROUNDS):
        strategy = f"same{n}"
        order = new_order(migrated_engine, strategy, BUY, "10")
        the_fill = fill(order, f"e-{n}", BUY, "10", "100", at(15), cumulative="10", average="100")
        outcomes = sorted(r.outcome for r in race(migrated_engine, [the_fill, the_fill]))
        assert outcomes == sorted([FillOutcome.APPLIED, FillOutcome.DUPLICATE])
        got = books(migrated_engine, strategy)
        assert (got.executions, got.position, got.orders) == (1, (10, 100, 0), [(10, 100)])


def test_two_fills_of_one_position_at_once_both_count(migrated_engine: Engine) -> None:
    for n in range(ROUNDS):
        strategy = f"two{n}"
        buy = new_order(migrated_engine, strategy, BUY, "10")
        sell = new_order(migrated_engine, strategy, SELL, "4")
        results = race(
            migrated_engine,
            [
                fill(buy, f"b-{n}", BUY, "10", "100", at(15)),
                fill(sell, f"s-{n}", SELL, "4", "110", at(15, 1)),
            ],
        )
        assert all(r.applied for r in results)
        got = books(migrated_engine, strategy)
        # whichever committed first, the books are those of time order: buy 10, then sell 4
        assert got.position == (6, 100, 40)
        assert [lot[3] for lot in got.lots] == [6]
