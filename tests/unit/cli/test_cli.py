"""The command line: help everywhere, one-line errors with exit code 2, honest 'not built yet'."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from trader import __version__
from trader.cli.main import app, run

REQUIRED_GROUPS = {
    "db",
    "data",
    "research",
    "model",
    "signal",
    "paper-run",
    "replay",
    "serve",
    "status",
    "circuit",
    "kill",
    "report",
}


def _command_paths() -> Iterator[list[str]]:
    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"trader {__version__}"


def test_every_required_group_exists() -> None:
    top_level = {path[0] for path in _command_paths() if len(path) == 1}
    assert top_level >= REQUIRED_GROUPS


@pytest.mark.parametrize("path", list(_command_paths()), ids=lambda p: " ".join(p) or "trader")
def test_help_everywhere(path: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    assert f"trader {' '.join(path)}".strip() in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["no-such-command"], "No such command 'no-such-command'"),
        (["db", "upgrade", "--bogus"], "No such option: --bogus"),
        (["db", "downgrade"], "Missing argument 'revision'"),
        (["db", "nothing"], "No such command 'nothing'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("trader: error: ")
    assert expected in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_no_arguments_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 2
    assert "Usage:" in capsys.readouterr().out


def test_bad_configuration_gives_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRY_RUN", "maybe")
    assert run(["db", "current"]) == 2
    err = capsys.readouterr().err
    assert "DRY_RUN:" in err
    assert err.count("\n") == 1


def test_config_show_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", "do-not-print-me")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db/trader")
    assert run(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "do-not-print-me" not in out
    assert "hunter2" not in out
    assert "ALPACA_API_SECRET_KEY" in out
    assert "DRY_RUN" in out


def test_config_check_reports_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config", "check"]) == 0
    assert "configuration OK - broker mode: paper; DRY_RUN on" in capsys.readouterr().out


def test_downgrade_asks_and_aborts_without_yes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    assert run(["db", "upgrade"]) == 0
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("n\n"))
    assert run(["db", "downgrade", "base"]) == 1
    assert run(["db", "current"]) == 0


def test_internal_errors_are_logged_not_shown(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def explode() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("trader.cli.config_cmd.load_settings", explode)
    assert run(["config", "check"]) == 1
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: boom)" in err
    assert "Traceback" not in err
    log = (tmp_path / "var" / "log" / "trader-errors.log").read_text()
    assert "Traceback" in log
    assert "RuntimeError: boom" in log


def test_installed_entry_point_runs() -> None:
    script = Path(sys.executable).parent / "trader"
    result = subprocess.run([str(script), "kill"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith("trader: error: Missing option '--reason'")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"trader {__version__}"
