"""Qlib's expression operators as Polars expressions, with Qlib's semantics.

Each function reproduces one Qlib operator as pyqlib 0.9.7 computes it on pandas 3 and NumPy 2
(read from ``qlib/data/ops.py``, ``qlib/data/_libs/rolling.pyx`` and pandas' rolling aggregations):

- **dtypes.** Qlib reads float32 and its element-wise operators stay float32 (``$close-$open`` is a
  float32 subtraction, ``+1e-12`` is added in float32). Rolling operators convert their input to
  float64 and return float64. Our element-wise arithmetic is therefore done on ``Float32`` columns
  and every window statistic on ``Float64`` ones; IEEE arithmetic gives the same bits as NumPy.
  ``Log`` is NumPy's own float32 logarithm: Polars' differs from it in the last bits.
- **missing values.** A session without a bar is NaN in Qlib and null here. Element-wise operators
  propagate it (``Greater`` is ``np.maximum``: NaN wins); comparisons give False (``NaN > x`` is
  False in NumPy, so ``$close>Ref($close, 1)`` is 0 on a halt, not missing). pandas' rolling
  operators skip NaN *and* ±inf (a zero volume makes ``Log($volume/Ref($volume, 1)+1)`` infinite).
- **windows.** ``rolling(N, min_periods=1)``: the last N sessions, partial at the start of a symbol's
  span, statistics over the values present, missing when there are none. ``Std`` has ddof 1
  (missing with one value). ``Quantile`` interpolates linearly, ``Rank`` is the average rank of the
  current value as a fraction of the values present, ``IdxMax`` is 1-based from the window's first
  session and, because ``np.argmax`` returns the first NaN, points at the first missing session when
  there is one. ``Slope``/``Rsquare``/``Resi`` regress on the session number. ``Corr`` is pandas'
  pairwise-complete correlation. ``Corr`` and ``Rsquare`` are NaN where an input's rolling std is
  within 2e-5 of 0 (``np.isclose(..., atol=2e-5)``).

Every window statistic is computed from the window's own values only — sums of the lagged values in
a fixed order, order statistics — never carried from one row to the next as pandas' and Qlib's
online algorithms do. A row's value therefore does not depend on how much history came before it,
and the two :class:`Layout` s give the same bits: ``TALL`` (one row per symbol and session, a lag is
a shifted column; for all rows) and ``WIDE`` (one row per symbol, a lag is a column ``name@k``; for
one day). The values differ from Qlib's by rounding only (about 1e-15 relative).

Sums over a window are written as ladders: one sum per block of lags ``[0, 5) [5, 10) [10, 20)
[20, 30) [30, 60)``, then running totals, so the five windows share their terms. Variances use
values centred on the row's last present value (a value of the window), which keeps them exact for a
constant window and accurate for prices that barely move.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from trader.strategies.alpha_baseline.alpha158_spec import WINDOWS

F32 = pl.Float32
F64 = pl.Float64
#: Qlib masks ``Corr`` and ``Rsquare`` where ``np.isclose(rolling std, 0, atol=2e-5)``.
ZERO_STD = 2e-5
#: The longest window: lags 0 .. MAX_WINDOW - 1.
MAX_WINDOW = max(WINDOWS)

Term = Callable[[int], pl.Expr]


def col(name: str) -> pl.Expr:
    return pl.col(name)


def lit32(value: float) -> pl.Expr:
    return pl.lit(value, dtype=F32)


def tall_lag(name: str, k: int) -> pl.Expr:
    """``Ref(name, k)`` on a tall grid: the row ``k`` sessions back (null in the padding)."""
    return pl.col(name) if k == 0 else pl.col(name).shift(k)


def wide_name(name: str, k: int) -> str:
    return f"{name}@{k}"


def _sorted_window(lag: Callable[[str, int], pl.Expr], x: str, window: int) -> pl.Expr:
    return pl.concat_list([lag(x, k) for k in range(window)]).list.drop_nulls().list.sort()


@dataclass(frozen=True)
class Layout:
    """Where a window's values are: the lags of a column, its window max/min and order statistics."""

    name: str
    lag: Callable[[str, int], pl.Expr]
    window_max: Callable[[str, int], pl.Expr]
    window_min: Callable[[str, int], pl.Expr]
    #: ``(x, q, window, position)``: the values present at ``floor`` and ``ceil`` of ``position``
    #: (``q(n-1)``, 0-based) in sorted order.
    quantile_bounds: Callable[[str, float, int, pl.Expr], tuple[pl.Expr, pl.Expr]]
    #: The last present value of ``x`` in the longest window (or before it: only used when present).
    last_present: Callable[[str], pl.Expr]


