"""Research path on Qlib, and one-day Alpha158 scoring through Qlib's handler vs the Polars path.

For each market size (50 and 500 symbols x 6 years, the synthetic market of ``trader data synth``
through the data pipeline), in this order:

- ``export``: the adjusted store into Qlib's binary layout (:class:`QlibExporter`), time and peak memory;
- ``qlib_features``: Qlib's ``Alpha158`` handler over the whole period (``fetch(col_set="feature")``);
- ``polars_features``: :func:`alpha158_features` over the whole period, and its largest difference
  from Qlib's values (every feature, every row);
- ``qlib_one_day``: scoring the last day through Qlib's handler,
  ``Alpha158(start_time=day, end_time=day)`` — what the live path would cost on Qlib;
- ``polars_one_day``: :func:`alpha158_latest_from_store` for the same day, end to end: reading the
  last 61 sessions from the adjusted store's Parquet files and computing the 158 features; and the
  largest difference from Qlib's one-day values.

Each stage runs in a fresh process (``python -m bench.bench_research --worker STAGE MARKET``), so
its peak memory is its own; import and ``qlib.init`` time are reported apart from the measured work.
The machine's load average is recorded around every stage: other jobs on a shared machine slow
everything down, Qlib's multi-process handler most.

Extension point: a stage is a function ``(Market) -> dict`` registered in :data:`WORKERS` and named
in :data:`STAGES`; its dict lands in ``bench/results/research.json`` under
``sizes.<symbols>.<stage>``. Training and backtest timings (issue #5's "Done when") are meant to be
added the same way (say ``train`` and ``backtest`` stages reading the export under ``market.qlib``).

Targets (one day, 500 symbols): the Polars path takes at most 1 s, is at least 20x faster than Qlib's
handler, and gives the same values (largest relative difference <= 1e-5, missing values alike).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from bench.common import peak_rss_mb as inherited_peak_rss_mb
from bench.common import write_result

SIZES = (50, 500)
START, END, SEED = date(2019, 1, 2), date(2024, 12, 31), 7
#: Polars one-day runs in one process: the first pays for lazy imports and the calendar; the best of
#: the others is the steady state of a running signal service.
POLARS_REPEATS = 5
TARGET_ONE_DAY_SECONDS = 1.0
TARGET_SPEEDUP = 20.0
TARGET_RELATIVE_DIFFERENCE = 1e-5
ABSOLUTE_FLOOR = 1e-12  # see tests/integration/strategies/test_alpha158_parity.py


@dataclass(frozen=True)
class Market:
    """A benchmark market folder: ``data/`` (DATA_DIR with the adjusted store) and ``qlib/`` (the export)."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def qlib(self) -> Path:
        return self.root / "qlib"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def output(self, name: str) -> Path:
        return self.root / f"{name}.parquet"

    @property
    def last_day(self) -> date:
        from trader.data.calendar import trading_calendar

        sessions = trading_calendar().sessions(START, END)
        last: date = sessions[-1]
        return last


# --------------------------------------------------------------------------------------------------
# Stages (each runs in its own process)
# --------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's own peak resident memory (``VmHWM``).

    ``getrusage``'s ``ru_maxrss`` survives ``fork``/``exec`` on Linux, so a stage would report the
    driver's peak (it held the generated market) whenever that is higher than its own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return inherited_peak_rss_mb()


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def _init_qlib(market: Market) -> float:
    from trader.research.qlib_runtime import init_qlib

    _, seconds = _timed(lambda: init_qlib(market.qlib, mlflow_uri=market.mlflow_uri))
    return seconds


def stage_export(market: Market) -> dict[str, Any]:
    from trader.data.paths import DataPaths
    from trader.research.qlib_export import QlibExporter

    report, seconds = _timed(lambda: QlibExporter(DataPaths(market.data_dir), market.qlib).export())
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "files_written": report.files_written,
        "sessions": report.days,
        "symbols": report.symbols,
    }


