"""Exits larger than max_order_notional are sliced into orders within it; entries never are."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from trader.domain.enums import OrderSide
from trader.ops.paper_day import MAX_EXIT_SLICES, order_intents
from trader.portfolio.allocator import IntentReason
from trader.portfolio.allocator import OrderIntent as AllocatorIntent

D = Decimal
DAY = date(2024, 3, 5)


def _order(side: OrderSide, qty: int, price: str, reason: IntentReason) -> AllocatorIntent:
    current = D(qty) if side is OrderSide.SELL else D(0)
    target = D(0) if reason is IntentReason.CLOSE else current - D(qty)
    return AllocatorIntent("AAA", side, D(qty), D(price), D(qty) * D(price), reason, current, target)


def test_a_large_exit_is_sliced_within_the_limit() -> None:
    intents = order_intents("s", DAY, [_order(OrderSide.SELL, 246, "41", IntentReason.CLOSE)], D(10_000))
    assert [i.qty for i in intents] == [D(243), D(3)]  # 243 x 41 = 9,963 <= 10,000
    assert [i.sequence for i in intents] == [0, 1]
    assert len({i.client_order_id for i in intents}) == 2
    assert sum(i.qty for i in intents) == 246


def test_an_exit_within_the_limit_is_one_order() -> None:
    (intent,) = order_intents("s", DAY, [_order(OrderSide.SELL, 10, "41", IntentReason.REDUCE)], D(10_000))
    assert (intent.qty, intent.sequence) == (D(10), 0)


def test_entries_are_never_sliced() -> None:
    (intent,) = order_intents("s", DAY, [_order(OrderSide.BUY, 1000, "41", IntentReason.OPEN)], D(10_000))
    assert intent.qty == D(1000)  # the risk check refuses it with the limit in the reason


def test_no_limit_or_too_many_slices_leaves_the_order_whole() -> None:
    assert len(order_intents("s", DAY, [_order(OrderSide.SELL, 500, "41", IntentReason.CLOSE)], None)) == 1
    huge = _order(OrderSide.SELL, 100 * (MAX_EXIT_SLICES + 1), "100", IntentReason.CLOSE)
    assert len(order_intents("s", DAY, [huge], D(10_000))) == 1
    one_share_too_big = _order(OrderSide.SELL, 2, "20000", IntentReason.CLOSE)
    assert len(order_intents("s", DAY, [one_share_too_big], D(10_000))) == 1


def test_the_two_legs_of_a_side_change_get_two_ids() -> None:
    # Long 10 to short 100: close (sell 10), then open (sell 100); one id would drop the second leg.
    close = AllocatorIntent("AAA", OrderSide.SELL, D(10), D(41), D(410), IntentReason.CLOSE, D(10), D(0))
    open_ = AllocatorIntent("AAA", OrderSide.SELL, D(100), D(41), D(4100), IntentReason.OPEN, D(0), D(-100))
    intents = order_intents("s", DAY, [close, open_], D(10_000))
    assert [(i.qty, i.sequence) for i in intents] == [(D(10), 0), (D(100), 1)]
    assert len({i.client_order_id for i in intents}) == 2


def test_a_sliced_close_then_an_opening_leg_number_on_and_other_symbols_start_at_zero() -> None:
    close = AllocatorIntent("AAA", OrderSide.SELL, D(246), D(41), D(10086), IntentReason.CLOSE, D(246), D(0))
    open_ = AllocatorIntent("AAA", OrderSide.SELL, D(5), D(41), D(205), IntentReason.OPEN, D(0), D(-5))
    other = AllocatorIntent("BBB", OrderSide.SELL, D(5), D(41), D(205), IntentReason.REDUCE, D(9), D(4))
    buy = AllocatorIntent("AAA", OrderSide.BUY, D(1), D(41), D(41), IntentReason.OPEN, D(0), D(1))
    intents = order_intents("s", DAY, [close, open_, other, buy], D(10_000))
    assert [(i.symbol, i.side, i.qty, i.sequence) for i in intents] == [
        ("AAA", OrderSide.SELL, D(243), 0),
        ("AAA", OrderSide.SELL, D(3), 1),
        ("AAA", OrderSide.SELL, D(5), 2),
        ("BBB", OrderSide.SELL, D(5), 0),
        ("AAA", OrderSide.BUY, D(1), 0),
    ]
    # An ordinary order keeps sequence 0, so the ids of days recorded before this rule do not change.
    assert len({i.client_order_id for i in intents}) == 5
