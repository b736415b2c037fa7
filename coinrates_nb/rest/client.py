"""The REST client of CoinAPI's Exchange Rates APIs: history bars, current rates, assets, periods.

Facts from ``../shared/protocol/exrates-rest.md`` (cited as "REST notes"). Built on aiohttp, the
asyncio HTTP client the field uses (ccxt, cryptofeed; ``../shared/NOTES.md``), so it runs on the
collector's own event loop: :class:`RestClient` is the async API, one per event loop.
:class:`SyncRestClient` wraps it for notebook cells and scripts: it owns a private loop on a
daemon thread (as the collector does), so nothing ever nests event loops.

What it does on the wire:

* **The key** travels only in ``X-CoinAPI-Key`` (the OpenAPI specs), only over ``https://`` or
  to loopback (anything else is a ``ConfigError`` at construction); redirects are never
  followed, so the key cannot be forwarded to another host.
* ``Accept-Encoding: gzip``; JSON is decoded with typed msgspec structs (the simulator encodes
  with the same structs), times in one NumPy pass per column (all 7 digits kept; other shapes
  through :mod:`coinrates_nb.times`), and history comes back as NumPy columns (:class:`Bars`),
  never a list of dicts. Bodies of 256 kB or more are decompressed and parsed on a worker
  thread, so a big page does not stall the collector's loop (and its WebSocket) for long.
* **History paging** moves ``time_start`` to the period after the last one received; since the
  start is inclusive, a repeated period is dropped anyway, so page seams have no duplicate
  and no hole (REST notes, "Historical").
* **Errors** join the package's one tree: 401/403 -> :class:`~coinrates_nb.exceptions.AuthenticationError`
  (never retried); 400 -> ``ConfigError`` with the server's text and the parameters sent;
  404 and redirects -> ``ConfigError`` (a wrong URL); 429 -> wait until ``X-RateLimit-Reset``
  (or the project's jittered :func:`~coinrates_nb.retry.backoff` when it is missing), retry,
  count it, and :class:`QuotaExceededError` if the reset is further than ``max_wait``;
  550 -> an empty result ("no data" is not an error); 5xx, timeouts and dropped connections
  -> retried with the jittered backoff, at most ``max_attempts`` tries, then ``TransportError``.
* **Cost**: every response is counted (:class:`RestUsage`: requests, credits, rates, 429s,
  retries, failures; in total and per UTC day). Credits are the ``X-RateLimit-Request-Cost``
  header when present, else ``ceil(items / 100)`` (at least 1) for a 200 or a 550, as CoinAPI
  bills "every 100 items returned as one request" (REST notes, "Rate limits and cost").

UNCONFIRMED readings (REST notes), accepted both ways: a history page may or may not include
the period that contains an unaligned ``time_start``; ``time_period_end`` may be the
``0001-01-01T00:00:00.0000000Z`` sentinel (parsed as NaT); ``X-RateLimit-Reset`` may be an
ISO time, epoch seconds or seconds to wait; ``type_is_crypto`` may be 0/1 or a boolean.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import dataclasses
import datetime as _dt
import difflib
import logging
import math
import random
import ssl as _ssl
import threading
import time
import weakref
import zlib
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import numpy as np
import numpy.typing as npt

from ._inputs import filter_item, filter_items, span_ns
from ._loop import close_loop
from ._secrets import SecretKey, redact, redact_url, split_url_key
from ._threads import BackgroundThread
from ._types import AssetId, Pair, TimeNs
from .config import COINAPI_URL, SIMULATOR_HEADER, is_loopback
from .exceptions import (
    AuthenticationError,
    CollectorError,
    ConfigError,
    MessageError,
    QuotaExceededError,
    ServerError,
    TransportError,
    UnknownAssetError,
    preview,
)
from .retry import backoff
from .times import format_time, parse_time, times_ns

if TYPE_CHECKING:
    import aiohttp
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]

__all__ = [
    "COINAPI_HISTORY_URL",
    "COINAPI_REALTIME_REST_URL",
    "DEFAULT_LIMIT",
    "ITEMS_PER_CREDIT",
    "MAX_LIMIT",
    "NAT",
    "PERIODS",
    "SENTINEL",
    "Asset",
    "Bars",
    "CurrentRate",
    "CurrentRates",
    "Period",
    "QuotaExceededError",
    "RateLimit",
    "RestClient",
    "RestUsage",
    "SyncRestClient",
    "credits_for",
    "normalize_period",
    "parse_bars",
    "period_ns",
    "rest_url_for",
]

logger = logging.getLogger("coinrates_nb.rest")

T = TypeVar("T")

COINAPI_HISTORY_URL: Final = "https://api-historical.exrates.coinapi.io"
"""The Historical REST host (REST notes, "Hosts"); GeoDNS picks the region."""

COINAPI_REALTIME_REST_URL: Final = "https://api-realtime.exrates.coinapi.io"
"""The Realtime REST host: the WebSocket's own host (REST notes, "Hosts")."""

MAX_LIMIT: Final = 100_000
"""The largest ``limit`` of a history request (REST notes: 1..100000)."""

DEFAULT_LIMIT: Final = 100
"""The server's ``limit`` when none is sent (REST notes)."""

ITEMS_PER_CREDIT: Final = 100
"""Every 100 items returned count as one request, rounded up (REST notes, "Rate limits and cost")."""

SENTINEL: Final = "0001-01-01T00:00:00.0000000Z"
"""An end-time sentinel one docs crawl shows (REST notes): parsed as NaT."""

NAT: Final = int(np.iinfo(np.int64).min)
"""int64 nanoseconds of a missing time (``numpy.datetime64("NaT")``) in :class:`Bars` columns."""

OFF_LOOP_BYTES: Final = 256 << 10
"""Response bodies at least this big are decompressed and parsed on a worker thread, not the event loop."""

SAFE_WAIT_MARGIN: Final = 0.05
"""Seconds added to the wait for ``X-RateLimit-Reset``, so the retry lands after the reset."""

_NS: Final = 1_000_000_000


# --------------------------------------------------------------------------- periods


