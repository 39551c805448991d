"""Versioned feature definitions shared by the offline (history) and online (Redis) paths.

A feature is a pure function of one symbol's adjusted bar history: a Polars expression over the bars of
one symbol sorted by date (evaluate it ``.over("symbol")``, or as :func:`compute_features` does, on
bars sorted by symbol and date with each symbol's first ``window - 1`` rows masked). The same expression
computes a whole history for training (:func:`compute_features`) and the newest row for the signal
service (:func:`latest_features` on the last few bars kept in Redis), so the two paths cannot drift.

Windows are written as explicit sums of shifted columns rather than Polars' ``rolling_*`` kernels. The
rolling kernels update a running sum as the window slides, so the value on the last date depends on how
much history came before it (by a few ulps); a sum of shifts adds exactly the same numbers in exactly the
same order whatever precedes the window, so a feature computed from the last ``window`` bars is
bit-identical to the same feature computed from ten years of bars (divisions by a constant are written
as products for the same reason, see ``_scaled``). The parity test relies on this.

Changing what a feature computes means bumping its ``version``: :data:`FEATURE_SET_VERSION` changes with
it, and the online store records the version each stored value was computed with.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce

import polars as pl

from trader.data.bars import KEY


@dataclass(frozen=True)
class Feature:
    """One feature: a name, a version to bump when its definition changes, and the bars it needs.

    ``window`` is the number of bars (the current one included) the expression needs for a non-null
    value; with fewer bars it is null.
    """

    name: str
    version: int
    window: int
    description: str
    build: Callable[[], pl.Expr]

    def expr(self) -> pl.Expr:
        """The expression, named after the feature; evaluate it ``.over("symbol")`` on date-sorted bars.

        It reads only the current row and the ``window - 1`` rows before it, so it is null until the
        window is full when evaluated per symbol.
        """
        return self.build().alias(self.name)


def _sum(expr: pl.Expr, window: int) -> pl.Expr:
    """``expr`` summed over the current and previous ``window - 1`` rows, oldest first."""
    lags = range(window - 1, -1, -1)
    return reduce(operator.add, (expr.shift(lag) for lag in lags))


def _scaled(expr: pl.Expr, divisor: int) -> pl.Expr:
    """``expr / divisor`` written as a product with the reciprocal.

    Polars divides a column by a scalar by multiplying with the reciprocal, but divides element-wise
    when the divisor has been broadcast to a column (which depends on the plan around it). The two
    differ in the last bit, which would break the offline/online parity; a product is the same in
    both kernels.
    """
    return expr * (1.0 / divisor)


def _mean(expr: pl.Expr, window: int) -> pl.Expr:
    return _scaled(_sum(expr, window), window)


def _std(expr: pl.Expr, window: int) -> pl.Expr:
    """Sample standard deviation (ddof=1) of the last ``window`` values.

    One pass (sum of squares minus squared sum): a two-pass form would repeat the whole mean inside
    every squared term. The one-pass form loses precision only when the mean is large against the
    spread, which daily returns (mean ~0) are not. Rounding can push a zero variance a hair below 0.
    """
    sum_x = _sum(expr, window)
    sum_x2 = _sum(expr * expr, window)
    variance = _scaled(sum_x2 - _scaled(sum_x * sum_x, window), window - 1)
    return variance.clip(lower_bound=0.0).sqrt()


def _close() -> pl.Expr:
    return pl.col("close")


def _return(periods: int) -> pl.Expr:
    return _close() / _close().shift(periods) - 1.0


def _ma_ratio(window: int) -> pl.Expr:
    return _close() / _mean(_close(), window) - 1.0


def _volatility(window: int) -> pl.Expr:
    return _std(_return(1), window)


def _volume_ratio(window: int) -> pl.Expr:
    return pl.col("volume") / _mean(pl.col("volume"), window)


def _hl_range() -> pl.Expr:
    return (pl.col("high") - pl.col("low")) / _close()


_DEFINITIONS = (
    Feature("ret_1d", 1, 2, "close-to-close return over 1 bar", lambda: _return(1)),
    Feature("ret_5d", 1, 6, "close-to-close return over 5 bars", lambda: _return(5)),
    Feature("ret_20d", 1, 21, "close-to-close return over 20 bars", lambda: _return(20)),
    Feature("ma_ratio_5", 1, 5, "close / 5-bar mean close - 1", lambda: _ma_ratio(5)),
    Feature("ma_ratio_20", 1, 20, "close / 20-bar mean close - 1", lambda: _ma_ratio(20)),
    Feature("vol_20", 1, 21, "sample std of the last 20 daily returns", lambda: _volatility(20)),
    Feature("volume_ratio_20", 1, 20, "volume / 20-bar mean volume", lambda: _volume_ratio(20)),
    Feature("hl_range", 1, 1, "(high - low) / close of the bar", _hl_range),
)

#: Every feature by name, in a stable order (the column order of :func:`compute_features`).
FEATURES: dict[str, Feature] = {feature.name: feature for feature in _DEFINITIONS}


def feature_set_version(features: Iterable[Feature] | None = None) -> str:
    """A short hash of the (name, version) pairs: changes when any feature is added, removed or bumped."""
    chosen = FEATURES.values() if features is None else features
    text = ";".join(f"{f.name}:{f.version}" for f in sorted(chosen, key=lambda f: f.name))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Version of the whole feature set, recorded next to every value the online store keeps.
FEATURE_SET_VERSION = feature_set_version()


def _select(names: Sequence[str] | None) -> list[Feature]:
    if names is None:
        return list(FEATURES.values())
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise KeyError(f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
    return [FEATURES[name] for name in names]


def max_window(names: Sequence[str] | None = None) -> int:
    """The most bars any of the (named) features needs: the history the online path must keep."""
    return max(feature.window for feature in _select(names))


def compute_features(bars: pl.DataFrame, names: Sequence[str] | None = None) -> pl.DataFrame:
    """Features for every row of ``bars`` (adjusted bars of any number of symbols).

    Returns ``symbol, date`` plus one Float64 column per feature, sorted by symbol and date. Rows
    before a feature's window is full hold null. ``bars`` needs ``symbol, date, high, low, close,
    volume``; the bars should be consecutive sessions (gaps are not filled, the window counts bars).
    """
    features = _select(names)
    # The frame is sorted by symbol, so a shift only crosses into the previous symbol in the first
    # ``window - 1`` rows of a symbol; masking those rows gives what ``.over("symbol")`` would, without
    # a group-wise evaluation per shift (several times faster on a long history).
    position = pl.int_range(pl.len()).over("symbol")
    return (
        bars.lazy()
        .sort(KEY)
        .with_columns(_position=position)
        .select(
            *KEY,
            *(
                pl.when(pl.col("_position") >= feature.window - 1)
                .then(feature.expr())
                .cast(pl.Float64)
                .alias(feature.name)
                for feature in features
            ),
        )
        .collect()
    )


def latest_features(bars: pl.DataFrame, names: Sequence[str] | None = None) -> pl.DataFrame:
    """The features of the newest bar of each symbol: what the online path serves.

    Computes only on each symbol's last :func:`max_window` bars, which gives the same values as
    :func:`compute_features` on the whole history (see the module docstring).
    """
    window = max_window(names)
    recent = bars.sort(KEY).group_by("symbol", maintain_order=True).tail(window)
    return compute_features(recent, names).group_by("symbol", maintain_order=True).last()
