"""The quality gate: every adjusted bar is either clean or quarantined with a rule and a reason.

Rules, in the fixed order in which they are checked (stable names, stored in the ``rule`` column):

1. ``missing_value`` -- a null in a required column, or a NaN / infinite number.
2. ``non_positive_price`` -- an open, high, low or close <= 0.
3. ``negative_volume`` -- volume < 0.
4. ``ohlc_inconsistent`` -- low > high, low > min(open, close) or high < max(open, close).
5. ``not_a_session`` -- the date is not a session of the exchange calendar.
6. ``duplicate`` / ``conflicting_duplicate`` -- several rows for one symbol and date among the rows
   that passed 1-5: identical repeats keep the first occurrence (input order) and quarantine the rest
   as ``duplicate``; versions that disagree are all quarantined as ``conflicting_duplicate``, since
   we cannot tell which one is right.
7. ``outlier`` -- an adjusted close-to-close return beyond ``GateConfig.outlier_threshold`` with no
   corporate action between the two bars, computed on the rows that passed 1-6 (so an earlier bad
   row cannot make its clean neighbour look like a jump). A bar a person accepted as a real move
   (``accepted``: ``trader data accept``) is not an outlier for its own return in; the bar after it
   is judged as any other.

A row that breaks several rules is recorded once, under the first rule in this order; the reason
names the values that broke it, and ``payload`` holds the row as JSON (JSON has no NaN, so a NaN is
written as null there; the reason says NaN). Every input row ends in exactly one of ``clean`` and
``quarantined``: nothing is silently dropped. Because duplicates are judged after rules 1-5, a key
with one good version and one broken version keeps the good one.

Outliers distinguish a *spike* from a *jump*. A spike is a row whose return in and return out both
exceed the threshold in opposite directions while the bridge return (from the bar before the spike to
the bar after it) is back within the threshold: a bad tick. Only the spike row is quarantined; the
returns are then recomputed without spike rows, so the clean bar after a spike is not punished for the
return out of it. A persistent jump (a new level without a corporate action) quarantines only the row
where the jump happens. Returns run over consecutive bars of a symbol, across calendar gaps.
``GateConfig.max_spike_days`` > 1 also recognises bad excursions of several bars; with the default of
one, a two-day bad excursion reads as two jumps (in and back out) and the bar after it is flagged. A
symbol's first bar has no return, so a bad first bar shows up as a jump at the second bar.

Gaps are sessions without a clean bar inside a symbol's range; a gap whose bar was quarantined says
so (``bar quarantined (outlier)``). Weekends and holidays are never gaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import polars as pl

from trader.data.adjust import action_dates
from trader.data.bars import (
    ADJ_BAR_SCHEMA,
    PRICE_COLUMNS,
    QUARANTINE_SCHEMA,
    bar_checks,
    conform,
    empty,
    listing_spans,
)
from trader.data.calendar import TradingCalendar
from trader.data.store import sorted_by, symbol_starts

if TYPE_CHECKING:
    from trader.config import Settings

#: Stable rule names, in the order they are checked.
RULES = (
    "missing_value",
    "non_positive_price",
    "negative_volume",
    "ohlc_inconsistent",
    "not_a_session",
    "duplicate",
    "conflicting_duplicate",
    "outlier",
)

#: Sessions with no clean bar inside a symbol's trading range.
GAP_SCHEMA: dict[str, pl.DataType] = {"symbol": pl.String(), "date": pl.Date(), "reason": pl.String()}

_REQUIRED = ("symbol", "date", *PRICE_COLUMNS, "volume", "factor")
_NUMBERS = (*PRICE_COLUMNS, "volume", "factor")
_VERSION = (*PRICE_COLUMNS, "volume", "factor")  # what makes two rows of one key the same version
_ROW = "__row"
_CODE = "__rule"  # the number in RULES of the first of rules 1-5 a row breaks (null: none)
_NOT_A_SESSION = RULES.index("not_a_session")


@dataclass(frozen=True)
class GateConfig:
    """Settings of the quality gate.

    ``outlier_threshold``: the largest |close-to-close return| accepted without a corporate action
    (0.30 = 30 %). ``max_spike_days``: how many consecutive bad bars still count as a spike that
    returns to the old level (1 = one-day spikes only; a longer excursion is treated as two jumps).
    """

    outlier_threshold: float = 0.30
    max_spike_days: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        """The gate of ``settings`` (``DATA_OUTLIER_THRESHOLD``): every ingest and replay uses it."""
        return cls(outlier_threshold=settings.data_outlier_threshold)

    def __post_init__(self) -> None:
        if not self.outlier_threshold > 0:
            raise ValueError(f"outlier_threshold must be > 0, got {self.outlier_threshold}")
        if self.max_spike_days < 1:
            raise ValueError(f"max_spike_days must be >= 1, got {self.max_spike_days}")


@dataclass(frozen=True)
class GateResult:
    """What the gate decided: clean rows, quarantined rows with their rule, and calendar gaps."""

    clean: pl.DataFrame  # ADJ_BAR_SCHEMA, sorted by symbol and date, unique per symbol and date
    quarantined: pl.DataFrame  # QUARANTINE_SCHEMA, sorted by symbol and date
    gaps: pl.DataFrame  # GAP_SCHEMA, sorted by symbol and date

    def counts(self) -> dict[str, int]:
        """Quarantined rows per rule."""
        grouped = self.quarantined.group_by("rule").len()
        return {str(rule): int(n) for rule, n in grouped.iter_rows()}


def validate(
    adj_bars: pl.DataFrame,
    actions: pl.DataFrame,
    calendar: TradingCalendar,
    listings: pl.DataFrame | None = None,
    config: GateConfig = GateConfig(),  # frozen, so sharing the default instance is safe
    accepted: pl.DataFrame | None = None,
) -> GateResult:
    """Split back-adjusted bars into clean and quarantined rows and list the calendar gaps.

    ``adj_bars`` has :data:`~trader.data.bars.ADJ_BAR_SCHEMA`'s columns (the output of
    :func:`trader.data.adjust.adjust`), ``actions`` :data:`~trader.data.bars.ACTION_SCHEMA`'s. A gap is a
    session with no clean bar between a symbol's first and last bar in ``adj_bars``; with ``listings``
    (:data:`~trader.data.bars.LISTING_SCHEMA`) the range runs from the listing's start to its end date
    (still listed: the newest date in ``adj_bars``), clipped to the dates ``adj_bars`` covers. Only
    symbols that have rows in ``adj_bars`` are checked for gaps. See the module docstring for the rules.

    The same as :func:`gate` followed by :meth:`Gated.result` (the pipeline starts writing the clean
    rows in between).
    """
    return gate(adj_bars, actions, calendar, config, accepted).result(calendar, listings)


@dataclass(frozen=True)
class Gated:
    """The quality gate's verdict on every row, before calendar gaps are looked for."""

    clean: pl.DataFrame  # ADJ_BAR_SCHEMA, sorted by symbol and date, unique per symbol and date
    quarantined: pl.DataFrame  # QUARANTINE_SCHEMA, sorted by symbol and date
    #: Every input row with the gate's internal columns (row number, rule 1-5 code), from which the
    #: symbols' date ranges for :meth:`gaps` are taken.
    rows: pl.DataFrame

    def gaps(self, calendar: TradingCalendar, listings: pl.DataFrame | None = None) -> pl.DataFrame:
        """Sessions without a clean bar inside each symbol's range (see :func:`validate`)."""
        return _gaps(self.rows, self.clean, self.quarantined, calendar, listings)

    def result(self, calendar: TradingCalendar, listings: pl.DataFrame | None = None) -> GateResult:
        """The verdict with the gaps (:func:`validate`'s answer)."""
        return GateResult(self.clean, self.quarantined, self.gaps(calendar, listings))


