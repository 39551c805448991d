"""FailoverSource: health-ordered failover, per-symbol fill from the next source, the source column."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from trader.data.bars import BAR_SCHEMA, BarBatch
from trader.data.sources import BarSource, SourceError, SourceHealth
from trader.data.sources.csv_source import CsvSource
from trader.data.sources.failover import FailoverSource

START = date(2024, 1, 1)
END = date(2024, 12, 31)
HEADER = "symbol,date,open,high,low,close,volume\n"


class RefusingSource:
    """Healthy by its own account, but every fetch fails (a server that accepts pings, not queries)."""

    def __init__(self, name: str = "refusing") -> None:
        self._name = name
        self.calls = 0

    @property
    def name(self) -> str:
        return self._name

    def health(self) -> SourceHealth:
        return SourceHealth(self.name, True)

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        self.calls += 1
        raise SourceError(f"{self.name}: HTTP 500 from the server")


class BrokenHealthSource(RefusingSource):
    """A source whose health check itself crashes."""

    def health(self) -> SourceHealth:
        raise RuntimeError("health endpoint exploded")


class LabellingSource(CsvSource):
    """A CSV source that labels its own rows (as a nested failover would)."""

    @property
    def name(self) -> str:
        return "labelled"

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        batch = super().fetch(symbols, start, end)
        return BarBatch(bars=batch.bars.with_columns(source=pl.lit("upstream-feed")), actions=batch.actions)


class NamedCsv(CsvSource):
    """A CSV source under another name, so two of them can be told apart in the source column."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(path)
        self._name = name

    @property
    def name(self) -> str:
        return self._name


def csv_file(path: Path, *symbols: str) -> Path:
    path.write_text(
        HEADER + "".join(f"{s},2024-01-02,1,2,1,1.5,100\n{s},2024-01-03,1,2,1,1.6,100\n" for s in symbols)
    )
    return path


def test_is_a_bar_source(tmp_path: Path) -> None:
    failover = FailoverSource([CsvSource(tmp_path)])
    assert isinstance(failover, BarSource)
    assert failover.name == "failover"


def test_needs_a_source() -> None:
    with pytest.raises(ValueError, match="at least one source"):
        FailoverSource([])


def test_unhealthy_primary_is_skipped_and_the_fallback_supplies_every_row(tmp_path: Path) -> None:
    fallback = csv_file(tmp_path / "bars.csv", "AAPL", "MSFT")
    failover = FailoverSource([NamedCsv("primary", tmp_path / "missing"), CsvSource(fallback)])
    batch = failover.fetch(["AAPL", "MSFT"], START, END)
    assert batch.bars.height == 4
    assert batch.bars["source"].unique().to_list() == ["csv"]
    assert batch.bars.columns == [*BAR_SCHEMA, "source"]
    report = failover.last_report
    assert [(a.source, a.health.ok) for a in report] == [("primary", False), ("csv", True)]
    assert report[0].outcome.startswith("skipped:") and "does not exist" in report[0].outcome
    assert report[1].outcome == "supplied 4 rows for 2 symbols"


def test_a_healthy_primary_is_used_and_the_fallback_not_consulted(tmp_path: Path) -> None:
    primary = NamedCsv("primary", csv_file(tmp_path / "a.csv", "AAPL"))
    refusing = RefusingSource()
    failover = FailoverSource([primary, refusing])
    batch = failover.fetch(["AAPL"], START, END)
    assert batch.bars["source"].unique().to_list() == ["primary"]
    assert refusing.calls == 0
    assert [a.source for a in failover.last_report] == ["primary"]


def test_a_source_that_raises_source_error_falls_through_to_the_next(tmp_path: Path) -> None:
    fallback = CsvSource(csv_file(tmp_path / "bars.csv", "AAPL"))
    refusing = RefusingSource("alpaca")
    failover = FailoverSource([refusing, fallback])
    batch = failover.fetch(["aapl"], START, END)
    assert refusing.calls == 1
    assert batch.bars["source"].to_list() == ["csv", "csv"]
    assert failover.last_report[0].outcome == "failed: alpaca: HTTP 500 from the server"
    assert failover.last_report[0].health.ok


