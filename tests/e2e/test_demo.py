"""`make demo`'s main job runs end to end on the embedded defaults and says what it did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Base


def test_demo_creates_the_schema_and_reports(tmp_path: Path) -> None:
    first = subprocess.run(
        [sys.executable, "-m", "trader.demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    assert "upgraded: empty -> " in first.stdout
    assert f"tables ({len(Base.metadata.tables)})" in first.stdout
    assert "DRY_RUN (orders recorded, never sent)" in first.stdout
    assert "freshness: every symbol is fresh" in first.stdout
    assert "symbols: 50" in first.stdout
    for rule in ("negative_volume", "non_positive_price", "ohlc_inconsistent", "outlier"):
        assert rule in first.stdout
    assert any((tmp_path / "data" / "adjusted" / "bars").rglob("*.parquet"))
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'trader.db'}")
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    engine.dispose()

    again = subprocess.run(
        [sys.executable, "-m", "trader.demo"], capture_output=True, text=True, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout
    assert "0 new, 70,994 already recorded" in again.stdout  # re-running ingests nothing twice


def test_demo_stops_with_the_config_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trader.demo"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "DRY_RUN": "maybe"},
    )
    assert result.returncode == 2
    assert "DRY_RUN:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "trader.db").exists()
