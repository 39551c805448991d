"""The reconciler's pure rules: its configuration, the drift thresholds, the position rebuild."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from trader.domain.enums import OrderSide
from trader.portfolio.ledger import PositionState
from trader.reconcile.cli import _line
from trader.reconcile.drift import (
    ExecutionFact,
    ReconcileConfig,
    ReconcileConfigError,
    drift_alert,
    exceeds,
    rebuild_position,
    same_position,
)
from trader.reconcile.reconciler import Correction, ReconcileReport

D = Decimal
T0 = datetime(2024, 3, 5, 15, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"drift_shares": D(-1)}, "drift_shares"),
        ({"drift_notional": 5.0}, "drift_notional"),
        ({"pending_grace": timedelta(seconds=-1)}, "pending_grace"),
        ({"lookback": timedelta(0)}, "lookback"),
        ({"adopt_strategy": " "}, "adopt_strategy"),
    ],
)
def test_a_bad_setting_is_refused_naming_its_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ReconcileConfigError, match=field):
        ReconcileConfig(**changes)  # type: ignore[arg-type]


def test_by_default_every_gap_is_a_drift_and_no_gap_never_is() -> None:
    config = ReconcileConfig()
    assert exceeds(D("0.001"), None, config)
    assert not exceeds(D(0), D(100), config)


def test_a_gap_drifts_beyond_either_threshold() -> None:
    config = ReconcileConfig(drift_shares=D(5), drift_notional=D(1000))
    assert not exceeds(D(5), D(100), config)  # 5 shares, $500: within both
    assert exceeds(D(-6), D(1), config)  # 6 shares > 5
    assert exceeds(D(4), D(300), config)  # $1,200 > $1,000
    assert not exceeds(D(4), None, config)  # no price: only the share rule


def test_the_alert_says_whether_healing_resolved_it() -> None:
    config = ReconcileConfig(drift_shares=D(1), drift_notional=D(100))
    edited = drift_alert("AAPL", D(10), D(25), D(10), D(50), config)
    assert edited is not None and edited.resolved and edited.gap_shares == D(-15)
    assert edited.gap_notional == D(750)
    unseen_trade = drift_alert("AAPL", D(10), D(4), D(4), D(50), config)
    assert unseen_trade is not None and not unseen_trade.resolved and unseen_trade.gap_shares == D(6)
    assert drift_alert("AAPL", D(10), D(10), D(10), D(50), config) is None
    assert drift_alert("AAPL", D(10), D(11), D(10), D(50), config) is None  # 1 share, $50: within both


def test_the_rebuild_is_the_average_cost_ledger_in_execution_time_order() -> None:
    facts = [
        ExecutionFact(T0, "a", OrderSide.BUY, D(10), D(100)),
        ExecutionFact(T0 + timedelta(minutes=1), "b", OrderSide.BUY, D(10), D(110)),
        ExecutionFact(T0 + timedelta(minutes=2), "c", OrderSide.SELL, D(5), D(120), fee=D(1)),
    ]
    expected = PositionState(D(15), D(105), D(5) * D(15) - D(1))
    shuffled = facts[:]
    random.Random(3).shuffle(shuffled)
    assert rebuild_position(facts) == expected == rebuild_position(shuffled)
    assert rebuild_position([]) == PositionState()


def test_positions_are_the_same_to_the_share_and_to_a_billionth_of_a_dollar() -> None:
    base = PositionState(D(15), D(105), D(74))
    assert same_position(base, PositionState(D(15), D("105.0000000001"), D(74)))
    assert not same_position(base, PositionState(D("15.001"), D(105), D(74)))
    assert not same_position(base, PositionState(D(15), D("105.01"), D(74)))


def test_the_report_counts_corrections_and_reads_as_one_line() -> None:
    report = ReconcileReport(started_at=T0, finished_at=T0 + timedelta(seconds=2), orders_checked=3)
    assert report.clean and "clean (3 orders, 0 positions checked, 2.0 s)" in _line(report.summary())
    report.corrections += [
        Correction("reconcile.fill_adopted", "x", {}),
        Correction("reconcile.fill_adopted", "y", {}),
        Correction("reconcile.submit_failed", "z", {}),
    ]
    report.drift.append(drift_alert("SYN1", D(10), D(25), D(10), D(5), ReconcileConfig()))  # type: ignore[arg-type]
    assert not report.clean
    assert report.counts() == {"reconcile.fill_adopted": 2, "reconcile.submit_failed": 1}
    line = _line(report.summary())
    assert "fill_adopted 2, submit_failed 1" in line and "SYN1 broker 10 vs ours 25" in line
    assert "NOT resolved" not in line
