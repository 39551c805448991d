"""Shared pieces of the reconciler's integration tests: a paper broker, the execution service as the
gateway uses it, and the comparisons that say the database and the broker agree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from tests.integration.broker.conftest import OPEN_TUESDAY, admin
from tests.support.paper_broker import RunningBroker, running_paper_broker
from tests.support.waiting import wait_until
from trader.broker.alpaca import AlpacaBroker
from trader.broker.base import OrderQuery
from trader.config import Settings
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.settings import FaultSettings
from trader.risk.snapshot import PortfolioSnapshot
from trader.store.models import Event, Order, Position

#: The tests of this folder call it wait_for.
wait_for = wait_until

D = Decimal
DAY = date(2024, 3, 5)
ACCOUNT = PortfolioSnapshot(D(100_000), D(100_000), D(100_000))
SEND = Settings(dry_run=False)


def price(_symbol: str) -> Decimal:
    return D(30)


@contextmanager
def paper_broker(tmp_path: Path, *, partial_fill_rate: float = 0.0) -> Iterator[RunningBroker]:
    """The built-in paper broker, clock frozen at Tuesday 2024-03-05 10:00 New York, no rate limit."""
    settings = PaperBrokerSettings(
        data_dir=tmp_path / "empty-data",
        start_at=OPEN_TUESDAY,
        partial_fill_rate=partial_fill_rate,
        faults=FaultSettings(rate_limit_per_minute=0, seed=11),
    )
    with running_paper_broker(settings) as running:
        admin(running, "POST", "clock", {"at": OPEN_TUESDAY.isoformat(), "frozen": True})
        yield running


def advance(paper: RunningBroker, seconds: int = 60) -> None:
    """Move the broker's clock on (open orders are matched up to the new time)."""
    admin(paper, "POST", "clock", {"advance_seconds": seconds})


def internal_positions(engine: Engine) -> dict[str, Decimal]:
    """Our quantity per symbol, summed over strategies, open positions only."""
    with Session(engine) as session:
        rows = session.execute(
            select(Position.symbol, func.sum(Position.qty)).group_by(Position.symbol)
        ).all()
    return {symbol: D(qty) for symbol, qty in rows if D(qty) != 0}


def broker_positions(broker: AlpacaBroker) -> dict[str, Decimal]:
    return {p.symbol: p.qty for p in broker.get_positions()}


def orders_here(engine: Engine) -> dict[str, tuple[str, Decimal, str | None]]:
    """client_order_id → (status, filled_qty, broker_order_id)."""
    with Session(engine) as session:
        rows = session.execute(select(Order)).scalars().all()
        return {o.client_order_id: (o.status, o.filled_qty, o.broker_order_id) for o in rows}


def orders_there(broker: AlpacaBroker) -> dict[str, tuple[str, Decimal, str]]:
    """client_order_id → (status, filled_qty, broker id), failing on a client_order_id seen twice."""
    orders = broker.list_orders(OrderQuery.ALL)
    ids = [o.client_order_id for o in orders]
    assert len(ids) == len(set(ids)), f"an order exists twice at the broker: {sorted(ids)}"
    return {o.client_order_id: (o.status.value, o.filled_qty, o.id) for o in orders}


def assert_agree(engine: Engine, broker: AlpacaBroker) -> None:
    """Every broker order is ours with the same status, fills and id; positions are equal."""
    here, there = orders_here(engine), orders_there(broker)
    sent = {cid: row for cid, row in here.items() if row[2] is not None}
    assert set(sent) == set(there)
    for cid, (status, filled, broker_id) in there.items():
        assert sent[cid] == (status, filled, broker_id), cid
    assert internal_positions(engine) == broker_positions(broker)


def events(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with Session(engine) as session:
        rows = session.execute(select(Event.payload).where(Event.kind == kind).order_by(Event.id)).scalars()
        return list(rows)
