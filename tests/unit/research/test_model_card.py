"""MODEL_CARD.md: every section with its values, atomic files, the decision re-rendered."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from trader.research.leakage import FEATURES_CHECK, SEGMENTS_CHECK, CheckReport, CheckResult
from trader.research.model_card import (
    MODEL_CARD_DATA_FILE,
    DecisionStatus,
    DriftNotes,
    ModelCardData,
    ModelCardError,
    PromotionDecision,
    Scenario,
    ScoreStats,
    drift_lines,
    format_metric,
    read_model_card_data,
    record_decision,
    render_model_card,
    write_model_card,
)
from trader.strategies.config import Costs, DateRange, Segments

CREATED = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
SEGMENTS = Segments(
    train=DateRange(start=date(2019, 1, 2), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2023, 6, 30)),
    test=DateRange(start=date(2023, 7, 7), end=date(2024, 12, 27)),
    label_horizon=2,
)
CHECKS = CheckReport(
    (
        CheckResult(SEGMENTS_CHECK, True, "disjoint, 2 sessions apart"),
        CheckResult(FEATURES_CHECK, False, "TOMORROW = Ref($close, -1)/$close | reads the future"),
    ),
    CREATED,
)


def card(**changes: object) -> ModelCardData:
    base = ModelCardData(
        model_name="alpha_baseline",
        version="20250106T093000Z",
        mlflow_run_id="3f2a9c0d41",
        artifact_uri="artifacts/models/alpha_baseline/20250106T093000Z",
        created_at=CREATED,
        description="Alpha158 + LightGBM on the demo market.",
        segments=SEGMENTS,
        metrics={
            "annualized_return": 0.1834,
            "benchmark_annualized_return": 0.0712,
            "sharpe": 1.2345,
            "information_ratio": 0.98,
            "max_drawdown": -0.0876,
            "turnover": 0.153,
            "ic": 0.03125,
            "rank_ic": 0.0288,
            "icir": 0.311,
            "hit_rate": 0.54,
        },
        scenarios=[
            Scenario(name="base", metrics={"annualized_return": 0.1834, "sharpe": 1.2345}),
            Scenario(name="slippage x3", metrics={"annualized_return": 0.121, "sharpe": 0.81}),
            Scenario(name="fees x2", metrics={"annualized_return": 0.17, "sharpe": None}),
        ],
        features=["KMID", "KLEN", "ROC5", "STD20"],
        importance={"KMID": 40.0, "KLEN": 10.0, "ROC5": 30.0, "STD20": 20.0},
        top_n=3,
        costs=Costs(commission_bps=0.5, sell_fee_bps=0.3, min_commission=1.0, slippage_bps=5.0),
        drift=DriftNotes(
            valid_ic=0.0450,
            test_ic=0.03125,
            scores=ScoreStats.of([0.1, -0.2, 0.3, float("nan")]),
            data_fingerprint="sha256:abc123",
            notes=["Trained before the 2024 split of SYN007."],
        ),
        checks=CHECKS,
    )
    return base.model_copy(update=changes)


def section(text: str, heading: str) -> str:
    """The body of ``## heading`` up to the next level-2 heading."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_every_section_is_rendered_with_its_values() -> None:
    text = render_model_card(card())
    assert text.startswith("# Model card: alpha_baseline version 20250106T093000Z\n")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Data and segments",
        "## Metrics (test segment)",
        "## Cost scenarios",
        "## Cost assumption",
        "## Features",
        "## Drift notes",
        "## Leakage and validity checks",
        "## Promotion decision",
    ]
    assert "| MLflow run id | 3f2a9c0d41 |" in text
    assert "| Created | 2025-01-06T09:30:00+00:00 |" in text

    segments = section(text, "Data and segments")
    assert "| train | 2019-01-02 | 2022-06-30 |" in segments
    assert "| valid | 2022-07-06 | 2023-06-30 |" in segments
    assert "| test | 2023-07-07 | 2024-12-27 |" in segments
    assert "Label horizon: 2 sessions" in segments

    metrics = section(text, "Metrics (test segment)")
    for row in (
        "| Annualized return | 18.34% |",
        "| Sharpe ratio | 1.234 |",  # 1.2345 rounds half to even at 3 decimals
        "| Information ratio | 0.980 |",
        "| Max drawdown | -8.76% |",
        "| Turnover (mean daily) | 15.30% |",
        "| IC (mean daily) | 0.0312 |",
        "| Rank IC (mean daily) | 0.0288 |",
        "| ICIR | 0.311 |",
        "| hit_rate | 0.540 |",  # an unknown metric is shown too, after the known ones
    ):
        assert row in metrics
    assert metrics.index("Annualized return") < metrics.index("Sharpe") < metrics.index("hit_rate")
    assert "Benchmark: equal_weight (annualized return 7.12%)." in metrics

    scenarios = section(text, "Cost scenarios")
    assert "| scenario | Annualized return | Sharpe ratio |" in scenarios
    assert "| slippage x3 | 12.10% | 0.810 |" in scenarios
    assert "| fees x2 | 17.00% | n/a |" in scenarios

    costs = section(text, "Cost assumption")
    assert "| Slippage (both sides, against the deal price) | 5 bps |" in costs
    assert (
        "| Commission (both sides) | 0.5 bps |" in costs and "| Minimum commission | $1 per order |" in costs
    )

    features = section(text, "Features")
    assert "4 features." in features and "`KMID`, `KLEN`, `ROC5`, `STD20`" in features
    assert "### Top 3 by importance" in features
    assert "| 1 | KMID | 40 | 40.0% |" in features and "| 3 | STD20 | 20 | 20.0% |" in features
    assert "KLEN | 10" not in features  # only the top 3

    drift = section(text, "Drift notes")
    assert "IC: valid 0.0450 -> test 0.0312 (-31%); holds up out of sample." in drift
    assert "Scores (test): 3 values, 1 missing; mean 0.0667" in drift
    assert "Data fingerprint: `sha256:abc123`." in drift and "- Trained before the 2024 split" in drift

    checks = section(text, "Leakage and validity checks")
    assert "1/2 checks passed; failed: features_point_in_time (FAILED: promotion is blocked)." in checks
    assert (
        "| features_point_in_time | **FAIL** | TOMORROW = Ref($close, -1)/$close \\| reads the future |"
        in checks
    )
    assert "| segments_disjoint_with_gap | pass |" in checks

    decision = section(text, "Promotion decision")
    assert "**pending**: not yet reviewed" in decision


