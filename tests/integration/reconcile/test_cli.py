"""``trader serve reconciler``: one run against the paper broker, and flags refused with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import alpaca_broker
from tests.integration.reconcile.support import ACCOUNT, DAY, SEND, D, assert_agree, paper_broker, price
from trader.cli.main import run
from trader.domain.enums import OrderSide
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.store.models import Snapshot


def test_once_heals_prints_the_report_and_a_second_run_is_clean(
    tmp_path: Path,
    migrated_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with paper_broker(tmp_path) as paper:
        broker = alpaca_broker(paper)
        ExecutionService(migrated_engine, broker, SEND).submit_batch(
            [OrderIntent("cli", DAY, "SYN001", OrderSide.BUY, qty=D(7))], ACCOUNT, price
        )
        monkeypatch.setenv("DATABASE_URL", migrated_engine.url.render_as_string(hide_password=False))
        monkeypatch.setenv("ALPACA_BASE_URL", paper.url)
        monkeypatch.setenv("ALPACA_API_KEY_ID", paper.key_id)
        monkeypatch.setenv("ALPACA_API_SECRET_KEY", paper.secret_key)
        assert run(["serve", "reconciler", "--once"]) == 0
        first = capsys.readouterr().out
        assert "fill_adopted 1" in first and "status_healed 1" in first
        assert run(["serve", "reconciler", "--once", "--json"]) == 0
        assert '"clean": true' in capsys.readouterr().out
        assert_agree(migrated_engine, broker)
    with Session(migrated_engine) as session:
        assert len(session.execute(select(Snapshot).where(Snapshot.kind == "reconcile")).all()) == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--drift-shares", "many"], "--drift-shares"),
        (["--drift-notional", "-5"], "--drift-notional"),
        (["--interval", "0"], "--interval"),
        (["--lookback-days", "0"], "--lookback-days"),
        (
            ["--drift-shares", "1e999999999"],
            "--drift-shares: 1e999999999 is out of range; use a number from 0 to 1,000,000,000",
        ),
        (["--drift-notional", "NaN"], "--drift-notional: NaN is out of range"),
        (["--grace-minutes", "nan"], "--grace-minutes: nan is out of range; use 0 to 10080 minutes"),
        (["--grace-minutes", "1e300"], "--grace-minutes: 1e+300 is out of range; use 0 to 10080 minutes"),
        (["--grace-minutes", "-1"], "--grace-minutes: -1 is out of range"),
        (
            ["--lookback-days", "1e300"],
            "--lookback-days: 1e+300 is out of range; use more than 0 to 366 days",
        ),
        (["--lookback-days", "nan"], "--lookback-days: nan is out of range"),
        (["--lookback-days", "inf"], "--lookback-days: inf is out of range"),
        (["--interval", "inf"], "--interval: inf is out of range; use 1 to 86400 seconds"),
        (["--interval", "nan"], "--interval: nan is out of range"),
        (["--interval", "-inf"], "--interval: -inf is out of range"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["serve", "reconciler", "--once", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "internal error" not in err


def test_an_infinite_interval_is_refused_before_the_first_run(capsys: pytest.CaptureFixture[str]) -> None:
    # Without --once it used to reconcile once, then crash waiting for an infinite time.
    assert run(["serve", "reconciler", "--interval", "inf"]) == 2
    captured = capsys.readouterr()
    assert "--interval: inf is out of range" in captured.err and "reconciler: every" not in captured.out
