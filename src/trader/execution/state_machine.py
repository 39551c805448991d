"""The order lifecycle: an explicit ``(from, to)`` transition table over :class:`OrderStatus`. Pure.

An order row starts in ``pending_submit`` (written before the request is sent). From there it either
ends on our side — ``dry_run`` (recorded, never sent), ``risk_rejected`` (refused by the pre-trade
check), ``submit_failed`` (the broker definitively refused the request) — or takes whatever status the
broker reports. An unknown outcome (every retry timed out) leaves it in ``pending_submit`` until the
broker or the reconciler says what happened.

Broker statuses carry a **rank** (:data:`RANK`): the order in which Alpaca's lifecycle goes through
them (received → live → partially filled → done for the day → pending cancel/replace → terminal).
Moving to a higher rank is allowed; a few moves back are real and allowed explicitly
(:data:`RETURNS`: a rejected cancel or replace puts the order back where it was, a suspended order
resumes, a ``done_for_day`` GTC order trades again the next day). The stream can deliver updates late
or twice, so a report of a *lower* rank than the status we hold, which the table does not allow, is
**stale**: it is ignored, never applied (a ``partially_filled`` arriving after ``filled`` does not move
the order back). Everything else not in the table is **forbidden** and raises
:class:`InvalidTransition`: leaving a terminal status for another terminal one (``canceled`` →
``filled``), any broker status for an order that never left the process (``dry_run`` → ``new``), or
any return to our own statuses.
"""

from __future__ import annotations

from enum import StrEnum

from trader.domain.enums import OrderStatus
from trader.errors import TraderError

S = OrderStatus

#: Statuses that exist only on our side.
LOCAL_STATUSES = frozenset({S.PENDING_SUBMIT, S.DRY_RUN, S.RISK_REJECTED, S.SUBMIT_FAILED})
#: Statuses the broker reports (Alpaca's, verbatim).
BROKER_STATUSES = frozenset(set(S) - LOCAL_STATUSES)
#: Final statuses of an order that never reached the broker.
LOCAL_TERMINAL = frozenset({S.DRY_RUN, S.RISK_REJECTED, S.SUBMIT_FAILED})
#: Final statuses reported by the broker.
BROKER_TERMINAL = frozenset({S.FILLED, S.CANCELED, S.EXPIRED, S.REPLACED, S.REJECTED})
#: After one of these an order never changes again.
TERMINAL = LOCAL_TERMINAL | BROKER_TERMINAL
#: Broker statuses of an order still alive at the broker.
OPEN_BROKER = BROKER_STATUSES - BROKER_TERMINAL

#: Position of each broker status in Alpaca's lifecycle (``pending_submit`` comes before all).
RANK: dict[OrderStatus, int] = {
    S.PENDING_SUBMIT: 0,
    # received, not yet working
    S.PENDING_REVIEW: 10,
    S.HELD: 11,
    S.ACCEPTED: 12,
    S.ACCEPTED_FOR_BIDDING: 13,
    S.PENDING_NEW: 14,
    # working
    S.NEW: 20,
    S.SUSPENDED: 21,
    S.STOPPED: 22,
    S.PARTIALLY_FILLED: 30,
    S.CALCULATED: 31,
    S.DONE_FOR_DAY: 32,
    # a cancel or replace is in flight
    S.PENDING_REPLACE: 40,
    S.PENDING_CANCEL: 40,
    # final
    **dict.fromkeys(BROKER_TERMINAL, 100),
}

_WORKING = frozenset({S.NEW, S.SUSPENDED, S.STOPPED, S.PARTIALLY_FILLED, S.CALCULATED, S.DONE_FOR_DAY})
_RECEIVED = frozenset({S.PENDING_REVIEW, S.HELD, S.ACCEPTED, S.ACCEPTED_FOR_BIDDING, S.PENDING_NEW})

#: The moves to a lower rank that really happen (everything else lower is a stale report).
RETURNS: dict[OrderStatus, frozenset[OrderStatus]] = {
    # a suspended order becomes eligible for trading again
    S.SUSPENDED: frozenset({S.NEW}),
    # a GTC order that was done for the day works again the next session
    S.DONE_FOR_DAY: frozenset({S.NEW, S.PARTIALLY_FILLED}),
    # order_cancel_rejected / order_replace_rejected: back to where it was (and it can fill meanwhile)
    S.PENDING_CANCEL: _WORKING | _RECEIVED,
    S.PENDING_REPLACE: _WORKING | _RECEIVED,
}