def _qlib_frame(frame: Any) -> pl.DataFrame:
    flat = frame.reset_index().rename(columns={"datetime": "date", "instrument": "symbol"})
    return pl.from_pandas(flat).with_columns(pl.col("date").cast(pl.Date))


def stage_qlib_features(market: Market) -> dict[str, Any]:
    init_seconds = _init_qlib(market)
    from qlib.contrib.data.handler import Alpha158

    before = peak_rss_mb()
    frame, seconds = _timed(
        lambda: Alpha158(instruments="all", start_time=START.isoformat(), end_time=END.isoformat()).fetch(
            col_set="feature"
        )
    )
    peak = peak_rss_mb()
    _qlib_frame(frame).write_parquet(market.output("qlib_features"))
    return {
        "seconds": round(seconds, 3),
        "init_qlib_seconds": round(init_seconds, 3),
        "rows": len(frame),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(before, 1),
    }


def stage_polars_features(market: Market) -> dict[str, Any]:
    from trader.data.calendar import trading_calendar
    from trader.data.paths import DataPaths
    from trader.data.store import AdjustedStore
    from trader.strategies.alpha_baseline.alpha158_polars import alpha158_features

    trading_calendar()
    bars, read_seconds = _timed(lambda: AdjustedStore(DataPaths(market.data_dir)).read())
    before = peak_rss_mb()
    features, seconds = _timed(lambda: alpha158_features(bars))
    peak = peak_rss_mb()
    features.write_parquet(market.output("polars_features"))
    return {
        "seconds": round(seconds, 3),
        "read_store_seconds": round(read_seconds, 3),
        "peak_rss_mb": round(peak, 1),
        "rss_before_mb": round(before, 1),
        "vs_qlib": compare(market.output("qlib_features"), market.output("polars_features")),
    }


