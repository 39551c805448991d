"""The fill ledger on SQLite and PostgreSQL: hand-computed books, exactly-once, order independence."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Context, Decimal

import pytest
from sqlalchemy import Engine, func, select

from tests.integration.portfolio.ledger_support import BUY, DAY, SELL, apply, at, books, fill, new_order
from trader.execution.orders import UnknownOrderError
from trader.portfolio.ledger import (
    COVERED_EVENT,
    FILL_EVENT,
    FillConflictError,
    FillOutcome,
    MissingPriceError,
    daily_pnl_row,
    daily_pnl_rows,
    realized_pnl,
)
from trader.store.db import session_factory, transaction
from trader.store.models import Event, Execution, Pnl

D = Decimal


def events(engine: Engine, kind: str) -> int:
    with session_factory(engine)() as session:
        return int(
            session.execute(select(func.count()).select_from(Event).where(Event.kind == kind)).scalar_one()
        )


def test_buys_partial_fills_and_a_sell_hand_computed(migrated_engine: Engine) -> None:
    buy = new_order(migrated_engine, "s1", BUY, "20")
    sell = new_order(migrated_engine, "s1", SELL, "15")
    first = apply(
        migrated_engine, fill(buy, "e1", BUY, "10", "100", at(15), fee="1", cumulative="10", average="100")
    )
    assert first.applied and first.outcome is FillOutcome.APPLIED
    assert (first.position_qty, first.position_avg_price, first.realized_delta) == (10, 100, -1)
    second = apply(
        migrated_engine, fill(buy, "e2", BUY, "10", "110", at(15, 5), fee="1", cumulative="20", average="105")
    )
    assert (second.position_qty, second.position_avg_price) == (20, 105)
    third = apply(migrated_engine, fill(sell, "e3", SELL, "15", "120", at(16), fee="1.5"))
    assert third.realized_delta == (120 - 105) * 15 - D("1.5")

    got = books(migrated_engine, "s1")
    assert got.position == (5, 105, D(-2) + 225 - D("1.5"))
    assert sorted(got.orders) == [(15, 120), (20, 105)]  # filled_qty and average from the executions
    assert got.lots == [
        ("e1", "long", 10, 0, 100, False),
        ("e2", "long", 10, 5, 110, True),
    ]
    assert got.closures == [  # FIFO, gross of fees
        ("e1", "e3", 10, 120, 200, "short_term"),
        ("e2", "e3", 5, 120, 50, "short_term"),
    ]
    assert events(migrated_engine, FILL_EVENT) == 3


def test_a_sell_through_zero_opens_a_short_and_covering_closes_it(migrated_engine: Engine) -> None:
    buy = new_order(migrated_engine, "s1", BUY, "10")
    sell = new_order(migrated_engine, "s1", SELL, "25")
    cover = new_order(migrated_engine, "s1", BUY, "15", sequence=1)
    apply(migrated_engine, fill(buy, "b", BUY, "10", "50", at(15)))
    flip = apply(migrated_engine, fill(sell, "s", SELL, "25", "40", at(16), fee="0.25"))
    assert (flip.position_qty, flip.position_avg_price) == (-15, 40)
    assert flip.realized_delta == (40 - 50) * 10 - D("0.25")
    got = books(migrated_engine, "s1")
    assert got.lots == [("b", "long", 10, 0, 50, False), ("s", "short", 15, 15, 40, True)]
    assert got.closures == [("b", "s", 10, 40, -100, "short_term")]

    flat = apply(migrated_engine, fill(cover, "c", BUY, "15", "45", at(17)))
    assert (flat.position_qty, flat.position_avg_price, flat.realized_delta) == (0, 0, (40 - 45) * 15)
    got = books(migrated_engine, "s1")
    assert got.position == (0, 0, D("-100.25") - 75)
    assert ("s", "c", 15, 45, -75, "short_term") in got.closures
    assert all(not is_open for *_, is_open in got.lots)


def test_a_repeated_fill_is_a_no_op(migrated_engine: Engine) -> None:
    buy = new_order(migrated_engine, "s1", BUY, "10")
    the_fill = fill(buy, "e1", BUY, "4", "100", at(15), cumulative="4", average="100")
    assert apply(migrated_engine, the_fill).applied
    before = books(migrated_engine, "s1")
    for _ in range(3):
        again = apply(migrated_engine, the_fill)
        assert not again.applied and again.outcome is FillOutcome.DUPLICATE
        assert (again.qty, again.position_qty) == (0, 4)
    assert books(migrated_engine, "s1") == before
    assert before.executions == 1 and before.orders == [(4, 100)]
    assert events(migrated_engine, FILL_EVENT) == 1


def test_a_late_fill_replays_the_position_to_the_in_order_result(migrated_engine: Engine) -> None:
    # the same day for two strategies: "ordered" receives the fills in time order, "late" does not
    script = [
        ("buy1", BUY, "10", "100", at(14, 40)),
        ("sell", SELL, "6", "110", at(15, 0)),
        ("buy2", BUY, "10", "90", at(15, 30)),
    ]
    results = {}
    for strategy, delivery in (("ordered", [0, 1, 2]), ("late", [2, 0, 1])):
        coids = [
            new_order(migrated_engine, strategy, side, qty, sequence=i)
            for i, (_, side, qty, _, _) in enumerate(script)
        ]
        for i in delivery:
            name, side, qty, price, when = script[i]
            results[(strategy, name)] = apply(
                migrated_engine, fill(coids[i], f"{strategy}:{name}", side, qty, price, when)
            )
    assert books(migrated_engine, "late") == books(migrated_engine, "ordered")
    # 4 left of the first buy at 100 and 10 at 90, averaged in the ledger's 34-digit context
    average = Context(prec=34).divide(D(4 * 100 + 10 * 90), D(14))
    assert books(migrated_engine, "ordered").position == (14, average, 60)
    assert results[("late", "buy1")].replayed and results[("late", "sell")].replayed
    assert not any(results[("ordered", n)].replayed for n in ("buy1", "sell", "buy2"))


def test_fifo_lots_split_long_and_short_term(migrated_engine: Engine) -> None:
    old = new_order(migrated_engine, "s1", BUY, "10", day=date(2022, 1, 3))
    recent = new_order(migrated_engine, "s1", BUY, "10", day=date(2023, 6, 1))
    sale = new_order(migrated_engine, "s1", SELL, "15", day=date(2023, 6, 15))
    apply(migrated_engine, fill(old, "old", BUY, "10", "50", at(15, day=date(2022, 1, 3))))
    apply(migrated_engine, fill(recent, "recent", BUY, "10", "80", at(15, day=date(2023, 6, 1))))
    apply(migrated_engine, fill(sale, "sale", SELL, "15", "90", at(15, day=date(2023, 6, 15))))
    got = books(migrated_engine, "s1")
    assert got.closures == [
        ("old", "sale", 10, 90, 400, "long_term"),
        ("recent", "sale", 5, 90, 50, "short_term"),
    ]
    assert got.position == (5, 65, (90 - 65) * 15)  # average cost: 65; FIFO lots gain 450 as well here
    assert got.lots[1] == ("recent", "long", 10, 5, 80, True)


def test_a_catch_up_fill_covers_dropped_events_which_then_count_nothing(migrated_engine: Engine) -> None:
    order = new_order(migrated_engine, "s1", BUY, "30")
    e1 = fill(order, "e1", BUY, "10", "100", at(15), cumulative="10", average="100")
    e2 = fill(order, "e2", BUY, "10", "101", at(15, 1), cumulative="20", average="100.5")
    e3 = fill(order, "e3", BUY, "10", "102", at(15, 2), cumulative="30", average="101")
    catch_up = fill(
        order, "catchup:b1:30", BUY, "20", "101.5", at(15, 2), cumulative="30", average="101", catch_up=True
    )
    assert apply(migrated_engine, e1).applied
    # e2 and e3 are lost by the stream; the reconnect's REST catch-up reports the order at 30 @ 101
    caught = apply(migrated_engine, catch_up)
    assert caught.applied and (caught.qty, caught.price) == (20, D("101.5"))  # (101*30 - 100*10) / 20
    # the lost events are replayed later: already covered, they add nothing
    for late in (e2, e3, catch_up):
        assert not apply(migrated_engine, late).applied
    got = books(migrated_engine, "s1")
    assert got.position == (30, 101, 0)
    assert got.orders == [(30, 101)]
    assert got.executions == 2
    assert events(migrated_engine, COVERED_EVENT) == 2


def test_a_catch_up_after_every_real_fill_adds_nothing(migrated_engine: Engine) -> None:
    order = new_order(migrated_engine, "s1", SELL, "20")
    apply(migrated_engine, fill(order, "e1", SELL, "5", "10", at(15), cumulative="5", average="10"))
    apply(migrated_engine, fill(order, "e2", SELL, "15", "12", at(15, 1), cumulative="20", average="11.5"))
    # a restarted process resynchronises and sees the order filled 20 @ 11.5 from scratch
    result = apply(
        migrated_engine,
        fill(
            order,
            "catchup:b1:20",
            SELL,
            "20",
            "11.5",
            at(15, 1),
            cumulative="20",
            average="11.5",
            catch_up=True,
        ),
    )
    assert result.outcome is FillOutcome.COVERED
    assert books(migrated_engine, "s1").position == (-20, D("11.5"), 0)


def test_more_than_the_order_is_refused_and_rolled_back(migrated_engine: Engine) -> None:
    order = new_order(migrated_engine, "s1", BUY, "10")
    apply(migrated_engine, fill(order, "e1", BUY, "6", "100", at(15)))
    with pytest.raises(FillConflictError, match="filled 12 of 10"):
        apply(migrated_engine, fill(order, "e2", BUY, "6", "100", at(15, 1)))
    got = books(migrated_engine, "s1")
    assert (got.executions, got.position, got.orders) == (1, (6, 100, 0), [(6, 100)])


def test_fills_that_do_not_match_an_order_are_refused(migrated_engine: Engine) -> None:
    order = new_order(migrated_engine, "s1", BUY, "10")
    with pytest.raises(FillConflictError, match="sell of AAPL"):
        apply(migrated_engine, fill(order, "e1", SELL, "1", "100", at(15)))
    with pytest.raises(FillConflictError, match="MSFT"):
        apply(migrated_engine, fill(order, "e1", BUY, "1", "100", at(15), symbol="MSFT"))
    with pytest.raises(UnknownOrderError, match="nobody"):
        apply(migrated_engine, fill("nobody", "e1", BUY, "1", "100", at(15)))
    with session_factory(migrated_engine)() as session:
        assert session.execute(select(func.count()).select_from(Execution)).scalar_one() == 0


def test_notional_orders_take_any_filled_quantity(migrated_engine: Engine) -> None:
    order = new_order(migrated_engine, "s1", BUY, None)
    apply(migrated_engine, fill(order, "e1", BUY, "3.123456789", "320.10", at(15)))
    assert books(migrated_engine, "s1").position == (D("3.123456789"), D("320.10"), 0)


def test_realized_by_day_and_the_pnl_rows(migrated_engine: Engine) -> None:
    monday, tuesday = date(2024, 3, 4), DAY
    b1 = new_order(migrated_engine, "s1", BUY, "10", day=monday)
    s1 = new_order(migrated_engine, "s1", SELL, "4", day=tuesday)
    b2 = new_order(migrated_engine, "s2", BUY, "5", symbol="MSFT", day=tuesday)
    apply(migrated_engine, fill(b1, "b1", BUY, "10", "100", at(15, day=monday), fee="1"))
    apply(migrated_engine, fill(s1, "s1", SELL, "4", "110", at(15, day=tuesday), fee="0.5"))
    apply(migrated_engine, fill(b2, "b2", BUY, "5", "400", at(16, day=tuesday), fee="0.2", symbol="MSFT"))
    prices = {"AAPL": D("108"), "MSFT": D("390")}
    factory = session_factory(migrated_engine)
    with transaction(factory) as session:
        assert realized_pnl(session, "s1", monday) == -1
        assert realized_pnl(session, "s1", tuesday) == 40 - D("0.5")
        assert realized_pnl(session, "*", tuesday) == 40 - D("0.5") - D("0.2")
        row = daily_pnl_row(session, tuesday, prices, strategy_id="s1")
        assert (row.realized, row.unrealized, row.fees, row.gross_exposure) == (D("39.5"), 48, D("0.5"), 648)
        with pytest.raises(MissingPriceError, match="MSFT"):
            daily_pnl_row(session, tuesday, {"AAPL": D(1)})
    with transaction(factory) as session:
        rows = daily_pnl_rows(session, tuesday, prices, equity=D("100000"))
        assert [r.strategy_id for r in rows] == ["s1", "s2", "*"]
        account = rows[-1]
        assert (account.realized, account.unrealized, account.fees, account.equity) == (
            D("39.3"),
            48 - 50,
            D("0.7"),
            100000,
        )
    # the day's rows are replaced, not added, when written again (e.g. after a late fill)
    with transaction(factory) as session:
        daily_pnl_rows(session, tuesday, {"AAPL": D("110"), "MSFT": D("390")})
    with factory() as session:
        rows = list(session.execute(select(Pnl).where(Pnl.trading_date == tuesday)).scalars())
        assert len(rows) == 3
        assert {r.strategy_id: r.unrealized for r in rows} == {"s1": 60, "s2": -50, "*": 10}
        assert {r.strategy_id: r.equity for r in rows}["*"] is None


def test_times_are_new_york_days(migrated_engine: Engine) -> None:
    # 21:30 New York on the 5th is the 6th in UTC: it belongs to the 5th
    order = new_order(migrated_engine, "s1", SELL, "1")
    late_evening = datetime(2024, 3, 6, 2, 30, tzinfo=UTC)
    apply(migrated_engine, fill(order, "e1", SELL, "1", "100", late_evening, fee="1"))
    with session_factory(migrated_engine)() as session:
        assert realized_pnl(session, "s1", DAY) == -1
        assert realized_pnl(session, "s1", date(2024, 3, 6)) == 0
