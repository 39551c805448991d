"""How the kill switch splits each broker position between the strategies whose books explain it."""

from __future__ import annotations

from decimal import Decimal

from trader.broker.base import Position
from trader.domain.enums import OrderSide, PositionSide
from trader.ops.kill import ClosingPlan, Share, plan_closing


def position(symbol: str, qty: str) -> Position:
    amount = Decimal(qty)
    side = PositionSide.LONG if amount > 0 else PositionSide.SHORT
    return Position(symbol, f"id-{symbol}", side, amount, Decimal(10), abs(amount) * 10)


def test_a_position_two_strategies_share_is_split_between_them() -> None:
    plan = plan_closing(
        [position("AAA", "30")], [Share("zeta", "AAA", Decimal(5)), Share("alpha", "AAA", Decimal(25))]
    )
    assert plan == ClosingPlan(
        shares=(Share("alpha", "AAA", Decimal(25)), Share("zeta", "AAA", Decimal(5))), whole=()
    )
    assert {share.closing_side() for share in plan.shares} == {OrderSide.SELL}


def test_shorts_are_bought_back_per_strategy() -> None:
    plan = plan_closing(
        [position("BBB", "-7")], [Share("a", "BBB", Decimal(-3)), Share("b", "BBB", Decimal(-4))]
    )
    assert [(s.strategy_id, s.qty, s.closing_side()) for s in plan.shares] == [
        ("a", Decimal(-3), OrderSide.BUY),
        ("b", Decimal(-4), OrderSide.BUY),
    ]
    assert plan.whole == ()


def test_one_holder_with_the_whole_position_gets_its_own_order() -> None:
    plan = plan_closing([position("CCC", "12.5")], [Share("a", "ccc", Decimal("12.5"))])
    assert plan.shares == (Share("a", "ccc", Decimal("12.5")),) and plan.whole == ()


def test_books_that_do_not_add_up_to_the_broker_close_the_position_as_a_whole() -> None:
    books = [Share("a", "AAA", Decimal(25)), Share("b", "AAA", Decimal(5))]
    # 3 more shares at the broker than in our books (say, bought by hand): nobody's book explains them.
    assert plan_closing([position("AAA", "33")], books) == ClosingPlan((), ("AAA",))
    # Fewer at the broker than in the books: splitting would sell more than is held.
    assert plan_closing([position("AAA", "20")], books) == ClosingPlan((), ("AAA",))


def test_holders_on_opposite_sides_close_the_net_position_as_a_whole() -> None:
    # 10 long and 4 short net to 6: two orders (sell 10, buy 4) would cross each other at the broker.
    books = [Share("a", "AAA", Decimal(10)), Share("b", "AAA", Decimal(-4))]
    assert plan_closing([position("AAA", "6")], books) == ClosingPlan((), ("AAA",))


def test_a_position_none_of_ours_holds_and_unreadable_books_are_closed_as_a_whole() -> None:
    positions = [position("AAA", "10"), position("BBB", "-2")]
    assert plan_closing(positions, []) == ClosingPlan((), ("AAA", "BBB"))
    assert plan_closing(positions, None) == ClosingPlan((), ("AAA", "BBB"))


def test_flat_entries_are_ignored_on_both_sides() -> None:
    books = [Share("a", "AAA", Decimal(10)), Share("b", "AAA", Decimal(0)), Share("c", "ZZZ", Decimal(0))]
    plan = plan_closing(
        [position("AAA", "10"), Position("ZZZ", "z", PositionSide.LONG, Decimal(0), Decimal(1), Decimal(0))],
        books,
    )
    assert plan == ClosingPlan((Share("a", "AAA", Decimal(10)),), ())


def test_book_entries_of_symbols_the_broker_does_not_hold_send_nothing() -> None:
    # The books' drift is the reconciler's to report; the kill switch only closes what the broker holds.
    plan = plan_closing(
        [position("AAA", "10")], [Share("a", "AAA", Decimal(10)), Share("a", "QQQ", Decimal(3))]
    )
    assert plan == ClosingPlan((Share("a", "AAA", Decimal(10)),), ())
