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
