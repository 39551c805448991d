"""The few statements that differ between PostgreSQL and SQLite: locks and insert-if-absent.

Both engines must give the same guarantee: two processes doing the same thing at the same time end
with it done once. PostgreSQL gets it from row-level concurrency plus a transaction-scoped advisory
lock per resource; SQLite has one writer at a time, so taking its write lock first is enough.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from trader.store.models import Base


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def lock_resource(session: Session, *names: str) -> None:
    """Hold an exclusive lock on the resource ``names`` until the session's transaction ends.

    PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit key hashed from the names (other resources are
    not blocked). SQLite: the database write lock, taken now by a write that changes nothing, so every
    read that follows in this transaction already sees the final state (SQLite would otherwise only
    lock at the first real write, after the reads it depends on).
    """
    if dialect_of(session) == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(*names)})
    else:
        session.execute(text("UPDATE orders SET status = status WHERE 0 = 1"))


def lock_position(session: Session, strategy_id: str, symbol: str) -> None:
    """Lock one position (strategy, symbol) and everything about its orders until the transaction ends.

    Every writer of an order's status, fills or position takes this lock *first*, so two
    transactions on the same position never wait for each other in opposite orders (no deadlock).
    """
    lock_resource(session, "position", strategy_id, symbol)


def lock_key(*names: str) -> int:
    """A signed 64-bit key for ``names``, the same in every process (SHA-256, not ``hash()``)."""
    raw = hashlib.sha256("\x1f".join(names).encode()).digest()
    return int.from_bytes(raw[:8], "big", signed=True)


def insert_if_absent(
    session: Session, model: type[Base], values: Mapping[str, Any], key: Sequence[str]
) -> bool:
    """``INSERT ... ON CONFLICT (key) DO NOTHING``; whether a row was inserted.

    A concurrent insert of the same key waits for the other transaction and then inserts nothing, so
    exactly one of them reports ``True``.
    """
    columns = model.__table__.c
    if dialect_of(session) == "postgresql":
        stmt: Any = postgresql.insert(model).values(**values).on_conflict_do_nothing(index_elements=key)
    else:
        stmt = sqlite.insert(model).values(**values).on_conflict_do_nothing(index_elements=key)
    # RETURNING says reliably whether a row went in (rowcount is not reported the same by every driver)
    inserted = session.execute(stmt.returning(*(columns[name] for name in key))).first()
    return inserted is not None


def upsert(session: Session, model: type[Base], values: Mapping[str, Any], key: Sequence[str]) -> None:
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` every other column given in ``values``.

    An ``updated_at`` column not given is set to the database's ``now()`` on update.
    """
    columns = model.__table__.c
    changes = [name for name in values if name not in key]
    touch: dict[str, Any] = {}
    if "updated_at" in columns and "updated_at" not in values:
        touch["updated_at"] = func.now()
    if dialect_of(session) == "postgresql":
        pg = postgresql.insert(model).values(**values)
        stmt: Any = pg.on_conflict_do_update(
            index_elements=key, set_={**{c: pg.excluded[c] for c in changes}, **touch}
        )
    else:
        lite = sqlite.insert(model).values(**values)
        stmt = lite.on_conflict_do_update(
            index_elements=key, set_={**{c: lite.excluded[c] for c in changes}, **touch}
        )
    session.execute(stmt)
