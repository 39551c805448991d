"""The TopkDropout rule: hand-worked selections, Qlib's own strategy as the reference, and invariants."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trader.signal.weights import SignalError, target_weights, topk_dropout

SCORES = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6, "E": 0.5, "F": 0.4}


def test_empty_book_buys_the_top_k() -> None:
    assert topk_dropout(SCORES, [], topk=3, n_drop=1) == ["A", "B", "C"]


def test_drops_at_most_n_drop_of_the_worst_holdings() -> None:
    # Held D, E, F (the three worst); with n_drop=1 only F (the worst of held + candidates) goes.
    assert topk_dropout(SCORES, ["D", "E", "F"], topk=3, n_drop=1) == ["A", "D", "E"]


def test_keeps_holdings_that_still_rank_well() -> None:
    assert topk_dropout(SCORES, ["A", "B", "C"], topk=3, n_drop=2) == ["A", "B", "C"]


def test_unscored_holdings_are_always_sold() -> None:
    assert topk_dropout(SCORES, ["A", "GONE"], topk=2, n_drop=0) == ["A", "B"]


def test_ties_are_broken_by_symbol() -> None:
    assert topk_dropout({"Z": 1.0, "Y": 1.0, "X": 1.0}, [], topk=2, n_drop=0) == ["X", "Y"]


def test_weights_are_equal_fractions_of_topk() -> None:
    weights = target_weights(SCORES, [], topk=4, n_drop=1)
    assert weights == {s: Decimal("0.25") for s in "ABCD"}
    assert target_weights({"A": 1.0}, [], topk=4, n_drop=1) == {"A": Decimal("0.25")}  # rest is cash


def test_long_short_books_are_disjoint_halves() -> None:
    weights = target_weights(SCORES, [], topk=2, n_drop=1, long_short=True)
    assert weights == {
        "A": Decimal("0.25"),
        "B": Decimal("0.25"),
        "F": Decimal("-0.25"),
        "E": Decimal("-0.25"),
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_are_refused(bad: float) -> None:
    with pytest.raises(SignalError, match="not finite for B"):
        topk_dropout({"A": 1.0, "B": bad}, [], topk=1, n_drop=0)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SignalError, match="topk must be"):
        topk_dropout(SCORES, [], topk=0, n_drop=0)


def _qlib_topk_dropout(scores: dict[str, float], held: list[str], topk: int, n_drop: int) -> set[str]:
    """The selection part of ``qlib.contrib.strategy.TopkDropoutStrategy.generate_trade_decision``
    (method_sell="bottom", method_buy="top", every stock tradable), transcribed with pandas as Qlib has it."""
    import pandas as pd

    pred = pd.Series(scores)
    last = pred.reindex(held).sort_values(ascending=False).index
    today = list(pred[~pred.index.isin(last)].sort_values(ascending=False).index[: n_drop + topk - len(last)])
    comb = pred.reindex(last.union(pd.Index(today))).sort_values(ascending=False).index
    sell = last[last.isin(list(comb[-n_drop:]))] if n_drop else last[:0]
    buy = today[: len(sell) + topk - len(last)]
    return (set(last) - set(sell)) | set(buy)


@given(
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=30, unique=True),
    st.data(),
    st.integers(1, 10),
    st.integers(0, 5),
)
def test_matches_qlib_and_never_exceeds_topk(
    values: list[float], data: st.DataObject, topk: int, n_drop: int
) -> None:
    scores = {f"S{i:02d}": v for i, v in enumerate(values)}
    held = data.draw(st.lists(st.sampled_from(sorted(scores)), max_size=topk, unique=True))
    chosen = topk_dropout(scores, held, topk=topk, n_drop=n_drop)
    assert len(chosen) <= topk
    assert len(set(held) - set(chosen)) <= n_drop  # never replaces more than n_drop holdings
    assert set(chosen) == _qlib_topk_dropout(scores, held, topk, n_drop)


def test_more_holdings_than_topk_share_the_equity_instead_of_exceeding_it() -> None:
    # A new model with topk 5 takes over a book of 10 names: TopkDropout (like Qlib's) keeps more than
    # topk and sheds n_drop a day; weights of 1/topk each would add up to 1.6 and the allocator would
    # refuse every rebalance, sells included, so the book would never shrink.
    scores = {f"S{i:02d}": float(20 - i) for i in range(20)}
    held = [f"S{i:02d}" for i in range(10)]
    sums = []
    for _ in range(4):
        weights = target_weights(scores, held, topk=5, n_drop=2)
        assert len(set(weights.values())) == 1
        sums.append(sum(weights.values()))
        held = list(weights)
    assert all(total == 1 for total in sums[:2]) and len(held) == 5
    assert target_weights(scores, held, topk=5, n_drop=2) == {s: Decimal("0.2") for s in held}


def test_long_short_books_with_extra_holdings_stay_within_their_halves() -> None:
    scores = {f"S{i:02d}": float(20 - i) for i in range(20)}
    weights = target_weights(
        scores,
        [f"S{i:02d}" for i in range(6)],
        topk=2,
        n_drop=1,
        long_short=True,
        held_short=[f"S{i:02d}" for i in range(14, 20)],
    )
    longs = [w for w in weights.values() if w > 0]
    shorts = [w for w in weights.values() if w < 0]
    assert sum(longs) == Decimal("0.5") and sum(shorts) == Decimal("-0.5")
    assert len(longs) == 5 and len(shorts) == 5  # one dropped from each book today


@given(
    st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=30, unique=True),
    st.data(),
    st.integers(1, 10),
    st.integers(0, 5),
)
def test_weights_never_add_up_to_more_than_the_equity(
    values: list[float], data: st.DataObject, topk: int, n_drop: int
) -> None:
    scores = {f"S{i:02d}": v for i, v in enumerate(values)}
    held = data.draw(st.lists(st.sampled_from(sorted(scores)), unique=True))  # any number, even > topk
    weights = target_weights(scores, held, topk=topk, n_drop=n_drop)
    assert sum(weights.values()) <= 1
    kept = [s for s in held if s in scores]
    assert len(weights) <= max(topk, len(kept))  # never grows beyond topk or what is held
    assert len(set(kept) - set(weights)) <= n_drop
    # (Qlib's own code is not the reference here: with more than topk held, its slice
    # ``[: n_drop + topk - len(last)]`` goes negative and counts from the end, buying names it meant not to.)
