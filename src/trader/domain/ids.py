"""Names shared by configuration, the command line and the services."""

from __future__ import annotations

import re

#: A strategy id: lower-case letters, digits and ``_``, starting with a letter, at most 64 characters
#: (it is part of every ``client_order_id`` and of Redis keys).
STRATEGY_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
STRATEGY_ID_RULE = "lower-case letters, digits and '_', starting with a letter, ≤64 chars"
_STRATEGY_ID = re.compile(STRATEGY_ID_PATTERN)


def is_strategy_id(value: str) -> bool:
    """Whether ``value`` is a valid strategy id."""
    return _STRATEGY_ID.fullmatch(value) is not None
