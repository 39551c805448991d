"""`make demo`'s main job runs end to end on the embedded defaults and says what it did.

The first run builds everything (market, model, paper days, replay); the second must reuse it all:
nothing ingested twice, no retraining, no second order for any day.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session

from trader.store import migrate
from trader.store.db import make_engine
from trader.store.models import Base, Execution, ModelRegistryEntry, Order, Pnl

PAPER_DAYS = ["2024-12-23", "2024-12-24", "2024-12-26", "2024-12-27", "2024-12-30", "2024-12-31"]


def _demo(cwd: Path) -> subprocess.CompletedProcess[str]:
    env_keep = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "trader.demo"], capture_output=True, text=True, cwd=cwd, env=env_keep
    )


@pytest.mark.slow
def test_demo_trades_paper_days_and_reuses_everything_on_a_second_run(tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "upgraded: empty -> " in out
    assert "freshness: every symbol is fresh" in out
    for rule in ("negative_volume", "non_positive_price", "ohlc_inconsistent", "outlier"):
        assert rule in out
    assert "release gate preview: would pass" in out
    assert "PASSED: same signals, same orders" in out

    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'trader.db'}")
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    with Session(engine) as session:
        stages = session.scalars(select(ModelRegistryEntry.stage)).all()
        assert stages == ["production"]
        orders = session.scalar(select(func.count()).select_from(Order))
        fills = session.scalar(select(func.count()).select_from(Execution))
        days = session.scalars(select(Pnl.trading_date).where(Pnl.strategy_id == "*")).all()
    assert orders and fills and fills >= orders * 0.9  # market orders in an open market fill
    assert sorted(str(d) for d in days) == PAPER_DAYS
    for day in PAPER_DAYS:
        folder = tmp_path / "artifacts" / "reports" / day
        assert {"blotter.csv", "pnl.md", "pnl.html", "pnl.json"} <= {p.name for p in folder.iterdir()}
    replay = json.loads((tmp_path / "artifacts" / "reports" / "2024-12-27" / "replay.json").read_text())
    assert replay["passed"] is True
    assert any((tmp_path / "artifacts" / "backtests").rglob("report.html"))
    assert any((tmp_path / "artifacts" / "models").rglob("MODEL_CARD.md"))

    again = _demo(tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 new, 70,994 already recorded" in again.stdout  # nothing ingested twice
    assert "not retraining" in again.stdout
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Order)) == orders  # no second order
        assert session.scalar(select(func.count()).select_from(Execution)) == fills
    engine.dispose()


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
