"""``trader circuit ...``, ``trader kill`` refusals and ``trader status`` on a SQLite database (no Redis).

The breaker's recovery rules are tested on both stores in tests/integration/ops; here: the commands,
their output and exit codes.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from trader.cli.main import run
from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import AuditLog, CircuitBreakerState


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'trader.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    # Nothing listens here: a command that needs the broker fails fast instead of finding one.
    monkeypatch.setenv("ALPACA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("BROKER_MAX_RETRIES", "0")
    monkeypatch.setenv("BROKER_TIMEOUT_SECONDS", "1")
    eng = make_engine(url)
    migrate.upgrade(eng)
    return eng


def audit(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        rows = session.execute(select(AuditLog.action, AuditLog.actor, AuditLog.reason).order_by(AuditLog.id))
        return [tuple(row) for row in rows]  # type: ignore[misc]


def age_the_trip(engine: Engine, minutes: int) -> None:
    """Pretend the trip (and any approval) happened ``minutes`` earlier."""
    with Session(engine) as session, session.begin():
        row = session.get(CircuitBreakerState, "global")
        assert row is not None
        session.execute(
            update(CircuitBreakerState).values(
                changed_at=row.changed_at - timedelta(minutes=minutes),
                approved_at=None if row.approved_at is None else row.approved_at - timedelta(minutes=minutes),
            )
        )


def test_trip_approve_clear_round_trip(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["circuit", "status"]) == 0
    assert "OPEN" in capsys.readouterr().out

    assert run(["circuit", "trip", "--reason", "broker maintenance", "--actor", "alice"]) == 0
    assert "TRIPPED: manual: broker maintenance" in capsys.readouterr().out
    assert run(["circuit", "status"]) == 0
    out = capsys.readouterr().out
    assert "BLOCKED (exits allowed)" in out and "manual: broker maintenance" in out

    # Clear before approval: refused, exit 1, says what is missing.
    assert run(["circuit", "clear", "--actor", "alice"]) == 1
    err = capsys.readouterr().err
    assert "no approval since the trip" in err and "quiet period" in err

    assert run(["circuit", "approve", "--actor", "bob", "--note", "done"]) == 0
    assert "recovery approved by bob" in capsys.readouterr().out
    # Approved but the 15-minute quiet period has not passed.
    assert run(["circuit", "clear", "--actor", "bob"]) == 1
    err = capsys.readouterr().err
    assert "quiet period:" in err and "left of 15m00s" in err and "approval" not in err
    age_the_trip(engine, 16)
    assert run(["circuit", "clear", "--actor", "bob"]) == 0
    assert "OPEN" in capsys.readouterr().out
    assert audit(engine) == [
        ("circuit.trip", "alice", "manual: broker maintenance"),
        ("circuit.approve", "bob", "done"),
        ("circuit.clear", "bob", "manual: broker maintenance"),
    ]


def test_the_quiet_period_refusal_names_the_time_left(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["circuit", "trip", "--reason", "x", "--actor", "a"]) == 0
    assert run(["circuit", "approve", "--actor", "b"]) == 0
    age_the_trip(engine, 10)
    capsys.readouterr()
    assert run(["circuit", "clear", "--actor", "b"]) == 1
    err = capsys.readouterr().err
    assert "trader: error: cannot clear the circuit breaker: quiet period: 4m" in err
    assert run(["circuit", "clear", "--actor", "b", "--quiet-minutes", "5"]) == 0


def test_approve_when_open_is_refused(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["circuit", "approve"]) == 1
    assert "nothing to approve: the circuit breaker is OPEN" in capsys.readouterr().err
    assert audit(engine) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["circuit", "trip"],
        ["circuit", "trip", "--reason", "  "],
        ["circuit", "clear", "--quiet-minutes", "-1"],
        ["kill", "--yes"],
        ["kill", "--reason", "", "--yes"],
        ["circuit", "bogus"],
    ],
    ids=["trip-no-reason", "trip-blank-reason", "negative-quiet", "kill-no-reason", "kill-blank", "bogus"],
)
def test_usage_errors_exit_2(engine: Engine, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(argv) == 2
    assert "trader: error:" in capsys.readouterr().err
    assert audit(engine) == []


@pytest.mark.parametrize("minutes", ["nan", "inf", "-inf", "1e300", "1440.5", "-1"])
def test_a_quiet_period_outside_0_to_1440_minutes_is_a_usage_error(
    engine: Engine, minutes: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["circuit", "trip", "--reason", "x", "--actor", "a"]) == 0
    capsys.readouterr()
    assert run(["circuit", "clear", "--actor", "b", "--quiet-minutes", minutes]) == 2
    err = capsys.readouterr().err
    assert "--quiet-minutes:" in err and "use 0 to 1440 minutes" in err and "internal error" not in err
    assert [row[0] for row in audit(engine)] == ["circuit.trip"]


def test_the_quiet_period_bounds_are_accepted(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["circuit", "trip", "--reason", "x", "--actor", "a"]) == 0
    assert run(["circuit", "approve", "--actor", "b"]) == 0
    assert run(["circuit", "clear", "--actor", "b", "--quiet-minutes", "1440"]) == 1  # a day: not yet
    assert "left of 1440m00s" in capsys.readouterr().err
    assert run(["circuit", "clear", "--actor", "b", "--quiet-minutes", "0"]) == 0


def test_kill_asks_first_and_a_no_changes_nothing(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert run(["kill", "--reason", "test"]) == 1
    captured = capsys.readouterr()
    assert "KILL: cancel every open order and close every position" in captured.out
    assert "aborted" in captured.err
    with Session(engine) as session:
        assert session.get(CircuitBreakerState, "global") is None
    assert audit(engine) == []


def test_kill_with_an_unreachable_broker_still_trips_and_fails(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["kill", "--reason", "drill", "--yes", "--actor", "carol"]) == 1
    out = capsys.readouterr().out
    assert "TRIPPED: kill: drill" in out and "failed:" in out
    assert [row[0] for row in audit(engine)] == ["circuit.trip", "kill.executed"]


def test_status_shows_the_breaker_and_fails_without_a_broker(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["status"]) == 1
    out = capsys.readouterr().out
    assert "Circuit breaker" in out and "OPEN" in out
    assert "last reconcile: never" in out and "broker unreachable" in out


def test_commands_refuse_an_unmigrated_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert run(["circuit", "status"]) == 2
    assert "run 'trader db upgrade' first" in capsys.readouterr().err