def test_a_crashing_health_check_counts_as_unhealthy(tmp_path: Path) -> None:
    broken = BrokenHealthSource("broken")
    failover = FailoverSource([broken, CsvSource(csv_file(tmp_path / "bars.csv", "AAPL"))])
    batch = failover.fetch(None, START, END)
    assert batch.bars.height == 2
    assert broken.calls == 0
    assert "RuntimeError: health endpoint exploded" in failover.last_report[0].outcome


def test_a_source_with_no_bars_for_the_request_falls_through(tmp_path: Path) -> None:
    primary = NamedCsv("primary", csv_file(tmp_path / "a.csv", "MSFT"))
    fallback = CsvSource(csv_file(tmp_path / "b.csv", "AAPL"))
    failover = FailoverSource([primary, fallback])
    batch = failover.fetch(["AAPL"], START, END)
    assert batch.bars["source"].unique().to_list() == ["csv"]
    assert failover.last_report[0].outcome == "failed: no bars for the requested symbols"


def test_symbols_the_primary_lacks_come_from_the_next_source_and_each_row_says_whence(tmp_path: Path) -> None:
    primary = NamedCsv("primary", csv_file(tmp_path / "a.csv", "AAPL"))
    fallback = NamedCsv("fallback", csv_file(tmp_path / "b.csv", "AAPL", "MSFT", "IBM"))
    failover = FailoverSource([primary, fallback])
    batch = failover.fetch(["AAPL", "MSFT"], START, END)
    assert sorted(batch.bars.select("symbol", "source").unique().rows()) == [
        ("AAPL", "primary"),
        ("MSFT", "fallback"),
    ]
    assert batch.bars.height == 4  # AAPL only from the primary, not twice
    assert (
        failover.last_report[0].outcome
        == "supplied 2 rows for 1 symbols; missing MSFT, asking the next source"
    )
    assert failover.last_report[1].outcome == "supplied 2 rows for 1 symbols"


def test_partial_delivery_is_returned_when_no_later_source_has_the_rest(tmp_path: Path) -> None:
    primary = NamedCsv("primary", csv_file(tmp_path / "a.csv", "AAPL"))
    failover = FailoverSource([primary, RefusingSource()])
    batch = failover.fetch(["AAPL", "MSFT"], START, END)
    assert batch.bars["symbol"].unique().to_list() == ["AAPL"]
    assert "missing MSFT" in failover.last_report[0].outcome
    assert failover.last_report[1].outcome.startswith("failed:")


def test_a_source_column_set_by_the_inner_source_is_kept(tmp_path: Path) -> None:
    labelled = LabellingSource(csv_file(tmp_path / "a.csv", "AAPL"))
    batch = FailoverSource([labelled]).fetch(None, START, END)
    assert batch.bars["source"].unique().to_list() == ["upstream-feed"]


def test_actions_carry_the_supplying_source(tmp_path: Path) -> None:
    actions = tmp_path / "actions.csv"
    actions.write_text("symbol,ex_date,split_ratio\nAAPL,2024-06-10,4\n")
    source = CsvSource(csv_file(tmp_path / "a.csv", "AAPL"), actions)
    batch = FailoverSource([RefusingSource(), source]).fetch(["AAPL"], START, END)
    assert batch.actions.select("symbol", "source").rows() == [("AAPL", "csv")]


def test_when_every_source_fails_the_error_lists_each_reason(tmp_path: Path) -> None:
    failover = FailoverSource(
        [NamedCsv("primary", tmp_path / "missing.csv"), RefusingSource("alpaca"), BrokenHealthSource("flaky")]
    )
    with pytest.raises(SourceError) as error:
        failover.fetch(["AAPL"], START, END)
    message = str(error.value)
    assert message.startswith("every source failed: ")
    assert "primary: skipped: " in message and "does not exist" in message
    assert "alpaca: failed: alpaca: HTTP 500 from the server" in message
    assert "flaky: skipped: health check raised RuntimeError" in message
    assert len(failover.last_report) == 3


def test_health_is_ok_when_any_source_is(tmp_path: Path) -> None:
    good = CsvSource(csv_file(tmp_path / "a.csv", "AAPL"))
    health = FailoverSource([NamedCsv("primary", tmp_path / "missing"), good]).health()
    assert health.ok and health.source == "failover"
    assert "primary: " in health.detail and "csv: ok" in health.detail
    assert not FailoverSource([NamedCsv("primary", tmp_path / "missing")]).health().ok
