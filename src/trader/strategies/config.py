"""Strategy configuration: one Pydantic model, read from YAML, shared by research, backtest and the
live signal path.

A strategy's YAML file says what it trades, how it is trained (date segments, model parameters), how
its scores become a portfolio (top-k with dropout), what trading costs the backtest charges and
which metrics a model must reach before it may be promoted to production. Every field is validated;
a bad file is refused with a message naming the field (:class:`StrategyConfigError`).

The built-in strategies ship their YAML next to their code (``strategies/<name>/config.yaml``);
:func:`load_strategy_config` reads one of those by name or any file by path.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trader.errors import TraderError

#: The strategies that ship with the platform, by name (each has ``strategies/<name>/config.yaml``).
BUILTIN_STRATEGIES = ("alpha_baseline", "momentum")

#: The label every strategy is trained and judged on (Alpha158's): the return from the next
#: session's close to the one after. A score of day t is traded at t+1's close, so this is the
#: return that trade earns.
LABEL_EXPRESSION = "Ref($close, -2)/Ref($close, -1) - 1"
#: How many sessions ahead :data:`LABEL_EXPRESSION` reads (a test checks it against the expression).
LABEL_HORIZON = 2


class StrategyConfigError(TraderError):
    """A strategy configuration file is missing, not YAML, or has an invalid field."""


class StrategyKind(StrEnum):
    #: Qlib's Alpha158 features and a LightGBM regressor (``strategies/alpha_baseline``).
    ALPHA158_LGB = "alpha158_lgb"
    #: Model-free: the score is the past return over a lookback window (``strategies/momentum``).
    MOMENTUM = "momentum"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DateRange(_Strict):
    """An inclusive range of calendar dates."""

    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) is after end ({self.end})")
        return self

    def as_tuple(self) -> tuple[str, str]:
        """``("YYYY-MM-DD", "YYYY-MM-DD")``, the form Qlib's segments take."""
        return (self.start.isoformat(), self.end.isoformat())


class Segments(_Strict):
    """Train, validation (early stopping) and test (backtest) ranges, in this order in time.

    ``label_horizon`` is how many sessions lie between one segment's end and the next one's start
    at least. Training refuses one shorter than the label's look-ahead (:data:`LABEL_HORIZON`: a
    label on the last training day reads that many sessions ahead, into the next segment otherwise,
    see :meth:`StrategyConfig.check_trainable`); a longer one leaves a wider gap. The leakage check
    enforces the look-ahead on the segments whatever this says.
    """

    train: DateRange
    valid: DateRange
    test: DateRange
    label_horizon: int = Field(default=LABEL_HORIZON, ge=1, le=60)

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        if not self.train.end < self.valid.start:
            raise ValueError("valid must start after train ends")
        if not self.valid.end < self.test.start:
            raise ValueError("test must start after valid ends")
        return self


class LightGBMParams(_Strict):
    """LightGBM settings (defaults: Qlib's published Alpha158 benchmark, threads set for small machines)."""

    #: Qlib's LGBModel objective. Only ``mse`` fits the label, a continuous return z-scored per day
    #: (``binary`` would train a classifier on it and score every stock alike): training refuses
    #: another (see :meth:`StrategyConfig.check_trainable`).
    loss: str = "mse"
    learning_rate: float = Field(default=0.2, gt=0, le=1)
    num_leaves: int = Field(default=210, ge=2)
    max_depth: int = Field(default=8, ge=-1)
    colsample_bytree: float = Field(default=0.8879, gt=0, le=1)
    subsample: float = Field(default=0.8789, gt=0, le=1)
    lambda_l1: float = Field(default=205.6999, ge=0)
    lambda_l2: float = Field(default=580.9768, ge=0)
    num_threads: int = Field(default=2, ge=1, le=256)
    num_boost_round: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    seed: int = Field(default=42, ge=0)


class MomentumParams(_Strict):
    """Score = close(t - skip) / close(t - skip - lookback) - 1 (skip the most recent days' reversal)."""

    lookback: int = Field(default=20, ge=1, le=504)
    skip: int = Field(default=0, ge=0, le=60)


class PortfolioRule(_Strict):
    """How scores become holdings: the top ``topk`` by score, replacing at most ``n_drop`` a day."""

    topk: int = Field(default=10, ge=1)
    n_drop: int = Field(default=2, ge=0)
    long_short: bool = False

    @model_validator(mode="after")
    def _drop_within_topk(self) -> Self:
        if self.n_drop > self.topk:
            raise ValueError(f"n_drop ({self.n_drop}) cannot exceed topk ({self.topk})")
        return self


