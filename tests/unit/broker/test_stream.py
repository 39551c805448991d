"""The stream's pure parts: parsing updates exactly, de-duplication, stale drops, synthetic catch-up."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alpaca.trading.models import Order
from alpaca.trading.stream import TradingStream

from tests.unit.broker.fakes import order_json
from trader.broker.alpaca import order_from_sdk
from trader.broker.base import BrokerOrder, TradeUpdate
from trader.broker.stream import HookedTradingStream, Reconciler, parse_trade_update, synthesize
from trader.domain.enums import OrderStatus

T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)
ORDER_ID = "0f6f6b0e-7c5f-4d55-9d36-3a3f1d1f0b01"


def _order(
    status: str = "new", filled: str = "0", avg: str | None = None, at: int = 0, order_id: str = ORDER_ID
) -> BrokerOrder:
    stamp = (T0 + timedelta(seconds=at)).isoformat().replace("+00:00", "Z")
    raw = order_json(
        "c1", order_id=order_id, status=status, filled_qty=filled, filled_avg_price=avg, updated_at=stamp
    )
    return order_from_sdk(Order(**raw))


def _update(event: str, order: BrokerOrder, **extra: object) -> TradeUpdate:
    return TradeUpdate(event, order, order.updated_at, **extra)  # type: ignore[arg-type]


def test_stream_messages_parse_to_exact_decimals() -> None:
    data = {
        "event": "partial_fill",
        "execution_id": "7d3c2c4e-6a1b-4f7e-9a55-0e2b1f9d8c11",
        "order": order_json(status="partially_filled", filled_qty="3", filled_avg_price="187.123456789"),
        "timestamp": "2024-03-05T15:00:01.123456789Z",
        "price": "187.123456789",
        "qty": "3",
        "position_qty": "-7",
    }
    update = parse_trade_update(data)
    assert update.price == Decimal("187.123456789")  # the SDK model would have made it a float
    assert update.qty == Decimal(3) and update.position_qty == Decimal(-7)
    assert update.order.status is OrderStatus.PARTIALLY_FILLED
    assert update.timestamp.tzinfo is UTC and not update.synthetic


def test_repeats_are_dropped() -> None:
    reconciler = Reconciler()
    filled = _order("filled", "10", "100", at=1)
    assert reconciler.accept(_update("new", _order()))
    assert reconciler.accept(_update("fill", filled))
    assert not reconciler.accept(_update("fill", filled))
    assert reconciler.stats.duplicates == 1


def test_older_states_are_dropped() -> None:
    reconciler = Reconciler()
    assert reconciler.accept(_update("fill", _order("filled", "10", "100", at=2)))
    assert not reconciler.accept(_update("partial_fill", _order("partially_filled", "4", "100", at=1)))
    assert not reconciler.accept(_update("new", _order(at=0)))
    assert reconciler.stats.stale == 2


def test_catch_up_reports_only_changes_with_the_missed_quantity_and_its_price() -> None:
    reconciler = Reconciler(since=T0)
    reconciler.accept(_update("partial_fill", _order("partially_filled", "4", "100", at=1)))
    # 6 more filled at 110 while away: cumulative average (4*100 + 6*110) / 10 = 106.
    now = _order("filled", "10", "106", at=5)
    [update] = reconciler.catch_up([now], deliver_new=True)
    assert (update.event, update.qty, update.price, update.synthetic) == (
        "fill",
        Decimal(6),
        Decimal(110),
        True,
    )
    reconciler.delivered(update)
    assert reconciler.catch_up([now], deliver_new=True) == []  # nothing new the second time
    assert ORDER_ID not in reconciler.open_ids


def test_a_fill_then_cancel_while_away_comes_as_two_updates() -> None:
    seen = Reconciler(since=T0)
    seen.accept(_update("new", _order()))
    updates = seen.catch_up([_order("canceled", "3", "50", at=3)], deliver_new=True)
    assert [(u.event, u.qty) for u in updates] == [("partial_fill", Decimal(3)), ("canceled", None)]


def test_baseline_remembers_without_delivering() -> None:
    reconciler = Reconciler()
    assert reconciler.catch_up([_order()], deliver_new=False) == []
    assert ORDER_ID in reconciler.open_ids
    # the live fill that follows is delivered; the baseline's "new" is not repeated
    assert reconciler.accept(_update("fill", _order("filled", "10", "100", at=1)))


def test_orders_changed_before_since_are_not_replayed() -> None:
    reconciler = Reconciler(since=T0 + timedelta(seconds=10))
    assert reconciler.catch_up([_order("filled", "10", "100", at=5)], deliver_new=True) == []
    other = "5b0c1f3e-2d4a-4e6b-8f7a-9c0d1e2f3a4b"
    assert (
        len(reconciler.catch_up([_order("filled", "10", "100", at=10, order_id=other)], deliver_new=True))
        == 1
    )


def test_a_fill_the_handler_failed_on_is_not_remembered_and_the_catch_up_brings_it_again() -> None:
    reconciler = Reconciler(since=T0)
    assert reconciler.accept(_update("new", _order()))
    fill = _update("fill", _order("filled", "10", "100", at=1), execution_id="e1", qty=Decimal(10))
    assert reconciler.admits(fill)
    reconciler.failed(fill)  # e.g. the database went away mid-transaction
    assert ORDER_ID in reconciler.retry_ids and reconciler.stats.handler_errors == 1
    [again] = reconciler.catch_up([_order("filled", "10", "100", at=1)], deliver_new=True)
    assert (again.event, again.qty, again.price, again.synthetic) == ("fill", Decimal(10), Decimal(100), True)
    reconciler.delivered(again)
    assert not reconciler.retry_ids
    assert reconciler.catch_up([_order("filled", "10", "100", at=1)], deliver_new=True) == []


def _failed_partial_then_live_fill() -> tuple[Reconciler, TradeUpdate]:
    reconciler = Reconciler(since=T0)
    reconciler.accept(_update("new", _order()))
    reconciler.failed(_update("partial_fill", _order("partially_filled", "4", "100", at=1)))
    live = _update("fill", _order("filled", "10", "104", at=2), execution_id="e2", qty=Decimal(6))
    # Delivered now, the live fill of the last 6 would skip the failed partial fill of 4.
    assert not reconciler.admits(live) and reconciler.stats.deferred == 1
    assert reconciler.release() == []  # still awaiting re-delivery
    return reconciler, live


def test_a_live_update_held_back_is_dropped_when_the_redelivery_covered_it() -> None:
    reconciler, live = _failed_partial_then_live_fill()
    [update] = reconciler.catch_up([live.order], deliver_new=True)
    assert (update.event, update.qty, update.price) == ("fill", Decimal(10), Decimal(104))
    reconciler.delivered(update)
    assert reconciler.release() == [live]
    assert not reconciler.admits(live)  # a repeat of what the catch-up delivered


def test_a_live_update_held_back_follows_a_redelivery_that_did_not_cover_it() -> None:
    reconciler, live = _failed_partial_then_live_fill()
    # The catch-up read the order before the fill: it re-delivers the partial fill only.
    [update] = reconciler.catch_up([_order("partially_filled", "4", "100", at=1)], deliver_new=True)
    assert (update.event, update.qty) == ("partial_fill", Decimal(4))
    reconciler.delivered(update)
    assert reconciler.release() == [live]
    assert reconciler.admits(live)  # the last 6, with their own execution id
    assert reconciler.release() == []


def test_a_failed_first_update_comes_again_after_the_watermark_moved_on() -> None:
    reconciler = Reconciler(since=T0)
    reconciler.failed(_update("fill", _order("filled", "10", "100", at=1)))
    other = "5b0c1f3e-2d4a-4e6b-8f7a-9c0d1e2f3a4b"
    assert reconciler.accept(_update("new", _order(at=9, order_id=other)))  # watermark: T0 + 9 s
    [update] = reconciler.catch_up([_order("filled", "10", "100", at=1)], deliver_new=True)
    assert (update.order.id, update.event, update.qty) == (ORDER_ID, "fill", Decimal(10))


def test_a_failed_update_that_changed_nothing_is_not_retried_for_ever() -> None:
    reconciler = Reconciler(since=T0)
    reconciler.accept(_update("new", _order()))
    reconciler.failed(_update("order_cancel_rejected", _order(at=1)))
    assert reconciler.catch_up([_order(at=1)], deliver_new=True) == []
    assert not reconciler.retry_ids


def test_synthesize_from_nothing() -> None:
    [update] = synthesize(_order("filled", "10", "101.5", at=1), None)
    assert (update.event, update.qty, update.price) == ("fill", Decimal(10), Decimal("101.5"))


def test_memory_is_bounded() -> None:
    reconciler = Reconciler(max_tracked=3)
    for n in range(10):
        raw = order_json(f"c{n}", status="filled", filled_qty="1", filled_avg_price="1")
        reconciler.accept(_update("fill", order_from_sdk(Order(**raw))))
    assert len(reconciler._seen) == 3


def test_the_sdk_hook_we_rely_on_exists() -> None:
    # HookedTradingStream overrides TradingStream._start_ws (private): fail loudly if it disappears.
    assert inspect.iscoroutinefunction(TradingStream._start_ws)
    assert "_start_ws" in HookedTradingStream.__dict__
    stream = HookedTradingStream("k", "s", raw_data=True, url_override="ws://127.0.0.1:1/stream")
    assert hasattr(stream, "_reconnect_min_backoff") and hasattr(stream, "_loop")


def test_stopping_a_stream_that_never_ran_returns_at_once() -> None:
    from trader.broker.stream import TradeUpdateStream

    stream = TradeUpdateStream(lambda: None, None, lambda update: None)  # type: ignore[arg-type, return-value]
    stream.stop(timeout=5)
    assert not stream.finished.is_set()


def test_an_update_that_always_fails_is_given_up_on_and_later_updates_flow_again() -> None:
    # A handler bug (or a row it keeps refusing) must not hold the order's updates back for ever:
    # after max_attempts failures the update counts as delivered and the held updates are released.
    reconciler = Reconciler(since=T0, max_attempts=3)
    reconciler.accept(_update("new", _order()))
    bad = _update("partial_fill", _order("partially_filled", "4", "100", at=1))
    assert reconciler.failed(bad) is False and reconciler.failed(bad) is False
    live = _update("fill", _order("filled", "10", "104", at=2), execution_id="e2", qty=Decimal(6))
    assert not reconciler.admits(live)  # held back behind the failing update
    assert reconciler.failed(bad) is True  # the third failure: given up on
    assert not reconciler.retry_ids and reconciler.stats.abandoned == 1
    assert reconciler.release() == [live] and reconciler.admits(live)
    # The given-up update is not delivered again by a catch-up of the same state.
    assert reconciler.catch_up([bad.order], deliver_new=True) == []


def test_a_delivery_in_between_resets_the_count_of_failures() -> None:
    reconciler = Reconciler(since=T0, max_attempts=2)
    reconciler.accept(_update("new", _order()))
    first = _update("partial_fill", _order("partially_filled", "4", "100", at=1))
    assert reconciler.failed(first) is False
    reconciler.delivered(first)
    second = _update("fill", _order("filled", "10", "104", at=2))
    assert reconciler.failed(second) is False and second.order.id in reconciler.retry_ids


def test_a_catch_up_that_finds_nothing_to_deliver_starts_the_count_again() -> None:
    reconciler = Reconciler(since=T0, max_attempts=3)
    reconciler.accept(_update("new", _order()))
    odd = _update("order_cancel_rejected", _order("new", at=1))  # changes nothing the handler has
    assert reconciler.failed(odd) is False and reconciler.failed(odd) is False
    assert reconciler.catch_up([_order("new", at=1)], deliver_new=True) == []
    # Much later another update of the order fails once: one failure, not the third in a row.
    fill = _update("fill", _order("filled", "10", "104", at=500))
    assert reconciler.admits(fill) and reconciler.failed(fill) is False
    assert reconciler.stats.abandoned == 0
