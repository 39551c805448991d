"""Configuration: one pydantic-settings class read from the environment and ``.env``.

Nothing here runs at import time; call :func:`load_settings` (the CLI does it once per command). Every
variable is documented in ``.env.example`` and the README's configuration table.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import re
from collections.abc import Iterable
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

from dotenv.parser import parse_stream
from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from trader.domain.ids import STRATEGY_ID_RULE, is_strategy_id
from trader.errors import ConfigError

#: Where the embedded defaults keep their state (SQLite files, logs). Relative to the working directory.
VAR_DIR = Path("var")
#: The built-in Alpaca-compatible paper broker (``trader serve paper-broker``).
LOCAL_PAPER_BROKER_URL = "http://127.0.0.1:8765"
#: Hosts a built-in paper broker may listen on (any port).
#: Key pair the built-in paper broker accepts when none is configured. Not secret: it opens only the
#: local simulator, never a real account.
LOCAL_PAPER_KEY_ID = "PKLOCALPAPER00000000"
LOCAL_PAPER_SECRET = "local-paper-secret-0000000000000000000000"  # noqa: S105 - documented public default

ALPACA_LIVE_HOST = "api.alpaca.markets"
ALPACA_PAPER_HOST = "paper-api.alpaca.markets"
ALPACA_DATA_URL = "https://data.alpaca.markets"
#: Hosts known to trade paper money only. Every other host that is not a local address counts as live
#: (real money) and needs ALLOW_LIVE_TRADING=true: see :func:`is_paper_host`.
ALPACA_PAPER_HOSTS = frozenset({ALPACA_PAPER_HOST})

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
    #: Sending orders to ``api.alpaca.markets`` (real money), or to any host that is not a known paper
    #: broker (see :func:`is_paper_host`), is refused unless this is true.
    allow_live_trading: bool = False
    #: More hosts that run a paper broker (comma-separated names, e.g. a paper broker on another
    #: machine or in a cluster): orders to them need no ALLOW_LIVE_TRADING. Alpaca's live host is refused.
    paper_broker_hosts: str = ""
    broker_timeout_seconds: float = Field(default=10.0, gt=0, le=300, allow_inf_nan=False)
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
    #: The quality gate's outlier rule: an adjusted close-to-close return beyond this fraction (0.30 =
    #: 30 %) with no corporate action between the two bars is quarantined. Every ingest re-checks the
    #: affected symbols' whole history with it, so a change applies to all bars from the next ingest.
    #: A fraction, at most 10 (1,000 %): "30" for 30 % would switch the rule off without a word.
    data_outlier_threshold: float = Field(default=0.30, gt=0, le=10, allow_inf_nan=False)
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
        if not is_strategy_id(value):
            raise ValueError(f"must be {STRATEGY_ID_RULE}")
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
        text = str(value)
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ValueError(
                "is not a valid URL (a bad port, or an unquoted special character in the password?); "
                "e.g. redis://:PASSWORD@localhost:6379/0"
            ) from None
        if parts.scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(
                "must start with redis://, rediss:// or unix:// (or be empty to go without Redis)"
            )
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("names no socket path; e.g. unix:///run/redis/redis.sock?db=0")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("names no host; e.g. redis://localhost:6379/0")
        return text

    @field_validator("paper_broker_hosts")
    @classmethod
    def _check_paper_hosts(cls, value: str) -> str:
        for host in filter(None, (normalize_host(h) for h in value.split(","))):
            if host == ALPACA_LIVE_HOST:
                raise ValueError(
                    f"{ALPACA_LIVE_HOST} is Alpaca's live (real money) host, never a paper broker"
                )
            if not re.fullmatch(r"[a-z0-9_.:-]+", host):
                raise ValueError(
                    f"'{host}' is not a host name; give names such as paper.internal, comma-separated"
                )
        return value

    @field_validator("data_dir", "artifacts_dir", mode="before")
    @classmethod
    def _check_folder(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str) and not value.strip():
            default = "./data" if info.field_name == "data_dir" else "./artifacts"
            raise ValueError(
                f"must not be empty; name a folder (default {default}) or leave the variable unset"
            )
        return value

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
        if not self.is_live or self.allow_live_trading:
            return self
        if self.is_alpaca_live_host:
            raise ValueError(
                "ALPACA_BASE_URL points at Alpaca's live (real money) host api.alpaca.markets; set "
                "ALLOW_LIVE_TRADING=true to confirm, or use https://paper-api.alpaca.markets for paper "
                "trading"
            )
        raise ValueError(
            f"ALPACA_BASE_URL host '{self.broker_host}' is not a known paper broker "
            "(paper-api.alpaca.markets, or a local address: localhost, 127.0.0.1, ::1), so orders sent "
            "there may trade real money; if it runs a paper broker, add it to PAPER_BROKER_HOSTS; to "
            "trade real money there, set ALLOW_LIVE_TRADING=true"
        )

    def __repr_args__(self) -> Any:
        # URLs may carry passwords: show them masked, like the SecretStr fields.
        for name, value in super().__repr_args__():
            if name in _URL_FIELDS and value is not None:
                yield name, mask_url_password(str(value))
            else:
                yield name, value

    @property
    def broker_host(self) -> str:
        """The host of ``ALPACA_BASE_URL``, normalised (see :func:`normalize_host`)."""
        return normalize_host(self.alpaca_base_url.host)

    @property
    def is_alpaca_live_host(self) -> bool:
        """True when ``ALPACA_BASE_URL`` is Alpaca's real-money host (in any spelling)."""
        return self.broker_host == ALPACA_LIVE_HOST

    @property
    def is_live(self) -> bool:
        """True unless orders go to a known paper broker: fails closed, so Alpaca's real-money host and
        every host we do not know (which may be real money, or a proxy to it) count as live."""
        host = self.alpaca_base_url.host
        return not (is_paper_host(host) or normalize_host(host) in self.declared_paper_hosts)

    @property
    def declared_paper_hosts(self) -> frozenset[str]:
        """``PAPER_BROKER_HOSTS`` as normalised host names."""
        return frozenset(filter(None, (normalize_host(h) for h in self.paper_broker_hosts.split(","))))

    @property
    def uses_local_paper_broker(self) -> bool:
        """True for the built-in paper broker: plain HTTP on this machine, on any port (tests and a
        second broker use another port than the default 8765)."""
        url = self.alpaca_base_url
        return url.scheme == "http" and is_local_host(url.host)

    @property
    def effective_data_url(self) -> str:
        if self.alpaca_data_url is not None:
            return str(self.alpaca_data_url).rstrip("/")
        if self.broker_host in {ALPACA_LIVE_HOST, *ALPACA_PAPER_HOSTS}:
            return ALPACA_DATA_URL
        return str(self.alpaca_base_url).rstrip("/")

    def describe(self) -> dict[str, str]:
        """The effective configuration as text, safe to print: secrets and URL passwords are masked."""
        return {
            "ALPACA_BASE_URL": mask_url_password(str(self.alpaca_base_url).rstrip("/")),
            "ALPACA_DATA_URL": mask_url_password(self.effective_data_url),
            "ALPACA_API_KEY_ID": mask_secret(self.alpaca_api_key_id),
            "ALPACA_API_SECRET_KEY": mask_secret(self.alpaca_api_secret_key),
            "ALLOW_LIVE_TRADING": str(self.allow_live_trading).lower(),
            "PAPER_BROKER_HOSTS": ",".join(sorted(self.declared_paper_hosts)),
            "BROKER_TIMEOUT_SECONDS": str(self.broker_timeout_seconds),
            "BROKER_MAX_RETRIES": str(self.broker_max_retries),
            "PAPER_BROKER_DATABASE_URL": mask_url_password(self.paper_broker_database_url),
            "DATABASE_URL": mask_url_password(self.database_url),
            "REDIS_URL": mask_url_password(self.redis_url) if self.redis_url else "(not set: no Redis)",
            "REDIS_KEY_PREFIX": self.redis_key_prefix or "(none)",
            "DATA_DIR": str(self.data_dir),
            "DATA_OUTLIER_THRESHOLD": str(self.data_outlier_threshold),
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

    def secret_values(self) -> list[str]:
        """Every configured secret value, for :class:`SecretRedactingFilter`: the Alpaca key id and
        secret, ``TRADER_API_KEY`` and the passwords inside the URLs. The key id is not secret to
        Alpaca, but it is shown masked everywhere else, so it is redacted from logs too."""
        values = [
            self.alpaca_api_key_id.get_secret_value(),
            self.alpaca_api_secret_key.get_secret_value(),
        ]
        if self.trader_api_key is not None:
            values.append(self.trader_api_key.get_secret_value())
        for name in sorted(_URL_FIELDS):
            url = getattr(self, name)
            if url is not None:
                values.extend(url_passwords(str(url)))
        return [value for value in values if value]


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


def normalize_host(host: str | None) -> str:
    """A URL host as it is connected to: lower case, without the trailing dots that DNS (and urllib3)
    ignore, IPv6 without brackets. ``api.alpaca.markets.`` is ``api.alpaca.markets``."""
    text = (host or "").strip().lower().rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text


def is_local_host(host: str | None) -> bool:
    """``localhost``, 127.0.0.0/8 or ``::1`` (also IPv4-mapped): this machine."""
    name = normalize_host(host)
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def is_paper_host(host: str | None) -> bool:
    """True only for hosts known to trade paper money: Alpaca's paper host, a local address (how the
    built-in paper broker is reached) and single-label names such as ``paper-broker`` (Docker Compose
    service names; no public host, Alpaca's included, is reachable by a single label). Everything else,
    an IP address on the network included, may be real money."""
    name = normalize_host(host)
    if not name:
        return False
    if name in ALPACA_PAPER_HOSTS or is_local_host(name):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return "." not in name and re.fullmatch(r"[a-z0-9_-]+", name) is not None
    return False


#: Names whose value is a secret: any name containing one of these words (case-insensitive), for URL
#: query parameters here and command-line options in the crash log.
SECRET_NAME = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)
_QUERY_PARAMETER = re.compile(r"([?&;])([^=&;#?]*)=([^&;#]*)")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: A URL inside free text: from its scheme to the next blank or quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]*")
MASK = "***"


