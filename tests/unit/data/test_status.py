"""``trader data status``: suspect corporate actions, the ones a wrong ex-date or ratio gives away.

Known answers from AAPL's 4-for-1 split (ex-date 2020-08-31). Raw closes: 08-27 500.04, 08-28
499.23, 08-31 129.04, 09-01 134.18. The gate excuses any return across a recorded action, so a wrong
action is never quarantined: status has to point at it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from io import StringIO
from pathlib import Path

import polars as pl
import pytest
from rich.console import Console

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, LISTING_SCHEMA, BarBatch
from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources import SourceHealth
from trader.data.status import (
    DEFAULT_OUTLIER_THRESHOLD,
    SUSPECT_ACTION_SCHEMA,
    SUSPECT_HINT,
    data_status,
    render_status,
    suspect_actions,
)

D = date
RAW = {
    D(2020, 8, 24): 503.43,
    D(2020, 8, 25): 499.30,
    D(2020, 8, 26): 506.09,
    D(2020, 8, 27): 500.04,
    D(2020, 8, 28): 499.23,
    D(2020, 8, 31): 129.04,
    D(2020, 9, 1): 134.18,
    D(2020, 9, 2): 131.40,
}
SPLIT = D(2020, 8, 31)


def bars(symbol: str, closes: dict[date, float]) -> pl.DataFrame:
    """Clean adjusted bars (only the columns :func:`suspect_actions` reads)."""
    return pl.DataFrame(
        {"symbol": [symbol] * len(closes), "date": list(closes), "close": list(closes.values())},
        schema={"symbol": pl.String(), "date": pl.Date(), "close": pl.Float64()},
    )


def actions(*rows: tuple[str, date, float | None, float | None]) -> pl.DataFrame:
    return pl.DataFrame([(*row, "csv") for row in rows], schema=ACTION_SCHEMA, orient="row")


def adjusted(multiplier: float, ex_date: date, drop: Sequence[date] = ()) -> dict[date, float]:
    """RAW with every bar before ``ex_date`` multiplied by ``multiplier``, without the ``drop`` days."""
    return {
        day: round(close * multiplier, 4) if day < ex_date else close
        for day, close in RAW.items()
        if day not in drop
    }


# -- known answers -----------------------------------------------------------------------------------


def test_a_correct_split_is_not_suspect() -> None:
    clean = bars("AAPL", adjusted(1 / 4, SPLIT))
    assert clean.filter(pl.col("date") == D(2020, 8, 28))["close"].item() == pytest.approx(124.8075)
    # 124.8075 -> 129.04 across the ex-date: +3.4 %.
    result = suspect_actions(clean, actions(("AAPL", SPLIT, 4.0, 0.0)))
    assert result.is_empty()
    assert result.schema == pl.Schema(SUSPECT_ACTION_SCHEMA)


def test_a_split_dated_a_day_early_is_suspect_with_its_adjusted_return() -> None:
    # Ex-date 08-28: history up to 08-27 is divided by 4, 08-28 keeps its pre-split price, and the
    # real jump on 08-31 is quarantined as an outlier: the clean series is 125.01 -> 499.23 -> 134.18.
    early = D(2020, 8, 28)
    clean = bars("AAPL", adjusted(1 / 4, early, drop=[SPLIT]))
    result = suspect_actions(
        clean,
        actions(("AAPL", early, 4.0, 0.0)),
        quarantined=pl.DataFrame({"symbol": ["AAPL"], "date": [SPLIT]}),
    )
    assert result.height == 1
    row = result.row(0, named=True)
    assert (row["symbol"], row["ex_date"], row["split_ratio"], row["cash_dividend"]) == (
        "AAPL",
        early,
        4.0,
        0.0,
    )
    assert (row["prev_date"], row["prev_close"]) == (D(2020, 8, 27), 125.01)
    assert (row["next_date"], row["next_close"]) == (early, 499.23)
    assert row["adj_return"] == pytest.approx(499.23 / 125.01 - 1)
    assert row["adj_return"] == pytest.approx(2.9935, abs=1e-4)
    assert row["outliers"] == 0  # the quarantined 08-31 bar is after the first clean bar on/after 08-28
    assert row["reason"] == "adjusted return beyond 30.0%"
    assert row["hint"] == SUSPECT_HINT
    assert "ex-date or the ratio may be wrong" in SUSPECT_HINT and "ingest again" in SUSPECT_HINT


def test_the_threshold_decides() -> None:
    early = D(2020, 8, 28)
    clean = bars("AAPL", adjusted(1 / 4, early, drop=[SPLIT]))
    action = actions(("AAPL", early, 4.0, 0.0))
    assert DEFAULT_OUTLIER_THRESHOLD == 0.30
    assert suspect_actions(clean, action, 2.99).height == 1
    assert suspect_actions(clean, action, 3.0).is_empty()  # +299.35 % is within 300 %
    with pytest.raises(ValueError, match="threshold must be > 0"):
        suspect_actions(clean, action, 0.0)


def test_an_inverted_ratio_is_suspect() -> None:
    # 0.25 instead of 4: history is multiplied by 4 instead of divided by 4 (16 times too high).
    clean = bars("AAPL", adjusted(4.0, SPLIT))
    result = suspect_actions(clean, actions(("AAPL", SPLIT, 0.25, None)))
    assert result.select("symbol", "ex_date", "split_ratio", "cash_dividend").rows() == [
        ("AAPL", SPLIT, 0.25, 0.0)
    ]
    row = result.row(0, named=True)
    assert (row["prev_date"], row["prev_close"]) == (D(2020, 8, 28), pytest.approx(1996.92))
    assert (row["next_date"], row["next_close"]) == (SPLIT, 129.04)
    assert row["adj_return"] == pytest.approx(129.04 / 1996.92 - 1)
    assert row["adj_return"] == pytest.approx(-0.9354, abs=1e-4)


def test_a_right_dividend_is_not_suspect_and_a_wrong_amount_is() -> None:
    # KO: close 60.00 the day before the ex-date, dividend 0.41, close 59.70 on the ex-date.
    ex = D(2024, 3, 14)
    raw = {D(2024, 3, 12): 60.30, D(2024, 3, 13): 60.00, ex: 59.70, D(2024, 3, 15): 59.90}
    right = {day: close * (1 - 0.41 / 60.00) if day < ex else close for day, close in raw.items()}
    assert suspect_actions(bars("KO", right), actions(("KO", ex, None, 0.41))).is_empty()

    # 41 (cents typed as dollars): history times 1 - 41/60, the ex-date return is +214 %.
    wrong = {day: close * (1 - 41 / 60.00) if day < ex else close for day, close in raw.items()}
    result = suspect_actions(bars("KO", wrong), actions(("KO", ex, 1.0, 41.0)))
    assert result.select("symbol", "ex_date", "cash_dividend").rows() == [("KO", ex, 41.0)]
    assert result["adj_return"].item() == pytest.approx(59.70 / 19.0 - 1)


def test_no_actions_no_suspects() -> None:
    clean = bars("AAPL", RAW)  # a -74 % return, but no action to blame
    for none in (pl.DataFrame(schema=ACTION_SCHEMA), actions(("AAPL", SPLIT, 1.0, 0.0))):
        result = suspect_actions(clean, none)
        assert result.is_empty()
        assert result.schema == pl.Schema(SUSPECT_ACTION_SCHEMA)


def test_a_split_dated_a_day_late_is_suspect_through_its_quarantined_bar() -> None:
    # Ex-date 09-01: 08-31 (raw, post-split) sits between bars divided by 4 and is quarantined as a
    # one-day spike, so the return across 09-01 (124.81 -> 134.18, +7.5 %) looks fine.
    late = D(2020, 9, 1)
    clean = bars("AAPL", adjusted(1 / 4, late, drop=[SPLIT]))
    action = actions(("AAPL", late, 4.0, 0.0))
    assert suspect_actions(clean, action).is_empty()  # the return alone does not show it

    quarantined = pl.DataFrame({"symbol": ["AAPL", "AAPL", "MSFT"], "date": [SPLIT, D(2020, 8, 3), SPLIT]})
    result = suspect_actions(clean, action, quarantined=quarantined)
    row = result.row(0, named=True)
    assert result.height == 1
    assert (row["prev_date"], row["next_date"], row["outliers"]) == (D(2020, 8, 28), late, 1)
    assert row["adj_return"] == pytest.approx(134.18 / (499.23 / 4) - 1)
    assert row["reason"] == "1 bar(s) from 2020-08-31 quarantined as outlier(s) next to the ex-date"


def test_actions_without_a_bar_on_one_side_have_no_return() -> None:
    clean = bars("AAPL", adjusted(1 / 4, SPLIT))
    outside = actions(
        ("AAPL", D(2020, 8, 1), 2.0, 0.0),  # before the first bar
        ("AAPL", D(2020, 9, 30), 2.0, 0.0),  # after the last bar
        ("MSFT", SPLIT, 2.0, 0.0),  # no bars at all
    )
    assert suspect_actions(clean, outside).is_empty()


def test_a_dividend_declared_ahead_is_not_blamed_for_an_earlier_outlier() -> None:
    # The last clean bar is 09-01, 09-02 is quarantined, and a dividend goes ex on 09-30 (not yet
    # reached): nothing lies between, the quarantined bar is not next to that ex-date.
    clean = bars("AAPL", {d: c for d, c in RAW.items() if d <= D(2020, 9, 1)})
    quarantined = pl.DataFrame({"symbol": ["AAPL"], "date": [D(2020, 9, 2)]})
    ahead = actions(("AAPL", D(2020, 9, 30), 1.0, 0.82))
    assert suspect_actions(clean, ahead, quarantined=quarantined).is_empty()


# -- the fast path agrees with a plain loop ----------------------------------------------------------


def naive(clean: pl.DataFrame, acts: pl.DataFrame, threshold: float) -> list[tuple[str, date, float]]:
    found = []
    for symbol, ex_date, split, dividend, _ in acts.iter_rows():
        if (split or 1.0) == 1.0 and (dividend or 0.0) == 0.0:
            continue
        mine = sorted(
            (d, c) for s, d, c in clean.select("symbol", "date", "close").iter_rows() if s == symbol
        )
        before = [c for d, c in mine if d < ex_date]
        after = [c for d, c in mine if d >= ex_date]
        if before and after and abs(after[0] / before[-1] - 1) > threshold:
            found.append((symbol, ex_date, after[0] / before[-1] - 1))
    return sorted(found)


@pytest.mark.parametrize("seed", range(8))
def test_matches_a_plain_loop_whatever_the_input_order(seed: int) -> None:
    rng = random.Random(seed)
    start = D(2021, 1, 1)
    rows, acts = [], []
    for symbol in ("AA", "B", "CCC", "D"):
        days = sorted(rng.sample(range(120), rng.randint(0, 40)))
        close = 50.0
        for day in days:
            close *= rng.choice([1.0, 1.01, 0.99, 1.5, 0.5, 3.0])
            rows.append((symbol, start + timedelta(days=day), close))
        for day in rng.sample(range(-5, 130), 6):
            acts.append((symbol, start + timedelta(days=day), rng.choice([1.0, 2.0, 0.5, None]), 0.1, "x"))
    rng.shuffle(rows)
    clean = pl.DataFrame(
        rows, schema={"symbol": pl.String(), "date": pl.Date(), "close": pl.Float64()}, orient="row"
    )
    action_frame = pl.DataFrame(acts, schema=ACTION_SCHEMA, orient="row").sample(
        fraction=1.0, shuffle=True, seed=seed
    )

    result = suspect_actions(clean.lazy(), action_frame, 0.3)
    got = result.select("symbol", "ex_date", "adj_return").rows()
    want = naive(clean, action_frame, 0.3)
    assert [(s, d) for s, d, _ in got] == [(s, d) for s, d, _ in want]
    assert [r for _, _, r in got] == pytest.approx([r for _, _, r in want])


# -- through the stores: the real pipeline, data_status and render_status ----------------------------


class Batch:
    """A source that delivers AAPL's raw bars around the split with the given actions."""

    name = "csv"

    def __init__(self, *rows: tuple[str, date, float, float]) -> None:
        self.batch = BarBatch(
            bars=pl.DataFrame(
                [("AAPL", day, close, close * 1.01, close * 0.99, close, 1e6) for day, close in RAW.items()],
                schema=BAR_SCHEMA,
                orient="row",
            ),
            actions=actions(*rows),
            listings=pl.DataFrame(schema=LISTING_SCHEMA),
        )

    def health(self) -> SourceHealth:
        return SourceHealth(source=self.name, ok=True)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        return self.batch


