"""Raw bars (and corporate actions) from Alpaca's market-data API through the official ``alpaca-py`` SDK.

Works against real Alpaca and against any Alpaca-compatible server at ``ALPACA_DATA_URL`` (the built-in
paper broker serves market data on its own port). Prices are requested unadjusted
(``Adjustment.RAW``): the pipeline adjusts them itself from the corporate actions, which are fetched
with the SDK's corporate-actions client, so Alpaca and CSV ingests of the same data end up identical.

Two things the SDK does not do for us:

- **Timeouts.** ``alpaca-py`` passes no timeout to ``requests``, so a silent server hangs a fetch
  forever. :func:`make_data_client` installs a session with a default timeout. It replaces the SDK's
  private ``_session`` and sets its private retry settings; ``test_alpaca_source`` fails if an SDK
  upgrade renames them.
- **Errors.** The SDK raises ``APIError``, ``requests`` exceptions and pydantic errors; every one
  becomes a one-line :class:`~trader.data.sources.SourceError` (the failover's signal to try the next
  source) that never contains the API keys.

Daily bars are requested only up to the last *closed* session (and never for the last
:data:`RECENT_DATA_DELAY` after a close): Alpaca answers for a session still trading with a bar of the
day so far, which the pipeline would store as clean. A bar dated after that session is dropped should
a server send one anyway; :attr:`AlpacaSource.last_notes` says what was left out. Minute and hour
bars only keep out of the last :data:`RECENT_DATA_DELAY`.

The SDK itself retries HTTP 429 and 504 (``retry`` times, ``retry_wait`` seconds apart) and follows
``next_page_token`` paging. Symbols are requested in chunks (default 100) to keep URLs short.

The unit tests cover the conversion from SDK models and the error wrapping; the end-to-end test
against the built-in paper broker goes through the broker adapter (``AlpacaBroker.market_data()``,
``tests/integration/broker/test_market_data.py``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import polars as pl
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import Adjustment, CorporateActionsType, DataFeed
from alpaca.data.historical import StockHistoricalDataClient
from alpaca.data.historical.corporate_actions import CorporateActionsClient
from alpaca.data.models import BarSet
from alpaca.data.models.corporate_actions import (
    CashDividend,
    CorporateActionsSet,
    ForwardSplit,
    ReverseSplit,
)
from alpaca.data.requests import CorporateActionsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

from trader.config import Settings
from trader.data.bars import ACTION_SCHEMA, BAR_SCHEMA, BarBatch, empty
from trader.data.sources import SourceError, SourceHealth

if TYPE_CHECKING:  # the calendar loads pandas and exchange-calendars: only daily fetches need it
    from trader.data.calendar import TradingCalendar

#: Daily bars are stamped at midnight New York time; their date is the session date there.
MARKET_TZ = ZoneInfo("America/New_York")
DEFAULT_CHUNK_SIZE = 100
#: Alpaca refuses SIP data younger than 15 minutes to free accounts; never ask for the last minutes.
RECENT_DATA_DELAY = timedelta(minutes=16)
#: Health checks must answer fast; a slow market-data host is as good as a dead one for failover.
HEALTH_TIMEOUT_SECONDS = 3.0

#: Intraday bars carry the bar's start time next to the usual columns (``date`` is its New York date).
INTRADAY_BAR_SCHEMA: dict[str, pl.DataType] = {**BAR_SCHEMA, "timestamp": pl.Datetime("us", "UTC")}

_INTRADAY_UNITS = {TimeFrameUnit.Minute, TimeFrameUnit.Hour}
_ACTION_TYPES = [
    CorporateActionsType.FORWARD_SPLIT,
    CorporateActionsType.REVERSE_SPLIT,
    CorporateActionsType.CASH_DIVIDEND,
]


class _TimeoutSession(requests.Session):
    """A ``requests`` session that applies a default timeout to every request."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(*args, **kwargs)


