"""Trading strategies: each one a folder with its YAML config and the code that turns data into scores.

- ``alpha_baseline``: Qlib's Alpha158 features + LightGBM (research through Qlib, live scoring through
  the Polars implementation of the same features).
- ``momentum``: model-free past-return ranking, the baseline the model must beat.

:mod:`trader.strategies.config` is the configuration both share.
"""
