"""Alpha158's definitions, the LightGBM settings and the momentum expression, without training."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from trader.strategies.alpha_baseline.features import (
    INFER_PROCESSORS,
    LABEL,
    alpha158_feature_config,
    handler_config,
    segments_of,
)
from trader.strategies.alpha_baseline.model import feature_importance, lgb_kwargs
from trader.strategies.config import LightGBMParams, MomentumParams, load_strategy_config
from trader.strategies.momentum.strategy import momentum_expression


def test_alpha158_has_158_named_expressions_in_qlibs_order() -> None:
    fields, names = alpha158_feature_config()
    assert len(fields) == len(names) == 158
    assert len(set(names)) == 158
    assert names[:4] == ["KMID", "KLEN", "KMID2", "KUP"]
    assert names[-1] == "VSUMD60"
    assert fields[0] == "($close-$open)/$open"
    assert "VWAP0" in names and fields[names.index("VWAP0")] == "$vwap/$close"
    assert fields[names.index("ROC5")] == "Ref($close, 5)/$close"
    for window in (5, 10, 20, 30, 60):
        assert f"STD{window}" in names and f"CORD{window}" in names


def test_alpha158_equals_qlibs_own_handler_definition() -> None:
    from qlib.contrib.data.handler import Alpha158

    # get_feature_config does not use the handler's state: call it unbound, as Qlib's loader does.
    assert tuple(map(list, Alpha158.get_feature_config(None))) == alpha158_feature_config()
    assert Alpha158.get_label_config(None) == LABEL


def test_feature_config_returns_fresh_lists() -> None:
    fields, names = alpha158_feature_config()
    fields.clear()
    names.append("X")
    assert len(alpha158_feature_config()[0]) == 158
    assert alpha158_feature_config()[1][-1] == "VSUMD60"


def test_importing_the_strategy_modules_loads_neither_qlib_nor_mlflow() -> None:
    code = (
        "import sys\n"
        "import trader.strategies.alpha_baseline.features, trader.strategies.alpha_baseline.model\n"
        "import trader.strategies.alpha_baseline.pipeline, trader.strategies.momentum.strategy\n"
        "import trader.research.train, trader.research.tracking, trader.research.artifacts\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'qlib', 'mlflow', 'lightgbm'})\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_handler_keeps_alpha158_processors_and_spans_train_to_test() -> None:
    config = load_strategy_config("alpha_baseline")
    kwargs = handler_config(config)["kwargs"]
    assert kwargs["infer_processors"] == INFER_PROCESSORS == []
    assert [p["class"] for p in kwargs["learn_processors"]] == ["DropnaLabel", "CSZScoreNorm"]
    assert kwargs["instruments"] == "all"
    assert kwargs["start_time"] == "2019-01-02" == kwargs["fit_start_time"]
    assert kwargs["fit_end_time"] == "2022-06-30"
    assert kwargs["end_time"] == "2024-12-27"
    assert kwargs["label"] == LABEL
    assert segments_of(config) == {
        "train": ("2019-01-02", "2022-06-30"),
        "valid": ("2022-07-06", "2023-06-30"),
        "test": ("2023-07-07", "2024-12-27"),
    }


def test_lightgbm_settings_come_from_the_config_and_are_deterministic() -> None:
    params = LightGBMParams(num_threads=1, seed=7, num_boost_round=12, early_stopping_rounds=3, lambda_l1=0.5)
    kwargs = lgb_kwargs(params)
    assert kwargs["num_threads"] == 1 and kwargs["seed"] == 7
    assert kwargs["num_boost_round"] == 12 and kwargs["early_stopping_rounds"] == 3
    assert kwargs["lambda_l1"] == 0.5 and kwargs["loss"] == "mse"
    assert kwargs["deterministic"] is True


def test_feature_importance_is_gain_by_name_largest_first() -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3))
    y = 3 * x[:, 2] + 0.5 * x[:, 0] + rng.normal(scale=0.1, size=400)
    booster = lgb.train({"verbosity": -1, "seed": 1}, lgb.Dataset(x, label=y), num_boost_round=20)
    importance = feature_importance(SimpleNamespace(model=booster), ["a", "b", "c"])
    assert next(iter(importance)) == "c"
    assert importance["c"] > importance["a"] > importance["b"] >= 0
    with pytest.raises(ValueError, match="3 features, 2 names"):
        feature_importance(SimpleNamespace(model=booster), ["a", "b"])
    with pytest.raises(ValueError, match="not fitted"):
        feature_importance(SimpleNamespace(model=None), ["a"])


@pytest.mark.parametrize(
    ("lookback", "skip", "expected"),
    [
        (20, 0, "$close/Ref($close, 20) - 1"),
        (60, 5, "Ref($close, 5)/Ref($close, 65) - 1"),
    ],
)
def test_momentum_expression(lookback: int, skip: int, expected: str) -> None:
    assert momentum_expression(MomentumParams(lookback=lookback, skip=skip)) == expected
