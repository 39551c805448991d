"""Order write path on SQLite and PostgreSQL.

The gateway writes each order row *before* sending it (so a crash can never lose an order), in its own
transaction. This measures that commit — one order row plus its journal event — per order, and the
time to migrate an empty database, on both engines. PostgreSQL is the server at BENCH_DATABASE_URL
(default: the test server); a scratch database is created and dropped.
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.support.services import DEFAULT_DATABASE_URL, postgres_server, scratch_database

from bench.common import latencies_ms, peak_rss_mb, summary_ms, write_result
from trader.store import migrate
from trader.store.db import make_engine, session_factory, transaction
from trader.store.models import Event, Order

ORDERS = 2000


def _measure(url: str) -> dict[str, Any]:
    engine = make_engine(url)
    start = time.perf_counter()
    migrate.upgrade(engine)
    migrate_s = time.perf_counter() - start
    factory = session_factory(engine)

    def write_order(i: int) -> None:
        with transaction(factory) as session:
            session.add(
                Order(
                    client_order_id=f"bench-{i:06d}",
                    strategy_id="alpha_baseline",
                    trading_date=date(2024, 3, 5),
                    symbol=f"S{i % 500:03d}",
                    side="buy",
                    qty=Decimal("10"),
                    order_type="market",
                    time_in_force="day",
                    status="pending_submit",
                )
            )
            session.add(
                Event(kind="order_created", source="bench", correlation_id=f"bench-{i:06d}", payload={"i": i})
            )

    samples = latencies_ms(write_order, ORDERS)
    engine.dispose()
    return {"migrate_seconds": round(migrate_s, 3), "order_commit": summary_ms(samples)}


def main() -> Path:
    results: dict[str, Any] = {"orders": ORDERS}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = _measure(f"sqlite:///{Path(tmp) / 'bench.db'}")
    admin = os.environ.get("BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL))
    with postgres_server(admin) as admin_url, scratch_database(admin_url, prefix="trader_bench") as url:
        results["postgresql"] = _measure(url)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    for engine in ("sqlite", "postgresql"):
        s = results[engine]["order_commit"]
        rate = f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, {s['per_second']}/s"
        print(f"   {engine:10s} order row + event, one commit each: {rate}")
    return write_result("store", results)


if __name__ == "__main__":
    main()
