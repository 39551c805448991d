"""Hand-made SDK objects for the pure broker tests: Alpaca-shaped JSON, ``APIError``s, a fake client.

The fake trading client stands in for alpaca-py's ``TradingClient`` (an external service), with the
semantics of Alpaca that the submit logic depends on: orders keyed by ``client_order_id``, 422 on a
duplicate, 404 on an unknown id. Its failures are scripted per call.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.models import Order

NOW = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


def order_json(
    client_order_id: str = "coid-1",
    *,
    order_id: str | None = None,
    symbol: str = "AAPL",
    side: str = "buy",
    qty: str | None = "10",
    status: str = "new",
    filled_qty: str = "0",
    filled_avg_price: str | None = None,
    order_type: str = "market",
    limit_price: str | None = None,
    updated_at: str = "2024-03-05T15:00:00.000001Z",
    submitted_at: str = "2024-03-05T15:00:00Z",
) -> dict[str, Any]:
    """An order as Alpaca's JSON (strings for numbers, ``Z`` times)."""
    return {
        "id": order_id or str(uuid.uuid4()),
        "client_order_id": client_order_id,
        "created_at": submitted_at,
        "updated_at": updated_at,
        "submitted_at": submitted_at,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": symbol,
        "asset_class": "us_equity",
        "notional": None,
        "qty": qty,
        "filled_qty": filled_qty,
        "filled_avg_price": filled_avg_price,
        "order_class": "",
        "order_type": order_type,
        "type": order_type,
        "side": side,
        "time_in_force": "day",
        "limit_price": limit_price,
        "stop_price": None,
        "status": status,
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
    }


def api_error(status: int, body: str | dict[str, Any], headers: dict[str, str] | None = None) -> APIError:
    """The ``APIError`` alpaca-py raises for an HTTP ``status`` answer with ``body``."""
    text = body if isinstance(body, str) else json.dumps(body)
    response = requests.Response()
    response.status_code = status
    response._content = text.encode()
    response.headers.update(headers or {})
    response.url = "http://broker.test/v2/orders"
    return APIError(text, requests.HTTPError(f"{status} error", response=response))


def server_error(status: int = 500) -> APIError:
    return api_error(status, {"code": status * 100000 + 10000, "message": "internal server error"})


def not_found() -> APIError:
    return api_error(404, {"code": 40410000, "message": "order not found"})


def duplicate() -> APIError:
    return api_error(422, {"code": 40010001, "message": "client_order_id must be unique"})


#: What a scripted submit (or replace) does: ``"ok"``, ``"lose"`` (create, then fail like a lost
#: response), or an exception to raise without creating anything.
SubmitStep = str | BaseException


def not_open(status: str) -> APIError:
    """Alpaca's (and the paper broker's) 422 for replacing an order that is no longer open."""
    return api_error(422, {"code": 42210000, "message": f'order is already in "{status}" state'})


_OPEN = {"new", "accepted", "pending_new", "partially_filled"}


class FakeTradingClient:
    """Alpaca's order semantics in memory; submit, replace and lookup failures scripted per call.

    A replace re-sent after it landed meets either the duplicate ``client_order_id`` check (422
    40010001) or the old order's "no longer open" check (422), whichever ``duplicate_check_first``
    says the server runs first (the paper broker checks the old order first).
    """

    def __init__(
        self,
        submit_steps: list[SubmitStep] | None = None,
        lookup_steps: list[BaseException | None] | None = None,
        replace_steps: list[SubmitStep] | None = None,
        *,
        duplicate_check_first: bool = True,
    ) -> None:
        self.submit_steps = list(submit_steps or [])
        self.lookup_steps = list(lookup_steps or [])
        self.replace_steps = list(replace_steps or [])
        self.duplicate_check_first = duplicate_check_first
        self.orders: dict[str, dict[str, Any]] = {}
        self.submit_calls = 0
        self.lookup_calls = 0
        self.replace_calls = 0
        self.replace_requests: list[Any] = []

    def submit_order(self, request: Any) -> Order:
        self.submit_calls += 1
        step = self.submit_steps.pop(0) if self.submit_steps else "ok"
        if isinstance(step, BaseException):
            raise step
        coid = request.client_order_id
        if coid in self.orders:
            raise duplicate()
        self.orders[coid] = order_json(
            coid,
            symbol=request.symbol,
            side=request.side.value,
            qty=_text(request.qty),
            order_type=request.type.value,
            limit_price=_text(getattr(request, "limit_price", None)),
        )
        if step == "lose":
            raise server_error(500)
        return Order(**self.orders[coid])

    def replace_order_by_id(self, order_id: Any, order_data: Any) -> Order:
        self.replace_calls += 1
        self.replace_requests.append(order_data)
        step = self.replace_steps.pop(0) if self.replace_steps else "ok"
        if isinstance(step, BaseException):
            raise step
        old = next((order for order in self.orders.values() if order["id"] == str(order_id)), None)
        if old is None:
            raise not_found()
        coid = order_data.client_order_id
        checks = [("dup", coid in self.orders), ("open", old["status"] not in _OPEN)]
        for kind, failed in checks if self.duplicate_check_first else reversed(checks):
            if failed:
                raise duplicate() if kind == "dup" else not_open(old["status"])
        new = dict(old)
        new.update(
            id=str(uuid.uuid4()),
            client_order_id=coid,
            replaces=old["id"],
            status="new",
            qty=_text(order_data.qty) or str(Decimal(old["qty"]) - Decimal(old["filled_qty"])),
            filled_qty="0",
            limit_price=_text(order_data.limit_price) or old["limit_price"],
            time_in_force=(order_data.time_in_force or old["time_in_force"]),
        )
        old.update(status="replaced", replaced_by=new["id"])
        self.orders[coid] = new
        if step == "lose":
            raise server_error(500)
        return Order(**new)

    def get_order_by_client_id(self, client_id: str) -> Order:
        self.lookup_calls += 1
        step = self.lookup_steps.pop(0) if self.lookup_steps else None
        if step is not None:
            raise step
        if client_id not in self.orders:
            raise not_found()
        return Order(**self.orders[client_id])


def _text(value: float | None) -> str | None:
    if value is None:
        return None
    return str(int(value)) if float(value).is_integer() else repr(value)


def no_sleep() -> tuple[list[float], Callable[[float], None]]:
    """A sleep that records instead of sleeping."""
    slept: list[float] = []
    return slept, slept.append
