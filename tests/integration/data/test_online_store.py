"""The Redis online store on a real Redis: offline/online feature parity, trimming, idempotence."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import redis

from tests.support.services import RedisKeySpace
from trader.data.bars import ADJ_BAR_SCHEMA
from trader.data.features import FEATURE_SET_VERSION, FEATURES, compute_features, max_window
from trader.data.online import DEFAULT_KEEP_BARS, OnlineStore

pytestmark = pytest.mark.redis

SYMBOLS = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"]
BARS = 300


def history(symbols: list[str] = SYMBOLS, bars: int = BARS, seed: int = 42) -> pl.DataFrame:
    """A deterministic adjusted history: random walks on weekdays, with OHLC around the close."""
    rng = np.random.default_rng(seed)
    days: list[date] = []
    day = date(2023, 1, 2)
    while len(days) < bars:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    frames = []
    for index, symbol in enumerate(symbols):
        close = (20 + 30 * index) * np.exp(np.cumsum(rng.normal(0.0002, 0.02, bars)))
        open_ = close * np.exp(rng.normal(0, 0.005, bars))
        high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.02, bars))
        low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.02, bars))
        volume = rng.lognormal(13, 0.5, bars).round()
        frames.append(
            pl.DataFrame(
                {
                    "symbol": symbol,
                    "date": days,
                    "open": open_,
                    "high": high,
                    "low": low,
                    "close": close,
                    "volume": volume,
                    "factor": rng.choice([1.0, 0.5], bars),
                    "source": "synthetic",
                },
                schema=ADJ_BAR_SCHEMA,
            )
        )
    return pl.concat(frames)


def bar_snapshot(space: RedisKeySpace) -> dict[str, object]:
    """Every bar key's members and scores, as Redis holds them."""
    everything = space.keys()
    keys = [key for key in everything if ":bars:" in key]
    return {key: space.client.zrange(key, 0, -1, withscores=True) for key in keys}


@pytest.fixture
def store(redis_keyspace: RedisKeySpace) -> OnlineStore:
    return OnlineStore(redis_keyspace.client, prefix=redis_keyspace.prefix)


def test_online_features_equal_offline_features_on_the_last_date(store: OnlineStore) -> None:
    bars = history()
    assert store.push_bars(bars) == len(SYMBOLS) * store.keep_bars
    assert store.update_features() == len(SYMBOLS)
    offline = compute_features(bars)
    last_date = bars["date"].max()
    for symbol in SYMBOLS:
        online = store.features(symbol)
        expected = offline.filter((pl.col("symbol") == symbol) & (pl.col("date") == last_date)).row(
            0, named=True
        )
        assert online["symbol"] == symbol
        assert online["as_of"] == last_date
        assert online["version"] == FEATURE_SET_VERSION
        assert set(online) == {"symbol", "as_of", "version", *FEATURES}
        for name in FEATURES:
            assert expected[name] is not None
            assert online[name] == expected[name], f"{symbol} {name}: {online[name]!r} != {expected[name]!r}"


def test_parity_holds_when_bars_arrive_one_day_at_a_time(store: OnlineStore) -> None:
    bars = history(SYMBOLS[:3], 80, seed=7)
    dates = bars["date"].unique().sort().to_list()
    store.push_bars(bars.filter(pl.col("date") <= dates[59]))
    offline = compute_features(bars)
    for day in dates[60:]:
        store.push_bars(bars.filter(pl.col("date") == day))
        store.update_features()
        expected = offline.filter(pl.col("date") == day)
        for row in expected.iter_rows(named=True):
            online = store.features(row["symbol"])
            assert online["as_of"] == day
            assert all(online[name] == row[name] for name in FEATURES)


