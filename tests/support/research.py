"""A small synthetic market, run through the data pipeline and exported for Qlib, for research tests.

Research tests (training, backtests, leakage checks, online features) need a real Qlib export of a
realistic market, and building one costs a few seconds. :func:`build_research_market` builds it once
per test session (see the ``research_market`` fixture in ``tests/conftest.py``); tests that change
files must copy it first (:func:`copy_market`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from trader.data.paths import DataPaths
from trader.data.pipeline import DataPipeline
from trader.data.sources.synthetic import SyntheticConfig, SyntheticSource
from trader.research.qlib_export import QlibExporter

#: The research test market: 20 symbols over three years (about 15k bars), enough for Alpha158's
#: 60-day windows, a train / valid / test split and a short backtest.
RESEARCH_START = date(2021, 1, 4)
RESEARCH_END = date(2023, 12, 29)
RESEARCH_SYMBOLS = 20
RESEARCH_SEED = 11


@dataclass(frozen=True)
class ResearchMarket:
    """A DATA_DIR with the adjusted store and its Qlib export (``DATA_DIR/qlib``, the default target)."""

    root: Path
    start: date = RESEARCH_START
    end: date = RESEARCH_END

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def paths(self) -> DataPaths:
        return DataPaths(self.data_dir)

    @property
    def provider_uri(self) -> Path:
        return self.data_dir / "qlib"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"


def build_research_market(
    root: Path,
    *,
    symbols: int = RESEARCH_SYMBOLS,
    start: date = RESEARCH_START,
    end: date = RESEARCH_END,
    seed: int = RESEARCH_SEED,
) -> ResearchMarket:
    """Generate a synthetic market into ``root/data``, ingest it and export it for Qlib."""
    market = ResearchMarket(root, start, end)
    source = SyntheticSource(SyntheticConfig(symbols=symbols, start=start, end=end, seed=seed))
    DataPipeline(market.paths).ingest(source, None, start, end)
    QlibExporter(market.paths, market.provider_uri).export()
    return market


def copy_market(market: ResearchMarket, root: Path) -> ResearchMarket:
    """A private copy of ``market`` under ``root``, for a test that alters the data."""
    shutil.copytree(market.root, root, dirs_exist_ok=True)
    return ResearchMarket(root, market.start, market.end)