class Costs(_Strict):
    """US equity trading costs charged by the backtest (bps = 1/10,000 of the traded value).

    ``commission_bps`` on both sides, ``sell_fee_bps`` on sells only (SEC fee + FINRA TAF),
    ``min_commission`` in dollars per order, ``slippage_bps`` against the deal price on both sides.
    """

    commission_bps: float = Field(default=0.5, ge=0, le=1000)
    sell_fee_bps: float = Field(default=0.3, ge=0, le=1000)
    min_commission: float = Field(default=0.0, ge=0)
    slippage_bps: float = Field(default=5.0, ge=0, le=1000)

    def scaled(self, *, slippage: float = 1.0, fees: float = 1.0) -> Costs:
        """The same costs with slippage and fees multiplied (the backtest's scenario runs)."""
        return Costs(
            commission_bps=self.commission_bps * fees,
            sell_fee_bps=self.sell_fee_bps * fees,
            min_commission=self.min_commission * fees,
            slippage_bps=self.slippage_bps * slippage,
        )


class PromotionThresholds(_Strict):
    """What a model's test-segment backtest must reach before it may go to production."""

    min_sharpe: float = 0.0
    max_drawdown: float = Field(default=0.35, gt=0, le=1, description="largest allowed |max drawdown|")
    min_ic: float = 0.0
    max_turnover: float | None = Field(default=None, gt=0, description="mean daily turnover, optional")


class BacktestSettings(_Strict):
    """Account and benchmark of the backtest."""

    initial_cash: float = Field(default=1_000_000.0, gt=0)
    #: ``equal_weight``: the equal-weighted daily return of the point-in-time universe.
    benchmark: str = "equal_weight"

    @field_validator("benchmark")
    @classmethod
    def _known_benchmark(cls, value: str) -> str:
        if value != "equal_weight":
            raise ValueError("only 'equal_weight' is supported")
        return value


class StrategyConfig(_Strict):
    """One strategy: its name (the model name in the registry), kind and every research setting."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    kind: StrategyKind
    description: str = ""
    #: Qlib market (instruments file) the strategy trades: ``all`` is every listed symbol, point in time.
    market: str = Field(default="all", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    segments: Segments
    lightgbm: LightGBMParams = LightGBMParams()
    momentum: MomentumParams = MomentumParams()
    portfolio: PortfolioRule = PortfolioRule()
    costs: Costs = Costs()
    backtest: BacktestSettings = BacktestSettings()
    promotion: PromotionThresholds = PromotionThresholds()

    def check_trainable(self) -> None:
        """Refuse settings a new model must not be trained with (:class:`StrategyConfigError` naming
        each field). These rules came after models were saved, so they are checked when a model is
        trained, not when a saved artifact's configuration is loaded: a model already in production
        keeps scoring, and the release gate's leakage check judges its segments on the label itself.
        """
        problems = []
        if self.segments.label_horizon < LABEL_HORIZON:
            problems.append(
                f"segments.label_horizon: {self.segments.label_horizon} is shorter than the label's "
                f"look-ahead: {LABEL_EXPRESSION} reads {LABEL_HORIZON} sessions ahead, so use "
                f"{LABEL_HORIZON} or more"
            )
        if self.kind is StrategyKind.ALPHA158_LGB and self.lightgbm.loss != "mse":
            problems.append(
                f"lightgbm.loss: {self.lightgbm.loss!r} does not fit the label, a continuous "
                "return; use 'mse'"
            )
        if problems:
            raise StrategyConfigError(f"strategy {self.name}: " + "; ".join(problems))

    def with_segments(self, segments: Segments) -> StrategyConfig:
        """A copy with other date segments (walk-forward windows, tests on a short market)."""
        return self.model_copy(update={"segments": segments})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _format_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        parts.append(f"{where}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line for a YAML error: what is wrong and where (PyYAML's own text spans several lines
    and quotes the file)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(error).split())


def parse_strategy_config(data: Any, *, origin: str = "strategy config") -> StrategyConfig:
    """Validate already-parsed YAML; :class:`StrategyConfigError` names each bad field."""
    if not isinstance(data, dict):
        raise StrategyConfigError(f"{origin}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return StrategyConfig.model_validate(data)
    except ValidationError as error:
        raise StrategyConfigError(f"{origin}: {_format_errors(error)}") from None


def builtin_config_path(name: str) -> Path:
    """Where a built-in strategy's YAML lives (inside the installed package)."""
    if name not in BUILTIN_STRATEGIES:
        raise StrategyConfigError(
            f"unknown strategy {name!r}; built-in strategies: {', '.join(BUILTIN_STRATEGIES)} "
            "(or pass the path of a YAML file)"
        )
    return Path(str(resources.files("trader.strategies").joinpath(name, "config.yaml")))


def load_strategy_config(name_or_path: str | Path) -> StrategyConfig:
    """Read a strategy's YAML: a built-in strategy by name, or a file by path."""
    text = str(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) or "/" in text else builtin_config_path(text)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise StrategyConfigError(f"cannot read strategy config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise StrategyConfigError(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
    return parse_strategy_config(data, origin=str(path))
