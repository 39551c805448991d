"""The pieces around training, on real files and a real MLflow store, without Qlib: the artifact
folder (atomic, versioned), MLflow helpers, the segment checks and the CLI's option errors."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from trader.cli.main import run
from trader.research import artifacts as artifacts_module
from trader.research.artifacts import (
    ArtifactError,
    DataInfo,
    ModelArtifact,
    export_fingerprint,
    list_versions,
    version_at,
)
from trader.research.qlib_runtime import QlibNotReadyError
from trader.research.scores import ICStats, TrainOutput
from trader.research.tracking import RunStatus, end_run, ensure_experiment, flatten, log_to_run, start_run
from trader.research.train import SegmentError, check_segments, export_sessions
from trader.strategies.config import DateRange, Segments, load_strategy_config

MOMENT = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
DATA = DataInfo(provider_uri="/x/qlib", fingerprint="ab" * 32, first_day="2021-01-04", last_day="2023-12-29")


def output(model: object | None = None) -> TrainOutput:
    predictions = pl.DataFrame(
        {
            "date": [date(2024, 1, 2), date(2024, 1, 2), date(2024, 1, 3)],
            "symbol": ["A", "B", "A"],
            "score": [0.5, -0.25, 1.0],
            "segment": ["valid", "valid", "test"],
        }
    )
    return TrainOutput(
        model=model,
        predictions=predictions,
        feature_names=["F1", "F2"],
        feature_importance={"F2": 3.0, "F1": 1.0},
        ic={
            "valid": ICStats(0.1, 0.2, 0.5, 0.6, 1),
            "test": ICStats(math.nan, math.nan, math.nan, math.nan, 0),
        },
        rows={"train": 10, "valid": 2, "test": 1},
        timings={"features": 1.23456},
        extra_metrics={"best_iteration": 7.0},
    )


# --------------------------------------------------------------------------------------------------
# Artifacts
# --------------------------------------------------------------------------------------------------


def test_version_is_the_utc_second() -> None:
    assert version_at(MOMENT) == "20240506T070809Z"
    with pytest.raises(ValueError, match="timezone"):
        version_at(datetime(2024, 1, 1))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    config = load_strategy_config("alpha_baseline")
    saved = ModelArtifact.save(
        tmp_path, config, output({"weights": [1, 2]}), data=DATA, mlflow_run_id="r1", now=MOMENT
    )
    assert saved.path == tmp_path / "models" / "alpha_baseline" / "20240506T070809Z"
    loaded = ModelArtifact.load(saved.path)
    assert loaded.info == saved.info
    assert loaded.version == "20240506T070809Z" and loaded.name == "alpha_baseline"
    assert loaded.kind == "alpha158_lgb" and loaded.mlflow_run_id == "r1"
    assert loaded.load_model() == {"weights": [1, 2]}
    assert loaded.config() == config
    assert loaded.predictions().equals(output().predictions)
    assert loaded.predictions("test").height == 1
    assert loaded.ic("valid") == ICStats(0.1, 0.2, 0.5, 0.6, 1)
    assert math.isnan(loaded.ic("test").ic)  # stored as null: JSON has no NaN
    raw = json.loads((saved.path / "train.json").read_text())
    assert raw["ic"]["test"]["ic"] is None
    assert raw["data"]["fingerprint"] == DATA.fingerprint
    assert raw["rows"] == {"train": 10, "valid": 2, "test": 1}
    assert raw["metrics"] == {"best_iteration": 7.0}
    assert raw["timings"] == {"features": 1.235}
    assert set(raw["library_versions"]) >= {"python", "pyqlib", "lightgbm", "mlflow"}


def test_a_taken_second_gets_a_suffix_and_find_returns_the_latest(tmp_path: Path) -> None:
    config = load_strategy_config("momentum")
    versions = [
        ModelArtifact.save(tmp_path, config, output(), data=DATA, mlflow_run_id=None, now=MOMENT).version
        for _ in range(3)
    ]
    assert versions == ["20240506T070809Z", "20240506T070809Z-2", "20240506T070809Z-3"]
    assert list_versions(tmp_path, "momentum") == versions
    assert ModelArtifact.find(tmp_path, "momentum").version == versions[-1]
    assert ModelArtifact.find(tmp_path, "momentum", versions[0]).info["version"] == versions[0]
    with pytest.raises(ArtifactError, match="no version 'nope'"):
        ModelArtifact.find(tmp_path, "momentum", "nope")
    with pytest.raises(ArtifactError, match="run 'trader research train' first"):
        ModelArtifact.find(tmp_path, "alpha_baseline")


def test_model_free_artifact_has_no_model(tmp_path: Path) -> None:
    saved = ModelArtifact.save(
        tmp_path, load_strategy_config("momentum"), output(None), data=DATA, mlflow_run_id=None, now=MOMENT
    )
    assert not (saved.path / "model.pkl").exists()
    assert saved.info["has_model"] is False
    with pytest.raises(ArtifactError, match="has no model"):
        saved.load_model()


def test_a_crash_while_writing_leaves_no_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = artifacts_module.write_synced

    def crash_on_train_json(path: Path, data: bytes) -> None:
        if path.name == "train.json":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(artifacts_module, "write_synced", crash_on_train_json)
    with pytest.raises(OSError, match="disk full"):
        ModelArtifact.save(
            tmp_path, load_strategy_config("momentum"), output(), data=DATA, mlflow_run_id=None
        )
    root = tmp_path / "models" / "momentum"
    assert list(root.iterdir()) == []  # neither a version nor a temporary folder
    assert list_versions(tmp_path, "momentum") == []


def test_load_refuses_an_incomplete_folder(tmp_path: Path) -> None:
    (tmp_path / "train.json").write_text("{}")
    with pytest.raises(ArtifactError, match=r"predictions\.parquet is missing"):
        ModelArtifact.load(tmp_path)


def test_export_fingerprint_hashes_the_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an export"):
        export_fingerprint(tmp_path)
    (tmp_path / ".trader-export.json").write_text('{"first_day": "2021-01-04", "last_day": "2021-02-01"}')
    first = export_fingerprint(tmp_path)
    assert (first.first_day, first.last_day) == ("2021-01-04", "2021-02-01")
    (tmp_path / ".trader-export.json").write_text('{"first_day": "2021-01-04", "last_day": "2021-02-02"}')
    assert export_fingerprint(tmp_path).fingerprint != first.fingerprint


# --------------------------------------------------------------------------------------------------
# MLflow helpers
# --------------------------------------------------------------------------------------------------


def test_runs_keep_artifacts_under_artifacts_dir_and_accept_more_after_finishing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts_dir = tmp_path / "artifacts"
    experiment_id = ensure_experiment(uri, "demo", artifacts_dir)
    assert ensure_experiment(uri, "demo", artifacts_dir) == experiment_id  # found, not created twice
    run_id = start_run(uri, "demo", artifacts_dir, run_name="train-demo", tags={"trader.stage": "train"})
    log_to_run(run_id, tracking_uri=uri, metrics={"ic.test": 0.05}, params={"a.b": 1, "c": None})
    end_run(uri, run_id, RunStatus.FINISHED)

    # Later steps (the backtest) add to the finished run: a metric, a tag, a file and a folder.
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    folder = tmp_path / "backtest"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    log_to_run(
        run_id,
        tracking_uri=uri,
        metrics={"sharpe": 1.5},
        tags={"promotion": "blocked"},
        artifacts=[report, folder],
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"ic.test": 0.05, "sharpe": 1.5}
    assert run.data.params == {"a.b": "1", "c": ""}
    assert run.data.tags["promotion"] == "blocked" and run.data.tags["trader.stage"] == "train"
    assert {f.path for f in client.list_artifacts(run_id)} == {"report.html", "backtest"}
    assert [f.path for f in client.list_artifacts(run_id, "backtest")] == ["backtest/metrics.json"]
    assert run.info.artifact_uri.startswith((artifacts_dir / "mlruns" / "demo").resolve().as_uri())
    assert (artifacts_dir / "mlruns" / "demo" / run_id / "artifacts" / "report.html").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts", "backtest", "mlflow.db", "report.html"]


def test_flatten_nested_config() -> None:
    flat = flatten(load_strategy_config("alpha_baseline").model_dump(mode="json"))
    assert flat["segments.train.start"] == "2019-01-02"
    assert flat["lightgbm.num_leaves"] == 210
    assert flat["costs.slippage_bps"] == 5.0
    assert flatten({"a": {"b": {"c": 1}}, "d": 2}) == {"a.b.c": 1, "d": 2}


# --------------------------------------------------------------------------------------------------
# Segment checks and CLI options
# --------------------------------------------------------------------------------------------------

SESSIONS = [date(2021, 1, 4), date(2021, 1, 5), date(2021, 1, 6), date(2021, 1, 11), date(2021, 1, 12)]


def segments(train: tuple[date, date], valid: tuple[date, date], test: tuple[date, date]) -> Segments:
    return Segments(
        train=DateRange(start=train[0], end=train[1]),
        valid=DateRange(start=valid[0], end=valid[1]),
        test=DateRange(start=test[0], end=test[1]),
    )


def test_segments_inside_the_calendar_pass() -> None:
    config = load_strategy_config("momentum").with_segments(
        segments(
            (date(2021, 1, 4), date(2021, 1, 4)),
            (date(2021, 1, 6), date(2021, 1, 6)),
            (date(2021, 1, 11), date(2021, 1, 12)),
        )
    )
    check_segments(config, SESSIONS)


def test_every_segment_problem_is_named_with_its_option() -> None:
    config = load_strategy_config("momentum").with_segments(
        segments(
            (date(2020, 12, 1), date(2021, 1, 4)),
            (date(2021, 1, 7), date(2021, 1, 10)),  # inside the range, but no session (holiday + weekend)
            (date(2021, 1, 11), date(2021, 2, 1)),
        )
    )
    with pytest.raises(SegmentError) as caught:
        check_segments(config, SESSIONS)
    message = str(caught.value)
    assert "segments.train.start (2020-12-01) is before the export's first session 2021-01-04" in message
    assert "--train-start 2021-01-04" in message
    assert "segments.valid (2021-01-07 .. 2021-01-10) holds no trading session" in message
    assert "segments.test.end (2021-02-01) is after the export's last session 2021-01-12" in message
    assert "--test-end 2021-01-12" in message
    assert caught.value.exit_code == 2


def test_missing_export_is_not_ready(tmp_path: Path) -> None:
    with pytest.raises(QlibNotReadyError, match="run 'trader research export' first"):
        export_sessions(tmp_path / "qlib")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train-start", "2021-02-30"], "--train-start: '2021-02-30' is not a date"),
        (["--strategy", "nope"], "--strategy: unknown strategy 'nope'"),
        (["--strategy", "missing.yaml"], "--strategy: cannot read strategy config missing.yaml"),
        (["--valid-start", "2022-01-03"], "--valid-start: valid must start after train ends"),
        (["--test-start", "2024-01-02", "--test-end", "2023-12-01"], "--test-start, --test-end: test: start"),
        (["--epochs", "3"], "No such option: --epochs"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    assert run(["research", "train", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert not (tmp_path / "artifacts").exists()


def test_train_without_an_export_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STRATEGY_ID", "momentum")
    assert run(["research", "train"]) == 1
    err = capsys.readouterr().err
    assert f"no Qlib export at {tmp_path / 'data' / 'qlib'}" in err
    assert "trader research export" in err
