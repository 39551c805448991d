"""Backtest a table of scores with Qlib's own executor, US equity costs and an equal-weight benchmark.

:func:`run_backtest` runs one cost setting; :func:`run_scenarios` runs the base costs, no costs,
three times the slippage and twice the fees on the same scores. Both write, atomically, into
``out_dir``::

    metrics.json   every metric per scenario, the signal's IC, the benchmark, the inputs
    positions.csv  date, symbol, qty, price, value, weight   (holdings after each session's trades)
    trades.csv     date, symbol, side, qty, price, value, cost
    equity.csv     date, strategy equity (after and before costs), benchmark equity, drawdown,
                   and the other scenarios' equity
    report.html    self-contained: equity vs benchmark, drawdown, daily IC plots and the tables

How a session is simulated (Qlib's ``TopkDropoutStrategy`` + ``SimulatorExecutor`` + ``Exchange``):
the score of date t (known at t's close) is traded at the close of the next session t+1; the
portfolio holds the ``topk`` best-scored symbols and replaces at most ``n_drop`` a session, buying
with 95 % of the cash (Qlib's ``risk_degree``); only symbols with a bar that session are bought or
sold (``only_tradable``). A held symbol is sold at the close of its last listed session (a
delisting is announced before it happens), so no position outlives its listing. Shares are whole
raw shares (``trade_unit=1`` applied to ``adjusted price / factor``), there are no price limits.

Costs (see :func:`exchange_costs`): Qlib charges a cost *rate* on the traded value, at least
``min_cost`` per order. Slippage is folded into that rate: a buy pays ``commission + slippage``, a
sell ``commission + sell fee + slippage``, in bps of the value traded at the close. The deal price
itself is not moved, so slippage shows up in the costs paid, not in the fill prices.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import math
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl

from trader.data.store import fsync_dir, write_synced
from trader.errors import TraderError
from trader.research import metrics as m
from trader.research.qlib_export import require_market
from trader.strategies.config import LABEL_EXPRESSION, Costs, DateRange, StrategyConfig

#: The scenario runs of :func:`run_scenarios`, in report order.
SCENARIO_ORDER = ("no_cost", "base", "slippage_x3", "fees_x2")
#: Files written into ``out_dir``; ``metrics.json`` is the last one replaced.
METRICS_FILE = "metrics.json"
POSITIONS_FILE = "positions.csv"
TRADES_FILE = "trades.csv"
EQUITY_FILE = "equity.csv"
REPORT_FILE = "report.html"
OUTPUT_FILES = (POSITIONS_FILE, TRADES_FILE, EQUITY_FILE, REPORT_FILE, METRICS_FILE)
METRICS_FORMAT = 1
#: Qlib's share of cash a TopkDropout rebalance spends (the rest is a buffer for costs and rounding).
RISK_DEGREE = 0.95
SCORE_COLUMNS = ("date", "symbol", "score")

Progress = Callable[[str], None]


class BacktestError(TraderError):
    """The backtest cannot run on this export (the message says what is missing)."""


class BacktestInputError(BacktestError):
    """The scores or the strategy settings cannot be backtested (the message names the problem)."""

    exit_code = 2


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestPaths:
    """The files a backtest wrote."""

    out_dir: Path

    @property
    def metrics(self) -> Path:
        return self.out_dir / METRICS_FILE

    @property
    def positions(self) -> Path:
        return self.out_dir / POSITIONS_FILE

    @property
    def trades(self) -> Path:
        return self.out_dir / TRADES_FILE

    @property
    def equity(self) -> Path:
        return self.out_dir / EQUITY_FILE

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE


@dataclass(frozen=True)
class ScenarioRun:
    """One simulation: its costs, metrics (``before_costs``, ``after_costs``, ``trading``) and days.

    ``daily`` is indexed by session date with columns ``return`` (after costs), ``return_before_costs``,
    ``cost`` (costs paid / previous account value), ``benchmark``, ``turnover`` (value traded /
    previous account value), ``account_value``, ``cash``, ``total_cost`` (dollars so far), ``holdings``.
    """

    label: str
    costs: Costs
    metrics: dict[str, Any]
    daily: pd.DataFrame
    positions: pd.DataFrame
    trades: pd.DataFrame


@dataclass(frozen=True)
class BacktestResult:
    """What :func:`run_backtest` / :func:`run_scenarios` produced.

    ``metrics`` is the content of ``metrics.json``; ``daily``, ``positions`` and ``trades`` are those
    of the main run (``label``); ``ic`` holds the daily IC and rank IC; ``scenarios`` every run by label.
    """

    label: str
    metrics: dict[str, Any]
    paths: BacktestPaths
    daily: pd.DataFrame
    positions: pd.DataFrame
    trades: pd.DataFrame
    ic: pd.DataFrame
    scenarios: dict[str, ScenarioRun] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, float]:
        """Headline numbers of the main run after costs (what promotion thresholds look at)."""
        return dict(self.metrics["summary"])

    def flat_metrics(self) -> dict[str, float]:
        """Every finite number of ``metrics.json`` under a dotted name (for MLflow)."""
        flat: dict[str, float] = {}
        for key, value in self.metrics["summary"].items():
            flat[key] = value
        for label, section in self.metrics["scenarios"].items():
            for group in ("after_costs", "before_costs", "trading"):
                for key, value in section[group].items():
                    flat[f"{label}.{group}.{key}"] = value
        for key, value in self.metrics["benchmark"].items():
            flat[f"benchmark.{key}"] = value
        return {k: float(v) for k, v in flat.items() if isinstance(v, int | float) and math.isfinite(v)}


# --------------------------------------------------------------------------------------------------
# Pure parts: costs, period, scores
# --------------------------------------------------------------------------------------------------


def exchange_costs(costs: Costs) -> dict[str, float]:
    """Qlib ``Exchange`` cost settings for US equities: rates on traded value, dollars per order.

    ``open_cost`` (buys) = commission + slippage; ``close_cost`` (sells) = commission + sell fee +
    slippage, both in bps / 10,000; ``min_cost`` = the minimum commission per order.
    """
    return {
        "open_cost": (costs.commission_bps + costs.slippage_bps) / 1e4,
        "close_cost": (costs.commission_bps + costs.sell_fee_bps + costs.slippage_bps) / 1e4,
        "min_cost": costs.min_commission,
    }


def scenario_costs(costs: Costs) -> dict[str, Costs]:
    """The costs of each scenario of :func:`run_scenarios`, in :data:`SCENARIO_ORDER`."""
    free = Costs(commission_bps=0.0, sell_fee_bps=0.0, min_commission=0.0, slippage_bps=0.0)
    return {
        "no_cost": free,
        "base": costs,
        "slippage_x3": costs.scaled(slippage=3.0),
        "fees_x2": costs.scaled(fees=2.0),
    }


@dataclass(frozen=True)
class Period:
    """The sessions simulated: ``start`` .. ``end`` (both sessions of the export).

    ``signal_start`` is the session before ``start``: its scores decide the first session's trades.
    ``notes`` say why the period differs from the requested one.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    signal_start: pd.Timestamp
    sessions: int
    requested: DateRange
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.date().isoformat(),
            "end": self.end.date().isoformat(),
            "sessions": self.sessions,
            "requested_start": self.requested.start.isoformat(),
            "requested_end": self.requested.end.isoformat(),
            "notes": list(self.notes),
        }


