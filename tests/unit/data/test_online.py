"""The online store's pure parts, and the shape of its Redis transactions (no Redis needed)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, cast

import polars as pl
import redis

from trader.data.bars import ADJ_BAR_SCHEMA
from trader.data.features import FEATURE_SET_VERSION, FEATURES, latest_features
from trader.data.online import OnlineStore, _decode_bars, _encode_bars


def bars(symbol: str, count: int, close: float = 10.0) -> pl.DataFrame:
    days = [date(2024, 1, 1) + timedelta(days=i) for i in range(count)]
    return pl.DataFrame(
        {
            "symbol": symbol,
            "date": days,
            "open": [close + i * 0.1 for i in range(count)],
            "high": [close + 1 + i * 0.1 for i in range(count)],
            "low": [close - 1 + i * 0.1 for i in range(count)],
            "close": [close + i * 0.1 for i in range(count)],
            "volume": [1000.0 + i for i in range(count)],
            "factor": 1.0,
            "source": "csv",
        },
        schema=ADJ_BAR_SCHEMA,
    )


class RecordingPipeline:
    """Stands in for a redis-py pipeline: records the queued commands and each ``execute``."""

    def __init__(self, log: list[tuple[Any, ...]], transaction: bool) -> None:
        self.log = log
        self.log.append(("pipeline", transaction))

    def __getattr__(self, name: str) -> Any:
        def command(*args: Any, **kwargs: Any) -> None:
            self.log.append((name, *args, kwargs) if kwargs else (name, *args))

        return command

    def execute(self) -> list[Any]:
        self.log.append(("execute",))
        return []


class RecordingClient:
    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def pipeline(self, transaction: bool = True) -> RecordingPipeline:
        return RecordingPipeline(self.log, transaction)


def store(client: object | None = None) -> OnlineStore:
    # redis.Redis connects lazily: no server is needed for what does not send a command.
    return OnlineStore(cast("redis.Redis[Any]", client or redis.Redis(port=1)), prefix="p:")


def test_recent_keeps_the_newest_bars_one_per_date_the_last_given_winning() -> None:
    online = store()
    history = bars("AAA", online.keep_bars + 5)
    corrected = history.tail(1).with_columns(pl.col("close") + 1)
    unkeyed = history.head(1).with_columns(pl.lit(None, dtype=pl.String).alias("symbol"))
    given = pl.concat([history.reverse(), corrected, unkeyed, bars("BBB", 3)])

    recent = online._recent(given)

    aaa = recent.filter(pl.col("symbol") == "AAA")
    assert aaa["date"].to_list() == history.tail(online.keep_bars)["date"].to_list()
    assert aaa.tail(1)["close"].to_list() == corrected["close"].to_list()
    assert recent.filter(pl.col("symbol") == "BBB").height == 3
    assert recent["symbol"].null_count() == 0


def test_encoded_bars_decode_to_the_same_frame() -> None:
    frame = bars("AAA", 5, close=1 / 3)
    members = _encode_bars(frame)
    assert list(members.values()) == [day.toordinal() for day in frame["date"]]
    assert _decode_bars("AAA", list(members)).equals(frame)


def test_replace_symbols_rebuilds_each_symbol_in_one_transaction() -> None:
    client = RecordingClient()
    online = store(client)

    written = online.replace_symbols(bars("AAA", 3), ["GONE", "AAA"])

    assert written == 3
    assert client.log[0] == ("pipeline", True)
    assert client.log[-1] == ("execute",)
    assert [entry[0] for entry in client.log].count("execute") == 1
    commands = [entry[:2] if entry[0] != "delete" else entry for entry in client.log[1:-1]]
    assert commands == [
        # Bars and features deleted, then rebuilt, in the same MULTI.
        ("delete", "p:bars:AAA", "p:features:AAA"),
        ("zadd", "p:bars:AAA"),
        ("hset", "p:features:AAA"),
        ("sadd", "p:symbols"),
        # No clean bar: deleted and nothing written back.
        ("delete", "p:bars:GONE", "p:features:GONE"),
        ("srem", "p:symbols"),
    ]


def test_replace_symbols_computes_the_features_from_the_bars_it_writes() -> None:
    client = RecordingClient()
    frame = bars("AAA", 25)
    # A duplicate date: the stored set holds the last one, and the features must come from it.
    last = frame.tail(1).with_columns(pl.col("close") * 2)
    store(client).replace_symbols(pl.concat([frame, last]), ["AAA"])

    zadd = next(entry for entry in client.log if entry[0] == "zadd")
    hset = next(entry for entry in client.log if entry[0] == "hset")
    stored = _decode_bars("AAA", list(zadd[2]))
    assert stored.height == 25 and stored.tail(1)["close"].to_list() == last["close"].to_list()
    expected = latest_features(stored).row(0, named=True)
    fields = hset[2]["mapping"]
    assert fields["_as_of"] == expected["date"].isoformat()
    assert fields["_version"] == FEATURE_SET_VERSION
    assert {name: fields[name] for name in FEATURES} == {
        name: "" if expected[name] is None else repr(expected[name]) for name in FEATURES
    }
