"""Logging set up by ``configure_logging``: wire-level loggers stay quiet and secrets are redacted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trader.config import SecretRedactingFilter, Settings, mask_urls_in_text

SECRET = "sk-very-secret-value-123"
KEY_ID = "PKTESTKEYID000000001"

#: Run in a fresh interpreter: ``configure_logging`` sets up the root logger like a service does.
SCRIPT = """
import logging
from trader.config import configure_logging, load_settings

configure_logging(load_settings())
# What websockets logs at DEBUG when the trade stream authenticates.
logging.getLogger("websockets.client").debug(
    "> TEXT '{\\"action\\":\\"authenticate\\",\\"data\\":{\\"key_id\\":\\"%s\\",\\"secret_key\\":\\"%s\\"}}'",
    "KEY", "SECRET",
)
logging.getLogger("urllib3.connectionpool").debug("wire: %s", "SECRET")
logging.getLogger("trader.test").debug("debug line with %s and %s", "SECRET", "KEY")
logging.getLogger("trader.test").info("api key TOKEN in a message")
logging.getLogger("trader.test").info("db postgresql://trader:DBPASS@db:5432/x and LONGDBPASSWORD")
logging.getLogger("trader.test").info("redis redis://cache:6379/0?password=REDISPASS")
try:
    raise RuntimeError("failed with SECRET")
except RuntimeError:
    logging.getLogger("trader.test").exception("boom")
logging.getLogger("websockets.client").info("websockets info still shown")
"""


def _run(env: dict[str, str], script: str = SCRIPT) -> str:
    script = script.replace("SECRET", SECRET).replace("KEY", KEY_ID)
    full = {**os.environ, **env}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=full, check=True
    )
    return result.stderr


def _secrets_env() -> dict[str, str]:
    return {
        "LOG_LEVEL": "DEBUG",
        "ALPACA_API_SECRET_KEY": SECRET,
        "ALPACA_API_KEY_ID": KEY_ID,
        "TRADER_API_KEY": "trader-api-token-42",
        "DATABASE_URL": "postgresql://trader:LONGDBPASSWORD@db:5432/trader",
        "REDIS_URL": "redis://cache:6379/0?password=REDISPASS",
    }


def test_debug_logging_never_shows_the_alpaca_secret(tmp_path: Path) -> None:
    out = _run(_secrets_env())
    assert SECRET not in out
    assert KEY_ID not in out
    assert "authenticate" not in out  # websockets frames are not logged at all
    assert "wire:" not in out
    assert "debug line with *** and ***" in out
    assert "RuntimeError: failed with ***" in out
    assert "websockets info still shown" in out


def test_urls_and_configured_passwords_are_redacted(tmp_path: Path) -> None:
    env = _secrets_env()
    out = _run(env, SCRIPT.replace("TOKEN", env["TRADER_API_KEY"]))
    assert "trader-api-token-42" not in out
    assert "DBPASS" not in out
    assert "LONGDBPASSWORD" not in out
    assert "REDISPASS" not in out
    assert "postgresql://trader:***@db:5432/x" in out


def test_wire_loggers_respect_a_quieter_log_level(tmp_path: Path) -> None:
    out = _run({"LOG_LEVEL": "WARNING"})
    assert "websockets info still shown" not in out
    assert "boom" in out


def test_filter_redacts_message_arguments_and_exceptions() -> None:
    redactor = SecretRedactingFilter([SECRET, "", "ab"])
    try:
        raise ValueError(SECRET)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s", (SECRET,), sys.exc_info())
    assert redactor.filter(record)
    assert record.getMessage() == "got ***"
    assert record.exc_text is not None
    assert SECRET not in record.exc_text
    assert "ValueError: ***" in record.exc_text
    # Values too short to be secrets are not replaced everywhere.
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "ab cd", None, None)
    assert redactor.filter(plain)
    assert plain.getMessage() == "ab cd"


def test_settings_list_their_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        alpaca_api_secret_key=SECRET,
        trader_api_key="trader-api-token-42",
        database_url="postgresql://u:dbpassword1@h/db",
        redis_url="redis://h:6379/0?password=redispassword1",
        paper_broker_database_url="postgresql://u:paperpassword1@h/db",
    )
    values = settings.secret_values()
    for expected in (SECRET, "trader-api-token-42", "dbpassword1", "redispassword1", "paperpassword1"):
        assert expected in values


def test_mask_urls_in_text() -> None:
    text = "connect 'postgresql://u:pw1@h/db' then redis://h/0?password=pw2, done"
    masked = mask_urls_in_text(text)
    assert "pw1" not in masked
    assert "pw2" not in masked
    assert "postgresql://u:***@h/db" in masked