def test_only_the_last_n_bars_are_kept(store: OnlineStore, redis_keyspace: RedisKeySpace) -> None:
    bars = history()
    store.push_bars(bars)
    for symbol in SYMBOLS:
        kept = store.bars(symbol)
        assert kept.height == DEFAULT_KEEP_BARS == store.keep_bars
        expected = bars.filter(pl.col("symbol") == symbol).sort("date").tail(store.keep_bars)
        assert kept.equals(expected)  # exact values, schema and order survive the JSON round trip
        assert redis_keyspace.client.zcard(redis_keyspace.key(f"bars:{symbol}")) == store.keep_bars
    # A later push trims the oldest again.
    newer = history(SYMBOLS, BARS + 5).filter(pl.col("date") > bars["date"].max())
    store.push_bars(newer)
    assert store.bars("AAA")["date"].max() == newer["date"].max()
    assert store.bars("AAA").height == store.keep_bars


def test_pushing_the_same_bars_again_changes_nothing(
    store: OnlineStore, redis_keyspace: RedisKeySpace
) -> None:
    bars = history(SYMBOLS[:2], 60)
    store.push_bars(bars)
    store.update_features()
    before = bar_snapshot(redis_keyspace)
    features_before = store.features("AAA")
    store.push_bars(bars)
    store.push_bars(bars.tail(3))
    store.update_features()
    after = bar_snapshot(redis_keyspace)
    assert after == before
    assert store.features("AAA") == features_before


def test_a_corrected_bar_replaces_the_old_one_for_its_date(store: OnlineStore) -> None:
    bars = history(["AAA"], 30)  # fewer than keep_bars: nothing trimmed
    store.push_bars(bars)
    last = bars.tail(1)
    corrected = last.with_columns(pl.col("close") * 1.01, pl.lit("csv").alias("source"))
    store.push_bars(corrected)
    kept = store.bars("AAA")
    assert kept.height == 30
    assert kept.filter(pl.col("date") == last["date"][0]).rows() == corrected.rows()
    store.update_features()
    expected = compute_features(pl.concat([bars.head(29), corrected]))
    assert store.features("AAA")["ret_1d"] == expected["ret_1d"][-1]
    # A correction of an older, still kept bar replaces it in place.
    older = bars.slice(20, 1).with_columns(pl.col("volume") + 1)
    store.push_bars(older)
    assert store.bars("AAA").filter(pl.col("date") == older["date"][0])["volume"].to_list() == [
        older["volume"][0]
    ]
    assert store.bars("AAA").height == 30


def test_short_histories_give_nulls_for_long_windows(store: OnlineStore) -> None:
    store.push_bars(history(["NEW"], 3))
    store.update_features(["NEW"])
    features = store.features("NEW")
    assert features["ret_1d"] is not None and features["hl_range"] is not None
    assert features["ret_5d"] is None and features["vol_20"] is None


def test_keys_symbols_and_unknown_symbols(store: OnlineStore, redis_keyspace: RedisKeySpace) -> None:
    assert store.symbols() == []
    assert store.features("AAA") == {}
    assert store.bars("AAA").is_empty() and store.bars("AAA").schema == pl.Schema(ADJ_BAR_SCHEMA)
    assert store.push_bars(pl.DataFrame(schema=ADJ_BAR_SCHEMA)) == 0
    assert store.update_features() == 0
    store.push_bars(history(["BBB", "AAA"], 25))
    assert store.update_features(["AAA", "ZZZ"]) == 1  # ZZZ has no bars: skipped
    assert store.symbols() == ["AAA", "BBB"]
    assert redis_keyspace.keys() == [
        redis_keyspace.key("bars:AAA"),
        redis_keyspace.key("bars:BBB"),
        redis_keyspace.key("features:AAA"),
        redis_keyspace.key("symbols"),
    ]


def test_works_with_a_decoding_client(redis_url: str, redis_keyspace: RedisKeySpace) -> None:
    client: redis.Redis[str] = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = OnlineStore(client, prefix=redis_keyspace.prefix)
        bars = history(["AAA"], 30)
        store.push_bars(bars)
        store.update_features()
        assert store.symbols() == ["AAA"]
        assert store.bars("AAA").equals(bars)
        assert store.features("AAA")["ret_1d"] == compute_features(bars)["ret_1d"][-1]
    finally:
        client.close()


