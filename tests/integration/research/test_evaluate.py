"""``trader research train`` then ``trader research backtest`` end to end on the research test market.

One module fixture runs the two commands the way a user does (environment variables, a database
migrated by ``trader db upgrade``), with a small LightGBM configuration whose promotion thresholds are
set in its YAML so that the gate's verdict is known in advance. The tests read what the commands
wrote: the backtest folder, the model card, the MLflow run, the registry row; then promote the model
through ``trader model promote``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.support.research import ResearchMarket
from trader.cli.main import run
from trader.domain.enums import ModelStage
from trader.research.artifacts import ModelArtifact
from trader.research.leakage import CheckReport
from trader.research.registry import ModelRegistry
from trader.store.db import make_engine
from trader.strategies.config import DateRange, Segments, load_strategy_config

pytestmark = pytest.mark.slow

NAME = "alpha_baseline"
SEGMENTS = Segments(
    train=DateRange(start=date(2021, 1, 4), end=date(2022, 6, 30)),
    valid=DateRange(start=date(2022, 7, 6), end=date(2022, 12, 23)),
    test=DateRange(start=date(2023, 1, 4), end=date(2023, 6, 29)),
)
#: Few, lightly regularised rounds: enough trees on ~7k rows (see tests/integration/research/test_train.py).
SMALL_LGB = {
    "num_boost_round": 20,
    "early_stopping_rounds": 5,
    "learning_rate": 0.1,
    "num_leaves": 31,
    "max_depth": 6,
    "lambda_l1": 1.0,
    "lambda_l2": 10.0,
}
#: Thresholds any finite backtest meets: the gate's verdict then depends on the checks only.
LENIENT = {"min_sharpe": -100.0, "max_drawdown": 1.0, "min_ic": -1.0}
#: A Sharpe no model reaches: promotion is refused with that reason.
STRICT = {"min_sharpe": 100.0, "max_drawdown": 1.0, "min_ic": -1.0}


def write_strategy(path: Path, promotion: dict[str, float]) -> Path:
    base = load_strategy_config(NAME).with_segments(SEGMENTS)
    config = base.model_copy(
        update={
            "lightgbm": base.lightgbm.model_copy(update=SMALL_LGB),
            "portfolio": base.portfolio.model_copy(update={"topk": 5, "n_drop": 1}),
            "promotion": base.promotion.model_copy(update=promotion),
        }
    )
    path.write_text(config.to_yaml())
    return path


@dataclass(frozen=True)
class Evaluated:
    root: Path
    artifacts_dir: Path
    mlflow_uri: str
    database_url: str
    artifact: ModelArtifact
    out_dir: Path
    metrics: dict[str, Any]
    train_out: str
    backtest_out: str


@pytest.fixture(scope="module")
def evaluated(
    research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Evaluated]:
    root = tmp_path_factory.mktemp("evaluate")
    env = {
        "DATA_DIR": str(research_market.data_dir),
        "ARTIFACTS_DIR": str(root / "artifacts"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "DATABASE_URL": f"sqlite:///{root / 'trader.db'}",
    }
    yaml_path = write_strategy(root / "small.yaml", LENIENT)
    outputs: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for key, value in env.items():
            patch.setenv(key, value)
        assert run(["db", "upgrade"]) == 0
        for argv in (["research", "train", "--strategy", str(yaml_path)], None):
            if argv is None:  # the backtest, found by the version alone (as train's "next:" line says)
                artifact = ModelArtifact.find(root / "artifacts", NAME)
                argv = ["research", "backtest", "--version", artifact.version]
            outputs.append(_run_captured(argv))
    (out_dir,) = (root / "artifacts" / "backtests").iterdir()
    metrics = json.loads((out_dir / "metrics.json").read_text())
    yield Evaluated(
        root,
        root / "artifacts",
        env["MLFLOW_TRACKING_URI"],
        env["DATABASE_URL"],
        ModelArtifact.find(root / "artifacts", NAME),
        out_dir,
        metrics,
        outputs[0],
        outputs[1],
    )


def _run_captured(argv: list[str]) -> str:
    """Run the CLI with stdout captured (a module fixture cannot use capsys)."""
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):  # the CLI's rich console writes to the current sys.stdout
        code = run(argv)
    text = buffer.getvalue()
    assert code == 0, f"trader {' '.join(argv)} exited {code}:\n{text}"
    return text


def test_backtest_folder_holds_report_checks_and_card(evaluated: Evaluated) -> None:
    artifact, out_dir = evaluated.artifact, evaluated.out_dir
    assert out_dir.name.startswith(f"{NAME}-{artifact.version}-")
    assert re.fullmatch(rf"{NAME}-{artifact.version}-\d{{8}}T\d{{6}}Z", out_dir.name)
    for name in ("metrics.json", "positions.csv", "trades.csv", "equity.csv", "report.html", "checks.json"):
        assert (out_dir / name).is_file(), name
    html = (out_dir / "report.html").read_text()
    plots = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(plots) == 3 and all(base64.b64decode(p).startswith(b"\x89PNG") for p in plots)

    report = CheckReport.load(out_dir / "checks.json")
    assert report.passed
    assert [c.name for c in report.results] == [
        "segments_disjoint_with_gap",
        "labels_not_in_features",
        "features_point_in_time",
        "universe_point_in_time",
    ]
    assert "158 features unchanged" in report.results[2].detail  # Alpha158's expressions were perturbed


def test_numbers_are_sane(evaluated: Evaluated) -> None:
    summary, scenarios = evaluated.metrics["summary"], evaluated.metrics["scenarios"]
    assert evaluated.metrics["inputs"]["period"]["start"] == "2023-01-04"
    assert math.isfinite(summary["ic"]) and -1 < summary["ic"] < 1
    assert math.isfinite(summary["rank_ic"]) and summary["ic_days"] > 100

    def total(label: str) -> float:
        return float(scenarios[label]["after_costs"]["total_return"])

    assert total("no_cost") > total("base")  # costs reduce the return
    assert total("slippage_x3") < total("base")  # three times the slippage lowers it further
    assert total("fees_x2") < total("base")
    assert summary["total_costs"] > 0
    assert summary["sharpe"] == pytest.approx(scenarios["base"]["after_costs"]["sharpe"])
    # The IC of the backtest is the IC training measured on the same test scores (one implementation).
    trained_ic = evaluated.artifact.ic("test")
    assert summary["ic"] == pytest.approx(trained_ic.ic, abs=1e-9)
    assert summary["rank_ic"] == pytest.approx(trained_ic.rank_ic, abs=1e-9)


def test_model_card_in_the_artifact_and_its_snapshot(evaluated: Evaluated) -> None:
    artifact, summary = evaluated.artifact, evaluated.metrics["summary"]
    card = (artifact.path / "MODEL_CARD.md").read_text()
    assert (evaluated.out_dir / "MODEL_CARD.md").read_text() == card
    assert (artifact.path / "model_card.json").is_file()
    assert f"| MLflow run id | {artifact.mlflow_run_id} |" in card
    assert f"| Sharpe ratio | {summary['sharpe']:.3f} |" in card
    assert f"| IC (mean daily) | {summary['ic']:.4f} |" in card
    assert f"| Max drawdown | {summary['max_drawdown'] * 100:.2f}% |" in card
    assert "| slippage_x3 |" in card and "| fees_x2 |" in card
    assert "4/4 checks passed (all passed)" in card
    assert "**pending**: not yet reviewed. Release gate preview" in card
    assert "would pass (4/4 checks passed; sharpe" in card
    assert "### Top 20 by importance" in card and "No importance recorded" not in card
    # The artifact is still a complete, loadable artifact.
    assert ModelArtifact.load(artifact.path).version == artifact.version


def test_mlflow_run_holds_the_backtest(evaluated: Evaluated) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=evaluated.mlflow_uri)
    run_id = evaluated.artifact.mlflow_run_id
    assert run_id is not None
    logged = client.get_run(run_id)
    summary = evaluated.metrics["summary"]
    assert logged.data.metrics["backtest.sharpe"] == pytest.approx(summary["sharpe"])
    assert logged.data.metrics["backtest.ic"] == pytest.approx(summary["ic"])
    base_return = evaluated.metrics["scenarios"]["slippage_x3"]["after_costs"]["annualized_return"]
    assert logged.data.metrics["backtest.slippage_x3.after_costs.annualized_return"] == pytest.approx(
        base_return
    )
    assert logged.data.metrics["checks.passed"] == 1.0
    assert logged.data.metrics["gate.would_pass"] == 1.0
    assert logged.data.metrics["ic.test"] == pytest.approx(
        evaluated.artifact.ic("test").ic
    )  # training's, kept
    assert logged.data.tags["trader.checks"] == "passed"
    assert logged.data.tags["trader.backtest"] == str(evaluated.out_dir.resolve())
    root = {Path(f.path).name for f in client.list_artifacts(run_id)}
    assert {"model", "backtests", "MODEL_CARD.md"} <= root
    files = {Path(f.path).name for f in client.list_artifacts(run_id, f"backtests/{evaluated.out_dir.name}")}
    assert {"report.html", "metrics.json", "checks.json", "MODEL_CARD.md", "trades.csv"} <= files


def test_registry_row_is_staging_with_metrics_and_checks(evaluated: Evaluated) -> None:
    engine = make_engine(evaluated.database_url)
    try:
        entry = ModelRegistry(engine).get(NAME, evaluated.artifact.version)
    finally:
        engine.dispose()
    summary = evaluated.metrics["summary"]
    assert entry.stage is ModelStage.STAGING
    assert entry.artifact_uri == str(evaluated.artifact.path.resolve())
    assert entry.mlflow_run_id == evaluated.artifact.mlflow_run_id
    assert entry.metric("sharpe") == pytest.approx(summary["sharpe"])
    assert entry.metric("ic") == pytest.approx(summary["ic"])
    assert entry.metric("turnover") == pytest.approx(summary["mean_daily_turnover"])
    assert entry.metrics["slippage_x3.annualized_return"] == pytest.approx(
        evaluated.metrics["scenarios"]["slippage_x3"]["after_costs"]["annualized_return"]
    )
    assert entry.checks_passed is True and len(entry.checks["checks"]) == 4


def test_command_output_names_everything(evaluated: Evaluated) -> None:
    out, artifact = evaluated.backtest_out, evaluated.artifact
    for stage in ("backtest", "checks", "card", "log", "register"):
        assert re.search(rf"^\s+{stage}\s+\d+\.\ds$", out, re.MULTILINE), stage
    for scenario in ("no_cost", "base", "slippage_x3", "fees_x2"):
        assert scenario in out
    assert "checks: passed: 4/4 checks passed" in out
    assert f"report: {evaluated.out_dir / 'report.html'}" in out
    assert f"model card: {artifact.path / 'MODEL_CARD.md'}" in out
    assert f"MLflow run: {artifact.mlflow_run_id}" in out
    assert f"registry: {NAME} {artifact.version} is staging" in out
    assert "release gate preview: would pass" in out
    assert f"next: trader model promote {NAME} {artifact.version} --to production" in out


def test_promote_refused_by_strict_thresholds_then_approved(
    evaluated: Evaluated, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", evaluated.database_url)
    version = evaluated.artifact.version
    strict = write_strategy(evaluated.root / "strict.yaml", STRICT)
    assert run(["model", "promote", NAME, version, "--to", "production", "--config", str(strict)]) == 1
    out = capsys.readouterr().out
    assert f"REFUSED: {NAME} {version} stays staging" in out
    assert "is below the minimum 100" in out
    # The model's own strategy.yaml has the lenient thresholds: promotion passes.
    assert run(["model", "promote", NAME, version, "--to", "production", "--by", "tester"]) == 0
    assert f"APPROVED: {NAME} {version} is now in production" in capsys.readouterr().out
    card = (evaluated.artifact.path / "MODEL_CARD.md").read_text()
    assert "**approved**: approved by tester" in card


def test_evaluating_a_production_model_again_keeps_its_stage_and_decision(
    evaluated: Evaluated, research_market: ResearchMarket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs after the promotion above (tests run in file order).
    for key, value in {
        "DATA_DIR": str(research_market.data_dir),
        "ARTIFACTS_DIR": str(evaluated.artifacts_dir),
        "MLFLOW_TRACKING_URI": evaluated.mlflow_uri,
        "DATABASE_URL": evaluated.database_url,
    }.items():
        monkeypatch.setenv(key, value)
    version = evaluated.artifact.version
    out = _run_captured(["research", "backtest"])  # STRATEGY_ID's latest version: the same model
    assert f"registry: {NAME} {version} is production" in out
    assert len(list((evaluated.artifacts_dir / "backtests").iterdir())) == 2
    card = (evaluated.artifact.path / "MODEL_CARD.md").read_text()
    assert "**approved**: approved by tester" in card  # a decision taken is not reset to pending
    assert "re-evaluated at" in card and "would pass" in card
