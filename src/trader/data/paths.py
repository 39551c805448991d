"""Where the data layer keeps its files under ``DATA_DIR``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataPaths:
    """The layout of ``DATA_DIR``.

    - ``raw/bars/month=YYYY-MM/<ingest-id>.parquet``: raw bars as received, append-only, never rewritten.
    - ``adjusted/bars/year=YYYY/data.parquet``: back-adjusted bars that passed the gate (derived; rebuilt).
    - ``reference/corporate_actions.parquet``, ``reference/universe.parquet``: merged reference data.
    - ``reference/derived_listings.parquet``: which universe rows the pipeline derived from bars.
    - ``reference/accepted_moves.parquet``: bars a person confirmed as real moves (outlier rule).
    - ``quality/quarantine/year=YYYY/<ingest-id>.parquet``: refused rows with rule and reason.
    - ``quality/gaps.parquet``: sessions missing inside a symbol's listing.
    - ``catalog.duckdb``: DuckDB views over all of the above.
    """

    root: Path

    @property
    def raw_bars(self) -> Path:
        return self.root / "raw" / "bars"

    @property
    def adjusted_bars(self) -> Path:
        return self.root / "adjusted" / "bars"

    @property
    def actions(self) -> Path:
        return self.root / "reference" / "corporate_actions.parquet"

    @property
    def universe(self) -> Path:
        return self.root / "reference" / "universe.parquet"

    @property
    def derived_listings(self) -> Path:
        return self.root / "reference" / "derived_listings.parquet"

    @property
    def accepted_moves(self) -> Path:
        return self.root / "reference" / "accepted_moves.parquet"

    @property
    def quarantine(self) -> Path:
        return self.root / "quality" / "quarantine"

    @property
    def gaps(self) -> Path:
        return self.root / "quality" / "gaps.parquet"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.duckdb"
