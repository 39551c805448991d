"""Execution: the order lifecycle, deterministic order ids, and the order-table use cases.

- :mod:`trader.execution.state_machine` — the explicit transition table over ``OrderStatus``;
- :mod:`trader.execution.client_ids` — ``client_order_id`` from (strategy, date, symbol, side, intent);
- :mod:`trader.execution.orders` — ``record_intent`` (the row before sending), ``apply_broker_update``.

Fills, positions and P&L are in :mod:`trader.portfolio.ledger`. See ``docs/execution.md``. Nothing is
imported here, so the pure modules load without the database and broker stacks.
"""
