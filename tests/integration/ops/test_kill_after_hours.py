"""The kill switch run again before the open (Alpaca's after-hours behaviour: see ``after_hours``):
an earlier kill's closing orders keep working, only what they do not cover is closed, and at the open
the account is flat."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from tests.integration.ops.after_hours import AfterHoursBroker
from trader.broker.base import Broker
from trader.domain.enums import OrderSide
from trader.ops.breakers import CircuitBreaker, DatabaseBreakerStore
from trader.ops.kill import KillReport, kill_switch
from trader.store.models import Position

D = Decimal


def _books(engine: Engine, **held: int) -> None:
    with Session(engine) as session, session.begin():
        for key, qty in held.items():
            strategy, symbol = key.split("_")
            session.merge(Position(strategy_id=strategy, symbol=symbol, qty=D(qty), avg_price=D(10)))


def _kill(broker: AfterHoursBroker, engine: Engine) -> KillReport:
    breaker = CircuitBreaker(DatabaseBreakerStore(engine), engine)
    return kill_switch(cast(Broker, broker), breaker, engine, reason="evening", actor="carol")


def test_a_second_kill_keeps_the_first_ones_orders_and_the_account_is_flat_at_the_open(
    migrated_engine: Engine,
) -> None:
    broker = AfterHoursBroker({"XXX": D(10)})
    _books(migrated_engine, A_XXX=10)
    first = _kill(broker, migrated_engine)
    second = _kill(broker, migrated_engine)
    assert first.failures == second.failures == ()
    assert second.working == first.booked and second.booked == () and broker.log == ["submit XXX sell 10"]
    broker.open_market()
    assert broker.positions == {"XXX": 0}


def test_a_whole_close_of_an_earlier_kill_is_kept_too(migrated_engine: Engine) -> None:
    # The books explain 10 of 15: the first kill closes the 15 whole (an order with no row of ours);
    # the second finds it through the first kill's audit entry.
    broker = AfterHoursBroker({"XXX": D(15)})
    _books(migrated_engine, A_XXX=10)
    first = _kill(broker, migrated_engine)
    second = _kill(broker, migrated_engine)
    assert first.unattributed == ("XXX",) and second.failures == () and len(second.working) == 1
    assert broker.log == ["close_position XXX 15"]
    broker.open_market()
    assert broker.positions == {"XXX": 0}


def test_what_the_kept_orders_do_not_cover_is_closed(migrated_engine: Engine) -> None:
    broker = AfterHoursBroker({"XXX": D(10), "YYY": D(10)})
    _books(migrated_engine, A_XXX=10, A_YYY=10)
    _kill(broker, migrated_engine)
    # Then 5 more of each, booked late: XXX in A's book, YYY only at the broker.
    broker.positions.update(XXX=D(15), YYY=D(15))
    _books(migrated_engine, A_XXX=15)
    second = _kill(broker, migrated_engine)
    assert second.failures == () and len(second.working) == 2
    assert broker.log[2:] == ["close_position YYY 5", "submit XXX sell 5"]
    broker.open_market()
    assert broker.positions == {"XXX": 0, "YYY": 0}


def test_a_closing_order_already_being_canceled_is_not_counted_as_working(migrated_engine: Engine) -> None:
    broker = AfterHoursBroker({"XXX": D(10)})
    _books(migrated_engine, A_XXX=10)
    first = _kill(broker, migrated_engine)
    (order,) = broker.list_open_orders()
    broker.cancel_order(order.id)  # canceled by hand: pending until the open, the shares held
    second = _kill(broker, migrated_engine)
    assert second.working == () and first.booked
    assert any("insufficient qty available" in failure for failure in second.failures)
    assert not second.ok  # the report does not claim the position will close


def test_an_order_already_being_canceled_is_not_canceled_again(migrated_engine: Engine) -> None:
    broker = AfterHoursBroker({"XXX": D(10)})
    _books(migrated_engine, A_XXX=10)
    broker.add_order("resting-1", "YYY", OrderSide.BUY, D(3))
    first = _kill(broker, migrated_engine)
    second = _kill(broker, migrated_engine)
    assert len(first.canceled) == 1 and second.canceled == () and second.failures == ()


def test_a_kept_order_that_no_longer_closes_anything_is_canceled(migrated_engine: Engine) -> None:
    # The long was closed some other way and a short opened (out of band): the kept sell would grow it.
    broker = AfterHoursBroker({"XXX": D(10)})
    _books(migrated_engine, A_XXX=10)
    _kill(broker, migrated_engine)
    broker.positions["XXX"] = D(-10)
    _books(migrated_engine, A_XXX=-10)
    second = _kill(broker, migrated_engine)
    assert second.working == () and not second.ok
    assert any("no longer closes a position: canceled" in failure for failure in second.failures)
    assert broker.log[-1] == "submit XXX buy 10"  # the short is bought back
    broker.open_market()
    assert broker.positions == {"XXX": 0}


def test_kept_orders_that_do_not_fit_the_split_close_the_rest_whole(migrated_engine: Engine) -> None:
    # C's kept sell of 10; the books were healed since to A 15, C 0, the broker holding 15.
    broker = AfterHoursBroker({"XXX": D(10)})
    _books(migrated_engine, C_XXX=10)
    _kill(broker, migrated_engine)
    broker.positions["XXX"] = D(15)
    _books(migrated_engine, A_XXX=15, C_XXX=0)
    second = _kill(broker, migrated_engine)
    assert second.failures == () and broker.log[-1] == "close_position XXX 5"
    broker.open_market()
    assert broker.positions == {"XXX": 0}