class Period(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``GET /v1/exchangerate/history/periods`` (REST notes, "Historical")."""

    period_id: str
    length_seconds: int = 0
    length_months: int = 0
    unit_count: int = 0
    unit_name: str = ""
    display_name: str = ""


def _period(count: int, unit: str, seconds: int) -> Period:
    suffix = {"second": "SEC", "minute": "MIN", "hour": "HRS", "day": "DAY"}[unit]
    name = f"{count} {unit.title()}{'s' if count > 1 else ''}"
    return Period(period_id=f"{count}{suffix}", length_seconds=count * seconds, unit_count=count, unit_name=unit,
                  display_name=name)


PERIODS: Final[tuple[Period, ...]] = (
    *(_period(n, "second", 1) for n in (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
    *(_period(n, "minute", 60) for n in (1, 2, 3, 4, 5, 6, 10, 15, 20, 30)),
    *(_period(n, "hour", 3600) for n in (1, 2, 3, 4, 6, 8, 12)),
    *(_period(n, "day", 86_400) for n in (1, 2, 3, 5, 7, 10)),
)
"""The documented periods (REST notes, "Historical"), shortest first."""

_BY_ID: Final = {p.period_id: p for p in PERIODS}
_BY_LENGTH: Final = {p.length_seconds * _NS: p.period_id for p in PERIODS}


def normalize_period(value: Any, name: str = "period") -> str:
    """A documented period id from ``"1MIN"`` (any case) or a span of the same length (``"1min"``, ``"1h"``, ``60``).

    A bare number is seconds, like every duration in the package (``_inputs.span_ns``).

    Raises:
        ConfigError: not a documented period; the message lists them, with a suggestion.
    """
    if isinstance(value, str) and value.strip().upper() in _BY_ID:
        return value.strip().upper()
    try:
        ns = span_ns(value, name, allow_none=False)
    except ConfigError:
        ns = None
    if ns is not None and ns in _BY_LENGTH:
        return _BY_LENGTH[ns]
    guess = difflib.get_close_matches(str(value).strip().upper(), list(_BY_ID), n=1) if isinstance(value, str) else []
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    raise ConfigError(f"{name} must be one of CoinAPI's periods ({', '.join(_BY_ID)}) or a span of that length "
                      f"like '1min', not {value!r}{hint}")


def period_ns(period_id: str) -> int:
    """The length of a documented period in nanoseconds (``"1MIN"`` -> 60 s)."""
    return _BY_ID[normalize_period(period_id)].length_seconds * _NS


def credits_for(items: int) -> int:
    """What CoinAPI charges for one response of ``items`` items: ``ceil(items / 100)``, at least 1."""
    return max(1, -(-int(items) // ITEMS_PER_CREDIT))


def rest_url_for(url: str) -> str:
    """The REST base URL that goes with a WebSocket (or REST) URL, without its path.

    CoinAPI's WebSocket host maps to its Historical REST host (REST notes, "Hosts"); any other
    ``ws://``/``wss://`` URL (the simulator, a proxy) keeps its host and port over
    ``http://``/``https://``, so one address serves both. ``http(s)://`` URLs are kept as they
    are, minus a trailing ``/``. A key in the URL is not kept (pass it as ``api_key``).

    Raises:
        ConfigError: not a ws/wss/http/https URL with a host.
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string like 'https://host', not {type(url).__name__}")
    bare, _ = split_url_key(url.strip())
    try:
        parts = urlsplit(bare)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"url is malformed ({exc}): {redact_url(url)!r}") from None
    scheme = parts.scheme.lower()
    if not parts.hostname or scheme not in ("ws", "wss", "http", "https"):
        raise ConfigError(f"url must be ws://, wss://, http:// or https:// with a host, not {redact_url(url)!r}")
    if scheme in ("http", "https"):
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
    if parts.hostname == urlsplit(COINAPI_URL).hostname:
        return COINAPI_HISTORY_URL
    return urlunsplit(("https" if scheme == "wss" else "http", parts.netloc, "", "", ""))


# --------------------------------------------------------------------------- wire shapes (shared with the simulator)


class BarWire(msgspec.Struct, kw_only=True):
    """One history bar as sent (REST notes): ``time_open``, ``time_close`` and the rates are nullable."""

    time_period_start: str
    time_period_end: str | None = None
    time_open: str | None = None
    time_close: str | None = None
    rate_open: float | None = None
    rate_high: float | None = None
    rate_low: float | None = None
    rate_close: float | None = None


class RateWire(msgspec.Struct, kw_only=True):
    """``GET /v1/exchangerate/{base}/{quote}``: one rate (REST notes, "Realtime")."""

    time: str
    asset_id_base: str
    asset_id_quote: str
    rate: float


class QuoteWire(msgspec.Struct, kw_only=True):
    """One entry of ``rates`` in ``GET /v1/exchangerate/{base}``."""

    time: str
    asset_id_quote: str
    rate: float