def harden_session(client: Any, timeout: float, retries: int, retry_wait: int) -> None:
    """Give an ``alpaca-py`` REST client a request timeout and a retry policy, in place.

    ``client`` is any SDK ``RESTClient`` (``StockHistoricalDataClient``, ``CorporateActionsClient``,
    ``TradingClient``...). Its ``requests`` session is replaced by one whose every request times out
    after ``timeout`` seconds, and the SDK's own 429/504 re-send is set to ``retries`` attempts
    ``retry_wait`` seconds apart (``retries=0`` switches it off, as the broker adapter does for order
    submission). These are the SDK's private ``_session``, ``_retry`` and ``_retry_wait`` attributes;
    ``tests/unit/data/test_alpaca_source.py`` and ``tests/unit/broker`` fail if an SDK upgrade renames them.
    """
    client._session = _TimeoutSession(timeout)
    client._retry = retries
    client._retry_wait = retry_wait


def make_data_client(
    api_key: str,
    secret_key: str,
    url: str,
    *,
    timeout: float,
    retries: int = 3,
    retry_wait: int = 3,
) -> StockHistoricalDataClient:
    """An SDK market-data client on ``url`` whose requests time out after ``timeout`` seconds."""
    client = StockHistoricalDataClient(api_key, secret_key, url_override=url)
    harden_session(client, timeout, retries, retry_wait)
    return client


def make_actions_client(
    api_key: str,
    secret_key: str,
    url: str,
    *,
    timeout: float,
    retries: int = 3,
    retry_wait: int = 3,
) -> CorporateActionsClient:
    """An SDK corporate-actions client on ``url`` whose requests time out after ``timeout`` seconds."""
    client = CorporateActionsClient(api_key, secret_key, url_override=url)
    harden_session(client, timeout, retries, retry_wait)
    return client


def _paper_broker_time(settings: Settings) -> dict[str, Any]:
    """``clock`` and ``data_delay`` when the market data comes from the built-in paper broker: its
    own simulated clock, and no delay (its bars are complete at its close; it has no SIP embargo).
    Nothing otherwise, e.g. Alpaca's data with local paper trading: real time, Alpaca's delay."""
    served_by_broker = settings.effective_data_url == str(settings.alpaca_base_url).rstrip("/")
    if not (settings.uses_local_paper_broker and served_by_broker):
        return {}
    return {"clock": _broker_clock(settings), "data_delay": timedelta(0)}


def _broker_clock(settings: Settings) -> Callable[[], datetime]:
    """The broker's own time (``GET /v2/clock``). The built-in paper broker runs a simulated clock,
    and what it serves as today's daily bar is the session so far *by that clock*: judged by the
    system clock instead, a session still trading there would look closed and its partial bar would
    be stored as the day's. A local server without a clock (a data server only, not the paper
    broker) runs in real time: the system clock then."""
    from trader.broker.alpaca import AlpacaBroker
    from trader.broker.errors import BrokerError, NotFoundError

    broker = AlpacaBroker.from_settings(settings)

    def now() -> datetime:
        try:
            return broker.get_clock().timestamp
        except NotFoundError:
            return _utc_now()
        except BrokerError as exc:  # without the broker's time no session can be judged closed
            raise SourceError(f"the broker's clock cannot be read: {exc}") from None

    return now