def test_keep_bars_must_cover_the_longest_window(redis_keyspace: RedisKeySpace) -> None:
    with pytest.raises(ValueError, match="longest feature window"):
        OnlineStore(redis_keyspace.client, prefix=redis_keyspace.prefix, keep_bars=max_window() - 1)


# replace_symbols: the online store mirrors the adjusted store (what the ingest pipeline writes).


def key_snapshot(space: RedisKeySpace) -> dict[str, object]:
    """Every key of the keyspace with its whole content (bars with scores, feature hashes, symbols)."""
    snapshot: dict[str, object] = {}
    names = space.keys()
    for key in names:
        if ":bars:" in key:
            snapshot[key] = space.client.zrange(key, 0, -1, withscores=True)
        elif ":features:" in key:
            snapshot[key] = space.client.hgetall(key)
        else:
            snapshot[key] = sorted(space.client.smembers(key))
    return snapshot


def assert_features_are_offline_on_the_last_bar(store: OnlineStore, adjusted: pl.DataFrame) -> None:
    offline = compute_features(adjusted)
    for symbol in adjusted["symbol"].unique().to_list():
        expected = offline.filter(pl.col("symbol") == symbol).tail(1).row(0, named=True)
        online = store.features(symbol)
        assert online["as_of"] == expected["date"] == store.bars(symbol)["date"].max()
        assert online["version"] == FEATURE_SET_VERSION
        for name in FEATURES:
            assert online[name] == expected[name], f"{symbol} {name}: {online[name]!r} != {expected[name]!r}"


def test_replace_symbols_keeps_the_newest_bars_and_offline_features(store: OnlineStore) -> None:
    bars = history()
    assert store.replace_symbols(bars, SYMBOLS) == len(SYMBOLS) * store.keep_bars
    assert store.symbols() == sorted(SYMBOLS)
    for symbol in SYMBOLS:
        expected = bars.filter(pl.col("symbol") == symbol).tail(store.keep_bars)
        assert store.bars(symbol).equals(expected)
    assert_features_are_offline_on_the_last_bar(store, bars)


def test_a_bar_that_leaves_the_adjusted_store_leaves_redis_and_the_features_move_back(
    store: OnlineStore,
) -> None:
    bars = history(["AAA", "BBB"], 30)
    last = bars["date"].max()
    store.push_bars(bars)  # as the store was filled before the fix: merged by date
    store.update_features()
    assert store.features("AAA")["as_of"] == last
    # A corrected last bar of AAA was quarantined: the adjusted store now ends the session before.
    adjusted = bars.filter((pl.col("symbol") != "AAA") | (pl.col("date") < last))
    previous = adjusted.filter(pl.col("symbol") == "AAA")["date"].max()

    store.replace_symbols(adjusted.filter(pl.col("symbol") == "AAA"), ["AAA"])

    assert store.bars("AAA").equals(adjusted.filter(pl.col("symbol") == "AAA"))
    assert store.bars("AAA")["date"].max() == previous
    assert store.features("AAA")["as_of"] == previous
    assert_features_are_offline_on_the_last_bar(store, adjusted)
    assert store.bars("BBB").equals(bars.filter(pl.col("symbol") == "BBB"))  # not asked: untouched
    assert store.features("BBB")["as_of"] == last


def test_a_bar_quarantined_in_the_middle_of_the_kept_bars_leaves_redis(store: OnlineStore) -> None:
    bars = history(["AAA"], 40)
    store.replace_symbols(bars, ["AAA"])
    hole = bars["date"][35]
    adjusted = bars.filter(pl.col("date") != hole)

    store.replace_symbols(adjusted, ["AAA"])

    assert hole not in store.bars("AAA")["date"].to_list()
    # Still keep_bars bars: one older bar moved in to fill the window.
    assert store.bars("AAA").equals(adjusted.tail(store.keep_bars))
    assert_features_are_offline_on_the_last_bar(store, adjusted)


