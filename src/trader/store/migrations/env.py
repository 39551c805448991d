"""Alembic environment: runs against the connection handed over by :mod:`trader.store.migrate`.

``alembic`` on the command line works too (``uv run alembic upgrade head``): the URL then comes from
``DATABASE_URL`` through the application's settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from trader.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from trader.config import load_settings
    from trader.store.db import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or load_settings().database_url)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
_run_online()
