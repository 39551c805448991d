"""The order lifecycle table: complete over OrderStatus, Alpaca's paths work, the rest is refused."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.broker.base import TERMINAL_STATUSES, TradeEvent
from trader.domain.enums import OrderStatus
from trader.errors import TraderError
from trader.execution.state_machine import (
    BROKER_STATUSES,
    BROKER_TERMINAL,
    LOCAL_STATUSES,
    LOCAL_TERMINAL,
    RANK,
    STATUSLESS_EVENTS,
    TERMINAL,
    TRANSITIONS,
    InvalidTransition,
    Move,
    can_transition,
    classify,
    is_terminal,
    status_for_event,
    transition,
)

S = OrderStatus
ALL = list(OrderStatus)


def test_table_covers_every_status_and_only_statuses() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    for targets in TRANSITIONS.values():
        assert targets <= set(OrderStatus)
    assert set(OrderStatus) == LOCAL_STATUSES | BROKER_STATUSES
    assert not LOCAL_STATUSES & BROKER_STATUSES
    # every broker status (and pending_submit) has a rank, so a late report can be recognised as stale
    assert set(RANK) == BROKER_STATUSES | {S.PENDING_SUBMIT}


def test_terminal_statuses_agree_with_the_broker_adapter() -> None:
    # the broker adapter's notion of "this order will not change" is ours, minus our local finals
    assert set(TERMINAL_STATUSES) - {S.DRY_RUN} == set(BROKER_TERMINAL)
    assert TERMINAL == LOCAL_TERMINAL | BROKER_TERMINAL
    assert {s for s in OrderStatus if is_terminal(s)} == set(TERMINAL)


@pytest.mark.parametrize("status", sorted(BROKER_STATUSES | LOCAL_TERMINAL))
def test_every_status_is_reachable_from_pending_submit(status: OrderStatus) -> None:
    seen = {S.PENDING_SUBMIT}
    queue = deque([S.PENDING_SUBMIT])
    while queue:
        for nxt in TRANSITIONS[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    assert status in seen
    # and directly: the first thing the broker says about an order may be any of its statuses
    assert can_transition(S.PENDING_SUBMIT, status)


# Alpaca's documented typical paths (docs: "accepted → pending_new → new → partially_filled → filled;
# any open → pending_cancel → canceled; open → pending_replace → replaced; open → expired /
# done_for_day; new → rejected"), plus the returns that a rejected cancel/replace causes.
PATHS = [
    ["accepted", "pending_new", "new", "partial_fill", "fill"],
    ["pending_new", "new", "partial_fill", "partial_fill", "fill"],
    ["new", "pending_cancel", "canceled"],
    ["new", "partial_fill", "pending_cancel", "partial_fill", "canceled"],
    ["new", "pending_replace", "replaced"],
    ["new", "expired"],
    ["new", "done_for_day", "new", "partial_fill", "done_for_day", "expired"],
    ["new", "rejected"],
    ["new", "pending_cancel", "new", "fill"],  # order_cancel_rejected puts it back to new
    ["new", "partial_fill", "pending_replace", "partial_fill", "fill"],  # replace rejected
    ["pending_review", "held", "accepted", "new", "fill"],
    ["accepted_for_bidding", "new", "stopped", "fill"],
    ["new", "suspended", "new", "partial_fill", "calculated", "fill"],
    ["dry_run"],
    ["risk_rejected"],
    ["submit_failed"],
]


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "-".join(p))
def test_documented_paths_walk_to_their_end(path: list[str]) -> None:
    status = S.PENDING_SUBMIT
    for event in path:
        target = status_for_event(event)
        assert classify(status, target) in (Move.ADVANCE, Move.SAME), f"{status} -> {target}"
        status = transition(status, event)
        assert status == target
    assert status == status_for_event(path[-1])


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
def test_terminal_statuses_never_move(terminal: OrderStatus) -> None:
    assert TRANSITIONS[terminal] == frozenset()
    for other in ALL:
        if other == terminal:
            assert transition(terminal, other) == terminal
            continue
        try:
            result = transition(terminal, other)
        except InvalidTransition:
            continue
        assert result == terminal  # a late report of an earlier status: ignored


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.DRY_RUN, S.NEW),  # a dry-run order must never show up at the broker
        (S.RISK_REJECTED, S.FILLED),  # nor a refused one
        (S.SUBMIT_FAILED, S.ACCEPTED),
        (S.CANCELED, S.FILLED),  # terminal to another terminal
        (S.FILLED, S.CANCELED),
        (S.REJECTED, S.REPLACED),
        (S.NEW, S.PENDING_SUBMIT),  # back to our own statuses
        (S.NEW, S.DRY_RUN),
        (S.FILLED, S.RISK_REJECTED),
        (S.PENDING_CANCEL, S.PENDING_REPLACE),  # Alpaca refuses a replace while a cancel is pending
        (S.PENDING_SUBMIT, S.PENDING_SUBMIT.value + "x"),
    ],
)
def test_forbidden_transitions_raise_a_typed_error(current: OrderStatus, target: str) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(current, target)
    assert isinstance(caught.value, TraderError)
    assert repr(str(current)) in str(caught.value)


@pytest.mark.parametrize(
    ("current", "late"),
    [
        (S.FILLED, "partial_fill"),
        (S.FILLED, "new"),
        (S.PARTIALLY_FILLED, "new"),
        (S.PARTIALLY_FILLED, "accepted"),
        (S.CANCELED, "pending_cancel"),
        (S.NEW, "pending_new"),
        (S.REPLACED, "pending_replace"),
    ],
)
def test_late_reports_do_not_move_the_order_back(current: OrderStatus, late: str) -> None:
    assert classify(current, status_for_event(late)) is Move.STALE
    assert transition(current, late) == current


def test_repeats_change_nothing() -> None:
    for status in ALL:
        assert classify(status, status) is Move.SAME
        assert transition(status, status) == status


def test_every_trade_event_names_a_status_or_is_known_to_carry_none() -> None:
    for event in TradeEvent:
        if event.value in STATUSLESS_EVENTS:
            with pytest.raises(InvalidTransition, match="carries no status"):
                status_for_event(event.value)
        else:
            assert status_for_event(event.value) in BROKER_STATUSES
    assert status_for_event("fill") == S.FILLED
    assert status_for_event("partial_fill") == S.PARTIALLY_FILLED
    with pytest.raises(InvalidTransition, match="unknown"):
        status_for_event("exploded")


# Paths of strictly increasing rank that end in a broker terminal status.
_OPEN_BY_RANK = sorted(BROKER_STATUSES - BROKER_TERMINAL, key=lambda s: RANK[s])


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[OrderStatus], list[OrderStatus]]:
    ranks = sorted(set(draw(st.lists(st.sampled_from(sorted({RANK[s] for s in _OPEN_BY_RANK})), max_size=6))))
    path = [draw(st.sampled_from([s for s in _OPEN_BY_RANK if RANK[s] == r])) for r in ranks]
    path.append(draw(st.sampled_from(sorted(BROKER_TERMINAL))))
    extra = draw(st.lists(st.sampled_from(path), max_size=6))
    delivered = draw(st.permutations(path + extra))
    return path, delivered


@given(deliveries())
def test_any_order_of_delivery_with_repeats_ends_in_the_final_status(
    case: tuple[list[OrderStatus], list[OrderStatus]],
) -> None:
    path, delivered = case
    status = S.PENDING_SUBMIT
    for reported in delivered:
        status = transition(status, reported)  # never raises for reports of one real lifecycle
    assert status == path[-1]
