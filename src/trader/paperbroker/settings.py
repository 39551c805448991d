"""Settings of the paper broker: where its data lives, which keys it accepts, the synthetic seed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trader.config import LOCAL_PAPER_KEY_ID, LOCAL_PAPER_SECRET

#: Seed of the synthetic market served when the data store holds no raw bars.
DEFAULT_SYNTHETIC_SEED = 7


@dataclass(frozen=True)
class PaperBrokerSettings:
    """What :func:`~trader.paperbroker.app.create_app` needs.

    ``data_dir`` is a ``DATA_DIR`` laid out as :class:`~trader.data.paths.DataPaths`; it may be empty
    or missing, in which case a synthetic market (seeded with ``synthetic_seed``) is served. The key
    pair defaults to the project's documented local paper keys (``Settings.alpaca_api_key_id`` /
    ``alpaca_api_secret_key`` defaults), which open only this simulator.
    """

    data_dir: Path
    api_key_id: str = LOCAL_PAPER_KEY_ID
    api_secret_key: str = LOCAL_PAPER_SECRET
    synthetic_seed: int = DEFAULT_SYNTHETIC_SEED