class RatesWire(msgspec.Struct, kw_only=True):
    """``GET /v1/exchangerate/{base}``: every quote of one base."""

    asset_id_base: str
    rates: list[QuoteWire] = []


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of ``GET /v1/assets`` (only the fields this package reads; others are ignored)."""

    asset_id: str
    name: str | None = None
    type_is_crypto: int | bool | None = None


class ErrorWire(msgspec.Struct, kw_only=True):
    """An error body: ``{"error": "<text>"}`` (REST notes, "Errors")."""

    error: str = ""


_DECODE_BARS: Final = msgspec.json.Decoder(list[BarWire])
_DECODE_RATE: Final = msgspec.json.Decoder(RateWire)
_DECODE_RATES: Final = msgspec.json.Decoder(RatesWire)
_DECODE_ASSETS: Final = msgspec.json.Decoder(list[Asset])
_DECODE_PERIODS: Final = msgspec.json.Decoder(list[Period])
_DECODE_ERROR: Final = msgspec.json.Decoder(ErrorWire)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False, slots=True)
class Bars:
    """History bars of one pair as columns, oldest first, one row per period.

    Times are int64 UTC nanoseconds (:data:`NAT` where the wire had ``null`` or the
    :data:`SENTINEL`); prices are float64, NaN for a period without a rate.
    """

    base: AssetId
    quote: AssetId
    period: str
    start_ns: npt.NDArray[np.int64]
    """``time_period_start`` of each bar."""
    end_ns: npt.NDArray[np.int64]
    """``time_period_end`` (NaT when missing or the sentinel)."""
    time_open_ns: npt.NDArray[np.int64]
    time_close_ns: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]

    @property
    def pair(self) -> Pair:
        return f"{self.base}/{self.quote}"

    def __len__(self) -> int:
        return len(self.start_ns)

    @classmethod
    def empty(cls, base: AssetId, quote: AssetId, period: str) -> Bars:
        """No bars (what a 550 "no data" answer gives)."""
        t, f = np.empty(0, np.int64), np.empty(0, np.float64)
        return cls(base, quote, period, t, t.copy(), t.copy(), t.copy(), f, f.copy(), f.copy(), f.copy())

    def take(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | slice) -> Bars:
        """The rows selected by a mask, indices or a slice."""
        return Bars(self.base, self.quote, self.period, self.start_ns[index], self.end_ns[index],
                    self.time_open_ns[index], self.time_close_ns[index], self.open[index], self.high[index],
                    self.low[index], self.close[index])

    @classmethod
    def concat(cls, parts: Sequence[Bars], base: AssetId, quote: AssetId, period: str) -> Bars:
        """Rows of ``parts`` one after the other (no sorting, no dedupe)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty(base, quote, period)
        if len(parts) == 1:
            return parts[0]
        cols = [np.concatenate([getattr(p, name) for p in parts]) for name in _BAR_COLUMNS]
        return cls(base, quote, period, *cols)

    def frame(self) -> pd.DataFrame:
        """A DataFrame: UTC ``DatetimeIndex`` ``time`` (period start), columns ``open, high, low, close``."""
        import pandas as pd

        index = pd.DatetimeIndex(self.start_ns.view("datetime64[ns]"), name="time").tz_localize("UTC")
        return pd.DataFrame({"open": self.open, "high": self.high, "low": self.low, "close": self.close}, index=index)

    def __repr__(self) -> str:
        span = ""
        if len(self):
            span = f" | {format_time(int(self.start_ns[0]))} .. {format_time(int(self.start_ns[-1]))}"
        return f"<Bars {self.pair} {self.period} | {len(self):,} bars{span}>"


_BAR_COLUMNS: Final = ("start_ns", "end_ns", "time_open_ns", "time_close_ns", "open", "high", "low", "close")


@dataclass(frozen=True, slots=True)
class CurrentRate:
    """One rate from ``GET /v1/exchangerate/{base}/{quote}``."""

    base: AssetId
    quote: AssetId
    time_ns: TimeNs
    rate: float


