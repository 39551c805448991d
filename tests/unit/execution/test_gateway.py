"""The gateway's pure parts: the order body's validation, API-key reading, the default trading date,
error formatting, and the refusals at start-up (no key, no broker)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import polars as pl
import pytest
from pydantic import ValidationError

from trader.cli.main import run
from trader.config import Settings
from trader.data.bars import BarBatch
from trader.data.sources import SourceError, SourceHealth
from trader.domain.enums import OrderSide, OrderType
from trader.domain.json import plain_decimal
from trader.errors import ConfigError
from trader.execution.client_ids import make_client_order_id
from trader.execution.gateway import (
    OrderBody,
    PositionOut,
    _validation_detail,
    create_gateway_app,
    key_matches,
    presented_key,
)
from trader.execution.snapshots import (
    MarketDataCloses,
    RiskInputsUnavailableError,
    StaticRiskInputs,
    default_trading_date,
)
from trader.risk.snapshot import PortfolioSnapshot

D = Decimal
BASE: dict[str, Any] = {"strategy_id": "gw", "symbol": " aapl ", "side": "buy", "qty": "10"}


def fields_of(error: ValidationError) -> list[str]:
    return [item["field"] for item in _validation_detail(error.errors())]


def test_a_valid_body_becomes_the_deterministic_intent() -> None:
    body = OrderBody.model_validate(BASE | {"type": "limit", "limit_price": "150.25", "sequence": 2})
    assert (body.symbol, body.type, body.intent) == ("AAPL", OrderType.LIMIT, "manual")
    intent = body.to_intent(date(2024, 3, 5))
    assert intent.client_order_id == make_client_order_id(
        "gw", date(2024, 3, 5), "AAPL", OrderSide.BUY, "manual", 2
    )
    assert (intent.qty, intent.limit_price, intent.notional) == (D(10), D("150.25"), None)
    notional = OrderBody.model_validate({**BASE, "qty": None, "notional": 99.5}).to_intent(date(2024, 3, 5))
    assert (notional.qty, notional.notional) == (None, D("99.5"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"qty": 0}, "qty"),
        ({"qty": "NaN"}, "qty"),
        ({"qty": "Infinity"}, "qty"),
        ({"qty": "1e30"}, "qty"),
        ({"qty": None}, "qty"),
        ({"notional": "5"}, "qty"),
        ({"type": "stop"}, "stop_price"),
        ({"type": "limit", "limit_price": "1", "stop_price": "2"}, "stop_price"),
        ({"intent": "Re Balance"}, "intent"),
        ({"symbol": ""}, "symbol"),
        ({"symbol": "TOOLONGSYMBOL1234"}, "symbol"),
        ({"trading_date": "tomorrow"}, "trading_date"),
        ({"trading_date": "2024-03-09"}, "trading_date"),  # a Saturday
        ({"trading_date": "2024-12-25"}, "trading_date"),  # a holiday
        ({"trading_date": "1900-01-02"}, "trading_date"),  # before the calendar
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_bodies_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        OrderBody.model_validate({k: v for k, v in (BASE | changes).items() if v is not None})
    assert fields_of(caught.value) == [field]


def test_a_trading_date_that_is_no_session_says_so() -> None:
    with pytest.raises(ValidationError, match="2024-03-09 is not an XNYS session"):
        OrderBody.model_validate(BASE | {"trading_date": "2024-03-09"})


@pytest.mark.parametrize(
    ("value", "text"),
    [("0E-9", "0"), ("-0.000", "0"), ("10.000", "10"), ("1E+1", "10"), ("31.78380", "31.7838")],
)
def test_answers_show_numbers_as_plain_decimal_text(value: str, text: str) -> None:
    assert plain_decimal(D(value)) == text
    row = PositionOut(
        strategy_id="gw", symbol="AAPL", qty=D(value), avg_price=D(0), realized_pnl=D(value), updated_at=None
    )
    assert row.model_dump(mode="json")["qty"] == text
    assert row.model_dump_json().count(f'"{text}"') >= 2


def test_validation_detail_starts_each_message_with_its_field() -> None:
    errors = [
        {"loc": ("body", "qty"), "msg": "Input should be greater than 0", "type": "greater_than"},
        {"loc": ("query", "limit"), "msg": "too big", "type": "less_than_equal"},
        {"loc": ("body", 7), "msg": "JSON decode error", "type": "json_invalid"},
        {"loc": ("body",), "msg": "qty: give one", "type": "order_field", "ctx": {"field": "qty"}},
    ]
    assert _validation_detail(errors) == [
        {"field": "qty", "message": "qty: Input should be greater than 0", "type": "greater_than"},
        {"field": "limit", "message": "limit: too big", "type": "less_than_equal"},
        {"field": "body", "message": "body: JSON decode error", "type": "json_invalid"},
        {"field": "qty", "message": "qty: give one", "type": "order_field"},
    ]


def test_the_key_comes_from_x_api_key_or_a_bearer_token() -> None:
    assert presented_key({"X-API-Key": "abc"}) == "abc"
    assert presented_key({"authorization": "Bearer abc "}) == "abc"
    assert presented_key({"authorization": "bearer abc"}) == "abc"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    assert presented_key({}) is None
    assert key_matches("abc", "abc")
    assert not key_matches("abd", "abc")
    assert not key_matches("ab", "abc")
    assert not key_matches(None, "abc")
    assert not key_matches("", "abc")


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2024, 3, 5, 13, 0, tzinfo=UTC), date(2024, 3, 5)),  # Tuesday 08:00 New York, pre-open
        (datetime(2024, 3, 5, 20, 59, tzinfo=UTC), date(2024, 3, 5)),  # 15:59, still open
        (datetime(2024, 3, 5, 21, 0, tzinfo=UTC), date(2024, 3, 6)),  # 16:00, closed: next session
        (datetime(2024, 3, 6, 2, 0, tzinfo=UTC), date(2024, 3, 6)),  # Tuesday 21:00 New York = Wed UTC
        (datetime(2024, 3, 9, 15, 0, tzinfo=UTC), date(2024, 3, 11)),  # Saturday → Monday
        (datetime(2024, 7, 4, 15, 0, tzinfo=UTC), date(2024, 7, 5)),  # Independence Day
        (datetime(2024, 11, 29, 18, 30, tzinfo=UTC), date(2024, 12, 2)),  # half day, after its 13:00 close
    ],
)
def test_default_trading_date(now: datetime, expected: date) -> None:
    assert default_trading_date(now) == expected


def test_default_trading_date_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        default_trading_date(datetime(2024, 3, 5, 15, 0))


def test_the_app_refuses_to_exist_without_a_key_or_a_broker() -> None:
    inputs = StaticRiskInputs(PortfolioSnapshot(D(1), D(1), D(1)))
    with pytest.raises(ConfigError, match="TRADER_API_KEY"):
        create_gateway_app(Settings(), risk_inputs=inputs)
    with pytest.raises(ConfigError, match="TRADER_API_KEY"):
        create_gateway_app(Settings(trader_api_key="  "), risk_inputs=inputs)
    with pytest.raises(ConfigError, match="needs a broker"):
        create_gateway_app(Settings(trader_api_key="k", dry_run=False), risk_inputs=inputs)
    with pytest.raises(ConfigError, match="risk inputs"):
        create_gateway_app(Settings(trader_api_key="k"))


def test_serve_gateway_refuses_to_start_without_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["serve", "gateway"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "TRADER_API_KEY is not set" in err


def test_serve_gateway_checks_its_port_and_the_schema(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(["serve", "gateway", "--port", "70000"]) == 2
    assert "--port: 70000 is not a TCP port" in capsys.readouterr().err
    monkeypatch.setenv("TRADER_API_KEY", "a-secret-that-must-not-be-printed")
    assert run(["serve", "gateway"]) == 2
    captured = capsys.readouterr()
    assert "the database has no schema; run 'trader db upgrade' first" in captured.err
    assert "a-secret-that-must-not-be-printed" not in captured.out + captured.err


class ListedBars:
    """A bar source over a fixed table: what a market-data API would answer, and how often it was asked."""

    name = "listed"

    def __init__(self, rows: list[tuple[str, date, float]], *, down: bool = False) -> None:
        self.rows = rows
        self.down = down
        self.calls = 0

    def health(self) -> SourceHealth:
        return SourceHealth(self.name, not self.down)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        self.calls += 1
        if self.down:
            raise SourceError("listed: connection refused")
        wanted = [r for r in self.rows if (symbols is None or r[0] in symbols) and start <= r[1] <= end]
        frame = pl.DataFrame(
            {
                "symbol": [r[0] for r in wanted],
                "date": [r[1] for r in wanted],
                "close": [r[2] for r in wanted],
            },
            schema={"symbol": pl.String, "date": pl.Date, "close": pl.Float64},
        )
        return BarBatch(bars=frame)


def test_market_data_closes_take_the_newest_bar_and_remember_it() -> None:
    source = ListedBars(
        [
            ("AAPL", date(2024, 3, 1), 150.1),
            ("AAPL", date(2024, 3, 4), 151.37),
            ("AAPL", date(2024, 3, 5), 160.0),
        ]
    )
    closes = MarketDataCloses(lambda: source)
    assert closes.close("aapl", date(2024, 3, 4)) == D("151.37")  # not the later bar, exact digits
    assert closes.close("AAPL", date(2024, 3, 4)) == D("151.37")
    assert source.calls == 1  # a closed session's bar never changes: asked once
    assert closes.close("AAPL", date(2024, 3, 3)) == D("150.1")  # the weekend: Friday's bar
    assert closes.close("AAPL", date(2024, 2, 1)) is None  # nothing within the look-back
    assert closes.close("MSFT", date(2024, 3, 4)) is None


def test_market_data_outage_is_unavailable_not_a_missing_price() -> None:
    closes = MarketDataCloses(lambda: ListedBars([], down=True))
    with pytest.raises(
        RiskInputsUnavailableError, match="reference price of AAPL: listed: connection refused"
    ):
        closes.close("AAPL", date(2024, 3, 4))


def test_static_inputs_look_prices_up_by_upper_case_symbol() -> None:
    inputs = StaticRiskInputs(PortfolioSnapshot(D(1), D(1), D(1)), {"aapl": D("150")}).risk_inputs()
    assert inputs.price_of(" AAPL ") == D("150")
    assert inputs.price_of("msft") is None
