"""Back-adjustment of raw daily bars for splits and cash dividends.

The newest bars keep their raw prices (``factor`` 1.0 after the last corporate action) and history is
scaled so that a recorded corporate action never shows up as a jump in the adjusted series.

For an action on ex-date ``D`` with split ratio ``s`` (2.0 = 2-for-1) and cash dividend ``d`` (dollars
per share on ``D``), every bar strictly before ``D`` is multiplied by::

    m = (1 / s) * (1 - d / (P / s))

where ``P`` is the *raw* close of the last bar before ``D``. The dividend is paid per share held on
the ex-date, i.e. per *post-split* share, so it is compared with the previous close expressed in
post-split terms (``P / s``); for a dividend alone this is the usual ``1 - d / P``. The adjusted
return across ``D`` is then ``A / (P / s - d)`` for an anchor close ``A``: the price drop that the
split and the dividend explain is removed, nothing else.

When several actions fall between two bars (a halt, a missing day, an ex-date on a weekend), each
later one is measured against the price the earlier ones left: ``P`` carried through them
(``P / s - d`` after each), so the adjusted return across two of them is
``A / ((P / s1 - d1) / s2 - d2)``.

``factor`` of a bar is the product of ``m`` over every action with an ex-date after the bar, so
``adjusted price = raw price * factor`` (Qlib's convention). Volume is adjusted for splits only:
``volume_adj = volume_raw * product of s over splits after the bar``.

The function is pure: when a new action arrives, history is re-adjusted by calling :func:`adjust`
again with all actions.
"""

from __future__ import annotations

import polars as pl

from trader.data.bars import PRICE_COLUMNS, sound_bar
from trader.data.store import sorted_by, symbol_starts

#: Columns :func:`adjust` needs in ``bars`` (extra columns such as ``ingested_at`` are ignored).
REQUIRED_BAR_COLUMNS = ("symbol", "date", *PRICE_COLUMNS, "volume", "source")
#: Columns :func:`adjust` needs in ``actions``.
REQUIRED_ACTION_COLUMNS = ("symbol", "ex_date", "split_ratio", "cash_dividend")


def action_dates(actions: pl.DataFrame) -> pl.DataFrame:
    """The distinct ``(symbol, date)`` ex-dates of the actions that change prices, sorted.

    An action row with ``split_ratio`` 1.0 and ``cash_dividend`` 0.0 is no corporate action at all, so
    it is left out (the quality gate must not excuse a jump because of it).
    """
    return (
        _normalise_actions(actions)
        .select("symbol", pl.col("ex_date").alias("date"))
        .unique()
        .sort("symbol", "date")
    )


