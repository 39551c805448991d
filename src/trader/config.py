"""Configuration: one pydantic-settings class read from the environment and ``.env``.

Nothing here runs at import time; call :func:`load_settings` (the CLI does it once per command). Every
variable is documented in ``.env.example`` and the README's configuration table.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trader.errors import ConfigError

#: Where the embedded defaults keep their state (SQLite files, logs). Relative to the working directory.
VAR_DIR = Path("var")
#: The built-in Alpaca-compatible paper broker (``trader serve paper-broker``).
LOCAL_PAPER_BROKER_URL = "http://127.0.0.1:8765"
#: Hosts a built-in paper broker may listen on (any port).
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})
#: Key pair the built-in paper broker accepts when none is configured. Not secret: it opens only the
#: local simulator, never a real account.
LOCAL_PAPER_KEY_ID = "PKLOCALPAPER00000000"
LOCAL_PAPER_SECRET = "local-paper-secret-0000000000000000000000"  # noqa: S105 - documented public default

ALPACA_LIVE_HOST = "api.alpaca.markets"
ALPACA_PAPER_HOST = "paper-api.alpaca.markets"
ALPACA_DATA_URL = "https://data.alpaca.markets"

_STRATEGY_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REDIS_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{0,64}$")
_SUPPORTED_DB_DRIVERS = {"sqlite": "sqlite", "sqlite+pysqlite": "sqlite", "postgresql+psycopg": "postgresql"}

NonNegativeMoney = Annotated[Decimal, Field(ge=0, max_digits=20, decimal_places=6)]


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


def _default_database_url() -> str:
    return f"sqlite:///{VAR_DIR / 'trader.db'}"


def _default_paper_broker_database_url() -> str:
    return f"sqlite:///{VAR_DIR / 'paperbroker.db'}"


def _default_mlflow_uri() -> str:
    # Absolute: Qlib and MLflow resolve relative sqlite paths against different directories.
    return f"sqlite:///{(VAR_DIR / 'mlflow.db').resolve()}"


class Settings(BaseSettings):
    """Every setting of the platform. Field ``foo_bar`` is read from ``FOO_BAR``."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # --- Broker (Alpaca or the built-in paper broker) ---
    alpaca_api_key_id: SecretStr = SecretStr(LOCAL_PAPER_KEY_ID)
    alpaca_api_secret_key: SecretStr = SecretStr(LOCAL_PAPER_SECRET)
    alpaca_base_url: AnyHttpUrl = AnyHttpUrl(LOCAL_PAPER_BROKER_URL)
    #: Market-data base URL. Unset: Alpaca's data host for Alpaca's trading hosts, else the base URL
    #: (the built-in paper broker serves trading and market data on one port).
    alpaca_data_url: AnyHttpUrl | None = None
    #: Sending orders to ``api.alpaca.markets`` (real money) is refused unless this is true.
    allow_live_trading: bool = False
    broker_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    broker_max_retries: int = Field(default=3, ge=0, le=20)
    #: The built-in paper broker's own state (orders, fills, positions, cash).
    paper_broker_database_url: str = Field(default_factory=_default_paper_broker_database_url)

    # --- Storage ---
    database_url: str = Field(default_factory=_default_database_url)
    redis_url: str | None = None
    #: Put in front of every key this deployment writes to Redis, so that two deployments (say paper
    #: and live) sharing one Redis never share a circuit breaker, an online store or a stream.
    redis_key_prefix: str = ""
    data_dir: Path = Path("data")
    artifacts_dir: Path = Path("artifacts")
    mlflow_tracking_uri: str = Field(default_factory=_default_mlflow_uri)

    # --- Trading ---
    dry_run: bool = True
    strategy_id: str = "alpha_baseline"
    trader_api_key: SecretStr | None = None

    # --- Global risk limits (read by the pre-trade risk check; 0 disables a limit) ---
    max_order_notional: NonNegativeMoney = Decimal("10000")
    max_position_notional: NonNegativeMoney = Decimal("25000")
    max_gross_exposure: NonNegativeMoney = Decimal("100000")
    daily_loss_limit: NonNegativeMoney = Decimal("2000")

    log_level: LogLevel = LogLevel.INFO

    @field_validator("strategy_id")
    @classmethod
    def _check_strategy_id(cls, value: str) -> str:
        if not _STRATEGY_ID.fullmatch(value):
            raise ValueError("must be lower-case letters, digits and '_', starting with a letter, ≤64 chars")
        return value

    @field_validator("redis_key_prefix")
    @classmethod
    def _check_redis_key_prefix(cls, value: str) -> str:
        if not _REDIS_KEY_PREFIX.fullmatch(value):
            raise ValueError(
                "must be at most 64 letters, digits and '_', '.', ':', '-' (e.g. 'live:'), or empty"
            )
        return value

    @field_validator("database_url", "paper_broker_database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("redis_url", mode="before")
    @classmethod
    def _check_redis_url(cls, value: Any) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        scheme = urlsplit(str(value)).scheme
        if scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                "must start with redis://, rediss:// or unix:// (or be empty to go without Redis)"
            )
        return str(value)

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _check_mlflow_uri(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in {"sqlite", "postgresql", "postgresql+psycopg", "http", "https", "databricks"}:
            raise ValueError(
                "must be a database URI (sqlite:////abs/path.db, postgresql://...) or an MLflow server "
                "URL; MLflow no longer accepts a plain directory"
            )
        return value

    @field_validator("alpaca_data_url", "trader_api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_live_trading(self) -> Settings:
        if self.is_live and not self.allow_live_trading:
            raise ValueError(
                "ALPACA_BASE_URL points at Alpaca's live (real money) host; set ALLOW_LIVE_TRADING=true "
                "to confirm, or use https://paper-api.alpaca.markets for paper trading"
            )
        return self

    def __repr_args__(self) -> Any:
        # URLs may carry passwords: show them masked, like the SecretStr fields.
        for name, value in super().__repr_args__():
            yield name, mask_url_password(value) if name in _URL_FIELDS and isinstance(value, str) else value

    @property
    def is_live(self) -> bool:
        """True when orders would go to Alpaca's real-money trading host."""
        return self.alpaca_base_url.host == ALPACA_LIVE_HOST

    @property
    def uses_local_paper_broker(self) -> bool:
        """True for the built-in paper broker: plain HTTP on this machine, on any port (tests and a
        second broker use another port than the default 8765)."""
        url = self.alpaca_base_url
        return url.scheme == "http" and url.host in LOCAL_HOSTS

    @property
    def effective_data_url(self) -> str:
        if self.alpaca_data_url is not None:
            return str(self.alpaca_data_url).rstrip("/")
        if self.alpaca_base_url.host in {ALPACA_LIVE_HOST, ALPACA_PAPER_HOST}:
            return ALPACA_DATA_URL
        return str(self.alpaca_base_url).rstrip("/")

    def describe(self) -> dict[str, str]:
        """The effective configuration as text, safe to print: secrets and URL passwords are masked."""
        return {
            "ALPACA_BASE_URL": str(self.alpaca_base_url).rstrip("/"),
            "ALPACA_DATA_URL": self.effective_data_url,
            "ALPACA_API_KEY_ID": mask_secret(self.alpaca_api_key_id),
            "ALPACA_API_SECRET_KEY": mask_secret(self.alpaca_api_secret_key),
            "ALLOW_LIVE_TRADING": str(self.allow_live_trading).lower(),
            "BROKER_TIMEOUT_SECONDS": str(self.broker_timeout_seconds),
            "BROKER_MAX_RETRIES": str(self.broker_max_retries),
            "PAPER_BROKER_DATABASE_URL": mask_url_password(self.paper_broker_database_url),
            "DATABASE_URL": mask_url_password(self.database_url),
            "REDIS_URL": mask_url_password(self.redis_url) if self.redis_url else "(not set: no Redis)",
            "REDIS_KEY_PREFIX": self.redis_key_prefix or "(none)",
            "DATA_DIR": str(self.data_dir),
            "ARTIFACTS_DIR": str(self.artifacts_dir),
            "MLFLOW_TRACKING_URI": mask_url_password(self.mlflow_tracking_uri),
            "DRY_RUN": str(self.dry_run).lower(),
            "STRATEGY_ID": self.strategy_id,
            "TRADER_API_KEY": mask_secret(self.trader_api_key),
            "MAX_ORDER_NOTIONAL": str(self.max_order_notional),
            "MAX_POSITION_NOTIONAL": str(self.max_position_notional),
            "MAX_GROSS_EXPOSURE": str(self.max_gross_exposure),
            "DAILY_LOSS_LIMIT": str(self.daily_loss_limit),
            "LOG_LEVEL": self.log_level.value,
        }


def normalize_database_url(url: str) -> str:
    """Validate a database URL and pick the driver we ship (psycopg 3) for bare ``postgresql://``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("is not a database URL (e.g. sqlite:///var/trader.db or postgresql://...)") from None
    if parsed.drivername in {"postgresql", "postgres", "postgresql+psycopg2"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in _SUPPORTED_DB_DRIVERS:
        raise ValueError(
            f"database '{parsed.drivername}' is not supported; use sqlite:///PATH or postgresql://USER@HOST/DB"
        )
    if parsed.get_backend_name() == "postgresql" and not parsed.database:
        raise ValueError("names no database; add it after the host, e.g. postgresql://user@host:5432/trader")
    return parsed.render_as_string(hide_password=False)


def mask_secret(secret: SecretStr | None) -> str:
    """Show that a secret is set without showing any of it."""
    if secret is None or not secret.get_secret_value():
        return "(not set)"
    return "********"


def mask_url_password(url: str) -> str:
    """Replace the password in a URL with ``***`` so it can be logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_URL_FIELDS = {"database_url", "paper_broker_database_url", "redis_url", "mlflow_tracking_uri"}
_SECRET_FIELDS = {"alpaca_api_key_id", "alpaca_api_secret_key", "trader_api_key"}


def format_validation_error(error: ValidationError) -> str:
    """One line per problem, naming the environment variable and never echoing a secret's value."""
    lines = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        variable = field.upper() if field else "configuration"
        message = str(item["msg"]).removeprefix("Value error, ")
        shown = ""
        value = item.get("input")
        if field and field not in _SECRET_FIELDS and value is not None and not isinstance(value, dict):
            shown = f" (got {mask_url_password(value)!r})" if isinstance(value, str) else f" (got {value!r})"
        lines.append(f"{variable}: {message}{shown}")
    return "; ".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration, or raise :class:`ConfigError` naming each bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(
            f"invalid configuration: {format_validation_error(error)}. "
            "Fix it in the environment or .env (see .env.example)."
        ) from None


def configure_logging(settings: Settings) -> None:
    """Log lines of the long-running commands: time, level, logger and message, at ``LOG_LEVEL``."""
    logging.basicConfig(
        level=settings.log_level.value, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
