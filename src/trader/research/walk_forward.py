"""Walk-forward: retrain a strategy on rolling (or expanding) windows and measure each window out of
sample.

:func:`plan_windows` lays windows over the export's calendar **backwards from the end**: the last
window's test segment ends on the last session (of the data, or ``--end``), each earlier window
starts ``step_months`` earlier, and windows are kept while their training segment fits in the data
(from ``--start``, or the export's first session). So a scheduled run always tests on the most recent
data, and with ``step_months == test_months`` the test segments tile the timeline without overlap.

Each window is ``train_years`` of training, ``valid_months`` of validation and ``test_months`` of
test, in calendar months. With ``expanding`` the windows are laid out the same way, but each one
trains from the first usable session instead of ``train_years`` before its validation: the oldest
window trains on (at least) ``train_years``, every later one on all the history before it. Between
one segment's last session and the next one's first lie exactly
``label_horizon`` sessions (the label of the last training day looks that far ahead), taken from the
end of the earlier segment, so the test segments keep their full months.

:func:`run_walk_forward` trains every window through
:func:`~trader.research.train.train_strategy` (one MLflow run and one model artifact per window),
backtests its test predictions with the strategy's base costs
(:func:`~trader.research.backtest.run_backtest`), and writes into
``ARTIFACTS_DIR/walk_forward/<strategy>-<UTC time>/``::

    walk_forward.json     the plan, every window's segments, metrics, model version and run id, the summary
    windows.csv           one row per window
    report.md             the same as a Markdown report
    windows/<NN>/         the window's backtest (metrics.json, positions/trades/equity CSV, report.html)
    models/<name>/<ver>/  the window's model artifact (kept out of ARTIFACTS_DIR/models, so the
                          production candidates listed by ``trader research backtest`` stay separate)

In MLflow, one parent run (``trader.stage=walk_forward``) holds the summary and the reports, and each
window's training run is its child (tag ``mlflow.parentRunId``, renamed
``walk-forward-<strategy>-window-<NN>``) with the window's backtest metrics and backtest folder.
"""

from __future__ import annotations

import calendar
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from trader.data.store import write_atomic
from trader.errors import UsageError
from trader.research.artifacts import export_fingerprint, free_folder, version_at
from trader.research.backtest import BacktestResult, run_backtest
from trader.research.tracking import RunStatus, end_run, log_to_run, start_run
from trader.research.train import export_sessions, train_strategy
from trader.strategies.config import DateRange, Segments, StrategyConfig

#: Where walk-forward runs go, under ``ARTIFACTS_DIR``.
WALK_FORWARD_FOLDER = "walk_forward"
RESULT_FILE = "walk_forward.json"
WINDOWS_FILE = "windows.csv"
REPORT_FILE = "report.md"
RESULT_FORMAT = 1
#: The out-of-sample metrics of a window (keys of the backtest ``summary`` they come from).
WINDOW_METRICS: dict[str, str] = {
    "ic": "ic",
    "rank_ic": "rank_ic",
    "annualized_return": "annualized_return",
    "excess_annualized_return": "excess_annualized_return",
    "sharpe": "sharpe",
    "max_drawdown": "max_drawdown",
    "turnover": "mean_daily_turnover",
}

SessionCounter = Callable[[date, date], int]


class WalkForwardError(UsageError):
    """The walk-forward settings do not fit the data (the message names the option to change)."""


class WalkForwardProgress(Protocol):
    """Called with the 1-based window, the number of windows, a stage (``train``, ``backtest``,
    ``done``) and a detail of the stage's progress."""

    def __call__(self, window: int, total: int, stage: str, detail: str = "") -> None: ...