def adjust(bars: pl.DataFrame, actions: pl.DataFrame, *, spike_threshold: float = 0.30) -> pl.DataFrame:
    """Back-adjust raw ``bars`` for the splits and cash dividends in ``actions``.

    ``bars`` needs at least ``symbol, date, open, high, low, close, volume, source`` (raw prices, as in
    :data:`~trader.data.bars.RAW_BAR_SCHEMA`); ``actions`` has
    :data:`~trader.data.bars.ACTION_SCHEMA`'s columns. Returns
    :data:`~trader.data.bars.ADJ_BAR_SCHEMA`, sorted by symbol and date, with one row per input row:
    nothing is dropped or de-duplicated here (bad rows are the quality gate's business).

    - An action whose ex-date is not a bar date (a missing day, a halt) still applies to every bar
      before it; the previous close is that of the last bar before the ex-date, carried through the
      earlier actions that fall after that bar (a dividend after a split with no bar in between is
      compared with the post-split price).
    - An action after a symbol's last bar changes nothing (it has not happened in our data yet), and
      one before its first bar has no bar to change.
    - Several rows for one symbol and ex-date are combined (splits multiplied, dividends added, in
      post-split terms), after dropping rows that repeat the same action (e.g. from two sources).
    - The previous close is taken from the last earlier bar that passes the gate's row rules
      (:func:`~trader.data.bars.bar_checks`: present, positive, OHLC-consistent) and is not a one-day
      spike of more than ``spike_threshold`` that the ex-date reverses (the gate's outlier rule, with
      its threshold), so a bad tick the gate will refuse does not poison the dividend ratio.

    Raises ``ValueError`` for an invalid action (split ratio not positive, negative dividend) and for
    a dividend at least as large as the previous (post-split) close, which would make ``m <= 0``.
    """
    missing = [name for name in REQUIRED_BAR_COLUMNS if name not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {missing}; expected at least {list(REQUIRED_BAR_COLUMNS)}")
    frame = bars.select(
        pl.col("symbol").cast(pl.String),
        pl.col("date").cast(pl.Date),
        *(pl.col(name).cast(pl.Float64) for name in (*PRICE_COLUMNS, "volume")),
        pl.col("source").cast(pl.String),
    )
    if not sorted_by(
        frame, ("symbol", "date")
    ):  # sources deliver sorted bars: then a sort is a copy for nothing
        frame = frame.sort(
            "symbol", "date", maintain_order=True, nulls_last=True
        )  # stable: repeats keep input order

    # Rows without a symbol or date cannot be placed in history; they pass through unadjusted, after
    # the others, and the quality gate quarantines them (nothing is dropped here).
    placed = pl.col("symbol").is_not_null() & pl.col("date").is_not_null()
    unkeyed = frame.filter(~placed) if _has_null_keys(frame) else frame.clear()
    keyed = _with_keys(frame.filter(placed) if unkeyed.height else frame)

    events = _effective_actions(keyed, _normalise_actions(actions), spike_threshold)
    # Cumulative products from the newest action backwards: a bar takes the cumulative values of the
    # first action strictly after it, i.e. the product over every action after it.
    cumulative = events.sort("key").select(
        "symbol_id",
        "key",
        pl.col("m").cum_prod(reverse=True).over("symbol_id").alias("factor"),
        pl.col("split_ratio").cum_prod(reverse=True).over("symbol_id").alias("split_factor"),
    )
    factor, split_factor = pl.col("factor"), pl.col("split_factor")
    adjusted = pl.concat([keyed, _factors_after(keyed, cumulative)], how="horizontal").select(
        "symbol",
        "date",
        *((pl.col(name) * factor).alias(name) for name in PRICE_COLUMNS),
        (pl.col("volume") * split_factor).alias("volume"),
        factor.alias("factor"),
        "source",
    )
    if unkeyed.height:
        adjusted = pl.concat([adjusted, unkeyed.with_columns(factor=pl.lit(1.0)).select(adjusted.columns)])
    return adjusted


def _has_null_keys(frame: pl.DataFrame) -> bool:
    return frame.get_column("symbol").has_nulls() or frame.get_column("date").has_nulls()


def _with_keys(bars: pl.DataFrame) -> pl.DataFrame:
    """``bars`` (sorted by symbol and date, no null in either) plus ``symbol_id`` (1, 2, ... in symbol
    order) and ``key``: the pair as one integer that sorts like it (see :func:`_day_key`)."""
    return bars.with_columns(symbol_starts().cum_sum().alias("symbol_id")).with_columns(
        _day_key("symbol_id", "date").alias("key")
    )


def _factors_after(keyed: pl.DataFrame, cumulative: pl.DataFrame) -> pl.DataFrame:
    """``factor, split_factor`` of each bar of ``keyed``: those of the first action of its symbol
    strictly after it (an action on D applies to bars strictly before D), 1.0 when there is none.

    One binary search per bar in the few thousand actions' keys: no join that hashes every bar's
    symbol text.
    """
    if cumulative.is_empty():
        return pl.select(factor=pl.repeat(1.0, keyed.height), split_factor=pl.repeat(1.0, keyed.height))
    found = cumulative.get_column("key").search_sorted(keyed.get_column("key"), side="right")
    inside = found.clip(0, cumulative.height - 1)
    applies = (found < cumulative.height) & (
        cumulative.get_column("symbol_id").gather(inside) == keyed.get_column("symbol_id")
    )
    return (
        cumulative.select("factor", "split_factor")
        .gather(inside)
        .select(
            pl.when(pl.lit(applies)).then(pl.col(name)).otherwise(1.0).alias(name)
            for name in ("factor", "split_factor")
        )
    )


def _normalise_actions(actions: pl.DataFrame) -> pl.DataFrame:
    """Validated actions, one row per (symbol, ex_date), without rows that change nothing."""
    missing = [name for name in REQUIRED_ACTION_COLUMNS if name not in actions.columns]
    if missing:
        raise ValueError(
            f"actions lack column(s) {missing}; expected at least {list(REQUIRED_ACTION_COLUMNS)}"
        )
    frame = actions.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ex_date").cast(pl.Date),
        # An absent value means "no such action" (a dividend-only row has no split and vice versa).
        pl.col("split_ratio").cast(pl.Float64).fill_null(1.0),
        pl.col("cash_dividend").cast(pl.Float64).fill_null(0.0),
    )
    bad = frame.filter(
        pl.col("symbol").is_null()
        | pl.col("ex_date").is_null()
        | ~pl.col("split_ratio").is_finite()
        | (pl.col("split_ratio") <= 0)
        | ~pl.col("cash_dividend").is_finite()
        | (pl.col("cash_dividend") < 0)
    )
    if bad.height:
        first = bad.row(0, named=True)
        raise ValueError(
            f"{bad.height} invalid corporate action(s), e.g. symbol={first['symbol']} "
            f"ex_date={first['ex_date']} split_ratio={first['split_ratio']} "
            f"cash_dividend={first['cash_dividend']} (need a symbol, an ex-date, split_ratio > 0, "
            "cash_dividend >= 0)"
        )
    return (
        # The same action reported twice (two sources, two files) must count once.
        frame.unique(maintain_order=True)
        .group_by("symbol", "ex_date")
        .agg(pl.col("split_ratio").product(), pl.col("cash_dividend").sum())
        .filter((pl.col("split_ratio") != 1.0) | (pl.col("cash_dividend") != 0.0))
    )


