"""The online store: the last N adjusted bars and the latest features of each symbol, in Redis.

It serves readers that need a symbol's newest features without scanning Parquet (a strategy or a
dashboard polling during the day); the built-in strategies score from the adjusted store and the Qlib
export, so nothing in a trading day depends on it. Values come from the same feature functions as the
offline path (:mod:`trader.data.features`), computed over the bars kept here, and each stored set of
features carries the feature-set version and the date it is as of.

Keys (all under ``prefix``, which ``trader data`` sets to ``REDIS_KEY_PREFIX`` + :data:`KEY_PREFIX`):

- ``bars:<SYMBOL>``: sorted set, score = the bar's date as a proleptic ordinal, member = the bar as
  canonical JSON (sorted keys). One member per date: pushing a bar first removes whatever the date held,
  so a corrected bar replaces the old one and pushing the same bar twice changes nothing. Trimmed to
  the newest ``keep_bars`` members.
- ``features:<SYMBOL>``: hash of feature name → value (empty string for null), plus ``_version`` (the
  feature-set version) and ``_as_of`` (ISO date of the bar the values are for).
- ``symbols``: set of the symbols with bars.

Every batch goes to Redis as one pipeline (``MULTI``/``EXEC``): one round trip, and a reader never sees
half of a symbol's update.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

import polars as pl
import redis

from trader.data.bars import ADJ_BAR_SCHEMA, KEY, conform, empty
from trader.data.features import FEATURE_SET_VERSION, FEATURES, latest_features, max_window

#: Bars kept per symbol: every feature's window plus a margin for a feature that grows its window.
DEFAULT_KEEP_BARS = max_window() + 10
#: Symbols per pipeline: bounds the memory of one round trip on a large universe.
BATCH_SYMBOLS = 500

VERSION_FIELD = "_version"
AS_OF_FIELD = "_as_of"
#: The online store's own part of its keys (after ``REDIS_KEY_PREFIX``).
KEY_PREFIX = "trader:"

_BAR_FIELDS = [name for name in ADJ_BAR_SCHEMA if name != "symbol"]


class OnlineStore:
    """Recent bars and latest features per symbol in Redis (see the module docstring for the keys)."""

    def __init__(
        self,
        client: redis.Redis[Any],
        prefix: str = KEY_PREFIX,
        keep_bars: int = DEFAULT_KEEP_BARS,
    ) -> None:
        if keep_bars < max_window():
            raise ValueError(f"keep_bars must be at least the longest feature window ({max_window()})")
        self.client = client
        self.prefix = prefix
        self.keep_bars = keep_bars

    def _bars_key(self, symbol: str) -> str:
        return f"{self.prefix}bars:{symbol}"

    def _features_key(self, symbol: str) -> str:
        return f"{self.prefix}features:{symbol}"

    @property
    def _symbols_key(self) -> str:
        return f"{self.prefix}symbols"

    def push_bars(self, adj_bars: pl.DataFrame) -> int:
        """Store the newest ``keep_bars`` bars of each symbol in ``adj_bars``; returns the bars written.

        ``adj_bars`` has :data:`~trader.data.bars.ADJ_BAR_SCHEMA`'s columns. Older bars beyond
        ``keep_bars`` are trimmed. Re-pushing a bar is harmless; a different bar for a stored date
        replaces it. Note that a back-adjustment changes *every* older bar of the symbol: push the
        symbol's re-adjusted recent history after one, not just the new bar.
        """
        bars = conform(adj_bars, ADJ_BAR_SCHEMA)
        if bars.is_empty():
            return 0
        recent = bars.sort(KEY).group_by("symbol", maintain_order=True).tail(self.keep_bars)
        written = 0
        for batch in _symbol_batches(recent):
            pipe = self.client.pipeline(transaction=True)
            for (symbol,), rows in batch.partition_by("symbol", as_dict=True, maintain_order=True).items():
                key = self._bars_key(str(symbol))
                for row in rows.select(_BAR_FIELDS).iter_rows(named=True):
                    score = row["date"].toordinal()
                    # One member per date: drop what the date held, then add the (maybe corrected) bar.
                    pipe.zremrangebyscore(key, score, score)
                    pipe.zadd(key, {_encode_bar(row): score})
                pipe.zremrangebyrank(key, 0, -(self.keep_bars + 1))
                pipe.sadd(self._symbols_key, str(symbol))
                written += rows.height
            pipe.execute()
        return written

    def bars(self, symbol: str) -> pl.DataFrame:
        """The stored bars of ``symbol``, oldest first, as :data:`~trader.data.bars.ADJ_BAR_SCHEMA`."""
        members = self.client.zrange(self._bars_key(symbol), 0, -1)
        return _decode_bars(symbol, members)

    def symbols(self) -> list[str]:
        """Every symbol with stored bars, sorted."""
        return sorted(_text(member) for member in self.client.smembers(self._symbols_key))

    def update_features(self, symbols: Sequence[str] | None = None) -> int:
        """Recompute the latest features of ``symbols`` (``None``: all) from the stored bars.

        Returns the number of symbols written. A symbol with fewer bars than a feature's window gets
        that feature as null; a symbol without bars is skipped.
        """
        chosen = self.symbols() if symbols is None else list(symbols)
        updated = 0
        for offset in range(0, len(chosen), BATCH_SYMBOLS):
            batch = chosen[offset : offset + BATCH_SYMBOLS]
            read = self.client.pipeline(transaction=False)
            for symbol in batch:
                read.zrange(self._bars_key(symbol), 0, -1)
            answers = read.execute()
            frames = [_decode_bars(symbol, members) for symbol, members in zip(batch, answers, strict=True)]
            present = [frame for frame in frames if not frame.is_empty()]
            if not present:
                continue
            latest = latest_features(pl.concat(present))
            write = self.client.pipeline(transaction=True)
            for row in latest.iter_rows(named=True):
                key = self._features_key(row["symbol"])
                # Replace the whole hash, so a feature dropped from the set does not linger.
                write.delete(key)
                write.hset(key, mapping=_feature_fields(row))
            write.execute()
            updated += latest.height
        return updated

    def features(self, symbol: str) -> dict[str, Any]:
        """The stored features of ``symbol``: ``{"symbol", "as_of", "version", <feature>: float | None}``.

        ``as_of`` is a ``date``; ``version`` is the feature-set version they were computed with (compare
        with :data:`~trader.data.features.FEATURE_SET_VERSION` before trusting them). Empty when the
        symbol has no stored features.
        """
        stored = {_text(k): _text(v) for k, v in self.client.hgetall(self._features_key(symbol)).items()}
        if not stored:
            return {}
        result: dict[str, Any] = {
            "symbol": symbol,
            "as_of": date.fromisoformat(stored.pop(AS_OF_FIELD)),
            "version": stored.pop(VERSION_FIELD),
        }
        result.update({name: float(value) if value else None for name, value in stored.items()})
        return result


def _text(value: bytes | str) -> str:
    """Redis answers bytes or str depending on the client's ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else value