def test_missing_pieces_are_said_not_left_blank() -> None:
    text = render_model_card(
        card(metrics={}, scenarios=[], importance={}, checks=None, drift=DriftNotes(), mlflow_run_id=None)
    )
    assert "No metrics recorded." in text and "No scenario runs recorded." in text
    assert "No importance recorded." in text
    assert "**No checks recorded**: the model cannot be promoted until they run." in text
    assert "IC: valid or test IC not recorded, no comparison." in text and "Data fingerprint: n/a." in text
    assert "| MLflow run id | n/a (not tracked) |" in text


def test_a_test_ic_below_half_the_valid_ic_is_flagged() -> None:
    (line, *_) = drift_lines(DriftNotes(valid_ic=0.05, test_ic=0.02))
    assert line == (
        "IC: valid 0.0500 -> test 0.0200 (-60%); DEGRADED: below 50% of the valid IC; "
        "expect weaker live results."
    )


def test_score_stats() -> None:
    stats = ScoreStats.of([1.0, 2.0, 3.0, 4.0, float("inf"), float("nan")])
    assert (stats.count, stats.missing, stats.mean, stats.min, stats.max, stats.median) == (
        4,
        2,
        2.5,
        1.0,
        4.0,
        2.5,
    )
    assert stats.std is not None and math.isclose(stats.std, 1.2909944, rel_tol=1e-6)
    assert ScoreStats.of([]).count == 0 and ScoreStats.of([]).mean is None


def test_format_metric() -> None:
    assert format_metric(0.1234, "pct") == "12.34%"
    assert format_metric(float("nan")) == "n/a" and format_metric(None, "ic") == "n/a"


def test_write_read_and_record_a_decision(tmp_path: Path) -> None:
    path = tmp_path / "model" / "MODEL_CARD.md"
    write_model_card(path, card())
    assert path.read_text() == render_model_card(card())
    assert read_model_card_data(path) == card()
    assert {p.name for p in path.parent.iterdir()} == {MODEL_CARD_DATA_FILE, "MODEL_CARD.md"}  # no temp files

    decided = PromotionDecision(
        status=DecisionStatus.REFUSED,
        reason="leakage checks failed: features_point_in_time",
        decided_by="alice",
        decided_at=datetime(2025, 1, 7, 12, 0, tzinfo=UTC),
    )
    record_decision(path, decided)
    decision = section(path.read_text(), "Promotion decision")
    assert "**refused**: leakage checks failed: features_point_in_time" in decision
    assert "Decided by alice at 2025-01-07T12:00:00+00:00." in decision
    assert "| Decision | **refused** |" in path.read_text()
    assert read_model_card_data(path).decision == decided


def test_reading_a_card_without_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match=r"cannot read .*model_card\.json"):
        read_model_card_data(tmp_path / "MODEL_CARD.md")
    (tmp_path / MODEL_CARD_DATA_FILE).write_text('{"model_name": 1}')
    with pytest.raises(ModelCardError, match="is not model card data"):
        read_model_card_data(tmp_path / "MODEL_CARD.md")
