"""The data layer: ingest -> raw recorder -> corporate-action adjustment -> quality gate -> adjusted store.

Market data here is float64 (as every market-data vendor and Qlib use); money in the ledger is
``Decimal`` (see :mod:`trader.store.types`).
"""