def gate(
    adj_bars: pl.DataFrame,
    actions: pl.DataFrame,
    calendar: TradingCalendar,
    config: GateConfig = GateConfig(),
    accepted: pl.DataFrame | None = None,
) -> Gated:
    """Rules 1-7 of the module docstring: every row of ``adj_bars`` ends clean or quarantined.

    ``accepted`` (``symbol, date``, other columns ignored) lists the bars confirmed as real moves,
    which the outlier rule leaves alone.
    """
    frame = _row_rules(conform(adj_bars, ADJ_BAR_SCHEMA).with_row_index(_ROW), calendar)
    rows = frame.drop(_CODE)  # every row with its values; ``_ROW`` is its position here

    # The duplicate and outlier rules only need the key, the close and the row number of the rows
    # that passed 1-5: a narrow copy, not the whole table. One stable sort (skipped when the bars
    # arrive sorted, as adjust leaves them) serves both rules: repeats of a key stay in input order.
    passed = pl.col(_CODE).is_null()
    keys = frame.select(_ROW, "symbol", "date", "close", passed.alias("passed"))
    if frame.get_column(_CODE).null_count() < frame.height:
        keys = keys.filter("passed")
    keys = keys.drop("passed")
    resorted = not sorted_by(keys, ("symbol", "date"))
    if resorted:
        keys = keys.sort("symbol", "date", maintain_order=True)
    duplicates = _duplicate_rules(keys, rows)
    if duplicates.height:
        keys = keys.filter(~pl.col(_ROW).is_in(duplicates.get_column(_ROW).implode()))
    outliers = _outlier_rule(keys, action_dates(actions), config, _accepted_keys(accepted))
    outlier_rows = outliers.get_column(_ROW).implode()

    flagged = pl.concat(
        [
            _row_reasons(frame.filter(pl.col(_CODE).is_not_null()), calendar),
            duplicates,
            rows.filter(pl.col(_ROW).is_in(outlier_rows)).join(outliers, on=_ROW),
        ],
        how="vertical",
    ).rechunk()  # see _described
    quarantined = flagged.sort("symbol", "date", _ROW, nulls_last=True).select(
        "symbol",
        "date",
        "source",
        "rule",
        "reason",
        pl.struct(*ADJ_BAR_SCHEMA).struct.json_encode().alias("payload"),  # NaN is written as null
    )
    # The one full copy of the clean rows, in key order: a filter keeps the order of sorted input,
    # otherwise the rows are gathered in the sorted keys' order.
    if outliers.height:
        keys = keys.filter(~pl.col(_ROW).is_in(outlier_rows))
    if resorted:
        clean = rows.select(list(ADJ_BAR_SCHEMA)).gather(keys.get_column(_ROW))
    elif keys.height == rows.height:
        clean = rows.select(list(ADJ_BAR_SCHEMA))
    else:
        refused = flagged.get_column(_ROW).implode()
        clean = rows.filter(~pl.col(_ROW).is_in(refused)).select(list(ADJ_BAR_SCHEMA))
    return Gated(conform(clean, ADJ_BAR_SCHEMA), conform(quarantined, QUARANTINE_SCHEMA), frame)


