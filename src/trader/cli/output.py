"""What commands print: results on stdout, one-line problems on stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

console = Console(highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """One line on stderr, never a traceback."""
    print(f"trader: error: {message}", file=sys.stderr)


def key_value_table(title: str, rows: dict[str, str]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("value")
    for key, value in rows.items():
        table.add_row(key, value)
    return table