def resolve_period(requested: DateRange, calendar: pd.DatetimeIndex, *, has_future: bool) -> Period:
    """The sessions of ``calendar`` inside ``requested``, clipped to what Qlib can simulate.

    Qlib's backtest looks up the session after its end date and fails on the calendar's last day
    unless ``calendars/day_future.txt`` lists later sessions (the exporter writes it); without it the
    period ends one session earlier.
    """
    if len(calendar) == 0:
        raise BacktestError("the Qlib export has an empty calendar; run 'trader research export'")
    first, last = calendar[0].date(), calendar[-1].date()
    inside = calendar[(calendar >= pd.Timestamp(requested.start)) & (calendar <= pd.Timestamp(requested.end))]
    if len(inside) == 0:
        raise BacktestInputError(
            f"segments.test ({requested.start} .. {requested.end}) has no session in the Qlib export "
            f"({first} .. {last}); set a test segment inside the exported data"
        )
    notes: list[str] = []
    if inside[0].date() != requested.start or inside[-1].date() != requested.end:
        notes.append(f"clipped to the sessions of the export: {inside[0].date()} .. {inside[-1].date()}")
    if not has_future and inside[-1] == calendar[-1]:
        if len(inside) < 2:
            raise BacktestInputError(
                f"segments.test ends on the export's last session {last} and has no other session; "
                "Qlib needs the session after the end (re-export to write calendars/day_future.txt)"
            )
        inside = inside[:-1]
        notes.append(f"ends at {inside[-1].date()}: the export has no calendars/day_future.txt")
    position = calendar.get_loc(inside[0])
    signal_start = calendar[position - 1] if position > 0 else inside[0]
    return Period(inside[0], inside[-1], signal_start, len(inside), requested, tuple(notes))


