"""A deterministic synthetic market: realistic daily bars plus the defects and events real data has.

The generator works in two layers. The *economic* path of each symbol is a split- and dividend-free
total-return price: log returns = drift + beta x market factor + sector factor + idiosyncratic shock,
every shock Student-t (df 4) for fat tails. The *raw* bars a vendor would deliver are that path
multiplied by a cumulative corporate-action multiplier ``K``:

- a split with ``split_ratio`` q on its ex-date multiplies ``K`` by ``1 / q`` (and raw volume by q);
- a cash dividend ``d`` on its ex-date multiplies ``K`` by ``1 - d / previous raw close``.

So a back-adjustment with factor ``prod(1 / q) x prod(1 - d / prev_close)`` over the actions *after* a
bar recovers the economic path exactly (up to rounding to cents): the adjuster's known answer.

On top of the raw bars the generator injects defects, each listed in :attr:`SyntheticData.injected`
so tests can check that the quality gate catches every one and nothing else. The defects are spaced
so that each breaks exactly one gate rule and no clean row can be mistaken for one:

- ``bad_tick_spike``: close (and high) x k, or close (and low) / k, with k in [3, 6]: the
  close-to-close return into *and* out of the row exceeds 30 %; OHLC stays consistent.
- ``bad_tick_ohlc``: high below low; close unchanged.
- ``bad_tick_negative_price``: low zero or negative; close unchanged.
- ``bad_tick_negative_volume``: volume negative; prices unchanged.
- ``missing_day``: one session without a bar; ``halt``: 2-5 consecutive sessions without a bar
  (one ``injected`` row per missing session). The move across a gap stays within the clean bound.

Bad ticks are never on a symbol's first or last bar, never within 2 sessions of an ex-date or of
another bad tick, and never next to a missing session. Gaps never touch an ex-date or the session
before it, so a dividend's previous close is always the previous session's. Every clean
close-to-close return on adjusted prices is below ``e^0.2 - 1`` (about 22 %), including across gaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import numpy.typing as npt
import polars as pl

from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, LISTING_SCHEMA, BarBatch, conform, empty
from trader.data.calendar import trading_calendar
from trader.data.sources import SourceHealth

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SOURCE_NAME = "synthetic"

BAD_TICK_KINDS = (
    "bad_tick_spike",
    "bad_tick_ohlc",
    "bad_tick_negative_price",
    "bad_tick_negative_volume",
)
GAP_KINDS = ("missing_day", "halt")
INJECTED_KINDS = BAD_TICK_KINDS + GAP_KINDS

#: One row per injected defect: the symbol, the session, and which defect.
INJECTED_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "date": pl.Date(),
    "kind": pl.String(),
}

#: Bound on a clean daily (or across-gap) log return: e^0.2 - 1 = 22.1 %, e^-0.2 - 1 = -18.1 %, so a
#: 25 % (or 30 %) outlier rule never fires on a clean row, with room for rounding to cents.
MAX_LOG_RETURN = 0.2
SESSIONS_PER_YEAR = 252
QUARTER = 63  # sessions between quarterly dividends
MAX_SYMBOLS = 100_000  # "SYN" + 5 digits is the longest ticker we allow (8 characters)
MIN_PRICE = 0.0001  # the smallest sub-penny tick; a clean price is never rounded down to zero

SECTOR_NAMES = (
    "Information Technology",
    "Financials",
    "Health Care",
    "Consumer Discretionary",
    "Industrials",
    "Communication Services",
    "Consumer Staples",
    "Energy",
    "Utilities",
    "Real Estate",
    "Materials",
)

#: Sessions over which :attr:`SyntheticConfig.momentum` averages past shocks.
MOMENTUM_WINDOW = 20
_RATE_FIELDS = (
    "split_rate",
    "dividend_rate",
    "bad_tick_rate",
    "missing_day_rate",
    "halt_rate",
    "ipo_fraction",
    "delist_fraction",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. Same config (including ``seed``) means identical output, byte for byte.

    Rates:

    - ``split_rate``: expected splits per symbol per listed year.
    - ``dividend_rate``: fraction of symbols that pay a quarterly cash dividend.
    - ``bad_tick_rate``, ``missing_day_rate``: probability per bar.
    - ``halt_rate``: expected trading halts per symbol per listed year.
    - ``ipo_fraction``, ``delist_fraction``: fraction of symbols that list after ``start`` / delist
      before ``end``.
    """

    symbols: int = 50
    start: date = date(2015, 1, 1)
    end: date = date(2024, 12, 31)
    seed: int = 7
    split_rate: float = 0.05
    dividend_rate: float = 0.3
    bad_tick_rate: float = 0.0005
    missing_day_rate: float = 0.0005
    halt_rate: float = 0.05
    ipo_fraction: float = 0.1
    delist_fraction: float = 0.1
    sectors: int = 8
    #: Weak momentum planted in the idiosyncratic returns (0 = none, pure random walks): each day's
    #: return gets ``momentum x`` the mean idiosyncratic shock of the previous ``MOMENTUM_WINDOW``
    #: sessions, so past returns carry a little information about the next one, as in real markets.
    #: The theoretical cross-sectional IC of the ideal predictor is about ``momentum / sqrt(20)``.
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.symbols, bool) or not isinstance(self.symbols, int):
            raise ValueError(f"symbols must be an integer, got {self.symbols!r}")
        if not 1 <= self.symbols <= MAX_SYMBOLS:
            raise ValueError(f"symbols must be between 1 and {MAX_SYMBOLS}, got {self.symbols}")
        for name in ("start", "end"):
            value = getattr(self, name)
            # A datetime is a date subclass; refuse it rather than silently drop its time and zone.
            if not isinstance(value, date) or isinstance(value, datetime):
                raise ValueError(f"{name} must be a date, got {value!r}")
        if self.start >= self.end:
            raise ValueError(f"start ({self.start}) must be before end ({self.end})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        for name in _RATE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if isinstance(self.sectors, bool) or not isinstance(self.sectors, int) or self.sectors < 1:
            raise ValueError(f"sectors must be a positive integer, got {self.sectors!r}")
        if not isinstance(self.momentum, int | float) or not 0.0 <= float(self.momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {self.momentum!r}")


@dataclass
class SyntheticData:
    """A generated market: what a source delivers (``batch``) and the defects injected into it."""

    batch: BarBatch
    injected: pl.DataFrame


def symbol_names(count: int) -> list[str]:
    """Deterministic tickers ``SYN000``, ``SYN001``, ... (wider only past 1000 symbols)."""
    width = max(3, len(str(count - 1)))
    return [f"SYN{i:0{width}d}" for i in range(count)]


def sector_name(index: int) -> str:
    """GICS-like sector names for the first eleven sectors, numbered ones after that."""
    return SECTOR_NAMES[index] if index < len(SECTOR_NAMES) else f"Sector {index + 1:02d}"


@dataclass
class _Events:
    """Where one symbol's events fall, as session indices (its listing is ``first..last``)."""

    splits: list[int]
    dividends: list[int]
    gaps: list[tuple[int, int, str]]  # (first missing session, length, kind)
    ticks: list[int]


class SyntheticMarket:
    """Generates a :class:`SyntheticData` from a :class:`SyntheticConfig`; see the module docstring."""

    def __init__(self, config: SyntheticConfig) -> None:
        self.config = config

    def generate(self) -> SyntheticData:
        """Generate bars, actions, listings and the list of injected defects (vectorised over bars)."""
        cfg = self.config
        sessions = trading_calendar().sessions(cfg.start, cfg.end)
        n_days = len(sessions)
        names = symbol_names(cfg.symbols)
        if n_days == 0:
            return SyntheticData(batch=BarBatch(bars=empty(BAR_SCHEMA)), injected=empty(INJECTED_SCHEMA))
        rng = np.random.default_rng(cfg.seed)
        n_sym = cfg.symbols

        # Per-symbol character: sector, market beta, idiosyncratic vol, starting price, liquidity.
        sector = rng.integers(0, cfg.sectors, n_sym)
        beta = rng.uniform(0.7, 1.3, n_sym)
        idio_vol = rng.uniform(0.008, 0.022, n_sym)
        drift = rng.normal(0.0003, 0.0002, n_sym)
        start_price = np.exp(rng.uniform(math.log(10.0), math.log(500.0), n_sym))
        dollar_volume = np.exp(rng.normal(math.log(2e7), 1.0, n_sym))
        annual_yield = rng.uniform(0.01, 0.04, n_sym)  # quarterly payment 0.25-1 % of price
        first, last = _listing_windows(rng, n_sym, n_days, cfg.ipo_fraction, cfg.delist_fraction)
        payers = rng.permutation(n_sym)[: round(cfg.dividend_rate * n_sym)]
        pays = np.zeros(n_sym, dtype=bool)
        pays[payers] = True

        # Economic log returns, shape (symbols, sessions): market + sector + idiosyncratic, fat tails.
        market = 0.009 * _student_t(rng, (n_days,))
        sector_factor = 0.006 * _student_t(rng, (cfg.sectors, n_days))
        idio = idio_vol[:, None] * _student_t(rng, (n_sym, n_days))
        if cfg.momentum:
            idio = idio + cfg.momentum * _trailing_mean(idio, MOMENTUM_WINDOW)
        returns = drift[:, None] + beta[:, None] * market[None, :] + sector_factor[sector] + idio
        np.clip(returns, -MAX_LOG_RETURN, MAX_LOG_RETURN, out=returns)

        # Place events symbol by symbol (few per symbol), then bound the move across every gap.
        events: list[_Events] = []
        for i in range(n_sym):
            ev = _place_events(rng, cfg, int(first[i]), int(last[i]), n_days, bool(pays[i]))
            for gap_start, length, _ in ev.gaps:
                # The bar after the gap moves by the sum of the returns of the missing sessions and its
                # own; scale them down together so that move stays within the clean bound.
                window = returns[i, gap_start : gap_start + length + 1]
                total = float(window.sum())
                if abs(total) > MAX_LOG_RETURN:
                    window *= MAX_LOG_RETURN / abs(total)
            events.append(ev)

        # Economic log price, anchored so the first listed bar closes at the starting price.
        cum = np.cumsum(returns, axis=1)
        anchor = cum[np.arange(n_sym), first]
        log_close = np.log(start_price)[:, None] + cum - anchor[:, None]
        log_prev_close = log_close - returns

        # Corporate actions: their sizes depend on the raw price on the day before, so walk them in
        # order per symbol; record log multipliers on the ex-dates and accumulate them afterwards.
        log_action = np.zeros((n_sym, n_days))
        log_split = np.zeros((n_sym, n_days))
        action_rows: list[tuple[str, date, float, float]] = []
        session_dates: list[date] = sessions.to_list()
        for i, ev in enumerate(events):
            log_k = 0.0
            todo = sorted([(t, "split") for t in ev.splits] + [(t, "dividend") for t in ev.dividends])
            for t, kind in todo:
                prev_raw = float(_round_prices(np.array([math.exp(log_close[i, t - 1] + log_k)]))[0])
                if kind == "split":
                    ratio = _split_ratio(rng, prev_raw)
                    mult = 1.0 / ratio
                    log_split[i, t] = math.log(ratio)
                    action_rows.append((names[i], session_dates[t], ratio, 0.0))
                else:
                    dividend = round(annual_yield[i] / 4 * prev_raw, 4)
                    if dividend <= 0.0:
                        continue
                    mult = 1.0 - dividend / prev_raw
                    action_rows.append((names[i], session_dates[t], 1.0, dividend))
                log_action[i, t] = math.log(mult)
                log_k += math.log(mult)
        log_k_all = np.cumsum(log_action, axis=1)
        split_volume = np.exp(np.cumsum(log_split, axis=1))

        # OHLC around the economic close: the open takes part of the day's move overnight, the range
        # extends beyond both by a small positive amount, so high > max(open, close) and low < min.
        overnight = 0.3 * returns + 0.003 * rng.standard_normal((n_sym, n_days))
        log_open = log_prev_close + overnight
        wick = idio_vol[:, None] * 0.4
        up = np.abs(rng.standard_normal((n_sym, n_days))) * wick + 0.001
        down = np.abs(rng.standard_normal((n_sym, n_days))) * wick + 0.001
        k_mult = np.exp(log_k_all)
        close = np.exp(log_close) * k_mult
        open_ = np.exp(log_open) * k_mult
        high = np.maximum(open_, close) * np.exp(up)
        low = np.minimum(open_, close) * np.exp(-down)

        # Volume: lognormal around the symbol's liquidity, higher on big moves; splits multiply it.
        total_vol = np.sqrt((beta * 0.009) ** 2 + 0.006**2 + idio_vol**2)
        surprise = np.abs(returns) / total_vol[:, None] - 0.8  # mean |z| of a unit shock is ~0.8
        shares = (dollar_volume / start_price)[:, None] * np.exp(
            0.3 * rng.standard_normal((n_sym, n_days)) + 0.4 * surprise
        )
        volume = np.maximum(np.round(shares * split_volume), 100.0)

        open_, high, low, close = (np.maximum(_round_prices(x), MIN_PRICE) for x in (open_, high, low, close))

        # Inject bad ticks and gaps.
        present = np.zeros((n_sym, n_days), dtype=bool)
        injected_rows: list[tuple[int, int, str]] = []
        tick_kind = int(rng.integers(0, len(BAD_TICK_KINDS)))  # kinds rotate, so every kind appears
        for i, ev in enumerate(events):
            present[i, first[i] : last[i] + 1] = True
            for gap_start, length, kind in ev.gaps:
                present[i, gap_start : gap_start + length] = False
                injected_rows.extend((i, t, kind) for t in range(gap_start, gap_start + length))
            for t in ev.ticks:
                kind = BAD_TICK_KINDS[tick_kind % len(BAD_TICK_KINDS)]
                tick_kind += 1
                _inject_tick(rng, kind, i, t, open_, high, low, close, volume)
                injected_rows.append((i, t, kind))

        rows, cols = np.nonzero(present)
        session_np = sessions.to_numpy()
        symbol_series = pl.Series("symbol", names, dtype=pl.String)
        bars = pl.DataFrame(
            {
                "symbol": symbol_series.gather(rows),
                "date": pl.Series("date", session_np[cols], dtype=pl.Date),
                "open": open_[rows, cols],
                "high": high[rows, cols],
                "low": low[rows, cols],
                "close": close[rows, cols],
                "volume": volume[rows, cols],
            }
        )

        actions = _actions_frame(action_rows)
        listings = conform(
            pl.DataFrame(
                {
                    "symbol": names,
                    "start_date": [session_dates[int(a)] for a in first],
                    "end_date": [session_dates[int(b)] if b < n_days - 1 else None for b in last],
                    "tradable": [True] * n_sym,
                    "sector": [sector_name(int(s)) for s in sector],
                },
                schema_overrides={"end_date": pl.Date},
            ),
            LISTING_SCHEMA,
        )
        injected = conform(
            pl.DataFrame(
                {
                    "symbol": [names[i] for i, _, _ in injected_rows],
                    "date": [session_dates[t] for _, t, _ in injected_rows],
                    "kind": [kind for _, _, kind in injected_rows],
                },
                schema=INJECTED_SCHEMA,
            ),
            INJECTED_SCHEMA,
        ).sort("symbol", "date")
        return SyntheticData(
            batch=BarBatch(bars=conform(bars, BAR_SCHEMA), actions=actions, listings=listings),
            injected=injected,
        )


class SyntheticSource:
    """A :class:`~trader.data.sources.BarSource` serving a generated market (generated once, lazily)."""

    def __init__(self, config: SyntheticConfig | None = None) -> None:
        self.config = config if config is not None else SyntheticConfig()
        self._data: SyntheticData | None = None

    @property
    def name(self) -> str:
        """Always ``synthetic``."""
        return SOURCE_NAME

    @property
    def data(self) -> SyntheticData:
        """The whole generated market, including the list of injected defects."""
        if self._data is None:
            self._data = SyntheticMarket(self.config).generate()
        return self._data

    def health(self) -> SourceHealth:
        """Always healthy: nothing remote to reach."""
        return SourceHealth(source=SOURCE_NAME, ok=True, detail="deterministic generator", latency_ms=0.0)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        """Bars of ``symbols`` (``None``: all) from ``start`` to ``end`` inclusive.

        Actions are those of the same symbols with an ex-date in the range; listings are those of the
        same symbols listed at some point in the range (their dates are the full listing, not clipped).
        """
        batch = self.data.batch
        wanted = pl.lit(True) if symbols is None else pl.col("symbol").is_in(list(symbols))
        bars = batch.bars.filter(wanted & pl.col("date").is_between(start, end))
        actions = batch.actions.filter(wanted & pl.col("ex_date").is_between(start, end))
        listings = batch.listings.filter(
            wanted
            & (pl.col("start_date") <= end)
            & (pl.col("end_date").is_null() | (pl.col("end_date") >= start))
        )
        return BarBatch(bars=bars, actions=actions, listings=listings)


def _trailing_mean(values: FloatArray, window: int) -> FloatArray:
    """Mean of the previous ``window`` columns (not the current one); 0 before there are any."""
    padded = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(values, axis=1)], axis=1)
    ends = np.arange(values.shape[1])
    starts = np.maximum(ends - window, 0)
    counts = np.maximum(ends - starts, 1)
    means: FloatArray = (padded[:, ends] - padded[:, starts]) / counts
    return means


