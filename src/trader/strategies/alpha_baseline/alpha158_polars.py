"""Qlib's Alpha158 features computed with Polars: Qlib's values, fast enough for one new day.

Scoring one new day through Qlib's ``Alpha158`` handler costs seconds to tens of seconds (its cost is
per symbol and per expression, not per row). The signal service computes the same 158 features here,
vectorised over all symbols:

- :func:`alpha158_features` — every row of every symbol (research, checks);
- :func:`alpha158_latest` — one row per symbol for one day, from the last
  :data:`HISTORY_SESSIONS` sessions only (the live path); the same bits as the full computation;
- :func:`alpha158_latest_from_store` — the same, reading only those sessions from the adjusted store.

Qlib stays the reference: ``tests/integration/strategies/test_alpha158_parity.py`` compares every
feature of every row with Qlib's on the synthetic market (relative difference ≤ 1e-5, missing values
in the same places). How each Qlib operator is reproduced is in :mod:`.alpha158_ops`; the session grid
(a halt or a missing day is a missing session, not a skipped one) in :mod:`.alpha158_grid`.

Input: adjusted bars with ``symbol, date, open, high, low, close, volume`` (other columns are
ignored), as the adjusted store holds them; they are cast to float32 as Qlib reads them. Output:
``symbol, date`` and the 158 features in Qlib's order as ``Float32`` (Qlib's output dtype), null
where Qlib gives NaN, sorted by symbol (and date). Record :data:`ALPHA158` (version, digest) with
anything computed from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import polars as pl

from trader.data.calendar import trading_calendar
from trader.data.paths import DataPaths
from trader.data.store import AdjustedStore, scan
from trader.strategies.alpha_baseline import alpha158_ops as op
from trader.strategies.alpha_baseline.alpha158_grid import (
    IN_SPAN,
    SLOT,
    Alpha158InputError,
    as_frame,
    build_grid,
    session_series,
    spans,
    with_slots,
)
from trader.strategies.alpha_baseline.alpha158_ops import TALL, WIDE, Layout
from trader.strategies.alpha_baseline.alpha158_spec import (
    ALPHA158,
    ALPHA158_DIGEST,
    ALPHA158_VERSION,
    FEATURE_NAMES,
    HISTORY_SESSIONS,
    WINDOWS,
    FeatureSetVersion,
)

__all__ = [
    "ALPHA158",
    "ALPHA158_DIGEST",
    "ALPHA158_VERSION",
    "FEATURE_NAMES",
    "HISTORY_SESSIONS",
    "Alpha158InputError",
    "FeatureSetVersion",
    "alpha158_features",
    "alpha158_latest",
    "alpha158_latest_from_store",
    "history_start",
]

#: Grid rows computed at once by :func:`alpha158_features`; bounds the memory of the window columns
#: (about 300 float64 columns per row).
CHUNK_ROWS = 50_000
#: Null rows before each symbol in the tall grid: a shift by up to this many never leaves the symbol.
TALL_PADDING = HISTORY_SESSIONS
#: Rows per symbol of the one-day grid: one null row (so ``Ref(x, 1)`` of its first session is
#: missing, not another symbol's) and the HISTORY_SESSIONS sessions up to the day.
WIDE_ROWS = HISTORY_SESSIONS + 1

Sessions = Sequence[date] | pl.Series


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def alpha158_features(bars: pl.DataFrame | pl.LazyFrame, *, sessions: Sessions | None = None) -> pl.DataFrame:
    """Alpha158 for every session of every symbol, from its first bar to its last.

    ``sessions`` is the calendar the bars belong to (default: the XNYS sessions, which the Qlib
    export uses); a session without a bar for a symbol is a missing session, as in Qlib. The rows
    include those sessions (Qlib computes them too: most features are missing there, a few are not).
    Raises :class:`Alpha158InputError` for bars that lack a column, repeat a (symbol, date) or fall
    on a day that is not a session.
    """
    frame = as_frame(bars)
    if frame.is_empty():
        return _empty()
    calendar = _sessions_for(frame, sessions)
    slotted = with_slots(frame, calendar)
    ranges = spans(slotted).select(
        "symbol",
        (pl.col("_first") - TALL_PADDING).alias("_from"),
        pl.col("_first").alias("_start"),
        pl.col("_last").alias("_end"),
    )
    parts = [_tall_features(build_grid(slotted, chunk)) for chunk in _chunks(ranges)]
    return _with_dates(pl.concat(parts), calendar)


def alpha158_latest(
    bars: pl.DataFrame | pl.LazyFrame,
    day: date,
    *,
    sessions: Sessions | None = None,
    first_bars: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Alpha158 on ``day`` only: one row per symbol whose span (first bar .. last bar) contains ``day``.

    Uses only the last :data:`HISTORY_SESSIONS` sessions up to ``day`` and gives the same bits as
    :func:`alpha158_features` on the same bars for ``day``. ``bars`` may hold more history than that
    (it is cut here); passing only what is needed is what makes it fast (see
    :func:`alpha158_latest_from_store`). A symbol's span starts at its first bar, and a window reaching
    before it is shorter (Qlib's partial windows): when ``bars`` starts later than some symbols'
    history, ``first_bars`` (``symbol, first_date``) says where each really starts — otherwise a
    symbol halted at the start of the cut would look newly listed. Raises
    :class:`Alpha158InputError` when ``day`` is not a session.
    """
    frame = as_frame(bars)
    if frame.is_empty():
        return _empty()
    calendar = _sessions_for(frame, sessions, through=day)
    if not calendar.is_in([day]).any():
        raise Alpha158InputError(f"{day} is not a session of the calendar; pass a trading day")
    slot = int(calendar.search_sorted(day, side="left"))
    first_needed = slot - (HISTORY_SESSIONS - 1)
    slotted = with_slots(frame, calendar)
    symbol_spans = spans(slotted)
    if first_bars is not None:
        symbol_spans = _started_earlier(symbol_spans, first_bars, calendar, before=first_needed)
    ranges = symbol_spans.filter((pl.col("_first") <= slot) & (pl.col("_last") >= slot)).select(
        "symbol",
        pl.lit(slot - WIDE_ROWS + 1, dtype=pl.Int64).alias("_from"),
        pl.max_horizontal("_first", pl.lit(first_needed, dtype=pl.Int64)).alias("_start"),
        pl.lit(slot, dtype=pl.Int64).alias("_end"),
    )
    if ranges.is_empty():
        return _empty()
    grid = build_grid(slotted.filter(pl.col(SLOT).is_between(first_needed, slot)), ranges)
    features = _wide_features(grid)
    return features.select("symbol", pl.lit(day, dtype=pl.Date).alias("date"), *FEATURE_NAMES)


