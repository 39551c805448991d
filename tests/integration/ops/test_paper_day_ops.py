"""PaperDay's own behaviour on the research market: stages, DRY_RUN, the journaled plan, a repeated
trade-update stream, and a symbol halted on the previous session."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.e2e.paper_support import (
    STRATEGY,
    PaperWorld,
    broker_state,
    db_positions,
    make_world,
    trader,
    train_momentum,
)
from tests.support.paper_broker import running_paper_broker
from tests.support.research import ResearchMarket
from trader.broker.alpaca import AlpacaBroker
from trader.cli.paper import _ingest_from_broker
from trader.config import load_settings
from trader.data.calendar import trading_calendar
from trader.data.paths import DataPaths
from trader.domain.enums import OrderStatus
from trader.ops.paper_day import PLAN_EVENT, DayResult, PaperDay, Plan, raw_closes
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.runner import PaperBrokerAdmin
from trader.paperbroker.settings import FaultSettings
from trader.research.artifacts import ModelArtifact
from trader.store.models import Event, Execution, Order

pytestmark = pytest.mark.slow

DAY = date(2023, 12, 12)
#: SYN005 is listed and tradable but has no bar on 2023-11-02 (a halt in the synthetic market).
AFTER_HALT = date(2023, 11, 3)
STAGES = ["data", "signal", "open", "orders", "fills", "close", "pnl"]


@pytest.fixture(scope="module")
def artifact(research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory) -> ModelArtifact:
    return train_momentum(research_market, tmp_path_factory.mktemp("models"))


@pytest.fixture
def world(research_market: ResearchMarket, artifact: ModelArtifact, tmp_path: Path) -> PaperWorld:
    return make_world(research_market, tmp_path / "w", f"sqlite:///{tmp_path / 'w.db'}", artifact=artifact)


@contextmanager
def paper_day_with_broker(world: PaperWorld, day: date, faults: FaultSettings) -> Iterator[PaperDay]:
    """A PaperDay in this process, against a paper broker with ``faults`` (the world's databases)."""
    broker_settings = PaperBrokerSettings(
        data_dir=world.data_dir,
        database_url=world.broker_database_url,
        start_at=trading_calendar().session_open(day),
        faults=faults,
    )
    with running_paper_broker(broker_settings) as running, pytest.MonkeyPatch.context() as patch:
        for name, value in world.env(ALPACA_BASE_URL=running.url).items():
            patch.setenv(name, value)
        settings = load_settings()
        engine = world.engine()
        try:
            with PaperBrokerAdmin(running.url, running.key_id, running.secret_key) as admin:
                broker = AlpacaBroker.from_settings(settings)
                yield PaperDay(settings, engine, broker, strategy=STRATEGY, admin=admin, fill_timeout=20)
        finally:
            engine.dispose()


def test_every_stage_is_timed_and_a_repeated_stream_counts_each_fill_once(world: PaperWorld) -> None:
    # The broker sends every trade update twice: the ledger must still apply each fill once.
    with paper_day_with_broker(world, DAY, FaultSettings(duplicate_event_rate=1.0)) as paper_day:
        result: DayResult = paper_day.run(DAY)
    assert list(result.stage_seconds) == STAGES
    assert all(seconds >= 0 for seconds in result.stage_seconds.values())
    assert result.sent == len(result.orders) > 0 and not result.unfinished and not result.rejected
    broker = broker_state(world)
    engine = world.engine()
    try:
        with Session(engine) as session:
            executions = list(session.scalars(select(Execution)))
        assert len(executions) == len(broker.fills) == result.fills
        assert db_positions(engine) == broker.positions
    finally:
        engine.dispose()
    assert result.equity is not None and result.report_dir is not None


def test_dry_run_records_orders_sends_nothing_and_journals_the_plan(world: PaperWorld) -> None:
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "5", DRY_RUN="true") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            orders = list(session.scalars(select(Order)))
            (event,) = session.scalars(select(Event).where(Event.kind == PLAN_EVENT)).all()
    finally:
        engine.dispose()
    assert orders and {OrderStatus(o.status) for o in orders} == {OrderStatus.DRY_RUN}
    assert all(o.broker_order_id is None for o in orders)
    assert broker_state(world).orders == []
    plan = Plan.from_json(event.payload)
    assert plan.to_json() == event.payload  # the journal round-trips exactly
    assert plan.trading_date == DAY and plan.as_of == date(2023, 12, 11)
    assert sorted(plan.orders) == sorted((o.symbol, o.side, o.qty) for o in orders)
    # Every order was priced from the journaled previous close.
    assert {o.symbol for o in orders} <= set(plan.prices)


def test_a_symbol_halted_on_the_previous_session_does_not_stop_the_day(world: PaperWorld) -> None:
    assert trader(world, "paper-run", "--date", str(AFTER_HALT), "--fill-timeout", "20") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            symbols = set(session.scalars(select(Order.symbol)))
    finally:
        engine.dispose()
    assert symbols and "SYN005" not in symbols


