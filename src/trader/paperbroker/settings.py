"""Settings of the paper broker: data, keys, its own database, the simulated clock, matching, faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from trader.config import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET

#: Seed of the synthetic market served when the data store holds no raw bars.
DEFAULT_SYNTHETIC_SEED = 7
#: Alpaca's paper accounts start with $100k.
DEFAULT_INITIAL_CASH = Decimal("100000")
#: Alpaca's trading API allows 200 requests per minute per account (its market data API counts its
#: own requests: 200 a minute on the Basic plan, reference §4).
DEFAULT_RATE_LIMIT_PER_MINUTE = 200


@dataclass(frozen=True)
class FaultSettings:
    """Fault injection, all off by default. Rates are probabilities in [0, 1] drawn per request/event.

    - ``error_rate``: answer a request with a 5xx (500/502/503) *without* doing anything.
    - ``latency_ms``: add this many milliseconds before answering every request.
    - ``timeout_rate``: hold a request for ``timeout_seconds`` before answering (a client with a
      shorter timeout sees a timeout); the request is *not* carried out.
    - ``lose_response_rate``: carry out an order submission (``POST /v2/orders``), then answer 500
      instead of the order: the order exists but the client does not know it.
    - ``drop_event_rate`` / ``duplicate_event_rate``: drop or send twice a ``trade_updates`` event.
    - ``rate_limit_per_minute``: answer 429 ``{"code":42910000,"message":"rate limit exceeded"}`` once
      this many Trading API requests arrived in the last 60 s (0 turns the limit off). On by default,
      as on Alpaca.
    - ``data_rate_limit_per_minute``: the same for the Market Data routes, counted apart from the
      Trading API as on Alpaca; ``None`` (default) uses the number ``rate_limit_per_minute`` has.
    - ``seed``: the random draws are reproducible for a seed.
    """

    error_rate: float = 0.0
    latency_ms: int = 0
    timeout_rate: float = 0.0
    timeout_seconds: float = 30.0
    lose_response_rate: float = 0.0
    drop_event_rate: float = 0.0
    duplicate_event_rate: float = 0.0
    rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE
    data_rate_limit_per_minute: int | None = None
    seed: int = 0

    @property
    def data_limit(self) -> int:
        """Market-data requests allowed per minute (0: no limit)."""
        if self.data_rate_limit_per_minute is None:
            return self.rate_limit_per_minute
        return self.data_rate_limit_per_minute


@dataclass(frozen=True)
class PaperBrokerSettings:
    """What :func:`~trader.paperbroker.app.create_app` needs.

    ``data_dir`` is a ``DATA_DIR`` laid out as :class:`~trader.data.paths.DataPaths`; it may be empty
    or missing, in which case a synthetic market (seeded with ``synthetic_seed``) is served. The key
    pair defaults to the project's documented local paper keys (``Settings.alpaca_api_key_id`` /
    ``alpaca_api_secret_key`` defaults), which open only this simulator.

    ``database_url`` is the broker's own state (orders, fills, positions, cash); ``None`` keeps it in
    memory (tests). ``start_at`` starts the simulated clock at that instant (``None``: real time).
    ``slippage_bps`` moves market and stop fills against the taker; ``partial_fill_rate`` is the
    chance that a fill takes only part of the remaining quantity (Alpaca's paper: 10 %).
    """

    data_dir: Path
    api_key_id: str = LOCAL_PAPER_KEY_ID
    api_secret_key: str = LOCAL_PAPER_SECRET
    synthetic_seed: int = DEFAULT_SYNTHETIC_SEED
    database_url: str | None = None
    start_at: datetime | None = None
    initial_cash: Decimal = DEFAULT_INITIAL_CASH
    slippage_bps: Decimal = Decimal("0")
    partial_fill_rate: float = 0.0
    faults: FaultSettings = field(default_factory=FaultSettings)
