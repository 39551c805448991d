"""Research on Qlib: export the adjusted store into Qlib's binary layout and initialise Qlib offline.

Later parts of the research issue (strategies, backtests, tracking, registry) build on these two
modules: :mod:`trader.research.qlib_export` and :mod:`trader.research.qlib_runtime`.
"""
