"""Scores → target weights: the portfolio rule shared by the backtest and the live signal service.

The rule is Qlib's ``TopkDropoutStrategy`` (``method_sell="bottom"``, ``method_buy="top"``): keep the
current holdings, rank them together with the best-scored names not held, sell at most ``n_drop`` of
the holdings that rank lowest, and buy the best new names to fill ``topk`` slots. Replacing only a few
names a day keeps turnover low. Each selected name gets the same weight, ``1 / topk`` of equity
(fewer than ``topk`` names leave the rest in cash), so the live path and the research backtest hold
the same names. When more than ``topk`` names are held (a new model with a smaller ``topk``, or
holdings carried in from elsewhere), the rule keeps more than ``topk`` names, as Qlib's does, and
sheds at most ``n_drop`` a day; each then gets ``1 / count``, so the weights never add up to more
than the whole equity (an allocation above 1 would be refused, and the book would be stuck there).

Long/short (optional): the long book is chosen as above with half the equity, and the short book is
the same rule applied to the negated scores with the other half, as negative weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal

from trader.errors import TraderError


class SignalError(TraderError):
    """Scores or portfolio settings that cannot make target weights."""


def _check_scores(scores: Mapping[str, float]) -> None:
    bad = sorted(symbol for symbol, score in scores.items() if not math.isfinite(score))
    if bad:
        raise SignalError(f"scores must be finite numbers; not finite for {', '.join(bad[:10])}")


def _ranked(names: Iterable[str], scores: Mapping[str, float]) -> list[str]:
    """Best score first; ties broken by symbol so the choice is the same on every run."""
    return sorted(names, key=lambda symbol: (-scores[symbol], symbol))


def topk_dropout(scores: Mapping[str, float], held: Iterable[str], *, topk: int, n_drop: int) -> list[str]:
    """The names to hold after today's rebalance, best first (Qlib's TopkDropout selection).

    ``held`` names without a score today (delisted, filtered out of the universe) are always sold: a
    name we cannot score is not one we keep. ``n_drop`` limits how many *scored* holdings are replaced.
    """
    if topk < 1 or n_drop < 0:
        raise SignalError(f"topk must be ≥ 1 and n_drop ≥ 0 (got topk={topk}, n_drop={n_drop})")
    _check_scores(scores)
    last = _ranked({s for s in held if s in scores}, scores)
    candidates = _ranked((s for s in scores if s not in set(last)), scores)
    today = candidates[: max(n_drop + topk - len(last), 0)]
    combined = _ranked([*last, *today], scores)
    bottom = set(combined[-n_drop:]) if n_drop else set()
    sell = [s for s in last if s in bottom]
    buy = today[: len(sell) + topk - len(last)]
    keep = [s for s in last if s not in set(sell)]
    return _ranked([*keep, *buy], scores)


def target_weights(
    scores: Mapping[str, float],
    held: Iterable[str] = (),
    *,
    topk: int,
    n_drop: int,
    long_short: bool = False,
    held_short: Iterable[str] = (),
) -> dict[str, Decimal]:
    """Equal target weights (fractions of equity) of the names :func:`topk_dropout` selects.

    Long-only: each selected name ``1 / topk``. Long/short: longs ``0.5 / topk`` each, shorts (the
    rule on negated scores, from ``held_short``) ``-0.5 / topk`` each. A book that keeps more than
    ``topk`` names divides its share by their count instead (see the module doc). Names not in the
    result have a target weight of zero.
    """
    if not long_short:
        return _equal(topk_dropout(scores, held, topk=topk, n_drop=n_drop), Decimal(1), topk)
    longs = topk_dropout(scores, held, topk=topk, n_drop=n_drop)
    negated = {symbol: -score for symbol, score in scores.items() if symbol not in set(longs)}
    shorts = topk_dropout(negated, held_short, topk=topk, n_drop=n_drop)
    half = Decimal("0.5")
    return {**_equal(longs, half, topk), **_equal(shorts, -half, topk)}


def _equal(names: list[str], share: Decimal, topk: int) -> dict[str, Decimal]:
    """``share`` of equity split equally over ``topk`` slots, or over the names if there are more."""
    weight = share / Decimal(max(topk, len(names)))
    return {symbol: weight for symbol in names}
