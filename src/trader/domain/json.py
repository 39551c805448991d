"""Values made ready for JSON: events, snapshots and stored records keep exact numbers and UTC times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any


def plain_decimal(value: Decimal) -> str:
    """``value`` as plain decimal text without trailing zeros: ``"10"``, ``"31.7838"``, ``"0"``.

    ``str`` gives what the arithmetic left, such as ``"0E-9"`` for a closed fractional position or
    ``"1E+1"``, which clients reading a quantity do not expect.
    """
    return format(value.normalize() + 0, "f")  # "+ 0" turns -0 into 0


def json_ready(value: Any) -> Any:
    """``value`` with every Decimal as its exact text and every date or datetime as ISO text, through
    mappings (keys as text) and lists; anything else is left as it is."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):  # a datetime is a date too
        return value.isoformat()
    return value