def _student_t(rng: np.random.Generator, shape: tuple[int, ...]) -> FloatArray:
    # Student-t with 4 degrees of freedom has variance 2; scale to unit variance so the vol
    # parameters mean what they say while the tails stay fat.
    return rng.standard_t(4, shape) / math.sqrt(2.0)


def _round_prices(prices: FloatArray) -> FloatArray:
    # Cents from $1 up, sub-penny (4 decimals) below, as US equities quote. Monotonic, so rounding
    # never breaks low <= open/close <= high.
    return np.where(prices >= 1.0, np.round(prices, 2), np.round(prices, 4))


def _listing_windows(
    rng: np.random.Generator, n_sym: int, n_days: int, ipo_fraction: float, delist_fraction: float
) -> tuple[IntArray, IntArray]:
    """First and last listed session index per symbol; IPOs in the first half, delistings in the second."""
    first = np.zeros(n_sym, dtype=np.int64)
    last = np.full(n_sym, n_days - 1, dtype=np.int64)
    ipos = rng.permutation(n_sym)[: round(ipo_fraction * n_sym)]
    delists = rng.permutation(n_sym)[: round(delist_fraction * n_sym)]
    half = n_days // 2
    if n_days >= 5:  # room for a first bar after the start and a last bar after the middle, before the end
        first[ipos] = rng.integers(1, half, ipos.size)
        last[delists] = rng.integers(half + 1, n_days - 1, delists.size)
    return first, last


