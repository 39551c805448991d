"""qlib-alpaca-trader: Qlib research to Alpaca execution, one code path for replay, paper and live."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qlib-alpaca-trader")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
