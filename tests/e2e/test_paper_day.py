"""``trader paper-run`` and ``trader replay`` end to end, against the built-in paper broker.

Three paper days of the momentum strategy on the 20-symbol research market (SQLite, a paper broker on
a free port), checked against the broker itself (orders, fills, positions through alpaca-py and its
activities endpoint), the P&L rows and the report files; then re-running a day, replay parity and a
tampered record, a limit breach, the same days on PostgreSQL + Redis, and bad input.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update
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
from tests.support.research import ResearchMarket
from tests.support.services import RedisKeySpace
from trader.config import Settings
from trader.domain.enums import OrderStatus
from trader.ops.breakers import TripReason, breaker_from_settings
from trader.portfolio.ledger import market_day_bounds
from trader.research.artifacts import ModelArtifact
from trader.signal.publish import INTENT_STREAM
from trader.store.models import Execution, Order, Pnl, RiskDecision, RiskLimit, SignalRun

pytestmark = pytest.mark.slow

DAYS = [date(2023, 12, 12), date(2023, 12, 13), date(2023, 12, 14)]
FILL_TIMEOUT = "20"

OrderKey = tuple[date, str, str, Decimal]


@dataclass(frozen=True)
class RanDays:
    """A world after ``paper-run`` of DAYS: its exit code and what the database held right after."""

    world: PaperWorld
    exit_code: int
    orders: list[OrderKey]
    positions: dict[str, Decimal]


def _orders(world: PaperWorld) -> list[OrderKey]:
    engine = world.engine()
    try:
        with Session(engine) as session:
            rows = session.scalars(select(Order).where(Order.strategy_id == STRATEGY)).all()
            return sorted((o.trading_date, o.symbol, o.side, Decimal(o.qty or 0)) for o in rows)
    finally:
        engine.dispose()


def _positions(world: PaperWorld) -> dict[str, Decimal]:
    engine = world.engine()
    try:
        return db_positions(engine)
    finally:
        engine.dispose()


def _run_days(world: PaperWorld, **extra_env: str) -> RanDays:
    code = trader(
        world,
        "paper-run",
        "--from",
        str(DAYS[0]),
        "--to",
        str(DAYS[-1]),
        "--fill-timeout",
        FILL_TIMEOUT,
        **extra_env,
    )
    return RanDays(world, code, _orders(world), _positions(world))


@pytest.fixture(scope="module")
def momentum_artifact(
    research_market: ResearchMarket, tmp_path_factory: pytest.TempPathFactory
) -> ModelArtifact:
    return train_momentum(research_market, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def sqlite_days(
    research_market: ResearchMarket,
    momentum_artifact: ModelArtifact,
    tmp_path_factory: pytest.TempPathFactory,
) -> RanDays:
    root = tmp_path_factory.mktemp("paper_sqlite")
    world = make_world(research_market, root, f"sqlite:///{root / 'trader.db'}", artifact=momentum_artifact)
    return _run_days(world)


# ------------------------------------------------------------------------------------ the days


def test_paper_days_agree_with_the_broker(sqlite_days: RanDays) -> None:
    assert sqlite_days.exit_code == 0
    world = sqlite_days.world
    broker = broker_state(world)
    engine = world.engine()
    try:
        with Session(engine) as session:
            orders = {o.client_order_id: o for o in session.scalars(select(Order))}
            executions = list(session.scalars(select(Execution)))
    finally:
        engine.dispose()

    # Every day traded, every order was sent, and the broker holds exactly our orders.
    assert {o.trading_date for o in orders.values()} == set(DAYS)
    at_broker = {o.client_order_id: o for o in broker.orders}
    assert set(at_broker) == set(orders)
    for cid, order in orders.items():
        theirs = at_broker[cid]
        assert (theirs.symbol, theirs.side.value, theirs.qty) == (order.symbol, order.side, order.qty)
        assert theirs.id == order.broker_order_id
        assert OrderStatus(order.status) is theirs.status is OrderStatus.FILLED  # market orders, open market
        assert order.filled_qty == theirs.filled_qty

    # One execution row per broker fill, with the same quantities and prices.
    assert len(executions) == len(broker.fills) > 0
    assert sorted((e.symbol, e.side, e.qty, e.price) for e in executions) == sorted(
        (f["symbol"], f["side"], Decimal(f["qty"]), Decimal(f["price"])) for f in broker.fills
    )
    assert db_positions_equal(sqlite_days.positions, broker.positions)


def db_positions_equal(ours: dict[str, Decimal], theirs: dict[str, Decimal]) -> bool:
    return bool(ours) and ours == {s: q for s, q in theirs.items() if q != 0}


def test_each_day_has_pnl_rows_and_a_report_with_the_same_numbers(sqlite_days: RanDays) -> None:
    world = sqlite_days.world
    engine = world.engine()
    try:
        with Session(engine) as session:
            pnl = {(p.trading_date, p.strategy_id): p for p in session.scalars(select(Pnl))}
            executions = list(session.scalars(select(Execution)))
            orders = list(session.scalars(select(Order)))
    finally:
        engine.dispose()
    assert set(pnl) == {(day, s) for day in DAYS for s in (STRATEGY, "*")}
    for day in DAYS:
        folder = world.reports_dir / day.isoformat()
        assert {"blotter.csv", "pnl.md", "pnl.html", "pnl.json"} <= {p.name for p in folder.iterdir()}
        report = json.loads((folder / "pnl.json").read_text())
        account, strategy = pnl[(day, "*")], pnl[(day, STRATEGY)]
        assert _money(report["realized_today"]) == _money(account.realized)
        assert _money(report["unrealized"]) == _money(account.unrealized)
        assert _money(report["fees_today"]) == _money(account.fees)
        assert _money(report["equity"]) == _money(account.equity)
        (row,) = report["strategies"]
        assert _money(row["realized_today"]) == _money(strategy.realized)
        assert _money(row["unrealized"]) == _money(strategy.unrealized)
        assert _money(row["gross_exposure"]) == _money(strategy.gross_exposure)
        # The account row is the only strategy's row; its equity is the cash plus the positions.
        assert (account.realized, account.unrealized) == (strategy.realized, strategy.unrealized)

        start, end = market_day_bounds(day)
        fills_today = [e for e in executions if start <= _utc(e.executed_at) < end]
        with (folder / "blotter.csv").open() as handle:
            records = Counter(r["record"] for r in csv.DictReader(handle))
        assert records["order"] == sum(1 for o in orders if o.trading_date == day)
        assert records["execution"] == len(fills_today) == row["fills"]

        html = (folder / "pnl.html").read_text()
        assert "data:image/png;base64," in html
        assert f"{account.equity:,.2f}" in (folder / "pnl.md").read_text()
    # The equity moves by the day's P&L: no money appears or vanishes between days.
    equities = [pnl[(day, "*")].equity for day in DAYS]
    assert all(e is not None and Decimal(90_000) < e < Decimal(110_000) for e in equities)


def _money(value: object) -> Decimal:
    # The report recomputes the row's sums; they agree far below a cent (not in the 30th digit).
    return Decimal(str(value)).quantize(Decimal("0.00000001"))


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (stored as UTC).
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def test_running_a_day_again_sends_nothing_new(
    sqlite_days: RanDays, capsys: pytest.CaptureFixture[str]
) -> None:
    world = sqlite_days.world
    before = broker_state(world)
    pnl_before = _pnl_rows(world, DAYS[1])
    capsys.readouterr()
    assert trader(world, "paper-run", "--date", str(DAYS[1]), "--fill-timeout", FILL_TIMEOUT) == 0
    out = capsys.readouterr().out
    assert "(reused)" in out
    after = broker_state(world)
    assert len(after.orders) == len(before.orders)
    assert len(after.fills) == len(before.fills)
    assert after.positions == before.positions
    assert _orders(world) == sqlite_days.orders
    # A past day keeps its P&L: the ledger now holds the positions of a later day.
    assert _pnl_rows(world, DAYS[1]) == pnl_before


def _pnl_rows(world: PaperWorld, day: date) -> list[tuple[object, ...]]:
    engine = world.engine()
    try:
        with Session(engine) as session:
            rows = session.scalars(select(Pnl).where(Pnl.trading_date == day).order_by(Pnl.strategy_id))
            return [(p.strategy_id, p.realized, p.unrealized, p.fees, p.equity) for p in rows]
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------ replay


def test_replay_of_a_paper_day_shows_parity(sqlite_days: RanDays) -> None:
    world = sqlite_days.world
    assert trader(world, "replay", "--date", str(DAYS[1])) == 0
    folder = world.reports_dir / DAYS[1].isoformat()
    report = json.loads((folder / "replay.json").read_text())
    assert report["passed"] is True and report["differences"] == []
    orders_of_day = sum(1 for o in sqlite_days.orders if o[0] == DAYS[1])
    assert report["compared"]["orders"] == orders_of_day > 0
    assert report["compared"]["weights"] > 0
    assert "PASSED" in (folder / "replay.md").read_text()


def test_replay_fails_on_a_tampered_weight(
    sqlite_days: RanDays, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tamper with a copy of the database: the other tests keep the true record.
    copy = tmp_path / "tampered.db"
    copy.write_bytes(Path(sqlite_days.world.database_url.removeprefix("sqlite:///")).read_bytes())
    world = PaperWorld(sqlite_days.world.root, f"sqlite:///{copy}")
    engine = world.engine()
    try:
        with Session(engine) as session, session.begin():
            run = session.scalars(
                select(SignalRun).where(SignalRun.strategy_id == STRATEGY, SignalRun.trading_date == DAYS[1])
            ).one()
            symbol = sorted(run.weights)[0]
            weights = dict(run.weights) | {symbol: "0.5"}
            session.execute(update(SignalRun).where(SignalRun.id == run.id).values(weights=weights))
    finally:
        engine.dispose()
    capsys.readouterr()
    assert trader(world, "replay", "--date", str(DAYS[1])) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    report = json.loads((world.reports_dir / DAYS[1].isoformat() / "replay.json").read_text())
    assert report["passed"] is False
    assert [d["what"] for d in report["differences"]] == [f"weight {symbol}"]
    assert report["differences"][0]["recorded"] == "0.5"
    # Put the true report back for anyone reading the folder after the tests.
    assert trader(sqlite_days.world, "replay", "--date", str(DAYS[1])) == 0


# ------------------------------------------------------------------------------------ risk


def test_a_limit_breach_is_rejected_with_its_reason_and_never_sent(
    research_market: ResearchMarket, momentum_artifact: ModelArtifact, tmp_path: Path
) -> None:
    # A first day buys the whole portfolio (about $10k a name): a $5,000 order limit stops those buys.
    limit = Decimal(5000)
    world = make_world(
        research_market, tmp_path / "w", f"sqlite:///{tmp_path / 'w.db'}", artifact=momentum_artifact
    )
    engine = world.engine()
    try:
        with Session(engine) as session, session.begin():
            session.add(RiskLimit(strategy_id=STRATEGY, max_order_notional=limit, updated_by="test"))
        assert trader(world, "paper-run", "--date", str(DAYS[0]), "--fill-timeout", FILL_TIMEOUT) == 0
        with Session(engine) as session:
            orders = list(session.scalars(select(Order)))
            decisions = list(session.scalars(select(RiskDecision)))
    finally:
        engine.dispose()
    rejected = [o for o in orders if o.status == OrderStatus.RISK_REJECTED]
    assert rejected, "a $5,000 order limit must stop the first day's buys"
    refused = {d.client_order_id: d for d in decisions if not d.approved}
    assert set(refused) == {o.client_order_id for o in rejected}
    for order in rejected:
        decision = refused[order.client_order_id]
        assert decision.rule == "max_order_notional"
        assert order.reject_reason == decision.reason and "5,000" in decision.reason
        assert order.broker_order_id is None and order.submitted_at is None
    at_broker = {o.client_order_id for o in broker_state(world).orders}
    assert not at_broker & {o.client_order_id for o in rejected}
    assert at_broker == {o.client_order_id for o in orders if o not in rejected}
    # The replay decides the same, with the same limits.
    assert trader(world, "replay", "--date", str(DAYS[0])) == 0


# ------------------------------------------------------------------------------------ PostgreSQL + Redis


@pytest.mark.postgres
@pytest.mark.redis
def test_the_same_days_on_postgresql_and_redis_give_the_same_orders_and_positions(
    sqlite_days: RanDays,
    research_market: ResearchMarket,
    momentum_artifact: ModelArtifact,
    postgres_url: str,
    redis_url: str,
    redis_keyspace: RedisKeySpace,
    tmp_path: Path,
) -> None:
    world = make_world(research_market, tmp_path / "pg", postgres_url, artifact=momentum_artifact)
    world = PaperWorld(world.root, postgres_url, redis_url)
    # A key prefix of the test's own (REDIS_KEY_PREFIX): the stream and the breaker keys live under
    # it and are deleted afterwards by the fixture.
    ran = _run_days(world, REDIS_KEY_PREFIX=redis_keyspace.prefix)
    assert ran.exit_code == 0
    assert ran.orders == [o for o in sqlite_days.orders if o[0] in DAYS]
    assert ran.positions == sqlite_days.positions
    stream = redis_keyspace.key(INTENT_STREAM)
    intents = [json.loads(fields[b"intent"]) for _, fields in redis_keyspace.client.xrange(stream)]
    assert sorted(i["trading_date"] for i in intents if i["strategy_id"] == STRATEGY) == [
        str(d) for d in DAYS
    ]


# ------------------------------------------------------------------------------------ bad input


def test_a_saturday_is_refused_with_exit_2(sqlite_days: RanDays, capsys: pytest.CaptureFixture[str]) -> None:
    assert trader(sqlite_days.world, "paper-run", "--date", "2023-12-16") == 2
    assert "2023-12-16 is not a trading session" in capsys.readouterr().err


@dataclass(frozen=True)
class SignalWorld:
    world: PaperWorld
    engine: Engine

    def runs(self) -> list[SignalRun]:
        with Session(self.engine) as session:
            return list(session.scalars(select(SignalRun).where(SignalRun.strategy_id == STRATEGY)))


@pytest.fixture
def signal_world(
    research_market: ResearchMarket, momentum_artifact: ModelArtifact, tmp_path: Path
) -> Iterator[SignalWorld]:
    """A fresh world with the momentum model in production, for ``trader signal``."""
    world = make_world(
        research_market, tmp_path / "w", f"sqlite:///{tmp_path / 'w.db'}", artifact=momentum_artifact
    )
    engine = world.engine()
    try:
        yield SignalWorld(world, engine)
    finally:
        engine.dispose()


def test_signal_command_records_the_days_weights_once(
    signal_world: SignalWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    assert trader(signal_world.world, "signal", "--date", str(DAYS[0])) == 0
    assert "computed and recorded" in capsys.readouterr().out
    assert trader(signal_world.world, "signal", "--date", str(DAYS[0])) == 0
    assert "already recorded" in capsys.readouterr().out
    assert [(run.trading_date, bool(run.weights)) for run in signal_world.runs()] == [(DAYS[0], True)]


def test_signal_command_refuses_new_signals_after_a_kill(
    signal_world: SignalWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(database_url=signal_world.world.database_url)
    breaker_from_settings(settings, signal_world.engine).trip(
        TripReason.KILL, "operator pulled the plug", "alice"
    )
    assert trader(signal_world.world, "signal", "--date", str(DAYS[0])) == 1
    assert "blocked by the kill switch (kill: operator pulled the plug)" in capsys.readouterr().err
    assert signal_world.runs() == []


def test_no_production_model_is_a_clear_error_and_sends_nothing(
    research_market: ResearchMarket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = make_world(research_market, tmp_path / "w", f"sqlite:///{tmp_path / 'w.db'}", artifact=None)
    code = trader(world, "paper-run", "--date", str(DAYS[0]), "--fill-timeout", FILL_TIMEOUT)
    assert code != 0
    assert "no production model" in capsys.readouterr().err
    assert _orders(world) == []


def test_a_database_without_schema_says_run_db_upgrade(
    research_market: ResearchMarket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = make_world(
        research_market, tmp_path / "w", f"sqlite:///{tmp_path / 'w.db'}", artifact=None, migrate_schema=False
    )
    assert trader(world, "paper-run", "--date", str(DAYS[0])) == 2
    assert "run 'trader db upgrade'" in capsys.readouterr().err