def _build_table() -> dict[OrderStatus, frozenset[OrderStatus]]:
    table: dict[OrderStatus, frozenset[OrderStatus]] = dict.fromkeys(S, frozenset())
    table[S.PENDING_SUBMIT] = frozenset(set(S) - {S.PENDING_SUBMIT})
    for status in OPEN_BROKER:
        forward = {target for target in BROKER_STATUSES if RANK[target] > RANK[status]}
        table[status] = frozenset(forward | RETURNS.get(status, frozenset()))
    return table


#: Every allowed move: ``TRANSITIONS[from]`` is the set of statuses ``from`` may change to.
#: Terminal statuses map to the empty set.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = _build_table()

#: Alpaca ``trade_updates`` event names whose status differs from the event name.
EVENT_STATUS: dict[str, OrderStatus] = {"fill": S.FILLED, "partial_fill": S.PARTIALLY_FILLED}
#: Events that carry no status of their own: use the order's reported status instead.
STATUSLESS_EVENTS = frozenset({"restated", "order_cancel_rejected", "order_replace_rejected"})


class InvalidTransition(TraderError):  # noqa: N818 - the name the lifecycle docs use
    """An order status change the lifecycle forbids (or an event that names no status)."""

    def __init__(self, current: OrderStatus | str, target: OrderStatus | str, why: str) -> None:
        self.current = str(current)
        self.target = str(target)
        self.why = why
        super().__init__(f"order status cannot go from {self.current!r} to {self.target!r}: {why}")


class Move(StrEnum):
    """What an allowed-or-ignored status report does to the order."""

    ADVANCE = "advance"  # in the table: the status changes
    SAME = "same"  # already there: a repeated report, nothing to do
    STALE = "stale"  # older than what we hold: ignored


def is_terminal(status: OrderStatus) -> bool:
    """True once the order can never change again."""
    return status in TERMINAL


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether the table allows ``current`` → ``target`` (a repeat or a stale report is not a move)."""
    return target in TRANSITIONS[current]


def classify(current: OrderStatus, target: OrderStatus) -> Move:
    """Whether a report of ``target`` for an order in ``current`` advances it, repeats, or is stale.

    Raises :class:`InvalidTransition` when the report is impossible rather than merely late.
    """
    current, target = OrderStatus(current), OrderStatus(target)
    if target == current:
        return Move.SAME
    if target in TRANSITIONS[current]:
        return Move.ADVANCE
    if current in BROKER_STATUSES and target in BROKER_STATUSES and RANK[target] < RANK[current]:
        return Move.STALE
    raise InvalidTransition(current, target, _why_forbidden(current, target))


def _why_forbidden(current: OrderStatus, target: OrderStatus) -> str:
    if current in LOCAL_TERMINAL:
        return f"{current.value} is final and the order never reached the broker"
    if target in LOCAL_STATUSES:
        return f"{target.value} is only for an order that has not reached the broker"
    if current in BROKER_TERMINAL:
        return f"{current.value} is final"
    return "the broker never moves an order this way"


def status_for_event(event: OrderStatus | str) -> OrderStatus:
    """The status an event name means: a trade-update event (``fill``, ``canceled``...) or a status."""
    if isinstance(event, OrderStatus):
        return event
    name = str(event)
    if name in EVENT_STATUS:
        return EVENT_STATUS[name]
    if name in STATUSLESS_EVENTS:
        raise InvalidTransition("?", name, "this event carries no status: use the order's reported status")
    try:
        return OrderStatus(name)
    except ValueError:
        raise InvalidTransition("?", name, "unknown event or status name") from None


def transition(current: OrderStatus, event: OrderStatus | str) -> OrderStatus:
    """The order's status after ``event`` (a status or a ``trade_updates`` event name).

    Returns the new status for an allowed move, ``current`` unchanged for a repeat or a stale report,
    and raises :class:`InvalidTransition` for a forbidden one.
    """
    try:
        target = status_for_event(event)
    except InvalidTransition as exc:
        raise InvalidTransition(current, event, exc.why) from None
    return target if classify(current, target) is Move.ADVANCE else OrderStatus(current)
