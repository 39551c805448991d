"""``TradeUpdateStream.connected`` follows the socket: it is cleared when the broker goes away, not
only when the stream is stopped (the gateway's health and ``trader_trade_updates_connected`` read it),
and set again once a reconnect has caught up."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from tests.integration.broker.conftest import alpaca_broker
from tests.support.paper_broker import RunningBroker


def _until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_connected_is_cleared_when_the_broker_dies(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> None:
    with paper_broker_factory() as running:
        stream = alpaca_broker(running).trade_updates(lambda update: None)
        assert stream.start(timeout=10), "stream did not connect"
    try:
        # The broker has stopped; the stream keeps trying to reconnect in the background.
        assert _until(lambda: not stream.connected.is_set()), "still reported connected to a dead broker"
        assert not stream.finished.is_set()  # not stopped: it reconnects when the broker is back
    finally:
        stream.stop()
    assert stream.finished.is_set()


def test_a_reconnect_reports_connected_again_once_caught_up(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> None:
    with paper_broker_factory() as running:
        stream = alpaca_broker(running).trade_updates(lambda update: None)
        assert stream.start(timeout=10)
        try:
            connects = stream.stats.connects
            stream.reconnect()
            assert _until(lambda: stream.stats.connects > connects and stream.connected.is_set())
        finally:
            stream.stop()
