"""Every REST call of ``AlpacaBroker`` against the paper broker, and the typed errors it answers with."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest

from tests.integration.broker.conftest import alpaca_broker
from tests.support.paper_broker import RunningBroker
from trader.broker import (
    AuthError,
    Broker,
    DuplicateClientOrderIdError,
    InsufficientFundsError,
    InvalidOrderError,
    NotCancelableError,
    NotFoundError,
    OrderQuery,
    OrderRequest,
    new_client_order_id,
)
from trader.broker.alpaca import AlpacaBroker
from trader.config import Settings
from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce


def _order(symbol: str = "SYN004", qty: str = "2", **changes: object) -> OrderRequest:
    fields: dict[str, object] = {
        "client_order_id": new_client_order_id("rest-"),
        "symbol": symbol,
        "side": OrderSide.BUY,
        "type": OrderType.MARKET,
        "time_in_force": TimeInForce.DAY,
        "qty": Decimal(qty),
    }
    return OrderRequest(**(fields | changes))  # type: ignore[arg-type]


def _wait_filled(broker: AlpacaBroker, order_id: str) -> None:
    deadline = time.monotonic() + 5
    while broker.get_order(order_id).status is not OrderStatus.FILLED:
        assert time.monotonic() < deadline, "order did not fill"
        time.sleep(0.05)


def test_alpaca_broker_is_a_broker(broker: AlpacaBroker) -> None:
    assert isinstance(broker, Broker)


def test_account_and_clock(broker: AlpacaBroker) -> None:
    account = broker.get_account()
    assert account.cash == Decimal("100000") and account.status == "ACTIVE" and account.currency == "USD"
    clock = broker.get_clock()
    assert (
        clock.is_open
        and clock.timestamp.utcoffset() is not None
        and clock.timestamp.utcoffset().total_seconds() == 0
    )
    assert clock.next_close > clock.timestamp


def test_order_lifecycle_and_positions(broker: AlpacaBroker) -> None:
    request = _order()
    order = broker.submit_order(request)
    assert order.client_order_id == request.client_order_id and order.qty == Decimal(2)
    _wait_filled(broker, order.id)
    again = broker.get_order_by_client_id(request.client_order_id)
    assert again is not None and again.id == order.id and again.filled_qty == Decimal(2)
    assert again.filled_avg_price is not None and again.filled_avg_price > 0

    position = broker.get_position("SYN004")
    assert position is not None and position.qty == Decimal(2) and position.side is PositionSide.LONG
    assert [p.symbol for p in broker.get_positions()] == ["SYN004"]

    closing = broker.close_position("SYN004", qty=Decimal(1))
    assert closing.side is OrderSide.SELL and closing.qty == Decimal(1)
    _wait_filled(broker, closing.id)
    results = broker.close_all_positions()
    assert [(r.symbol, r.ok) for r in results] == [("SYN004", True)]
    assert results[0].order is not None and results[0].order.qty == Decimal(1)


def test_open_orders_cancel_and_cancel_all(broker: AlpacaBroker) -> None:
    resting = [
        broker.submit_order(
            _order(type=OrderType.LIMIT, limit_price=Decimal(1), time_in_force=TimeInForce.GTC)
        )
        for _ in range(3)
    ]
    assert {o.id for o in broker.list_open_orders()} == {o.id for o in resting}
    broker.cancel_order(resting[0].id)
    assert broker.get_order(resting[0].id).status is OrderStatus.CANCELED
    with pytest.raises(NotCancelableError):
        broker.cancel_order(resting[0].id)
    results = broker.cancel_all_orders()
    assert sorted(r.order_id for r in results if r.ok) == sorted(o.id for o in resting[1:])
    assert broker.list_open_orders() == []
    closed = broker.list_orders(OrderQuery.CLOSED)
    assert len(closed) == 3 and all(o.status is OrderStatus.CANCELED for o in closed)
    assert broker.list_orders(OrderQuery.ALL, symbols=["SYN999"]) == []


def test_lookups_of_unknown_things(broker: AlpacaBroker) -> None:
    assert broker.get_order_by_client_id("never-sent") is None
    assert broker.get_position("SYN005") is None
    with pytest.raises(NotFoundError):
        broker.get_order(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        broker.get_order("not-a-uuid")
    with pytest.raises(NotFoundError):
        broker.close_position("SYN005")


def test_refusals_are_typed_and_not_retried(broker: AlpacaBroker) -> None:
    with pytest.raises(InvalidOrderError, match="HTTP 422"):
        broker.submit_order(_order(symbol="ZZZZNOTREAL"))
    with pytest.raises(InsufficientFundsError, match="HTTP 403"):
        broker.submit_order(_order(qty="1000000"))
    first = broker.submit_order(_order())
    again = broker.submit_order(_order(client_order_id=first.client_order_id))
    assert again.id == first.id  # the same request again is idempotent
    with pytest.raises(DuplicateClientOrderIdError):
        broker.submit_order(_order(client_order_id=first.client_order_id, qty="3"))


def test_wrong_keys_are_an_auth_error(paper_broker: RunningBroker) -> None:
    settings = Settings(
        alpaca_base_url=paper_broker.url,
        alpaca_api_key_id="PKWRONG",
        alpaca_api_secret_key="wrong-secret-value",
    )
    broker = AlpacaBroker.from_settings(settings)
    with pytest.raises(AuthError) as caught:
        broker.get_account()
    assert "wrong-secret-value" not in str(caught.value)


def test_a_broker_that_went_away_is_a_temporary_error(paper_broker: RunningBroker) -> None:
    from trader.broker import RetryPolicy, TemporaryBrokerError

    broker = alpaca_broker(paper_broker, policy=RetryPolicy(max_retries=1, base_delay=0.01))
    broker.client._base_url = "http://127.0.0.1:9"  # discard port: connection refused
    with pytest.raises(TemporaryBrokerError):
        broker.get_clock()


def test_replace_a_resting_limit_order(broker: AlpacaBroker) -> None:
    old = broker.submit_order(
        _order(type=OrderType.LIMIT, limit_price=Decimal(1), time_in_force=TimeInForce.GTC, qty="4")
    )
    new = broker.replace_order(old.id, qty=Decimal(3), limit_price=Decimal("1.25"))
    assert new.id != old.id and new.replaces == old.id
    assert (new.qty, new.limit_price, new.time_in_force) == (Decimal(3), Decimal("1.25"), TimeInForce.GTC)
    assert new.client_order_id not in {"", old.client_order_id}
    replaced = broker.get_order(old.id)
    assert replaced.status is OrderStatus.REPLACED and replaced.replaced_by == new.id
    assert broker.get_order_by_client_id(new.client_order_id) == broker.get_order(new.id)
    assert [o.id for o in broker.list_open_orders()] == [new.id]
    # Replacing the replaced order again is refused, and typed.
    with pytest.raises(InvalidOrderError, match="HTTP 422"):
        broker.replace_order(old.id, limit_price=Decimal("1.5"))
    # The caller's client_order_id is kept; an unknown order is NotFound.
    newer = broker.replace_order(new.id, limit_price=Decimal("1.5"), client_order_id="rest-replace-1")
    assert newer.client_order_id == "rest-replace-1" and newer.replaces == new.id
    # The same call again (e.g. after a crash before the answer was stored) returns the same order.
    again = broker.replace_order(new.id, limit_price=Decimal("1.5"), client_order_id="rest-replace-1")
    assert again.id == newer.id
    with pytest.raises(NotFoundError):
        broker.replace_order(str(uuid.uuid4()), qty=Decimal(1))


def test_sending_a_filled_notional_order_again_returns_it(broker: AlpacaBroker) -> None:
    request = replace(_order(), qty=None, notional=Decimal(100))
    first = broker.submit_order(request)
    _wait_filled(broker, first.id)
    filled = broker.get_order(first.id)
    assert filled.qty is None and filled.notional == Decimal(100) and filled.filled_qty > 0
    assert broker.submit_order(request).id == first.id  # the same order, not a duplicate-id error
