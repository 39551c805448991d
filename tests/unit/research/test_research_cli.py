"""``trader research``: every command is built; refusals of backtest and walk-forward (no Qlib needed).

The end-to-end runs are in ``tests/integration/research/test_evaluate.py`` and ``test_walk_forward.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from trader.cli.main import run


def test_research_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["research", "--help"]) == 0
    out = capsys.readouterr().out
    for command in ("export", "train", "backtest", "walk-forward"):
        assert command in out
    assert "not built yet" not in out


@pytest.mark.parametrize("command", ["backtest", "walk-forward"])
def test_backtest_and_walk_forward_are_built(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["research", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "not built yet" not in out
    assert "--strategy" in out


def test_export_without_data_says_how_to_get_some(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert run(["research", "export"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "no adjusted bars in DATA_DIR" in err
    assert "trader data synth" in err
    assert not (tmp_path / "data" / "qlib").exists()  # nothing written on failure


# --------------------------------------------------------------------------------------------------
# trader research backtest: which model, and refusals before any work
# --------------------------------------------------------------------------------------------------

STRATEGY_YAML = """\
name: {name}
kind: momentum
segments:
  train: {{start: 2021-01-04, end: 2021-12-27}}
  valid: {{start: 2021-12-30, end: 2022-03-28}}
  test: {{start: 2022-03-31, end: 2022-06-29}}
"""


def fake_artifact(artifacts: Path, name: str, version: str) -> Path:
    """A minimal complete artifact folder (what ModelArtifact.load needs), written by hand."""
    folder = artifacts / "models" / name / version
    folder.mkdir(parents=True)
    info = {"format": 1, "version": version, "strategy": {"name": name, "kind": "momentum"}}
    (folder / "train.json").write_text(json.dumps(info))
    (folder / "strategy.yaml").write_text(STRATEGY_YAML.format(name=name))
    pl.DataFrame({"date": [], "symbol": [], "score": [], "segment": []}).write_parquet(
        folder / "predictions.parquet"
    )
    return folder


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    return tmp_path


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_backtest_without_a_trained_model_says_to_train_first(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["research", "backtest"]) == 1
    assert "run 'trader research train' first" in one_line_error(capsys)


def test_backtest_of_an_unknown_version_is_bad_usage(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_artifact(env / "artifacts", "momentum", "20240102T000000Z")
    assert run(["research", "backtest", "--strategy", "momentum", "--version", "20991231T000000Z"]) == 2
    err = one_line_error(capsys)
    assert "--version" in err and "20991231T000000Z" in err and "20240102T000000Z" in err


def test_backtest_of_an_untrained_strategy_lists_the_trained_ones(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_artifact(env / "artifacts", "momentum", "20240102T000000Z")
    assert run(["research", "backtest", "--strategy", "alpha_baseline"]) == 2
    err = one_line_error(capsys)
    assert "no trained model 'alpha_baseline'" in err and "trained: momentum" in err


def test_a_version_of_two_models_needs_the_strategy(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_artifact(env / "artifacts", "momentum", "20240102T000000Z")
    fake_artifact(env / "artifacts", "other", "20240102T000000Z")
    assert run(["research", "backtest", "--version", "20240102T000000Z"]) == 2
    assert "exists for momentum, other; choose one with --strategy" in one_line_error(capsys)


def test_backtest_on_a_database_without_the_schema_says_db_upgrade_and_writes_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The version alone finds its model (train prints "next: trader research backtest --version V").
    fake_artifact(env / "artifacts", "other", "20240102T000000Z")
    assert run(["research", "backtest", "--version", "20240102T000000Z"]) == 1
    assert "run 'trader db upgrade'" in one_line_error(capsys)
    assert not (env / "artifacts" / "backtests").exists()


# --------------------------------------------------------------------------------------------------
# trader research walk-forward: refusals before any training
# --------------------------------------------------------------------------------------------------


def fake_export(data_dir: Path, sessions: list[str]) -> None:
    """The two files the window planner reads: the calendar and the export's manifest."""
    qlib = data_dir / "qlib"
    (qlib / "calendars").mkdir(parents=True)
    (qlib / "calendars" / "day.txt").write_text("\n".join(sessions) + "\n")
    (qlib / ".trader-export.json").write_text("{}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--step-months", "3"], "--step-months (3) is shorter than --test-months (6)"),
        (["--train-years", "0"], "--train-years must be at least 1"),
        (["--start", "2024-13-01"], "--start: '2024-13-01' is not a date"),
        (["--start", "2024-06-01", "--end", "2024-01-01"], "--start (2024-06-01) must be before --end"),
        (["--strategy", "nope"], "--strategy: unknown strategy 'nope'"),
    ],
)
def test_walk_forward_refuses_bad_options(
    env: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["research", "walk-forward", *args]) == 2
    assert message in one_line_error(capsys)
    assert not (env / "artifacts").exists()


def test_walk_forward_without_an_export_says_to_export(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["research", "walk-forward"]) == 1
    assert "run 'trader research export' first" in one_line_error(capsys)


def test_walk_forward_on_too_little_data_says_what_a_window_needs(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_export(env / "data", ["2024-01-02", "2024-01-03", "2024-01-04"])
    assert run(["research", "walk-forward", "--train-years", "1"]) == 2
    err = one_line_error(capsys)
    assert "no complete window fits in 2024-01-02 .. 2024-01-04" in err
    assert "= 24 months" in err
    assert not (env / "artifacts").exists()  # nothing created, no MLflow run


def test_train_refuses_a_label_horizon_shorter_than_the_label(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    from trader.strategies.config import load_strategy_config

    data = load_strategy_config("momentum").model_dump(mode="json")
    data["segments"]["label_horizon"] = 1
    path = env / "short.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run(["research", "train", "--strategy", str(path)]) == 2
    err = one_line_error(capsys)
    assert err.startswith("trader: error: --strategy: strategy momentum: segments.label_horizon: 1")