AS_OF = datetime(2020, 9, 2, 23, tzinfo=UTC)


def ingested(tmp_path: Path, *rows: tuple[str, date, float, float]) -> DataPipeline:
    pipeline = DataPipeline(DataPaths(tmp_path / "data"))
    pipeline.ingest(Batch(*rows), None, D(2020, 8, 1), D(2020, 9, 30), now=AS_OF)
    return pipeline


def rendered(
    pipeline: DataPipeline, threshold: float = DEFAULT_OUTLIER_THRESHOLD, symbols: Sequence[str] | None = None
) -> tuple[pl.DataFrame, str]:
    status = data_status(pipeline.paths, AS_OF, symbols, pipeline.calendar, threshold=threshold)
    out = StringIO()
    render_status(status, Console(file=out, width=240))
    return status.suspect_actions, out.getvalue()


def test_status_reports_the_early_split_that_the_pipeline_excused(tmp_path: Path) -> None:
    pipeline = ingested(tmp_path, ("AAPL", D(2020, 8, 28), 4.0, 0.0))
    suspects, text = rendered(pipeline)
    assert suspects.select(
        "symbol", "ex_date", "prev_date", "prev_close", "next_date", "next_close"
    ).rows() == [("AAPL", D(2020, 8, 28), D(2020, 8, 27), 125.01, D(2020, 8, 28), 499.23)]
    assert "suspect corporate actions: 1" in text
    assert "+299.4%" in text
    assert "125.01 (2020-08-27)" in text and "499.23 (2020-08-28)" in text
    assert f"  hint: {SUSPECT_HINT}" in text

    # The same store judged with a threshold of 300 %, or for another symbol only: nothing to report.
    for suspects, text in (rendered(pipeline, threshold=3.0), rendered(pipeline, symbols=["MSFT"])):
        assert suspects.is_empty()
        assert "suspect corporate actions" not in text and "hint:" not in text