def stage_qlib_one_day(market: Market) -> dict[str, Any]:
    init_seconds = _init_qlib(market)
    from qlib.contrib.data.handler import Alpha158

    day = market.last_day.isoformat()
    frame, seconds = _timed(
        lambda: Alpha158(instruments="all", start_time=day, end_time=day).fetch(col_set="feature")
    )
    _qlib_frame(frame).write_parquet(market.output("qlib_one_day"))
    return {
        "seconds": round(seconds, 3),
        "init_qlib_seconds": round(init_seconds, 3),
        "rows": len(frame),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def stage_polars_one_day(market: Market) -> dict[str, Any]:
    began = time.perf_counter()
    from trader.data.calendar import trading_calendar
    from trader.data.paths import DataPaths
    from trader.strategies.alpha_baseline.alpha158_polars import ALPHA158, alpha158_latest_from_store

    import_seconds = time.perf_counter() - began
    _, calendar_seconds = _timed(trading_calendar)
    paths, day = DataPaths(market.data_dir), market.last_day
    runs = []
    features = None
    for _ in range(POLARS_REPEATS):
        features, seconds = _timed(lambda: alpha158_latest_from_store(paths, day))
        runs.append(round(seconds, 4))
    assert features is not None
    features.write_parquet(market.output("polars_one_day"))
    steady = runs[1:] or runs
    return {
        "seconds": min(steady),  # a running signal service: imports and calendar already loaded
        "first_call_seconds": runs[0],
        "runs_seconds": runs,
        "median_seconds": float(np.median(steady)),
        "import_seconds": round(import_seconds, 3),
        "calendar_seconds": round(calendar_seconds, 3),
        "cold_process_seconds": round(import_seconds + calendar_seconds + runs[0], 3),
        "rows": features.height,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "feature_set": ALPHA158.tag,
        "vs_qlib": compare(market.output("qlib_one_day"), market.output("polars_one_day")),
    }


def stage_train(market: Market) -> dict[str, Any]:
    """``train_strategy`` of the shipped alpha_baseline (Alpha158 + LightGBM), MLflow run included."""
    from trader.research.train import train_strategy
    from trader.strategies.config import load_strategy_config

    config = load_strategy_config("alpha_baseline")
    init_seconds = _init_qlib(market)
    result, seconds = _timed(
        lambda: train_strategy(
            config,
            provider_uri=market.qlib,
            mlflow_uri=market.mlflow_uri,
            artifacts_dir=market.root / "artifacts",
        )
    )
    return {
        "seconds": round(seconds, 3),
        "init_qlib_seconds": round(init_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "version": result.artifact.version,
        "test_ic": result.artifact.ic("test").ic,
    }


def stage_backtest(market: Market) -> dict[str, Any]:
    """The four cost scenarios of the trained model's test segment (``run_scenarios``)."""
    from trader.research.artifacts import ModelArtifact
    from trader.research.backtest import run_scenarios

    artifact = ModelArtifact.find(market.root / "artifacts", "alpha_baseline")
    init_seconds = _init_qlib(market)
    result, seconds = _timed(
        lambda: run_scenarios(
            artifact.predictions("test"),
            artifact.config(),
            provider_uri=market.qlib,
            out_dir=market.root / "backtest",
            mlflow_uri=market.mlflow_uri,
        )
    )
    return {
        "seconds": round(seconds, 3),
        "init_qlib_seconds": round(init_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "scenarios": sorted(result.scenarios),
        "sharpe": result.summary.get("sharpe"),
    }


#: Stage name -> the function a worker process runs.
WORKERS: dict[str, Callable[[Market], dict[str, Any]]] = {
    "export": stage_export,
    "qlib_features": stage_qlib_features,
    "polars_features": stage_polars_features,
    "qlib_one_day": stage_qlib_one_day,
    "polars_one_day": stage_polars_one_day,
    "train": stage_train,
    "backtest": stage_backtest,
}
#: The stages run for each size, in order (later ones read what earlier ones wrote).
STAGES: tuple[str, ...] = (
    "export", "qlib_features", "polars_features", "qlib_one_day", "polars_one_day", "train", "backtest",
)  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Comparison of two feature files (Qlib's and ours)
# --------------------------------------------------------------------------------------------------


def compare(qlib_path: Path, ours_path: Path, batch: int = 20) -> dict[str, Any]:
    """Largest relative difference, and counts of mismatched missing values, over every feature and row.

    Reads the features ``batch`` columns at a time, so comparing 500 symbols x 6 years stays small.
    """
    from trader.strategies.alpha_baseline.alpha158_spec import FEATURE_NAMES

    keys = ["symbol", "date"]
    left_keys = pl.read_parquet(qlib_path, columns=keys).with_row_index("_q")
    right_keys = pl.read_parquet(ours_path, columns=keys).with_row_index("_o")
    pairs = left_keys.join(right_keys, on=keys, how="inner")
    worst, worst_feature, missing_mismatch, beyond, values = 0.0, None, 0, 0, 0
    q_index, o_index = pairs.get_column("_q").to_numpy(), pairs.get_column("_o").to_numpy()
    for i in range(0, len(FEATURE_NAMES), batch):
        names = list(FEATURE_NAMES[i : i + batch])
        qlib = pl.read_parquet(qlib_path, columns=names)
        ours = pl.read_parquet(ours_path, columns=names)
        for name in names:
            a = qlib.get_column(name).to_numpy().astype(np.float64)[q_index]
            b = ours.get_column(name).to_numpy().astype(np.float64)[o_index]
            missing_mismatch += int((np.isnan(a) != np.isnan(b)).sum() + (np.isinf(a) != np.isinf(b)).sum())
            both = np.isfinite(a) & np.isfinite(b)
            diff = np.abs(a[both] - b[both])
            scale = np.maximum(np.abs(a[both]), np.abs(b[both]))
            beyond += int((diff > TARGET_RELATIVE_DIFFERENCE * scale + ABSOLUTE_FLOOR).sum())
            relative = np.divide(diff, scale, out=np.zeros_like(diff), where=diff > ABSOLUTE_FLOOR)
            values += int(both.sum())
            if relative.size and relative.max() > worst:
                worst, worst_feature = float(relative.max()), name
    return {
        "rows_qlib": left_keys.height,
        "rows_ours": right_keys.height,
        "rows_matched": pairs.height,
        "values_compared": values,
        "max_relative_difference": worst,
        "max_relative_difference_feature": worst_feature,
        "values_beyond_tolerance": beyond,
        "missing_or_inf_mismatches": missing_mismatch,
        "equal": (
            pairs.height == left_keys.height == right_keys.height and missing_mismatch == 0 and beyond == 0
        ),
    }


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


def build_market(root: Path, symbols: int) -> dict[str, Any]:
    """Generate the synthetic market and ingest it through the pipeline, as ``trader data synth`` does."""
    from trader.data.paths import DataPaths
    from trader.data.pipeline import DataPipeline
    from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource

    source = SyntheticSource(SyntheticConfig(symbols=symbols, start=START, end=END, seed=SEED))
    report, seconds = _timed(lambda: DataPipeline(DataPaths(root / "data")).ingest(source, None, START, END))
    return {"symbols": symbols, "seconds": round(seconds, 3), "clean_rows": report.clean_rows}


def run_stage(stage: str, market: Market) -> dict[str, Any]:
    load_before = os.getloadavg()
    child = subprocess.run(
        [sys.executable, "-m", "bench.bench_research", "--worker", stage, str(market.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{child.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(child.stdout.strip().splitlines()[-1])
    result["load_average_before_after"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return result


def verdict(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    qlib_day, polars_day = stages["qlib_one_day"], stages["polars_one_day"]
    speedup = qlib_day["seconds"] / polars_day["seconds"]
    return {
        "one_day_speedup": round(speedup, 1),
        "meets_one_day_seconds_target": polars_day["seconds"] <= TARGET_ONE_DAY_SECONDS,
        "meets_one_day_cold_process_target": polars_day["cold_process_seconds"] <= TARGET_ONE_DAY_SECONDS,
        "meets_speedup_target": speedup >= TARGET_SPEEDUP,
        "one_day_values_equal": polars_day["vs_qlib"]["equal"],
        "full_period_values_equal": stages["polars_features"]["vs_qlib"]["equal"],
    }


def run_size(symbols: int, scratch: Path) -> dict[str, Any]:
    market = Market(scratch / f"market-{symbols}")
    out: dict[str, Any] = {"ingest": build_market(market.root, symbols)}
    ingest = out["ingest"]
    print(f"   {symbols} symbols: ingested {ingest['clean_rows']:,} bars in {ingest['seconds']}s")
    for stage in STAGES:
        out[stage] = run_stage(stage, market)
        print(f"   {symbols} symbols: {stage}: {out[stage]['seconds']}s, peak {out[stage]['peak_rss_mb']} MB")
    out["verdict"] = verdict(out)
    print(f"   {symbols} symbols: {out['verdict']}")
    return out


def main(sizes: tuple[int, ...] = SIZES) -> Path:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-research-") as tmp:
        for symbols in sizes:
            results[str(symbols)] = run_size(symbols, Path(tmp))
    return write_result(
        "research",
        {
            "workload": {"sizes": list(sizes), "start": START, "end": END, "seed": SEED},
            "targets": {
                "one_day_seconds": TARGET_ONE_DAY_SECONDS,
                "one_day_speedup": TARGET_SPEEDUP,
                "max_relative_difference": TARGET_RELATIVE_DIFFERENCE,
            },
            "sizes": results,
        },
    )


def _cli() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_research")
    parser.add_argument("--worker", choices=sorted(WORKERS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("market", nargs="?", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](Market(args.market)), default=str))
    else:
        print(main(tuple(args.sizes)))


if __name__ == "__main__":
    _cli()
