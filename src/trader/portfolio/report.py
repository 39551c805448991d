"""The daily report: blotter, P&L by symbol and by strategy, fees, and the equity curve.

:func:`build_daily_report` reads one trading date from the database (orders and executions of the
day, positions, closed tax lots, the ``pnl`` history); :func:`write_daily_report` writes it to
``ARTIFACTS_DIR/reports/<YYYY-MM-DD>/``:

- ``blotter.csv``: every order of the day with its status, fills and reject reason, then one row per
  execution;
- ``pnl.md`` and ``pnl.html``: summary, by symbol, by strategy, with ``equity.png`` (the account
  equity curve from the ``pnl`` table up to the date) embedded in the HTML;
- ``pnl.json``: the same numbers for programs.

Every file is written to a temporary name and renamed, so a report is never half written.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trader.data.store import write_atomic
from trader.portfolio.ledger import ACCOUNT, PositionState, books_at_close, market_day_bounds, traded_after
from trader.store.models import Execution, Order, Pnl, Position

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class SymbolPnl:
    strategy_id: str
    symbol: str
    qty: Decimal
    avg_price: Decimal
    last_price: Decimal | None
    market_value: Decimal | None
    unrealized: Decimal | None
    realized_today: Decimal
    fees_today: Decimal


@dataclass(frozen=True)
class StrategyPnl:
    strategy_id: str
    realized_today: Decimal
    unrealized: Decimal
    fees_today: Decimal
    gross_exposure: Decimal
    orders: int
    fills: int


@dataclass(frozen=True)
class EquityPoint:
    trading_date: date
    equity: Decimal


@dataclass(frozen=True)
class DailyReport:
    """Everything the report shows for one trading date."""

    trading_date: date
    generated_at: datetime
    orders: list[dict[str, Any]]
    executions: list[dict[str, Any]]
    symbols: list[SymbolPnl]
    strategies: list[StrategyPnl]
    equity_curve: list[EquityPoint]
    missing_prices: list[str] = field(default_factory=list)

    @property
    def realized_today(self) -> Decimal:
        return sum((s.realized_today for s in self.strategies), Decimal(0))

    @property
    def unrealized(self) -> Decimal:
        return sum((s.unrealized for s in self.strategies), Decimal(0))

    @property
    def fees_today(self) -> Decimal:
        return sum((s.fees_today for s in self.strategies), Decimal(0))

    @property
    def equity(self) -> Decimal | None:
        last = self.equity_curve[-1] if self.equity_curve else None
        return last.equity if last and last.trading_date == self.trading_date else None


def _order_row(order: Order) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "strategy_id": order.strategy_id,
        "symbol": order.symbol,
        "side": order.side,
        "qty": order.qty,
        "notional": order.notional,
        "order_type": order.order_type,
        "status": order.status,
        "filled_qty": order.filled_qty,
        "filled_avg_price": order.filled_avg_price,
        "broker_order_id": order.broker_order_id,
        "submitted_at": order.submitted_at,
        "reject_reason": order.reject_reason,
    }


def _execution_row(execution: Execution) -> dict[str, Any]:
    return {
        "execution_id": execution.execution_id,
        "client_order_id": execution.client_order_id,
        "strategy_id": execution.strategy_id,
        "symbol": execution.symbol,
        "side": execution.side,
        "qty": execution.qty,
        "price": execution.price,
        "fee": execution.fee,
        "executed_at": execution.executed_at,
    }


def build_daily_report(
    session: Session, trading_date: date, prices: Mapping[str, Decimal], *, now: datetime | None = None
) -> DailyReport:
    """Read ``trading_date`` from the database; ``prices`` are the marks (e.g. the day's closes).

    A position whose symbol has no price is listed with unknown value and named in
    ``missing_prices`` rather than valued at a guess.
    """
    orders = session.scalars(
        select(Order)
        .where(Order.trading_date == trading_date)
        .order_by(Order.created_at, Order.client_order_id)
    ).all()
    start, end = market_day_bounds(trading_date)
    executions = session.scalars(
        select(Execution)
        .where(Execution.executed_at >= start, Execution.executed_at < end)
        .order_by(Execution.executed_at, Execution.id)
    ).all()
    books, realized = books_at_close(session, ACCOUNT, trading_date)
    fees: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for execution in executions:
        fees[(execution.strategy_id, execution.symbol)] += execution.fee
    positions: Mapping[tuple[str, str], PositionState | Position]
    if traded_after(session, trading_date):
        # A past day: the positions table holds today's books, not that day's.
        positions = books
    else:
        positions = {(p.strategy_id, p.symbol): p for p in session.scalars(select(Position)).all()}
    keys = sorted(set(positions) | set(realized) | set(fees))
    symbols, missing = [], []
    for strategy_id, symbol in keys:
        position = positions.get((strategy_id, symbol))
        qty = position.qty if position else Decimal(0)
        if qty == 0 and not realized.get((strategy_id, symbol)) and not fees.get((strategy_id, symbol)):
            continue  # closed before today and not traded today
        avg = position.avg_price if position else Decimal(0)
        price = prices.get(symbol)
        if price is None and qty != 0:
            missing.append(symbol)
        value = qty * price if price is not None else None
        unrealized = (
            (price - avg) * qty if price is not None and qty != 0 else (Decimal(0) if qty == 0 else None)
        )
        symbols.append(
            SymbolPnl(
                strategy_id, symbol, qty, avg, price, value, unrealized,
                realized.get((strategy_id, symbol), Decimal(0)), fees.get((strategy_id, symbol), Decimal(0)),
            )
        )  # fmt: skip
    strategies = _by_strategy(symbols, orders, executions)
    curve = [
        EquityPoint(row.trading_date, row.equity)
        for row in session.scalars(
            select(Pnl)
            .where(Pnl.strategy_id == ACCOUNT, Pnl.trading_date <= trading_date, Pnl.equity.is_not(None))
            .order_by(Pnl.trading_date)
        ).all()
        if row.equity is not None
    ]
    return DailyReport(
        trading_date=trading_date,
        generated_at=now or datetime.now(UTC),
        orders=[_order_row(o) for o in orders],
        executions=[_execution_row(e) for e in executions],
        symbols=symbols,
        strategies=strategies,
        equity_curve=curve,
        missing_prices=sorted(set(missing)),
    )


def _by_strategy(
    symbols: list[SymbolPnl], orders: list[Order] | Any, executions: list[Execution] | Any
) -> list[StrategyPnl]:
    names = sorted({s.strategy_id for s in symbols} | {o.strategy_id for o in orders})
    result = []
    for name in names:
        rows = [s for s in symbols if s.strategy_id == name]
        result.append(
            StrategyPnl(
                strategy_id=name,
                realized_today=sum((s.realized_today for s in rows), Decimal(0)),
                unrealized=sum((s.unrealized or Decimal(0) for s in rows), Decimal(0)),
                fees_today=sum((s.fees_today for s in rows), Decimal(0)),
                gross_exposure=sum((abs(s.market_value or Decimal(0)) for s in rows), Decimal(0)),
                orders=sum(1 for o in orders if o.strategy_id == name),
                fills=sum(1 for e in executions if e.strategy_id == name),
            )
        )
    return result


# ------------------------------------------------------------------------------------------- writing


def _money(value: Decimal | None) -> str:
    return "n/a" if value is None else f"{value.quantize(_CENT):,}"


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def _blotter_csv(report: DailyReport) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["record", *_ORDER_COLUMNS])
    for order in report.orders:
        writer.writerow(["order", *(_text(order[c]) for c in _ORDER_COLUMNS)])
    writer.writerow(["record", *_EXECUTION_COLUMNS])
    for execution in report.executions:
        writer.writerow(["execution", *(_text(execution[c]) for c in _EXECUTION_COLUMNS)])
    return buffer.getvalue().encode()


_ORDER_COLUMNS = (
    "client_order_id", "strategy_id", "symbol", "side", "qty", "notional", "order_type", "status",
    "filled_qty", "filled_avg_price", "broker_order_id", "submitted_at", "reject_reason",
)  # fmt: skip
_EXECUTION_COLUMNS = (
    "execution_id", "client_order_id", "strategy_id", "symbol", "side", "qty", "price", "fee", "executed_at",
)  # fmt: skip


def _equity_png(report: DailyReport) -> bytes | None:
    if len(report.equity_curve) < 1:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        dates = [p.trading_date for p in report.equity_curve]
        values = [float(p.equity) for p in report.equity_curve]
        marker = "o" if len(dates) < 30 else None
        axes.plot(dates, values, marker=marker, color="#1f77b4")  # type: ignore[arg-type]  # dates plot fine
        axes.set_title(f"Account equity up to {report.trading_date}")
        axes.set_ylabel("USD")
        axes.grid(alpha=0.3)
        figure.autofmt_xdate()
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)


def _summary(report: DailyReport) -> dict[str, str]:
    filled = sum(1 for o in report.orders if o["status"] == "filled")
    rejected = sum(1 for o in report.orders if o["status"] in {"risk_rejected", "rejected", "submit_failed"})
    return {
        "equity": _money(report.equity),
        "realized P&L (today)": _money(report.realized_today),
        "unrealized P&L": _money(report.unrealized),
        "fees (today)": _money(report.fees_today),
        "orders": f"{len(report.orders)} ({filled} filled, {rejected} rejected)",
        "fills": str(len(report.executions)),
    }


_STRATEGY_HEADERS = ["strategy", "realized", "unrealized", "fees", "gross exposure", "orders", "fills"]
_SYMBOL_HEADERS = [
    "strategy",
    "symbol",
    "qty",
    "avg price",
    "last",
    "value",
    "unrealized",
    "realized",
    "fees",
]
_CSS = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
)


def _strategy_cells(s: StrategyPnl) -> list[str]:
    money = [_money(v) for v in (s.realized_today, s.unrealized, s.fees_today, s.gross_exposure)]
    return [s.strategy_id, *money, str(s.orders), str(s.fills)]


def _symbol_cells(p: SymbolPnl) -> list[str]:
    values = (p.avg_price, p.last_price, p.market_value, p.unrealized, p.realized_today, p.fees_today)
    return [p.strategy_id, p.symbol, str(p.qty), *(_money(v) for v in values)]


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---" if i < 2 else "---:" for i in range(len(headers))]
    return [f"| {' | '.join(headers)} |", f"|{'|'.join(align)}|", *(f"| {' | '.join(r)} |" for r in rows), ""]


def _html_table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _missing_note(report: DailyReport) -> str:
    if not report.missing_prices:
        return ""
    return f"No price for {', '.join(report.missing_prices)}: their value is unknown."


def _markdown(report: DailyReport, has_plot: bool) -> str:
    lines = [f"# P&L report {report.trading_date}", "", f"Generated {report.generated_at.isoformat()}.", ""]
    lines += _markdown_table(["", ""], [[k, v] for k, v in _summary(report).items()])
    if report.missing_prices:
        lines += [f"**{_missing_note(report)}**", ""]
    if has_plot:
        lines += ["![equity curve](equity.png)", ""]
    lines += [
        "## By strategy",
        "",
        *_markdown_table(_STRATEGY_HEADERS, [_strategy_cells(s) for s in report.strategies]),
    ]
    lines += [
        "## By symbol",
        "",
        *_markdown_table(_SYMBOL_HEADERS, [_symbol_cells(p) for p in report.symbols]),
    ]
    return "\n".join(lines)


def _html(report: DailyReport, png: bytes | None) -> str:
    plot = (
        f'<img alt="equity curve" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else ""
    )
    missing = f"<p><strong>{escape(_missing_note(report))}</strong></p>" if report.missing_prices else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>P&amp;L {report.trading_date}</title>"
        f"<style>{_CSS}</style></head><body><h1>P&amp;L report {report.trading_date}</h1>"
        + _html_table(["", ""], [[k, v] for k, v in _summary(report).items()])
        + missing
        + plot
        + "<h2>By strategy</h2>"
        + _html_table(_STRATEGY_HEADERS, [_strategy_cells(s) for s in report.strategies])
        + "<h2>By symbol</h2>"
        + _html_table(_SYMBOL_HEADERS, [_symbol_cells(p) for p in report.symbols])
        + "</body></html>"
    )


def _json(report: DailyReport) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, date | datetime):
            return value.isoformat()
        raise TypeError(type(value).__name__)

    data = {
        "trading_date": report.trading_date,
        "realized_today": report.realized_today,
        "unrealized": report.unrealized,
        "fees_today": report.fees_today,
        "equity": report.equity,
        "strategies": [asdict(s) for s in report.strategies],
        "symbols": [asdict(s) for s in report.symbols],
        "orders": len(report.orders),
        "fills": len(report.executions),
        "missing_prices": report.missing_prices,
    }
    return json.dumps(data, default=default, indent=2).encode()


def write_daily_report(report: DailyReport, reports_dir: Path) -> Path:
    """Write the report's files into ``reports_dir/<YYYY-MM-DD>/`` and return that folder."""
    folder = reports_dir / report.trading_date.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    png = _equity_png(report)
    write_atomic(folder / "blotter.csv", _blotter_csv(report))
    if png is not None:
        write_atomic(folder / "equity.png", png)
    write_atomic(folder / "pnl.md", _markdown(report, png is not None).encode())
    write_atomic(folder / "pnl.html", _html(report, png).encode())
    write_atomic(folder / "pnl.json", _json(report))
    return folder
