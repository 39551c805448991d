"""Issue #4's acceptance test: faults that lose responses never make an order twice or lose one."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal

import pytest

from tests.integration.broker.conftest import alpaca_broker, set_faults
from tests.support.paper_broker import RunningBroker
from trader.broker import OrderQuery, OrderRequest, new_client_order_id
from trader.broker.alpaca import AlpacaBroker
from trader.domain.enums import OrderSide, OrderType, TimeInForce
from trader.paperbroker.settings import FaultSettings

SYMBOLS = [f"SYN{n:03d}" for n in range(10)]


def _far_limit_buy(n: int) -> OrderRequest:
    # $1 limits never fill: the test counts orders, not fills, and buying power stays ample.
    return OrderRequest(
        client_order_id=new_client_order_id(f"eo{n:04d}-"),
        symbol=SYMBOLS[n % len(SYMBOLS)],
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        qty=Decimal(1),
        limit_price=Decimal(1),
    )


def _submit_all(broker: AlpacaBroker, count: int) -> dict[str, str]:
    """Submit ``count`` orders; return client_order_id → the broker id each submit returned."""
    returned: dict[str, str] = {}
    for n in range(count):
        request = _far_limit_buy(n)
        order = broker.submit_order(request)
        assert order.client_order_id == request.client_order_id
        returned[request.client_order_id] = order.id
    return returned


def _assert_exactly(running: RunningBroker, broker: AlpacaBroker, returned: dict[str, str]) -> None:
    set_faults(running, error_rate=0.0, lose_response_rate=0.0, timeout_rate=0.0)
    at_broker = broker.list_orders(OrderQuery.ALL)
    coids = [order.client_order_id for order in at_broker]
    assert len(at_broker) == len(returned), "orders created at the broker"
    assert len(set(coids)) == len(coids), "no client_order_id twice"
    assert {order.client_order_id: order.id for order in at_broker} == returned, "none lost, ids agree"


@pytest.mark.slow
def test_500_orders_with_lost_responses_and_5xx_make_exactly_500(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> None:
    faults = FaultSettings(lose_response_rate=0.5, error_rate=0.2, rate_limit_per_minute=0, seed=42)
    with paper_broker_factory(faults) as running:
        broker = alpaca_broker(running)
        returned = _submit_all(broker, 500)
        injected = set_faults(running)["injected"]
        # The faults really happened (roughly 50 % and 20 % of their draws).
        assert injected.get("lost_response", 0) > 150
        assert injected.get("server_error", 0) > 100
        _assert_exactly(running, broker, returned)


@pytest.mark.slow
def test_timeouts_on_submit_are_resolved_by_lookup(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> None:
    # The paper broker holds a timed-out request without doing it; our 0.25 s timeout gives up first.
    faults = FaultSettings(
        timeout_rate=0.15, timeout_seconds=1.0, lose_response_rate=0.3, rate_limit_per_minute=0, seed=5
    )
    with paper_broker_factory(faults) as running:
        broker = alpaca_broker(running, timeout=0.25)
        returned = _submit_all(broker, 60)
        assert set_faults(running)["injected"].get("timeout", 0) > 0
        _assert_exactly(running, broker, returned)


def test_rate_limit_is_waited_out(
    paper_broker_factory: Callable[..., AbstractContextManager[RunningBroker]],
) -> None:
    with paper_broker_factory(FaultSettings(rate_limit_per_minute=5)) as running:
        broker = alpaca_broker(running)
        # 5 requests are allowed per 60 s: the 6th gets 429; with max_delay 0.05 s our 12 retries do
        # not outwait a 60 s window, so the error surfaces typed and retry-safe.
        from trader.broker import RateLimitError

        for _ in range(5):
            broker.get_clock()
        with pytest.raises(RateLimitError) as caught:
            broker.get_clock()
        assert caught.value.retry_safe
        assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 61