def _clear(occupied: BoolArray, length: int, margin: int) -> BoolArray:
    """For each start ``s``: no occupied session in ``[s - margin, s + length - 1 + margin]``."""
    n = occupied.size
    counts = np.concatenate(([0], np.cumsum(occupied, dtype=np.int64)))
    starts = np.arange(n)
    left = np.clip(starts - margin, 0, n)
    right = np.clip(starts + length + margin, 0, n)
    clear: BoolArray = (counts[right] - counts[left]) == 0
    return clear


def _pick(rng: np.random.Generator, ok: BoolArray, lo: int, hi: int, length: int) -> int | None:
    """A random start in ``[lo, hi - length + 1]`` where ``ok`` holds, or ``None`` if there is none."""
    last_start = hi - length + 1
    if last_start < lo:
        return None
    candidates = np.flatnonzero(ok[lo : last_start + 1])
    if candidates.size == 0:
        return None
    return lo + int(rng.choice(candidates))


def _place_events(
    rng: np.random.Generator, cfg: SyntheticConfig, first: int, last: int, n_days: int, pays: bool
) -> _Events:
    """Choose one symbol's ex-dates, gaps and bad ticks, spaced so each is unambiguous."""
    life = last - first + 1
    years = life / SESSIONS_PER_YEAR
    splits_at = np.zeros(n_days, dtype=bool)
    actions_at = np.zeros(n_days, dtype=bool)
    gaps_at = np.zeros(n_days, dtype=bool)
    ticks_at = np.zeros(n_days, dtype=bool)
    ev = _Events(splits=[], dividends=[], gaps=[], ticks=[])

    # Ex-dates need a bar the day before (the dividend's previous close), so never on the first bar.
    for _ in range(int(rng.poisson(cfg.split_rate * years))):
        t = _pick(rng, _clear(splits_at, 1, 20), first + 1, last, 1)
        if t is None:
            break
        splits_at[t] = True
        ev.splits.append(t)
    if pays and life > QUARTER:
        phase = first + 1 + int(rng.integers(0, QUARTER))
        scheduled = np.arange(phase, last + 1, QUARTER)
        jittered = scheduled + rng.integers(-3, 4, scheduled.size)
        away_from_splits = _clear(splits_at, 1, 5)
        for t in jittered.tolist():
            if first + 1 <= t <= last and away_from_splits[t]:
                ev.dividends.append(t)
    actions_at[ev.splits] = True
    actions_at[ev.dividends] = True

    # Gaps stay strictly inside the listing (first and last bar exist), 2 sessions away from any
    # ex-date (so neither the ex-date nor the session before it is missing) and from other gaps.
    def place_gap(length: int, kind: str) -> None:
        ok = _clear(actions_at, length, 2) & _clear(gaps_at, length, 2)
        t = _pick(rng, ok, first + 1, last - 1, length)
        if t is not None:
            gaps_at[t : t + length] = True
            ev.gaps.append((t, length, kind))

    for _ in range(int(rng.poisson(cfg.halt_rate * years))):
        place_gap(int(rng.integers(2, 6)), "halt")
    for _ in range(int(rng.poisson(cfg.missing_day_rate * life))):
        place_gap(1, "missing_day")
    ev.gaps.sort()

    # Bad ticks: not first/last bar, >= 3 sessions from ex-dates and each other, neighbours present.
    for _ in range(int(rng.poisson(cfg.bad_tick_rate * life))):
        ok = _clear(actions_at, 1, 2) & _clear(ticks_at, 1, 2) & _clear(gaps_at, 1, 1)
        t = _pick(rng, ok, first + 1, last - 1, 1)
        if t is None:
            break
        ticks_at[t] = True
    ev.ticks = np.flatnonzero(ticks_at).tolist()
    return ev


