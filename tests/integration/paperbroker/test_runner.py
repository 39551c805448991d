"""Starting the paper broker in-process when nothing answers, reusing one that does, and its admin client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.paperbroker.conftest import OPEN_TUESDAY
from tests.support.paper_broker import running_paper_broker
from tests.support.services import free_port
from trader.paperbroker import PaperBrokerSettings
from trader.paperbroker.runner import (
    PaperBrokerAdmin,
    PaperBrokerUnavailableError,
    is_answering,
    paper_broker_running,
)


def test_starts_a_broker_where_none_answers_and_stops_it_after(broker_settings: PaperBrokerSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    keys = (broker_settings.api_key_id, broker_settings.api_secret_key)
    assert not is_answering(url, *keys)
    with paper_broker_running(url, broker_settings) as running:
        assert running.started_here
        assert running.url == url
        assert is_answering(url, *keys)
    assert not is_answering(url, *keys)


def test_reuses_a_broker_that_already_answers(broker_settings: PaperBrokerSettings) -> None:
    with running_paper_broker(broker_settings) as broker:
        with paper_broker_running(broker.url, broker_settings) as running:
            assert not running.started_here
            assert running.url == broker.url
        assert is_answering(broker.url, broker.key_id, broker.secret_key)  # not stopped by the user


def test_wrong_keys_do_not_count_as_answering(broker_settings: PaperBrokerSettings) -> None:
    with running_paper_broker(broker_settings) as broker:
        assert not is_answering(broker.url, broker.key_id, "wrong-secret")


def test_refuses_to_start_a_broker_for_a_remote_url(broker_settings: PaperBrokerSettings) -> None:
    with (
        pytest.raises(PaperBrokerUnavailableError, match="not a local address"),
        paper_broker_running("http://192.0.2.1:9/", broker_settings),
    ):
        pass  # pragma: no cover


def test_admin_moves_the_clock(broker_settings: PaperBrokerSettings) -> None:
    with (
        running_paper_broker(broker_settings) as broker,
        PaperBrokerAdmin(broker.url, broker.key_id, broker.secret_key) as admin,
    ):
        later = OPEN_TUESDAY + timedelta(hours=2)
        assert admin.set_clock(later) == later
        assert admin.now() == later
        assert admin.set_faults(error_rate=0.5)["settings"]["error_rate"] == 0.5


def test_admin_errors_are_typed(broker_settings: PaperBrokerSettings) -> None:
    with running_paper_broker(broker_settings) as broker:
        with (
            PaperBrokerAdmin(broker.url, broker.key_id, "wrong-secret") as admin,
            pytest.raises(PaperBrokerUnavailableError, match=r"answered 40[13]"),
        ):
            admin.now()
        with (
            PaperBrokerAdmin(broker.url, broker.key_id, broker.secret_key) as admin,
            pytest.raises(PaperBrokerUnavailableError, match="answered 422"),
        ):
            admin.set_clock(datetime(1990, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("host", ["127.0.0.2", "[::1]", "localhost."])
def test_every_local_address_the_settings_call_local_starts_a_broker(
    broker_settings: PaperBrokerSettings, host: str
) -> None:
    # The same notion of "local" as Settings.uses_local_paper_broker, so paper-run never treats a
    # URL as the built-in broker and then refuses to start one there.
    url = f"http://{host}:{free_port()}"
    with paper_broker_running(url, broker_settings) as running:
        assert running.started_here
        assert is_answering(running.url, broker_settings.api_key_id, broker_settings.api_secret_key)
