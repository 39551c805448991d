"""Order round trip through alpaca-py to the paper broker on loopback: latency (p50/p99) and orders/s.

The paper broker runs as its own process (``trader serve paper-broker``, state in a scratch SQLite
file, clock frozen at a Tuesday 10:00 New York so market orders fill at once and no open orders pile
up; rate limit off). A round trip is one ``submit_order`` call until the broker's order is back.
Buys and sells alternate so positions and buying power stay flat. Scenarios:

- ``get_clock``: a read (``GET /v2/clock``) through the adapter: the HTTP + SDK floor.
- ``sdk_raw``: the bare SDK (``TradingClient.submit_order``, its own re-send disabled).
- ``adapter``: ``AlpacaBroker.submit_order`` (typed errors, retry policy, mapping to our types),
  measured alternately with ``sdk_raw`` so both see the same broker.
- ``adapter_faults``: the same with 50 % accepted-then-lost responses and 20 % 5xx injected, so
  about half the submits also need a lookup by ``client_order_id`` (the cost of exactly-once).
- ``adapter_concurrent``: ``THREADS`` threads, one ``AlpacaBroker`` each: throughput.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import requests
from alpaca.trading.enums import OrderSide as SdkSide
from alpaca.trading.enums import TimeInForce as SdkTimeInForce
from alpaca.trading.requests import MarketOrderRequest
from tests.support.services import free_port

from bench.common import latencies_ms, peak_rss_mb, summary_ms, write_result
from trader.broker import OrderRequest, RetryPolicy, new_client_order_id
from trader.broker.alpaca import AlpacaBroker, make_trading_client
from trader.config import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET, Settings
from trader.domain.enums import OrderSide, OrderType, TimeInForce

ORDERS = 300
WARMUP = 20
THREADS = 4
OPEN_TUESDAY = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
SYMBOLS = [f"SYN{n:03d}" for n in range(10)]
HEADERS = {"APCA-API-KEY-ID": LOCAL_PAPER_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_PAPER_SECRET}
FAULTS = {"lose_response_rate": 0.5, "error_rate": 0.2, "seed": 11}
FAST_RETRIES = RetryPolicy(max_retries=12, base_delay=0.005, max_delay=0.05)
NO_FAULTS = {"lose_response_rate": 0.0, "error_rate": 0.0, "rate_limit_per_minute": 0}


@contextmanager
def _paper_broker() -> Iterator[str]:
    """``trader serve paper-broker`` in a child process on a free port; yields its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        trader = Path(sys.executable).with_name("trader")
        command = [
            str(trader),
            "serve",
            "paper-broker",
            "--port",
            str(port),
            "--rate-limit",
            "0",
            "--database-url",
            f"sqlite:///{Path(tmp) / 'paper.db'}",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPACA_", "PAPER_BROKER_"))}
        child = subprocess.Popen(command, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_up(url, child)
            _admin(url, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
            yield url
        finally:
            child.terminate()
            child.wait(10)


def _wait_up(url: str, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"paper broker exited: {child.stderr.read().decode() if child.stderr else ''}")
        try:
            requests.get(f"{url}/v2/clock", headers=HEADERS, timeout=1).raise_for_status()
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("paper broker did not start in 30 s")


def _admin(url: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = requests.request(method, f"{url}/admin/{path}", json=body, headers=HEADERS, timeout=10)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result


def _broker(url: str) -> AlpacaBroker:
    settings = Settings(alpaca_base_url=url, broker_timeout_seconds=10)
    return AlpacaBroker.from_settings(settings, policy=FAST_RETRIES)


def _request(i: int, prefix: str) -> OrderRequest:
    return OrderRequest(
        client_order_id=new_client_order_id(f"{prefix}-"),
        symbol=SYMBOLS[(i // 2) % len(SYMBOLS)],
        side=OrderSide.BUY if i % 2 == 0 else OrderSide.SELL,
        type=OrderType.MARKET,
        time_in_force=TimeInForce.DAY,
        qty=Decimal(1),
    )


def _adapter_submit(broker: AlpacaBroker, prefix: str) -> Callable[[int], None]:
    def submit(i: int) -> None:
        broker.submit_order(_request(i, prefix))

    return submit


def _sdk_submit(url: str) -> Callable[[int], None]:
    client = make_trading_client(LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET, url, timeout=10)

    def submit(i: int) -> None:
        client.submit_order(
            MarketOrderRequest(
                symbol=SYMBOLS[(i // 2) % len(SYMBOLS)],
                qty=1,
                side=SdkSide.BUY if i % 2 == 0 else SdkSide.SELL,
                time_in_force=SdkTimeInForce.DAY,
                client_order_id=new_client_order_id("raw-"),
            )
        )

    return submit


def _measure(action: Callable[[int], None], count: int = ORDERS) -> dict[str, float]:
    latencies_ms(action, WARMUP)
    return summary_ms(latencies_ms(lambda i: action(i + WARMUP), count))


def _paired(first: Callable[[int], None], second: Callable[[int], None]) -> tuple[dict[str, float], ...]:
    """Both measured in alternation, so that drift in the broker (its state grows) hits both alike."""
    latencies_ms(first, WARMUP)
    latencies_ms(second, WARMUP)
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(ORDERS):
        for action, out in ((first, samples[0]), (second, samples[1])):
            start = time.perf_counter()
            action(WARMUP + i)
            out.append((time.perf_counter() - start) * 1000)
    return summary_ms(samples[0]), summary_ms(samples[1])


def _concurrent(url: str) -> dict[str, float]:
    brokers = [_broker(url) for _ in range(THREADS)]
    per_thread = ORDERS // THREADS * 2
    samples: list[list[float]] = []

    def worker(n: int) -> None:
        samples.append(latencies_ms(_adapter_submit(brokers[n], f"c{n}"), per_thread))

    start = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(worker, range(THREADS)))
    elapsed = time.perf_counter() - start
    summary = summary_ms([sample for thread in samples for sample in thread])
    summary["per_second"] = round(THREADS * per_thread / elapsed, 1)
    summary["threads"] = THREADS
    return summary


def main() -> Path:
    results: dict[str, Any] = {"orders_per_scenario": ORDERS, "warmup": WARMUP, "transport": "loopback HTTP"}
    with _paper_broker() as url:
        _admin(url, "PUT", "faults", NO_FAULTS)
        results["get_clock"] = _measure(lambda i: _broker_clock(url), 200)
        adapter = _adapter_submit(_broker(url), "seq")
        results["sdk_raw"], results["adapter"] = _paired(_sdk_submit(url), adapter)
        _admin(url, "PUT", "faults", FAULTS)
        results["adapter_faults"] = _measure(_adapter_submit(_broker(url), "flt"))
        results["adapter_faults"]["faults"] = FAULTS
        results["adapter_faults"]["injected"] = _admin(url, "PUT", "faults", NO_FAULTS)["injected"]
        results["adapter_concurrent"] = _concurrent(url)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    for name in ("get_clock", "sdk_raw", "adapter", "adapter_faults", "adapter_concurrent"):
        s = results[name]
        print(f"   {name:20s} p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, {s['per_second']}/s")
    return write_result("broker", results)


_CLOCK_BROKERS: dict[str, AlpacaBroker] = {}


def _broker_clock(url: str) -> None:
    """A read round trip (``GET /v2/clock``): the HTTP + SDK floor without any order work."""
    _CLOCK_BROKERS.setdefault(url, _broker(url)).get_clock()


if __name__ == "__main__":
    main()