def history_start(day: date, *, sessions: Sessions | None = None) -> date:
    """The first session :func:`alpha158_latest` reads for ``day`` (``HISTORY_SESSIONS - 1`` back)."""
    calendar = session_series(sessions) if sessions is not None else trading_calendar().all_sessions()
    upto = calendar.filter(calendar <= day)
    if upto.is_empty() or upto[-1] != day:
        raise Alpha158InputError(f"{day} is not a session of the calendar; pass a trading day")
    first: date = upto[max(0, upto.len() - HISTORY_SESSIONS)]
    return first


def alpha158_latest_from_store(
    paths: DataPaths, day: date, *, sessions: Sessions | None = None
) -> pl.DataFrame:
    """:func:`alpha158_latest` for ``day`` from the adjusted store of ``paths``, reading only what it needs.

    Reads the bars of the :data:`HISTORY_SESSIONS` sessions up to ``day``, plus, for the symbols, the
    date of their first bar (the ``symbol`` and ``date`` columns of the older year files), so a symbol
    that was halted when the window starts is not taken for a new listing. A symbol gets a row when
    it has a bar on ``day`` (one halted that day has no fresh price to score).
    """
    store = AdjustedStore(paths)
    start = history_start(day, sessions=sessions)
    bars = store.read(start=start, end=day)
    older = [path for path in store.files() if int(path.parent.name.removeprefix("year=")) <= start.year]
    first_bars = (
        scan(older, {"symbol": pl.String(), "date": pl.Date()})
        .filter(pl.col("date") < start)
        .group_by("symbol")
        .agg(pl.col("date").min().alias("first_date"))
        .collect()
    )
    return alpha158_latest(bars, day, sessions=sessions, first_bars=first_bars)


