"""The perturbation test and the whole check run on the research market, with Qlib; the planted
look-ahead feature ("tomorrow's close") is caught, named, and blocks promotion in the registry."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
from sqlalchemy import Engine, select

from tests.support.research import ResearchMarket
from trader.data.store import UniverseStore
from trader.research import qlib_runtime
from trader.research.leakage import (
    FEATURES_CHECK,
    LABELS_CHECK,
    SEGMENTS_CHECK,
    UNIVERSE_CHECK,
    CheckReport,
    LeakageCheckError,
    features_are_point_in_time,
    read_calendar,
    read_instruments,
    run_checks,
    universe_is_point_in_time,
)
from trader.research.registry import ModelRegistry, PromotionRefusedError
from trader.store.models import AuditLog
from trader.strategies.config import DateRange, PromotionThresholds, Segments

PLANTED_EXPR, PLANTED_NAME = "Ref($close, -1)/$close", "TOMORROW"
LABEL_EXPR, LABEL_NAME = "Ref($close, -2)/Ref($close, -1) - 1", "LABEL0"
SEGMENTS = Segments(
    train=DateRange(start=date(2021, 1, 4), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 30)),
    test=DateRange(start=date(2023, 1, 5), end=date(2023, 12, 28)),
)


def alpha158() -> tuple[list[str], list[str]]:
    from qlib.contrib.data.loader import Alpha158DL

    exprs, names = Alpha158DL.get_feature_config()
    return list(exprs), list(names)


def test_alpha158_passes_and_the_planted_feature_is_caught_by_name(research_market: ResearchMarket) -> None:
    exprs, names = alpha158()
    clean = features_are_point_in_time(exprs, names, research_market.provider_uri)
    assert clean.name == FEATURES_CHECK
    assert clean.passed, clean.detail
    assert clean.detail.startswith("158 features unchanged on dates <= t")
    assert "3 symbol(s)" in clean.detail and "120 sessions each" in clean.detail

    planted = features_are_point_in_time(
        [*exprs, PLANTED_EXPR], [*names, PLANTED_NAME], research_market.provider_uri
    )
    assert not planted.passed
    # Exactly the planted feature, none of Alpha158's.
    expected = "1 feature(s) change on dates <= t when data after t is altered (they read the future): "
    assert f"{expected}{PLANTED_NAME}." in planted.detail
    assert f"{PLANTED_NAME} = {PLANTED_EXPR}" in planted.detail


def test_reading_further_ahead_than_a_day_is_caught_too(research_market: ResearchMarket) -> None:
    # Only dates up to the cutoff are compared: a feature that looks 10 sessions ahead differs on
    # the 10 sessions before it. A rolling window over future values, and a feature that hides the
    # look-ahead in a nested expression, are named; the honest ones are not.
    exprs = ["Mean(Ref($volume, -10), 5)/$volume", "Ref(Mean($close, 5), -3)/$close", "$close/Ref($close, 5)"]
    names = ["FUTURE_VOLUME", "FUTURE_MEAN", "ROC5"]
    result = features_are_point_in_time(
        exprs, names, research_market.provider_uri, ["SYN001"], [date(2022, 9, 30)], window=60
    )
    assert not result.passed
    assert "2 feature(s) change" in result.detail
    assert "FUTURE_VOLUME, FUTURE_MEAN." in result.detail and "ROC5" not in result.detail
    assert "1 symbol(s) (SYN001), cutoff(s) 2022-09-30, 60 sessions each" in result.detail


def test_qlib_points_at_the_previous_export_afterwards(research_market: ResearchMarket) -> None:
    from qlib.data import D

    qlib_runtime.init_qlib(research_market.provider_uri, mlflow_uri=research_market.mlflow_uri)
    before = qlib_runtime._current
    features_are_point_in_time(["$close/$open"], ["RATIO"], research_market.provider_uri, ["SYN002"])
    assert qlib_runtime._current == before
    # The temporary export is gone: reading works only if Qlib is back on the research market.
    closes = D.features(["SYN003"], ["$close"], "2023-01-03", "2023-01-31")
    assert len(closes) == 20 and closes["$close"].notna().all()


def test_bad_inputs_are_named(research_market: ResearchMarket) -> None:
    uri = research_market.provider_uri
    with pytest.raises(LeakageCheckError, match="sample symbols not in the export's instruments: NOPE"):
        features_are_point_in_time(["$close"], ["C"], uri, ["NOPE"])
    with pytest.raises(LeakageCheckError, match="cutoff date 2021-02-01: needs 120 sessions up to it"):
        features_are_point_in_time(["$close"], ["C"], uri, None, [date(2021, 2, 1)])
    with pytest.raises(LeakageCheckError, match="no Qlib export"):
        features_are_point_in_time(["$close"], ["C"], uri / "nowhere")


# --------------------------------------------------------------------------------------------------
# All checks, then the registry's release gate
# --------------------------------------------------------------------------------------------------


def predictions_of(market: ResearchMarket, segments: Segments) -> pl.DataFrame:
    """A score for every tradable listed symbol on every test session: what a point-in-time model emits."""
    sessions = [
        d for d in read_calendar(market.provider_uri) if segments.test.start <= d <= segments.test.end
    ]
    listings = UniverseStore(market.paths).read().filter(pl.col("tradable"))
    days = pl.DataFrame({"date": sessions}, schema={"date": pl.Date})
    return (
        days.join(listings, how="cross")
        .filter(
            (pl.col("start_date") <= pl.col("date"))
            & (pl.col("end_date").is_null() | (pl.col("date") <= pl.col("end_date")))
        )
        .select("date", "symbol", pl.lit(0.0).alias("score"), pl.lit("test").alias("segment"))
    )


@pytest.fixture(scope="module")
def reports(research_market: ResearchMarket) -> dict[str, CheckReport]:
    exprs, names = alpha158()
    universe = UniverseStore(research_market.paths).read()
    predictions = predictions_of(research_market, SEGMENTS)
    common = {
        "segments": SEGMENTS,
        "label_exprs": [LABEL_EXPR],
        "label_names": [LABEL_NAME],
        "provider_uri": research_market.provider_uri,
        "predictions": predictions,
        "universe": universe,
    }
    return {
        "clean": run_checks(feature_exprs=exprs, feature_names=names, **common),  # type: ignore[arg-type]
        "planted": run_checks(
            feature_exprs=[*exprs, PLANTED_EXPR],
            feature_names=[*names, PLANTED_NAME],
            **common,  # type: ignore[arg-type]
        ),
    }


def test_every_check_passes_on_an_honest_model(reports: dict[str, CheckReport]) -> None:
    report = reports["clean"]
    assert [r.name for r in report.results] == [SEGMENTS_CHECK, LABELS_CHECK, FEATURES_CHECK, UNIVERSE_CHECK]
    assert report.passed, report.to_json()
    universe = report.results[3].detail
    assert (
        "scored (date, symbol) pairs inside the listings" in universe
        and "instrument ranges inside" in universe
    )


def test_the_planted_feature_fails_both_leakage_checks(reports: dict[str, CheckReport]) -> None:
    report = reports["planted"]
    assert not report.passed
    assert [r.name for r in report.failed] == [LABELS_CHECK, FEATURES_CHECK]
    assert all(PLANTED_NAME in r.detail for r in report.failed)


def test_a_score_after_delisting_fails_the_universe_check(
    research_market: ResearchMarket, tmp_path: Path
) -> None:
    universe = UniverseStore(research_market.paths).read()
    # A symbol delisted before the end of the test segment (the synthetic market has some).
    gone = universe.filter(pl.col("end_date").is_not_null() & (pl.col("end_date") < SEGMENTS.test.end))
    assert not gone.is_empty()
    delisted = gone.row(0, named=True)
    extra = pl.DataFrame(
        {"date": [SEGMENTS.test.end], "symbol": [delisted["symbol"]], "score": [1.0], "segment": ["test"]},
        schema={"date": pl.Date, "symbol": pl.String, "score": pl.Float64, "segment": pl.String},
    )
    predictions = pl.concat([predictions_of(research_market, SEGMENTS), extra])
    result = universe_is_point_in_time(predictions, universe, read_instruments(research_market.provider_uri))
    assert not result.passed
    assert f"{delisted['symbol']} {SEGMENTS.test.end}" in result.detail


def test_the_planted_feature_blocks_promotion(
    migrated_engine: Engine, reports: dict[str, CheckReport]
) -> None:
    registry = ModelRegistry(migrated_engine)
    good_metrics = {"sharpe": 1.4, "max_drawdown": -0.08, "ic": 0.04, "turnover": 0.2}
    registry.register(
        "alpha_baseline", "leaky", "/artifacts/leaky", "run-leaky", good_metrics, reports["planted"]
    )
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote("alpha_baseline", "leaky", approved_by="ops", thresholds=PromotionThresholds())
    assert refused.value.reasons[0].startswith(
        "leakage checks failed: labels_not_in_features: feature TOMORROW"
    )
    assert "features_point_in_time:" in refused.value.reasons[0]
    entry = registry.get("alpha_baseline", "leaky")
    assert entry.stage.value == "staging" and entry.approved_by is None
    assert entry.decision_reason is not None and PLANTED_NAME in entry.decision_reason
    with migrated_engine.connect() as connection:
        audit = connection.execute(
            select(AuditLog.action, AuditLog.reason).where(AuditLog.action == "model.promote_refused")
        ).one()
    assert PLANTED_NAME in audit.reason

    registry.register(
        "alpha_baseline", "honest", "/artifacts/honest", "run-honest", good_metrics, reports["clean"]
    )
    result = registry.promote("alpha_baseline", "honest", approved_by="ops", thresholds=PromotionThresholds())
    assert result.promoted.stage.value == "production"
    assert registry.production_version("alpha_baseline") == "honest"