def test_a_day_before_one_already_traded_is_refused_and_a_rerun_is_not(
    world: PaperWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "5", DRY_RUN="true") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            before = sorted(session.scalars(select(Order.client_order_id)))
    finally:
        engine.dispose()
    capsys.readouterr()
    earlier = trading_calendar().previous_session(DAY)
    assert trader(world, "paper-run", "--date", str(earlier), DRY_RUN="true") == 1
    err = capsys.readouterr().err
    assert f"{earlier} comes before {DAY}, which strategy {STRATEGY} has already traded" in err
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "5", DRY_RUN="true") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            assert sorted(session.scalars(select(Order.client_order_id))) == before  # nothing new
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["paper-run", "--date", "1950-01-03"], "--date: 1950-01-03 is outside the calendar"),
        (
            ["paper-run", "--from", "2024-12-02", "--to", "2100-01-01"],
            "--to: 2100-01-01 is outside the calendar",
        ),
        (["signal", "--date", "0001-01-01"], "--date: 0001-01-01 is outside the calendar"),
        (["replay", "--date", "2024-12-28"], "--date: 2024-12-28 is not a trading session"),
        (["report", "pnl", "--date", "2024-12-28"], "--date: 2024-12-28 is not a trading session"),
        (
            ["paper-run", "--date", str(DAY), "--strategy", "Bad Name"],
            "--strategy: 'Bad Name' is not a strategy id",
        ),
        (["signal", "--date", str(DAY), "--strategy", ""], "--strategy: '' is not a strategy id"),
    ],
)
def test_bad_days_and_strategies_are_usage_errors(
    world: PaperWorld, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader(world, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_report_without_prices_is_refused_and_the_recorded_one_kept(
    world: PaperWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "20") == 0
    report = world.reports_dir / str(DAY) / "pnl.json"
    recorded = report.read_text()
    capsys.readouterr()
    assert trader(world, "report", "pnl", "--date", str(DAY), DATA_DIR=str(world.data_dir / "nowhere")) == 1
    assert "nothing written; ingest that session first" in capsys.readouterr().err
    assert report.read_text() == recorded


def test_replay_uses_the_days_breaker_not_todays(world: PaperWorld) -> None:
    # The day is traded under a tripped breaker (entries refused, no risk decision for them) ...
    assert trader(world, "circuit", "trip", "--reason", "maintenance", "--actor", "ops") == 0
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "5", DRY_RUN="true") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            statuses = {OrderStatus(s) for s in session.scalars(select(Order.status))}
            (event,) = session.scalars(select(Event).where(Event.kind == PLAN_EVENT)).all()
    finally:
        engine.dispose()
    assert OrderStatus.RISK_REJECTED in statuses
    plan = Plan.from_json(event.payload)
    assert plan.breaker is not None and "maintenance" in plan.breaker
    assert plan.limits is not None and plan.limits.max_order_notional is not None
    # ... and replayed with a limit tightened since: the replay checks the orders against the day's
    # limits and the day's breaker, so every verdict is the recorded one.
    assert trader(world, "replay", "--date", str(DAY), MAX_ORDER_NOTIONAL="1") == 0
    report = json.loads((world.reports_dir / str(DAY) / "replay.json").read_text())
    assert report["passed"] is True and report["compared"]["risk verdicts"] > 0


def test_replay_checks_against_the_days_limits_when_a_limit_was_tightened_since(world: PaperWorld) -> None:
    assert trader(world, "paper-run", "--date", str(DAY), "--fill-timeout", "5", DRY_RUN="true") == 0
    engine = world.engine()
    try:
        with Session(engine) as session:
            statuses = {OrderStatus(s) for s in session.scalars(select(Order.status))}
    finally:
        engine.dispose()
    assert statuses == {OrderStatus.DRY_RUN}  # every order passed the day's limits
    # Today's limit would refuse every order (and slice every exit): the replay must not use it.
    assert trader(world, "replay", "--date", str(DAY), MAX_ORDER_NOTIONAL="1") == 0
    report = json.loads((world.reports_dir / str(DAY) / "replay.json").read_text())
    compared = report["compared"]
    assert report["passed"] is True and compared["risk verdicts"] == compared["orders"] > 0


def test_paper_runs_ingest_records_the_data_in_the_database_too(world: PaperWorld, tmp_path: Path) -> None:
    # A DATA_DIR that knows the universe but holds no bar yet: paper-run's ingest fetches the
    # session from the broker (which serves the world's market) through the whole pipeline.
    empty = DataPaths(tmp_path / "fresh")
    empty.universe.parent.mkdir(parents=True)
    shutil.copyfile(DataPaths(world.data_dir).universe, empty.universe)
    as_of = trading_calendar().previous_session(DAY)
    broker_settings = PaperBrokerSettings(
        data_dir=world.data_dir,
        database_url=world.broker_database_url,
        start_at=trading_calendar().session_open(DAY),
    )
    with running_paper_broker(broker_settings) as running, pytest.MonkeyPatch.context() as patch:
        for name, value in world.env(ALPACA_BASE_URL=running.url, DATA_DIR=str(empty.root)).items():
            patch.setenv(name, value)
        engine = world.engine()
        try:
            _ingest_from_broker(load_settings(), engine)(as_of)
            with Session(engine) as session:
                events = session.scalars(select(Event).where(Event.kind == "data_ingested")).all()
        finally:
            engine.dispose()
    assert len(events) == 1 and events[0].payload["rows_received"] > 0
    assert raw_closes(empty, as_of)  # recorded in the fresh store
