"""Pre-trade risk limits: one strategy's, the global ones, and the stricter of the two.

Limits live in the ``risk_limits`` table, one row per strategy plus an optional global row
(``strategy_id = '*'``). The global level falls back to the settings (``MAX_ORDER_NOTIONAL``,
``MAX_POSITION_NOTIONAL``, ``MAX_GROSS_EXPOSURE``, ``DAILY_LOSS_LIMIT``) field by field:

- in the global row, NULL means "use the setting", 0 means "no global limit";
- in a strategy row, NULL and 0 both mean "no limit from this strategy";
- in the settings, 0 disables a limit.

The limit that applies is the **stricter** (smaller) of the strategy's and the global one; blacklists
are joined; trading is disabled if either row says ``enabled = false``. Each applied limit remembers
where it came from so a rejection can name it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from trader.config import Settings
from trader.errors import TraderError
from trader.store.models import ALL_STRATEGIES

#: The money limits, in the order rules check them.
LIMIT_FIELDS = ("max_order_notional", "max_position_notional", "max_gross_exposure", "daily_loss_limit")

_STRATEGY_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9./-]{0,31}$")


class RiskError(TraderError):
    """Risk limits or risk inputs that are invalid (the message names the field and the fix)."""

    exit_code = 2


@dataclass(frozen=True)
class RiskLimits:
    """The limits of one row of ``risk_limits``: a strategy's, or the global ones (``strategy_id='*'``).

    Money limits are dollars; ``None`` means not set at this level (see the module docstring for what
    that means in the global row). ``max_drawdown_pct`` is stored for the circuit breaker and not
    checked before trades. ``blacklist`` symbols are upper-cased.
    """

    strategy_id: str
    max_order_notional: Decimal | None = None
    max_position_notional: Decimal | None = None
    max_gross_exposure: Decimal | None = None
    daily_loss_limit: Decimal | None = None
    max_drawdown_pct: Decimal | None = None
    blacklist: frozenset[str] = frozenset()
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.strategy_id != ALL_STRATEGIES and not (
            isinstance(self.strategy_id, str) and _STRATEGY_ID.match(self.strategy_id)
        ):
            raise RiskError(
                f"strategy_id {self.strategy_id!r} is invalid: use '*' for the global limits or lower-case "
                "letters, digits and '_' starting with a letter (≤64 chars)"
            )
        for name in LIMIT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            amount = finite(value, name)
            if amount < 0:
                raise RiskError(f"{name} of {self.strategy_id!r} must be ≥ 0 dollars or None (got {value})")
            object.__setattr__(self, name, amount)
        if self.max_drawdown_pct is not None:
            pct = finite(self.max_drawdown_pct, "max_drawdown_pct")
            if not Decimal(0) < pct <= 1:
                raise RiskError(f"max_drawdown_pct must be a fraction in (0, 1], e.g. 0.05 (got {pct})")
            object.__setattr__(self, "max_drawdown_pct", pct)
        if not isinstance(self.enabled, bool):
            raise RiskError(f"enabled must be true or false (got {self.enabled!r})")
        object.__setattr__(self, "blacklist", normalize_blacklist(self.blacklist))


def normalize_blacklist(symbols: Iterable[Any]) -> frozenset[str]:
    """Upper-cased, stripped symbols; refuses anything that is not a plausible ticker."""
    if isinstance(symbols, str):
        raise RiskError(f"blacklist must be a list of symbols, not the string {symbols!r}")
    clean: set[str] = set()
    for raw in symbols:
        symbol = raw.strip().upper() if isinstance(raw, str) else ""
        if not _SYMBOL.match(symbol):
            raise RiskError(f"blacklist entry {raw!r} is not a symbol (letters, digits, '.', '/', '-')")
        clean.add(symbol)
    return frozenset(clean)


@dataclass(frozen=True)
class Limit:
    """One applied money limit, with the level it came from (``strategy alpha_baseline``, ``global``,
    ``settings``)."""

    name: str
    value: Decimal
    source: str

    def describe(self) -> str:
        """``max_order_notional 10,000.00 (strategy alpha_baseline)``."""
        return f"{self.name} {money(self.value)} ({self.source})"


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits that apply to one strategy's orders (see :func:`combine_limits`).

    A limit that is ``None`` is not checked. ``blacklist`` maps each banned symbol to the level that
    banned it; ``disabled_by`` names the level that disabled trading, ``None`` when trading is on.
    """

    strategy_id: str
    max_order_notional: Limit | None = None
    max_position_notional: Limit | None = None
    max_gross_exposure: Limit | None = None
    daily_loss_limit: Limit | None = None
    blacklist: Mapping[str, str] = field(default_factory=dict)
    disabled_by: str | None = None


