"""Configuration: defaults, validation errors that name the variable, secrets never shown."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from trader.config import (
    LOCAL_PAPER_BROKER_URL,
    Settings,
    load_settings,
    mask_url_password,
    normalize_database_url,
)
from trader.errors import ConfigError

SECRET = "sk-very-secret-value-123"


def test_defaults_are_safe_and_embedded() -> None:
    settings = load_settings()
    assert settings.dry_run is True
    assert str(settings.alpaca_base_url).rstrip("/") == LOCAL_PAPER_BROKER_URL
    assert settings.uses_local_paper_broker
    assert not settings.is_live
    assert settings.database_url == "sqlite:///var/trader.db"
    assert settings.redis_url is None
    assert settings.redis_key_prefix == ""
    assert settings.data_dir == Path("data")
    assert settings.artifacts_dir == Path("artifacts")
    assert settings.strategy_id == "alpha_baseline"
    assert settings.mlflow_tracking_uri.startswith("sqlite:////")  # absolute path
    assert settings.mlflow_tracking_uri.endswith("/var/mlflow.db")
    assert settings.effective_data_url == LOCAL_PAPER_BROKER_URL
    assert settings.trader_api_key is None


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRY_RUN", "false")
    monkeypatch.setenv("STRATEGY_ID", "momentum_v2")
    monkeypatch.setenv("MAX_ORDER_NOTIONAL", "1234.50")
    monkeypatch.setenv("REDIS_URL", "redis://localhost:6379/0")
    settings = load_settings()
    assert settings.dry_run is False
    assert settings.strategy_id == "momentum_v2"
    assert settings.max_order_notional == Decimal("1234.50")
    assert settings.redis_url == "redis://localhost:6379/0"


def test_redis_key_prefix_is_read_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_KEY_PREFIX", "live:")
    settings = load_settings()
    assert settings.redis_key_prefix == "live:"
    assert settings.describe()["REDIS_KEY_PREFIX"] == "live:"
    assert Settings(redis_key_prefix="").describe()["REDIS_KEY_PREFIX"] == "(none)"


def test_dotenv_file_is_read_and_environment_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("STRATEGY_ID=from_dotenv\nDATA_DIR=/srv/data\n")
    monkeypatch.setenv("DATA_DIR", "/from/env")
    settings = load_settings()
    assert settings.strategy_id == "from_dotenv"
    assert settings.data_dir == Path("/from/env")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DRY_RUN", "maybe", "valid boolean"),
        ("ALPACA_BASE_URL", "not a url", "URL"),
        ("ALPACA_BASE_URL", "ftp://example.com", "URL scheme"),
        ("ALPACA_DATA_URL", "localhost:99", "URL"),
        ("MAX_ORDER_NOTIONAL", "-5", "greater than or equal to 0"),
        ("DAILY_LOSS_LIMIT", "lots", "decimal"),
        ("BROKER_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("BROKER_MAX_RETRIES", "-1", "greater than or equal to 0"),
        ("STRATEGY_ID", "Bad Strategy!", "lower-case"),
        ("DATABASE_URL", "mysql://root@localhost/trader", "not supported"),
        ("DATABASE_URL", "no scheme at all", "not a database URL"),
        ("DATABASE_URL", "postgresql://user@host", "names no database"),
        ("REDIS_URL", "http://localhost:6379", "redis://"),
        ("REDIS_KEY_PREFIX", "live trading!", "letters, digits"),
        ("REDIS_KEY_PREFIX", "x" * 65, "at most 64"),
        ("REDIS_KEY_PREFIX", "live:\n", "letters, digits"),
        ("STRATEGY_ID", "momentum\n", "lower-case"),
        ("MLFLOW_TRACKING_URI", "./mlruns", "database URI"),
        ("LOG_LEVEL", "LOUD", "DEBUG"),
        ("DATA_DIR", "", "must not be empty"),
        ("ARTIFACTS_DIR", "  ", "must not be empty"),
        ("REDIS_URL", "redis://:pw@", "names no host"),
        ("REDIS_URL", "rediss://", "names no host"),
        ("REDIS_URL", "redis://h:port/0", "port"),
        ("REDIS_URL", "unix://", "socket path"),
        ("BROKER_TIMEOUT_SECONDS", "nan", "finite number"),
        ("BROKER_TIMEOUT_SECONDS", "inf", "finite number"),
        ("DATA_OUTLIER_THRESHOLD", "0", "greater than 0"),
        ("DATA_OUTLIER_THRESHOLD", "30%", "valid number"),
        ("DATA_OUTLIER_THRESHOLD", "nan", "finite number"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert f"{variable}:" in message
    assert expected in message
    assert "\n" not in message
    assert "less than" not in message  # a NaN is "not a finite number", not "too large"
    assert ":pw@" not in message
    assert caught.value.exit_code == 2


def test_several_problems_are_all_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRY_RUN", "maybe")
    monkeypatch.setenv("MAX_GROSS_EXPOSURE", "-1")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DRY_RUN:" in str(caught.value)
    assert "MAX_GROSS_EXPOSURE:" in str(caught.value)


def test_live_host_needs_explicit_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://api.alpaca.markets")
    with pytest.raises(ConfigError, match="ALLOW_LIVE_TRADING"):
        load_settings()
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")
    settings = load_settings()
    assert settings.is_live
    assert settings.effective_data_url == "https://data.alpaca.markets"


def test_alpaca_paper_uses_alpaca_data_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://paper-api.alpaca.markets")
    settings = load_settings()
    assert not settings.is_live
    assert not settings.uses_local_paper_broker
    assert settings.effective_data_url == "https://data.alpaca.markets"
    monkeypatch.setenv("ALPACA_DATA_URL", "http://127.0.0.1:9999")
    assert load_settings().effective_data_url == "http://127.0.0.1:9999"


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8765", True),
        ("http://127.0.0.1:41234", True),
        ("http://localhost:9000/", True),
        ("https://paper-api.alpaca.markets", False),
        ("http://10.0.0.5:8765", False),
        ("https://127.0.0.1:8765", False),
    ],
)
def test_local_paper_broker_is_any_loopback_port(
    monkeypatch: pytest.MonkeyPatch, url: str, local: bool
) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", url)
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")  # 10.0.0.5 is not a known paper host
    assert load_settings().uses_local_paper_broker is local


def test_empty_optional_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "ALPACA_DATA_URL", "TRADER_API_KEY"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.alpaca_data_url is None
    assert settings.trader_api_key is None


def test_bare_postgresql_url_uses_psycopg3() -> None:
    assert normalize_database_url("postgresql://u:p@h:5432/db") == "postgresql+psycopg://u:p@h:5432/db"
    assert normalize_database_url("sqlite:///var/x.db") == "sqlite:///var/x.db"


def test_secrets_are_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_API_SECRET_KEY", SECRET)
    monkeypatch.setenv("ALPACA_API_KEY_ID", SECRET + "-id")
    monkeypatch.setenv("TRADER_API_KEY", SECRET + "-api")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://trader:{SECRET}@db:5432/trader")
    monkeypatch.setenv("REDIS_URL", f"redis://:{SECRET}@cache:6379/0")
    settings = load_settings()
    assert settings.alpaca_api_secret_key.get_secret_value() == SECRET
    shown = " ".join([repr(settings), str(settings), str(settings.describe())])
    assert SECRET not in shown
    assert settings.describe()["DATABASE_URL"] == "postgresql+psycopg://trader:***@db:5432/trader"
    assert settings.describe()["REDIS_URL"] == "redis://:***@cache:6379/0"
    assert settings.describe()["ALPACA_API_SECRET_KEY"] == "********"


def test_secret_is_not_echoed_in_validation_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    # A secret of the wrong type must not end up in the error text either.
    with pytest.raises(ConfigError) as caught:
        load_settings(alpaca_api_secret_key=["not", SECRET], dry_run="maybe")
    assert "ALPACA_API_SECRET_KEY:" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_mask_url_password_leaves_urls_without_password_alone() -> None:
    assert mask_url_password("sqlite:///var/trader.db") == "sqlite:///var/trader.db"
    assert mask_url_password("redis://h:6379/0") == "redis://h:6379/0"


def test_settings_class_reads_nothing_at_import() -> None:
    # Building Settings is explicit; importing trader.config must not have created one.
    import trader.config as config

    assert not any(isinstance(value, Settings) for value in vars(config).values())


def test_password_in_a_bad_database_url_is_masked_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://root:{SECRET}@db/trader")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DATABASE_URL:" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert "root:***@db" in str(caught.value)


# --- live trading needs consent for every host that is not a known paper broker ---


@pytest.mark.parametrize(
    "url",
    [
        "https://api.alpaca.markets.",  # urllib3 strips the dot: the real-money host
        "https://API.ALPACA.MARKETS./",
        "https://api%2ealpaca.markets",
        "https://paper-api.alpaca.markets.example.com",
        "https://broker.example.com",
        "http://10.0.0.5:8765",
        "http://192.168.1.20:8765",
    ],
)
def test_every_unknown_host_is_treated_as_live(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", url)
    monkeypatch.setenv("DRY_RUN", "false")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "ALPACA_BASE_URL" in message
    assert "ALLOW_LIVE_TRADING=true" in message
    assert caught.value.exit_code == 2
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")
    assert load_settings().is_live


def test_trailing_dot_on_the_live_host_is_the_live_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://api.alpaca.markets.")
    with pytest.raises(ConfigError, match="Alpaca's live"):
        load_settings()
    monkeypatch.setenv("ALLOW_LIVE_TRADING", "true")
    settings = load_settings()
    assert settings.is_live
    assert settings.effective_data_url == "https://data.alpaca.markets"


@pytest.mark.parametrize(
    "url",
    [
        "https://paper-api.alpaca.markets",
        "https://paper-api.alpaca.markets.",
        "https://PAPER-API.Alpaca.Markets/",
        "http://127.0.0.1:8765",
        "http://127.0.0.2:41234",
        "http://127.1:8765",
        "http://localhost:9000/",
        "http://localhost.:9000/",
        "http://[::1]:8765",
        "http://paper-broker:8765",  # docker-compose.yml: the paper broker's service name
    ],
)
def test_paper_hosts_need_no_permission(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", url)
    monkeypatch.setenv("DRY_RUN", "false")
    assert not load_settings().is_live


def test_alpaca_paper_host_with_trailing_dot_uses_alpaca_data_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://paper-api.alpaca.markets.")
    assert load_settings().effective_data_url == "https://data.alpaca.markets"


# --- URL passwords are masked everywhere, however the URL is written ---


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://u:pw1secret@h:1/", "http://u:***@h:1/"),
        ("redis://:pw1secret@", "redis://:***@"),
        ("redis://127.0.0.1:6379/0?password=pw1secret", "redis://127.0.0.1:6379/0?password=***"),
        (
            "postgresql://u@h/db?sslmode=require&password=pw1secret&x=1",
            "postgresql://u@h/db?sslmode=require&password=***&x=1",
        ),
        ("postgresql://u@h/db?PassWord=pw1secret", "postgresql://u@h/db?PassWord=***"),
        ("https://h/x?api_key=pw1secret", "https://h/x?api_key=***"),
        ("https://h/x?token=pw1secret#f", "https://h/x?token=***#f"),
        ("https://h/x?pwd=pw1secret;pass=pw1secret", "https://h/x?pwd=***;pass=***"),
        ("https://h/x?client_secret=pw1secret", "https://h/x?client_secret=***"),
        ("unix:///tmp/r.sock?db=0&password=pw1secret", "unix:///tmp/r.sock?db=0&password=***"),
        # Passwords with '/', '#', '?' or '@' do not parse as the author meant: show the scheme only.
        ("mysql://u:pa/pw1secret@h/db", "mysql://***"),
        ("postgresql://u:pa#pw1secret@h/db", "postgresql://***"),
        ("postgresql://u:pa?pw1secret@h/db", "postgresql://***"),
        ("postgresql://u:p@ss/pw1secret@h/db", "postgresql://***"),
        ("http://u:pw1secret@[::1", "http://u:***@[::1"),
        ("u:pw1secret@h/db", "***"),  # no scheme
        ("postgresql:/u:pw1secret@h/db", "***"),
    ],
)
def test_mask_url_password_masks_every_form(url: str, expected: str) -> None:
    masked = mask_url_password(url)
    assert masked == expected
    assert "pw1secret" not in masked


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///var/trader.db",
        "sqlite:////home/me/data@home/x.db",
        "postgresql+psycopg://u@h:5432/db?sslmode=require",
        "https://paper-api.alpaca.markets",
        "redis://h:6379/0?ssl_cert_reqs=none",
    ],
)
def test_mask_url_password_keeps_urls_without_password(url: str) -> None:
    assert mask_url_password(url) == url


def test_alpaca_urls_with_credentials_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", f"http://user:{SECRET}@127.0.0.1:8765")
    monkeypatch.setenv("ALPACA_DATA_URL", f"http://user:{SECRET}-data@127.0.0.1:9999?token={SECRET}")
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:6379/0?password={SECRET}")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u@h/db?password={SECRET}")
    settings = load_settings()
    described = settings.describe()
    shown = " ".join([repr(settings), str(settings), str(described)])
    assert SECRET not in shown
    assert described["ALPACA_BASE_URL"] == "http://user:***@127.0.0.1:8765"
    assert described["ALPACA_DATA_URL"].startswith("http://user:***@127.0.0.1:9999")
    assert described["REDIS_URL"] == "redis://127.0.0.1:6379/0?password=***"


@pytest.mark.parametrize("url", ["mysql://u:pa/ss-SECRETPART@h/db", "mysql://u:pa#ss-SECRETPART@h/db"])
def test_unparseable_url_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DATABASE_URL:" in str(caught.value)
    assert "SECRETPART" not in str(caught.value)
    assert "mysql://***" in str(caught.value)


# --- .env must parse completely ---


def test_unparseable_dotenv_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text('STRATEGY_ID=x1\nMAX_ORDER_NOTIONAL="500\nDAILY_LOSS_LIMIT=100\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert ".env" in message
    assert "line 2" in message
    assert "MAX_ORDER_NOTIONAL" in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_unparseable_dotenv_line_does_not_echo_its_value(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f'ALPACA_API_SECRET_KEY="{SECRET}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "ALPACA_API_SECRET_KEY" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_dotenv_with_invalid_utf8_names_the_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_bytes(b"STRATEGY_ID=x1\nDATA_DIR=/srv/\xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert ".env" in str(caught.value)
    assert "UTF-8" in str(caught.value)
    assert "line 2" in str(caught.value)


def test_valid_dotenv_forms_are_accepted(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        '# comment\n\nexport STRATEGY_ID=from_dotenv\nMAX_ORDER_NOTIONAL="500"\n'
        "DAILY_LOSS_LIMIT='100' # inline\n"
    )
    settings = load_settings()
    assert settings.strategy_id == "from_dotenv"
    assert settings.max_order_notional == Decimal("500")
    assert settings.daily_loss_limit == Decimal("100")


# --- small validation gaps ---


def test_redis_urls_that_work_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("redis://localhost:6379/0", "rediss://:pw@cache:6380/1", "unix:///run/redis.sock?db=0"):
        monkeypatch.setenv("REDIS_URL", url)
        assert load_settings().redis_url == url


def test_env_example_is_a_valid_dotenv(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    (tmp_path / ".env").write_text(example.read_text(encoding="utf-8"), encoding="utf-8")
    settings = load_settings()
    assert settings.dry_run is True
    assert not settings.is_live


def test_a_paper_broker_on_another_host_is_declared_not_allowed_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "http://paper-broker.default.svc.cluster.local:8765")
    monkeypatch.setenv("DRY_RUN", "false")
    with pytest.raises(ConfigError, match="add it to PAPER_BROKER_HOSTS"):
        load_settings()
    monkeypatch.setenv("PAPER_BROKER_HOSTS", " Paper-Broker.default.svc.cluster.local. , 10.0.0.5")
    settings = load_settings()
    assert not settings.is_live and not settings.allow_live_trading
    # The guard stays on for every other host.
    monkeypatch.setenv("ALPACA_BASE_URL", "https://api.alpaca.markets")
    with pytest.raises(ConfigError, match="Alpaca's live"):
        load_settings()


def test_the_live_host_can_never_be_declared_paper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPER_BROKER_HOSTS", "paper.internal,API.alpaca.markets.")
    with pytest.raises(ConfigError, match=r"PAPER_BROKER_HOSTS: api\.alpaca\.markets is Alpaca.s live"):
        load_settings()


def test_an_outlier_threshold_written_as_a_percentage_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_OUTLIER_THRESHOLD", "30")  # meant 30 %: 3,000 % would switch the rule off
    with pytest.raises(ConfigError, match="DATA_OUTLIER_THRESHOLD: Input should be less than or equal to 10"):
        load_settings()
    monkeypatch.setenv("DATA_OUTLIER_THRESHOLD", "0.5")
    assert load_settings().data_outlier_threshold == 0.5