def test_status_reports_the_late_split_through_its_quarantined_bar(tmp_path: Path) -> None:
    pipeline = ingested(tmp_path, ("AAPL", D(2020, 9, 1), 4.0, 0.0))
    suspects, text = rendered(pipeline)
    assert suspects.select("ex_date", "outliers").rows() == [(D(2020, 9, 1), 1)]
    assert "1 bar(s) from 2020-08-31 quarantined as outlier(s) next to the ex-date" in text


def test_status_of_a_correct_split_prints_no_suspect_section(tmp_path: Path) -> None:
    pipeline = ingested(tmp_path, ("AAPL", SPLIT, 4.0, 0.0))
    suspects, text = rendered(pipeline)
    assert suspects.is_empty()
    assert "freshness" in text and "suspect corporate actions" not in text and "hint:" not in text


def test_render_cuts_a_long_list_at_the_limit(tmp_path: Path) -> None:
    pipeline = ingested(tmp_path, ("AAPL", D(2020, 8, 25), 2.0, 0.0), ("AAPL", D(2020, 8, 28), 4.0, 0.0))
    status = data_status(pipeline.paths, AS_OF, calendar=pipeline.calendar)
    assert status.suspect_actions.height == 2
    out = StringIO()
    render_status(status, Console(file=out, width=240), limit=1)
    assert "suspect corporate actions: 2" in out.getvalue()
    assert "... 1 more; use --all" in out.getvalue()