def limits_from_settings(settings: Settings) -> RiskLimits:
    """The global limits the settings give (a 0 setting is kept as 0: "no limit")."""
    return RiskLimits(
        strategy_id=ALL_STRATEGIES,
        max_order_notional=settings.max_order_notional,
        max_position_notional=settings.max_position_notional,
        max_gross_exposure=settings.max_gross_exposure,
        daily_loss_limit=settings.daily_loss_limit,
    )


def combine_limits(
    strategy_id: str,
    strategy: RiskLimits | None,
    global_row: RiskLimits | None,
    settings: Settings | None,
) -> EffectiveLimits:
    """The limits for ``strategy_id``: the stricter of its own row and the global level.

    The global level is the ``'*'`` row field by field, a NULL field falling back to ``settings``
    (which may be ``None``: no fallback). Zero disables a limit at its level. Ties name the strategy.
    """
    if strategy is not None and strategy.strategy_id != strategy_id:
        raise RiskError(f"limits of {strategy.strategy_id!r} given for strategy {strategy_id!r}")
    if global_row is not None and global_row.strategy_id != ALL_STRATEGIES:
        raise RiskError(f"the global limits must have strategy_id '*', not {global_row.strategy_id!r}")
    from_settings = limits_from_settings(settings) if settings is not None else None
    strategy_source = f"strategy {strategy_id}"
    applied: dict[str, Limit | None] = {}
    for name in LIMIT_FIELDS:
        own = _limit(name, getattr(strategy, name, None), strategy_source)
        row_value = getattr(global_row, name, None)
        if row_value is not None:
            general = _limit(name, row_value, "global")
        else:
            general = _limit(name, getattr(from_settings, name, None), "settings")
        applied[name] = _stricter(own, general)
    banned = {symbol: "global" for symbol in (global_row.blacklist if global_row else ())}
    banned.update({symbol: strategy_source for symbol in (strategy.blacklist if strategy else ())})
    disabled_by = None
    if strategy is not None and not strategy.enabled:
        disabled_by = strategy_source
    elif global_row is not None and not global_row.enabled:
        disabled_by = "global"
    return EffectiveLimits(
        strategy_id=strategy_id,
        max_order_notional=applied["max_order_notional"],
        max_position_notional=applied["max_position_notional"],
        max_gross_exposure=applied["max_gross_exposure"],
        daily_loss_limit=applied["daily_loss_limit"],
        blacklist=banned,
        disabled_by=disabled_by,
    )


def _limit(name: str, value: Decimal | None, source: str) -> Limit | None:
    """A limit, or ``None`` when the value is unset or 0 (disabled)."""
    if value is None or value == 0:
        return None
    return Limit(name, value, source)


def _stricter(own: Limit | None, general: Limit | None) -> Limit | None:
    if own is None or general is None:
        return own or general
    return own if own.value <= general.value else general


def money(value: Decimal) -> str:
    """Dollars as ``12,500.00`` (two decimals, thousands separated) for reasons people read."""
    return f"{value:,.2f}"


def finite(value: Any, name: str) -> Decimal:
    """``value`` as a finite Decimal, or a :class:`RiskError` naming ``name``. Floats are refused
    because they have already lost the exact value."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        raise RiskError(f"{name} must be a Decimal (or int), not {type(value).__name__}: {value!r}")
    number = Decimal(value)
    if not number.is_finite():
        raise RiskError(f"{name} must be a finite number (got {number})")
    return number
