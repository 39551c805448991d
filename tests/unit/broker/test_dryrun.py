"""DryRunBroker: records what it would send, answers honestly, never fills."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.broker import (
    Broker,
    BrokerError,
    DuplicateClientOrderIdError,
    InvalidOrderError,
    NotFoundError,
    OrderQuery,
    OrderRequest,
)
from trader.broker.base import Position, new_client_order_id
from trader.broker.dryrun import DryRunBroker
from trader.domain.enums import OrderSide, OrderStatus, OrderType, PositionSide, TimeInForce


def _request(coid: str | None = None, qty: str = "5") -> OrderRequest:
    return OrderRequest(
        coid or new_client_order_id(),
        "msft",
        OrderSide.BUY,
        OrderType.LIMIT,
        TimeInForce.DAY,
        qty=Decimal(qty),
        limit_price=Decimal("400.10"),
    )


class _Reader(DryRunBroker):
    """A stand-in for the real broker's reads: one long position."""

    def get_positions(self) -> list[Position]:
        return [Position("AAPL", "id-1", PositionSide.LONG, Decimal(7), Decimal(100), Decimal(700))]

    def get_position(self, symbol: str) -> Position | None:
        return next((p for p in self.get_positions() if p.symbol == symbol), None)


def test_it_is_a_broker() -> None:
    assert isinstance(DryRunBroker(), Broker)


def test_submissions_are_recorded_and_never_fill() -> None:
    broker = DryRunBroker()
    request = _request()
    order = broker.submit_order(request)
    assert order.status is OrderStatus.DRY_RUN and order.is_terminal
    assert order.filled_qty == 0 and order.filled_avg_price is None
    assert (order.symbol, order.qty, order.limit_price) == ("MSFT", Decimal(5), Decimal("400.10"))
    assert broker.submitted == [request]
    assert broker.get_order_by_client_id(request.client_order_id) == order
    assert broker.get_order(order.id) == order
    assert broker.list_open_orders() == []
    assert broker.list_orders(OrderQuery.ALL) == [order]


def test_the_same_request_twice_is_one_order_and_a_different_one_is_refused() -> None:
    broker = DryRunBroker()
    request = _request("same")
    assert broker.submit_order(request) == broker.submit_order(request)
    assert len(broker.submitted) == 1
    with pytest.raises(DuplicateClientOrderIdError):
        broker.submit_order(_request("same", qty="6"))


def test_cancels_and_closes_are_recorded() -> None:
    broker = DryRunBroker(reader=_Reader())
    broker.cancel_order("some-id")
    closing = broker.close_position("AAPL")
    assert (closing.side, closing.qty, closing.status) == (OrderSide.SELL, Decimal(7), OrderStatus.DRY_RUN)
    results = broker.close_all_positions()
    assert [(r.symbol, r.ok) for r in results] == [("AAPL", True)]
    assert [a.kind for a in broker.actions] == ["cancel", "close_position", "close_all_positions"]
    assert broker.get_positions()[0].qty == Decimal(7)  # unchanged: nothing was sent


def test_reads_without_a_reader() -> None:
    broker = DryRunBroker()
    assert broker.get_positions() == [] and broker.get_position("AAPL") is None
    with pytest.raises(NotFoundError):
        broker.close_position("AAPL")
    with pytest.raises(BrokerError, match="no account"):
        broker.get_account()
    with pytest.raises(NotFoundError):
        broker.get_order("nope")


def test_the_stream_is_silent() -> None:
    stream = DryRunBroker().trade_updates(lambda update: None)
    assert stream.start() is True
    stream.run()
    stream.stop()


def test_a_replacement_is_recorded_as_a_new_dry_run_order() -> None:
    broker = DryRunBroker()
    old = broker.submit_order(_request())
    new = broker.replace_order(old.id, qty=Decimal(3), limit_price=Decimal("399"))
    assert new.id != old.id and new.replaces == old.id and new.status is OrderStatus.DRY_RUN
    assert (new.symbol, new.qty, new.limit_price, new.filled_qty) == ("MSFT", Decimal(3), Decimal(399), 0)
    assert len(new.client_order_id) == 32 and new.client_order_id != old.client_order_id
    assert broker.get_order(old.id) == old  # nothing was sent: the old order is unchanged
    assert broker.get_order_by_client_id(new.client_order_id) == new
    action = broker.actions[-1]
    assert (action.kind, action.order_id, action.order) == ("replace", old.id, new)
    assert broker.submitted == [_request(old.client_order_id)]  # a replace is not a submission
    again = broker.replace_order(old.id, qty=Decimal(3), client_order_id=new.client_order_id)
    assert again == new and len(broker.actions) == 2


def test_replacements_alpaca_would_refuse_are_refused() -> None:
    broker = DryRunBroker()
    old = broker.submit_order(_request())
    with pytest.raises(InvalidOrderError, match="nothing to change"):
        broker.replace_order(old.id)
    with pytest.raises(InvalidOrderError, match="stop_price is not allowed"):
        broker.replace_order(old.id, stop_price=Decimal(1))
    with pytest.raises(InvalidOrderError, match="whole number"):
        broker.replace_order(old.id, qty=Decimal("0.5"))
    with pytest.raises(NotFoundError):
        broker.replace_order("nope", qty=Decimal(1))
    with pytest.raises(DuplicateClientOrderIdError):
        broker.replace_order(old.id, qty=Decimal(1), client_order_id=old.client_order_id)
