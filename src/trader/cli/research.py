"""``trader research``: export the adjusted store for Qlib; train, backtest and walk-forward to come."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.status import Status

from trader.cli import planned
from trader.cli.output import console, key_value_table
from trader.config import Settings, load_settings
from trader.data.paths import DataPaths

app = typer.Typer(
    help=(
        "Research on Qlib: export the adjusted store into Qlib's binary layout; train, backtest and "
        "walk-forward of strategies, tracked in MLflow."
    ),
    no_args_is_help=True,
)

#: Where ``trader research export`` writes unless told otherwise, under ``DATA_DIR``: the export is
#: derived data, rebuilt from the adjusted store, not a run's output (those go to ``ARTIFACTS_DIR``).
QLIB_FOLDER = "qlib"


def default_export_target(settings: Settings) -> Path:
    """``DATA_DIR/qlib``: the Qlib provider folder that research commands read."""
    return settings.data_dir / QLIB_FOLDER


@app.command()
def export(
    target: Annotated[
        Path | None,
        typer.Option(help="Folder to write the Qlib data into (default: DATA_DIR/qlib)."),
    ] = None,
) -> None:
    """Write the adjusted store into Qlib's binary layout (calendar, instruments, per-field .day.bin).

    Incremental: only files whose contents change are rewritten, so a re-run after ingesting one new
    day rewrites the calendar and the files of the symbols that traded that day. Qlib then reads it
    with qlib.init(provider_uri=<target>, region="us"), offline.
    """
    from trader.research.qlib_export import QlibExporter

    settings = load_settings()
    folder = target if target is not None else default_export_target(settings)
    exporter = QlibExporter(DataPaths(settings.data_dir), folder)
    with Status("export: starting", console=console) as status:
        report = exporter.export(on_progress=lambda message: status.update(f"export: {message} ..."))
    changed = len(report.changed_symbols)
    console.print(
        key_value_table(
            "Qlib export",
            {
                "symbols": f"{report.symbols:,} ({changed:,} changed)",
                "instrument ranges (all.txt)": f"{report.instruments:,}",
                "sessions": f"{report.days:,} ({report.first_day} .. {report.last_day})",
                "files": (
                    f"{report.files_written:,} written, {report.files_unchanged:,} unchanged, "
                    f"{report.files_removed:,} removed"
                ),
                "time": f"{report.seconds:.2f}s",
                "target": str(report.target),
            },
        )
    )


planned.register(app, planned.RESEARCH_PLANNED)