def _text(column: str | pl.Expr) -> pl.Expr:
    """A value as text for a reason (``100.0``, ``NaN``, ``2024-01-05``, ``null``).

    Every argument of ``pl.format`` goes through here, so a null reads ``null`` instead of nulling
    the whole text.
    """
    expr = pl.col(column) if isinstance(column, str) else column
    return expr.cast(pl.String).fill_null("null")


def _pct(expr: pl.Expr) -> pl.Expr:
    """A return as signed percent text with one decimal: ``+412.0%``."""
    value = (expr * 100).round(1)
    sign = pl.when(value >= 0).then(pl.lit("+")).otherwise(pl.lit(""))
    return pl.concat_str(sign, value.cast(pl.String), pl.lit("%"))


def _listing(parts: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """``"a, b"``: the texts whose condition holds, joined."""
    return pl.concat_str(
        [pl.when(condition).then(text) for condition, text in parts], separator=", ", ignore_nulls=True
    )


def _row_rules(frame: pl.DataFrame, calendar: TradingCalendar) -> pl.DataFrame:
    """Add ``_CODE``: the first of rules 1-5 the row breaks (its number in :data:`RULES`), null when
    it passes them all. A number rather than the rule's name: text for every row costs 2.5x more, and
    names are only needed for the few rows that fail (:func:`_row_reasons`)."""
    dates = frame.get_column("date").drop_nulls()
    sessions = (
        calendar.sessions(dates.min(), dates.max())  # type: ignore[arg-type]
        if dates.len()
        else pl.Series("date", [], pl.Date)
    )
    checks = [
        *bar_checks(extra=("factor",)),
        ("not_a_session", ~pl.col("date").is_in(sessions.implode())),
    ]
    code: pl.Expr = pl.lit(None, pl.UInt8)
    for name, condition in reversed(checks):  # built inside out so the first rule wins
        code = pl.when(condition).then(pl.lit(RULES.index(name), pl.UInt8)).otherwise(code)
    return frame.with_columns(code.alias(_CODE))


def _row_reasons(flagged: pl.DataFrame, calendar: TradingCalendar) -> pl.DataFrame:
    """Add ``rule`` and ``reason`` to rows flagged by :func:`_row_rules` (text for flagged rows only)."""
    low, high = pl.col("low"), pl.col("high")
    body_low = pl.min_horizontal("open", "close")
    body_high = pl.max_horizontal("open", "close")
    texts = {
        "missing_value": pl.concat_str(
            pl.lit("missing or non-finite value: "),
            _listing(
                [(pl.col(name).is_null(), pl.lit(f"{name} is null")) for name in _REQUIRED]
                + [
                    (~pl.col(name).is_finite(), pl.concat_str(pl.lit(f"{name} is "), _text(name)))
                    for name in _NUMBERS
                ]
            ),
        ),
        "non_positive_price": pl.concat_str(
            pl.lit("price not positive: "),
            _listing([(pl.col(name) <= 0, pl.format(f"{name}={{}}", _text(name))) for name in PRICE_COLUMNS]),
        ),
        "negative_volume": pl.format("negative volume {}", _text("volume")),
        "ohlc_inconsistent": pl.concat_str(
            pl.lit("OHLC inconsistent: "),
            _listing(
                [
                    (low > high, pl.format("low {} above high {}", _text("low"), _text("high"))),
                    (
                        low > body_low,
                        pl.format(
                            "low {} above min(open {}, close {})", _text("low"), _text("open"), _text("close")
                        ),
                    ),
                    (
                        high < body_high,
                        pl.format(
                            "high {} below max(open {}, close {})",
                            _text("high"),
                            _text("open"),
                            _text("close"),
                        ),
                    ),
                ]
            ),
        ),
        "not_a_session": pl.format(
            f"{{}} is a {{}} and not a {calendar.name} session",
            _text("date"),
            _text(pl.col("date").dt.strftime("%A")),
        ),
    }
    reason: pl.Expr = pl.lit(None, pl.String)
    for name, text in texts.items():
        reason = pl.when(pl.col("rule") == name).then(text).otherwise(reason)
    names = pl.col(_CODE).replace_strict(dict(enumerate(RULES)), return_dtype=pl.String)
    return _described(flagged.with_columns(rule=names).drop(_CODE), reason)


def _described(frame: pl.DataFrame, reason: pl.Expr) -> pl.DataFrame:
    """``frame`` with a ``reason`` column.

    Rechunked first: Polars 2.1 can panic (``i < self.len()`` in ``binview``) when string functions
    run over columns whose chunks are laid out differently, as filters and joins leave them.
    """
    return frame.rechunk().with_columns(reason.alias("reason"))


def _duplicate_rules(keys: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """Rows quarantined as ``duplicate`` or ``conflicting_duplicate``.

    ``keys`` (``_ROW``, symbol, date; sorted by key) are the rows that passed rules 1-5; ``rows``
    holds every row's values at position ``_ROW``. Returns ``rows``' columns plus ``rule`` and ``reason``.
    """
    same_as_previous = (
        (pl.col("symbol") == pl.col("symbol").shift(1)) & (pl.col("date") == pl.col("date").shift(1))
    ).fill_null(False)
    repeated_rows = keys.filter(same_as_previous | same_as_previous.shift(-1).fill_null(False)).get_column(
        _ROW
    )
    if repeated_rows.is_empty():
        return rows.clear().with_columns(rule=pl.lit(None, pl.String), reason=pl.lit(None, pl.String))
    key = ["symbol", "date"]
    repeated = rows.gather(repeated_rows).rechunk()  # see _described
    per_key = repeated.group_by(key).agg(
        pl.struct(*_VERSION).n_unique().alias("versions"),
        pl.len().alias("rows"),
        pl.col(_ROW).min().alias("first_row"),
        pl.format("{} ({})", _text("close"), _text(pl.col("source").fill_null("?")))
        .sort_by(_ROW)
        .str.join(", ")
        .alias("closes"),
    )
    repeated = repeated.join(per_key, on=key, how="left")
    conflicting = pl.col("versions") > 1
    flagged = repeated.filter(conflicting | (pl.col(_ROW) != pl.col("first_row"))).with_columns(
        rule=pl.when(conflicting).then(pl.lit("conflicting_duplicate")).otherwise(pl.lit("duplicate"))
    )
    return _described(
        flagged,
        pl.when(conflicting)
        .then(
            pl.format(
                "{} rows for {} on {} in {} different versions, closes {}; none is trusted",
                _text("rows"),
                _text("symbol"),
                _text("date"),
                _text("versions"),
                _text("closes"),
            )
        )
        .otherwise(
            pl.format(
                "identical repeat of the bar for {} on {} (input row {} is kept)",
                _text("symbol"),
                _text("date"),
                _text("first_row"),
            )
        ),
    ).select(*rows.columns, "rule", "reason")


def _accepted_keys(accepted: pl.DataFrame | None) -> pl.DataFrame | None:
    """``symbol, date`` of the accepted moves, or None when there are none."""
    if accepted is None or accepted.is_empty():
        return None
    return accepted.select(pl.col("symbol").cast(pl.String), pl.col("date").cast(pl.Date)).unique()


def _outlier_rule(
    survivors: pl.DataFrame, events: pl.DataFrame, config: GateConfig, accepted: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``(__row, rule, reason)`` of the outlier rows among ``survivors`` (sorted, unique per key).

    ``events`` are the corporate actions' ``symbol, date`` (:func:`~trader.data.adjust.action_dates`);
    ``accepted`` the bars whose move in was confirmed. One pass over all rows finds the large returns;
    the spike and jump rules then run on the few bars around them (:func:`_near_large_returns`),
    which gives the same verdicts as running them on every bar, at a fraction of the cost.
    """
    return _outliers_among(_near_large_returns(survivors, config), events, config, accepted)


def _near_large_returns(survivors: pl.DataFrame, config: GateConfig) -> pl.DataFrame:
    """The bars an outlier verdict can depend on, with a ``group`` number for neighbour lookups.

    Only a bar with a large return can be flagged. Its verdict looks at the bar before it, at the
    bars inside a spike of up to ``max_spike_days`` bars, and at the bar after such a spike, which has
    a large return itself; taking a spike's bars out changes only that bar's return. So every large
    return's bar is kept with the bar before it and the ``max_spike_days - 1`` bars after it
    (``_ROW, symbol, date, close``, in order). ``group`` changes where the symbol changes or where
    bars in between were left out, so no lookup reaches a bar that is not its true neighbour.
    """
    frame = survivors.select(_ROW, "symbol", "date", "close")
    large = ~symbol_starts() & (
        (pl.col("close") / pl.col("close").shift(1) - 1).abs() > config.outlier_threshold
    )
    at_large = frame.select(large.fill_null(False).arg_true().cast(pl.Int64)).to_series()
    around = pl.concat([at_large + offset for offset in range(-1, config.max_spike_days)]).unique().sort()
    positions = around.filter((around >= 0) & (around < frame.height)).alias("position")
    return (
        frame.gather(positions)
        .with_columns(positions)
        .with_columns(
            (symbol_starts() | (pl.col("position") != pl.col("position").shift(1) + 1).fill_null(True))
            .cum_sum()
            .alias("group")
        )
        .drop("position")
    )


def _outliers_among(
    ordered: pl.DataFrame, actions: pl.DataFrame, config: GateConfig, accepted: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``(__row, rule, reason)`` of the outliers among ``ordered`` (``_ROW, symbol, date, close,
    group``), where consecutive rows of one ``group`` are consecutive bars of one symbol.

    Exemptions (a corporate action of ``actions``, ``symbol, date``, after the previous bar and up to
    the bar; or the bar itself in ``accepted``) are looked up for the large returns only, and reason
    texts are built for flagged rows.
    """
    threshold = config.outlier_threshold
    events = actions.rename({"date": "action_date"})

    def same_symbol(offset: int) -> pl.Expr:
        return (pl.col("group").shift(offset) == pl.col("group")).fill_null(False)

    def at(name: str, offset: int) -> pl.Expr:
        """``name`` of the bar ``offset`` rows earlier (negative: later) of the same symbol, else null."""
        return pl.when(same_symbol(offset)).then(pl.col(name).shift(offset))

    def big(ret: pl.Expr) -> pl.Expr:
        return (ret.abs() > threshold).fill_null(False)

    def with_jumps(frame: pl.DataFrame) -> pl.DataFrame:
        """Add returns and ``jump_in``: a large return with no corporate action since the previous bar."""
        frame = frame.with_columns(
            ret_in=pl.col("close") / at("close", 1) - 1, prev_close=at("close", 1), prev_date=at("date", 1)
        )
        large = frame.filter(big(pl.col("ret_in")))
        # The newest action on or before the bar excuses the return when it is after the previous bar,
        # which also covers an ex-date that fell on a day without a bar.
        excused = (
            large.select(_ROW, "symbol", "date", "prev_date")
            .join_asof(
                events,
                left_on="date",
                right_on="action_date",
                by="symbol",
                strategy="backward",
                check_sortedness=False,
            )
            .filter(pl.col("action_date") > pl.col("prev_date"))
            .get_column(_ROW)
        )
        if accepted is not None:
            # Only the accepted bar's own move in: not the next bar's after it is refused again.
            confirmed = large.join(accepted, on=["symbol", "date"], how="semi").get_column(_ROW)
            excused = pl.concat([excused, confirmed])
        return frame.with_columns(jump_in=big(pl.col("ret_in")) & ~pl.col(_ROW).is_in(excused.implode()))

    # Pass 1: spikes. A run of ``days`` bad bars starting at a row: a jump in, (for longer runs) a
    # plateau within the threshold, a jump back the other way, and the bar after the run back within
    # the threshold of the bar before it. Shorter runs take precedence.
    ordered = with_jumps(ordered)
    starts: dict[int, pl.Expr] = {}
    ret_out: dict[int, pl.Expr] = {}
    for days in range(1, config.max_spike_days + 1):
        ret_out[days] = at("ret_in", -days)
        bridge = at("close", -days) / pl.col("prev_close") - 1
        start = (
            pl.col("jump_in")
            & big(ret_out[days])
            & (ret_out[days].sign() != pl.col("ret_in").sign()).fill_null(False)
            & bridge.is_not_null()
            & ~big(bridge)
        )
        for inner in range(1, days):
            start = start & ~big(at("ret_in", -inner))
        starts[days] = start
    ordered = ordered.with_columns(
        pl.coalesce([pl.when(start).then(pl.lit(days)) for days, start in starts.items()]).alias("days"),
        pl.coalesce([pl.when(starts[days]).then(ret_out[days]) for days in starts]).alias("ret_out"),
    )
    # Every bar of a run points at the run's first bar, whose numbers describe the spike.
    run_start = pl.coalesce(
        [
            pl.when((pl.col("days").shift(inner) > inner) & same_symbol(inner)).then(
                pl.col(_ROW).shift(inner)
            )
            for inner in range(config.max_spike_days)
        ]
    )
    members = ordered.select(_ROW, run_start.alias("run_start")).filter(pl.col("run_start").is_not_null())
    first_bars = ordered.filter(pl.col("days").is_not_null())
    spike_text = _described(
        first_bars,
        pl.format(
            "{}-day spike: close-to-close return {} in and {} out with no corporate action; "
            f"the bar after it is back within {threshold:.1%} of the close {{}} on {{}}",
            _text("days"),
            _pct(pl.col("ret_in")),
            _pct(pl.col("ret_out")),
            _text("prev_close"),
            _text("prev_date"),
        ),
    ).select(pl.col(_ROW).alias("run_start"), "reason")
    spikes = members.join(spike_text, on="run_start").select(_ROW, "reason")

    # Pass 2: persistent jumps, with returns recomputed over the bars that are not spikes (so the
    # clean bar after a spike is compared with the bar before the spike).
    rest = ordered
    if members.height:
        rest = with_jumps(
            ordered.select(_ROW, "symbol", "date", "close", "group").filter(
                ~pl.col(_ROW).is_in(members.get_column(_ROW).implode())
            )
        )
    jumps = _described(
        rest.filter("jump_in"),
        pl.format(
            "close-to-close return {} with no corporate action (close {} on {}, {} on {})",
            _pct(pl.col("ret_in")),
            _text("prev_close"),
            _text("prev_date"),
            _text("close"),
            _text("date"),
        ),
    ).select(_ROW, "reason")
    flagged = pl.concat([spikes, jumps])
    return flagged.select(_ROW, pl.lit("outlier").alias("rule"), "reason")


def _gaps(
    frame: pl.DataFrame,
    clean: pl.DataFrame,
    quarantined: pl.DataFrame,
    calendar: TradingCalendar,
    listings: pl.DataFrame | None,
) -> pl.DataFrame:
    """Sessions with no clean bar inside each symbol's trading range."""
    placed = frame.filter(
        pl.col("symbol").is_not_null()
        & pl.col("date").is_not_null()
        & (pl.col(_CODE).is_null() | (pl.col(_CODE) != _NOT_A_SESSION))
    )
    if placed.is_empty():
        return empty(GAP_SCHEMA)
    ranges = placed.group_by("symbol").agg(
        pl.col("date").min().alias("start"), pl.col("date").max().alias("end")
    )
    first_day, last_day = placed.get_column("date").min(), placed.get_column("date").max()
    if listings is not None and not listings.is_empty():
        listed = listing_spans(listings).with_columns(listed=pl.lit(True))
        ranges = ranges.join(listed, on="symbol", how="left").select(
            "symbol",
            # A bound the listings do not give comes from the symbol's own bars.
            pl.when(pl.col("listed_from").is_null())
            .then(pl.col("start"))
            .otherwise(pl.max_horizontal("listed_from", pl.lit(first_day)))
            .alias("start"),
            pl.when(pl.col("listed").is_null())
            .then(pl.col("end"))
            .otherwise(pl.min_horizontal(pl.col("listed_until").fill_null(last_day), pl.lit(last_day)))
            .alias("end"),
        )

    sessions = calendar.all_sessions()
    ranges = ranges.with_columns(
        first=sessions.search_sorted(ranges.get_column("start"), side="left").cast(pl.Int64),
        stop=sessions.search_sorted(ranges.get_column("end"), side="right").cast(pl.Int64),
    ).select("symbol", "first", "stop")
    # Sessions are numbered, so the missing ones are the holes between consecutive clean bars of a
    # symbol, plus those before its first and after its last clean bar: shifts, no hash join on the
    # full table. (``clean`` is sorted by symbol and date, unique, and holds sessions only.)
    numbered = clean.select(
        "symbol",
        calendar.session_positions(clean.get_column("date")).alias("pos"),
    ).with_columns(new_symbol=symbol_starts())
    holes = (
        numbered.with_columns(hole_first=pl.col("pos").shift(1) + 1, hole_stop=pl.col("pos"))
        .filter(~pl.col("new_symbol") & (pl.col("hole_stop") > pl.col("hole_first")))
        .select("symbol", "hole_first", "hole_stop")
    )
    # ``clean`` is sorted: a symbol's first and last clean bars are its first and last rows.
    last_of_symbol = pl.col("new_symbol").shift(-1).fill_null(True)
    bounds = (
        numbered.filter(pl.col("new_symbol") | last_of_symbol)
        .select(
            "symbol",
            pl.col("pos").first().over("symbol").alias("first_clean"),
            pl.col("pos").last().over("symbol").alias("last_clean"),
        )
        .unique("symbol", keep="first", maintain_order=True)
    )
    edges = ranges.join(bounds, on="symbol", how="left")
    holes = pl.concat(
        [
            holes,
            # Before the first clean bar (or the whole range when there is none) ...
            edges.select(
                "symbol",
                pl.col("first").alias("hole_first"),
                pl.min_horizontal("stop", pl.col("first_clean").fill_null(pl.col("stop"))).alias("hole_stop"),
            ),
            # ... and after the last one.
            edges.filter(pl.col("last_clean").is_not_null()).select(
                "symbol",
                pl.max_horizontal("first", pl.col("last_clean") + 1).alias("hole_first"),
                pl.col("stop").alias("hole_stop"),
            ),
        ]
    )
    # Clip to the symbol's range (listings can make it narrower than its bars).
    missing = (
        holes.join(ranges, on="symbol")
        .select(
            "symbol",
            pl.int_ranges(
                pl.max_horizontal("hole_first", "first"), pl.min_horizontal("hole_stop", "stop")
            ).alias("index"),
        )
        .explode("index")
        .drop_nulls("index")
    )
    if missing.is_empty():
        return empty(GAP_SCHEMA)
    missing = missing.with_columns(date=sessions.gather(missing.get_column("index"))).select("symbol", "date")
    why = (
        quarantined.filter(pl.col("symbol").is_not_null() & pl.col("date").is_not_null())
        .group_by("symbol", "date")
        .agg(pl.col("rule").unique().sort().str.join(", ").alias("rules"))
    )
    gaps = _described(
        missing.join(why, on=["symbol", "date"], how="left"),
        pl.when(pl.col("rules").is_null())
        .then(pl.lit("no bar for this session"))
        .otherwise(pl.format("bar quarantined ({})", _text("rules"))),
    )
    return conform(gaps.sort("symbol", "date"), GAP_SCHEMA)