def test_a_symbol_without_clean_bars_has_no_bars_and_no_features(
    store: OnlineStore, redis_keyspace: RedisKeySpace
) -> None:
    bars = history(["AAA", "BBB"], 30)
    store.replace_symbols(bars, ["AAA", "BBB"])
    assert store.features("AAA") and store.symbols() == ["AAA", "BBB"]

    # Every bar of AAA is quarantined now: the ingest passes AAA among its symbols, without rows.
    written = store.replace_symbols(bars.filter(pl.col("symbol") == "BBB"), ["AAA", "BBB"])

    assert written == 30
    assert store.bars("AAA").is_empty()
    assert store.features("AAA") == {}
    assert store.symbols() == ["BBB"]
    assert redis_keyspace.keys() == [
        redis_keyspace.key("bars:BBB"),
        redis_keyspace.key("features:BBB"),
        redis_keyspace.key("symbols"),
    ]
    # With no clean bar anywhere, nothing is left.
    assert store.replace_symbols(pl.DataFrame(schema=ADJ_BAR_SCHEMA), ["BBB", "NEVER"]) == 0
    assert redis_keyspace.keys() == []


def test_replacing_with_the_same_bars_again_changes_nothing(
    store: OnlineStore, redis_keyspace: RedisKeySpace
) -> None:
    bars = history(SYMBOLS[:3], 80)
    adjusted = bars.filter((pl.col("symbol") != "CCC") | (pl.col("date") < bars["date"].max()))
    store.replace_symbols(adjusted, [*SYMBOLS[:3], "GONE"])
    before = key_snapshot(redis_keyspace)

    assert store.replace_symbols(adjusted, [*SYMBOLS[:3], "GONE"]) == 3 * store.keep_bars
    assert key_snapshot(redis_keyspace) == before
    # The same bars in another order, with a duplicate: the same state.
    store.replace_symbols(pl.concat([adjusted.reverse(), adjusted.tail(2)]), SYMBOLS[:3])
    assert key_snapshot(redis_keyspace) == before
    # And update_features over what replace_symbols stored computes the same values.
    store.update_features()
    assert key_snapshot(redis_keyspace) == before


def test_replace_symbols_repairs_what_push_bars_left_behind(
    store: OnlineStore, redis_keyspace: RedisKeySpace
) -> None:
    """A store filled by merging (stale dates kept) equals one built from scratch after one replace."""
    bars = history(["AAA", "BBB"], 60)
    adjusted = bars.filter(pl.col("date") != bars["date"][50])
    store.push_bars(bars)
    store.update_features()
    store.replace_symbols(adjusted, ["AAA", "BBB"])
    repaired = key_snapshot(redis_keyspace)

    redis_keyspace.clear()
    store.replace_symbols(adjusted, ["AAA", "BBB"])
    assert key_snapshot(redis_keyspace) == repaired


def test_update_features_drops_the_features_of_a_symbol_without_bars(
    store: OnlineStore, redis_keyspace: RedisKeySpace
) -> None:
    store.push_bars(history(["AAA", "BBB"], 25))
    store.update_features()
    redis_keyspace.client.delete(redis_keyspace.key("bars:AAA"))

    assert store.update_features() == 1
    assert store.features("AAA") == {}
    assert store.symbols() == ["BBB"]


def test_replace_symbols_with_a_decoding_client(redis_url: str, redis_keyspace: RedisKeySpace) -> None:
    client: redis.Redis[str] = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        store = OnlineStore(client, prefix=redis_keyspace.prefix)
        bars = history(["AAA"], 30)
        store.replace_symbols(bars, ["AAA", "BBB"])
        assert store.symbols() == ["AAA"]
        assert store.bars("AAA").equals(bars)
        assert_features_are_offline_on_the_last_bar(store, bars)
    finally:
        client.close()
