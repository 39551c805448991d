"""Wall time of one paper-trading day (``trader paper-run``'s code path), split by stage.

For each market size (50 and 500 symbols, the synthetic market of ``trader data synth`` with planted
momentum, 2021-2024) and strategy (``momentum``; ``alpha_baseline`` with a small LightGBM when asked
with ``--strategies momentum,alpha_baseline``):

1. setup (timed, not the subject): generate and ingest the market, export it for Qlib, train the
   strategy, register and promote the model in a fresh SQLite database;
2. ``first_day``: one paper day in a *fresh process* (``python -m bench.bench_paper_day --worker``),
   against the built-in paper broker started in that process on a free port: ingest of the previous
   session from the broker's market data, signal, orders (the whole portfolio is bought), fills,
   close, P&L and report. ``stage_seconds`` are :attr:`trader.ops.paper_day.DayResult.stage_seconds`;
   ``broker_start`` is starting the in-process broker, ``imports`` the process's imports;
3. ``next_day``: the following session in another fresh process (a rebalance: a few orders).

Everything runs on SQLite and local files with ``DRY_RUN=false`` against the built-in broker, as
``make demo`` does. Results: ``bench/results/paper_day.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result

SIZES = (50, 500)
START, END, SEED, MOMENTUM = date(2021, 1, 4), date(2024, 12, 31), 7, 0.3
FIRST_DAY, NEXT_DAY = date(2024, 12, 26), date(2024, 12, 27)
FILL_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environment(root: Path) -> dict[str, str]:
    return {
        "DATA_DIR": str(root / "data"),
        "ARTIFACTS_DIR": str(root / "artifacts"),
        "DATABASE_URL": f"sqlite:///{root / 'trader.db'}",
        "PAPER_BROKER_DATABASE_URL": f"sqlite:///{root / 'paper_broker.db'}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ALPACA_BASE_URL": f"http://127.0.0.1:{_free_port()}",
        "DRY_RUN": "false",
    }


def _segments(strategy: str) -> Any:
    from trader.strategies.config import DateRange, Segments, load_strategy_config

    segments = Segments(
        train=DateRange(start=date(2021, 4, 1), end=date(2023, 3, 31)),
        valid=DateRange(start=date(2023, 4, 6), end=date(2023, 12, 22)),
        test=DateRange(start=date(2024, 1, 4), end=date(2024, 12, 20)),
    )
    config = load_strategy_config(strategy).with_segments(segments)
    if strategy == "alpha_baseline":
        # A small LightGBM: this measures the day, not the model.
        small = config.lightgbm.model_copy(update={"num_boost_round": 50, "num_leaves": 31})
        config = config.model_copy(update={"lightgbm": small})
    return config


def setup(root: Path, symbols: int, strategy: str) -> dict[str, float]:
    """Market, Qlib export, trained and promoted model under ``root``; seconds per step."""
    from trader.data.paths import DataPaths
    from trader.data.pipeline import DataPipeline
    from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
    from trader.research.leakage import CheckReport, CheckResult
    from trader.research.qlib_export import QlibExporter
    from trader.research.registry import ModelRegistry
    from trader.research.train import train_strategy
    from trader.store import migrate
    from trader.store.db import make_engine

    seconds: dict[str, float] = {}
    paths = DataPaths(root / "data")
    started = time.perf_counter()
    config = SyntheticConfig(symbols=symbols, start=START, end=END, seed=SEED, momentum=MOMENTUM)
    DataPipeline(paths).ingest(SyntheticSource(config), None, START, END)
    seconds["market"] = time.perf_counter() - started
    started = time.perf_counter()
    QlibExporter(paths, root / "data" / "qlib").export()
    seconds["qlib_export"] = time.perf_counter() - started
    started = time.perf_counter()
    strategy_config = _segments(strategy)
    trained = train_strategy(
        strategy_config,
        provider_uri=root / "data" / "qlib",
        mlflow_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifacts_dir=root / "artifacts",
    )
    seconds["train"] = time.perf_counter() - started
    engine = make_engine(f"sqlite:///{root / 'trader.db'}")
    migrate.upgrade(engine)
    registry = ModelRegistry(engine)
    artifact = trained.artifact
    checks = CheckReport((CheckResult("benchmark", True, "not gated"),)).to_dict()
    metrics = {"sharpe": 1.0, "max_drawdown": -0.1, "ic": 0.02, "turnover": 0.1}
    registry.register(strategy, artifact.version, str(artifact.path), artifact.mlflow_run_id, metrics, checks)
    registry.promote(strategy, artifact.version, approved_by="bench", thresholds=strategy_config.promotion)
    engine.dispose()
    return {name: round(value, 2) for name, value in seconds.items()}


def worker(strategy: str, day: date) -> dict[str, Any]:
    """One paper day in this process (the environment names the world); prints its timings as JSON."""
    started = time.perf_counter()
    from trader.cli.paper import _broker_for, _ingest_from_broker
    from trader.config import load_settings
    from trader.ops.paper_day import PaperDay
    from trader.store.db import make_engine

    imports = time.perf_counter() - started
    settings = load_settings()
    engine = make_engine(settings.database_url)
    started = time.perf_counter()
    with _broker_for(settings, [day]) as (broker, admin):
        broker_start = time.perf_counter() - started
        runner = PaperDay(
            settings,
            engine,
            broker,
            strategy=strategy,
            admin=admin,
            ingest=_ingest_from_broker(settings, engine),
            fill_timeout=FILL_TIMEOUT,
        )
        started = time.perf_counter()
        result = runner.run(day)
        day_seconds = time.perf_counter() - started
    engine.dispose()
    return {
        "day": day.isoformat(),
        "imports_s": round(imports, 3),
        "broker_start_s": round(broker_start, 3),
        "day_s": round(day_seconds, 3),
        "stage_seconds": result.stage_seconds,
        "orders": len(result.orders),
        "sent": result.sent,
        "fills": result.fills,
        "unfinished": len(result.unfinished),
        "symbols_scored": len(result.signal.result.scores) if result.signal else 0,
    }


def _fresh_process(root: Path, strategy: str, day: date) -> dict[str, Any]:
    env = os.environ | _environment(root)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_paper_day", "--worker", strategy, day.isoformat()],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"paper day {day} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    measured["process_s"] = round(time.perf_counter() - started, 3)
    return measured


def measure(symbols: int, strategy: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-paper-day-") as folder:
        root = Path(folder)
        result: dict[str, Any] = {"setup_s": setup(root, symbols, strategy)}
        for name, day in (("first_day", FIRST_DAY), ("next_day", NEXT_DAY)):
            result[name] = _fresh_process(root, strategy, day)
            print(f"   {symbols} symbols, {strategy}, {name}: {result[name]['day_s']} s {result[name]}")
    return result


def main(strategies: tuple[str, ...] = ("momentum",), sizes: tuple[int, ...] = SIZES) -> Path:
    # Keep what earlier runs measured for other strategies and sizes (each run may measure a part).
    previous = RESULTS / "paper_day.json"
    results: dict[str, Any] = json.loads(previous.read_text())["results"] if previous.exists() else {}
    for strategy in strategies:
        for symbols in sizes:
            results.setdefault(strategy, {})[str(symbols)] = measure(symbols, strategy)
    payload = {
        "market": {"start": START, "end": END, "seed": SEED, "momentum": MOMENTUM},
        "days": {"first_day": FIRST_DAY, "next_day": NEXT_DAY},
        "note": "one paper day per fresh process against the built-in paper broker (SQLite, DRY_RUN=false); "
        "stage_seconds from DayResult.stage_seconds",
        "results": results,
    }
    return write_result("paper_day", payload)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.bench_paper_day")
    parser.add_argument("--worker", nargs=2, metavar=("STRATEGY", "DAY"))
    parser.add_argument("--strategies", default="momentum", help="comma-separated: momentum,alpha_baseline")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], date.fromisoformat(args.worker[1]))))
    else:
        chosen = tuple(args.strategies.split(","))
        print(main(chosen, tuple(int(s) for s in args.sizes.split(","))))
