"""``trader db``: create and inspect the database schema."""

from __future__ import annotations

from typing import Annotated

import typer
from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from trader.cli.output import console
from trader.config import load_settings, mask_url_password, mask_urls_in_text
from trader.errors import DatabaseError, UsageError, first_line
from trader.store import migrate
from trader.store.db import make_engine

app = typer.Typer(
    help="Create, upgrade and inspect the database schema (SQLite by default, PostgreSQL via DATABASE_URL).",
    no_args_is_help=True,
)


def _engine_and_label() -> tuple[Engine, str]:
    settings = load_settings()
    return make_engine(settings.database_url), mask_url_password(settings.database_url)


@app.command()
def upgrade(
    revision: Annotated[str, typer.Option(help="Target revision; 'head' is the newest.")] = "head",
) -> None:
    """Create the schema or bring it up to date. Safe to run again: an up-to-date database is untouched."""
    engine, label = _engine_and_label()
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine, revision)
        after = migrate.current_revision(engine)
    except OperationalError as exc:
        raise DatabaseError(f"cannot reach the database {label}: {_first_line(exc)}") from None
    except CommandError as exc:
        raise UsageError(f"--revision: {exc}") from None
    if before == after:
        console.print(f"database {label} is already at revision {after} - nothing to do")
    else:
        console.print(f"database {label} upgraded: {before or 'empty'} -> {after}")


@app.command()
def current() -> None:
    """Show the schema revision of the configured database and whether it is up to date."""
    engine, label = _engine_and_label()
    try:
        revision = migrate.current_revision(engine)
    except (OperationalError, ProgrammingError) as exc:
        raise DatabaseError(f"cannot reach the database {label}: {_first_line(exc)}") from None
    head = migrate.head_revision()
    if revision is None:
        console.print(f"database {label}: no schema yet (run 'trader db upgrade')")
    elif revision == head:
        console.print(f"database {label}: revision {revision} (head, up to date)")
    else:
        console.print(f"database {label}: revision {revision}, newest is {head} (run 'trader db upgrade')")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Revision to go back to; 'base' drops every table.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Migrate the schema down. Destroys the data of the tables it removes, so it asks first."""
    engine, label = _engine_and_label()
    if not yes and not typer.confirm(f"Downgrade {label} to {revision}? Data in removed tables is lost"):
        raise typer.Exit(1)
    try:
        migrate.downgrade(engine, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot reach the database {label}: {_first_line(exc)}") from None
    except CommandError as exc:
        raise UsageError(f"REVISION: {exc}") from None
    console.print(f"database {label} downgraded to {revision}")


def _first_line(exc: Exception) -> str:
    # The driver's own error (SQLAlchemy's adds the statement); a driver may quote the URL.
    return mask_urls_in_text(first_line(getattr(exc, "orig", None) or exc))