@dataclass(frozen=True)
class WalkForwardSpec:
    """Window sizes (calendar years and months) and the span of data windows may use."""

    train_years: int = 2
    valid_months: int = 6
    test_months: int = 6
    step_months: int = 6
    start: date | None = None
    end: date | None = None
    #: Train each window from the first usable session (all history so far) instead of a rolling
    #: ``train_years``; ``train_years`` is then the shortest training a window gets.
    expanding: bool = False

    def check(self) -> None:
        """Refuse sizes that cannot work, naming the option."""
        for option, value in (
            ("--train-years", self.train_years),
            ("--valid-months", self.valid_months),
            ("--test-months", self.test_months),
            ("--step-months", self.step_months),
        ):
            if value < 1:
                raise WalkForwardError(f"{option} must be at least 1, got {value}")
        if self.step_months < self.test_months:
            raise WalkForwardError(
                f"--step-months ({self.step_months}) is shorter than --test-months ({self.test_months}): "
                "the test segments would overlap and count the same sessions twice"
            )
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise WalkForwardError(f"--start ({self.start}) must be before --end ({self.end})")

    @property
    def window_months(self) -> int:
        return 12 * self.train_years + self.valid_months + self.test_months

    def as_dict(self) -> dict[str, Any]:
        return {
            "train_years": self.train_years,
            "valid_months": self.valid_months,
            "test_months": self.test_months,
            "step_months": self.step_months,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "expanding": self.expanding,
        }


@dataclass(frozen=True)
class Window:
    """One window: its 1-based position in time order and its segments."""

    index: int
    segments: Segments