# --------------------------------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------------------------------


def _empty() -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"symbol": pl.String(), "date": pl.Date()}
    schema.update({name: pl.Float32() for name in FEATURE_NAMES})
    return pl.DataFrame(schema=schema)


def _sessions_for(frame: pl.DataFrame, sessions: Sessions | None, through: date | None = None) -> pl.Series:
    """Sessions (``sessions``, or XNYS's) from the first bar to the last (or ``through`` and its window)."""
    first = frame.get_column("date").min()
    last = frame.get_column("date").max()
    assert isinstance(first, date) and isinstance(last, date)
    series = session_series(sessions) if sessions is not None else trading_calendar().all_sessions()
    if through is not None:
        # Reach back to the window's first session, so that its slots exist even without bars.
        before = series.filter(series <= through).tail(HISTORY_SESSIONS)
        first = min(first, before[0]) if before.len() else first
        last = max(last, through)
    return series.filter(series.is_between(first, last))


def _started_earlier(
    symbol_spans: pl.DataFrame, first_bars: pl.DataFrame, calendar: pl.Series, before: int
) -> pl.DataFrame:
    """``symbol_spans`` with ``_first`` before slot ``before`` for symbols whose history starts earlier."""
    missing = {"symbol", "first_date"} - set(first_bars.columns)
    if missing:
        raise Alpha158InputError(f"first_bars lacks the column(s) {sorted(missing)}; give symbol, first_date")
    dates = pl.DataFrame(
        {"_first_day": calendar, "_first": pl.int_range(calendar.len(), dtype=pl.Int64, eager=True)}
    )
    known = first_bars.select(pl.col("symbol").cast(pl.String), pl.col("first_date").cast(pl.Date))
    with_days = symbol_spans.join(dates, on="_first", how="left").join(known, on="symbol", how="left")
    earlier = pl.col("first_date") < pl.col("_first_day")
    moved = (
        pl.when(earlier).then(pl.lit(before - 1, dtype=pl.Int64)).otherwise(pl.col("_first")).alias("_first")
    )
    return with_days.select("symbol", moved, "_last")


