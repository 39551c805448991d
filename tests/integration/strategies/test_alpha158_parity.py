"""The acceptance test of the Polars Alpha158: Qlib's own values, every feature, every row.

Two markets, both exported with our Qlib exporter and read by pyqlib:

- the research test market (20 synthetic symbols, 2021-2023, through the data pipeline: halts, missing
  days, bad ticks refused by the gate, IPOs, delistings), through Qlib's ``Alpha158`` handler;
- a hand-made edge market through ``D.features`` with the Alpha158 expressions: windows of constant
  prices (Qlib's near-zero-std masks), zero volumes (0/0 and x/0 inside ``Log``), a halt longer than a
  window, ties for ``Rank``/``IdxMax``, a perfectly linear price (``Resi`` and ``Corr`` of exactly
  0), a symbol with three bars and one with a single bar.

**Tolerance.** Qlib returns float32, and so do we. Values must satisfy
``|ours - qlib| <= 1e-5 * max(|ours|, |qlib|) + 1e-12``, NaN (null) in the same places and ±inf in
the same places with the same sign. The absolute 1e-12 matters only where the true value is exactly 0
and both sides compute it as a difference of float64 sums: one side gets 0, the other a rounding
residue of about 1e-17 (a correlation of a straight line, a regression residual). Every Alpha158
feature is a ratio of order 1e-3..1e3 or a correlation in [-1, 1], so 1e-12 is far below anything
that carries meaning, and it is 1e7 times smaller than the relative tolerance at a value of 1.
(Measured: the largest relative difference on the research market is about 1e-7 — float32 rounding —
and 99 % of the values are bit-identical.)
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from tests.support.research import ResearchMarket
from trader.data.bars import ADJ_BAR_SCHEMA, LISTING_SCHEMA
from trader.data.calendar import trading_calendar
from trader.data.paths import DataPaths
from trader.data.store import AdjustedStore, UniverseStore
from trader.research.qlib_export import QlibExporter
from trader.research.qlib_runtime import init_qlib
from trader.strategies.alpha_baseline.alpha158_polars import (
    FEATURE_NAMES,
    HISTORY_SESSIONS,
    alpha158_features,
    alpha158_latest,
    alpha158_latest_from_store,
    history_start,
)
from trader.strategies.alpha_baseline.alpha158_spec import ALPHA158_EXPRESSIONS

RELATIVE = 1e-5
ABSOLUTE = 1e-12


def from_qlib(frame: pd.DataFrame) -> pl.DataFrame:
    """Qlib's (datetime, instrument) x feature frame as ``symbol, date, <features>``."""
    flat = frame.reset_index().rename(columns={"datetime": "date", "instrument": "symbol"})
    return (
        pl.from_pandas(flat)
        .with_columns(pl.col("date").cast(pl.Date))
        .select("symbol", "date", *FEATURE_NAMES)
    )


def assert_same_features(ours: pl.DataFrame, qlib: pl.DataFrame) -> None:
    """Same rows, and every feature equal within the module's tolerance (see the module docstring)."""
    assert (
        ours.select("symbol", "date")
        .sort("symbol", "date")
        .equals(qlib.select("symbol", "date").sort("symbol", "date"))
    )
    joined = qlib.join(ours, on=["symbol", "date"], how="inner", suffix="_ours")
    problems = []
    for name in FEATURE_NAMES:
        a = joined.get_column(name).to_numpy().astype(np.float64)
        b = joined.get_column(f"{name}_ours").to_numpy().astype(np.float64)
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        inf_a, inf_b = np.isinf(a), np.isinf(b)
        finite = np.isfinite(a) & np.isfinite(b)
        far = np.zeros(a.shape, dtype=bool)
        far[finite] = (
            np.abs(a[finite] - b[finite])
            > RELATIVE * np.maximum(np.abs(a[finite]), np.abs(b[finite])) + ABSOLUTE
        )
        wrong = far | (nan_a != nan_b) | (inf_a != inf_b) | (inf_a & inf_b & (a != b))
        if wrong.any():
            rows = (
                joined.filter(pl.Series(wrong)).select("symbol", "date", name, f"{name}_ours").head(3).rows()
            )
            problems.append(f"{name}: {int(wrong.sum())} rows, e.g. (symbol, date, qlib, ours) {rows}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------
# The research market, through Qlib's Alpha158 handler
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qlib_on_research(research_market: ResearchMarket) -> None:
    init_qlib(research_market.provider_uri, mlflow_uri=research_market.mlflow_uri)


@pytest.mark.slow
def test_every_feature_of_every_row_equals_qlibs_alpha158_handler(
    research_market: ResearchMarket, qlib_on_research: None
) -> None:
    from qlib.contrib.data.handler import Alpha158

    start, end = research_market.start.isoformat(), research_market.end.isoformat()
    fetched = Alpha158(instruments="all", start_time=start, end_time=end).fetch(col_set="feature")
    assert list(fetched.columns) == list(FEATURE_NAMES)
    qlib = from_qlib(fetched)
    bars = AdjustedStore(research_market.paths).read()
    ours = alpha158_features(bars)
    # The market has what the test is about: sessions without a bar inside a symbol's span.
    assert ours.filter(pl.col("KMID").is_null()).height > 10
    assert_same_features(ours, qlib)


def test_one_day_equals_the_full_computation_and_qlibs_one_day_handler(
    research_market: ResearchMarket, qlib_on_research: None
) -> None:
    from qlib.contrib.data.handler import Alpha158

    bars = AdjustedStore(research_market.paths).read()
    day = research_market.end
    latest = alpha158_latest(bars, day)
    assert latest.equals(alpha158_features(bars).filter(pl.col("date") == day))  # bit for bit
    assert alpha158_latest_from_store(research_market.paths, day).equals(latest)
    handler = Alpha158(instruments="all", start_time=day.isoformat(), end_time=day.isoformat())
    assert_same_features(latest, from_qlib(handler.fetch(col_set="feature")))


# --------------------------------------------------------------------------------------------------
# A hand-made market of edge cases, through D.features
# --------------------------------------------------------------------------------------------------

EDGE_SESSIONS: list[date] = trading_calendar().sessions(date(2024, 1, 2), date(2024, 6, 28)).to_list()


def edge_bars(
    symbol: str, closes: np.ndarray, volumes: np.ndarray, days: list[date], spread: float = 0.5
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": closes - 0.25,
            "high": closes + spread,
            "low": closes - spread,
            "close": closes,
            "volume": volumes,
            "factor": 1.0,
            "source": "test",
        },
        schema=ADJ_BAR_SCHEMA,
    )