def _mask_query(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        sep, name, value = match.groups()
        if value and SECRET_NAME.search(unquote(name)):
            return f"{sep}{name}={MASK}"
        return match.group(0)

    return _QUERY_PARAMETER.sub(replace, text)


def _split_credentials(url: str) -> tuple[str, str | None, str] | None:
    """``(scheme, userinfo, rest)`` of ``scheme://userinfo@rest`` (userinfo None when there is none), or
    None when the URL cannot be split safely: an ``@`` after a ``/``, ``?`` or ``#`` with a ``:`` before
    it may be a password containing one of those characters."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    scheme, after = match.group(1), url[match.end() :]
    at = after.rfind("@")
    if at < 0:
        return scheme, None, after
    separator = min((i for i in (after.find(c) for c in "/?#") if i >= 0), default=len(after))
    if at < separator:
        return scheme, after[:at], after[at + 1 :]
    if separator == 0 or ":" not in after[:at]:
        # No authority (sqlite:///path@x) or no password possible: the '@' is in the path or query.
        return scheme, None, after
    return None


def mask_url_password(url: str) -> str:
    """The URL with its password and password-like query parameters (``password``, ``pass``, ``pwd``,
    ``secret``, ``token``, ``key`` in any case) replaced by ``***``, so it can be printed or logged.

    A URL that cannot be split safely (a password with ``/``, ``#``, ``?`` or ``@`` in it) is shown as
    its scheme only: ``mysql://***``; ``user:password@host`` without ``scheme://`` as ``***``.
    """
    if "://" not in url:
        at = url.rfind("@")
        if at >= 0 and ":" in url[:at]:
            return MASK  # user:password@host without a scheme (or a mistyped one): nothing to show
        return _mask_query(url)
    split = _split_credentials(url)
    if split is None:
        match = _SCHEME.match(url)
        return f"{match.group(1)}://{MASK}" if match else MASK
    scheme, userinfo, rest = split
    rest = _mask_query(rest)
    if userinfo is None:
        return f"{scheme}://{rest}"
    if ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:{MASK}"
    return f"{scheme}://{userinfo}@{rest}"


def mask_urls_in_text(text: str) -> str:
    """``text`` with :func:`mask_url_password` applied to every URL in it (error messages, argv)."""
    return _URL_IN_TEXT.sub(lambda match: mask_url_password(match.group(0)), text)


def url_passwords(url: str) -> list[str]:
    """The password and password-like query values of a URL, raw and percent-decoded."""
    found: list[str] = []
    split = _split_credentials(url)
    if split is not None and split[1] is not None and ":" in split[1]:
        found.append(split[1].split(":", 1)[1])
    for _, name, value in _QUERY_PARAMETER.findall(url):
        if value and SECRET_NAME.search(unquote(name)):
            found.append(value)
    return [text for value in found for text in dict.fromkeys((value, unquote(value))) if text]


_URL_FIELDS = {
    "alpaca_base_url",
    "alpaca_data_url",
    "database_url",
    "paper_broker_database_url",
    "redis_url",
    "mlflow_tracking_uri",
}
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


def check_dotenv_file(path: Path, encoding: str = "utf-8") -> None:
    """Raise :class:`ConfigError` when ``path`` exists but is not valid text or has a line python-dotenv
    cannot parse (it would only warn and skip the line, so a risk limit would silently fall back to its
    default). The message names the file, the line and the variable, never the value."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot be read ({exc.strerror}); fix its permissions or remove it"
        ) from None
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line} is not valid {encoding.upper()}; save the file as {encoding.upper()}"
        ) from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            name = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)", binding.original.string)
            what = f" ({name.group(1)})" if name else ""
            raise ConfigError(
                f"{path}: line {binding.original.line}{what} cannot be parsed; write NAME=value and close "
                "every quote you open (the line is not ignored: fix or remove it)"
            )


