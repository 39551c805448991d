"""``make demo``: the main job — whole paper-trading days — on the embedded defaults, explained step by step.

1. validate the configuration and create or upgrade the database schema;
2. generate the synthetic market (50 symbols, 2019-2024, with a weak planted momentum effect so a
   model has something to learn) and ingest it: raw -> adjust -> quality gate -> store;
3. export it for Qlib; if the strategy has no production model yet: train the baseline (Alpha158 +
   LightGBM), backtest it (scenarios, leakage checks, model card, MLflow, staging registry row) and
   promote it through the release gate;
4. run the last paper-trading days of 2024 against the built-in paper broker (started in-process),
   then replay one of them and check parity.

Everything honours the configuration environment (``DATABASE_URL``, ``DATA_DIR``, ``ARTIFACTS_DIR``,
``REDIS_URL``, ...), so the same command runs on PostgreSQL + Redis. Running it again reuses what is
there: the data is not ingested twice, the model is not retrained, and no day sends a second order.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from sqlalchemy import inspect

from trader.cli.main import run
from trader.cli.output import console, error
from trader.config import Settings, load_settings, mask_url_password
from trader.errors import TraderError
from trader.store.db import make_engine

DEMO_MARKET = [
    "--symbols",
    "50",
    "--start",
    "2019-01-02",
    "--end",
    "2024-12-31",
    "--seed",
    "7",
    "--momentum",
    "0.3",
]
DEMO_NOW = "2025-01-02T14:00:00Z"
#: The paper days: the last sessions of the demo market (Dec 24 is a half day).
PAPER_FROM, PAPER_TO = "2024-12-23", "2024-12-31"
REPLAY_DAY = "2024-12-27"
EXAMPLE_QUERY = "select * from bars_adj where symbol = 'SYN001' order by date desc limit 5"

Step = tuple[str, list[str] | Callable[[], int]]


def _production_version(settings: Settings) -> str | None:
    from trader.research.registry import ModelRegistry

    engine = make_engine(settings.database_url)
    try:
        return ModelRegistry(engine).production_version(settings.strategy_id)
    finally:
        engine.dispose()


def _train_and_promote(settings: Settings) -> int:
    """Train, evaluate and promote the baseline unless a production model exists already."""
    current = _production_version(settings)
    if current is not None:
        console.print(f"{settings.strategy_id}: production model {current} is registered; not retraining")
        return 0
    strategy = settings.strategy_id
    for args in (
        ["research", "train", "--strategy", strategy],
        ["research", "backtest", "--strategy", strategy],
    ):
        console.rule(f"trader {' '.join(args)}", style="dim")
        code = run(args)
        if code != 0:
            return code
    from trader.research.artifacts import ModelArtifact

    version = ModelArtifact.find(settings.artifacts_dir, strategy).version
    args = ["model", "promote", strategy, version, "--to", "production", "--by", "make-demo"]
    console.rule(f"trader {' '.join(args)}", style="dim")
    code = run(args)
    if code != 0:
        console.print(
            "[red]the release gate refused the model (reasons above), so there is nothing to trade; "
            "see docs/model-registry.md[/red]"
        )
    return code


def _paper_days(settings: Settings) -> int:
    if settings.uses_local_paper_broker and settings.dry_run:
        # Paper money on the built-in simulator: send the orders so the day has fills to show.
        os.environ["DRY_RUN"] = "false"
        console.print("DRY_RUN=false for the built-in paper broker only (no real account is involved)")
    return run(["paper-run", "--from", PAPER_FROM, "--to", PAPER_TO])


def steps(settings: Settings) -> list[Step]:
    return [
        ("Checking the configuration", ["config", "check"]),
        ("Creating or upgrading the database schema", ["db", "upgrade"]),
        (
            "Generating the synthetic market and ingesting it (raw -> adjust -> gate -> store)",
            ["data", "synth", *DEMO_MARKET],
        ),
        # The market ends on 2024-12-31; New Year's Day is a holiday, so it is fresh on Jan 2.
        ("Data status: coverage, freshness, quarantine", ["data", "status", "--now", DEMO_NOW]),
        (
            "What the quality gate refused (DuckDB catalog)",
            ["data", "sql", "select rule, count(*) as rows from quarantine group by rule order by rule"],
        ),
        ("Exporting the store for Qlib", ["research", "export"]),
        ("Model: train, backtest and promote the baseline (skipped when one is in production)",
         lambda: _train_and_promote(settings)),
        (f"Paper trading {PAPER_FROM} .. {PAPER_TO} (built-in paper broker)", lambda: _paper_days(settings)),
        (f"Replaying {REPLAY_DAY} in dry-run: same signals, same orders?", ["replay", "--date", REPLAY_DAY]),
    ]  # fmt: skip


def main() -> int:
    try:
        settings = load_settings()
    except TraderError as exc:
        error(str(exc))
        return exc.exit_code
    plan = steps(settings)
    for number, (title, action) in enumerate(plan, start=1):
        shown = f"  (trader {' '.join(action)})" if isinstance(action, list) else ""
        console.rule(f"[bold]{number}/{len(plan) + 1} {title}[/bold]{shown}")
        code = run(action) if isinstance(action, list) else action()
        if code != 0:
            console.print(f"[red]demo stopped at step {number} ({title}): exit code {code}[/red]")
            return code
    console.rule(f"[bold]{len(plan) + 1}/{len(plan) + 1} What is in place[/bold]")
    engine = make_engine(settings.database_url)
    tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
    engine.dispose()
    reports = settings.artifacts_dir / "reports"
    console.print(f"database: {mask_url_password(settings.database_url)} ({len(tables)} tables)")
    console.print(f"data: {settings.data_dir}  - try: uv run trader data sql {EXAMPLE_QUERY!r}")
    console.print(
        f"daily reports: {reports}/<date>/ (pnl.html, pnl.md, blotter.csv); "
        f"replay: {reports}/{REPLAY_DAY}/replay.md"
    )
    console.print(
        f"models and backtests: {settings.artifacts_dir}/models, {settings.artifacts_dir}/backtests"
    )
    console.print(f"MLflow runs: {mask_url_password(settings.mlflow_tracking_uri)}")
    console.print(
        "next: uv run trader model list; uv run trader report pnl --date 2024-12-31; uv run trader --help"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
