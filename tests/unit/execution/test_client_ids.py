"""Deterministic client_order_id: same intent, same id; different intent, different id; ≤ 48 chars."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.domain.enums import OrderSide
from trader.errors import TraderError
from trader.execution.client_ids import ID_PATTERN, MAX_LENGTH, InvalidOrderIdError, make_client_order_id

DAY = date(2024, 3, 5)


def spec_id(strategy: str, day: date, symbol: str, side: str, intent: str, sequence: int) -> str:
    """The v1 format as docs/execution.md states it, written out independently of the module."""
    fields = ["coid-v1", strategy, day.isoformat(), symbol.upper(), side, intent.lower(), sequence]
    raw = hashlib.sha256(json.dumps(fields, separators=(",", ":")).encode()).digest()
    digest = base64.b32encode(raw).decode().lower()[:12]

    def clean(value: str, limit: int) -> str:
        return "".join(c for c in value.lower() if c.isascii() and c.isalnum())[:limit] or "x"

    parts = [clean(strategy, 10), day.strftime("%y%m%d"), clean(symbol, 8), side[0], clean(intent, 5)]
    if sequence:
        parts.append(str(sequence))
    return "-".join(parts)[:35].rstrip("-") + "-" + digest


@pytest.mark.parametrize(
    "args",
    [
        ("alpha_baseline", DAY, "AAPL", "buy", "rebalance", 0),
        ("momentum", date(2023, 12, 29), "BRK.B", "sell", "exit", 3),
        ("a" * 80, date(2024, 2, 29), "BTC/USD", "sell", "kill", 12345),
    ],
)
def test_matches_the_documented_format(args: tuple[str, date, str, str, str, int]) -> None:
    assert make_client_order_id(*args) == spec_id(*args)


def test_readable_part_names_the_order() -> None:
    coid = make_client_order_id("alpha_baseline", DAY, "AAPL", OrderSide.BUY, "rebalance")
    assert coid.startswith("alphabasel-240305-aapl-b-rebal-")
    seq = make_client_order_id("alpha_baseline", DAY, "BRK.B", "sell", "exit", 7)
    assert seq.startswith("alphabasel-240305-brkb-s-exit-7-")


def test_same_inputs_same_id_in_another_process() -> None:
    here = make_client_order_id("alpha_baseline", DAY, "AAPL", "buy")
    code = (
        "from datetime import date; from trader.execution.client_ids import make_client_order_id as m; "
        "print(m('alpha_baseline', date(2024, 3, 5), 'AAPL', 'buy'))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == here


def test_symbol_and_intent_case_do_not_matter_and_side_enum_equals_text() -> None:
    a = make_client_order_id("s1", DAY, "aapl", "buy", "Rebalance")
    b = make_client_order_id("s1", DAY, " AAPL ", OrderSide.BUY, "rebalance")
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"strategy_id": " "}, "strategy_id"),
        ({"symbol": ""}, "symbol"),
        ({"side": "hold"}, "side"),
        ({"intent": ""}, "intent"),
        ({"sequence": -1}, "sequence"),
        ({"sequence": True}, "sequence"),
    ],
)
def test_bad_inputs_raise_an_error_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {
        "strategy_id": "s1",
        "trading_date": DAY,
        "symbol": "AAPL",
        "side": "buy",
        "intent": "rebalance",
        "sequence": 0,
    }
    with pytest.raises(InvalidOrderIdError, match=field) as caught:
        make_client_order_id(**(args | kwargs))  # type: ignore[arg-type]
    assert isinstance(caught.value, TraderError)


texts = st.text(min_size=1, max_size=60).filter(lambda t: t.strip() != "")
inputs = st.tuples(
    texts,
    st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31)),
    texts,
    st.sampled_from(["buy", "sell"]),
    texts,
    st.integers(min_value=0, max_value=10**9),
)


def canonical(args: tuple[str, date, str, str, str, int]) -> tuple[object, ...]:
    strategy, day, symbol, side, intent, seq = args
    return (strategy.strip(), day, symbol.strip().upper(), side, intent.strip().lower(), seq)


@given(inputs)
def test_always_short_and_in_the_allowed_alphabet(args: tuple[str, date, str, str, str, int]) -> None:
    coid = make_client_order_id(*args)
    assert len(coid) <= MAX_LENGTH
    assert ID_PATTERN.fullmatch(coid)
    assert make_client_order_id(*args) == coid


@given(inputs, inputs)
def test_different_intents_get_different_ids(
    a: tuple[str, date, str, str, str, int], b: tuple[str, date, str, str, str, int]
) -> None:
    if canonical(a) == canonical(b):
        assert make_client_order_id(*a) == make_client_order_id(*b)
    else:
        assert make_client_order_id(*a) != make_client_order_id(*b)


@given(inputs, st.sampled_from(range(6)))
def test_changing_any_one_field_changes_the_id(
    args: tuple[str, date, str, str, str, int], which: int
) -> None:
    changed = list(args)
    strategy, day, symbol, side, intent, seq = args
    replacement: list[object] = [
        strategy + "2",
        date(day.year, day.month, 1) if day.day != 1 else date(day.year, day.month, 2),
        symbol + "Z",
        "sell" if side == "buy" else "buy",
        intent + "q",
        seq + 1,
    ]
    changed[which] = replacement[which]
    assert make_client_order_id(*changed) != make_client_order_id(*args)  # type: ignore[arg-type]