def _effective_actions(bars: pl.DataFrame, actions: pl.DataFrame, spike_threshold: float) -> pl.DataFrame:
    """The actions that fall inside each symbol's bars, with their price multiplier ``m`` and their
    ``symbol_id`` and ``key`` in the numbering of :func:`_with_keys`.

    ``bars`` is :func:`_with_keys`'s output: sorted by (symbol, date), no null in either, with
    ``symbol_id`` and ``key``.
    """
    if actions.is_empty():
        return actions.with_columns(
            m=pl.lit(None, pl.Float64), symbol_id=pl.lit(None, pl.UInt32), key=pl.lit(None, pl.Int64)
        )
    keyed = bars.select("symbol", "date", *PRICE_COLUMNS, "volume", "symbol_id", "key")
    symbol_ids = keyed.filter(pl.col("symbol_id") != pl.col("symbol_id").shift(1).fill_null(0))
    ordered = (
        actions.sort("symbol", "ex_date")
        .join(symbol_ids.select("symbol", "symbol_id"), on="symbol", how="left", maintain_order="left")
        .with_columns(_day_key("symbol_id", "ex_date").alias("key"))
    )
    # The previous close comes from the last earlier bar the gate's row rules accept (a bar with a
    # close below its low is a bad tick, not a price). Testing every bar against all the rules costs
    # ~3x testing its close alone, and almost always picks the same bars: so the bars are picked by
    # their close, and only when a bar picked (or one the spike rule compared with) fails another
    # rule is the pick made again from the bars that pass them all (the same answer, by definition).
    narrow = keyed.select("date", "close", "symbol_id", "key")
    closes = _first_versions(narrow.filter(pl.col("close").is_finite() & (pl.col("close") > 0)))
    anchored, found = _previous_closes(keyed, ordered, closes, spike_threshold)
    if not _all_sound(keyed, closes, [found, anchored.get_column("previous") - 1]):
        closes = _first_versions(keyed.filter(sound_bar()))
        anchored, found = _previous_closes(keyed, ordered, closes, spike_threshold)
    previous = closes.select(pl.col("date").alias("prev_date"), pl.col("close").alias("prev_close"))
    # Nulls gather nulls (an action without an earlier usable close).
    anchored = pl.concat(
        [anchored.with_columns(found.alias("prev_pos")), previous.gather(found.cast(pl.UInt32))],
        how="horizontal",
    )
    # No bar on or after the ex-date: the action has not reached our data, so it changes nothing.
    effective = anchored.filter(pl.col("anchor").is_not_null())
    split, dividend = pl.col("split_ratio"), pl.col("cash_dividend")
    # Several actions with no usable bar between them (a halt, a missing day, an ex-date on a
    # weekend) share one previous close. The later ones apply to the price the earlier ones left, not
    # to that close: after a 2-for-1 split a $5 dividend is measured against P / 2, after a $20
    # dividend against P - 20. So each action's reference is the previous close carried through the
    # earlier actions of its chain: r1 = P, r(k+1) = rk / sk - dk, i.e. with Sj = s1 * ... * sj,
    # rk = (P - (d1 * S1 + ... + d(k-1) * S(k-1))) / S(k-1). For a lone action rk = P exactly.
    effective = effective.with_columns(reference=pl.col("prev_close"))
    # Sorted by symbol and ex-date, the actions of a chain are neighbours with the same previous close
    # position. Chains are rare: a window over thousands of one-action groups would cost ~50 ms.
    position = pl.col("prev_pos")
    in_chain = effective.select(
        ((position == position.shift(1)) | (position == position.shift(-1))).fill_null(False)
    ).to_series()
    if in_chain.any():
        chain = ("symbol_id", "prev_pos")
        splits_before = split.cum_prod().shift(1).over(chain).fill_null(1.0)
        paid_before = (dividend * split.cum_prod()).cum_sum().shift(1).over(chain).fill_null(0.0)
        carried = effective.filter(in_chain).select((pl.col("prev_close") - paid_before) / splits_before)
        effective = effective.with_columns(
            effective.get_column("reference").scatter(in_chain.arg_true(), carried.to_series())
        )
    # Without a usable earlier close there is no earlier valid bar for the dividend to change.
    dividend_ratio = (
        pl.when((dividend > 0) & pl.col("reference").is_not_null())
        .then(1.0 - dividend / (pl.col("reference") / split))
        .otherwise(1.0)
    )
    effective = effective.with_columns(m=(1.0 / split) * dividend_ratio)
    impossible = effective.filter(pl.col("m") <= 0)
    if impossible.height:
        first = impossible.row(0, named=True)
        post_split = first["reference"] / first["split_ratio"]
        since = (
            ""
            if first["reference"] == first["prev_close"]
            else f"; {first['reference']:.6g} after the earlier action(s) since then"
        )
        raise ValueError(
            f"cash dividend {first['cash_dividend']} of {first['symbol']} on {first['ex_date']} is not "
            f"below the previous close {first['prev_close']} (on {first['prev_date']}{since}; "
            f"post-split {post_split:.6g}): the adjustment factor would be <= 0"
        )
    return effective.select("symbol", "ex_date", "split_ratio", "m", "symbol_id", "key")