def _dotenv_paths(env_file: Any) -> list[Path]:
    if env_file is None:
        return []
    if isinstance(env_file, (str, Path)):
        return [Path(env_file)]
    return [Path(item) for item in env_file]


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the configuration, or raise :class:`ConfigError` naming each bad variable."""
    env_file = overrides.get("_env_file", Settings.model_config.get("env_file"))
    encoding = overrides.get("_env_file_encoding") or Settings.model_config.get("env_file_encoding")
    for path in _dotenv_paths(env_file):
        check_dotenv_file(path, encoding or "utf-8")
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(
            f"invalid configuration: {format_validation_error(error)}. "
            "Fix it in the environment or .env (see .env.example)."
        ) from None


#: Third-party loggers that log wire traffic at DEBUG (websocket frames, with the stream's
#: authenticate message and its secret; HTTP connections; SQL and its parameters; Redis replies). They
#: stay at INFO or quieter whatever ``LOG_LEVEL`` says (SQLAlchemy's engine at WARNING: its INFO is SQL).
_WIRE_LOGGERS = {
    "websockets": logging.INFO,
    "urllib3": logging.INFO,
    "httpx": logging.INFO,
    "httpcore": logging.INFO,
    "hpack": logging.INFO,
    "aiohttp": logging.INFO,
    "requests": logging.INFO,
    "alpaca": logging.INFO,
    "psycopg": logging.INFO,
    "redis": logging.INFO,
    "sqlalchemy.engine": logging.WARNING,
    "sqlalchemy.pool": logging.WARNING,
}
#: Secrets shorter than this are not replaced wherever they occur (a password ``trader`` would blank out
#: every ``trader`` in the logs); inside URLs they are masked whatever their length.
MIN_REDACTED_LENGTH = 8


class SecretRedactingFilter(logging.Filter):
    """Replace secret values, and passwords inside URLs, with ``***`` in a record's message, exception
    and stack text. Attached to the root logger's handlers by :func:`configure_logging`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        unique = {secret for secret in secrets if secret and len(secret) >= MIN_REDACTED_LENGTH}
        self.secrets = sorted(unique, key=len, reverse=True)  # longest first: no partial leftovers

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return mask_urls_in_text(text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's problem, not ours
            return True
        redacted = self.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def uvicorn_logging(level: str) -> dict[str, Any]:
    """uvicorn's logging options for our services (``uvicorn.run(app, ..., **uvicorn_logging(...))``):
    no handlers of its own, so its loggers (request errors with their tracebacks, access lines)
    propagate to the root handlers :func:`configure_logging` set up, which redact the secrets."""
    return {"log_level": level, "log_config": None}


def configure_logging(settings: Settings) -> None:
    """Log lines of the long-running commands: time, level, logger and message, at ``LOG_LEVEL``.

    Wire-level third-party loggers stay at INFO or above (:data:`_WIRE_LOGGERS`), and every root handler
    redacts the configured secrets (:class:`SecretRedactingFilter`). Safe to call more than once.
    """
    logging.basicConfig(
        level=settings.log_level.value, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    level = logging.getLevelNamesMapping()[settings.log_level.value]
    for name, floor in _WIRE_LOGGERS.items():
        logging.getLogger(name).setLevel(max(floor, level))
    redactor = SecretRedactingFilter(settings.secret_values())
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretRedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(redactor)
