"""``trader kill --yes`` and ``trader status`` against the built-in paper broker."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.integration.ops.support import limit, market, send, wait_for
from trader.broker.alpaca import AlpacaBroker
from trader.cli.main import run
from trader.domain.enums import OrderSide


def test_status_then_kill_then_status(
    cli_engine: Engine, broker: AlpacaBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    send(cli_engine, broker, market("SYN001", OrderSide.BUY, 30))
    resting = send(cli_engine, broker, limit("SYN002", OrderSide.BUY, 10, "1.00"))
    wait_for(lambda: len(broker.get_positions()) == 1)

    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "Positions (1)" in out and "SYN001" in out
    assert "Open orders (1)" in out and "SYN002" in out and resting.status.value in out
    assert "today's P&L" in out and "last reconcile: never" in out

    assert run(["kill", "--reason", "runaway", "--yes", "--actor", "ops"]) == 0
    out = capsys.readouterr().out
    assert "TRIPPED: kill: runaway" in out
    assert "canceled 1 order(s)" in out and "closing orders sent for 1 position(s)" in out
    # No fill was booked before the kill (no reconcile ran), so no strategy's book holds SYN001.
    assert "positions our books do not explain, closed whole: SYN001" in out
    wait_for(lambda: not broker.get_positions() and not broker.list_open_orders())

    assert run(["status"]) == 0
    out = capsys.readouterr().out
    assert "Positions (0)" in out and "Open orders (0)" in out and "BLOCKED (exits allowed)" in out
