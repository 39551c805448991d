"""Migrations run up and down on SQLite and PostgreSQL and create exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from trader.cli.main import run
from trader.store import migrate
from trader.store.models import Base

EXPECTED_TABLES = set(Base.metadata.tables)


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_creates_every_table_and_the_view(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert _tables(engine) == EXPECTED_TABLES
    assert "v_latest_prod" in inspect(engine).get_view_names()


def test_migrated_schema_equals_the_models(migrated_engine: Engine) -> None:
    with migrated_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO events (kind, source, payload) VALUES ('probe', 'test', '{}')"))
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM events")).scalar_one() == 1


def test_down_to_base_and_up_again(engine: Engine) -> None:
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    assert _tables(engine) == set()
    assert inspect(engine).get_view_names() == []
    assert migrate.current_revision(engine) is None
    migrate.upgrade(engine)
    assert _tables(engine) == EXPECTED_TABLES


def test_downgrade_removes_the_append_only_guards(engine: Engine) -> None:
    migrate.upgrade(engine)
    migrate.downgrade(engine, "base")
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            left = connection.execute(
                text("SELECT count(*) FROM pg_proc WHERE proname = 'trader_refuse_change'")
            )
        else:
            left = connection.execute(text("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"))
        assert left.scalar_one() == 0


def test_cli_upgrade_on_a_new_database_then_again(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert run(["db", "current"]) == 0
    assert "no schema yet" in capsys.readouterr().out
    assert run(["db", "upgrade"]) == 0
    assert f"upgraded: empty -> {migrate.head_revision()}" in capsys.readouterr().out
    assert run(["db", "upgrade"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert run(["db", "current"]) == 0
    assert "(head, up to date)" in capsys.readouterr().out
    assert run(["db", "downgrade", "base", "--yes"]) == 0
    assert run(["db", "current"]) == 0
    assert "no schema yet" in capsys.readouterr().out


def test_cli_upgrade_to_unknown_revision_is_a_usage_error(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    assert run(["db", "upgrade", "--revision", "9999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trader: error: --revision:")
    assert err.count("\n") == 1


def test_default_sqlite_file_is_created_under_var(tmp_path: Path) -> None:
    # The autouse fixture runs every test in tmp_path, so the default ./var/trader.db lands there.
    assert run(["db", "upgrade"]) == 0
    assert (tmp_path / "var" / "trader.db").is_file()


@pytest.mark.postgres
def test_cli_reports_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:pw-secret@127.0.0.1:1/trader")
    assert run(["db", "current"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        "trader: error: cannot reach the database postgresql+psycopg://nobody:***@127.0.0.1:1/trader"
    )
    assert "pw-secret" not in err
    assert err.count("\n") == 1
