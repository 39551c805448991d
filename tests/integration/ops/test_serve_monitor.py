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
    assert "NOT CLEAR" in out and "breach (stale_data)" in out and "newest bar none" in out
    assert "equity 100,000.00" in out and "cleanup: 0 open order(s) checked" in out
    assert "MonitorReading(" not in out and "Decimal(" not in out  # for a person, not a repr
    with Session(cli_engine) as session:
        # DATA_DIR is empty: no bar at all is stale data, so the breaker trips (fail closed)...
        actions = session.scalars(select(AuditLog.reason).where(AuditLog.action.like("%trip%"))).all()
        assert any("stale_data" in (reason or "") for reason in actions)
        # ...and the account was recorded.
        assert session.scalars(select(Snapshot.kind)).all().count("account") == 1
    assert run(["circuit", "status"]) in (0, 1)
    assert "TRIPPED" in capsys.readouterr().out
