"""The online store: the last N adjusted bars and the latest features of each symbol, in Redis.

It serves readers that need a symbol's newest features without scanning Parquet (a strategy or a
dashboard polling during the day); the built-in strategies score from the adjusted store and the Qlib
export, so nothing in a trading day depends on it. Values come from the same feature functions as the
offline path (:mod:`trader.data.features`), computed over the bars kept here, and each stored set of
features carries the feature-set version and the date it is as of.

Keys (all under ``prefix``, which ``trader data`` sets to ``REDIS_KEY_PREFIX`` + :data:`KEY_PREFIX`):

- ``bars:<SYMBOL>``: sorted set, score = the bar's date as a proleptic ordinal, member = the bar as
  canonical JSON (sorted keys). One member per date. Trimmed to the newest ``keep_bars`` members.
- ``features:<SYMBOL>``: hash of feature name → value (empty string for null), plus ``_version`` (the
  feature-set version) and ``_as_of`` (ISO date of the bar the values are for).
- ``symbols``: set of the symbols with bars.

Two ways to write:

- :meth:`OnlineStore.replace_symbols` (what the ingest pipeline uses) makes the store mirror the
  adjusted store for the given symbols: each symbol's bars are deleted and rebuilt from the newest
  ``keep_bars`` clean bars, and its features are computed from exactly those bars, in the same
  ``MULTI``/``EXEC`` transaction. A bar that left the adjusted store (quarantined after a correction)
  leaves Redis, the features move back to the newest bar still held, and a symbol without any clean
  bar loses its bars, its features and its place in ``symbols``. Replacing with the same bars again
  changes nothing.
- :meth:`OnlineStore.push_bars` + :meth:`OnlineStore.update_features` merge bars by date (a pushed bar
  replaces whatever its date held, other dates are kept): for appending intraday or day-by-day bars.
  They never remove a date, so they cannot follow a bar out of the adjusted store.

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

#: A mapping as redis-py takes it: the fields of a hash, or the members and scores of a sorted set.
_Mapping = dict[str | bytes, bytes | float | int | str]


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

        A merge: dates not in ``adj_bars`` keep what they held, so a bar that was removed upstream
        (quarantined after a correction) stays. To mirror the adjusted store, use
        :meth:`replace_symbols`.
        """
        recent = self._recent(adj_bars)
        if recent.is_empty():
            return 0
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

    def replace_symbols(self, adj_bars: pl.DataFrame, symbols: Sequence[str] = ()) -> int:
        """Make the store hold exactly ``adj_bars``' newest bars, and their features, for each symbol.

        ``adj_bars`` (:data:`~trader.data.bars.ADJ_BAR_SCHEMA`'s columns) is each symbol's clean
        history as the adjusted store holds it (at least its newest ``keep_bars`` bars). For every
        symbol of ``adj_bars`` and of ``symbols``, in one ``MULTI``/``EXEC`` per batch of symbols:

        - its bars are deleted and rebuilt from its newest ``keep_bars`` bars in ``adj_bars``, so a date
          missing from ``adj_bars`` (a bar quarantined since it was pushed) is gone from Redis;
        - its features are recomputed from exactly the bars written (decoded back from the stored
          members), so ``_as_of`` is the newest bar Redis holds;
        - a symbol of ``symbols`` without any row in ``adj_bars`` (none of its bars is clean) loses its
          bars and features and is removed from :meth:`symbols`.

        Idempotent: the same ``adj_bars`` again leaves every key as it was. Returns the bars written.
        """
        recent = self._recent(adj_bars)
        by_symbol = {
            str(symbol): rows
            for (symbol,), rows in recent.partition_by("symbol", as_dict=True, maintain_order=True).items()
        }
        chosen = sorted(set(by_symbol) | {str(symbol) for symbol in symbols})
        written = 0
        for offset in range(0, len(chosen), BATCH_SYMBOLS):
            batch = chosen[offset : offset + BATCH_SYMBOLS]
            members = {symbol: _encode_bars(by_symbol[symbol]) for symbol in batch if symbol in by_symbol}
            # Features from the bars exactly as Redis will hold them (the JSON round trip), not from
            # the frame they were encoded from.
            stored = [_decode_bars(symbol, list(encoded)) for symbol, encoded in members.items()]
            features: dict[str, _Mapping] = {}
            if stored:
                latest = latest_features(pl.concat(stored))
                features = {row["symbol"]: _feature_fields(row) for row in latest.iter_rows(named=True)}
            pipe = self.client.pipeline(transaction=True)
            for symbol in batch:
                bars_key, features_key = self._bars_key(symbol), self._features_key(symbol)
                pipe.delete(bars_key, features_key)
                if symbol in members:
                    pipe.zadd(bars_key, members[symbol])
                    pipe.hset(features_key, mapping=features[symbol])
                    pipe.sadd(self._symbols_key, symbol)
                    written += len(members[symbol])
                else:
                    pipe.srem(self._symbols_key, symbol)
            pipe.execute()
        return written

    def _recent(self, adj_bars: pl.DataFrame) -> pl.DataFrame:
        """The newest ``keep_bars`` bars of each symbol, sorted, one per date (the last one given wins)."""
        bars = conform(adj_bars, ADJ_BAR_SCHEMA).filter(
            pl.col("symbol").is_not_null() & pl.col("date").is_not_null()
        )
        return (
            bars.with_row_index("_order")
            .sort([*KEY, "_order"])
            .unique(subset=list(KEY), keep="last", maintain_order=True)
            .drop("_order")
            .group_by("symbol", maintain_order=True)
            .tail(self.keep_bars)
        )

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
        that feature as null; a symbol without bars has its stored features (if any) deleted and is
        not counted.
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
            write = self.client.pipeline(transaction=True)
            for symbol, frame in zip(batch, frames, strict=True):
                if frame.is_empty():
                    # No bars, no features: never serve values for bars the store no longer holds.
                    write.delete(self._features_key(symbol))
                    write.srem(self._symbols_key, symbol)
            latest = latest_features(pl.concat(present)) if present else pl.DataFrame()
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


def _feature_fields(row: dict[str, Any]) -> _Mapping:
    """A row of :func:`latest_features` as the fields of its Redis hash."""
    fields: _Mapping = {name: _encode_value(row[name]) for name in FEATURES}
    fields[VERSION_FIELD] = FEATURE_SET_VERSION
    fields[AS_OF_FIELD] = row["date"].isoformat()
    return fields


def _encode_bar(row: dict[str, Any]) -> str:
    payload = {name: row[name].isoformat() if name == "date" else row[name] for name in _BAR_FIELDS}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _encode_bars(rows: pl.DataFrame) -> _Mapping:
    """One symbol's bars as the members and scores of its sorted set."""
    return {
        _encode_bar(row): row["date"].toordinal() for row in rows.select(_BAR_FIELDS).iter_rows(named=True)
    }


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
