"""``trader research``: a real group whose export command exists and whose other commands are honest."""

from __future__ import annotations

from pathlib import Path

import pytest

from trader.cli.main import run
from trader.cli.planned import RESEARCH_PLANNED


@pytest.mark.parametrize("item", RESEARCH_PLANNED, ids=lambda p: p.name)
def test_planned_research_commands_say_not_built_and_exit_3(
    item: object, capsys: pytest.CaptureFixture[str]
) -> None:
    name = item.name  # type: ignore[attr-defined]
    assert run([*name.split(), "--some-flag", "x"]) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert f"'trader {name}' is not built yet" in captured.err


def test_research_lists_export_and_the_planned_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["research", "--help"]) == 0
    out = capsys.readouterr().out
    for command in ("export", "train", "backtest", "walk-forward"):
        assert command in out


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
