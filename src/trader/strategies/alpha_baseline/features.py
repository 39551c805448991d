"""Alpha158 as Qlib computes it: the feature expressions, the label and the dataset of a strategy.

**Single source of truth.** :func:`alpha158_feature_config` returns Qlib's own 158 expressions
(``Alpha158DL.get_feature_config`` with the configuration the ``Alpha158`` handler uses); the Polars
implementation of the live path and its equality test read them from here. Importing this module has
no side effects and does not import Qlib; the expressions are computed on the first call.

**Processors.** Alpha158's defaults are kept and spelled out (:data:`INFER_PROCESSORS`,
:data:`LEARN_PROCESSORS`): no inference processor, so a feature's value is the raw expression value
(NaN where a window has no data, which LightGBM handles), and the live path needs no fitted state
(no z-score means or medians to ship with a model). Only the label is processed, for learning:
rows without a label are dropped and the label is z-scored across symbols each day. Predictions
(``DK_I``) therefore score every listed (date, symbol), labels or not.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from trader.strategies.config import LABEL_EXPRESSION, StrategyConfig

#: Alpha158's feature configuration, as in ``qlib.contrib.data.handler.Alpha158.get_feature_config``:
#: the k-bar shape features, today's open/high/low/vwap relative to the close, and every rolling
#: operator over windows 5, 10, 20, 30, 60.
ALPHA158_CONFIG: dict[str, Any] = {
    "kbar": {},
    "price": {"windows": [0], "feature": ["OPEN", "HIGH", "LOW", "VWAP"]},
    "rolling": {},
}
#: The label (:data:`~trader.strategies.config.LABEL_EXPRESSION`, t+1 -> t+2) under Qlib's name.
LABEL: tuple[list[str], list[str]] = ([LABEL_EXPRESSION], ["LABEL0"])
#: Alpha158's default inference processors: none (see the module docstring).
INFER_PROCESSORS: list[dict[str, Any]] = []
#: Alpha158's default learning processors: drop rows without a label, z-score the label per day.
LEARN_PROCESSORS: list[dict[str, Any]] = [
    {"class": "DropnaLabel"},
    {"class": "CSZScoreNorm", "kwargs": {"fields_group": "label"}},
]


@cache
def _feature_config() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from qlib.contrib.data.loader import Alpha158DL

    fields, names = Alpha158DL.get_feature_config(ALPHA158_CONFIG)
    return tuple(fields), tuple(names)


def alpha158_feature_config() -> tuple[list[str], list[str]]:
    """Alpha158's 158 ``(expressions, names)``, in Qlib's order (fresh lists: safe to modify)."""
    fields, names = _feature_config()
    return list(fields), list(names)


def alpha158_feature_names() -> list[str]:
    """The 158 feature names (``KMID`` ... ``VSUMD60``), the columns the model is trained on."""
    return alpha158_feature_config()[1]


def handler_config(config: StrategyConfig) -> dict[str, Any]:
    """The ``Alpha158`` handler's Qlib config for ``config``'s market, from train start to test end.

    The processors are fitted on the train segment (``fit_start_time``/``fit_end_time``); with the
    defaults above only the label processors run, and they fit nothing.
    """
    segments = config.segments
    return {
        "class": "Alpha158",
        "module_path": "qlib.contrib.data.handler",
        "kwargs": {
            "instruments": config.market,
            "start_time": segments.train.start.isoformat(),
            "end_time": segments.test.end.isoformat(),
            "fit_start_time": segments.train.start.isoformat(),
            "fit_end_time": segments.train.end.isoformat(),
            "infer_processors": list(INFER_PROCESSORS),
            "learn_processors": [dict(p) for p in LEARN_PROCESSORS],
            "label": LABEL,
        },
    }


def segments_of(config: StrategyConfig) -> dict[str, tuple[str, str]]:
    """``{"train": (start, end), "valid": ..., "test": ...}`` as Qlib's ``DatasetH`` takes them."""
    segments = config.segments
    return {
        "train": segments.train.as_tuple(),
        "valid": segments.valid.as_tuple(),
        "test": segments.test.as_tuple(),
    }


def build_dataset(config: StrategyConfig) -> Any:
    """Qlib's ``DatasetH`` over the Alpha158 handler with ``config``'s segments.

    Qlib must be initialised first (:func:`trader.research.qlib_runtime.init_qlib`); this computes
    every feature from train start to test end (the costly step: seconds per few thousand rows).
    """
    from qlib.data.dataset import DatasetH
    from qlib.utils import init_instance_by_config

    handler = init_instance_by_config(handler_config(config))
    return DatasetH(handler=handler, segments=segments_of(config))
