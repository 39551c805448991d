"""Our enums use Alpaca's spelling and cover every status the official SDK knows."""

from __future__ import annotations

from alpaca.trading import enums as alpaca_enums

from trader.domain import OrderSide, OrderStatus, OrderType, TimeInForce

LOCAL_ONLY = {"pending_submit", "dry_run", "risk_rejected", "submit_failed"}


def test_every_alpaca_order_status_is_known() -> None:
    ours = {status.value for status in OrderStatus}
    theirs = {status.value for status in alpaca_enums.OrderStatus}
    assert theirs <= ours, f"statuses alpaca-py knows that we do not: {sorted(theirs - ours)}"
    assert ours - theirs == LOCAL_ONLY


def test_sides_types_and_time_in_force_match_the_sdk() -> None:
    assert {s.value for s in OrderSide} == {s.value for s in alpaca_enums.OrderSide} - {""}
    assert {t.value for t in OrderType} == {t.value for t in alpaca_enums.OrderType}
    assert {t.value for t in TimeInForce} == {t.value for t in alpaca_enums.TimeInForce}
