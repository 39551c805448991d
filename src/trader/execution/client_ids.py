"""Deterministic ``client_order_id``: the same order intent always gets the same id.

The id is what makes a retry, a restart or a second run of the same day safe: the order row is keyed
by it and the broker refuses a second order under it. So it is a pure function of what the order
*is for* — (strategy, trading date, symbol, side, intent, sequence) — never of time or randomness.

Format (version 1), at most :data:`MAX_LENGTH` = 48 characters of ``[a-z0-9-]``::

    <strategy>-<yymmdd>-<symbol>-<b|s>-<intent>[-<sequence>]-<hash>
    alphabasel-240305-aapl-b-rebal-qulk7phxzi2j   (alpha_baseline, 2024-03-05, AAPL, buy, rebalance)

- The readable part is for people (logs, the broker's dashboard): each field lowercased and reduced
  to ``[a-z0-9]``, the strategy cut to 10 characters, the symbol to 8, the intent to 5, the sequence
  shown when it is not 0, the whole part cut to 35 characters.
- ``hash`` carries the identity: the first 12 characters (60 bits) of the lowercase base32 SHA-256 of
  the canonical JSON array ``["coid-v1", strategy_id, "YYYY-MM-DD", SYMBOL, side, intent, sequence]``
  (compact separators, symbol upper-cased, intent lower-cased, strategy as given). JSON makes the
  encoding injective, so two different inputs differ in what is hashed even when the readable part
  (which truncates) is the same.

Stable across processes, machines and Python versions (no ``hash()``, no randomness). Changing the
format would change every id of a day already traded, so a new format needs a new version tag.

48 characters is Alpaca's older documented limit; today's is 128 (``trader.broker.base``). Staying
under the older one costs nothing and keeps the ids valid for either.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import date

from trader.domain.enums import OrderSide
from trader.errors import TraderError

#: Longest id produced (Alpaca's older, stricter limit).
MAX_LENGTH = 48
#: Every id matches this.
ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
VERSION = "coid-v1"
HASH_LENGTH = 12
READABLE_LENGTH = MAX_LENGTH - HASH_LENGTH - 1
DEFAULT_INTENT = "rebalance"

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_SIDE_LETTER = {OrderSide.BUY: "b", OrderSide.SELL: "s"}


class InvalidOrderIdError(TraderError):
    """An input to :func:`make_client_order_id` that cannot identify an order."""

    exit_code = 2


def make_client_order_id(
    strategy_id: str,
    trading_date: date,
    symbol: str,
    side: OrderSide | str,
    intent: str = DEFAULT_INTENT,
    sequence: int = 0,
) -> str:
    """The ``client_order_id`` of one order intent (see the module docstring for the format).

    ``sequence`` tells apart several orders with the same strategy, day, symbol, side and intent
    (a slice of a parent order, a second rebalance the same day); leave it 0 otherwise.
    """
    strategy, sym, order_side, why = _canonical(strategy_id, trading_date, symbol, side, intent, sequence)
    digest = _digest([VERSION, strategy, trading_date.isoformat(), sym, order_side.value, why, sequence])
    parts = [
        _readable(strategy, 10),
        trading_date.strftime("%y%m%d"),
        _readable(sym, 8),
        _SIDE_LETTER[order_side],
        _readable(why, 5),
    ]
    if sequence:
        parts.append(str(sequence))
    readable = "-".join(parts)[:READABLE_LENGTH].rstrip("-")
    return f"{readable}-{digest}"


def _canonical(
    strategy_id: str, trading_date: date, symbol: str, side: OrderSide | str, intent: str, sequence: int
) -> tuple[str, str, OrderSide, str]:
    strategy, sym, why = strategy_id.strip(), symbol.strip().upper(), intent.strip().lower()
    if not strategy:
        raise InvalidOrderIdError("strategy_id is empty: give the strategy's id (e.g. alpha_baseline)")
    if not sym:
        raise InvalidOrderIdError("symbol is empty: give the ticker (e.g. AAPL)")
    if not why:
        raise InvalidOrderIdError(f"intent is empty: give why the order exists (e.g. {DEFAULT_INTENT})")
    if not isinstance(trading_date, date):
        raise InvalidOrderIdError(f"trading_date must be a date, not {type(trading_date).__name__}")
    if isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0:
        raise InvalidOrderIdError(f"sequence must be a whole number >= 0, not {sequence!r}")
    try:
        order_side = OrderSide(side)
    except ValueError:
        raise InvalidOrderIdError(f"side must be 'buy' or 'sell', not {side!r}") from None
    return strategy, sym, order_side, why


def _digest(fields: list[object]) -> str:
    canonical = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
    raw = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.b32encode(raw).decode("ascii").lower()[:HASH_LENGTH]


def _readable(value: str, limit: int) -> str:
    return _NOT_ALNUM.sub("", value.lower())[:limit] or "x"
