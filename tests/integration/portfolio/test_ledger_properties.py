"""Whatever order the fills arrive in, repeated or late, the books end the same (both engines).

Each example writes under fresh strategy ids, so examples share the database without interfering:
one strategy receives the fills in execution-time order exactly once (the reference), the other
receives a shuffled delivery with repeats.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Context, Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from tests.integration.portfolio.ledger_support import BUY, SELL, apply, at, books, fill, new_order
from trader.domain.enums import OrderSide
from trader.portfolio.ledger import Fill, FillOutcome

D = Decimal
DB_EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Execution:
    order: int
    name: str
    qty: D
    price: D
    fee: D
    minute: int


@dataclass(frozen=True)
class Script:
    sides: list[OrderSide]
    executions: list[Execution]  # in execution-time order
    delivery: list[int]  # indexes into executions: a permutation with repeats


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    sides = draw(st.lists(st.sampled_from([BUY, SELL]), min_size=1, max_size=3))
    count = draw(st.integers(min_value=1, max_value=6))
    minutes = sorted(draw(st.lists(st.integers(0, 300), min_size=count, max_size=count, unique=True)))
    executions = [
        Execution(
            order=draw(st.integers(0, len(sides) - 1)),
            name=f"x{i}",
            qty=D(draw(st.integers(1, 20))),
            price=draw(st.decimals(D("1.00"), D("200.00"), places=2)),
            fee=draw(st.decimals(D("0"), D("1.00"), places=2)),
            minute=minute,
        )
        for i, minute in enumerate(minutes)
    ]
    repeats = draw(st.lists(st.integers(0, count - 1), max_size=4))
    delivery = draw(st.permutations(list(range(count)) + repeats))
    return Script(sides, executions, delivery)


def fills_for(engine: Engine, strategy: str, script: Script) -> list[Fill]:
    """Record the script's orders for ``strategy``; its fills, with Alpaca's cumulative values."""
    totals = [sum((e.qty for e in script.executions if e.order == i), D(0)) for i in range(len(script.sides))]
    coid_of = {
        i: new_order(engine, strategy, side, str(totals[i]), sequence=i)
        for i, side in enumerate(script.sides)
        if totals[i] > 0
    }
    cumulative = [D(0)] * len(script.sides)
    notional = [D(0)] * len(script.sides)
    out = []
    for e in script.executions:
        cumulative[e.order] += e.qty
        notional[e.order] += e.qty * e.price
        out.append(
            fill(
                coid_of[e.order],
                f"{strategy}:{e.name}",
                script.sides[e.order],
                str(e.qty),
                str(e.price),
                at(14, 30) + timedelta(minutes=e.minute),
                fee=str(e.fee),
                cumulative=str(cumulative[e.order]),
                average=str(notional[e.order] / cumulative[e.order]),
            )
        )
    return out


@DB_EXAMPLES
@given(scripts())
def test_reordered_and_repeated_fills_end_in_the_in_order_books(
    migrated_engine: Engine, script: Script
) -> None:
    tag = uuid.uuid4().hex[:8]
    reference, shuffled = f"ref{tag}", f"mix{tag}"
    for f in fills_for(migrated_engine, reference, script):
        assert apply(migrated_engine, f).applied
    fills = fills_for(migrated_engine, shuffled, script)
    outcomes = [apply(migrated_engine, fills[i]).outcome for i in script.delivery]
    assert outcomes.count(FillOutcome.APPLIED) == len(script.executions)
    assert outcomes.count(FillOutcome.DUPLICATE) == len(script.delivery) - len(script.executions)
    assert books(migrated_engine, shuffled) == books(migrated_engine, reference)


@st.composite
def catch_up_cases(draw: st.DrawFn) -> tuple[list[tuple[D, D]], set[int], int, list[int]]:
    """One buy order's executions, which of them the stream drops, where the catch-up snapshot is
    taken (after execution k), and the order in which everything is finally delivered."""
    executions = draw(
        st.lists(
            st.tuples(st.integers(1, 20).map(D), st.decimals(D("1.00"), D("200.00"), places=2)),
            min_size=1,
            max_size=5,
        )
    )
    dropped = draw(st.sets(st.integers(0, len(executions) - 1)))
    snapshot = draw(st.integers(0, len(executions) - 1))
    repeats = draw(st.lists(st.integers(0, len(executions)), max_size=4))  # len(executions) is the catch-up
    later = draw(st.permutations(list(range(len(executions) + 1)) + repeats))
    return executions, dropped, snapshot, later


@DB_EXAMPLES
@given(catch_up_cases())
def test_dropped_fills_recovered_by_a_catch_up_then_replayed_count_once(
    migrated_engine: Engine, case: tuple[list[tuple[D, D]], set[int], int, list[int]]
) -> None:
    executions, dropped, snapshot, later = case
    strategy = f"cu{uuid.uuid4().hex[:8]}"
    total = sum((q for q, _ in executions), D(0))
    coid = new_order(migrated_engine, strategy, BUY, str(total))
    ctx = Context(prec=34)
    fills, cumulative, notional = [], D(0), D(0)
    for i, (qty, price) in enumerate(executions):
        cumulative, notional = cumulative + qty, notional + qty * price
        average = ctx.divide(notional, cumulative)
        fills.append(
            fill(
                coid,
                f"e{i}-{strategy}",
                BUY,
                str(qty),
                str(price),
                at(15, i),
                cumulative=str(cumulative),
                average=str(average),
            )
        )
    snap = fills[snapshot]
    catch_up = fill(
        coid,
        f"catchup:{strategy}:{snap.order_filled_qty}",
        BUY,
        str(snap.order_filled_qty),
        str(snap.order_filled_avg_price),
        snap.executed_at,
        cumulative=str(snap.order_filled_qty),
        average=str(snap.order_filled_avg_price),
        catch_up=True,
    )
    # live delivery: everything up to the snapshot except the dropped ones, then the catch-up
    for i in range(snapshot + 1):
        if i not in dropped:
            apply(migrated_engine, fills[i])
    apply(migrated_engine, catch_up)
    # then the rest, the dropped ones replayed, and repeats, in any order
    for i in later:
        apply(migrated_engine, catch_up if i == len(executions) else fills[i])

    got = books(migrated_engine, strategy)
    order_average = ctx.divide(notional, total)
    assert got.position is not None
    qty, avg, realized = got.position
    assert qty == total
    assert abs(avg - order_average) < D("1e-24")
    assert realized == 0
    assert got.orders[0][0] == total
    assert sum(lot[2] for lot in got.lots) == total  # lots hold exactly the position
