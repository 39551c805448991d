"""The status map covers every status alpaca-py knows, onto our own enum."""

from __future__ import annotations

import pytest
from alpaca.trading.enums import OrderStatus as AlpacaOrderStatus

from trader.broker.statuses import STATUS_MAP, to_order_status
from trader.domain.enums import OrderStatus


def test_every_sdk_status_is_mapped() -> None:
    assert set(STATUS_MAP) == set(AlpacaOrderStatus)


def test_statuses_keep_alpacas_spelling() -> None:
    for sdk, ours in STATUS_MAP.items():
        assert isinstance(ours, OrderStatus)
        assert ours.value == sdk.value


def test_text_and_enum_both_map() -> None:
    assert to_order_status("partially_filled") is OrderStatus.PARTIALLY_FILLED
    assert to_order_status(AlpacaOrderStatus.HELD) is OrderStatus.HELD
    with pytest.raises(ValueError):
        to_order_status("dry_run")  # ours only: never comes from Alpaca
