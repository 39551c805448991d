"""The execution gateway's ``POST /orders`` in DRY_RUN on PostgreSQL: orders per second and p50/p99.

The gateway (``create_gateway_app``, served by uvicorn as ``trader serve gateway`` does) runs in its own
process on a loopback port, on a scratch PostgreSQL database (the server at BENCH_DATABASE_URL, default
the test server) migrated to the newest schema. The broker is kept out of the loop: the risk check reads
a fixed account and price table (``StaticRiskInputs``), and DRY_RUN records instead of sending. So a
request is: HTTP + auth + validation, the idempotency look-up, the order row written before anything
else (``pending_submit`` + journal event), the limits read from ``risk_limits``, the 10 risk rules, the
decision row and the ``dry_run`` transition (+ journal event), and the order read back. Scenarios:

- ``sequential_new``: one client, ``ORDERS`` new orders one after the other (each a new
  ``client_order_id``): the latency of the full path.
- ``sequential_repeat``: the same requests again: the idempotent answer (200, one look-up, nothing written).
- ``concurrent_new``: ``THREADS`` clients at once, ``ORDERS`` new orders in all: throughput.
- ``service_direct``: ``ExecutionService.submit_batch`` for one order, in this process, no HTTP: the
  database part of the cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from tests.support.services import DEFAULT_DATABASE_URL, free_port, postgres_server, scratch_database

from bench.common import latencies_ms, peak_rss_mb, summary_ms, write_result
from trader.config import Settings
from trader.domain.enums import OrderSide
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.execution.snapshots import StaticRiskInputs
from trader.risk.snapshot import PortfolioSnapshot
from trader.store import migrate
from trader.store.db import make_engine

ORDERS = 1000
WARMUP = 50
THREADS = 4
DIRECT = 500
API_KEY = "bench-gateway-key-0123456789abcdef"
SYMBOLS = [f"SYM{n:03d}" for n in range(200)]
PRICES = {symbol: Decimal(10 + n % 90) + Decimal("0.25") for n, symbol in enumerate(SYMBOLS)}
ACCOUNT = PortfolioSnapshot(Decimal(10_000_000), Decimal(10_000_000), Decimal(10_000_000))
# Limits that every benchmark order passes: the full rule set runs, and every order ends dry_run.
LIMITS = {
    "max_order_notional": Decimal(100_000),
    "max_position_notional": Decimal(0),
    "max_gross_exposure": Decimal(0),
}
DAY = "2024-03-05"


def _settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        trader_api_key=API_KEY,
        dry_run=True,
        max_order_notional=LIMITS["max_order_notional"],
        max_position_notional=LIMITS["max_position_notional"],
        max_gross_exposure=LIMITS["max_gross_exposure"],
    )


def serve(port: int, database_url: str) -> None:
    """The child process: the gateway with a fixed account, on ``127.0.0.1:port``, until terminated."""
    import uvicorn

    from trader.execution.gateway import create_gateway_app

    app = create_gateway_app(_settings(database_url), risk_inputs=StaticRiskInputs(ACCOUNT, PRICES))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextmanager
def _gateway(database_url: str) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "bench.bench_gateway", "--serve", str(port), database_url]
    root = Path(__file__).resolve().parent.parent
    child = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, child)
        yield url
    finally:
        child.terminate()
        child.wait(15)


def _wait_up(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"gateway exited: {child.stderr.read().decode() if child.stderr else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not start in 60 s")


def _body(prefix: str, i: int) -> dict[str, Any]:
    """Order ``i`` of a run: each a new client_order_id (intent per run, sequence per order)."""
    return {
        "strategy_id": "bench",
        "symbol": SYMBOLS[i % len(SYMBOLS)],
        "side": "buy",
        "qty": str(1 + i % 5),
        "intent": prefix,
        "sequence": i,
        "trading_date": DAY,
    }


def _poster(client: httpx.Client, prefix: str, expect: int) -> Callable[[int], None]:
    def post(i: int) -> None:
        answer = client.post("/orders", json=_body(prefix, i))
        if answer.status_code != expect or answer.json()["status"] != "dry_run":
            raise RuntimeError(f"unexpected answer {answer.status_code}: {answer.text[:300]}")

    return post


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=30)


def _sequential(url: str) -> tuple[dict[str, float], dict[str, float]]:
    with _client(url) as client:
        latencies_ms(_poster(client, "warm", 201), WARMUP)
        new = summary_ms(latencies_ms(_poster(client, "seq", 201), ORDERS))
        repeat = summary_ms(latencies_ms(_poster(client, "seq", 200), ORDERS))
    return new, repeat


def _concurrent(url: str) -> dict[str, float]:
    per_thread = ORDERS // THREADS
    clients = [_client(url) for _ in range(THREADS)]
    samples: list[list[float]] = []

    def worker(n: int) -> None:
        post = _poster(clients[n], f"conc{n}", 201)
        samples.append(latencies_ms(post, per_thread))

    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    elapsed = time.perf_counter() - start
    for client in clients:
        client.close()
    summary = summary_ms([sample for thread in samples for sample in thread])
    summary["per_second"] = round(THREADS * per_thread / elapsed, 1)
    summary["threads"] = THREADS
    return summary


def _direct(database_url: str) -> dict[str, float]:
    engine = make_engine(database_url)
    service = ExecutionService(engine, None, _settings(database_url))

    def submit(i: int) -> None:
        symbol = SYMBOLS[i % len(SYMBOLS)]
        intent = OrderIntent(
            "bench", date(2024, 3, 5), symbol, OrderSide.BUY, qty=Decimal(1), intent="direct", sequence=i
        )
        service.submit_batch([intent], ACCOUNT, PRICES.get)

    try:
        latencies_ms(lambda i: submit(DIRECT + i), WARMUP)
        return summary_ms(latencies_ms(submit, DIRECT))
    finally:
        engine.dispose()


def main() -> Path:
    results: dict[str, Any] = {
        "orders": ORDERS,
        "warmup": WARMUP,
        "database": "postgresql (scratch database)",
        "transport": "loopback HTTP; gateway in its own process (uvicorn, 1 worker), DRY_RUN, fixed account",
    }
    admin = os.environ.get("BENCH_DATABASE_URL", os.environ.get("TEST_DATABASE_URL", DEFAULT_DATABASE_URL))
    with postgres_server(admin) as admin_url, scratch_database(admin_url, prefix="trader_bench_gw") as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        with _gateway(url) as gateway_url:
            results["sequential_new"], results["sequential_repeat"] = _sequential(gateway_url)
            results["concurrent_new"] = _concurrent(gateway_url)
        results["service_direct"] = _direct(url)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    for name in ("sequential_new", "sequential_repeat", "concurrent_new", "service_direct"):
        s = results[name]
        print(f"   {name:18s} p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, {s['per_second']} orders/s")
    return write_result("gateway", results)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