@dataclass(frozen=True, eq=False, slots=True)
class CurrentRates:
    """Every quote of one base from ``GET /v1/exchangerate/{base}``, as columns."""

    base: AssetId
    quotes: tuple[AssetId, ...]
    time_ns: npt.NDArray[np.int64]
    rate: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.quotes)

    def frame(self) -> pd.DataFrame:
        """A DataFrame indexed by quote: ``time`` (UTC) and ``rate``."""
        import pandas as pd

        times = pd.DatetimeIndex(self.time_ns.view("datetime64[ns]")).tz_localize("UTC")
        return pd.DataFrame({"time": times, "rate": self.rate}, index=pd.Index(list(self.quotes), name="quote"))


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The ``X-RateLimit-*`` / ``X-ConcurrencyLimit-*`` headers of the latest response that had them (REST notes)."""

    limit: int | None = None
    remaining: int | None = None
    used: int | None = None
    request_cost: int | None = None
    reset_ns: TimeNs | None = None
    quota_allocated: int | None = None
    quota_remaining: int | None = None
    quota_overage: int | None = None
    concurrency_limit: int | None = None
    concurrency_remaining: int | None = None


@dataclass(frozen=True, slots=True)
class RestUsage:
    """What REST calls cost: counted in total (:attr:`RestClient.usage`) and per UTC day (:meth:`RestClient.usage_by_day`)."""

    requests: int = 0
    """HTTP requests sent (every attempt, retries included)."""
    credits: int = 0
    """Credits charged: ``X-RateLimit-Request-Cost``, else ``ceil(items / 100)`` (>= 1) for a 200 or 550."""
    rates: int = 0
    """Rates received: history bars and current rates (CoinAPI bills per rate)."""
    throttled: int = 0
    """429 answers."""
    retries: int = 0
    """Attempts after the first one (after a 429, a 5xx, a timeout or a dropped connection)."""
    failures: int = 0
    """Calls that raised after their last attempt (or at once, for 400/401/403/404)."""

    def __add__(self, other: RestUsage) -> RestUsage:
        return RestUsage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))


# --------------------------------------------------------------------------- parsing (pure)


def _decode(decoder: msgspec.json.Decoder[T], body: bytes, what: str) -> T:
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MessageError(f"{what}: the response is not the documented JSON ({exc})", payload=body) from exc


_WIRE_LEN: Final = 28
"""``YYYY-MM-DDTHH:MM:SS.fffffffZ``: CoinAPI's own time shape, the one converted without Python per row."""
_DIGITS: Final = np.array([i for i in range(_WIRE_LEN) if i not in (4, 7, 10, 13, 16, 19, 27)], np.intp)
_SEP_AT: Final = np.array([4, 7, 10, 13, 16, 19, 27], np.intp)
_SEP_IS: Final = np.frombuffer(b"--T::.Z", np.uint8)
_MONTH_DAYS: Final = np.array([0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)
_HEAD: Final = np.dtype([("date", "S10"), ("rest", "S18")])
"""A wire time as its date and the rest, to find where the date changes as fixed-width strings."""


def _number(digits: npt.NDArray[np.uint8], first: int, width: int) -> npt.NDArray[np.int64]:
    """The decimal number in ``width`` digit columns from ``first``."""
    value = digits[:, first].astype(np.int64)
    for k in range(first + 1, first + width):
        value *= 10
        value += digits[:, k]
    return value


def _wire_times(texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Wire times to UTC ns with NumPy only; returns values and a mask of rows left for :func:`parse_time`.

    History has a new whole second in every row (``1SEC`` bars), so the per-second cache of
    :func:`coinrates_nb.times.times_ns` cannot help: here every row's digits are read at once;
    the date, which changes rarely in a time-ordered page, is converted (days-from-civil) once
    per run of equal dates. Any row not in the exact 28-character shape, or with an impossible
    field, is flagged for the one-by-one parser.
    """
    n = len(texts)
    if n == 0:
        return np.zeros(0, np.int64), np.ones(0, bool)
    joined = "".join(texts)
    if len(joined) != _WIRE_LEN * n or not joined.isascii() or set(map(len, texts)) != {_WIRE_LEN}:
        return times_ns(texts)  # mixed shapes: the general path decides row by row
    raw = joined.encode("ascii")
    chars = np.frombuffer(raw, np.uint8).reshape(n, _WIRE_LEN)
    digits = chars[:, _DIGITS] - np.uint8(48)  # uint8: anything below "0" wraps above 9
    ok = (digits <= 9).all(axis=1) & (chars[:, _SEP_AT] == _SEP_IS).all(axis=1)
    dates = np.frombuffer(raw, _HEAD)["date"]
    firsts = np.concatenate([[0], np.flatnonzero(dates[1:] != dates[:-1]) + 1])
    head = digits[firsts]
    year, month, day = _number(head, 0, 4), _number(head, 4, 2), _number(head, 6, 2)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_ok = (month >= 1) & (month <= 12)
    limit = _MONTH_DAYS[np.where(month_ok, month, 0)] - ((month == 2) & ~leap)
    date_ok = month_ok & (day >= 1) & (day <= limit) & (year >= 1678) & (year <= 2261)  # what int64 ns hold
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    days = era * 146_097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719_468
    runs = np.diff(np.append(firsts, n))
    hour, minute, second = _number(digits, 8, 2), _number(digits, 10, 2), _number(digits, 12, 2)
    ok &= np.repeat(date_ok, runs) & (hour <= 23) & (minute <= 59) & (second <= 59)
    seconds = np.repeat(days * 86_400, runs) + hour * 3600 + minute * 60 + second
    return np.where(ok, seconds * _NS + _number(digits, 14, 7) * 100, 0), ~ok


def _time_column(texts: Sequence[str | None], field_name: str, *, nullable: bool) -> npt.NDArray[np.int64]:
    """Wire times to int64 ns in one pass; ``None`` and the :data:`SENTINEL` become NaT (when ``nullable``)."""
    present: list[int] | None = None
    strings: Sequence[str]
    if None in texts:
        if not nullable:
            raise MessageError(f"{field_name} is null", field=field_name, kind=f"bad_{field_name}")
        present = [i for i, t in enumerate(texts) if t is not None]
        strings = [t for t in texts if t is not None]
    else:
        strings = texts  # type: ignore[assignment]  # no None in it
    values, doubt = _wire_times(strings)
    if doubt.any():
        for i in np.flatnonzero(doubt).tolist():
            text = strings[i]
            if nullable and isinstance(text, str) and text.startswith("0001-01-01"):
                values[i] = NAT
                continue
            ns = parse_time(text, field_name)
            if not NAT < ns < (1 << 63):
                raise MessageError("time out of range", field=field_name, payload=text, kind=f"bad_{field_name}")
            values[i] = ns
    if present is None:
        return values
    out = np.full(len(texts), NAT, np.int64)
    out[np.array(present, np.intp)] = values
    return out


def parse_bars(body: bytes, base: AssetId, quote: AssetId, period: str) -> Bars:
    """A history response body to :class:`Bars` (typed decode, every time column in one pass).

    Raises:
        MessageError: the body is not a JSON array of bars, or a time does not parse.
    """
    rows = _decode(_DECODE_BARS, body, f"history {base}/{quote}")
    if not rows:
        return Bars.empty(base, quote, period)
    f = np.float64
    return Bars(
        base, quote, period,
        _time_column([r.time_period_start for r in rows], "time_period_start", nullable=False),
        _time_column([r.time_period_end for r in rows], "time_period_end", nullable=True),
        _time_column([r.time_open for r in rows], "time_open", nullable=True),
        _time_column([r.time_close for r in rows], "time_close", nullable=True),
        np.array([r.rate_open for r in rows], f),  # None -> NaN
        np.array([r.rate_high for r in rows], f),
        np.array([r.rate_low for r in rows], f),
        np.array([r.rate_close for r in rows], f),
    )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(float(raw.strip()))
    except ValueError:
        return None


def _reset_ns(raw: str | None, now_ns: TimeNs) -> TimeNs | None:
    """``X-RateLimit-Reset`` as UTC ns: an ISO time, epoch seconds (or ms), or seconds to wait (UNCONFIRMED)."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            return parse_time(text if text[-1:] == "Z" or "+" in text[10:] else text + "Z", "X-RateLimit-Reset")
        except MessageError:
            return None
    if not math.isfinite(number) or number < 0:
        return None
    if number > 1e11:
        return round(number * 1e6)  # epoch milliseconds
    if number > 1e8:
        return round(number * 1e9)  # epoch seconds
    return now_ns + round(number * 1e9)  # seconds from now


def rate_limit_of(headers: Mapping[str, str], now_ns: TimeNs) -> RateLimit | None:
    """The rate-limit headers of one response, or ``None`` when it carries none (they are added lazily)."""
    if not any(k.lower().startswith(("x-ratelimit-", "x-concurrencylimit-")) for k in headers):
        return None
    return RateLimit(
        limit=_int_header(headers, "X-RateLimit-Limit"),
        remaining=_int_header(headers, "X-RateLimit-Remaining"),
        used=_int_header(headers, "X-RateLimit-Used"),
        request_cost=_int_header(headers, "X-RateLimit-Request-Cost"),
        reset_ns=_reset_ns(headers.get("X-RateLimit-Reset"), now_ns),
        quota_allocated=_int_header(headers, "X-RateLimit-Quota-Allocated"),
        quota_remaining=_int_header(headers, "X-RateLimit-Quota-Remaining"),
        quota_overage=_int_header(headers, "X-RateLimit-Quota-Overage"),
        concurrency_limit=_int_header(headers, "X-ConcurrencyLimit-Limit"),
        concurrency_remaining=_int_header(headers, "X-ConcurrencyLimit-Remaining"),
    )


def _error_text(body: bytes) -> str:
    """The ``error`` of an error body, or a preview of whatever it is."""
    try:
        text = _DECODE_ERROR.decode(body).error
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = ""
    return text or preview(body, 120).strip()


def _unpack(body: bytes, encoding: str) -> bytes:
    """The body without its ``Content-Encoding`` (gzip or deflate).

    aiohttp's own decompression runs on the event loop; doing it here lets big pages be
    decompressed on a worker thread (zlib releases the GIL), so the collector's loop keeps
    reading the WebSocket while history arrives.
    """
    if not body or not encoding or encoding == "identity":
        return body
    if "gzip" not in encoding and "deflate" not in encoding:
        raise MessageError(f"unsupported Content-Encoding {encoding!r}", field="Content-Encoding")
    try:
        return zlib.decompress(body, 47)  # 32 + 15: gzip or zlib header, detected
    except zlib.error as exc:
        raise MessageError(f"the {encoding} body does not decompress ({exc})", field="Content-Encoding") from exc


def _unpack_parse(body: bytes, encoding: str, parse: Callable[[bytes], T]) -> T:
    return parse(_unpack(body, encoding))


def _asset(value: Any, name: str) -> AssetId:
    item = filter_item(value, name)
    if "/" in item:
        raise ConfigError(f"{name} must be one asset id like 'BTC', not the pair {item!r}")
    return item


def _day(now_ns: TimeNs) -> str:
    return _dt.datetime.fromtimestamp(now_ns / 1e9, tz=_dt.UTC).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- the async client


class RestClient:
    """CoinAPI Exchange Rates REST, async, on the event loop that first uses it (one client per loop).

    Args:
        base_url: ``https://api-historical.exrates.coinapi.io`` (:data:`COINAPI_HISTORY_URL`), the
            realtime host, a proxy, or a simulator's ``rest_url``. A key in it (``?apikey=``) is
            moved into the header.
        api_key: sent as ``X-CoinAPI-Key`` only; ``None`` sends no key (the simulator needs none).
        timeout: seconds to connect, and between two reads of a response (a long download is fine).
        max_attempts: tries per request, the first included (429s, 5xx, timeouts, drops).
        backoff_initial, backoff_cap: the jittered backoff between retries (:func:`~coinrates_nb.retry.backoff`).
        max_wait: longest wait for an ``X-RateLimit-Reset``; further away is :class:`QuotaExceededError`.
        page_limit: ``limit`` of each history page (1..100,000). Credits do not depend on it
            (``ceil(items / 100)`` per page), so the largest page is the cheapest in requests.
        concurrency: most requests in flight at once.
        ssl: an ``ssl.SSLContext`` for https (``None``: the system's CAs).
        rng: seeds the backoff jitter (tests).

    Raises:
        ConfigError: the URL is not http(s) with a host, or a key would go over plain http to a
            host that is not loopback.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretKey | str | None = None,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_cap: float = 30.0,
        max_wait: float = 60.0,
        page_limit: int = MAX_LIMIT,
        concurrency: int = 4,
        ssl: _ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not isinstance(base_url, str):
            raise ConfigError(f"base_url must be a string like 'https://host', not {type(base_url).__name__}")
        url, url_key = split_url_key(base_url.strip())
        key = api_key if isinstance(api_key, SecretKey) or api_key is None else SecretKey(api_key)
        if api_key is not None and not isinstance(api_key, (str, SecretKey)):
            raise ConfigError(f"api_key must be a string or SecretKey, not {type(api_key).__name__}")
        if url_key is not None:
            if key is not None and key != SecretKey(url_key):
                raise ConfigError("two different API keys: one in the URL, one as api_key")
            key = SecretKey(url_key)
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ConfigError(f"base_url is malformed ({exc}): {redact_url(url)!r}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            hint = " (rest_url_for() turns a WebSocket URL into its REST URL)" if scheme in ("ws", "wss") else ""
            raise ConfigError(f"base_url must be http:// or https:// with a host, not {redact_url(url)!r}{hint}")
        self.base_url = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        if key is not None and scheme == "http" and not is_loopback(self.base_url):
            raise ConfigError(f"refusing to send the API key over unencrypted http:// to {parts.hostname}; "
                              "use https:// (plain http is allowed only to loopback)")
        for name, value in (("timeout", timeout), ("backoff_initial", backoff_initial), ("backoff_cap", backoff_cap),
                            ("max_wait", max_wait)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, not {value!r}")
        for name, value, low, high in (("max_attempts", max_attempts, 1, 100), ("page_limit", page_limit, 1, MAX_LIMIT),
                                       ("concurrency", concurrency, 1, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{name} must be an integer from {low} to {high}, not {value!r}")
        if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
            raise ConfigError(f"ssl must be an ssl.SSLContext or None, not {type(ssl).__name__}")
        self._key = key
        self.timeout = float(timeout)
        self.max_attempts = max_attempts
        self.backoff_initial = float(backoff_initial)
        self.backoff_cap = float(max(backoff_cap, backoff_initial))
        self.max_wait = float(max_wait)
        self.page_limit = page_limit
        self.concurrency = concurrency
        self._ssl = ssl
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._gate: asyncio.Semaphore | None = None
        self._lock = threading.Lock()
        self._total = RestUsage()
        self._days: dict[str, RestUsage] = {}
        self._assets: dict[AssetId, Asset] | None = None
        self._periods: tuple[Period, ...] | None = None
        self.rate_limit: RateLimit | None = None
        """The rate-limit headers of the latest response that had them."""
        self.simulated = False
        """True once a response came from coinrates_nb's simulator (``X-Coinrates-Simulator``): its data is simulated."""

    # ------------------------------------------------------------------ usage (any thread)

    @property
    def usage(self) -> RestUsage:
        """Totals since this client was made."""
        with self._lock:
            return self._total

    def usage_by_day(self) -> dict[str, RestUsage]:
        """Usage per UTC day (``"YYYY-MM-DD"``), oldest first."""
        with self._lock:
            return dict(sorted(self._days.items()))

    def usage_today(self) -> RestUsage:
        """Usage of the current UTC day (what a per-day budget is checked against)."""
        with self._lock:
            return self._days.get(_day(time.time_ns()), RestUsage())

    def _count(self, **counts: int) -> None:
        delta = RestUsage(**counts)
        day = _day(time.time_ns())
        with self._lock:
            self._total = self._total + delta
            self._days[day] = self._days.get(day, RestUsage()) + delta

    # ------------------------------------------------------------------ lifecycle (the loop's thread)

    def _session_here(self) -> aiohttp.ClientSession:
        import aiohttp

        from . import __version__

        loop = asyncio.get_running_loop()
        if self._session is not None and not self._session.closed:
            if self._session_loop is not loop:
                raise CollectorError("this RestClient belongs to another event loop (aiohttp sessions cannot move "
                                     "between loops); make one RestClient per loop")
            return self._session
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip",
                   "User-Agent": f"coinrates_nb/{__version__} aiohttp/{aiohttp.__version__}"}
        if self._key is not None:
            headers["X-CoinAPI-Key"] = self._key.reveal()  # the one place the key is used (REST notes: the spec's header)
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout, sock_connect=self.timeout,
                                        sock_read=self.timeout)
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=self._ssl if self._ssl is not None else True)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers,
                                              auto_decompress=False, trust_env=False)  # see _unpack
        self._session_loop = loop
        self._gate = asyncio.Semaphore(self.concurrency)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session; idempotent. Caches and counters stay."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ the request loop

    async def _call(self, path: str, params: Mapping[str, str], parse: Callable[[bytes], T],
                    items: Callable[[T], int], empty: Callable[[], T], what: str, *, rates: bool) -> T:
        """GET ``path`` with retries; parse a 200, give ``empty()`` for a 550, raise the package's errors otherwise."""
        import aiohttp

        session = self._session_here()
        assert self._gate is not None
        url = self.base_url + path
        delays = backoff(self.backoff_initial, cap=self.backoff_cap, rng=self._rng)
        secrets = (self._key.reveal(),) if self._key is not None else ()
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._count(retries=1)
            self._count(requests=1)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("GET %s %s (attempt %d)", path, dict(params), attempt)
            try:
                async with self._gate, session.get(url, params=dict(params), allow_redirects=False) as response:
                    body = await response.read()
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {redact(str(exc), secrets)}".rstrip(": ")
                if attempt < self.max_attempts:
                    delay = next(delays)
                    logger.info("%s: %s; retrying in %.2f s (attempt %d of %d)", what, problem, delay, attempt,
                                self.max_attempts)
                    await asyncio.sleep(delay)
                    continue
                self._count(failures=1)
                raise TransportError(f"{what}: no complete response from {self.base_url} after {attempt} "
                                     f"attempt(s) ({problem})") from exc
            now = time.time_ns()
            if SIMULATOR_HEADER in headers:
                self.simulated = True
            limits = rate_limit_of(headers, now)
            if limits is not None:
                self.rate_limit = limits
            cost = None if limits is None else limits.request_cost
            encoding = headers.get("Content-Encoding", "").lower()
            if status == 200:
                try:
                    if len(body) >= OFF_LOOP_BYTES:  # big pages: unpacked and parsed off the (collector's) loop
                        value = await asyncio.get_running_loop().run_in_executor(None, _unpack_parse, body, encoding,
                                                                                 parse)
                    else:
                        value = parse(_unpack(body, encoding))
                except MessageError as exc:
                    self._count(credits=credits_for(0) if cost is None else cost)
                    problem = str(exc)
                    if attempt < self.max_attempts:
                        await asyncio.sleep(next(delays))
                        continue
                    self._count(failures=1)
                    raise
                n = items(value)
                self._count(credits=credits_for(n) if cost is None else cost, rates=n if rates else 0)
                return value
            if status == 550:  # "no data for the requested item": an empty result, not an error (REST notes)
                self._count(credits=credits_for(0) if cost is None else cost)
                logger.debug("%s: 550 no data", what)
                return empty()
            self._count(credits=cost or 0)
            try:
                message = _error_text(_unpack(body, encoding))
            except MessageError:
                message = "(an unreadable compressed body)"
            if status in (401, 403):
                self._count(failures=1)
                raise AuthenticationError(message or "Invalid API key")
            if status == 429:
                self._count(throttled=1)
                reset = None if limits is None else limits.reset_ns
                wait = next(delays) if reset is None else max(0.0, (reset - now) / 1e9) + SAFE_WAIT_MARGIN
                if wait > self.max_wait:
                    self._count(failures=1)
                    when = f" until {format_time(reset)}" if reset is not None else ""
                    raise QuotaExceededError(f"{what}: rate limit or daily quota reached (HTTP 429: {message}); it "
                                             f"frees{when}, later than max_wait={self.max_wait:g} s", reset)
                if attempt < self.max_attempts:
                    logger.warning("%s: HTTP 429 (%s); waiting %.2f s%s", what, message, wait,
                                   " for X-RateLimit-Reset" if reset is not None else "")
                    await asyncio.sleep(wait)
                    continue
                self._count(failures=1)
                raise QuotaExceededError(f"{what}: still HTTP 429 after {attempt} attempt(s): {message}", reset)
            if 500 <= status < 600:
                problem = f"HTTP {status}: {message}"
                if attempt < self.max_attempts:
                    delay = next(delays)
                    logger.info("%s: %s; retrying in %.2f s", what, problem, delay)
                    await asyncio.sleep(delay)
                    continue
                self._count(failures=1)
                raise TransportError(f"{what}: {problem} after {attempt} attempt(s) from {self.base_url}")
            self._count(failures=1)
            if status == 400:
                sent = ", ".join(f"{k}={v}" for k, v in params.items())
                raise ConfigError(f"{what}: the server refused a parameter (HTTP 400: {message}); sent {sent or 'none'}")
            if 300 <= status < 400:
                where = redact_url(headers.get("Location", "?"))
                raise ConfigError(f"{what}: {self.base_url} redirects to {where}; redirects are not followed (the key "
                                  "goes only to the host you named): use the final URL")
            if status == 404:
                raise ConfigError(f"{what}: {self.base_url}{path} was not found (HTTP 404): is the REST URL right?")
            raise ServerError(f"{what}: HTTP {status}: {message}")
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    # ------------------------------------------------------------------ endpoints

    async def history(self, base: AssetId, quote: AssetId, period: str, start_ns: TimeNs, end_ns: TimeNs,
                      limit: int | None = None, *, on_page: Callable[[int], None] | None = None) -> Bars:
        """Bars of ``base/quote`` for every ``period`` overlapping ``[start_ns, end_ns)``, oldest first.

        Pages of ``limit`` bars (default :attr:`page_limit`) are fetched one after the other,
        each starting at the period after the last one received; a repeated period is dropped,
        so seams have no duplicate and no hole. ``on_page(n)`` is called with the new bars of
        each page (progress bars). A 550 (no data) ends the fetch with what was received.

        Raises:
            ConfigError: bad arguments (or a 400 naming the parameter); AuthenticationError;
                QuotaExceededError; TransportError after the last retry; MessageError for a
                body that is not the documented JSON.
        """
        base, quote = _asset(base, "base"), _asset(quote, "quote")
        pid = normalize_period(period)
        step = period_ns(pid)
        page = self.page_limit if limit is None else limit
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_LIMIT:
            raise ConfigError(f"limit must be an integer from 1 to {MAX_LIMIT:,}, not {limit!r}")
        start, end = _ns(start_ns, "start_ns"), _ns(end_ns, "end_ns")
        if end <= start:
            raise ConfigError(f"end_ns ({format_time(end)}) must be after start_ns ({format_time(start)})")
        path = f"/v1/exchangerate/{base}/{quote}/history"
        what = f"history {base}/{quote} {pid}"
        parts: list[Bars] = []
        cursor, last = start, None
        while True:
            params = {"period_id": pid, "time_start": format_time(cursor), "time_end": format_time(end),
                      "limit": str(page)}
            got = await self._call(path, params, lambda body: parse_bars(body, base, quote, pid), len,
                                   lambda: Bars.empty(base, quote, pid), what, rates=True)
            raw = len(got)
            keep = got.start_ns < end
            if last is not None:
                keep &= got.start_ns > last  # the inclusive start repeats the last period (REST notes)
            fresh = got if keep.all() else got.take(keep)
            if len(fresh):
                parts.append(fresh)
                last = int(fresh.start_ns[-1])
            if on_page is not None:
                on_page(len(fresh))
            if raw < page or last is None:
                break  # a short page is the last one (REST notes)
            following = last + step
            if following <= cursor or following >= end:
                break
            cursor = following
        return Bars.concat(parts, base, quote, pid)

    async def current(self, base: AssetId, quote: AssetId, time_ns: TimeNs | None = None) -> CurrentRate | None:
        """The rate of ``base/quote`` now, or at ``time_ns`` in the past; ``None`` for a 550 (no data)."""
        base, quote = _asset(base, "base"), _asset(quote, "quote")
        params = {} if time_ns is None else {"time": format_time(_ns(time_ns, "time_ns"))}

        def parse(body: bytes) -> CurrentRate | None:
            wire = _decode(_DECODE_RATE, body, f"rate {base}/{quote}")
            return CurrentRate(wire.asset_id_base, wire.asset_id_quote, parse_time(wire.time), float(wire.rate))

        return await self._call(f"/v1/exchangerate/{base}/{quote}", params, parse, lambda r: int(r is not None),
                                lambda: None, f"rate {base}/{quote}", rates=True)

    async def current_all(self, base: AssetId, filter_asset_id: str | Iterable[str] | None = None,
                          invert: bool = False, time_ns: TimeNs | None = None) -> CurrentRates:
        """Every quote of ``base`` (optionally only ``filter_asset_id``), ``1/rate`` with ``invert``; empty for a 550."""
        base = _asset(base, "base")
        if not isinstance(invert, bool):
            raise ConfigError(f"invert must be True or False, not {invert!r}")
        params = {"invert": "true" if invert else "false"}
        if filter_asset_id is not None:
            ids = [_asset(i, "filter_asset_id") for i in filter_items(filter_asset_id, "filter_asset_id")]
            if not ids:
                raise ConfigError("filter_asset_id is empty: pass asset ids like ['EUR', 'ETH'] or None")
            params["filter_asset_id"] = ";".join(ids)  # ',' or ';' (REST notes)
        if time_ns is not None:
            params["time"] = format_time(_ns(time_ns, "time_ns"))

        def parse(body: bytes) -> CurrentRates:
            wire = _decode(_DECODE_RATES, body, f"rates {base}")
            times = _time_column([r.time for r in wire.rates], "time", nullable=False)
            return CurrentRates(wire.asset_id_base, tuple(r.asset_id_quote for r in wire.rates), times,
                                np.array([r.rate for r in wire.rates], np.float64))

        def empty() -> CurrentRates:
            return CurrentRates(base, (), np.empty(0, np.int64), np.empty(0, np.float64))

        return await self._call(f"/v1/exchangerate/{base}", params, parse, len, empty, f"rates {base}", rates=True)

    async def assets(self, refresh: bool = False) -> Mapping[AssetId, Asset]:
        """Every asset CoinAPI knows, by id (cached after the first call; ``refresh=True`` asks again)."""
        if self._assets is None or refresh:
            rows: list[Asset] = await self._call("/v1/assets", {}, lambda body: _decode(_DECODE_ASSETS, body, "assets"),
                                                 len, list, "assets", rates=False)
            self._assets = {a.asset_id.upper(): a for a in rows}
        return dict(self._assets)

    async def require_assets(self, items: str | Iterable[str]) -> None:
        """Refuse pairs or asset ids that name an asset CoinAPI does not have.

        A stream filtered on an unknown asset is silent, not an error, on the wire (REST notes,
        "What clients get wrong"); this makes it a clear error up front. An empty asset list
        (a 550) refuses nothing.

        Raises:
            ConfigError: "FOO is not a CoinAPI asset" (with a suggestion when one is close).
        """
        wanted: dict[AssetId, None] = {}
        for item in filter_items(items):
            for asset in item.split("/"):
                wanted.setdefault(asset)
        known = await self.assets()
        if not known:
            return
        unknown = [a for a in wanted if a not in known]
        if not unknown:
            return
        hints = []
        for asset in unknown:
            close = difflib.get_close_matches(asset, list(known), n=1, cutoff=0.75)
            hints.append(f"{asset} (did you mean {close[0]}?)" if close else asset)
        verb = "is not a CoinAPI asset" if len(unknown) == 1 else "are not CoinAPI assets"
        raise UnknownAssetError(", ".join(unknown), (), f"{', '.join(hints)} {verb}; a stream of it would stay silent")

    async def periods(self, refresh: bool = False) -> tuple[Period, ...]:
        """The server's history periods (cached after the first call)."""
        if self._periods is None or refresh:
            rows: list[Period] = await self._call("/v1/exchangerate/history/periods", {},
                                                  lambda body: _decode(_DECODE_PERIODS, body, "periods"), len, list,
                                                  "periods", rates=False)
            self._periods = tuple(rows)
        return self._periods

    def __repr__(self) -> str:
        u = self.usage
        key = " | key [secure]" if self._key is not None else ""
        label = " | simulated" if self.simulated else ""
        return (f"<RestClient {self.base_url}{key}{label} | {u.requests:,} requests | {u.credits:,} credits | "
                f"{u.rates:,} rates | {u.throttled} throttled>")


