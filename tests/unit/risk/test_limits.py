"""Risk limits: validation, and the stricter of the strategy's and the global (row or settings) level."""

from __future__ import annotations

from decimal import Decimal

import pytest

from trader.config import Settings
from trader.risk.limits import Limit, RiskError, RiskLimits, combine_limits, limits_from_settings


def _settings(**values: Decimal) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


def test_stricter_of_strategy_and_settings_applies_per_field() -> None:
    strategy = RiskLimits(
        "alpha_baseline", max_order_notional=Decimal(5_000), max_position_notional=Decimal(50_000)
    )
    limits = combine_limits("alpha_baseline", strategy, None, _settings())
    # Settings defaults: order 10,000, position 25,000, gross 100,000, daily loss 2,000.
    assert limits.max_order_notional == Limit("max_order_notional", Decimal(5_000), "strategy alpha_baseline")
    assert limits.max_position_notional == Limit("max_position_notional", Decimal(25_000), "settings")
    assert limits.max_gross_exposure == Limit("max_gross_exposure", Decimal(100_000), "settings")
    assert limits.daily_loss_limit == Limit("daily_loss_limit", Decimal(2_000), "settings")


def test_global_row_replaces_settings_field_by_field() -> None:
    global_row = RiskLimits("*", max_order_notional=Decimal(8_000), max_gross_exposure=Decimal(0))
    limits = combine_limits("momentum", None, global_row, _settings())
    assert limits.max_order_notional == Limit("max_order_notional", Decimal(8_000), "global")
    # NULL in the global row: the setting applies; 0 in the global row: no global limit at all.
    assert limits.max_position_notional == Limit("max_position_notional", Decimal(25_000), "settings")
    assert limits.max_gross_exposure is None


def test_global_row_stricter_than_the_strategy_wins() -> None:
    strategy = RiskLimits("alpha_baseline", max_order_notional=Decimal(20_000))
    global_row = RiskLimits("*", max_order_notional=Decimal(10_000))
    limits = combine_limits("alpha_baseline", strategy, global_row, None)
    assert limits.max_order_notional == Limit("max_order_notional", Decimal(10_000), "global")
    assert limits.max_order_notional.describe() == "max_order_notional 10,000.00 (global)"


def test_zero_settings_disable_limits_and_a_strategy_zero_adds_none() -> None:
    settings = _settings(max_order_notional=Decimal(0), daily_loss_limit=Decimal(0))
    strategy = RiskLimits("alpha_baseline", max_order_notional=Decimal(0), daily_loss_limit=Decimal(300))
    limits = combine_limits("alpha_baseline", strategy, None, settings)
    assert limits.max_order_notional is None
    assert limits.daily_loss_limit == Limit("daily_loss_limit", Decimal(300), "strategy alpha_baseline")


def test_no_rows_and_no_settings_means_no_limits() -> None:
    limits = combine_limits("alpha_baseline", None, None, None)
    assert (limits.max_order_notional, limits.max_gross_exposure, limits.disabled_by) == (None, None, None)
    assert dict(limits.blacklist) == {}


def test_blacklists_join_with_their_sources_and_disable_flags() -> None:
    strategy = RiskLimits("alpha_baseline", blacklist=frozenset({"gme", " AMC "}), enabled=False)
    global_row = RiskLimits("*", blacklist=frozenset({"AMC", "TSLA"}))
    limits = combine_limits("alpha_baseline", strategy, global_row, None)
    assert dict(limits.blacklist) == {
        "GME": "strategy alpha_baseline",
        "AMC": "strategy alpha_baseline",
        "TSLA": "global",
    }
    assert limits.disabled_by == "strategy alpha_baseline"
    off_globally = combine_limits("alpha_baseline", None, RiskLimits("*", enabled=False), None)
    assert off_globally.disabled_by == "global"


def test_limits_from_settings_copy_the_four_values() -> None:
    limits = limits_from_settings(_settings(max_order_notional=Decimal("1234.5")))
    assert (limits.strategy_id, limits.max_order_notional, limits.daily_loss_limit) == (
        "*",
        Decimal("1234.5"),
        Decimal(2000),
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy_id": "Alpha"}, "strategy_id 'Alpha' is invalid"),
        ({"strategy_id": ""}, "strategy_id '' is invalid"),
        ({"max_order_notional": Decimal(-1)}, "max_order_notional of 'alpha_baseline' must be ≥ 0"),
        ({"daily_loss_limit": Decimal("NaN")}, "daily_loss_limit must be a finite number"),
        ({"max_gross_exposure": 1e6}, "max_gross_exposure must be a Decimal"),
        ({"max_drawdown_pct": Decimal("1.5")}, "max_drawdown_pct must be a fraction in (0, 1]"),
        ({"blacklist": "GME"}, "blacklist must be a list of symbols"),
        ({"blacklist": frozenset({"G ME"})}, "blacklist entry 'G ME' is not a symbol"),
    ],
)
def test_invalid_limits_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"strategy_id": "alpha_baseline", **kwargs}
    with pytest.raises(RiskError) as caught:
        RiskLimits(**args)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_ints_become_decimals() -> None:
    limits = RiskLimits("alpha_baseline", max_order_notional=5000)  # type: ignore[arg-type]
    assert isinstance(limits.max_order_notional, Decimal) and limits.max_order_notional == 5000


def test_mismatched_rows_are_refused() -> None:
    with pytest.raises(RiskError, match="given for strategy 'momentum'"):
        combine_limits("momentum", RiskLimits("alpha_baseline"), None, None)
    with pytest.raises(RiskError, match="global limits must have strategy_id"):
        combine_limits("momentum", None, RiskLimits("alpha_baseline"), None)
