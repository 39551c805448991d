"""Where the paper broker's market data comes from: the data store, or a synthetic market.

Bars are the *raw* bars of ``DATA_DIR`` (``RawRecorder`` + ``newest_arrival``: one row per symbol
and date, vendor values as recorded, bad ticks included, as a real vendor sends them) and corporate
actions come from the ``ActionStore``. Both are read per request, lazily and filtered in the scan,
so the store may grow while the broker runs.

When the store holds no raw bars at all, a :class:`SyntheticSource` market (default config, the
settings' seed) is served instead, generated once on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import date, timedelta

import polars as pl

from trader.data.adjust import adjust
from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, empty
from trader.data.paths import DataPaths
from trader.data.raw import RECORD_SCHEMA, RawRecorder, newest_arrival
from trader.data.sources.synthetic import SyntheticConfig, SyntheticData, SyntheticSource
from trader.data.store import ActionStore
from trader.paperbroker.params import Adjustment

#: How far before a requested range adjusted queries read, so a dividend on the range's first
#: session still finds the previous close (a halt longer than this loses that dividend's ratio).
ADJUST_LOOKBACK = timedelta(days=31)

_PRICE_COLUMNS = ("open", "high", "low", "close", "volume")


class MarketData:
    """Reads bars and corporate actions for the endpoints (thread-safe; nothing cached but the
    synthetic market)."""

    def __init__(self, data_dir: DataPaths | None, synthetic_seed: int) -> None:
        self.paths = data_dir
        self.synthetic_seed = synthetic_seed
        self._synthetic: SyntheticData | None = None
        self._lock = threading.Lock()

    def _recorder(self) -> RawRecorder | None:
        """The raw recorder when the store holds raw bars, else ``None`` (serve the synthetic market)."""
        if self.paths is None:
            return None
        recorder = RawRecorder(self.paths)
        return recorder if recorder.files() else None

    def synthetic(self) -> SyntheticData:
        """The synthetic market, generated on first use."""
        with self._lock:
            if self._synthetic is None:
                source = SyntheticSource(SyntheticConfig(seed=self.synthetic_seed))
                self._synthetic = source.data
            return self._synthetic

    def raw_bars(self, symbols: Sequence[str] | None, first: date | None, last: date | None) -> pl.DataFrame:
        """Raw bars of ``symbols`` (``None``: all) dated ``first``..``last`` (``None``: unbounded), one
        per symbol+date.

        Columns: :data:`~trader.data.bars.BAR_SCHEMA` plus ``source``.
        """
        recorder = self._recorder()
        if recorder is None:
            bars = self.synthetic().batch.bars.with_columns(source=pl.lit("synthetic"))
            wanted = pl.lit(True) if symbols is None else pl.col("symbol").is_in(list(symbols))
            if first is not None:
                wanted &= pl.col("date") >= first
            if last is not None:
                wanted &= pl.col("date") <= last
            return bars.filter(wanted).select(list(RECORD_SCHEMA))
        chosen = None if symbols is None else list(symbols)
        history = newest_arrival(recorder.scan(chosen, first, last).collect())
        return history.select(list(RECORD_SCHEMA))

    def actions(self, symbols: Sequence[str] | None = None) -> pl.DataFrame:
        """Corporate actions (:data:`~trader.data.bars.ACTION_SCHEMA`), of ``symbols`` or all."""
        if self._recorder() is None:
            actions = self.synthetic().batch.actions
            if symbols is not None:
                actions = actions.filter(pl.col("symbol").is_in(list(symbols)))
            return actions
        assert self.paths is not None
        return ActionStore(self.paths).read(symbols)

    def bars(
        self,
        symbols: Sequence[str],
        first: date,
        last: date,
        adjustment: Adjustment,
        today: date,
    ) -> pl.DataFrame:
        """Bars of ``symbols`` from ``first`` to ``last`` (at most ``today``, the broker's date),
        adjusted as asked, sorted by symbol and date.

        Columns ``symbol, date, open, high, low, close, volume``. Rows with a missing key or a
        missing or non-finite value cannot be sent as an Alpaca bar and are left out.

        Adjusted bars are :func:`trader.data.adjust.adjust` of the symbols' history (from a month
        before ``first`` to ``today``: an action after ``last`` still changes the bars before it) with
        the stored actions whose ex-date is ``today`` or earlier (later ones have not happened yet);
        ``split`` alone ignores dividends (``cash_dividend`` 0), ``dividend`` alone ignores splits
        (``split_ratio`` 1).
        """
        if not symbols or first > last:
            return empty(BAR_SCHEMA)
        if adjustment.raw:
            bars = self.raw_bars(symbols, first, last)
        else:
            history = self.raw_bars(symbols, first - ADJUST_LOOKBACK, today)
            actions = self.actions(symbols).filter(pl.col("ex_date") <= today)
            if not adjustment.dividend:
                actions = actions.with_columns(cash_dividend=pl.lit(0.0))
            if not adjustment.split:
                actions = actions.with_columns(split_ratio=pl.lit(1.0))
            bars = adjust(history, actions.select(list(ACTION_SCHEMA)))
            bars = bars.filter(pl.col("date").is_between(first, last))
        usable = pl.col("symbol").is_not_null() & pl.col("date").is_not_null()
        for name in _PRICE_COLUMNS:
            usable &= pl.col(name).is_not_null() & pl.col(name).is_finite()
        return (
            bars.filter(usable)
            .select(list(BAR_SCHEMA))
            .unique(subset=["symbol", "date"], keep="first", maintain_order=True)
            .sort("symbol", "date")
        )
