"""``trader model``: list, show, promote (exit 1 when refused, 2 for bad usage), rollback; on a
migrated SQLite file named by DATABASE_URL."""

from __future__ import annotations

import getpass
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.checks import all_passed
from trader.cli.main import run
from trader.research.leakage import FEATURES_CHECK
from trader.research.model_card import ModelCardData, write_model_card
from trader.research.registry import ModelRegistry
from trader.store.db import make_engine
from trader.strategies.config import PromotionThresholds, load_strategy_config

NAME = "alpha_baseline"
PASSED = all_passed()
LEAKY = all_passed(failed={FEATURES_CHECK: "TOMORROW leaks"})
GOOD = {"sharpe": 1.25, "max_drawdown": -0.1, "ic": 0.031, "turnover": 0.2, "annualized_return": 0.154}


@pytest.fixture
def registry(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelRegistry:
    db = tmp_path / "trader.db"
    shutil.copyfile(sqlite_template, db)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    return ModelRegistry(make_engine(f"sqlite:///{db}"))


def artifact(tmp_path: Path, version: str, *, min_sharpe: float | None = None, card: bool = False) -> str:
    """An artifact folder, with the strategy.yaml training writes and optionally a model card."""
    folder = tmp_path / "artifacts" / NAME / version
    folder.mkdir(parents=True)
    config = load_strategy_config(NAME)
    if min_sharpe is not None:
        config = config.model_copy(update={"promotion": PromotionThresholds(min_sharpe=min_sharpe)})
    (folder / "strategy.yaml").write_text(config.to_yaml())
    if card:
        data = ModelCardData(
            model_name=NAME, version=version, created_at=datetime.now(UTC), segments=config.segments
        )
        write_model_card(folder / "MODEL_CARD.md", data)
    return str(folder)


def test_list_empty_then_a_table_and_json(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["model", "list"]) == 0
    assert "no models registered" in capsys.readouterr().out

    registry.register(NAME, "v1", artifact(tmp_path, "v1"), "run-1", GOOD, PASSED)
    registry.register(NAME, "v2", artifact(tmp_path, "v2"), "run-2", GOOD, LEAKY)
    registry.register("momentum", "m1", "/elsewhere/m1", None, {"sharpe": 0.2}, None)
    assert run(["model", "list"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[1]: line.split()
        for line in out.splitlines()
        if line.strip().startswith((NAME, "momentum"))
    }
    assert rows["v1"][:8] == [NAME, "v1", "staging", "1.250", "-10.0%", "0.031", "15.4%", "passed"]
    assert rows["v2"][7] == "FAILED" and rows["m1"][-4] == "none"

    assert run(["model", "list", "--name", NAME, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(e["version"], e["stage"], e["checks_passed"]) for e in listed] == [
        ("v1", "staging", True),
        ("v2", "staging", False),
    ]
    assert listed[0]["metrics"]["sharpe"] == 1.25


def test_promote_refused_prints_reasons_and_exits_1(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.register(NAME, "v2", artifact(tmp_path, "v2", card=True), "run-2", GOOD, LEAKY)
    assert run(["model", "promote", NAME, "v2", "--to", "production", "--by", "alice"]) == 1
    out = capsys.readouterr().out
    assert f"REFUSED: {NAME} v2 stays staging" in out
    assert "  - leakage checks failed: features_point_in_time: TOMORROW leaks" in out
    entry = registry.get(NAME, "v2")
    assert entry.stage.value == "staging" and (entry.decision_reason or "").startswith("refused by alice")
    card = (tmp_path / "artifacts" / NAME / "v2" / "MODEL_CARD.md").read_text()
    assert "**refused**: leakage checks failed: features_point_in_time: TOMORROW leaks" in card


def test_thresholds_come_from_the_models_own_strategy_yaml(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = artifact(tmp_path, "v1", min_sharpe=2.0)  # stricter than the built-in strategy's 0.0
    registry.register(NAME, "v1", folder, "run-1", GOOD, PASSED)
    assert run(["model", "promote", NAME, "v1", "--to", "production"]) == 1
    out = capsys.readouterr().out
    assert f"thresholds from {folder}/strategy.yaml" in out
    assert "sharpe 1.25 is below the minimum 2" in out
    # --config overrides it with the built-in strategy's thresholds.
    assert run(["model", "promote", NAME, "v1", "--to", "production", "--config", NAME]) == 0
    assert "thresholds from --config alpha_baseline" in capsys.readouterr().out


def test_promote_then_rollback(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for version in ("v1", "v2"):
        registry.register(
            NAME, version, artifact(tmp_path, version, card=True), f"run-{version}", GOOD, PASSED
        )
    assert run(["model", "promote", NAME, "v1", "--to", "production", "--by", "alice"]) == 0
    out = capsys.readouterr().out
    assert f"APPROVED: {NAME} v1 is now in production\n" in out
    assert "approved by alice at" in out and "4/4 checks passed; sharpe 1.25 >= 0" in out

    assert run(["model", "promote", NAME, "v2", "--to", "production"]) == 0  # --by: the OS user
    assert f"APPROVED: {NAME} v2 is now in production; v1 archived" in capsys.readouterr().out
    assert registry.get(NAME, "v2").approved_by == getpass.getuser()
    assert "**approved**: approved by" in (tmp_path / "artifacts" / NAME / "v2" / "MODEL_CARD.md").read_text()

    assert run(["model", "rollback", NAME, "--by", "carol"]) == 0
    assert f"ROLLED BACK: {NAME} v1 is in production again; v2 archived" in capsys.readouterr().out
    assert registry.production_version(NAME) == "v1"
    assert (
        "**rolled_back**: rolled back by carol"
        in (tmp_path / "artifacts" / NAME / "v2" / "MODEL_CARD.md").read_text()
    )

    assert run(["model", "rollback", NAME]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "no earlier approved version exists to roll back to" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model", "promote", NAME, "v9", "--to", "production"], "alpha_baseline has no version 'v9'"),
        (["model", "promote", "nope", "1", "--to", "production"], "no model named 'nope'"),
        (["model", "promote", NAME, "v1", "--to", "staging"], "--to staging: only promotion to 'production'"),
        (["model", "promote", NAME, "v1"], "Missing option '--to'"),
        (
            ["model", "promote", NAME, "v1", "--to", "production", "--config", "/nonexistent/x.yaml"],
            "--config: cannot read strategy config /nonexistent/x.yaml",
        ),
        (
            ["model", "promote", NAME, "v1", "--to", "production", "--config", "nosuchbuiltin"],
            "--config: unknown strategy 'nosuchbuiltin'",
        ),
        (["model", "show", NAME, "v9"], "alpha_baseline has no version 'v9'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    registry: ModelRegistry, tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.register(NAME, "v1", artifact(tmp_path, "v1"), "run-1", GOOD, PASSED)
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert registry.get(NAME, "v1").stage.value == "staging"


def test_show_prints_the_row_checks_and_the_model_card(
    registry: ModelRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = artifact(tmp_path, "v1", card=True)
    registry.register(NAME, "v1", folder, "run-1", GOOD, LEAKY)
    assert run(["model", "show", NAME, "v1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["model_card"] == f"{folder}/MODEL_CARD.md"
    assert shown["checks"]["checks"][2] == {
        "name": FEATURES_CHECK,
        "passed": False,
        "detail": "TOMORROW leaks",
    }
    assert run(["model", "show", NAME, "v1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3/4 checks passed; failed: features_point_in_time" in out
    assert "features_point_in_time │ FAIL │ TOMORROW leaks" in out
    assert "MODEL_CARD.md" in out and "run-1" in out


def test_an_unmigrated_database_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert run(["model", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run 'trader db upgrade'" in err
