"""Values made ready for JSON: events, snapshots and stored records keep exact numbers and UTC times."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from typing import Any


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
