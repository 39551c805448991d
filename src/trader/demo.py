"""``make demo``: run the main job on the embedded defaults and say what happened.

Today the main job is the foundation and the data layer: validate the configuration, create or
upgrade the database schema, generate the synthetic market and ingest it through the data pipeline
(raw -> adjust -> quality gate -> adjusted store), show the data status, query the catalog and show
what is in place. Later issues extend this script to the full paper-trading day (model training,
paper broker, orders, fills, P&L report) without changing how it is started.
"""

from __future__ import annotations

import sys

from sqlalchemy import inspect

from trader.cli.main import run
from trader.cli.output import console
from trader.config import load_settings, mask_url_password
from trader.errors import TraderError
from trader.store.db import make_engine

DEMO_MARKET = ["--symbols", "50", "--start", "2019-01-02", "--end", "2024-12-31", "--seed", "7"]
DEMO_NOW = "2025-01-02T14:00:00Z"
EXAMPLE_QUERY = "select * from bars_adj where symbol = 'SYN001' order by date desc limit 5"


def main() -> int:
    steps: list[tuple[str, list[str]]] = [
        ("Checking the configuration", ["config", "check"]),
        ("Creating or upgrading the database schema", ["db", "upgrade"]),
        ("Checking the schema revision", ["db", "current"]),
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
    ]
    for number, (title, args) in enumerate(steps, start=1):
        console.rule(f"[bold]{number}/{len(steps) + 1} {title}[/bold]  (trader {' '.join(args)})")
        code = run(args)
        if code != 0:
            console.print(f"[red]demo stopped: 'trader {' '.join(args)}' exited with {code}[/red]")
            return code
    console.rule(f"[bold]{len(steps) + 1}/{len(steps) + 1} What is in place[/bold]")
    try:
        settings = load_settings()
    except TraderError as exc:  # pragma: no cover - step 1 already validated the configuration
        console.print(str(exc))
        return exc.exit_code
    engine = make_engine(settings.database_url)
    tables = sorted(t for t in inspect(engine).get_table_names() if t != "alembic_version")
    engine.dispose()
    console.print(f"database: {mask_url_password(settings.database_url)}")
    console.print(f"tables ({len(tables)}): {', '.join(tables)}")
    mode = "DRY_RUN (orders recorded, never sent)" if settings.dry_run else "orders are SENT"
    console.print(f"broker: {str(settings.alpaca_base_url).rstrip('/')} - {mode}")
    console.print(f"data: {settings.data_dir} - query it with: uv run trader data sql {EXAMPLE_QUERY!r}")
    console.print(
        "\nThe rest of the paper-trading day (model -> signals -> orders -> fills -> P&L) is not built "
        "yet; this demo grows with each issue. Next: 'uv run trader --help'."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
