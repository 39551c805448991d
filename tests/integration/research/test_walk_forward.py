"""``trader research walk-forward`` end to end on the research test market: two quarterly windows of the
momentum strategy, each trained and backtested, tracked as child runs of one MLflow run."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support.research import ResearchMarket
from trader.cli.main import run
from trader.research.artifacts import ModelArtifact, list_versions
from trader.research.walk_forward import WINDOW_METRICS
from trader.strategies.config import DateRange, PortfolioRule, Segments, load_strategy_config

pytestmark = pytest.mark.slow

ARGS = ["--train-years", "1", "--valid-months", "3", "--test-months", "3", "--step-months", "3"]
START = "2022-01-03"  # leaves room for exactly two windows before the market's last session


@dataclass(frozen=True)
class WalkedForward:
    root: Path
    out_dir: Path
    document: dict[str, Any]
    output: str
    mlflow_uri: str
    sessions: list[date]


def walk_forward(research_market: ResearchMarket, root: Path, *options: str) -> WalkedForward:
    """``trader research walk-forward`` of the momentum strategy with :data:`ARGS` and ``options``."""
    placeholder = Segments(  # replaced by each window's
        train=DateRange(start=date(2021, 1, 4), end=date(2021, 12, 27)),
        valid=DateRange(start=date(2021, 12, 30), end=date(2022, 3, 28)),
        test=DateRange(start=date(2022, 3, 31), end=date(2022, 6, 29)),
    )
    config = load_strategy_config("momentum").with_segments(placeholder)
    config = config.model_copy(update={"portfolio": PortfolioRule(topk=5, n_drop=1)})
    (root / "momentum.yaml").write_text(config.to_yaml())
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("DATA_DIR", str(research_market.data_dir))
        patch.setenv("ARTIFACTS_DIR", str(root / "artifacts"))
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        argv = [
            "research",
            "walk-forward",
            "--strategy",
            str(root / "momentum.yaml"),
            *ARGS,
            "--start",
            START,
            *options,
        ]
        with contextlib.redirect_stdout(buffer):
            code = run(argv)
    assert code == 0, buffer.getvalue()
    (out_dir,) = (root / "artifacts" / "walk_forward").iterdir()
    document = json.loads((out_dir / "walk_forward.json").read_text())
    calendar = (research_market.provider_uri / "calendars" / "day.txt").read_text().split()
    return WalkedForward(
        root, out_dir, document, buffer.getvalue(), mlflow_uri, [date.fromisoformat(d) for d in calendar]
    )


@pytest.fixture(scope="module")
def walked(research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory) -> WalkedForward:
    return walk_forward(research_market, tmp_path_factory.mktemp("walk_forward"))


def span(pair: list[str]) -> tuple[date, date]:
    return date.fromisoformat(pair[0]), date.fromisoformat(pair[1])


def test_two_windows_whose_tests_do_not_overlap(walked: WalkedForward) -> None:
    windows = walked.document["windows"]
    assert [w["window"] for w in windows] == [1, 2]
    tests = [span(w["test"]) for w in windows]
    assert tests[0][1] < tests[1][0]  # no overlap, in time order
    assert tests[1][1] == walked.sessions[-1]  # the last window tests up to the newest session
    for window in windows:
        train, valid, test = span(window["train"]), span(window["valid"]), span(window["test"])
        assert train[1] < valid[0] and valid[1] < test[0]
        assert sum(1 for d in walked.sessions if valid[1] < d < test[0]) == 2  # the label horizon
        assert train[0] >= date.fromisoformat(START)
        assert window["test_sessions"] == sum(1 for d in walked.sessions if test[0] <= d <= test[1])


def test_each_window_has_finite_out_of_sample_metrics(walked: WalkedForward) -> None:
    for window in walked.document["windows"]:
        metrics = window["metrics"]
        assert set(metrics) == set(WINDOW_METRICS)
        assert math.isfinite(metrics["ic"]) and -1 < metrics["ic"] < 1
        assert math.isfinite(metrics["rank_ic"])
        assert -1 <= metrics["max_drawdown"] <= 0
        assert metrics["turnover"] > 0
        # The window's model was trained on its own segments, and the backtest's IC equals the IC
        # measured when training (the same scores, one IC implementation).
        artifact = ModelArtifact.load(Path(window["artifact"]))
        assert list(artifact.config().segments.test.as_tuple()) == window["test"]
        assert artifact.ic("test").ic == pytest.approx(metrics["ic"], abs=1e-9)
        backtest = json.loads((Path(window["backtest"]) / "metrics.json").read_text())
        assert backtest["summary"]["sharpe"] == pytest.approx(metrics["sharpe"])
        assert list(backtest["scenarios"]) == ["base"]  # the base costs only


def test_summary_is_the_mean_over_windows(walked: WalkedForward) -> None:
    windows, summary = walked.document["windows"], walked.document["summary"]
    assert summary["windows"] == 2
    for name in WINDOW_METRICS:
        values = [w["metrics"][name] for w in windows]
        assert summary[f"{name}.mean"] == pytest.approx(statistics.fmean(values))
        assert summary[f"{name}.std"] == pytest.approx(statistics.stdev(values))
    assert summary["ic_positive_share"] == pytest.approx(sum(w["metrics"]["ic"] > 0 for w in windows) / 2)


def test_files_and_where_the_models_went(walked: WalkedForward) -> None:
    out = walked.out_dir
    assert out.name.startswith("momentum-")
    for name in ("walk_forward.json", "windows.csv", "report.md"):
        assert (out / name).is_file(), name
    for index in ("01", "02"):
        for name in ("metrics.json", "report.html", "positions.csv", "trades.csv", "equity.csv"):
            assert (out / "windows" / index / name).is_file()
    with (out / "windows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["ic"]) for r in rows] == pytest.approx(
        [w["metrics"]["ic"] for w in walked.document["windows"]]
    )
    report = (out / "report.md").read_text()
    assert "| **mean** |" in report and "Windows with IC > 0:" in report
    # Window models live in the walk-forward folder, not among the candidates of 'research backtest'.
    assert list_versions(walked.root / "artifacts", "momentum") == []
    assert len(list_versions(out, "momentum")) == 2
    assert "window 2/2" in walked.output
    assert f"report: {out / 'report.md'}" in walked.output


def test_one_parent_mlflow_run_with_a_child_per_window(walked: WalkedForward) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=walked.mlflow_uri)
    experiment = client.get_experiment_by_name("momentum")
    assert experiment is not None
    parent_id = walked.document["mlflow_parent_run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["trader.stage"] == "walk_forward"
    assert parent.data.metrics["ic.mean"] == pytest.approx(walked.document["summary"]["ic.mean"])
    assert len(client.get_metric_history(parent_id, "window.ic")) == 2
    logged = {Path(f.path).name for f in client.list_artifacts(parent_id, "walk_forward")}
    assert logged == {"walk_forward.json", "windows.csv", "report.md"}
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    by_window = {int(r.data.tags["trader.walk_forward.window"]): r for r in children}
    assert sorted(by_window) == [1, 2]
    for window in walked.document["windows"]:
        child = by_window[window["window"]]
        assert child.info.run_id == window["mlflow_run_id"]
        assert child.info.run_name == f"walk-forward-momentum-window-{window['window']:02d}"
        assert child.data.metrics["backtest.ic"] == pytest.approx(window["metrics"]["ic"])
        assert child.data.params["segments.test.start"] == window["test"][0]
    # The experiment keeps its artifacts under ARTIFACTS_DIR/mlruns, not in the walk-forward folder.
    assert experiment.artifact_location.startswith((walked.root / "artifacts" / "mlruns").resolve().as_uri())


def test_expanding_windows_train_on_all_history_and_test_like_rolling_ones(
    walked: WalkedForward, research_market: ResearchMarket, tmp_path: Path
) -> None:
    grown = walk_forward(research_market, tmp_path, "--expanding")
    assert grown.document["spec"]["expanding"] is True and walked.document["spec"]["expanding"] is False
    first = min(d for d in grown.sessions if d >= date.fromisoformat(START))
    rolled_windows = walked.document["windows"]
    for window, rolled in zip(grown.document["windows"], rolled_windows, strict=True):
        assert span(window["train"])[0] == first  # every window trains from the first usable session
        assert window["train"][1] == rolled["train"][1]
        assert (window["valid"], window["test"]) == (rolled["valid"], rolled["test"])
        artifact = ModelArtifact.load(Path(window["artifact"]))
        assert artifact.config().segments.train.start == first
    # Rolling windows leave out what lies before their last --train-years; expanding ones use it.
    assert span(rolled_windows[0]["train"])[0] > first
    assert span(rolled_windows[1]["train"])[0] > span(rolled_windows[0]["train"])[0]
    assert "expanding windows of at least 1 year(s) train" in (grown.out_dir / "report.md").read_text()
