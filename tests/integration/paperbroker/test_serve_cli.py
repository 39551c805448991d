"""``trader serve paper-broker`` as a user runs it: a process on a port, restarted, keys from the env."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from tests.support.services import free_port
from trader.cli.main import run
from trader.config import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET

TRADER = [str(Path(sys.executable).parent / "trader")]


@contextmanager
def serving(args: list[str], cwd: Path) -> Iterator[str]:
    """Run ``trader serve paper-broker ARGS`` until the block exits; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [*TRADER, "serve", "paper-broker", "--port", str(port), *args],
        cwd=cwd,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    headers = {"APCA-API-KEY-ID": LOCAL_PAPER_KEY_ID, "APCA-API-SECRET-KEY": LOCAL_PAPER_SECRET}
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"paper broker exited early: {output}")
            try:
                if requests.get(f"{url}/v2/clock", headers=headers, timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "paper broker did not start within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover - only when shutdown hangs
            process.kill()


@pytest.mark.slow
def test_orders_survive_a_restart_of_the_served_broker(tmp_path: Path) -> None:
    args = ["--at", "2024-03-09T15:00:00Z", "--data-dir", str(tmp_path / "data")]  # a Saturday
    with serving(args, tmp_path) as url:
        client = TradingClient(LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET, url_override=url)
        request = LimitOrderRequest(
            symbol="SYN004", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.GTC, limit_price=1.0
        )
        placed = client.submit_order(request)
        assert placed.status == OrderStatus.ACCEPTED
    assert (tmp_path / "var" / "paperbroker.db").exists()  # the default PAPER_BROKER_DATABASE_URL
    with serving(args, tmp_path) as url:
        client = TradingClient(LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET, url_override=url)
        kept = client.get_order_by_id(placed.id)
        assert kept.client_order_id == placed.client_order_id
        assert kept.status == OrderStatus.ACCEPTED


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--at", "yesterday"], "--at: 'yesterday' is not a time"),
        (["--at", "2024-03-05T15:00:00"], "has no timezone"),
        (["--partial-fill-rate", "1.5"], "--partial-fill-rate: 1.5 is not a rate"),
        (["--fault-lose-response-rate", "-0.1"], "--fault-lose-response-rate: -0.1 is not a rate"),
        (["--database-url", "mysql://x/y"], "--database-url: database 'mysql' is not supported"),
        (["--port", "0"], "--port: 0 is not a TCP port"),
    ],
)
def test_bad_flags_are_one_line_errors_with_exit_2(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve", "paper-broker", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