def _ns(value: Any, name: str) -> TimeNs:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be integer UTC nanoseconds, not {value!r}")
    return int(value)


# --------------------------------------------------------------------------- the sync wrapper


class SyncRestClient(BackgroundThread):
    """:class:`RestClient` for notebook cells and scripts: blocking calls, run on a private loop thread.

    The loop lives on one daemon thread (started on first use or by :meth:`start`), as the
    collector's does, so a call from a cell never nests event loops (no ``nest_asyncio``).
    ``stop()`` closes the HTTP session and ends the thread; it is idempotent and ``with`` works.
    Arguments are :class:`RestClient`'s. Interrupting a call (Ctrl-C) cancels its request.
    """

    def __init__(self, base_url: str, api_key: SecretKey | str | None = None, **options: Any) -> None:
        self.client = RestClient(base_url, api_key, **options)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        _SYNC_CLIENTS.add(self)

    def start(self) -> SyncRestClient:
        """Start the loop thread; idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=self._main, args=(loop, ready), name="coinrates-rest", daemon=True)
            self._loop, self._thread = loop, thread
            thread.start()
            ready.wait(10.0)
        return self

    def _main(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        """Thread body: run the loop until stopped, then end it cleanly (nothing dies silently)."""
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_default_executor())  # the threads that parsed big pages end too
        except BaseException:  # noqa: BLE001 - top of the thread
            logger.error("REST client loop failed", exc_info=True)
        finally:
            try:
                close_loop(loop)
            finally:
                self._loop = None

    def stop(self, timeout: float = 5.0) -> None:
        """Close the session and end the thread; idempotent."""
        with self._lock:
            thread, loop = self._thread, self._loop
            self._thread = None
        if thread is None or loop is None:
            return
        if threading.current_thread() is thread:
            raise CollectorError("SyncRestClient.stop() was called from its own loop thread")
        if thread.is_alive() and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self.client.close(), loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.warning("REST session did not close within %.1f s", timeout)
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:  # the loop closed meanwhile
                pass
            thread.join(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run ``coro`` (a :class:`RestClient` call) on the loop thread; return its future."""
        self.start()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            coro.close()
            raise CollectorError("the REST client's loop thread is not running")
        if threading.current_thread() is thread:
            coro.close()
            raise CollectorError("a blocking SyncRestClient call was made from its own loop thread; await the "
                                 "RestClient (.client) there instead")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = self.submit(coro)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def history(self, base: AssetId, quote: AssetId, period: str, start_ns: TimeNs, end_ns: TimeNs,
                limit: int | None = None, *, on_page: Callable[[int], None] | None = None) -> Bars:
        """Blocking :meth:`RestClient.history` (``on_page`` is called on the loop thread)."""
        return self._run(self.client.history(base, quote, period, start_ns, end_ns, limit, on_page=on_page))

    def current(self, base: AssetId, quote: AssetId, time_ns: TimeNs | None = None) -> CurrentRate | None:
        """Blocking :meth:`RestClient.current`."""
        return self._run(self.client.current(base, quote, time_ns))

    def current_all(self, base: AssetId, filter_asset_id: str | Iterable[str] | None = None, invert: bool = False,
                    time_ns: TimeNs | None = None) -> CurrentRates:
        """Blocking :meth:`RestClient.current_all`."""
        return self._run(self.client.current_all(base, filter_asset_id, invert, time_ns))

    def assets(self, refresh: bool = False) -> Mapping[AssetId, Asset]:
        """Blocking :meth:`RestClient.assets`."""
        return self._run(self.client.assets(refresh))

    def require_assets(self, items: str | Iterable[str]) -> None:
        """Blocking :meth:`RestClient.require_assets`."""
        self._run(self.client.require_assets(items))

    def periods(self, refresh: bool = False) -> tuple[Period, ...]:
        """Blocking :meth:`RestClient.periods`."""
        return self._run(self.client.periods(refresh))

    @property
    def usage(self) -> RestUsage:
        """:attr:`RestClient.usage`."""
        return self.client.usage

    def usage_by_day(self) -> dict[str, RestUsage]:
        """:meth:`RestClient.usage_by_day`."""
        return self.client.usage_by_day()

    @property
    def simulated(self) -> bool:
        """:attr:`RestClient.simulated`."""
        return self.client.simulated

    def __repr__(self) -> str:
        return repr(self.client).replace("<RestClient", "<SyncRestClient", 1)


_SYNC_CLIENTS: weakref.WeakSet[SyncRestClient] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """Close every sync client's session at interpreter exit (no "Unclosed client session" warnings)."""
    for client in list(_SYNC_CLIENTS):
        try:
            client.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - interpreter exit
            pass