def _encode_value(value: float | None) -> str:
    # repr round-trips a float exactly; "" stands for null (Redis hashes hold only strings).
    return "" if value is None else repr(float(value))


def _feature_fields(row: dict[str, Any]) -> dict[str | bytes, bytes | float | int | str]:
    """A row of :func:`latest_features` as the fields of its Redis hash."""
    fields: dict[str | bytes, bytes | float | int | str] = {
        name: _encode_value(row[name]) for name in FEATURES
    }
    fields[VERSION_FIELD] = FEATURE_SET_VERSION
    fields[AS_OF_FIELD] = row["date"].isoformat()
    return fields


def _encode_bar(row: dict[str, Any]) -> str:
    payload = {name: row[name].isoformat() if name == "date" else row[name] for name in _BAR_FIELDS}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _decode_bars(symbol: str, members: list[Any]) -> pl.DataFrame:
    if not members:
        return empty(ADJ_BAR_SCHEMA)
    rows = [json.loads(_text(member)) for member in members]
    frame = pl.DataFrame(
        rows,
        schema={name: ADJ_BAR_SCHEMA[name] for name in _BAR_FIELDS if name != "date"} | {"date": pl.String()},
    )
    return conform(
        frame.with_columns(pl.lit(symbol).alias("symbol"), pl.col("date").str.to_date("%Y-%m-%d")),
        ADJ_BAR_SCHEMA,
    ).sort("date")


def _symbol_batches(frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
    symbols = frame["symbol"].unique(maintain_order=True).to_list()
    for offset in range(0, len(symbols), BATCH_SYMBOLS):
        chosen = symbols[offset : offset + BATCH_SYMBOLS]
        yield frame.filter(pl.col("symbol").is_in(chosen))
