"""The strategy configuration: the shipped YAML files load, and every bad field is named."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from trader.strategies.config import (
    BUILTIN_STRATEGIES,
    LABEL_EXPRESSION,
    LABEL_HORIZON,
    Costs,
    StrategyConfigError,
    StrategyKind,
    load_strategy_config,
)


@pytest.mark.parametrize("name", BUILTIN_STRATEGIES)
def test_builtin_configs_load(name: str) -> None:
    config = load_strategy_config(name)
    assert config.name == name
    assert config.segments.train.end < config.segments.valid.start < config.segments.test.start


def test_alpha_baseline_is_the_lightgbm_strategy() -> None:
    config = load_strategy_config("alpha_baseline")
    assert config.kind is StrategyKind.ALPHA158_LGB
    assert config.segments.test.end == date(2024, 12, 27)


def test_round_trip_through_yaml(tmp_path: Path) -> None:
    config = load_strategy_config("momentum")
    path = tmp_path / "copy.yaml"
    path.write_text(config.to_yaml())
    assert load_strategy_config(path) == config


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(StrategyConfigError, match="alpha_baseline, momentum"):
        load_strategy_config("nope")


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"portfolio": {"topk": 2, "n_drop": 3}}, "portfolio: n_drop"),
        ({"costs": {"slippage_bps": -1}}, "costs.slippage_bps"),
        ({"kind": "neural"}, "kind"),
        ({"extra_field": 1}, "extra_field"),
        ({"market": "../../etc/passwd"}, "market"),
        (
            {
                "segments": {
                    "train": {"start": "2020-01-01", "end": "2021-01-01"},
                    "valid": {"start": "2020-06-01", "end": "2021-06-01"},
                    "test": {"start": "2021-07-01", "end": "2021-12-31"},
                }
            },
            "valid must start after train ends",
        ),
    ],
)
def test_bad_fields_are_named(tmp_path: Path, patch: dict[str, object], expected: str) -> None:
    import yaml

    data = load_strategy_config("momentum").model_dump(mode="json") | patch
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StrategyConfigError, match=expected):
        load_strategy_config(path)


def test_not_yaml_is_refused_in_one_line_that_says_where(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: momentum\nkind: [unclosed\n")
    with pytest.raises(StrategyConfigError, match="not valid YAML") as refused:
        load_strategy_config(path)
    assert "\n" not in str(refused.value)
    assert "(line 3, column 1)" in str(refused.value)


def test_training_refuses_a_short_label_horizon_and_another_loss_but_loading_does_not(
    tmp_path: Path,
) -> None:
    import yaml

    data = load_strategy_config("alpha_baseline").model_dump(mode="json")
    data["segments"]["label_horizon"] = 1
    data["lightgbm"]["loss"] = "binary"
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(data))
    # A model saved with these settings still loads (it may be in production and must keep scoring) ...
    config = load_strategy_config(path)
    # ... but no new model is trained with them.
    with pytest.raises(StrategyConfigError) as refused:
        config.check_trainable()
    assert "segments.label_horizon: 1 is shorter than the label's look-ahead" in str(refused.value)
    assert "lightgbm.loss: 'binary' does not fit the label" in str(refused.value)
    data["segments"]["label_horizon"], data["lightgbm"]["loss"] = 3, "mse"  # a wider gap is allowed
    path.write_text(yaml.safe_dump(data))
    load_strategy_config(path).check_trainable()


def test_label_horizon_matches_the_label_expression() -> None:
    from trader.research.leakage import label_horizon

    assert label_horizon([LABEL_EXPRESSION]) == LABEL_HORIZON


def test_scaled_costs_multiply_slippage_and_fees_separately() -> None:
    costs = Costs(commission_bps=1, sell_fee_bps=0.5, min_commission=1, slippage_bps=5)
    scaled = costs.scaled(slippage=3, fees=2)
    assert (scaled.slippage_bps, scaled.commission_bps, scaled.sell_fee_bps, scaled.min_commission) == (
        15,
        2,
        1,
        2,
    )
