"""``trader research``: export the adjusted store for Qlib, train strategies; backtest and walk-forward
to come."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.status import Status

from trader.cli import planned
from trader.cli.data import parse_day
from trader.cli.output import console, key_value_table
from trader.config import Settings, load_settings
from trader.data.paths import DataPaths
from trader.errors import UsageError

if TYPE_CHECKING:
    from trader.research.train import TrainResult
    from trader.strategies.config import StrategyConfig

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


#: What each training stage is doing, for the progress line.
STAGE_TEXT = {
    "features": "computing features through Qlib",
    "fit": "fitting LightGBM (early stopping on valid)",
    "predict": "scoring valid and test, measuring IC",
    "save": "saving the model artifact",
    "log": "logging the run to MLflow",
}
SEGMENT_OPTIONS = ("train", "valid", "test")


@app.command()
def train(
    strategy: Annotated[
        str | None,
        typer.Option(help="Built-in strategy name or path of a strategy YAML file (default: STRATEGY_ID)."),
    ] = None,
    train_start: Annotated[
        str | None, typer.Option(help="Override segments.train.start (YYYY-MM-DD).")
    ] = None,
    train_end: Annotated[str | None, typer.Option(help="Override segments.train.end (YYYY-MM-DD).")] = None,
    valid_start: Annotated[
        str | None, typer.Option(help="Override segments.valid.start (YYYY-MM-DD).")
    ] = None,
    valid_end: Annotated[str | None, typer.Option(help="Override segments.valid.end (YYYY-MM-DD).")] = None,
    test_start: Annotated[str | None, typer.Option(help="Override segments.test.start (YYYY-MM-DD).")] = None,
    test_end: Annotated[str | None, typer.Option(help="Override segments.test.end (YYYY-MM-DD).")] = None,
    qlib_dir: Annotated[
        Path | None, typer.Option(help="Qlib export to train on (default: DATA_DIR/qlib).")
    ] = None,
) -> None:
    """Train a strategy on the Qlib export, save the model artifact and track the run in MLflow.

    alpha_baseline: Alpha158 features + LightGBM (early stopping on the valid segment), scores of
    valid and test. momentum: model-free past-return scores. The artifact goes to
    ARTIFACTS_DIR/models/<name>/<version>/, the run to MLFLOW_TRACKING_URI.
    """
    settings = load_settings()
    overrides = {
        "train": (train_start, train_end),
        "valid": (valid_start, valid_end),
        "test": (test_start, test_end),
    }
    config = with_segment_overrides(_load_strategy(strategy or settings.strategy_id), overrides)
    provider = qlib_dir if qlib_dir is not None else default_export_target(settings)

    from trader.research.train import train_strategy

    with _progress(config.name) as on_progress:
        result = train_strategy(
            config,
            provider_uri=provider,
            mlflow_uri=settings.mlflow_tracking_uri,
            artifacts_dir=settings.artifacts_dir,
            on_progress=on_progress,
        )
    console.print(key_value_table(f"Trained {config.name} ({config.kind.value})", summary_rows(result)))
    console.print(f"next: trader research backtest --version {result.artifact.version}")


def _load_strategy(name_or_path: str) -> StrategyConfig:
    from trader.strategies.config import StrategyConfigError, load_strategy_config

    try:
        return load_strategy_config(name_or_path)
    except StrategyConfigError as exc:
        raise UsageError(f"--strategy: {exc}") from None


def with_segment_overrides(
    config: StrategyConfig, overrides: dict[str, tuple[str | None, str | None]]
) -> StrategyConfig:
    """``config`` with the dates given on the command line; a bad date or order names the options."""
    from trader.strategies.config import Segments

    current = config.segments.model_dump()
    given: list[str] = []
    for segment, (start, end) in overrides.items():
        for bound, value in (("start", start), ("end", end)):
            if value is None:
                continue
            flag = f"--{segment}-{bound}"
            current[segment][bound] = parse_day(value, flag)
            given.append(flag)
    if not given:
        return config
    try:
        segments = Segments.model_validate(current)
    except ValidationError as exc:
        problems = "; ".join(_validation_problem(e["loc"], e["msg"]) for e in exc.errors())
        raise UsageError(f"{', '.join(given)}: {problems} (segments: {_describe(current)})") from None
    return config.with_segments(segments)


def _validation_problem(location: tuple[int | str, ...], message: str) -> str:
    text = message.removeprefix("Value error, ")
    return f"{'.'.join(map(str, location))}: {text}" if location else text


def _describe(segments: dict[str, dict[str, date]]) -> str:
    return ", ".join(f"{name} {segments[name]['start']}..{segments[name]['end']}" for name in SEGMENT_OPTIONS)


@contextmanager
def _progress(name: str) -> Iterator[Callable[[str], None]]:
    """A status line per stage and, as each one ends, a line with its duration."""
    with Status(f"train {name}: starting", console=console) as status:
        current: list[tuple[str, float]] = []

        def close_stage() -> None:
            if current:
                stage, began = current.pop()
                console.print(f"  {stage:<9} {time.perf_counter() - began:6.1f}s")

        def on_progress(stage: str) -> None:
            close_stage()
            current.append((stage, time.perf_counter()))
            status.update(f"train {name}: {STAGE_TEXT.get(stage, stage)} ...")

        yield on_progress
        close_stage()


def summary_rows(result: TrainResult) -> dict[str, str]:
    """The summary table of a finished training."""
    artifact = result.artifact
    rows = artifact.info["rows"]
    metrics = result.metrics
    table = {
        "version": artifact.version,
        "MLflow run": result.run_id,
        "rows": f"train {rows['train']:,}, valid {rows['valid']:,}, test {rows['test']:,}",
        "IC valid": _ic_text(metrics, "valid"),
        "IC test": _ic_text(metrics, "test"),
    }
    if "best_iteration" in metrics:
        table["best iteration"] = f"{int(metrics['best_iteration'])} of {int(metrics.get('iterations', 0))}"
    table["time"] = f"{result.seconds:.1f}s"
    table["artifact"] = str(artifact.path)
    return table


def _ic_text(metrics: dict[str, float], segment: str) -> str:
    ic, rank = metrics.get(f"ic.{segment}", math.nan), metrics.get(f"rank_ic.{segment}", math.nan)
    if not math.isfinite(ic):
        return "n/a (no session with varying scores and labels)"
    return f"{ic:+.4f} (rank IC {rank:+.4f}, ICIR {metrics.get(f'icir.{segment}', math.nan):+.3f})"


planned.register(app, planned.RESEARCH_PLANNED)