class AlpacaSource:
    """A :class:`~trader.data.sources.BarSource` over Alpaca's market-data API (see the module doc).

    ``client`` fetches bars, ``health_client`` (default: ``client``) answers health checks and should
    have a short timeout and no retries, ``actions_client`` (``None``: no corporate actions) fetches
    splits and cash dividends. ``timeframe`` is ``TimeFrame.Day`` for daily bars; a minute or hour
    timeframe returns :data:`INTRADAY_BAR_SCHEMA` rows instead. ``calendar`` (default: NYSE) tells
    which session closed last, ``clock`` (default: the system clock, UTC) what time it is, and
    ``data_delay`` how long after a close the server has all of its data (:data:`RECENT_DATA_DELAY`).
    """

    def __init__(
        self,
        client: StockHistoricalDataClient,
        *,
        health_client: StockHistoricalDataClient | None = None,
        actions_client: CorporateActionsClient | None = None,
        feed: DataFeed | None = None,
        timeframe: TimeFrame | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        health_symbol: str = "SPY",
        secrets: Sequence[str] = (),
        calendar: TradingCalendar | None = None,
        clock: Callable[[], datetime] | None = None,
        data_delay: timedelta = RECENT_DATA_DELAY,
    ) -> None:
        self.timeframe = timeframe if timeframe is not None else TimeFrame.Day
        if self.timeframe.unit not in {TimeFrameUnit.Day, *_INTRADAY_UNITS} or (
            self.timeframe.unit == TimeFrameUnit.Day and self.timeframe.amount != 1
        ):
            raise ValueError(f"timeframe {self.timeframe.value} is not supported: use 1Day, minutes or hours")
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.client = client
        self.health_client = health_client if health_client is not None else client
        self.actions_client = actions_client
        self.feed = feed
        self.chunk_size = chunk_size
        self.health_symbol = health_symbol
        base_url = getattr(client, "_base_url", "")  # a str, or the SDK's BaseURL enum
        self.url = str(getattr(base_url, "value", base_url))
        # Values that must never appear in a message (an error body could echo a header back).
        self._secrets = [secret for secret in secrets if secret]
        self._calendar = calendar
        self._clock = clock if clock is not None else _utc_now
        #: How long after a close its data is complete on this server (Alpaca: the SIP embargo).
        self._delay = data_delay
        #: What the last fetch left out and why (sessions still trading), for the command's output.
        self.last_notes: list[str] = []

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        feed: DataFeed | None = None,
        timeframe: TimeFrame | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        include_actions: bool = True,
    ) -> AlpacaSource:
        """The source for the configured data URL, keys, timeout and retry count."""
        key = settings.alpaca_api_key_id.get_secret_value()
        secret = settings.alpaca_api_secret_key.get_secret_value()
        url = settings.effective_data_url
        timeout = settings.broker_timeout_seconds
        retries = settings.broker_max_retries
        health_timeout = min(timeout, HEALTH_TIMEOUT_SECONDS)
        return cls(
            make_data_client(key, secret, url, timeout=timeout, retries=retries),
            health_client=make_data_client(key, secret, url, timeout=health_timeout, retries=0),
            actions_client=(
                make_actions_client(key, secret, url, timeout=timeout, retries=retries)
                if include_actions
                else None
            ),
            feed=feed,
            timeframe=timeframe,
            chunk_size=chunk_size,
            secrets=(key, secret),
            **_paper_broker_time(settings),
        )

    @property
    def name(self) -> str:
        return "alpaca"

    @property
    def intraday(self) -> bool:
        return self.timeframe.unit in _INTRADAY_UNITS

    def health(self) -> SourceHealth:
        """A one-bar query for ``health_symbol`` over the last week; any HTTP answer but an error is OK.

        An empty answer (the symbol is unknown to this server) still proves the server is up and the
        keys are accepted.
        """
        started = time.perf_counter()
        try:
            until = self._clock() - self._delay
            request = StockBarsRequest(
                symbol_or_symbols=[self.health_symbol],
                timeframe=TimeFrame.Day,
                start=until - timedelta(days=7),
                end=until,
                limit=1,
                adjustment=Adjustment.RAW,
                feed=self.feed,
            )
            with self._wrap("health check"):
                self.health_client.get_stock_bars(request)
        except SourceError as exc:
            return SourceHealth(self.name, False, str(exc), _ms_since(started))
        return SourceHealth(self.name, True, "", _ms_since(started))

    def fetch(self, symbols: Sequence[str] | None, start: date, end: date) -> BarBatch:
        """Raw bars of ``symbols`` from ``start`` to ``end`` (New York dates, inclusive) and their actions.

        Alpaca needs an explicit symbol list. Daily bars stop at the last closed session whatever
        ``end`` says (a bar of a session still trading is partial); :attr:`last_notes` says so when
        that cut anything. Corporate actions are fetched from ``start`` to today, because an action
        after ``end`` still adjusts the bars before it.
        """
        if symbols is None:
            raise SourceError("alpaca: give the symbols to fetch (Alpaca has no 'all symbols' bar query)")
        self.last_notes = []
        wanted = list(dict.fromkeys(symbol.strip().upper() for symbol in symbols if symbol.strip()))
        now = self._clock()
        newest = end if self.intraday else self._daily_cutoff(end, now)
        first = datetime.combine(start, clock.min, MARKET_TZ)
        last = min(datetime.combine(newest, clock.max, MARKET_TZ), now - self._delay)
        if not wanted or last < first:
            return BarBatch(bars=empty(INTRADAY_BAR_SCHEMA if self.intraday else BAR_SCHEMA))
        bars = self._drop_unclosed(self._fetch_bars(wanted, first, last), newest)
        actions = self._fetch_actions(wanted, start, max(end, now.astimezone(UTC).date()))
        return BarBatch(bars=bars, actions=actions)

    def _daily_cutoff(self, end: date, now: datetime) -> date:
        """``end``, or the last closed session when ``end`` is later (noted in :attr:`last_notes`)."""
        from trader.data.calendar import CalendarRangeError, trading_calendar

        calendar = self._calendar if self._calendar is not None else trading_calendar()
        try:
            # Closed for us once Alpaca serves its last minutes too (free accounts lag by 15 minutes).
            closed = calendar.last_closed_session(now - self._delay)
        except CalendarRangeError as exc:
            raise SourceError(f"alpaca: cannot tell which session closed last: {exc}") from None
        if end <= closed:
            return end
        self.last_notes.append(
            f"daily bars requested up to {closed}, the last closed session, not {end}: a session "
            "still trading (or closed less than "
            f"{self._delay.seconds // 60} minutes ago) would give a partial bar"
        )
        return closed

    def _fetch_bars(self, wanted: list[str], first: datetime, last: datetime) -> pl.DataFrame:
        frames: list[pl.DataFrame] = []
        for chunk in _chunks(wanted, self.chunk_size):
            request = StockBarsRequest(
                symbol_or_symbols=chunk,
                timeframe=self.timeframe,
                start=first,
                end=last,
                adjustment=Adjustment.RAW,
                feed=self.feed,
            )
            with self._wrap(f"bars for {len(chunk)} symbols ({chunk[0]}...)"):
                barset = self.client.get_stock_bars(request)
                if not isinstance(barset, BarSet):  # a client built with raw_data=True
                    raise TypeError(f"expected a BarSet, got {type(barset).__name__}")
                frames.append(barset_to_frame(barset, intraday=self.intraday))
        return pl.concat(frames)

    def _drop_unclosed(self, bars: pl.DataFrame, newest: date) -> pl.DataFrame:
        """Daily bars dated after ``newest`` are dropped: a server may ignore the request's end."""
        if self.intraday:
            return bars
        kept = bars.filter(pl.col("date").is_null() | (pl.col("date") <= newest))
        if kept.height < bars.height:
            self.last_notes.append(
                f"dropped {bars.height - kept.height} daily bar(s) dated after {newest}, the end "
                "of the request (bars of a session still trading are partial)"
            )
        return kept

    def _fetch_actions(self, symbols: list[str], start: date, end: date) -> pl.DataFrame:
        if self.actions_client is None:
            return empty(ACTION_SCHEMA)
        frames: list[pl.DataFrame] = []
        for chunk in _chunks(symbols, self.chunk_size):
            # limit=None: the request's default (1000) would silently cap the actions of a chunk;
            # without a limit the SDK follows next_page_token to the end.
            request = CorporateActionsRequest(
                symbols=chunk, types=_ACTION_TYPES, start=start, end=end, limit=None
            )
            with self._wrap(f"corporate actions for {len(chunk)} symbols ({chunk[0]}...)"):
                found = self.actions_client.get_corporate_actions(request)
                if not isinstance(found, CorporateActionsSet):
                    raise TypeError(f"expected a CorporateActionsSet, got {type(found).__name__}")
                frames.append(corporate_actions_to_frame(found))
        return pl.concat(frames)

    @contextmanager
    def _wrap(self, what: str) -> Iterator[None]:
        """Turn any SDK, HTTP or response-parsing failure into a one-line :class:`SourceError`."""
        try:
            yield
        except APIError as exc:
            status = status_code_of(exc)
            message = self._clean(_api_message(exc))
            raise SourceError(
                f"alpaca: {what} failed: HTTP {status or '?'} from {self.url}: {message}"
            ) from None
        except requests.RequestException as exc:
            reason = self._clean(network_reason(exc))
            raise SourceError(
                f"alpaca: {what} failed: {type(exc).__name__} talking to {self.url}: {reason}"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            # pydantic's ValidationError is a ValueError: the server answered something unexpected.
            raise SourceError(
                f"alpaca: {what} failed: unexpected response from {self.url}: "
                f"{type(exc).__name__}: {self._clean(str(exc))}"
            ) from None

    def _clean(self, text: str, limit: int = 240) -> str:
        """One line, at most ``limit`` characters, with any key or secret masked."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        line = re.sub(r"\s+", " ", text).strip()
        return line if len(line) <= limit else line[: limit - 3] + "..."


def barset_to_frame(barset: BarSet, *, intraday: bool = False) -> pl.DataFrame:
    """The SDK's ``BarSet`` as :data:`~trader.data.bars.BAR_SCHEMA` rows (``INTRADAY_BAR_SCHEMA``).

    ``date`` is the bar's start time in New York: Alpaca stamps a daily bar at midnight New York time
    (04:00 or 05:00 UTC), so the UTC date would be right too, but not for minute bars after 20:00.
    """
    symbols: list[str] = []
    stamps: list[datetime] = []
    columns: dict[str, list[float]] = {name: [] for name in ("open", "high", "low", "close", "volume")}
    for symbol, bars in barset.data.items():
        for bar in bars:
            symbols.append(bar.symbol or symbol)
            stamp = bar.timestamp
            stamps.append(stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC))
            for name, values in columns.items():
                values.append(getattr(bar, name))
    frame = pl.DataFrame(
        {
            "symbol": pl.Series(symbols, dtype=pl.String),
            "timestamp": pl.Series(stamps, dtype=pl.Datetime("us", "UTC")),
            **{name: pl.Series(values, dtype=pl.Float64) for name, values in columns.items()},
        }
    ).with_columns(
        pl.col("symbol").str.strip_chars().str.to_uppercase(),
        pl.col("timestamp").dt.convert_time_zone(str(MARKET_TZ)).dt.date().alias("date"),
    )
    schema = INTRADAY_BAR_SCHEMA if intraday else BAR_SCHEMA
    return frame.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def corporate_actions_to_frame(actions: CorporateActionsSet) -> pl.DataFrame:
    """Forward/reverse splits and cash dividends as :data:`~trader.data.bars.ACTION_SCHEMA` rows.

    A split's ratio is ``new_rate / old_rate`` (2-for-1: 2.0, 1-for-10 reverse: 0.1). Several actions
    of one symbol on one ex-date merge into one row: ratios multiply, dividends add up. Other action
    types (mergers, spin-offs...) are not adjusted for and are ignored.
    """
    rows: list[tuple[str, date, float, float]] = []
    for items in actions.data.values():
        for item in items:
            if isinstance(item, ForwardSplit | ReverseSplit):
                rows.append((item.symbol, item.ex_date, item.new_rate / item.old_rate, 0.0))
            elif isinstance(item, CashDividend):
                rows.append((item.symbol, item.ex_date, 1.0, item.rate))
    if not rows:
        return empty(ACTION_SCHEMA)
    frame = pl.DataFrame(
        rows,
        schema={
            "symbol": pl.String,
            "ex_date": pl.Date,
            "split_ratio": pl.Float64,
            "cash_dividend": pl.Float64,
        },
        orient="row",
    )
    return (
        frame.group_by("symbol", "ex_date", maintain_order=True)
        .agg(pl.col("split_ratio").product(), pl.col("cash_dividend").sum())
        .with_columns(pl.lit("alpaca").alias("source"))
        .sort("symbol", "ex_date")
        .select(pl.col(name).cast(dtype) for name, dtype in ACTION_SCHEMA.items())
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def status_code_of(exc: APIError) -> int | None:
    """The HTTP status of an ``alpaca-py`` ``APIError``, or ``None`` when it carries no response.

    The SDK's ``status_code`` property digs into the wrapped ``HTTPError``'s response and raises when
    there is none; this never raises.
    """
    try:
        code = exc.status_code
    except Exception:  # the SDK's property digs into the response, which may be absent
        return None
    return int(code) if code is not None else None


def network_reason(exc: requests.RequestException) -> str:
    """The useful end of a ``requests``/``urllib3`` error message, for one-line error reports.

    ``"[Errno 111] Connection refused"`` or ``"Read timed out"`` rather than the connection-pool and
    URL preamble around them; the whole message when neither pattern is found.
    """
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\][^'\")]*", r"(?:Read|Connect|Connection) timed out[^'\")]*"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).rstrip(". ")
    return text


def _api_message(exc: APIError) -> str:
    """The ``message`` of Alpaca's JSON error body, else the body as text."""
    body = str(exc)
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    if isinstance(parsed, dict) and "message" in parsed:
        return str(parsed["message"])
    return body
