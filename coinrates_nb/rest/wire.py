"""The REST API's shapes and pure parsing: periods, wire structs (shared with the simulator), results, rate limits.

No I/O here: :mod:`.client` does the requests. See :mod:`coinrates_nb.rest` for the facts.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import numpy as np
import numpy.typing as npt

from .._inputs import filter_item, span_ns
from .._secrets import redact_url, split_url_key
from .._types import AssetId, Pair, TimeNs
from ..config import COINAPI_URL
from ..exceptions import (
    ConfigError,
    MessageError,
    preview,
)
from ..times import format_time, parse_time, times_ns

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped, unused-ignore]


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