def _first_versions(rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (sorted by key) as ``date, close, symbol_id, key``, the first version of a repeated
    date only, as the gate keeps the first of identical repeats. Repeats stay in input order, so
    "first" is "key differs from the row before" (cheaper than a hash)."""
    narrow = rows.select("date", "close", "symbol_id", "key")
    first_version = (pl.col("key") != pl.col("key").shift(1)).fill_null(True)
    return narrow if narrow.select(first_version.all()).item() else narrow.filter(first_version)


def _previous_closes(
    keyed: pl.DataFrame, ordered: pl.DataFrame, closes: pl.DataFrame, threshold: float
) -> tuple[pl.DataFrame, pl.Series]:
    """``ordered`` with ``anchor`` (the first bar on or after the ex-date, in ``keyed``) and
    ``previous`` (the last of ``closes`` strictly before it), and each action's previous-close
    position in ``closes`` after the spike rule (:func:`_past_a_spike`)."""
    anchored = ordered.with_columns(
        _same_symbol(keyed, ordered, step=0).alias("anchor"),
        _same_symbol(closes, ordered, step=-1).alias("previous"),
    )
    return anchored, _past_a_spike(anchored, keyed, closes, threshold)


def _all_sound(keyed: pl.DataFrame, closes: pl.DataFrame, positions: list[pl.Series]) -> bool:
    """Whether the bars of ``keyed`` at these positions of ``closes`` all pass the row rules."""
    at = pl.concat([p.filter(p >= 0) for p in positions]).drop_nulls().cast(pl.UInt32)
    if at.len() == 0:
        return True
    # A key's first row in ``keyed`` is its first version, the one ``closes`` holds.
    rows = keyed.get_column("key").search_sorted(closes.get_column("key").gather(at), side="left")
    return bool(keyed.gather(rows).select(sound_bar().all()).item())


def _past_a_spike(
    anchored: pl.DataFrame, keyed: pl.DataFrame, closes: pl.DataFrame, threshold: float
) -> pl.Series:
    """Each action's previous-close position in ``closes``, moved one bar back when a dividend's
    previous close is a one-day spike: more than ``threshold`` away from the close before it and from
    the ex-date's close (taken back to pre-action terms: plus the dividend, times the split), while
    those two are within ``threshold`` of each other, and no earlier action falls between them.

    That is the gate's spike rule, which quarantines such a bar as an outlier; a dividend ratio taken
    from it would scale the symbol's whole history by the bad tick (a 1.50 tick before a $1 dividend
    on a $100 stock gives a factor of 0.33 instead of 0.99).
    """
    found = anchored.get_column("previous")
    if closes.height < 2 or anchored.height == 0:
        return found
    last = closes.height - 1
    at = found.fill_null(0).cast(pl.Int64)
    before_at = (at - 1).clip(0, last)
    close_of = closes.get_column("close")
    tick, before = close_of.gather(at.clip(0, last)), close_of.gather(before_at)
    same = closes.get_column("symbol_id").gather(before_at) == anchored.get_column("symbol_id")
    ex_close = keyed.get_column("close").gather(anchored.get_column("anchor").fill_null(0).cast(pl.Int64))
    after = (ex_close + anchored.get_column("cash_dividend")) * anchored.get_column("split_ratio")
    # An earlier action between the bar before and the tick explains a jump into the tick.
    earlier_action = anchored.get_column("ex_date").shift(1)
    earlier_same = anchored.get_column("symbol_id").shift(1) == anchored.get_column("symbol_id")
    explained = earlier_same & (earlier_action > closes.get_column("date").gather(before_at))
    into, out, across = tick / before - 1, after / tick - 1, after / before - 1
    spike = (
        found.is_not_null()
        & (at > 0)
        & same
        & ~explained.fill_null(False)
        & (anchored.get_column("cash_dividend") > 0)
        & (into.abs() > threshold)
        & (out.abs() > threshold)
        & (into.sign() != out.sign())
        & (across.abs() <= threshold)
    ).fill_null(False)
    return pl.select(pl.when(spike).then(found - 1).otherwise(found)).to_series()


def _day_key(symbol_id: str, day: str) -> pl.Expr:
    """``symbol_id`` and a date in one integer that sorts like the pair, for every date: a date is a
    32-bit day number, so it is shifted to be non-negative and given the low 32 bits."""
    return pl.col(symbol_id).cast(pl.Int64) * (1 << 32) + pl.col(day).cast(pl.Int64) + (1 << 31)


def _same_symbol(rows: pl.DataFrame, actions: pl.DataFrame, step: int) -> pl.Series:
    """For each action, the position in ``rows`` (sorted by ``key``) of the first row whose key is
    not below the action's, moved by ``step``; null where that row is not the action's symbol (or
    there is no such row)."""
    if rows.is_empty():
        return pl.Series(values=[None] * actions.height, dtype=pl.Int64)
    found = rows.get_column("key").search_sorted(actions.get_column("key").fill_null(0), side="left")
    position = found.cast(pl.Int64) + step
    symbol_there = rows.get_column("symbol_id").gather(position.clip(0, rows.height - 1))
    return (
        pl.DataFrame({"position": position, "there": symbol_there, "wanted": actions.get_column("symbol_id")})
        .select(
            pl.when(
                (pl.col("position") >= 0)
                & (pl.col("position") < rows.height)
                & (pl.col("there") == pl.col("wanted"))
            ).then(pl.col("position"))
        )
        .to_series()
    )