def _tall_quantile_bounds(x: str, q: float, window: int, position: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    # Polars' "lower"/"higher" rolling quantiles are the values at floor/ceil of q(n-1).
    return (
        pl.col(x).rolling_quantile(q, "lower", window, min_samples=1),
        pl.col(x).rolling_quantile(q, "higher", window, min_samples=1),
    )


TALL = Layout(
    name="tall",
    lag=tall_lag,
    window_max=lambda x, d: pl.col(x).rolling_max(d, min_samples=1),
    window_min=lambda x, d: pl.col(x).rolling_min(d, min_samples=1),
    quantile_bounds=_tall_quantile_bounds,
    last_present=lambda x: pl.col(x).forward_fill(),
)


def _wide_lag(name: str, k: int) -> pl.Expr:
    return pl.col(wide_name(name, k))


def _wide_quantile_bounds(x: str, q: float, window: int, position: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    ordered = _sorted_window(_wide_lag, x, window)
    low = ordered.list.get(position.floor().cast(pl.Int64), null_on_oob=True)
    high = ordered.list.get(position.ceil().cast(pl.Int64), null_on_oob=True)
    return low, high


WIDE = Layout(
    name="wide",
    lag=_wide_lag,
    window_max=lambda x, d: pl.max_horizontal([_wide_lag(x, k) for k in range(d)]),
    window_min=lambda x, d: pl.min_horizontal([_wide_lag(x, k) for k in range(d)]),
    quantile_bounds=_wide_quantile_bounds,
    last_present=lambda x: pl.coalesce([_wide_lag(x, k) for k in range(MAX_WINDOW)]),
)


# --------------------------------------------------------------------------------------------------
# Element-wise operators (float32, on the tall grid)
# --------------------------------------------------------------------------------------------------


def greater(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``Greater(a, b)`` = ``np.maximum``: missing when either side is."""
    return pl.when(a.is_null() | b.is_null()).then(None).when(a >= b).then(a).otherwise(b)


def less(a: pl.Expr, b: pl.Expr) -> pl.Expr:
    """``Less(a, b)`` = ``np.minimum``: missing when either side is."""
    return pl.when(a.is_null() | b.is_null()).then(None).when(a <= b).then(a).otherwise(b)


def _np_log(values: pl.Series) -> pl.Series:
    array = values.cast(F32).to_numpy(allow_copy=True)  # nulls become NaN, whose log is NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        out: npt.NDArray[np.float32] = np.log(array)
    return pl.Series(values.name, out, dtype=F32)


def log32(a: pl.Expr) -> pl.Expr:
    """``Log(a)`` on float32 with NumPy's logarithm (Polars' float32 log rounds differently)."""
    return a.map_batches(_np_log, return_dtype=F32, is_elementwise=True)


def numpy_comparison(comparison: pl.Expr, in_span: pl.Expr) -> pl.Expr:
    """A comparison as NumPy makes it: False, not missing, where an operand is NaN (inside the span)."""
    return pl.when(in_span).then(comparison.fill_null(value=False))


def to64(a: pl.Expr) -> pl.Expr:
    """The float64 series a pandas rolling operator sees: NaN and ±inf are missing values.

    pandas replaces infinities by NaN before any rolling aggregation (so ``Log(0/0+1)`` and
    ``Log(x/0+1)`` — a zero volume — are both skipped by ``Corr``).
    """
    wide = a.cast(F64)
    return pl.when(wide.is_finite()).then(wide)


# --------------------------------------------------------------------------------------------------
# Window ladders
# --------------------------------------------------------------------------------------------------


def _blocks() -> list[tuple[int, int]]:
    edges = (0, *WINDOWS)
    return list(itertools.pairwise(edges))


def block_sums(name: str, term: Term) -> list[pl.Expr]:
    """Columns ``{name}|{lo}``: the sum of ``term(k)`` over each block of lags (nulls skipped)."""
    return [pl.sum_horizontal([term(k) for k in range(lo, hi)]).alias(f"{name}|{lo}") for lo, hi in _blocks()]


def block_max(name: str, term: Term) -> list[pl.Expr]:
    """Columns ``{name}|{lo}``: the largest ``term(k)`` over each block of lags (null if none)."""
    return [pl.max_horizontal([term(k) for k in range(lo, hi)]).alias(f"{name}|{lo}") for lo, hi in _blocks()]


def window_totals(name: str, combine: Callable[[pl.Expr, pl.Expr], pl.Expr] | None = None) -> list[pl.Expr]:
    """Columns ``{name}{N}`` for each window N: the blocks up to N combined in order (default: added)."""
    out: list[pl.Expr] = []
    total: pl.Expr | None = None
    for lo, hi in _blocks():
        block = col(f"{name}|{lo}")
        if total is None:
            total = block
        elif combine is None:
            total = total + block
        else:
            total = combine(total, block)
        out.append(total.alias(f"{name}{hi}"))
    return out


def block_columns(names: Iterable[str]) -> list[str]:
    return [f"{name}|{lo}" for name in names for lo, _ in _blocks()]


# Terms of the ladders: lag k of the float64 series ``x``, centred on the row's reference ``ref``.


def present(layout: Layout, x: str) -> Term:
    return lambda k: layout.lag(x, k).is_not_null()


def raw(layout: Layout, x: str) -> Term:
    return lambda k: layout.lag(x, k)


def centred(layout: Layout, x: str, ref: str) -> Term:
    return lambda k: layout.lag(x, k) - col(ref)


def centred_sq(layout: Layout, x: str, ref: str) -> Term:
    return lambda k: (layout.lag(x, k) - col(ref)) ** 2


def lag_weighted(layout: Layout, x: str, ref: str) -> Term:
    return lambda k: (layout.lag(x, k) - col(ref)) * float(k)


def lag_power(layout: Layout, x: str, power: int) -> Term:
    return lambda k: pl.when(layout.lag(x, k).is_not_null()).then(pl.lit(float(k**power)))


def paired(layout: Layout, x: str, y: str, term: Term) -> Term:
    """``term`` where ``x`` and ``y`` are both present at that lag (pandas' pairwise-complete rows)."""
    return lambda k: pl.when(layout.lag(x, k).is_not_null() & layout.lag(y, k).is_not_null()).then(term(k))


def product(layout: Layout, x: str, rx: str, y: str, ry: str) -> Term:
    return lambda k: (layout.lag(x, k) - col(rx)) * (layout.lag(y, k) - col(ry))


def compare_to_today(layout: Layout, x: str, less: bool) -> Term:
    """``x`` at lag k below (``less``) or equal to today's ``x`` (for ``Rank``)."""
    if less:
        return lambda k: layout.lag(x, k) < layout.lag(x, 0)
    return lambda k: layout.lag(x, k) == layout.lag(x, 0)


# --------------------------------------------------------------------------------------------------
# Statistics from window totals
# --------------------------------------------------------------------------------------------------


def count(name: str) -> pl.Expr:
    return col(name).cast(F64)


def mean(n: str, s1: str, ref: str) -> pl.Expr:
    """Mean of the window's values (from their centred sum); missing when there are none."""
    return pl.when(count(n) > 0).then(col(ref) + col(s1) / count(n))


def std(n: str, s1: str, s2: str) -> pl.Expr:
    """Sample standard deviation (ddof 1) from the centred sums; missing with fewer than two values."""
    spread = col(s2) - col(s1) * col(s1) / count(n)
    return pl.when(count(n) > 1).then((pl.max_horizontal(spread, pl.lit(0.0)) / (count(n) - 1.0)).sqrt())


def near_zero(std_expr: pl.Expr) -> pl.Expr:
    """``np.isclose(std, 0, atol=2e-5)``; False where the std is missing."""
    return (std_expr <= ZERO_STD).fill_null(value=False)


def quantile(layout: Layout, x: str, q: float, window: int, n: str) -> pl.Expr:
    """pandas' linear ``rolling.quantile``: ``low + (high - low) * (q(n-1) - floor(q(n-1)))``.

    ``low``/``high`` are the order statistics at ``floor``/``ceil`` of ``q(n-1)``: exact values, so
    both layouts feed the same numbers to the same formula.
    """
    position = pl.lit(q) * (count(n) - 1.0)
    low, high = layout.quantile_bounds(x, q, window, position)
    return pl.when(count(n) > 0).then(low + (high - low) * (position - position.floor()))


def correlation(n: str, x1: str, x2: str, y1: str, y2: str, xy: str) -> pl.Expr:
    """Pearson correlation from pairwise centred sums; missing with fewer than two pairs."""
    pairs = count(n)
    sxy = col(xy) - col(x1) * col(y1) / pairs
    sxx = col(x2) - col(x1) * col(x1) / pairs
    syy = col(y2) - col(y1) * col(y1) / pairs
    return pl.when(pairs > 1).then(sxy / (sxx * syy).sqrt())


def arg_extreme(
    layout: Layout, x: str, extreme: str, window: int, span_count: str, last_missing: str
) -> pl.Expr:
    """``IdxMax``/``IdxMin``: 1-based position in the window, counted from its first session in the span.

    ``extreme`` is the window's max (or min): its oldest occurrence is the answer, unless a session
    of the span in the window is missing (``last_missing`` is the largest such lag), which
    ``np.argmax`` returns instead.
    """
    oldest_hit = pl.max_horizontal(
        [pl.when(layout.lag(x, k) == col(extreme)).then(pl.lit(k, dtype=pl.Int64)) for k in range(window)]
    )
    found = pl.when(col(last_missing).is_not_null()).then(col(last_missing)).otherwise(oldest_hit)
    return pl.when(col(extreme).is_not_null()).then(count(span_count) - found.cast(F64))
