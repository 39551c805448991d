"""``trader research``: export the adjusted store for Qlib, train strategies, backtest a trained
model (checks, model card, MLflow, registry) and walk forward over rolling windows."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.status import Status
from rich.table import Table

from trader.cli.data import parse_day
from trader.cli.output import console, key_value_table
from trader.config import Settings, load_settings
from trader.data.paths import DataPaths
from trader.errors import UsageError

if TYPE_CHECKING:
    from trader.research.artifacts import ModelArtifact
    from trader.research.evaluate import EvaluationResult
    from trader.research.train import TrainResult
    from trader.research.walk_forward import WalkForwardResult
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


class StageProgress(Protocol):
    """What the stage-progress display accepts: a stage name and a detail of its progress."""

    def __call__(self, stage: str, detail: str = "") -> None: ...


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

    with _progress(f"train {config.name}", STAGE_TEXT) as on_progress:
        result = train_strategy(
            config,
            provider_uri=provider,
            mlflow_uri=settings.mlflow_tracking_uri,
            artifacts_dir=settings.artifacts_dir,
            on_progress=on_progress,
        )
    console.print(key_value_table(f"Trained {config.name} ({config.kind.value})", summary_rows(result)))
    console.print(f"next: trader research backtest --version {result.artifact.version}")


def _load_strategy(name_or_path: str, *, to_train: bool = True) -> StrategyConfig:
    from trader.strategies.config import StrategyConfigError, load_strategy_config

    try:
        config = load_strategy_config(name_or_path)
        if to_train:
            config.check_trainable()
    except StrategyConfigError as exc:
        raise UsageError(f"--strategy: {exc}") from None
    return config


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
def _progress(title: str, texts: Mapping[str, str]) -> Iterator[StageProgress]:
    """A status line per stage (with the stage's latest detail) and, as each one ends, a line with
    its duration. ``texts`` says what each stage is doing."""
    with Status(f"{title}: starting", console=console) as status:
        current: list[tuple[str, float]] = []

        def close_stage() -> None:
            if current:
                stage, began = current.pop()
                console.print(f"  {stage:<9} {time.perf_counter() - began:6.1f}s")

        def on_progress(stage: str, detail: str = "") -> None:
            if not current or current[-1][0] != stage:
                close_stage()
                current.append((stage, time.perf_counter()))
            text = texts.get(stage, stage)
            status.update(f"{title}: {text}{f' ({detail})' if detail else ''} ...")

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


# --------------------------------------------------------------------------------------------------
# trader research backtest
# --------------------------------------------------------------------------------------------------

#: What each evaluation stage is doing, for the progress line.
EVALUATION_TEXT = {
    "backtest": "backtesting the test predictions (base, no cost, slippage x3, fees x2)",
    "checks": "running the leakage and validity checks",
    "card": "rendering the model card",
    "log": "logging to the model's MLflow run",
    "register": "registering the version in the model registry",
}


def _wide() -> Console:
    """The console; a wide one when printing to a pipe or a file, which has no width to fit (rich
    would squeeze tables into 80 columns)."""
    return console if console.is_terminal else Console(highlight=False, width=200)


def _say(text: str) -> None:
    """One line as is: no markup (a path or a reason may hold brackets), no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


@app.command()
def backtest(
    strategy: Annotated[
        str | None,
        typer.Option(
            help="Model name (a strategy's name, e.g. alpha_baseline) or a strategy YAML file whose name is "
            "used (default: STRATEGY_ID, or the model that has --version)."
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Model version to evaluate (default: the latest trained version).")
    ] = None,
    qlib_dir: Annotated[
        Path | None, typer.Option(help="Qlib export to backtest on (default: DATA_DIR/qlib).")
    ] = None,
) -> None:
    """Evaluate a trained model version: backtest its test predictions with US costs and the cost
    scenarios, run the leakage checks, write the model card, log it all to the model's MLflow run and
    register the version as staging in the model registry (DATABASE_URL).

    The backtest uses the strategy settings the model was trained with (its strategy.yaml): test
    segment, portfolio rule, costs, promotion thresholds. Output: ARTIFACTS_DIR/backtests/
    <name>-<version>-<UTC time>/. Exit 0 when the evaluation ran, even if the release gate would
    refuse the model; promote it with 'trader model promote NAME VERSION --to production'.
    """
    from trader.research.evaluate import evaluate_model
    from trader.store.db import make_engine

    settings = load_settings()
    artifact = find_artifact(settings.artifacts_dir, strategy, version, default_name=settings.strategy_id)
    provider = qlib_dir if qlib_dir is not None else default_export_target(settings)
    engine = make_engine(settings.database_url)
    try:
        with _progress(f"backtest {artifact.name} {artifact.version}", EVALUATION_TEXT) as on_progress:
            result = evaluate_model(
                artifact,
                provider_uri=provider,
                data_paths=DataPaths(settings.data_dir),
                artifacts_dir=settings.artifacts_dir,
                mlflow_uri=settings.mlflow_tracking_uri,
                engine=engine,
                on_progress=on_progress,
            )
    finally:
        engine.dispose()
    print_evaluation(result, settings)


def find_artifact(
    artifacts_dir: Path, strategy: str | None, version: str | None, *, default_name: str
) -> ModelArtifact:
    """The artifact ``trader research backtest`` evaluates.

    ``strategy`` is a model name or a strategy YAML (its ``name``); without it, a ``version`` is looked
    up under every model, and with neither the latest version of ``default_name`` (STRATEGY_ID) is
    used. An unknown model name or version is bad usage (exit code 2); no trained model at all is a
    failure (exit code 1).
    """
    from trader.research.artifacts import ArtifactError, ModelArtifact, list_versions, models_root

    trained = _trained_models(artifacts_dir)
    if strategy is not None:
        name = (
            _load_strategy(strategy, to_train=False).name
            if strategy.endswith((".yaml", ".yml")) or "/" in strategy
            else strategy
        )
    elif version is not None:
        owners = [model for model in trained if version in list_versions(artifacts_dir, model)]
        if len(owners) > 1:
            raise UsageError(
                f"--version {version} exists for {', '.join(owners)}; choose one with --strategy"
            )
        name = owners[0] if owners else default_name
    else:
        name = default_name
    if name not in trained:
        where = models_root(artifacts_dir, name)
        if not trained:
            raise ArtifactError(f"no trained model under {where.parent}; run 'trader research train' first")
        raise UsageError(
            f"--strategy: no trained model {name!r} under {where.parent} (trained: {', '.join(trained)}); "
            f"train it with 'trader research train --strategy {name}'"
        )
    try:
        return ModelArtifact.find(artifacts_dir, name, version)
    except ArtifactError as exc:
        raise UsageError(f"--version: {exc}") from None


def _trained_models(artifacts_dir: Path) -> list[str]:
    from trader.research.artifacts import MODELS_FOLDER, list_versions

    root = artifacts_dir / MODELS_FOLDER
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and list_versions(artifacts_dir, p.name))


def _pct(value: object) -> str:
    number = _finite(value)
    return f"{number * 100:.2f}%" if number is not None else "n/a"


def _num(value: object, digits: int = 3) -> str:
    number = _finite(value)
    return f"{number:.{digits}f}" if number is not None else "n/a"


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, NaN, not a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def scenario_table(result: EvaluationResult) -> Table:
    """One row per cost scenario: returns, Sharpe, drawdown, turnover, costs, and the signal's IC."""
    metrics = result.backtest.metrics
    ic = metrics["summary"].get("ic")
    table = Table(title="Backtest (test segment, after costs)", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("scenario", no_wrap=True)
    for column in ("total return", "ann. return", "Sharpe", "max DD", "turnover/day", "costs", "IC"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in metrics["scenario_table"]:
        table.add_row(
            str(row["scenario"]),
            _pct(row["total_return"]),
            _pct(row["annualized_return"]),
            _num(row["sharpe"]),
            _pct(row["max_drawdown"]),
            _pct(row["mean_daily_turnover"]),
            f"${row['total_costs']:,.0f}" if _finite(row["total_costs"]) is not None else "n/a",
            _num(ic, 4),
        )
    return table


def print_evaluation(result: EvaluationResult, settings: Settings) -> None:
    """The summary of ``trader research backtest``."""
    from trader.config import mask_url_password

    out = _wide()
    summary = result.backtest.summary
    period = result.backtest.metrics["inputs"]["period"]
    out.print(scenario_table(result))
    _say(
        f"period {period['start']} .. {period['end']} ({period['sessions']} sessions); signal IC "
        f"{_num(summary.get('ic'), 4)}, rank IC {_num(summary.get('rank_ic'), 4)}, ICIR "
        f"{_num(summary.get('icir'))}; benchmark (equal weight) ann. return "
        f"{_pct(summary.get('benchmark_annualized_return'))}, Sharpe {_num(summary.get('benchmark_sharpe'))}"
    )
    checks = result.checks
    _say(f"checks: {'passed' if checks.passed else 'FAILED'}: {checks.summary()}")
    for item in checks.results:
        _say(f"  {'pass' if item.passed else 'FAIL'}  {item.name}: {item.detail}")
    _say(f"report: {result.backtest.paths.report}")
    _say(f"checks file: {result.checks_path}")
    _say(f"model card: {result.model_card} (snapshot: {result.model_card_snapshot})")
    run = result.mlflow_run_id or "none (the artifact has no MLflow run)"
    _say(f"MLflow run: {run} in {mask_url_password(settings.mlflow_tracking_uri)}")
    entry = result.entry
    _say(f"registry: {entry.model_name} {entry.version} is {entry.stage.value} (row {entry.id})")
    gate = result.gate
    _say(f"release gate preview: {'would pass' if gate.passed else 'would be REFUSED'}")
    for line in gate.reasons if not gate.passed else (gate.summary,):
        _say(f"  - {line}")
    for note in result.notes:
        _say(f"note: {note}")
    _say(f"time: {result.seconds:.1f}s")
    _say(f"next: trader model promote {entry.model_name} {entry.version} --to production")


# --------------------------------------------------------------------------------------------------
# trader research walk-forward
# --------------------------------------------------------------------------------------------------


@app.command("walk-forward")
def walk_forward(
    strategy: Annotated[
        str | None,
        typer.Option(help="Built-in strategy name or path of a strategy YAML file (default: STRATEGY_ID)."),
    ] = None,
    train_years: Annotated[
        int, typer.Option(help="Years of training per window (the shortest training with --expanding).")
    ] = 2,
    valid_months: Annotated[int, typer.Option(help="Months of validation (early stopping) per window.")] = 6,
    test_months: Annotated[int, typer.Option(help="Months of out-of-sample test per window.")] = 6,
    step_months: Annotated[
        int, typer.Option(help="Months between windows (at least --test-months: tests never overlap).")
    ] = 6,
    start: Annotated[
        str | None, typer.Option(help="First day windows may use (YYYY-MM-DD; default: the export's first).")
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            help="Last day of the last test window (YYYY-MM-DD; default: the export's last session)."
        ),
    ] = None,
    qlib_dir: Annotated[
        Path | None, typer.Option(help="Qlib export to train on (default: DATA_DIR/qlib).")
    ] = None,
    expanding: Annotated[
        bool,
        typer.Option(
            "--expanding/--rolling",
            help="Expanding: every window trains from the first usable day (all history so far). "
            "Rolling (default): each trains on its last --train-years.",
        ),
    ] = False,
) -> None:
    """Retrain on rolling (or expanding) windows and report out-of-sample metrics per window.

    Windows are laid backwards from the last session: the last test window ends on it, each earlier
    one starts --step-months earlier. Each window trains (one MLflow run, a child of the walk-forward
    run) and backtests its test segment with the strategy's base costs. Output:
    ARTIFACTS_DIR/walk_forward/<strategy>-<UTC time>/ (walk_forward.json, windows.csv, report.md). A
    weekly schedule runs exactly this command.
    """
    from trader.research.walk_forward import WalkForwardSpec, run_walk_forward

    settings = load_settings()
    config = _load_strategy(strategy or settings.strategy_id)
    spec = WalkForwardSpec(
        train_years=train_years,
        valid_months=valid_months,
        test_months=test_months,
        step_months=step_months,
        start=parse_day(start, "--start") if start is not None else None,
        end=parse_day(end, "--end") if end is not None else None,
        expanding=expanding,
    )
    spec.check()
    provider = qlib_dir if qlib_dir is not None else default_export_target(settings)
    with _window_progress(f"walk-forward {config.name}") as on_progress:
        result = run_walk_forward(
            config,
            provider_uri=provider,
            mlflow_uri=settings.mlflow_tracking_uri,
            artifacts_dir=settings.artifacts_dir,
            spec=spec,
            on_progress=on_progress,
        )
    print_walk_forward(result)


@contextmanager
def _window_progress(title: str) -> Iterator[WindowProgress]:
    """A progress bar over the windows; the description says what the current window is doing."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"{title}: planning windows", total=None)
        began = [time.perf_counter()]

        def on_progress(window: int, total: int, stage: str, detail: str = "") -> None:
            bar.update(task, total=total)
            if stage == "done":
                bar.advance(task)
                console.print(f"  window {window}/{total} {time.perf_counter() - began[0]:6.1f}s")
                began[0] = time.perf_counter()
                return
            extra = f": {detail}" if detail else ""
            bar.update(task, description=f"{title}: window {window}/{total} {stage}{extra}")

        yield on_progress


class WindowProgress(Protocol):
    def __call__(self, window: int, total: int, stage: str, detail: str = "") -> None: ...


def print_walk_forward(result: WalkForwardResult) -> None:
    """The windows table, the mean and std over windows, and where everything is."""
    from trader.research.walk_forward import WINDOW_METRICS

    labels = {
        "ic": ("IC", 4, False),
        "rank_ic": ("rank IC", 4, False),
        "annualized_return": ("ann. return", 2, True),
        "excess_annualized_return": ("excess", 2, True),
        "sharpe": ("Sharpe", 3, False),
        "max_drawdown": ("max DD", 2, True),
        "turnover": ("turnover/day", 2, True),
    }

    def shown(name: str, value: float) -> str:
        _, digits, pct = labels[name]
        return _pct(value) if pct else _num(value, digits)

    table = Table(title=f"Walk-forward {result.strategy}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("window", "train", "valid", "test"):
        table.add_column(column, no_wrap=True)
    for name in WINDOW_METRICS:
        table.add_column(labels[name][0], justify="right", no_wrap=True)
    for w in result.windows:
        seg = w.window.segments
        table.add_row(
            str(w.window.index),
            f"{seg.train.start}..{seg.train.end}",
            f"{seg.valid.start}..{seg.valid.end}",
            f"{seg.test.start}..{seg.test.end}",
            *(shown(name, w.metrics[name]) for name in WINDOW_METRICS),
        )
    for stat in ("mean", "std"):
        table.add_row(
            stat, "", "", "", *(shown(name, result.summary[f"{name}.{stat}"]) for name in WINDOW_METRICS)
        )
    _wide().print(table)
    _say(f"windows with IC > 0: {_pct(result.summary['ic_positive_share'])} of {len(result.windows)}")
    _say(f"report: {result.report_path}")
    _say(f"results: {result.result_path} and {result.windows_path}")
    _say(f"MLflow parent run: {result.parent_run_id} (one child run per window)")
    _say(f"time: {result.seconds:.1f}s")
