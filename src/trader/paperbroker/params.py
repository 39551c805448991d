"""Parsing of the query parameters Alpaca's market-data API takes (times, timeframe, sort, tokens).

Every parse error is an :class:`~trader.paperbroker.errors.AlpacaError` 422 naming the parameter.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from enum import StrEnum
from zoneinfo import ZoneInfo

from trader.paperbroker.errors import invalid

#: Daily bars are stamped at 00:00 New York time of their session.
MARKET_TZ = ZoneInfo("America/New_York")

_DAILY = {"1day", "1d"}
_TIMEFRAME = re.compile(r"^(\d+)(min|t|hour|h|day|d|week|w|month|m)$", re.IGNORECASE)
_FRACTION = re.compile(r"(\.\d{6})\d+")


class Sort(StrEnum):
    """Result order: ascending (default) or descending time."""

    ASC = "asc"
    DESC = "desc"


def parse_sort(value: str | None) -> Sort:
    """``asc`` (default) or ``desc``."""
    if value is None or value == "":
        return Sort.ASC
    try:
        return Sort(value.lower())
    except ValueError:
        raise invalid(f"invalid sort: '{value}' (use asc or desc)") from None


def check_timeframe(value: str) -> None:
    """Accept ``1Day``/``1D``; refuse other well-formed timeframes (not served) and malformed ones."""
    text = value.strip()
    if text.lower() in _DAILY:
        return
    if _TIMEFRAME.match(text):
        raise invalid(f"unsupported timeframe: '{value}' (the paper broker serves daily bars only: 1Day)")
    raise invalid(f"invalid timeframe: '{value}'")


def parse_time(value: str | None, name: str) -> datetime | None:
    """An RFC-3339 time (naive means UTC) or a ``YYYY-MM-DD`` date, as an aware UTC datetime.

    A date means 00:00 New York time of that date for both ``start`` and ``end``: the timestamp of
    that day's daily bar, so both bounds include that session (Alpaca's bounds are inclusive).
    """
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, clock.min, MARKET_TZ).astimezone(UTC)
        moment = datetime.fromisoformat(_FRACTION.sub(r"\1", text.replace("z", "Z")))
    except ValueError:
        raise invalid(f"invalid {name}: '{value}' (use RFC-3339 or YYYY-MM-DD)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_date(value: str | None, name: str) -> date | None:
    """A ``YYYY-MM-DD`` date (corporate-actions bounds)."""
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise invalid(f"invalid {name}: '{value}' (use YYYY-MM-DD)") from None


def bar_time(day: date) -> datetime:
    """The timestamp of the daily bar of ``day``: 00:00 New York time, in UTC."""
    return datetime.combine(day, clock.min, MARKET_TZ).astimezone(UTC)


def first_session_on_or_after(moment: datetime) -> date:
    """The earliest date whose daily-bar timestamp is at or after ``moment``."""
    day = moment.astimezone(MARKET_TZ).date()
    return day if bar_time(day) >= moment else day + timedelta(days=1)


def last_session_on_or_before(moment: datetime) -> date:
    """The latest date whose daily-bar timestamp is at or before ``moment``."""
    return moment.astimezone(MARKET_TZ).date()


def parse_list(value: str | None, *, upper: bool = False) -> list[str]:
    """A comma-separated list, trimmed, without empty items and repeats (order kept)."""
    if value is None:
        return []
    items = (item.strip() for item in value.split(","))
    cleaned = [item.upper() if upper else item for item in items if item]
    return list(dict.fromkeys(cleaned))


@dataclass(frozen=True)
class Adjustment:
    """Which corporate actions to back-adjust for."""

    split: bool
    dividend: bool

    @property
    def raw(self) -> bool:
        """No adjustment at all."""
        return not (self.split or self.dividend)


_ADJUSTMENTS = {"raw", "split", "dividend", "spin-off", "all"}


def parse_adjustment(value: str | None) -> Adjustment:
    """``raw`` (default) | ``split`` | ``dividend`` | ``spin-off`` | ``all``, comma-combinable.

    ``spin-off`` is accepted and changes nothing: the data store records no spin-offs.
    """
    parts = {part.lower() for part in parse_list(value)} or {"raw"}
    unknown = sorted(parts - _ADJUSTMENTS)
    if unknown:
        raise invalid(f"invalid adjustment: '{unknown[0]}' (use raw, split, dividend, spin-off or all)")
    every = "all" in parts
    return Adjustment(split=every or "split" in parts, dividend=every or "dividend" in parts)


def encode_token(key: list[str]) -> str:
    """An opaque page token holding the sort key of the last item returned."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode()


def decode_token(token: str | None, size: int) -> list[str] | None:
    """The key inside a page token from :func:`encode_token`; 422 when it is not one."""
    if token is None or token == "":
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error):
        raise invalid("invalid page_token") from None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(k, str) for k in key):
        raise invalid("invalid page_token")
    return key