@dataclass(frozen=True)
class ScoreCheck:
    """What :func:`prepare_scores` found in the scores table."""

    rows: int
    used: int
    dropped_nan: int
    dropped_outside_period: int
    dropped_unlisted: int
    symbols: int
    signal_sessions: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


Listings = Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]]


def _examples(values: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in list(values)[:limit])
    return shown + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def _as_frame(scores: pl.DataFrame | pd.DataFrame) -> pd.DataFrame:
    if isinstance(scores, pl.DataFrame):
        frame = scores.to_pandas()
    elif isinstance(scores, pd.DataFrame):
        frame = scores
        if not set(SCORE_COLUMNS) <= set(frame.columns) and set(frame.index.names) & {"date", "symbol"}:
            frame = frame.reset_index()
    else:
        raise BacktestInputError(f"scores must be a Polars or pandas table, got {type(scores).__name__}")
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise BacktestInputError(
            f"scores table lacks column(s) {', '.join(missing)}; expected columns date, symbol, score"
        )
    return frame


def _parse_dates(column: pd.Series) -> pd.Series:
    try:
        parsed = pd.to_datetime(column)
    except (ValueError, TypeError) as exc:
        raise BacktestInputError(f"scores.date: not dates ({exc})") from None
    if parsed.isna().any():
        raise BacktestInputError(f"scores.date: {int(parsed.isna().sum())} rows have no date")
    if parsed.dt.tz is not None:
        parsed = parsed.dt.tz_convert(UTC).dt.tz_localize(None)
    return parsed.dt.normalize().astype("datetime64[ns]")


def _listed_mask(dates: pd.Series, symbols: pd.Series, listings: Listings) -> np.ndarray:
    """True where the symbol is listed on the date (inside one of its listing ranges)."""
    ranges = pd.DataFrame(
        [(s, pd.Timestamp(a), pd.Timestamp(b)) for s, spans in listings.items() for a, b in spans],
        columns=["symbol", "first", "last"],
    )
    rows = pd.DataFrame(
        {"symbol": symbols.to_numpy(), "date": dates.to_numpy(), "row": np.arange(len(dates))}
    )
    joined = rows.merge(ranges, on="symbol", how="inner")
    inside = joined[(joined["date"] >= joined["first"]) & (joined["date"] <= joined["last"])]
    mask = np.zeros(len(dates), dtype=bool)
    mask[inside["row"].to_numpy()] = True
    return mask


def prepare_scores(
    scores: pl.DataFrame | pd.DataFrame,
    *,
    listings: Listings,
    calendar: pd.DatetimeIndex,
    period: Period,
) -> tuple[pd.Series, ScoreCheck]:
    """Validate ``scores`` (``date, symbol, score``) and turn them into Qlib's signal.

    Refused (:class:`BacktestInputError`): an empty table, missing columns, a date that is not a
    session of the export, a symbol the export does not know, a duplicated (date, symbol), an
    infinite or non-numeric score, no usable row left. Dropped and counted: NaN scores (a model may
    not score a symbol it lacks data for), rows outside the period's signal window
    (``signal_start .. end``), and rows of a symbol on a date it is not listed (the universe is
    point in time). Returns a float Series indexed ``(datetime, instrument)``.
    """
    frame = _as_frame(scores)
    if frame.empty:
        raise BacktestInputError("scores table is empty; score the test segment first")
    dates = _parse_dates(frame["date"])
    symbols = frame["symbol"].astype("string")
    if not pd.api.types.is_numeric_dtype(frame["score"]) or pd.api.types.is_bool_dtype(frame["score"]):
        raise BacktestInputError(f"scores.score must be numeric, got {frame['score'].dtype}")
    values = frame["score"].astype("float64")

    if symbols.isna().any():
        raise BacktestInputError(f"scores.symbol: {int(symbols.isna().sum())} rows have no symbol")
    unknown = sorted(set(symbols.unique()) - set(listings))
    if unknown:
        raise BacktestInputError(
            f"scores name {len(unknown)} symbol(s) the Qlib export does not have: {_examples(unknown)}; "
            "export them ('trader research export') or drop them from the scores"
        )
    off_calendar = sorted(set(dates.unique()) - set(calendar))
    if off_calendar:
        shown = [pd.Timestamp(d).date() for d in off_calendar]
        raise BacktestInputError(
            f"scores.date: {len(shown)} date(s) are not sessions of the export: {_examples(shown)}"
        )
    duplicated = pd.DataFrame({"d": dates, "s": symbols}).duplicated()
    if duplicated.any():
        first = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise BacktestInputError(
            f"scores has {int(duplicated.sum())} duplicated (date, symbol) rows, e.g. "
            f"{dates.iloc[first].date()} {symbols.iloc[first]}"
        )
    if np.isinf(values.to_numpy()).any():
        raise BacktestInputError(f"scores.score: {int(np.isinf(values).sum())} rows are infinite")

    is_nan = values.isna().to_numpy()
    in_window = ((dates >= period.signal_start) & (dates <= period.end)).to_numpy()
    listed = _listed_mask(dates, symbols, listings)
    keep = ~is_nan & in_window & listed
    check = ScoreCheck(
        rows=len(frame),
        used=int(keep.sum()),
        dropped_nan=int(is_nan.sum()),
        dropped_outside_period=int((~is_nan & ~in_window).sum()),
        dropped_unlisted=int((~is_nan & in_window & ~listed).sum()),
        symbols=int(symbols[keep].nunique()),
        signal_sessions=int(dates[keep].nunique()),
    )
    if check.used == 0:
        raise BacktestInputError(
            f"no usable score in {period.signal_start.date()} .. {period.end.date()} "
            f"(the test segment and the session before it): {check.rows} rows, "
            f"{check.dropped_nan} NaN, {check.dropped_outside_period} outside the period, "
            f"{check.dropped_unlisted} for symbols not listed that day"
        )
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(dates[keep]), pd.Index(symbols[keep].astype(str))], names=["datetime", "instrument"]
    )
    signal = pd.Series(values[keep].to_numpy(), index=index, name="score").sort_index()
    return signal, check