def build_edge_market(root: Path) -> tuple[DataPaths, Path]:
    rng = np.random.default_rng(5)
    n = len(EDGE_SESSIONS)
    walk = 50 + np.cumsum(rng.normal(0, 0.5, n)).round(2)
    flat = walk.copy()
    flat[30:42] = 48.0  # twelve equal closes: Std 0, Rsquare and Corr masked
    flat[70:73] = flat[69]
    zero_volume = rng.integers(500, 5000, n).astype(float)
    zero_volume[[20, 21, 40, 55, 56, 57]] = 0.0
    halted = [d for i, d in enumerate(EDGE_SESSIONS) if not (30 <= i < 37 or 60 <= i < 64 or i in (90, 91))]
    halted_closes = (40 + np.cumsum(rng.normal(0, 0.3, n)).round(2))[[EDGE_SESSIONS.index(d) for d in halted]]

    def volumes(size: int) -> np.ndarray:
        return rng.integers(500, 5000, size).astype(float)

    frames = [
        edge_bars("WALK", walk, volumes(n), EDGE_SESSIONS),
        edge_bars("FLAT", flat, volumes(n), EDGE_SESSIONS),
        edge_bars("ZVOL", walk * 1.5, zero_volume, EDGE_SESSIONS),
        edge_bars("LINE", 20 + 0.25 * np.arange(n), 1000.0 + np.arange(n), EDGE_SESSIONS),
        edge_bars(
            "TIES", 30 + (np.arange(n) % 4) * 0.5, 1000.0 + (np.arange(n) % 3) * 100, EDGE_SESSIONS, 0.25
        ),
        edge_bars("LONG", halted_closes, volumes(len(halted)), halted),  # halts of 7, 4 and 2 sessions
        edge_bars("LATE", walk[-3:], volumes(3), EDGE_SESSIONS[-3:]),
        edge_bars("ONE", walk[-1:], volumes(1), EDGE_SESSIONS[-1:]),
        edge_bars("GONE", walk[:50], volumes(50), EDGE_SESSIONS[:50]),
    ]
    paths = DataPaths(root / "data")
    AdjustedStore(paths).replace_symbols(pl.concat(frames))
    listings = [(f.item(0, "symbol"), f.item(0, "date"), None, True, "Tech") for f in frames]
    UniverseStore(paths).merge(pl.DataFrame(listings, schema=LISTING_SCHEMA, orient="row"))
    QlibExporter(paths, root / "qlib").export()
    return paths, root / "qlib"


def test_edge_cases_equal_qlibs_expressions(tmp_path: Path) -> None:
    paths, provider = build_edge_market(tmp_path)
    init_qlib(provider, mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    from qlib.data import D

    frame = D.features(
        D.instruments("all"), [expr for _, expr in ALPHA158_EXPRESSIONS], EDGE_SESSIONS[0], EDGE_SESSIONS[-1]
    )
    frame.columns = list(FEATURE_NAMES)
    qlib = from_qlib(frame)
    ours = alpha158_features(AdjustedStore(paths).read())
    # The edge cases are there: masked windows, infinities skipped, empty windows, exact zeros.
    flat = ours.filter(pl.col("symbol") == "FLAT")
    assert flat.get_column("STD5").to_list().count(0.0) >= 5
    assert (
        flat.get_column("RSQR5").null_count()
        > qlib.filter(pl.col("symbol") == "WALK").get_column("RSQR5").null_count()
    )
    assert ours.filter(pl.col("symbol") == "LONG").get_column("MA5").null_count() >= 7
    assert_same_features(ours, qlib)
    day = EDGE_SESSIONS[-1]
    assert alpha158_latest(AdjustedStore(paths).read(), day).equals(ours.filter(pl.col("date") == day))
    # The store path reads 61 sessions: LONG, halted on the first two of them, is not a new listing.
    day = EDGE_SESSIONS[32 + HISTORY_SESSIONS - 1]
    assert history_start(day) == EDGE_SESSIONS[32]
    latest = alpha158_latest_from_store(paths, day)
    assert "LONG" in latest.get_column("symbol").to_list()
    assert latest.equals(ours.filter(pl.col("date") == day))
