"""``train_strategy`` and ``trader research train`` on the research test market, through Qlib and MLflow.

One training of the LightGBM baseline is shared by the module (a small ``num_boost_round`` keeps it
to a few seconds); the CLI test trains the same configuration again end to end and must produce the
very same predictions (same data, same seed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.support.research import ResearchMarket
from trader.cli.main import run
from trader.research.artifacts import ModelArtifact, list_versions
from trader.research.scores import PREDICTION_SCHEMA, EmptySegmentError
from trader.research.train import TrainResult, train_strategy
from trader.strategies.config import DateRange, Segments, StrategyConfig, load_strategy_config

pytestmark = pytest.mark.slow

#: Segments that fit the research market (2021-01-04 .. 2023-12-29) with gaps for the 2-day label.
SEGMENTS = Segments(
    train=DateRange(start=date(2021, 1, 4), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 23)),
    test=DateRange(start=date(2023, 1, 4), end=date(2023, 12, 28)),
)
#: Small and lightly regularised: the shipped regularisation (L1 205, L2 581, tuned on a million
#: rows) grows no tree on the ~7k training rows of this market, which would leave constant scores.
SMALL_LGB = {
    "num_boost_round": 30,
    "early_stopping_rounds": 10,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "max_depth": 6,
    "lambda_l1": 1.0,
    "lambda_l2": 10.0,
}


def small_config() -> StrategyConfig:
    base = load_strategy_config("alpha_baseline").with_segments(SEGMENTS)
    return base.model_copy(update={"lightgbm": base.lightgbm.model_copy(update=SMALL_LGB)})


@dataclass(frozen=True)
class Trained:
    market: ResearchMarket
    config: StrategyConfig
    result: TrainResult
    artifacts_dir: Path
    mlflow_uri: str
    workdir: Path


@pytest.fixture(scope="module")
def trained(research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("train")
    workdir = root / "cwd"
    workdir.mkdir()
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    config = small_config()
    stages: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # nothing may land in the working directory (MLflow's ./mlruns)
        result = train_strategy(
            config,
            provider_uri=research_market.provider_uri,
            mlflow_uri=mlflow_uri,
            artifacts_dir=root / "artifacts",
            on_progress=stages.append,
        )
    assert stages == ["features", "fit", "predict", "save", "log"]
    yield Trained(research_market, config, result, root / "artifacts", mlflow_uri, workdir)


def sessions_of(market: ResearchMarket) -> list[date]:
    text = (market.provider_uri / "calendars" / "day.txt").read_text()
    return [date.fromisoformat(line) for line in text.split()]


def listed_pairs(market: ResearchMarket, span: DateRange) -> set[tuple[date, str]]:
    """Every (session, symbol) of ``span`` in which ``instruments/all.txt`` lists the symbol."""
    sessions = [d for d in sessions_of(market) if span.start <= d <= span.end]
    pairs: set[tuple[date, str]] = set()
    for line in (market.provider_uri / "instruments" / "all.txt").read_text().splitlines():
        symbol, start, end = line.split("\t")
        first, last = date.fromisoformat(start), date.fromisoformat(end)
        pairs.update((d, symbol) for d in sessions if first <= d <= last)
    return pairs


def test_artifact_files_and_train_json(trained: Trained) -> None:
    artifact = trained.result.artifact
    assert artifact.path == trained.artifacts_dir / "models" / "alpha_baseline" / artifact.version
    for name in ("model.pkl", "predictions.parquet", "strategy.yaml", "train.json"):
        assert (artifact.path / name).is_file(), name
    info = artifact.info
    assert info["mlflow_run_id"] == trained.result.run_id
    assert info["segments"]["test"] == ["2023-01-04", "2023-12-28"]
    assert len(info["feature_names"]) == 158
    assert set(info["feature_importance"]) == set(info["feature_names"])
    assert sum(info["feature_importance"].values()) > 0  # trees were grown
    manifest = (trained.market.provider_uri / ".trader-export.json").read_bytes()
    import hashlib

    assert info["data"]["fingerprint"] == hashlib.sha256(manifest).hexdigest()
    assert info["library_versions"]["pyqlib"] == "0.9.7"
    assert artifact.config() == trained.config
    assert not any(p.name.startswith(".tmp-") for p in artifact.path.parent.iterdir())
    assert list(trained.workdir.iterdir()) == []


def test_predictions_cover_every_listed_test_session_with_finite_scores(trained: Trained) -> None:
    predictions = trained.result.artifact.predictions()
    assert predictions.schema == PREDICTION_SCHEMA
    assert set(predictions.get_column("segment").unique()) == {"valid", "test"}
    for segment, span in (("test", SEGMENTS.test), ("valid", SEGMENTS.valid)):
        part = predictions.filter(pl.col("segment") == segment)
        keys = set(part.select("date", "symbol").iter_rows())
        assert part.height == len(keys)  # one score per (date, symbol)
        assert keys == listed_pairs(trained.market, span)
        assert trained.result.artifact.info["rows"][segment] == part.height
    scores = predictions.get_column("score").to_numpy()
    assert np.isfinite(scores).all()
    assert predictions.filter(pl.col("segment") == "test").get_column("score").n_unique() > 20


def test_ic_is_finite_and_matches_the_run(trained: Trained) -> None:
    from mlflow.tracking import MlflowClient

    metrics = trained.result.metrics
    for segment in ("valid", "test"):
        stats = trained.result.artifact.ic(segment)
        assert math.isfinite(stats.ic) and -1 <= stats.ic <= 1
        assert math.isfinite(stats.rank_ic) and -1 <= stats.rank_ic <= 1
        assert stats.days > 100
        assert metrics[f"ic.{segment}"] == pytest.approx(stats.ic)
    assert 1 <= metrics["best_iteration"] <= metrics["iterations"] <= SMALL_LGB["num_boost_round"]

    client = MlflowClient(tracking_uri=trained.mlflow_uri)
    run = client.get_run(trained.result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "alpha_baseline"
    params = run.data.params
    assert params["lightgbm.seed"] == "42"
    assert params["lightgbm.num_boost_round"] == "30"
    assert params["segments.test.start"] == "2023-01-04"
    assert run.data.metrics["ic.test"] == pytest.approx(metrics["ic.test"])
    assert run.data.metrics["rows.test"] == trained.result.artifact.info["rows"]["test"]
    assert run.data.tags["trader.version"] == trained.result.artifact.version
    logged = {Path(f.path).name for f in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {"model.pkl", "predictions.parquet", "strategy.yaml", "train.json"}
    # The run's artifacts live under ARTIFACTS_DIR/mlruns, not in the working directory.
    assert run.info.artifact_uri.startswith((trained.artifacts_dir / "mlruns").resolve().as_uri())
    curve = client.get_metric_history(run.info.run_id, "l2.valid")
    assert len(curve) == metrics["iterations"]


def test_reloaded_model_reproduces_the_saved_test_predictions(trained: Trained) -> None:
    from trader.strategies.alpha_baseline.pipeline import predict

    artifact = ModelArtifact.load(trained.result.artifact.path)
    model = artifact.load_model()
    again = predict(
        model, artifact.config(), trained.market.provider_uri, "test", mlflow_uri=trained.mlflow_uri
    )
    assert_frame_equal(again, artifact.predictions("test"))


def test_cli_trains_end_to_end_and_reproduces_the_same_predictions(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    yaml_path = tmp_path / "small.yaml"
    yaml_path.write_text(trained.config.to_yaml())
    monkeypatch.setenv("DATA_DIR", str(trained.market.data_dir))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.mlflow_uri)  # a second run in the same store

    assert run(["research", "train", "--strategy", str(yaml_path)]) == 0
    out = capsys.readouterr().out
    (version,) = list_versions(tmp_path / "artifacts", "alpha_baseline")
    assert version in out
    assert f"next: trader research backtest --version {version}" in out
    for stage in ("features", "fit", "predict", "save", "log"):
        assert stage in out
    artifact = ModelArtifact.find(tmp_path / "artifacts", "alpha_baseline")
    assert artifact.mlflow_run_id is not None and artifact.mlflow_run_id in out
    # Same data, same seed: the same predictions, bit for bit.
    assert_frame_equal(artifact.predictions(), trained.result.artifact.predictions())


def test_cli_refuses_segments_outside_the_data(
    research_market: ResearchMarket,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATA_DIR", str(research_market.data_dir))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code = run(["research", "train", "--train-start", "2021-01-04", "--test-end", "2024-06-28"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "segments.test.end (2024-06-28) is after the export's last session 2023-12-29" in err
    assert "--test-end" in err
    # The shipped alpha_baseline segments start 2019: the valid/test overrides were not given, so the
    # message names only what is wrong (test end), not the valid segment that fits.
    assert "segments.valid" not in err
    assert not (tmp_path / "artifacts").exists()


def test_a_segment_without_rows_fails_the_run_and_leaves_no_artifact(
    trained: Trained, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # A 400-session lookback has no score before 2022-08: the train segment (2021) has no rows.
    base = load_strategy_config("momentum").with_segments(SEGMENTS)
    config = base.model_copy(update={"momentum": base.momentum.model_copy(update={"lookback": 400})})
    mlflow_uri = trained.mlflow_uri
    with pytest.raises(
        EmptySegmentError, match=r"segments\.train \(2021-01-04 \.\. 2022-06-30\) has no rows"
    ):
        train_strategy(
            config,
            provider_uri=trained.market.provider_uri,
            mlflow_uri=mlflow_uri,
            artifacts_dir=tmp_path / "a",
        )
    assert list_versions(tmp_path / "a", "momentum") == []
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("momentum")
    (failed,) = client.search_runs([experiment.experiment_id])
    assert failed.info.status == "FAILED"
