"""AlpacaBroker.replace_order over the scripted fake client: exactly once, like submit, keyed by the new
order's client_order_id. (The paper broker's lose-the-response fault covers POST /v2/orders only, so the
ambiguous replace paths are tested here.)"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
import requests

from tests.unit.broker.fakes import FakeTradingClient, api_error, not_found, server_error
from trader.broker import (
    AmbiguousBrokerError,
    DuplicateClientOrderIdError,
    InvalidOrderError,
    NotFoundError,
    OrderRequest,
    Retrier,
    RetryPolicy,
)
from trader.broker.alpaca import AlpacaBroker, to_sdk_replace_request
from trader.broker.base import BrokerOrder
from trader.domain.enums import OrderSide, OrderStatus, OrderType, TimeInForce


def _broker(client: FakeTradingClient, retries: int = 3) -> tuple[AlpacaBroker, list[float]]:
    slept: list[float] = []
    retrier = Retrier(RetryPolicy(max_retries=retries), sleep=slept.append)
    return AlpacaBroker(client, retrier=retrier), slept  # type: ignore[arg-type]


def _resting(broker: AlpacaBroker) -> BrokerOrder:
    """A resting limit buy of 10 at 100 (placed through the broker, so the fake knows it)."""
    return broker.submit_order(
        OrderRequest(
            client_order_id="resting-1",
            symbol="AAPL",
            side=OrderSide.BUY,
            type=OrderType.LIMIT,
            time_in_force=TimeInForce.DAY,
            qty=Decimal(10),
            limit_price=Decimal(100),
        )
    )


def _setup(client: FakeTradingClient, retries: int = 3) -> tuple[AlpacaBroker, BrokerOrder, list[float]]:
    broker, slept = _broker(client, retries)
    return broker, _resting(broker), slept


def test_a_clean_replace_sends_once_under_a_generated_client_order_id() -> None:
    client = FakeTradingClient()
    broker, old, slept = _setup(client)
    new = broker.replace_order(old.id, qty=Decimal(5), limit_price=Decimal("101.5"))
    assert (client.replace_calls, client.lookup_calls, slept) == (1, 0, [])
    assert new.id != old.id and new.replaces == old.id and new.status is OrderStatus.NEW
    assert (new.qty, new.limit_price) == (Decimal(5), Decimal("101.5"))
    assert len(new.client_order_id) == 32 and new.client_order_id != old.client_order_id
    sent = client.replace_requests[0]
    assert (sent.qty, sent.limit_price, sent.client_order_id) == (5, 101.5, new.client_order_id)
    replaced = client.orders["resting-1"]
    assert replaced["status"] == "replaced" and replaced["replaced_by"] == new.id


def test_the_callers_client_order_id_is_used() -> None:
    client = FakeTradingClient()
    broker, old, _ = _setup(client)
    new = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="mine-2")
    assert new.client_order_id == "mine-2" and new.qty == Decimal(10)  # qty: what was left


def test_lost_response_is_resolved_by_lookup_without_resending() -> None:
    client = FakeTradingClient(replace_steps=["lose"])
    broker, old, _ = _setup(client)
    new = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")
    assert client.replace_calls == 1 and client.lookup_calls == 1
    assert new.id == client.orders["r-1"]["id"] and new.replaces == old.id


@pytest.mark.parametrize(
    "failure", [requests.ReadTimeout("read timed out"), requests.ConnectionError("reset"), server_error(503)]
)
def test_an_ambiguous_failure_that_did_not_land_is_resent_after_the_lookup(failure: Exception) -> None:
    client = FakeTradingClient(replace_steps=[failure, "ok"])
    broker, old, slept = _setup(client)
    new = broker.replace_order(old.id, limit_price=Decimal(99))
    assert client.replace_calls == 2 and client.lookup_calls == 1 and len(slept) == 1
    assert len(client.orders) == 2 and new.replaces == old.id
    assert client.replace_requests[0].client_order_id == client.replace_requests[1].client_order_id


def test_resend_meeting_a_duplicate_returns_the_first_replacement() -> None:
    # Landed, but the lookup could not see it yet (404): the re-send meets 422 40010001.
    client = FakeTradingClient(replace_steps=["lose"], lookup_steps=[not_found(), None])
    broker, old, _ = _setup(client)
    new = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")
    assert client.replace_calls == 2 and len(client.orders) == 2
    assert new.id == client.orders["r-1"]["id"] and new.replaces == old.id


def test_resend_meeting_the_old_order_no_longer_open_returns_the_first_replacement() -> None:
    # A server that checks the old order before the client_order_id (as the paper broker does)
    # answers the re-send with 422 "order is already in replaced state": the lookup resolves it.
    client = FakeTradingClient(
        replace_steps=["lose"], lookup_steps=[not_found(), None], duplicate_check_first=False
    )
    broker, old, _ = _setup(client)
    new = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")
    assert client.replace_calls == 2 and client.lookup_calls == 2 and len(client.orders) == 2
    assert new.id == client.orders["r-1"]["id"]


def test_a_first_refusal_is_raised_without_a_lookup() -> None:
    client = FakeTradingClient()
    broker, old, _ = _setup(client)
    broker.replace_order(old.id, limit_price=Decimal(99))
    with pytest.raises(InvalidOrderError, match="replaced"):
        broker.replace_order(old.id, limit_price=Decimal(98))
    assert client.lookup_calls == 0 and client.replace_calls == 2


def test_a_refusal_under_the_callers_id_is_checked_by_lookup() -> None:
    client = FakeTradingClient(duplicate_check_first=False)
    broker, old, _ = _setup(client)
    first = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")
    again = broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")  # e.g. after a crash
    assert again == first and client.replace_calls == 2 and client.lookup_calls == 1
    with pytest.raises(InvalidOrderError, match="replaced"):  # not found under that id: the refusal stands
        broker.replace_order(old.id, limit_price=Decimal(98), client_order_id="r-2")
    assert client.lookup_calls == 2


def test_lookup_failures_are_retried_then_reported_as_ambiguous() -> None:
    client = FakeTradingClient(replace_steps=["lose"], lookup_steps=[server_error(503)] * 10)
    broker, old, _ = _setup(client, retries=2)
    with pytest.raises(AmbiguousBrokerError) as caught:
        broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="r-1")
    assert caught.value.client_order_id == "r-1" and caught.value.operation == "replace order"
    assert client.replace_calls == 1  # never re-sent while the outcome is unknown
    assert client.lookup_calls == 3


def test_every_retry_ambiguous_and_not_found_ends_ambiguous() -> None:
    client = FakeTradingClient(replace_steps=[server_error(502)] * 10)
    broker, old, _ = _setup(client, retries=2)
    with pytest.raises(AmbiguousBrokerError, match="outcome unknown"):
        broker.replace_order(old.id, limit_price=Decimal(99))
    assert client.replace_calls == 3 and client.lookup_calls == 3


def test_a_client_order_id_of_another_order_is_refused() -> None:
    client = FakeTradingClient()
    broker, old, _ = _setup(client)
    with pytest.raises(DuplicateClientOrderIdError, match="does not replace"):
        broker.replace_order(old.id, limit_price=Decimal(99), client_order_id="resting-1")


def test_rate_limit_is_waited_out_and_resent() -> None:
    limited = api_error(429, {"code": 42910000, "message": "rate limit exceeded"}, {"Retry-After": "1"})
    client = FakeTradingClient(replace_steps=[limited, "ok"])
    broker, old, slept = _setup(client)
    broker.replace_order(old.id, limit_price=Decimal(99))
    assert client.replace_calls == 2 and client.lookup_calls == 0 and slept == [1.0]


def test_unknown_orders_and_bad_replacements_never_reach_the_broker() -> None:
    client = FakeTradingClient()
    broker, old, _ = _setup(client)
    with pytest.raises(NotFoundError):
        broker.replace_order("not-a-uuid", qty=Decimal(1))
    with pytest.raises(NotFoundError):
        broker.replace_order(str(uuid.uuid4()), qty=Decimal(1))
    assert client.replace_calls == 1  # only the well-formed unknown id was sent
    with pytest.raises(InvalidOrderError, match="nothing to change"):
        broker.replace_order(old.id)
    with pytest.raises(InvalidOrderError, match="whole number"):
        broker.replace_order(old.id, qty=Decimal("1.5"))
    with pytest.raises(InvalidOrderError, match="must be positive"):
        broker.replace_order(old.id, limit_price=Decimal(0))
    with pytest.raises(InvalidOrderError, match="client_order_id"):
        broker.replace_order(old.id, qty=Decimal(1), client_order_id="x" * 129)
    assert client.replace_calls == 1


def test_sdk_replace_request_carries_our_fields() -> None:
    sdk = to_sdk_replace_request(
        "c-1", qty=Decimal(3), stop_price=Decimal("9.5"), time_in_force=TimeInForce.GTC
    )
    assert (sdk.qty, sdk.stop_price, sdk.limit_price, sdk.client_order_id) == (3, 9.5, None, "c-1")
    assert sdk.time_in_force is not None and sdk.time_in_force.value == "gtc"