def exit_sessions(listings: Listings, last_session: pd.Timestamp) -> dict[pd.Timestamp, frozenset[str]]:
    """Sessions on which a listing ends before the data does (a delisting): session -> symbols."""
    exits: dict[pd.Timestamp, set[str]] = {}
    for symbol, spans in listings.items():
        for _, end in spans:
            if pd.Timestamp(end) < last_session:
                exits.setdefault(pd.Timestamp(end).normalize(), set()).add(symbol)
    return {day: frozenset(symbols) for day, symbols in exits.items()}


def equal_weight_benchmark(changes: pd.Series, sessions: pd.DatetimeIndex) -> pd.Series:
    """Mean of the daily ``$change`` of every symbol with a value that session (0 on a session without).

    ``changes`` is indexed ``(instrument, datetime)`` or ``(datetime, instrument)``; Qlib returns
    rows only inside each symbol's listing, so the mean is over the point-in-time universe.
    """
    level = "datetime" if "datetime" in (changes.index.names or []) else 1
    mean = pd.Series(changes, dtype="float64").groupby(level=level).mean()
    mean.index = pd.DatetimeIndex(mean.index)
    return mean.reindex(sessions).fillna(0.0).rename("benchmark")


# --------------------------------------------------------------------------------------------------
# Qlib machinery
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # NumPy's "Mean of empty slice" from Qlib's indicator on sessions without trades, pandas'
    # chained-assignment notices: noise, not information (qlib-offline.md, pitfall 5).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@functools.cache