def _split_ratio(rng: np.random.Generator, price: float) -> float:
    # Companies split forward when the price is high and reverse-split when it is low; this also
    # keeps the raw price in a plausible range over long histories.
    if price < 8.0:
        return 0.5
    if price > 150.0:
        return float(rng.choice([2.0, 3.0, 4.0] if price > 300.0 else [2.0, 3.0]))
    return float(rng.choice([2.0, 3.0, 4.0, 0.5], p=[0.55, 0.2, 0.1, 0.15]))


def _inject_tick(
    rng: np.random.Generator,
    kind: str,
    i: int,
    t: int,
    open_: FloatArray,
    high: FloatArray,
    low: FloatArray,
    close: FloatArray,
    volume: FloatArray,
) -> None:
    """Corrupt bar ``(i, t)`` in place so it breaks exactly the rule ``kind`` names."""
    if kind == "bad_tick_spike":
        factor = float(rng.uniform(3.0, 6.0))
        if rng.random() < 0.5:  # up: the high moves with the close, so OHLC stays consistent
            close[i, t] = round(close[i, t] * factor, 4)
            high[i, t] = round(high[i, t] * factor, 4)
        else:
            close[i, t] = round(close[i, t] / factor, 4)
            low[i, t] = round(low[i, t] / factor, 4)
    elif kind == "bad_tick_ohlc":
        old_high, old_low = high[i, t], low[i, t]
        high[i, t] = round(old_low * 0.97, 4)
        low[i, t] = round(old_high * 1.03, 4)
    elif kind == "bad_tick_negative_price":
        low[i, t] = 0.0 if rng.random() < 0.5 else -low[i, t]
    else:
        volume[i, t] = -volume[i, t]


def _actions_frame(rows: list[tuple[str, date, float, float]]) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "symbol": [r[0] for r in rows],
            "ex_date": [r[1] for r in rows],
            "split_ratio": [r[2] for r in rows],
            "cash_dividend": [r[3] for r in rows],
            "source": [SOURCE_NAME] * len(rows),
        },
        schema=ACTION_SCHEMA,
    )
    return conform(frame, ACTION_SCHEMA).sort("symbol", "ex_date")


__all__ = [
    "BAD_TICK_KINDS",
    "GAP_KINDS",
    "INJECTED_KINDS",
    "INJECTED_SCHEMA",
    "SOURCE_NAME",
    "SyntheticConfig",
    "SyntheticData",
    "SyntheticMarket",
    "SyntheticSource",
    "symbol_names",
]
