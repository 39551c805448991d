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
