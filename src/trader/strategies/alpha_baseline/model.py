"""LightGBM through Qlib's ``LGBModel``, configured from a strategy's ``lightgbm`` settings.

:class:`TraderLGBModel` is Qlib's ``LGBModel`` with one change to ``fit``: Qlib's version logs every
iteration's loss through ``qlib.workflow.R``, which, with no Qlib recorder running, silently creates
an experiment and a run of its own (and its artifacts in ``./mlruns``). Ours trains exactly the same
way (same data preparation, same early stopping) and returns the loss curves instead, so the caller
logs them to the one MLflow run of the training (:mod:`trader.research.tracking`).

Reproducibility: LightGBM runs with the configured ``seed`` and thread count and in its deterministic
mode, so training twice on the same data gives the same trees and the same predictions.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from trader.strategies.config import LightGBMParams


def lgb_kwargs(params: LightGBMParams) -> dict[str, Any]:
    """``LGBModel``'s constructor arguments for ``params`` (everything but ``loss`` and the rounds
    goes to ``lightgbm.train`` as a parameter)."""
    return {
        "loss": params.loss,
        "early_stopping_rounds": params.early_stopping_rounds,
        "num_boost_round": params.num_boost_round,
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "max_depth": params.max_depth,
        "colsample_bytree": params.colsample_bytree,
        "subsample": params.subsample,
        "lambda_l1": params.lambda_l1,
        "lambda_l2": params.lambda_l2,
        "num_threads": params.num_threads,
        "seed": params.seed,
        # Same trees for the same data and seed, whatever LightGBM's heuristics would pick.
        "deterministic": True,
        "force_row_wise": True,
    }


@dataclass(frozen=True)
class FitReport:
    """What fitting learned about itself: the best iteration (the model keeps its trees up to it), the
    iterations tried before early stopping, and the loss per iteration per segment
    (``"l2.train"``, ``"l2.valid"``)."""

    best_iteration: int
    iterations: int
    curves: dict[str, list[float]]


_defined: dict[str, type[Any]] = {}


def model_class() -> type[Any]:
    """:class:`TraderLGBModel`, defined on first use: its base class's module imports Qlib (seconds)."""
    if "TraderLGBModel" not in _defined:
        _defined["TraderLGBModel"] = _define_model_class()
    return _defined["TraderLGBModel"]


def _define_model_class() -> type[Any]:
    import lightgbm as lgb

    # Qlib's model package prints a line to stdout for each optional model library it lacks
    # (CatBoost, XGBoost, PyTorch): keep it out of the command's output.
    with contextlib.redirect_stdout(io.StringIO()):
        from qlib.contrib.model.gbdt import LGBModel

    class _TraderLGBModel(LGBModel):  # type: ignore[misc]
        """Qlib's ``LGBModel`` whose ``fit`` returns its loss curves instead of logging them via ``R``."""

        def fit(self, dataset: Any, **_ignored: Any) -> FitReport:
            ds_l = self._prepare_data(dataset)
            data, names = list(zip(*ds_l, strict=True))
            evals: dict[str, dict[str, list[float]]] = {}
            self.model = lgb.train(
                self.params,
                data[0],
                num_boost_round=self.num_boost_round,
                valid_sets=list(data),
                valid_names=list(names),
                callbacks=[
                    lgb.early_stopping(self.early_stopping_rounds, verbose=False),
                    lgb.record_evaluation(evals),
                ],
            )
            curves = {
                f"{metric}.{segment}": [float(v) for v in values]
                for segment, by_metric in evals.items()
                for metric, values in by_metric.items()
            }
            # With early stopping LightGBM keeps only the trees up to the best iteration; the curves
            # show how many were tried.
            tried = max((len(values) for values in curves.values()), default=0)
            return FitReport(
                best_iteration=int(self.model.best_iteration or self.model.current_iteration()),
                iterations=tried,
                curves=curves,
            )

    # Pickles refer to the class by this module's attribute, so saved models load in a new process.
    _TraderLGBModel.__name__ = _TraderLGBModel.__qualname__ = "TraderLGBModel"
    _TraderLGBModel.__module__ = __name__
    return _TraderLGBModel


def __getattr__(name: str) -> Any:
    # ``model.TraderLGBModel`` (what a pickle refers to) resolves without importing Qlib at import time.
    if name == "TraderLGBModel":
        return model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(params: LightGBMParams) -> Any:
    """A new, unfitted :class:`TraderLGBModel` (Qlib's ``LGBModel``) with ``params``."""
    return model_class()(**lgb_kwargs(params))


def feature_importance(model: Any, names: list[str]) -> dict[str, float]:
    """Total gain of each feature's splits in the fitted ``model``, by feature name, largest first."""
    booster = model.model
    if booster is None:
        raise ValueError("the model is not fitted")
    gains = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    if len(gains) != len(names):
        raise ValueError(f"the model has {len(gains)} features, {len(names)} names given")
    pairs = sorted(zip(names, gains.tolist(), strict=True), key=lambda pair: (-pair[1], pair[0]))
    return dict(pairs)
