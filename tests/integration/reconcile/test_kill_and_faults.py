"""Stress: the submitting process killed with SIGKILL in the middle of a batch, and a batch sent
through broker 5xx and accept-then-lose-the-response faults. Afterwards the database and the broker
agree: every intended order exists at the broker once, none twice, none lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import Engine

from tests.integration.broker.conftest import alpaca_broker, set_faults
from tests.integration.reconcile.submitter import intents
from tests.integration.reconcile.support import (
    ACCOUNT,
    DAY,
    SEND,
    D,
    assert_agree,
    orders_here,
    orders_there,
    paper_broker,
    price,
    wait_for,
)
from trader.broker.base import TradeUpdate
from trader.domain.enums import OrderSide, OrderStatus, OrderType
from trader.execution.orders import OrderIntent
from trader.execution.service import ExecutionService
from trader.reconcile import Reconciler
from trader.reconcile.reconciler import STATUS_HEALED, SUBMIT_FAILED

SUBMITTER = Path(__file__).with_name("submitter.py")
BATCH = 6
KILLED_AT = 2  # orders 0 and 1 complete, 2 accepted by the broker but not recorded, 3-5 never sent


def run_submitter(engine: Engine, url: str, key: str, secret: str, hang_at: int) -> subprocess.Popen[str]:
    database_url = engine.url.render_as_string(hide_password=False)
    command = [sys.executable, str(SUBMITTER), database_url, url, key, secret, str(BATCH), str(hang_at)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_submitter_killed_mid_batch_leaves_no_duplicate_and_no_lost_order(
    tmp_path: Path, migrated_engine: Engine
) -> None:
    with paper_broker(tmp_path) as paper:
        broker = alpaca_broker(paper)
        child = run_submitter(migrated_engine, paper.url, paper.key_id, paper.secret_key, KILLED_AT)
        assert child.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not lines or lines[-1] != "HANG"):
            line = child.stdout.readline()
            assert line, f"the submitter ended early: {child.stderr.read() if child.stderr else ''}"
            lines.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
        batch = [intent.client_order_id for intent in intents(BATCH)]
        assert lines == [f"SENT {cid}" for cid in batch[:KILLED_AT]] + ["HANG"]

        here = orders_here(migrated_engine)
        assert [here[cid][0] for cid in batch].count(OrderStatus.PENDING_SUBMIT.value) == BATCH - KILLED_AT
        assert set(orders_there(broker)) == set(batch[: KILLED_AT + 1])  # the broker has one we do not know

        # restart: the boot reconcile links the order that landed; the unsent ones wait for their sender
        report = Reconciler(migrated_engine, broker).run_once()
        linked = [
            c.subject
            for c in report.corrections
            if c.kind == STATUS_HEALED and c.detail["from"] == "pending_submit"
        ]
        assert linked == [batch[KILLED_AT]] and report.count(SUBMIT_FAILED) == 0
        assert report.pending_waiting == BATCH - KILLED_AT - 1
        assert here != orders_here(migrated_engine)
        assert orders_here(migrated_engine)[batch[KILLED_AT]][2] == orders_there(broker)[batch[KILLED_AT]][2]
        assert_agree(migrated_engine, broker)

        again = run_submitter(migrated_engine, paper.url, paper.key_id, paper.secret_key, -1)
        out, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        sent_now = [line.split()[1] for line in out.splitlines() if line.startswith("SENT")]
        assert sent_now == batch[KILLED_AT + 1 :]  # only the never-sent ones; the linked one is not re-sent

        Reconciler(migrated_engine, broker).run_once()  # the fills (no trade-update consumer here)
        there = orders_there(broker)
        assert sorted(there) == sorted(batch)  # every intended order exactly once, none lost
        assert_agree(migrated_engine, broker)
        assert Reconciler(migrated_engine, broker).run_once().clean


def test_a_batch_through_5xx_and_lost_responses_ends_with_exactly_the_intended_orders(
    tmp_path: Path, migrated_engine: Engine
) -> None:
    with paper_broker(tmp_path) as paper:
        broker = alpaca_broker(paper)
        service = ExecutionService(migrated_engine, broker, SEND)

        def consume(update: TradeUpdate) -> None:
            service.on_trade_update(update)

        stream = broker.trade_updates(consume, resync_interval=0.3)
        assert stream.start(timeout=10)
        market = [OrderIntent("flt", DAY, f"SYN{i:03d}", OrderSide.BUY, qty=D(3 + i)) for i in range(1, 5)]
        resting = [  # limit buys far below the market: they stay open
            OrderIntent("flt", DAY, f"SYN{i:03d}", OrderSide.BUY, qty=D(2), order_type=OrderType.LIMIT,
                        limit_price=D("0.50"))
            for i in range(5, 9)
        ]  # fmt: skip
        try:
            set_faults(paper, error_rate=0.3, lose_response_rate=0.4, seed=5)
            outcomes = service.submit_batch(market + resting, ACCOUNT, price)
            injected = set_faults(paper, error_rate=0.0, lose_response_rate=0.0)["injected"]

            def settled() -> bool:
                here = orders_here(migrated_engine)
                return all(here[i.client_order_id][0] == "filled" for i in market)

            wait_for(settled, what="the market orders' fills from the stream")
        finally:
            stream.stop()
        assert injected.get("lost_response", 0) + injected.get("server_error", 0) >= 3, injected
        assert all(o.sent and o.status is not OrderStatus.PENDING_SUBMIT for o in outcomes)
        there = orders_there(broker)  # fails on an id seen twice
        assert sorted(there) == sorted(i.client_order_id for i in market + resting)
        assert {there[i.client_order_id][0] for i in resting} == {"new"}
        assert_agree(migrated_engine, broker)
        report = Reconciler(migrated_engine, broker).run_once()
        assert report.clean, report.summary()