def shift_months(day: date, months: int) -> date:
    """``day`` moved by ``months`` calendar months, the day clipped to the month's length
    (``2024-03-31`` minus one month is ``2024-02-29``)."""
    position = day.year * 12 + day.month - 1 + months
    year, month = divmod(position, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def exchange_sessions_before(first: date, until: date) -> int:
    """How many XNYS sessions lie in ``[first, until)`` (the export's calendar is XNYS's)."""
    if first >= until:
        return 0
    from trader.data.calendar import trading_calendar

    return len(trading_calendar().sessions(first, until - timedelta(days=1)))


def plan_windows(
    sessions: Sequence[date],
    spec: WalkForwardSpec,
    label_horizon: int,
    *,
    missing_sessions: SessionCounter = exchange_sessions_before,
) -> list[Window]:
    """The windows of ``spec`` over ``sessions`` (the export's calendar), oldest first.

    Laid backwards from the last session (or ``spec.end``) in steps of ``step_months``; a window is
    kept while its training segment starts inside the data: its first calendar day is on or after
    the first usable session (``spec.start`` or the export's first), or only non-session days (a
    weekend, a holiday) lie between them (``missing_sessions`` counts exchange sessions in
    ``[boundary, first usable session)``). With ``spec.expanding`` a kept window's training then
    starts on the first usable session. :class:`WalkForwardError` when no window fits.
    """
    spec.check()
    days = sorted(
        d for d in sessions if (spec.start is None or d >= spec.start) and (spec.end is None or d <= spec.end)
    )
    if not days:
        raise WalkForwardError(
            f"no session of the export lies in --start {spec.start} .. --end {spec.end}; the export holds "
            f"{min(sessions, default='nothing')} .. {max(sessions, default='nothing')}"
        )
    first, last = days[0], days[-1]
    boundary = last + timedelta(days=1)  # exclusive end of the last test segment
    position = {d: i for i, d in enumerate(days)}
    planned: list[Segments] = []
    step = 0
    while True:
        offset = step * spec.step_months
        train_from = shift_months(boundary, -(offset + spec.window_months))
        if train_from < first and missing_sessions(train_from, first) > 0:
            break
        valid_from = shift_months(boundary, -(offset + spec.test_months + spec.valid_months))
        test_from = shift_months(boundary, -(offset + spec.test_months))
        test_until = shift_months(boundary, -offset)
        # Which windows exist is decided by the rolling training (the shortest an expanding window
        # gets), so both modes plan the same windows; expanding ones then train from the first day.
        segments = _segments(
            days, position, train_from, valid_from, test_from, test_until, horizon=label_horizon
        )
        if segments is None:
            break
        if spec.expanding:
            segments = (
                _segments(days, position, first, valid_from, test_from, test_until, horizon=label_horizon)
                or segments
            )
        planned.append(segments)
        step += 1
    if not planned:
        raise WalkForwardError(
            f"no complete window fits in {first} .. {last}: a window needs {spec.train_years} year(s) of "
            f"training + {spec.valid_months} month(s) of validation + {spec.test_months} month(s) of test "
            f"= {spec.window_months} months; shorten --train-years/--valid-months/--test-months or widen "
            "--start/--end"
        )
    return [Window(index, segments) for index, segments in enumerate(reversed(planned), 1)]


def _segments(
    days: Sequence[date],
    position: Mapping[date, int],
    train_from: date,
    valid_from: date,
    test_from: date,
    test_until: date,
    horizon: int,
) -> Segments | None:
    """Segments from calendar boundaries; the gaps of ``horizon`` sessions come out of the end of
    train and valid. ``None`` when a segment would hold no session."""
    test = [d for d in days if test_from <= d < test_until]
    valid_start = next((d for d in days if d >= valid_from), None)
    train_start = next((d for d in days if d >= train_from), None)
    if not test or valid_start is None or train_start is None:
        return None
    valid_end_at = position[test[0]] - horizon - 1
    train_end_at = position[valid_start] - horizon - 1
    if valid_end_at < position[valid_start] or train_end_at < position[train_start]:
        return None
    return Segments(
        train=DateRange(start=train_start, end=days[train_end_at]),
        valid=DateRange(start=valid_start, end=days[valid_end_at]),
        test=DateRange(start=test[0], end=test[-1]),
        label_horizon=horizon,
    )


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowResult:
    """One window after training and backtesting: its out-of-sample metrics (see :data:`WINDOW_METRICS`)."""

    window: Window
    version: str
    run_id: str
    artifact_path: Path
    backtest_dir: Path
    test_sessions: int
    metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        seg = self.window.segments
        return {
            "window": self.window.index,
            "train": list(seg.train.as_tuple()),
            "valid": list(seg.valid.as_tuple()),
            "test": list(seg.test.as_tuple()),
            "test_sessions": self.test_sessions,
            "metrics": {k: _json_float(v) for k, v in self.metrics.items()},
            "version": self.version,
            "mlflow_run_id": self.run_id,
            "artifact": str(self.artifact_path),
            "backtest": str(self.backtest_dir),
        }


@dataclass(frozen=True)
class WalkForwardResult:
    """A finished walk-forward: every window, the summary over them, where it was written and tracked."""

    strategy: str
    spec: WalkForwardSpec
    out_dir: Path
    parent_run_id: str
    windows: list[WindowResult]
    summary: dict[str, float]
    seconds: float

    @property
    def result_path(self) -> Path:
        return self.out_dir / RESULT_FILE

    @property
    def windows_path(self) -> Path:
        return self.out_dir / WINDOWS_FILE

    @property
    def report_path(self) -> Path:
        return self.out_dir / REPORT_FILE


def window_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The window metrics from a backtest ``summary`` (NaN where the backtest had no value)."""
    metrics: dict[str, float] = {}
    for name, key in WINDOW_METRICS.items():
        value = summary.get(key)
        metrics[name] = (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        )
    return metrics


def summarize(windows: Sequence[WindowResult]) -> dict[str, float]:
    """Mean and sample standard deviation of each metric over the windows that have it (std NaN
    under two windows), the number of windows and the share of windows whose IC is above 0."""
    summary: dict[str, float] = {"windows": float(len(windows))}
    for name in WINDOW_METRICS:
        values = [w.metrics[name] for w in windows if math.isfinite(w.metrics[name])]
        summary[f"{name}.mean"] = statistics.fmean(values) if values else math.nan
        summary[f"{name}.std"] = statistics.stdev(values) if len(values) > 1 else math.nan
    positive = sum(1 for w in windows if w.metrics["ic"] > 0)
    summary["ic_positive_share"] = positive / len(windows) if windows else math.nan
    return summary


def new_run_dir(artifacts_dir: Path, strategy: str, now: datetime) -> Path:
    """``ARTIFACTS_DIR/walk_forward/<strategy>-<UTC time>`` (``-2``, ... when that second is taken)."""
    return free_folder(artifacts_dir / WALK_FORWARD_FOLDER, f"{strategy}-{version_at(now)}")


def _silent(window: int, total: int, stage: str, detail: str = "") -> None:
    return None


def run_walk_forward(
    config: StrategyConfig,
    *,
    provider_uri: Path,
    mlflow_uri: str,
    artifacts_dir: Path,
    spec: WalkForwardSpec | None = None,
    on_progress: WalkForwardProgress | None = None,
    clock: Callable[[], datetime] | None = None,
) -> WalkForwardResult:
    """Train and backtest ``config`` on every window of ``spec`` (see the module docstring).

    ``config``'s own segments are replaced by each window's. Raises :class:`WalkForwardError` (exit
    code 2) when no window fits the export; a window that cannot be trained or backtested stops the
    run (its error is raised, the parent MLflow run is marked ``FAILED``, the windows done so far
    stay on disk).
    """
    began = time.perf_counter()
    spec = spec or WalkForwardSpec()
    say: WalkForwardProgress = on_progress or _silent
    windows = plan_windows(export_sessions(provider_uri), spec, config.segments.label_horizon)
    now = (clock or (lambda: datetime.now(UTC)))()
    out_dir = new_run_dir(artifacts_dir, config.name, now)
    out_dir.mkdir(parents=True)
    # The parent run creates the strategy's experiment (if needed) with its artifacts under
    # ARTIFACTS_DIR/mlruns; the windows' training runs, saved under out_dir, join that experiment.
    parent = start_run(
        mlflow_uri,
        config.name,
        artifacts_dir,
        run_name=f"walk-forward-{config.name}",
        tags={
            "trader.stage": "walk_forward",
            "trader.strategy": config.name,
            "trader.kind": config.kind.value,
            "trader.walk_forward": out_dir.name,
        },
    )
    try:
        log_to_run(
            parent,
            tracking_uri=mlflow_uri,
            params={**{f"walk_forward.{k}": v for k, v in spec.as_dict().items()}, "windows": len(windows)},
        )
        results = [
            _run_window(window, len(windows), config, provider_uri, mlflow_uri, out_dir, parent, say)
            for window in windows
        ]
        summary = summarize(results)
        result = WalkForwardResult(
            config.name, spec, out_dir, parent, results, summary, time.perf_counter() - began
        )
        _write_reports(result, config, provider_uri)
        log_to_run(
            parent,
            tracking_uri=mlflow_uri,
            metrics={k: v for k, v in summary.items() if math.isfinite(v)},
            artifacts=[result.result_path, result.windows_path, result.report_path],
            artifact_path="walk_forward",
        )
    except BaseException:
        end_run(mlflow_uri, parent, RunStatus.FAILED)
        raise
    end_run(mlflow_uri, parent, RunStatus.FINISHED)
    return result


def _run_window(
    window: Window,
    total: int,
    config: StrategyConfig,
    provider_uri: Path,
    mlflow_uri: str,
    out_dir: Path,
    parent: str,
    say: WalkForwardProgress,
) -> WindowResult:
    index = window.index
    window_config = config.with_segments(window.segments)
    say(index, total, "train")
    trained = train_strategy(
        window_config,
        provider_uri=provider_uri,
        mlflow_uri=mlflow_uri,
        artifacts_dir=out_dir,
        on_progress=lambda stage: say(index, total, "train", stage),
    )
    say(index, total, "backtest")
    backtest_dir = out_dir / "windows" / f"{index:02d}"
    backtest: BacktestResult = run_backtest(
        trained.artifact.predictions("test"),
        window_config,
        provider_uri=provider_uri,
        out_dir=backtest_dir,
        on_progress=lambda message: say(index, total, "backtest", message),
        mlflow_uri=mlflow_uri,
    )
    metrics = window_metrics(backtest.summary)
    log_to_run(
        trained.run_id,
        tracking_uri=mlflow_uri,
        metrics={f"backtest.{key}": value for key, value in backtest.flat_metrics().items()},
        tags={
            "mlflow.parentRunId": parent,
            "mlflow.runName": f"walk-forward-{config.name}-window-{index:02d}",
            "trader.walk_forward": out_dir.name,
            "trader.walk_forward.window": str(index),
            "trader.backtest": str(backtest_dir.resolve()),
        },
        artifacts=[backtest_dir],
        artifact_path="backtest",
    )
    # The parent holds each window's metrics as a series over the windows (step = window number).
    log_to_run(
        parent,
        tracking_uri=mlflow_uri,
        metrics={f"window.{k}": v for k, v in metrics.items() if math.isfinite(v)},
        step=index,
    )
    say(index, total, "done")
    return WindowResult(
        window=window,
        version=trained.artifact.version,
        run_id=trained.run_id,
        artifact_path=trained.artifact.path,
        backtest_dir=backtest_dir,
        test_sessions=int(backtest.metrics["inputs"]["period"]["sessions"]),
        metrics=metrics,
    )


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_reports(result: WalkForwardResult, config: StrategyConfig, provider_uri: Path) -> None:
    data = export_fingerprint(provider_uri)
    document = {
        "format": RESULT_FORMAT,
        "strategy": config.name,
        "kind": config.kind.value,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": result.spec.as_dict(),
        "label_horizon": config.segments.label_horizon,
        "export": {"provider_uri": data.provider_uri, "fingerprint": data.fingerprint},
        "mlflow_parent_run_id": result.parent_run_id,
        "windows": [w.as_dict() for w in result.windows],
        "summary": {k: _json_float(v) for k, v in result.summary.items()},
        "seconds": round(result.seconds, 3),
    }
    write_atomic(result.result_path, (json.dumps(document, indent=2, allow_nan=False) + "\n").encode())
    write_atomic(result.windows_path, _windows_csv(result.windows).encode())
    write_atomic(result.report_path, render_report(result, config).encode())


def _windows_csv(windows: Sequence[WindowResult]) -> str:
    rows = []
    for w in windows:
        seg = w.window.segments
        rows.append(
            {
                "window": w.window.index,
                "train_start": seg.train.start,
                "train_end": seg.train.end,
                "valid_start": seg.valid.start,
                "valid_end": seg.valid.end,
                "test_start": seg.test.start,
                "test_end": seg.test.end,
                "test_sessions": w.test_sessions,
                **{name: w.metrics[name] for name in WINDOW_METRICS},
                "version": w.version,
                "mlflow_run_id": w.run_id,
            }
        )
    return pl.DataFrame(rows).write_csv()


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%" if math.isfinite(value) else "n/a"


def _num(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


#: How each metric is shown in the report: (label, formatter).
_SHOWN: dict[str, tuple[str, Callable[[float], str]]] = {
    "ic": ("IC", lambda v: _num(v, 4)),
    "rank_ic": ("rank IC", lambda v: _num(v, 4)),
    "annualized_return": ("ann. return", _pct),
    "excess_annualized_return": ("excess ann. return", _pct),
    "sharpe": ("Sharpe", _num),
    "max_drawdown": ("max DD", _pct),
    "turnover": ("turnover/day", _pct),
}


def render_report(result: WalkForwardResult, config: StrategyConfig) -> str:
    """The Markdown report: settings, one row per window, mean and std over windows."""
    spec, summary = result.spec, result.summary
    header = ["window", "train", "valid", "test", *(label for label, _ in _SHOWN.values())]
    lines = [
        f"# Walk-forward: {config.name} ({config.kind.value})",
        "",
        f"{len(result.windows)} {'expanding' if spec.expanding else 'rolling'} windows of "
        f"{'at least ' if spec.expanding else ''}{spec.train_years} year(s) train, "
        f"{spec.valid_months} month(s) valid, {spec.test_months} month(s) test, "
        f"every {spec.step_months} month(s); "
        f"{config.segments.label_horizon} sessions between segments (label horizon). Test segments are "
        "out of sample: each window's model saw none of its test sessions. Backtests use the base costs.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for w in result.windows:
        seg = w.window.segments
        cells = [
            str(w.window.index),
            f"{seg.train.start} .. {seg.train.end}",
            f"{seg.valid.start} .. {seg.valid.end}",
            f"{seg.test.start} .. {seg.test.end}",
            *(fmt(w.metrics[name]) for name, (_, fmt) in _SHOWN.items()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for stat in ("mean", "std"):
        cells = [
            f"**{stat}**",
            "",
            "",
            "",
            *(fmt(summary[f"{name}.{stat}"]) for name, (_, fmt) in _SHOWN.items()),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Windows with IC > 0: {_pct(summary['ic_positive_share'])}. Mean and std are over the windows "
        "that have the metric (n/a: a window whose scores were constant has no IC, and counts as not "
        "above 0).",
        "",
        f"MLflow parent run: `{result.parent_run_id}` (one child run per window).",
    ]
    return "\n".join(lines) + "\n"