def _chunks(ranges: pl.DataFrame) -> list[pl.DataFrame]:
    """Groups of whole symbols whose grids hold about :data:`CHUNK_ROWS` rows each."""
    rows = pl.col("_end") - pl.col("_from") + 1
    sized = ranges.sort("symbol").with_columns(((rows.cum_sum() - rows) // CHUNK_ROWS).alias("_chunk"))
    return [part.drop("_chunk") for part in sized.partition_by("_chunk", maintain_order=True)]


def _with_dates(features: pl.DataFrame, calendar: pl.Series) -> pl.DataFrame:
    dates = pl.DataFrame({"date": calendar, SLOT: pl.int_range(calendar.len(), dtype=pl.Int64, eager=True)})
    joined = features.join(dates, on=SLOT, how="left", maintain_order="left")
    return joined.select("symbol", "date", *FEATURE_NAMES)


def _tall_features(grid: pl.DataFrame) -> pl.DataFrame:
    """Features of every row of the span in a tall grid (padding before each symbol)."""
    frame = _series(grid)
    frame = frame.with_columns(TALL.last_present(x).alias(f"r_{x}") for x in CENTRED)
    features = _features(_windows(frame, TALL), TALL, keep=("symbol", SLOT, IN_SPAN))
    return features.filter(pl.col(IN_SPAN)).drop(IN_SPAN)


def _wide_features(grid: pl.DataFrame) -> pl.DataFrame:
    """Features of each symbol's last row in a grid of :data:`WIDE_ROWS` rows per symbol."""
    frame = _series(grid)
    columns = [*RAW, *SERIES, *FLAGS]
    # Lag k of every column, one row per symbol: the rows (WIDE_ROWS - 1 - k) of each symbol's block.
    wide = frame.select(
        pl.col("symbol").gather_every(WIDE_ROWS, WIDE_ROWS - 1),
        *(
            pl.col(name).gather_every(WIDE_ROWS, WIDE_ROWS - 1 - k).alias(op.wide_name(name, k))
            for name in columns
            for k in range(HISTORY_SESSIONS)
        ),
    )
    wide = wide.with_columns(WIDE.last_present(x).alias(f"r_{x}") for x in CENTRED)
    return _features(_windows(wide, WIDE), WIDE, keep=("symbol",))


# --------------------------------------------------------------------------------------------------
# The computation: series on the tall grid, then window sums, extremes and features in a layout
# --------------------------------------------------------------------------------------------------

RAW = ("open", "high", "low", "close", "volume", "vwap")
_O, _H, _L, _C, _V = (op.col(name) for name in ("open", "high", "low", "close", "volume"))
_C1, _V1 = op.tall_lag("close", 1), op.tall_lag("volume", 1)

#: Float64 series the windows run over (NaN made missing), computed in float32 as Qlib does first.
SERIES: dict[str, pl.Expr] = {
    "x_c": op.to64(_C),
    "x_h": op.to64(_H),
    "x_l": op.to64(_L),
    "x_v": op.to64(_V),
    "x_lv": op.to64(op.log32(_V + 1)),  # Log($volume+1)
    "x_rc": op.to64(_C / _C1),  # $close/Ref($close,1)
    "x_rv": op.to64(op.log32(_V / _V1 + 1)),  # Log($volume/Ref($volume, 1)+1)
    "x_wv": op.to64((_C / _C1 - 1).abs() * _V),  # Abs($close/Ref($close, 1)-1)*$volume
    "x_gain": op.to64(op.greater(_C - _C1, op.lit32(0))),  # Greater($close-Ref($close, 1), 0)
    "x_loss": op.to64(op.greater(_C1 - _C, op.lit32(0))),  # Greater(Ref($close, 1)-$close, 0)
    "x_move": op.to64((_C - _C1).abs()),  # Abs($close-Ref($close, 1))
    "x_vgain": op.to64(op.greater(_V - _V1, op.lit32(0))),
    "x_vloss": op.to64(op.greater(_V1 - _V, op.lit32(0))),
    "x_vmove": op.to64((_V - _V1).abs()),
}
#: Boolean series; null in the padding so that windows do not count it.
FLAGS: dict[str, pl.Expr] = {
    "f_up": op.numpy_comparison(_C > _C1, op.col(IN_SPAN)),  # $close>Ref($close, 1)
    "f_down": op.numpy_comparison(_C < _C1, op.col(IN_SPAN)),  # $close<Ref($close, 1)
    "f_in": pl.when(op.col(IN_SPAN)).then(pl.lit(value=True)),
    "f_hnan": op.col(IN_SPAN) & _H.is_null(),
    "f_lnan": op.col(IN_SPAN) & _L.is_null(),
}
#: Series whose variance a feature needs: their sums are centred on ``r_<series>``.
CENTRED = ("x_c", "x_v", "x_lv", "x_rc", "x_rv", "x_wv")
#: The two correlations: (x, y).
PAIRS = {"p_corr": ("x_c", "x_lv"), "p_cord": ("x_rc", "x_rv")}
#: Largest lag of a missing session of the span in the window (for IdxMax / IdxMin).
LAST_MISSING = {"m_h": "f_hnan", "m_l": "f_lnan"}


def _series(grid: pl.DataFrame) -> pl.DataFrame:
    return grid.with_columns(**SERIES, **FLAGS)


def _ladders(layout: Layout) -> dict[str, op.Term]:
    """Every window sum the features need, ``name -> term(k)``."""
    terms: dict[str, op.Term] = {}
    for x in CENTRED:
        terms[f"n_{x}"] = op.present(layout, x)
        terms[f"s1_{x}"] = op.centred(layout, x, f"r_{x}")
        terms[f"s2_{x}"] = op.centred_sq(layout, x, f"r_{x}")
    terms["kd_x_c"] = op.lag_weighted(layout, "x_c", "r_x_c")
    terms["k1_x_c"] = op.lag_power(layout, "x_c", 1)
    terms["k2_x_c"] = op.lag_power(layout, "x_c", 2)
    terms["lt_x_c"] = op.compare_to_today(layout, "x_c", less=True)
    terms["eq_x_c"] = op.compare_to_today(layout, "x_c", less=False)
    for pair, (x, y) in PAIRS.items():
        rx, ry = f"r_{x}", f"r_{y}"
        terms[f"n_{pair}"] = op.paired(layout, x, y, lambda _k: pl.lit(1.0))
        terms[f"x1_{pair}"] = op.paired(layout, x, y, op.centred(layout, x, rx))
        terms[f"x2_{pair}"] = op.paired(layout, x, y, op.centred_sq(layout, x, rx))
        terms[f"y1_{pair}"] = op.paired(layout, x, y, op.centred(layout, y, ry))
        terms[f"y2_{pair}"] = op.paired(layout, x, y, op.centred_sq(layout, y, ry))
        terms[f"xy_{pair}"] = op.paired(layout, x, y, op.product(layout, x, rx, y, ry))
    for flag in ("f_up", "f_down", "f_in"):
        terms[f"n_{flag}"] = op.raw(layout, flag)
    for x in ("x_gain", "x_loss", "x_move", "x_vgain", "x_vloss", "x_vmove"):
        terms[f"sum_{x}"] = op.raw(layout, x)
    terms["n_x_move"] = op.present(layout, "x_move")
    terms["n_x_vmove"] = op.present(layout, "x_vmove")
    return terms


def _missing_lag(layout: Layout, flag: str) -> op.Term:
    return lambda k: pl.when(layout.lag(flag, k)).then(pl.lit(k, dtype=pl.Int64))


def _windows(frame: pl.DataFrame, layout: Layout) -> pl.DataFrame:
    """Adds the window totals ``<sum><N>``, extremes ``max_h<N> min_l<N>``, quantiles and arg-extremes."""
    ladders = _ladders(layout)
    blocks = [e for name, term in ladders.items() for e in op.block_sums(name, term)]
    for name, flag in LAST_MISSING.items():
        blocks += op.block_max(name, _missing_lag(layout, flag))
    frame = frame.with_columns(blocks)
    totals = [e for name in ladders for e in op.window_totals(name)]
    for name in LAST_MISSING:
        totals += op.window_totals(name, lambda a, b: pl.max_horizontal(a, b))
    frame = frame.with_columns(totals).drop(op.block_columns([*ladders, *LAST_MISSING]))
    extremes: list[pl.Expr] = []
    for d in WINDOWS:
        extremes += [
            layout.window_max("x_h", d).alias(f"max_h{d}"),
            layout.window_min("x_l", d).alias(f"min_l{d}"),
            op.quantile(layout, "x_c", 0.8, d, f"n_x_c{d}").alias(f"qu_c{d}"),
            op.quantile(layout, "x_c", 0.2, d, f"n_x_c{d}").alias(f"qd_c{d}"),
        ]
    frame = frame.with_columns(extremes)
    return frame.with_columns(
        expr
        for d in WINDOWS
        for expr in (
            op.arg_extreme(layout, "x_h", f"max_h{d}", d, f"n_f_in{d}", f"m_h{d}").alias(f"imax{d}"),
            op.arg_extreme(layout, "x_l", f"min_l{d}", d, f"n_f_in{d}", f"m_l{d}").alias(f"imin{d}"),
        )
    )


def _features(frame: pl.DataFrame, layout: Layout, keep: tuple[str, ...]) -> pl.DataFrame:
    """The 158 features as float32 (Qlib's output dtype), null where Qlib has NaN."""
    exprs = [*_kbar_and_price(layout), *(e for d in WINDOWS for e in _rolling(layout, d))]
    values = frame.select(*keep, *exprs)
    # A separate pass: wrapping each feature's expression would evaluate it twice (fill_nan).
    return values.with_columns(pl.col(name).cast(pl.Float32).fill_nan(None) for name in FEATURE_NAMES)


def _kbar_and_price(layout: Layout) -> list[pl.Expr]:
    """Float32 arithmetic, in Qlib's operand order."""
    o, h, l, c, w = (layout.lag(name, 0) for name in ("open", "high", "low", "close", "vwap"))  # noqa: E741
    span = h - l + op.lit32(1e-12)
    top, bottom = op.greater(o, c), op.less(o, c)
    return [
        ((c - o) / o).alias("KMID"),
        ((h - l) / o).alias("KLEN"),
        ((c - o) / span).alias("KMID2"),
        ((h - top) / o).alias("KUP"),
        ((h - top) / span).alias("KUP2"),
        ((bottom - l) / o).alias("KLOW"),
        ((bottom - l) / span).alias("KLOW2"),
        ((c * 2 - h - l) / o).alias("KSFT"),
        ((c * 2 - h - l) / span).alias("KSFT2"),
        (o / c).alias("OPEN0"),
        (h / c).alias("HIGH0"),
        (l / c).alias("LOW0"),
        (w / c).alias("VWAP0"),
    ]


def _rolling(layout: Layout, d: int) -> list[pl.Expr]:
    """The rolling features of window ``d``, in float64 as Qlib's rolling operators return them."""
    close32 = layout.lag("close", 0)
    c = close32.cast(op.F64)
    std_c = op.std(f"n_x_c{d}", f"s1_x_c{d}", f"s2_x_c{d}")
    slope, rsqr, resi = _regression(layout, d)
    low, high = op.col(f"min_l{d}"), op.col(f"max_h{d}")
    idx_max, idx_min = op.col(f"imax{d}"), op.col(f"imin{d}")
    span_count = op.count(f"n_f_in{d}")
    up, down = op.count(f"n_f_up{d}") / span_count, op.count(f"n_f_down{d}") / span_count
    volume = (layout.lag("volume", 0) + op.lit32(1e-12)).cast(op.F64)  # $volume+1e-12, in float32
    wv_mean = op.mean(f"n_x_wv{d}", f"s1_x_wv{d}", "r_x_wv")
    return [
        (layout.lag("close", d) / close32).alias(f"ROC{d}"),
        (op.mean(f"n_x_c{d}", f"s1_x_c{d}", "r_x_c") / c).alias(f"MA{d}"),
        (std_c / c).alias(f"STD{d}"),
        (slope / c).alias(f"BETA{d}"),
        rsqr.alias(f"RSQR{d}"),
        (resi / c).alias(f"RESI{d}"),
        (high / c).alias(f"MAX{d}"),
        (low / c).alias(f"MIN{d}"),
        (op.col(f"qu_c{d}") / c).alias(f"QTLU{d}"),
        (op.col(f"qd_c{d}") / c).alias(f"QTLD{d}"),
        _rank(layout, d).alias(f"RANK{d}"),
        ((c - low) / (high - low + 1e-12)).alias(f"RSV{d}"),
        (idx_max / d).alias(f"IMAX{d}"),
        (idx_min / d).alias(f"IMIN{d}"),
        ((idx_max - idx_min) / d).alias(f"IMXD{d}"),
        _corr("p_corr", "x_c", "x_lv", d).alias(f"CORR{d}"),
        _corr("p_cord", "x_rc", "x_rv", d).alias(f"CORD{d}"),
        up.alias(f"CNTP{d}"),
        down.alias(f"CNTN{d}"),
        (up - down).alias(f"CNTD{d}"),
        _ratio_of_sums("x_gain", "x_move", d).alias(f"SUMP{d}"),
        _ratio_of_sums("x_loss", "x_move", d).alias(f"SUMN{d}"),
        _ratio_of_sums(("x_gain", "x_loss"), "x_move", d).alias(f"SUMD{d}"),
        (op.mean(f"n_x_v{d}", f"s1_x_v{d}", "r_x_v") / volume).alias(f"VMA{d}"),
        (op.std(f"n_x_v{d}", f"s1_x_v{d}", f"s2_x_v{d}") / volume).alias(f"VSTD{d}"),
        (op.std(f"n_x_wv{d}", f"s1_x_wv{d}", f"s2_x_wv{d}") / (wv_mean + 1e-12)).alias(f"WVMA{d}"),
        _ratio_of_sums("x_vgain", "x_vmove", d).alias(f"VSUMP{d}"),
        _ratio_of_sums("x_vloss", "x_vmove", d).alias(f"VSUMN{d}"),
        _ratio_of_sums(("x_vgain", "x_vloss"), "x_vmove", d).alias(f"VSUMD{d}"),
    ]


def _regression(layout: Layout, d: int) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """``Slope``, ``Rsquare`` and ``Resi`` of the close on the session number over window ``d``.

    Sums are over the lag ``k`` (0 = today) and the session number is ``-k``, so the slope is
    ``-Sxy/Sxx``; with a single value ``Sxx`` is 0 and all three are NaN, as in Qlib.
    """
    n = op.count(f"n_x_c{d}")
    k1, k2 = op.col(f"k1_x_c{d}"), op.col(f"k2_x_c{d}")
    s1, s2, kd = op.col(f"s1_x_c{d}"), op.col(f"s2_x_c{d}"), op.col(f"kd_x_c{d}")
    sxx = k2 - k1 * k1 / n
    sxy = kd - k1 * s1 / n
    syy = pl.max_horizontal(s2 - s1 * s1 / n, pl.lit(0.0))
    slope_in_lags = sxy / sxx
    any_value = n > 0
    flat = op.near_zero(op.std(f"n_x_c{d}", f"s1_x_c{d}", f"s2_x_c{d}"))
    slope = pl.when(any_value).then(-slope_in_lags)
    rsqr = pl.when(any_value & ~flat).then(sxy * sxy / (sxx * syy))
    today = layout.lag("x_c", 0) - op.col("r_x_c")  # 0 with a bar today, missing without
    resi = pl.when(any_value).then(today - s1 / n + slope_in_lags * k1 / n)
    return slope, rsqr, resi


def _rank(layout: Layout, d: int) -> pl.Expr:
    """pandas' ``rolling.rank(pct=True)``: average rank of today's close among the window's closes."""
    less, equal, n = op.count(f"lt_x_c{d}"), op.count(f"eq_x_c{d}"), op.count(f"n_x_c{d}")
    return pl.when(layout.lag("x_c", 0).is_not_null()).then((less + (equal + 1.0) / 2.0) / n)


def _corr(pair: str, x: str, y: str, d: int) -> pl.Expr:
    corr = op.correlation(*(f"{part}_{pair}{d}" for part in ("n", "x1", "x2", "y1", "y2", "xy")))
    flat_x = op.near_zero(op.std(f"n_{x}{d}", f"s1_{x}{d}", f"s2_{x}{d}"))
    flat_y = op.near_zero(op.std(f"n_{y}{d}", f"s1_{y}{d}", f"s2_{y}{d}"))
    return pl.when(~(flat_x | flat_y)).then(corr)


def _ratio_of_sums(top: str | tuple[str, str], bottom: str, d: int) -> pl.Expr:
    """``Sum(top, d)/(Sum(bottom, d)+1e-12)``; ``top`` a pair: the difference of two sums."""
    if isinstance(top, tuple):
        numerator = op.col(f"sum_{top[0]}{d}") - op.col(f"sum_{top[1]}{d}")
    else:
        numerator = op.col(f"sum_{top}{d}")
    # Qlib's Sum is NaN over a window without a value (a symbol's first session: no Ref there).
    return pl.when(op.col(f"n_{bottom}{d}") > 0).then(numerator / (op.col(f"sum_{bottom}{d}") + 1e-12))
