"""The command line: help everywhere, one-line errors with exit code 2, honest 'not built yet'."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from trader import __version__
from trader.cli.main import app, mask_argv, run

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


def test_config_check_refuses_the_live_host_with_a_trailing_dot(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://api.alpaca.markets.")
    monkeypatch.setenv("DRY_RUN", "false")
    assert run(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "ALPACA_BASE_URL" in err
    assert "ALLOW_LIVE_TRADING=true" in err
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")
    assert run(["config", "check"]) == 0
    assert "broker mode: LIVE (real money)" in capsys.readouterr().out


def test_config_check_names_an_unknown_host_as_live(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://broker.example.com")
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")
    assert run(["config", "check"]) == 0
    out = capsys.readouterr().out
    assert "LIVE" in out
    assert "broker.example.com" in out


def test_config_show_masks_url_credentials_and_query_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "http://user:basePASS1@127.0.0.1:8765")
    monkeypatch.setenv("ALPACA_DATA_URL", "http://user:dataPASS1@127.0.0.1:8766")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0?password=redisPASS1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db?password=dbPASS1")
    assert run(["config", "show"]) == 0
    out = capsys.readouterr().out
    for secret in ("basePASS1", "dataPASS1", "redisPASS1", "dbPASS1"):
        assert secret not in out


def test_db_error_masks_a_query_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/db?password=queryPASS1")
    assert run(["db", "current"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the database" in err
    assert "queryPASS1" not in err
    assert "password=***" in err


def test_bad_dotenv_line_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_text('MAX_ORDER_NOTIONAL="500\nDAILY_LOSS_LIMIT=100\n')
    assert run(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trader: error: ")
    assert ".env" in err
    assert "line 1" in err
    assert err.count("\n") == 1


def test_dotenv_with_invalid_utf8_gives_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".env").write_bytes(b"A=\xff\xfe\n")
    assert run(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert ".env" in err
    assert "UTF-8" in err
    assert "internal error" not in err


def test_crash_log_masks_passwords_on_the_command_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def explode() -> None:
        raise RuntimeError("boom postgresql://postgres:excPASSWORD1@127.0.0.1:5999/x")

    monkeypatch.setattr("trader.cli.serve.load_settings", explode)
    args = ["serve", "paper-broker", "--port", "8811", "--database-url"]
    assert run([*args, "postgresql://postgres:argvPASSWORD1@127.0.0.1:5999/x"]) == 1
    assert run([*args[:-1], "--database-url=postgresql://postgres:argvPASSWORD2@127.0.0.1:5999/x"]) == 1
    err = capsys.readouterr().err
    assert "excPASSWORD1" not in err
    log = (tmp_path / "var" / "log" / "trader-errors.log").read_text()
    assert "RuntimeError" in log
    assert "paper-broker --port 8811 --database-url postgresql://postgres:***@127.0.0.1:5999/x" in log
    for secret in ("argvPASSWORD1", "argvPASSWORD2", "excPASSWORD1"):
        assert secret not in log


def test_mask_argv_hides_url_passwords_and_secret_options() -> None:
    args = [
        "x",
        "--url",
        "redis://h/0?password=p1",
        "--api-key",
        "k1",
        "--token=t1",
        "--db=mysql://u:p/2@h/d",
    ]
    assert mask_argv(args) == [
        "x",
        "--url",
        "redis://h/0?password=***",
        "--api-key",
        "***",
        "--token=***",
        "--db=mysql://***",
    ]
