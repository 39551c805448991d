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


def test_json_ready_keeps_numbers_exact_and_times_as_iso_text_at_any_depth() -> None:
    import json
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from trader.domain.json import json_ready

    moment = datetime(2024, 3, 5, 15, 30, tzinfo=UTC)
    value = {
        "qty": Decimal("0.1000"),
        "day": date(2024, 3, 5),
        "at": moment,
        7: [Decimal("1e-9"), (moment, "text", None, 3, 1.5, True)],
    }

    ready = json_ready(value)

    assert ready == {
        "qty": "0.1000",
        "day": "2024-03-05",
        "at": "2024-03-05T15:30:00+00:00",
        "7": ["1E-9", ["2024-03-05T15:30:00+00:00", "text", None, 3, 1.5, True]],
    }
    assert json.loads(json.dumps(ready)) == ready
    assert Decimal(ready["qty"]) == value["qty"]
