"""The paper broker's state (account, orders, fills, positions) and its own database.

State lives in memory as small mutable records and is written through to the broker's own database
(SQLite by default, PostgreSQL optional) in one transaction per change, so a restart loses nothing.
The tables hold each record as JSON beside the columns they are looked up by: this database is the
simulator's private memory, not part of the platform's schema (which Alembic manages).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar, get_type_hints

from sqlalchemy import JSON, Column, Engine, MetaData, String, Table, create_engine, delete, insert, select
from sqlalchemy.pool import StaticPool

from trader.config import normalize_database_url
from trader.domain.json import json_ready

#: Order statuses after which nothing changes any more.
TERMINAL = frozenset({"filled", "canceled", "expired", "replaced", "rejected"})


@dataclass
class SimOrder:
    """An order as the broker keeps it. Field names and values are Alpaca's where Alpaca has them."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    stop_price: Decimal | None
    extended_hours: bool
    status: str
    created_at: datetime
    #: When the order may first trade: now if the market is open, else the next open.
    active_from: datetime
    #: Close of the session a ``day`` order expires at.
    expires_at: datetime | None
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    replaced_at: datetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    #: The last instant the matcher looked at this order: prices between it and now can fill it.
    evaluated_at: datetime | None = None
    stop_triggered: bool = False
    executions: int = 0

    @property
    def open(self) -> bool:
        return self.status not in TERMINAL

    def remaining(self) -> Decimal | None:
        """Quantity still to fill (``None`` for a notional order: its ``qty`` stays null, as on
        Alpaca, and what it filled is ``filled_qty``)."""
        return None if self.qty is None else self.qty - self.filled_qty

    def mark_updated(self, at: datetime) -> datetime:
        """Set ``updated_at`` to ``at``, but never before ``created_at`` (on a frozen clock creation
        times are moved on by a microsecond to keep them unique); returns the time set."""
        self.updated_at = max(at, self.created_at)
        return self.updated_at


@dataclass
class Fill:
    """One execution, as ``/v2/account/activities`` (type ``FILL``) and the stream report it."""

    id: str
    execution_id: str
    order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    transaction_time: datetime
    type: str
    leaves_qty: Decimal
    cum_qty: Decimal
    order_status: str


@dataclass
class Position:
    """A position: signed quantity (negative is short) and average entry price."""

    symbol: str
    qty: Decimal
    avg_entry_price: Decimal


@dataclass
class Account:
    id: str
    account_number: str
    cash: Decimal
    created_at: datetime
    #: Equity at the previous session's close (``last_equity``).
    last_equity: Decimal
    #: The close at which ``last_equity`` was taken.
    last_equity_at: datetime | None = None


@dataclass
class Snapshot:
    account: Account | None
    orders: list[SimOrder] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)


def new_id() -> str:
    return str(uuid.uuid4())


Record = TypeVar("Record", SimOrder, Fill, Position, Account)


def to_json(record: Any) -> dict[str, Any]:
    """A record as JSON-ready values: Decimal and datetime as ISO text."""
    values: dict[str, Any] = json_ready(dataclasses.asdict(record))
    return values


def from_json(kind: type[Record], data: dict[str, Any]) -> Record:
    """The inverse of :func:`to_json`."""
    hints = get_type_hints(kind)
    values: dict[str, Any] = {}
    for item in dataclasses.fields(kind):
        if item.name not in data:
            continue
        value, hint = data[item.name], str(hints[item.name])
        if value is not None and "Decimal" in hint:
            value = Decimal(value)
        elif value is not None and "datetime" in hint:
            value = datetime.fromisoformat(value).astimezone(UTC)
        values[item.name] = value
    return kind(**values)


metadata = MetaData()
accounts = Table("pb_account", metadata, Column("id", String(36), primary_key=True), Column("data", JSON))
orders = Table(
    "pb_orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("client_order_id", String(128), nullable=False, unique=True),
    Column("data", JSON, nullable=False),
)
fills = Table(
    "pb_fills",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("order_id", String(36), nullable=False, index=True),
    Column("data", JSON, nullable=False),
)
positions = Table(
    "pb_positions", metadata, Column("symbol", String(32), primary_key=True), Column("data", JSON)
)


class StateStore:
    """Write-through storage of the broker's state. ``url`` ``None`` keeps it in memory."""

    def __init__(self, url: str | None) -> None:
        if url is None:
            self.engine: Engine = create_engine(
                "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            self.engine = create_engine(normalize_database_url(url), pool_pre_ping=True)
        metadata.create_all(self.engine)

    def load(self) -> Snapshot:
        """Everything stored, orders in creation order."""
        with self.engine.connect() as conn:
            account_rows = conn.execute(select(accounts.c.data)).scalars().all()
            order_rows = conn.execute(select(orders.c.data)).scalars().all()
            fill_rows = conn.execute(select(fills.c.data)).scalars().all()
            position_rows = conn.execute(select(positions.c.data)).scalars().all()
        loaded = [from_json(SimOrder, row) for row in order_rows]
        executions = [from_json(Fill, row) for row in fill_rows]
        return Snapshot(
            account=from_json(Account, account_rows[0]) if account_rows else None,
            orders=sorted(loaded, key=lambda order: (order.created_at, order.id)),
            fills=sorted(executions, key=lambda fill: (fill.transaction_time, fill.id)),
            positions=[from_json(Position, row) for row in position_rows],
        )

    def save(
        self,
        *,
        account: Account | None = None,
        changed_orders: Iterable[SimOrder] = (),
        new_fills: Iterable[Fill] = (),
        changed_positions: Iterable[Position] = (),
    ) -> None:
        """Write the changes of one use case in one transaction (a flat position is deleted)."""
        order_list, position_list = list(changed_orders), list(changed_positions)
        with self.engine.begin() as conn:
            if account is not None:
                conn.execute(delete(accounts).where(accounts.c.id == account.id))
                conn.execute(insert(accounts).values(id=account.id, data=to_json(account)))
            if order_list:
                conn.execute(delete(orders).where(orders.c.id.in_([o.id for o in order_list])))
                conn.execute(
                    insert(orders),
                    [
                        {"id": o.id, "client_order_id": o.client_order_id, "data": to_json(o)}
                        for o in order_list
                    ],
                )
            fill_list = [{"id": f.id, "order_id": f.order_id, "data": to_json(f)} for f in new_fills]
            if fill_list:
                conn.execute(insert(fills), fill_list)
            if position_list:
                symbols = [p.symbol for p in position_list]
                conn.execute(delete(positions).where(positions.c.symbol.in_(symbols)))
                kept = [{"symbol": p.symbol, "data": to_json(p)} for p in position_list if p.qty != 0]
                if kept:
                    conn.execute(insert(positions), kept)

    def close(self) -> None:
        self.engine.dispose()
