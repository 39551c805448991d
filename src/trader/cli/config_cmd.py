"""``trader config``: show and check the effective configuration."""

from __future__ import annotations

import typer

from trader.cli.output import console, key_value_table
from trader.config import load_settings

app = typer.Typer(
    help="Show or check the effective configuration (environment + .env).", no_args_is_help=True
)


@app.command()
def show() -> None:
    """Print every setting with its effective value; secrets and URL passwords are masked."""
    console.print(key_value_table("Effective configuration", load_settings().describe()))


@app.command()
def check() -> None:
    """Validate the configuration; exit code 2 and one line per problem when it is invalid."""
    settings = load_settings()
    if settings.is_alpaca_live_host:
        mode = "LIVE (real money)"
    elif settings.is_live:
        mode = f"LIVE (real money possible: {settings.broker_host} is not a known paper broker)"
    else:
        mode = "paper"
    dry = "DRY_RUN on: orders are recorded, not sent" if settings.dry_run else "DRY_RUN off: orders are sent"
    console.print(f"configuration OK - broker mode: {mode}; {dry}")
