"""The daily report on a hand-made day: every number is worked out by hand below."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from trader.portfolio.report import build_daily_report, write_daily_report
from trader.store.models import Execution, Order, Pnl, Position

DAY = date(2024, 3, 5)
AT = datetime(2024, 3, 5, 14, 31, tzinfo=UTC)


def _seed(session: Session) -> None:
    """Bought 10 AAA at 100 on Mar 4; today sold 4 at 110 (fee 1) and bought 5 BBB at 50 (fee 0.5);
    a third order was refused by risk."""
    session.add_all(
        [
            Order(
                client_order_id="o-aaa-buy",
                strategy_id="alpha",
                trading_date=date(2024, 3, 4),
                symbol="AAA",
                side="buy",
                qty=Decimal(10),
                status="filled",
                filled_qty=Decimal(10),
            ),
            Order(
                client_order_id="o-aaa-sell",
                strategy_id="alpha",
                trading_date=DAY,
                symbol="AAA",
                side="sell",
                qty=Decimal(4),
                status="filled",
                filled_qty=Decimal(4),
                filled_avg_price=Decimal(110),
            ),
            Order(
                client_order_id="o-bbb-buy",
                strategy_id="alpha",
                trading_date=DAY,
                symbol="BBB",
                side="buy",
                qty=Decimal(5),
                status="filled",
                filled_qty=Decimal(5),
                filled_avg_price=Decimal(50),
            ),
            Order(
                client_order_id="o-ccc-buy",
                strategy_id="alpha",
                trading_date=DAY,
                symbol="CCC",
                side="buy",
                qty=Decimal(1000),
                status="risk_rejected",
                reject_reason="max_order_notional",
            ),
        ]
    )
    session.flush()
    session.add_all(
        [
            Execution(
                execution_id="x1",
                client_order_id="o-aaa-buy",
                strategy_id="alpha",
                symbol="AAA",
                side="buy",
                qty=Decimal(10),
                price=Decimal(100),
                executed_at=datetime(2024, 3, 4, 15, tzinfo=UTC),
            ),
            Execution(
                execution_id="x2",
                client_order_id="o-aaa-sell",
                strategy_id="alpha",
                symbol="AAA",
                side="sell",
                qty=Decimal(4),
                price=Decimal(110),
                fee=Decimal(1),
                executed_at=AT,
            ),
            Execution(
                execution_id="x3",
                client_order_id="o-bbb-buy",
                strategy_id="alpha",
                symbol="BBB",
                side="buy",
                qty=Decimal(5),
                price=Decimal(50),
                fee=Decimal("0.5"),
                executed_at=AT,
            ),
        ]
    )
    session.flush()
    session.add_all(
        [
            Position(
                strategy_id="alpha",
                symbol="AAA",
                qty=Decimal(6),
                avg_price=Decimal(100),
                realized_pnl=Decimal(39),
            ),
            Position(strategy_id="alpha", symbol="BBB", qty=Decimal(5), avg_price=Decimal(50)),
            Pnl(
                trading_date=date(2024, 3, 4),
                strategy_id="*",
                realized=Decimal(0),
                unrealized=Decimal(0),
                equity=Decimal(100000),
            ),
            Pnl(
                trading_date=DAY,
                strategy_id="*",
                realized=Decimal(39),
                unrealized=Decimal(72),
                equity=Decimal("100109.5"),
            ),
        ]
    )


def test_report_numbers_and_files(migrated_engine: Engine, tmp_path: Path) -> None:
    with Session(migrated_engine) as session, session.begin():
        _seed(session)
    with Session(migrated_engine) as session:
        report = build_daily_report(session, DAY, {"AAA": Decimal(112), "BBB": Decimal(48)})
    assert [o["client_order_id"] for o in report.orders] == ["o-aaa-sell", "o-bbb-buy", "o-ccc-buy"]
    assert [e["execution_id"] for e in report.executions] == ["x2", "x3"]  # yesterday's fill is not today's
    by_symbol = {p.symbol: p for p in report.symbols}
    assert by_symbol["AAA"].unrealized == Decimal(72)  # (112 - 100) * 6
    assert by_symbol["BBB"].unrealized == Decimal(-10)  # (48 - 50) * 5
    assert by_symbol["AAA"].realized_today == Decimal(39)  # (110 - 100) * 4 - fee 1, average cost
    assert by_symbol["BBB"].realized_today == Decimal("-0.5")  # a fee is realized when paid
    assert report.realized_today == Decimal("38.5")
    assert report.unrealized == Decimal(62)
    assert report.fees_today == Decimal("1.5")
    (alpha,) = report.strategies
    assert alpha.gross_exposure == Decimal(672 + 240)
    assert (alpha.orders, alpha.fills) == (3, 2)
    assert report.equity == Decimal("100109.5")
    assert [p.trading_date for p in report.equity_curve] == [date(2024, 3, 4), DAY]

    folder = write_daily_report(report, tmp_path / "reports")
    assert folder == tmp_path / "reports" / "2024-03-05"
    rows = list(csv.reader((folder / "blotter.csv").open()))
    assert rows[0][:3] == ["record", "client_order_id", "strategy_id"]
    statuses = {r[1]: r[8] for r in rows if r[0] == "order"}
    assert statuses == {"o-aaa-sell": "filled", "o-bbb-buy": "filled", "o-ccc-buy": "risk_rejected"}
    assert sum(1 for r in rows if r[0] == "execution") == 2
    markdown = (folder / "pnl.md").read_text()
    assert "| realized P&L (today) | 38.50 |" in markdown
    assert "| orders | 3 (2 filled, 1 rejected) |" in markdown
    assert "![equity curve](equity.png)" in markdown
    assert (folder / "equity.png").read_bytes().startswith(b"\x89PNG")
    assert 'src="data:image/png;base64,' in (folder / "pnl.html").read_text()
    data = json.loads((folder / "pnl.json").read_text())
    assert (data["unrealized"], data["fees_today"], data["orders"]) == ("62", "1.5", 3)
    assert not list(folder.glob(".*.tmp"))


def test_a_position_without_a_price_is_named_not_guessed(migrated_engine: Engine) -> None:
    with Session(migrated_engine) as session, session.begin():
        _seed(session)
    with Session(migrated_engine) as session:
        report = build_daily_report(session, DAY, {"AAA": Decimal(112)})
    assert report.missing_prices == ["BBB"]
    assert {p.symbol: p.unrealized for p in report.symbols}["BBB"] is None


def test_a_past_days_report_values_that_days_positions_not_todays(migrated_engine: Engine) -> None:
    from tests.integration.portfolio.ledger_support import BUY, SELL, apply, fill, new_order
    from tests.integration.portfolio.ledger_support import at as at_time

    d1, d2 = date(2024, 3, 5), date(2024, 3, 6)
    first = new_order(migrated_engine, "alpha", BUY, "10", day=d1)
    apply(migrated_engine, fill(first, "e1", BUY, "10", "100", at_time(15, day=d1)))
    with Session(migrated_engine) as session:
        on_the_day = build_daily_report(session, d1, {"AAPL": Decimal(110)})
    # Day 2: AAPL sold, MSFT bought; then day 1's report is written again (trader report pnl --date).
    sell = new_order(migrated_engine, "alpha", SELL, "10", day=d2)
    apply(migrated_engine, fill(sell, "e2", SELL, "10", "120", at_time(15, day=d2)))
    msft = new_order(migrated_engine, "alpha", BUY, "5", day=d2, symbol="MSFT")
    apply(migrated_engine, fill(msft, "e3", BUY, "5", "400", at_time(15, day=d2), symbol="MSFT"))
    with Session(migrated_engine) as session:
        later = build_daily_report(session, d1, {"AAPL": Decimal(110), "MSFT": Decimal(390)})

    def rows(report: object) -> list[tuple[str, Decimal, Decimal | None]]:
        return [(s.symbol, s.qty, s.unrealized) for s in report.symbols]  # type: ignore[attr-defined]

    assert rows(on_the_day) == [("AAPL", Decimal(10), Decimal(100))]
    assert rows(later) == rows(on_the_day)  # not MSFT's 5 and AAPL flat
    assert later.unrealized == on_the_day.unrealized == Decimal(100)
