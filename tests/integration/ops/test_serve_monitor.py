"""``trader serve monitor --once``: one post-trade check and one stale-order pass, wired from settings."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.support.paper_broker import RunningBroker
from trader.cli.main import run
from trader.store.models import AuditLog, Snapshot


def test_one_pass_trips_on_missing_data_and_snapshots_the_account(
    cli_engine: Engine,
    paper: RunningBroker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["serve", "monitor", "--once"]) == 0
    out = capsys.readouterr().out
    assert "monitor:" in out and "cleanup:" in out
    with Session(cli_engine) as session:
        # DATA_DIR is empty: no bar at all is stale data, so the breaker trips (fail closed)...
        actions = session.scalars(select(AuditLog.reason).where(AuditLog.action.like("%trip%"))).all()
        assert any("stale_data" in (reason or "") for reason in actions)
        # ...and the account was recorded.
        assert session.scalars(select(Snapshot.kind)).all().count("account") == 1
    assert run(["circuit", "status"]) in (0, 1)
    assert "TRIPPED" in capsys.readouterr().out