def _qlib_classes() -> tuple[type[Any], type[Any]]:
    """Our Qlib ``Exchange`` and strategy subclasses (defined on first use: importing Qlib is slow)."""
    with contextlib.redirect_stderr(io.StringIO()):  # gym prints a NumPy 2 notice when imported
        from qlib.contrib.strategy.signal_strategy import TopkDropoutStrategy
    from qlib.backtest.decision import Order, TradeDecisionWO
    from qlib.backtest.exchange import Exchange

    class UsExchange(Exchange):  # type: ignore[misc]
        """Qlib's exchange, able to buy when the cost rate is 0 (Qlib divides by the rate there)."""

        def _get_buy_amount_by_cash_limit(self, trade_price: float, cash: float, cost_ratio: float) -> float:
            if cost_ratio <= 0 and self.min_cost <= 0:
                return cash / trade_price
            return float(super()._get_buy_amount_by_cash_limit(trade_price, cash, cost_ratio))

    class TopkDropoutWithExits(TopkDropoutStrategy):  # type: ignore[misc]
        """TopkDropout that sells a holding on its last listed session and never buys it that day."""

        def __init__(self, *, exits: Mapping[pd.Timestamp, frozenset[str]], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.exits = exits

        def generate_trade_decision(self, execute_result: Any = None) -> Any:
            decision = super().generate_trade_decision(execute_result)
            start, end = self.trade_calendar.get_step_time(self.trade_calendar.get_trade_step())
            leaving = self.exits.get(pd.Timestamp(start).normalize(), frozenset())
            if not leaving:
                return decision
            orders = [
                o for o in decision.order_list if not (o.direction == Order.BUY and o.stock_id in leaving)
            ]
            selling = {o.stock_id for o in orders if o.direction == Order.SELL}
            exits = []
            for code in self.trade_position.get_stock_list():
                if code in leaving and code not in selling:
                    amount = self.trade_position.get_stock_amount(code)
                    order = Order(
                        stock_id=code, amount=amount, start_time=start, end_time=end, direction=Order.SELL
                    )
                    if self.trade_exchange.check_order(order):
                        exits.append(order)
            return TradeDecisionWO(exits + orders, self)

    return UsExchange, TopkDropoutWithExits


@dataclass
class _Market:
    """Everything the scenario runs share: loaded once from Qlib."""

    config: StrategyConfig
    provider_uri: Path
    period: Period
    sessions: pd.DatetimeIndex
    signal: pd.Series
    score_check: ScoreCheck
    benchmark: pd.Series
    labels: pd.Series
    factors: pd.DataFrame  # session x symbol, forward-filled: raw quantity = Qlib amount x factor
    exits: dict[pd.Timestamp, frozenset[str]]
    exchange: Any


def _check_config(config: StrategyConfig) -> None:
    if config.portfolio.long_short:
        raise BacktestInputError("portfolio.long_short: the backtest is long only; set it to false")


def _open_market(
    scores: pl.DataFrame | pd.DataFrame,
    config: StrategyConfig,
    provider_uri: Path,
    mlflow_uri: str | None,
    progress: Progress,
) -> _Market:
    from trader.research.qlib_runtime import init_qlib

    _check_config(config)
    require_market(provider_uri, config.market)
    progress("opening the Qlib export")
    init_qlib(provider_uri, mlflow_uri=mlflow_uri)
    from qlib.data import D

    calendar = pd.DatetimeIndex(D.calendar(freq="day"))
    has_future = (provider_uri / "calendars" / "day_future.txt").is_file()
    period = resolve_period(config.segments.test, calendar, has_future=has_future)
    instruments = D.instruments(config.market)
    listings = D.list_instruments(instruments, as_list=False)
    if not listings:
        raise BacktestError(f"the Qlib export has no instruments in market {config.market!r}")
    signal, check = prepare_scores(scores, listings=listings, calendar=calendar, period=period)
    sessions = calendar[(calendar >= period.start) & (calendar <= period.end)]

    progress("loading prices, labels and the benchmark")
    start, end = period.start, period.end
    fields = D.features(instruments, ["$change", "$factor", LABEL_EXPRESSION], start, end, freq="day")
    fields.columns = ["change", "factor", "label"]
    benchmark = equal_weight_benchmark(fields["change"], sessions)
    labels = fields["label"].swaplevel().sort_index()
    labels.index = labels.index.set_names(["datetime", "instrument"])
    factors = fields["factor"].unstack(level=0).reindex(sessions).ffill()

    exchange_cls, _ = _qlib_classes()
    exchange = exchange_cls(
        freq="day",
        start_time=start,
        end_time=end,
        codes=config.market,
        deal_price="close",
        limit_threshold=None,  # US equities: no daily price limits
        trade_unit=1,
        **exchange_costs(config.costs),
    )
    return _Market(
        config=config,
        provider_uri=provider_uri,
        period=period,
        sessions=sessions,
        signal=signal,
        score_check=check,
        benchmark=benchmark,
        labels=labels,
        factors=factors,
        exits=exit_sessions(listings, calendar[-1]),
        exchange=exchange,
    )


Fill = tuple[pd.Timestamp, Any, float, float, float]


def _simulate(market: _Market, costs: Costs, label: str, progress: Progress) -> ScenarioRun:
    """One pass of Qlib's executor over the period with these costs."""
    from qlib.backtest import create_account_instance
    from qlib.backtest.executor import SimulatorExecutor
    from qlib.backtest.utils import CommonInfrastructure

    _, strategy_cls = _qlib_classes()
    config, period = market.config, market.period
    exchange = copy.copy(market.exchange)  # shares the loaded quotes; only the cost rates differ
    for name, value in exchange_costs(costs).items():
        setattr(exchange, name, value)
    account = create_account_instance(
        start_time=period.start,
        end_time=period.end,
        benchmark=market.benchmark,
        account=float(config.backtest.initial_cash),
    )
    infra = CommonInfrastructure(trade_account=account, trade_exchange=exchange)
    strategy = strategy_cls(
        signal=market.signal,
        topk=config.portfolio.topk,
        n_drop=config.portfolio.n_drop,
        only_tradable=True,
        risk_degree=RISK_DEGREE,
        exits=market.exits,
        common_infra=infra,
    )
    executor = SimulatorExecutor(time_per_step="day", generate_portfolio_metrics=True, common_infra=infra)
    # Qlib's backtest_loop without its tqdm bar: we report progress and keep every fill.
    executor.reset(start_time=period.start, end_time=period.end)
    strategy.reset(level_infra=executor.get_level_infra())
    total = executor.trade_calendar.get_trade_len()
    every = max(1, total // 10)
    fills: list[Fill] = []
    result = None
    step = 0
    while not executor.finished():
        day = pd.Timestamp(executor.trade_calendar.get_step_time()[0]).normalize()
        decision = strategy.generate_trade_decision(result)
        result = executor.execute(decision)
        strategy.post_exe_step(result)
        fills.extend((day, order, value, cost, price) for order, value, cost, price in result)
        step += 1
        if step % every == 0 or step == total:
            progress(f"{label}: session {step}/{total}")
    strategy.post_upper_level_exe_step()
    report, positions = executor.trade_account.get_portfolio_metrics()
    daily = _daily_frame(report, positions, market.sessions)
    holdings = _positions_frame(positions, market.factors)
    trades = _trades_frame(fills, market.factors)
    return ScenarioRun(
        label=label,
        costs=costs,
        metrics=_run_metrics(daily, trades, holdings, market),
        daily=daily,
        positions=holdings,
        trades=trades,
    )


def _daily_frame(
    report: pd.DataFrame, positions: Mapping[Any, Any], sessions: pd.DatetimeIndex
) -> pd.DataFrame:
    report = report.copy()
    report.index = pd.DatetimeIndex(report.index).normalize()
    holdings = pd.Series(
        {pd.Timestamp(day).normalize(): len(pos.get_stock_list()) for day, pos in positions.items()},
        dtype="int64",
    )
    daily = pd.DataFrame(
        {
            "return": report["return"] - report["cost"],
            "return_before_costs": report["return"],
            "cost": report["cost"],
            "benchmark": report["bench"],
            "turnover": report["turnover"],
            "account_value": report["account"],
            "cash": report["cash"],
            "total_cost": report["total_cost"],
            "holdings": holdings.reindex(report.index).fillna(0).astype("int64"),
        },
        index=report.index,
    ).astype({"holdings": "int64"})
    daily.index.name = "date"
    if len(daily) != len(sessions):
        raise BacktestError(f"Qlib simulated {len(daily)} sessions, the period has {len(sessions)}")
    return daily.astype({c: "float64" for c in daily.columns if c != "holdings"})


def _factor(factors: pd.DataFrame, day: pd.Timestamp, symbol: str) -> float:
    try:
        value = float(factors.at[day, symbol])
    except KeyError:
        return 1.0
    return value if math.isfinite(value) and value > 0 else 1.0


def _positions_frame(positions: Mapping[Any, Any], factors: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for stamp, position in sorted(positions.items()):
        day = pd.Timestamp(stamp).normalize()
        total = float(position.calculate_value())
        for symbol in position.get_stock_list():
            amount = float(position.get_stock_amount(symbol))
            adjusted_price = float(position.get_stock_price(symbol))
            factor = _factor(factors, day, symbol)
            value = amount * adjusted_price
            rows.append(
                (day.date(), symbol, round(amount * factor, 6), adjusted_price / factor, value, value / total)
            )
    return pd.DataFrame(rows, columns=["date", "symbol", "qty", "price", "value", "weight"])


def _trades_frame(fills: Sequence[Fill], factors: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for day, order, value, cost, price in fills:
        if not order.deal_amount or not value:
            continue  # refused or clipped to nothing (no bar, not enough cash)
        factor = _factor(factors, day, order.stock_id)
        side = "buy" if int(order.direction) == 1 else "sell"
        rows.append(
            (
                day.date(),
                order.stock_id,
                side,
                round(order.deal_amount * factor, 6),
                price / factor,
                value,
                cost,
            )
        )
    return pd.DataFrame(rows, columns=["date", "symbol", "side", "qty", "price", "value", "cost"])


def _run_metrics(
    daily: pd.DataFrame, trades: pd.DataFrame, holdings: pd.DataFrame, market: _Market
) -> dict[str, Any]:
    initial = float(market.config.backtest.initial_cash)
    total_costs = float(trades["cost"].sum()) if not trades.empty else 0.0
    return {
        "after_costs": m.return_metrics(daily["return"], daily["benchmark"]),
        "before_costs": m.return_metrics(daily["return_before_costs"], daily["benchmark"]),
        "trading": {
            "trading_days": len(daily),
            "mean_daily_turnover": m.mean_turnover(daily["turnover"]),
            "total_costs": total_costs,
            "costs_over_initial_cash": total_costs / initial,
            "trades": len(trades),
            "max_holdings": int(holdings.groupby("date")["symbol"].nunique().max())
            if not holdings.empty
            else 0,
            "final_value": float(daily["account_value"].iloc[-1]),
        },
    }


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------


def _json_ready(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _costs_dict(costs: Costs) -> dict[str, float]:
    return {**costs.model_dump(), **exchange_costs(costs)}


def _scenario_row(run: ScenarioRun) -> dict[str, Any]:
    after, trading = run.metrics["after_costs"], run.metrics["trading"]
    return {
        "scenario": run.label,
        "commission_bps": run.costs.commission_bps,
        "sell_fee_bps": run.costs.sell_fee_bps,
        "slippage_bps": run.costs.slippage_bps,
        "min_commission": run.costs.min_commission,
        "total_return": after["total_return"],
        "annualized_return": after["annualized_return"],
        "sharpe": after["sharpe"],
        "information_ratio": after["information_ratio"],
        "max_drawdown": after["max_drawdown"],
        "mean_daily_turnover": trading["mean_daily_turnover"],
        "total_costs": trading["total_costs"],
    }


def _document(
    market: _Market, runs: Mapping[str, ScenarioRun], main: str, signal: dict[str, float]
) -> dict[str, Any]:
    config, period = market.config, market.period
    run = runs[main]
    after = run.metrics["after_costs"]
    benchmark = m.return_metrics(market.benchmark)
    summary = {
        "annualized_return": after["annualized_return"],
        "total_return": after["total_return"],
        "sharpe": after["sharpe"],
        "information_ratio": after["information_ratio"],
        "excess_annualized_return": after["excess_annualized_return"],
        "max_drawdown": after["max_drawdown"],
        "mean_daily_turnover": run.metrics["trading"]["mean_daily_turnover"],
        "total_costs": run.metrics["trading"]["total_costs"],
        "annualized_return_before_costs": run.metrics["before_costs"]["annualized_return"],
        "benchmark_annualized_return": benchmark["annualized_return"],
        "benchmark_sharpe": benchmark["sharpe"],
        **signal,
    }
    import qlib

    return {
        "format": METRICS_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "main": main,
        "summary": summary,
        "inputs": {
            "strategy": config.name,
            "kind": str(config.kind),
            "market": config.market,
            "period": period.as_dict(),
            "initial_cash": config.backtest.initial_cash,
            "topk": config.portfolio.topk,
            "n_drop": config.portfolio.n_drop,
            "risk_degree": RISK_DEGREE,
            "deal_price": "close",
            "trade_unit": 1,
            "benchmark": config.backtest.benchmark,
            "costs": _costs_dict(run.costs),
            "cost_model": "slippage is charged as a cost rate on traded value, not as a worse fill price",
            "label": LABEL_EXPRESSION,
            "scores": market.score_check.as_dict(),
            "provider_uri": str(market.provider_uri),
            "qlib_version": qlib.__version__,
        },
        "signal": signal,
        "benchmark": benchmark,
        "scenarios": {label: {"costs": _costs_dict(r.costs), **r.metrics} for label, r in runs.items()},
        "scenario_table": [_scenario_row(r) for r in runs.values()],
    }


def _equity_frame(runs: Mapping[str, ScenarioRun], main: str) -> pd.DataFrame:
    daily = runs[main].daily
    frame = pd.DataFrame(
        {
            "strategy": m.equity_curve(daily["return"]),
            "strategy_before_costs": m.equity_curve(daily["return_before_costs"]),
            "benchmark": m.equity_curve(daily["benchmark"]),
            "drawdown": m.drawdown(daily["return"]),
        },
        index=daily.index,
    )
    for label, run in runs.items():
        if label != main:
            frame[f"strategy_{label}"] = m.equity_curve(run.daily["return"]).reindex(daily.index)
    frame.index.name = "date"
    return frame


def _csv_bytes(frame: pd.DataFrame, index: bool = False) -> bytes:
    out = frame.copy()
    if index:
        out.index = pd.DatetimeIndex(out.index).strftime("%Y-%m-%d")
    text: str = out.to_csv(index=index, lineterminator="\n")
    return text.encode("utf-8")


def publish_files(out_dir: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` into ``out_dir`` so that a crash never leaves half of them.

    Everything is written and fsynced in a staging folder next to ``out_dir``. A missing or empty
    ``out_dir`` is then replaced by the staging folder in one rename. An existing run folder gets
    each file renamed over the old one (each file whole; ``metrics.json`` last, so a complete
    ``metrics.json`` means the other files are from the same run).
    """
    out_dir = out_dir.expanduser()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        for name, data in files.items():
            write_synced(staging / name, data)
        fsync_dir(staging)
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        if not out_dir.exists():
            staging.rename(out_dir)
            fsync_dir(out_dir.parent)
            return
        if not out_dir.is_dir():
            raise BacktestError(f"{out_dir} exists and is not a folder; choose another output folder")
        ordered = sorted(files, key=lambda name: name == METRICS_FILE)
        for name in ordered:
            (staging / name).replace(out_dir / name)
        fsync_dir(out_dir)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write(
    market: _Market, runs: Mapping[str, ScenarioRun], main: str, out_dir: Path, progress: Progress
) -> BacktestResult:
    from trader.research.report import render_report

    progress("computing the IC and writing the report")
    window = market.signal[market.signal.index.get_level_values("datetime") >= market.period.start]
    labels = market.labels
    ic = pd.DataFrame(
        {"ic": m.daily_ic(window, labels, "pearson"), "rank_ic": m.daily_ic(window, labels, "spearman")}
    )
    ic.index.name = "date"
    document = _json_ready(_document(market, runs, main, m.signal_metrics(window, labels)))
    equity = _equity_frame(runs, main)
    run = runs[main]
    files = {
        POSITIONS_FILE: _csv_bytes(run.positions),
        TRADES_FILE: _csv_bytes(run.trades),
        EQUITY_FILE: _csv_bytes(equity, index=True),
        REPORT_FILE: render_report(document, equity, ic).encode("utf-8"),
        METRICS_FILE: (json.dumps(document, indent=2, allow_nan=False) + "\n").encode("utf-8"),
    }
    publish_files(out_dir, files)
    return BacktestResult(
        label=main,
        metrics=document,
        paths=BacktestPaths(out_dir.expanduser()),
        daily=run.daily,
        positions=run.positions,
        trades=run.trades,
        ic=ic,
        scenarios=dict(runs),
    )


def _no_progress(_: str) -> None:
    return None


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def run_backtest(
    scores: pl.DataFrame | pd.DataFrame,
    config: StrategyConfig,
    *,
    provider_uri: Path,
    out_dir: Path,
    costs: Costs | None = None,
    label: str = "base",
    on_progress: Progress | None = None,
    mlflow_uri: str | None = None,
) -> BacktestResult:
    """Backtest ``scores`` over ``config.segments.test`` with one cost setting; write ``out_dir``.

    ``scores``: a table ``date, symbol, score`` (the score known at the close of ``date``; other
    columns are ignored), Polars or pandas. ``costs`` default to ``config.costs``. ``provider_uri``
    is the Qlib export; ``mlflow_uri`` is passed to :func:`~trader.research.qlib_runtime.init_qlib`.
    Raises :class:`BacktestInputError` for unusable scores or settings.
    """
    progress = on_progress or _no_progress
    with _quiet():
        market = _open_market(scores, config, Path(provider_uri), mlflow_uri, progress)
        run = _simulate(market, costs if costs is not None else config.costs, label, progress)
        return _write(market, {label: run}, label, Path(out_dir), progress)


def run_scenarios(
    scores: pl.DataFrame | pd.DataFrame,
    config: StrategyConfig,
    *,
    provider_uri: Path,
    out_dir: Path,
    on_progress: Progress | None = None,
    mlflow_uri: str | None = None,
) -> BacktestResult:
    """Backtest ``scores`` under every scenario of :data:`SCENARIO_ORDER` and write one report.

    The scenarios share the data loaded from Qlib and differ only in costs: ``no_cost``, ``base``
    (``config.costs``), ``slippage_x3`` and ``fees_x2``. ``out_dir`` gets the base run's positions,
    trades and report; ``metrics.json`` and ``equity.csv`` hold every scenario. The result's
    ``scenarios`` has each run.
    """
    progress = on_progress or _no_progress
    with _quiet():
        market = _open_market(scores, config, Path(provider_uri), mlflow_uri, progress)
        runs = {
            label: _simulate(market, costs, label, progress)
            for label, costs in scenario_costs(config.costs).items()
        }
        return _write(market, runs, "base", Path(out_dir), progress)


def scores_from_series(signal: pd.Series) -> pd.DataFrame:
    """A Qlib Series indexed by ``datetime`` and ``instrument`` (either order) as a scores table."""
    frame = signal.rename("score").reset_index()
    frame = frame.rename(columns={"datetime": "date", "instrument": "symbol"})[list(SCORE_COLUMNS)]
    frame["date"] = pd.to_datetime(frame["date"]).dt.date
    return frame
