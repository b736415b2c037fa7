"""The simulator's REST API: CoinAPI's Exchange Rates REST endpoints, on the WebSocket's own port.

A ``websockets`` server can answer plain HTTP from its ``process_request`` hook
(python-websockets/websockets#1500, ``../shared/NOTES.md``): the :class:`~coinrates_nb.sim.server.Simulator`
hands every GET that is not a WebSocket upgrade to :meth:`RestApi.respond`, so ``sim.rest_url``
(``http://127.0.0.1:<port>``) and ``sim.url`` share one port. Paths, parameters, limits and
errors follow ``../shared/protocol/exrates-rest.md`` ("REST notes"):

* ``GET /v1/exchangerate/history/periods``;
* ``GET /v1/exchangerate/{base}/{quote}/history?period_id&time_start&time_end&limit``: epoch-aligned
  periods overlapping ``[time_start, time_end)`` (the one holding ``time_start`` included), up to
  now, oldest first, ``limit`` 1..100000 (default 100); a period without a rate has null
  ``time_open``/``time_close``/``rate_*``; no period at all (the future, an unknown asset) is 550;
* ``GET /v1/exchangerate/{base}/{quote}[?time=]`` and ``GET /v1/exchangerate/{base}?filter_asset_id=&invert=[&time=]``;
* ``GET /v1/assets[?filter_asset_id=]`` and ``GET /v1/assets/{id}``.

The prices are the WebSocket's (:mod:`._history`): the seeded model's tape for every instant it
priced, so the REST bar of any period the stream covered equals the OHLC of the ticks it
streamed then, and a deterministic past before that. Every response carries the
``X-RateLimit-*`` headers (credits: ``ceil(items / 100)``, at least 1, for a 200 or a 550; 0 for
an error); :attr:`RestApi.ledger` records every request served and what it was charged, the
other side's books for tests. A bad or missing key (when the simulator has one) is a 401
``{"error": "Invalid API key"}``, as on the WebSocket side. Bodies are gzip-compressed when the
request accepts it.

Fault scenarios are methods, callable from any thread, like the WebSocket ones: :meth:`RestApi.throttle`
(429 with ``X-RateLimit-Reset``), :meth:`RestApi.fail` (any status: 401, 403, 400, 5xx, 550),
:meth:`RestApi.slow`, :meth:`RestApi.rate_limit_headers` (drop them), :meth:`RestApi.drop` (a
connection cut mid-body), :meth:`RestApi.inject` (a raw body) and :meth:`RestApi.set_quota` (a
rolling 24 h credit quota). One-shot faults (throttle, fail, drop, inject) queue up and each
answers the next request.

UNCONFIRMED choices (REST notes): a 550 costs 1 credit; multi-day periods are aligned to
1970-01-01; ``X-RateLimit-Reset`` is an ISO time (when the oldest charge leaves the 24 h window).
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

import msgspec
import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .._secrets import PATH_KEY
from .._types import AssetId
from ..exceptions import ConfigError, MessageError
from ..rest.wire import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    PERIODS,
    Asset,
    BarWire,
    ErrorWire,
    QuoteWire,
    RatesWire,
    RateWire,
    credits_for,
    period_ns,
)
from ..times import format_time, parse_time_any
from ._auth import INVALID_KEY_MESSAGE, http_keys, key_matches
from ._history import HOLE_NS, NAT, BarColumns, PricePath
from .prices import REFERENCE

if TYPE_CHECKING:
    from .server import Simulator

__all__ = ["NO_DATA_MESSAGE", "RestApi", "RestRecord", "encode_bars"]

logger = logging.getLogger("coinrates_nb.sim")

NO_DATA_MESSAGE: Final = "You requested specific single item that we don't have at this moment."
"""The body text of a 550 (CoinAPI's wording for "no data")."""

TOO_MANY_MESSAGE: Final = "Too many requests"

DEFAULT_QUOTA: Final = 1_000_000
"""Credits per rolling 24 h before 429s, unless :meth:`RestApi.set_quota` changes it."""

WINDOW_NS: Final = 86_400 * 1_000_000_000
"""The quota's rolling window (REST notes: "until the 24 h rolling window frees it")."""

LEDGER_SIZE: Final = 100_000
"""REST requests the ledger keeps (the totals count every one)."""

CONCURRENCY: Final = 10
"""What ``X-ConcurrencyLimit-Limit`` says."""

CACHE_ENTRIES: Final = 8
CACHE_BYTES: Final = 256 << 20
"""Bodies of final history pages (every period over) are kept: the same query gives the same bytes."""

GZIP_LEVEL: Final = 1
"""Fast compression: the simulator must not be the bottleneck of the client benchmarks."""

GZIP_OFF_LOOP: Final = 64 << 10
"""Bodies larger than this are compressed on a worker thread, so the stream keeps flowing."""

RATE_PATHS: Final = re.compile(r"^/v1/exchangerate/(?!history/periods$)")
"""Paths whose items are rates (history bars and current rates), as billed (REST notes)."""


_NAMES: Final = {
    "BTC": "Bitcoin", "ETH": "Ethereum", "SOL": "Solana", "XRP": "XRP", "ADA": "Cardano", "DOGE": "Dogecoin",
    "LTC": "Litecoin", "DOT": "Polkadot", "LINK": "Chainlink", "AVAX": "Avalanche", "USDT": "Tether",
    "USDC": "USD Coin", "EUR": "Euro", "GBP": "British Pound", "JPY": "Japanese Yen", "CNY": "Chinese Yuan",
    "CHF": "Swiss Franc", "AUD": "Australian Dollar", "CAD": "Canadian Dollar", "USD": "US Dollar",
}

_REASONS: Final = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                   429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                   503: "Service Unavailable", 504: "Gateway Timeout", 550: "No Data"}


@dataclass(frozen=True, slots=True)
class RestRecord:
    """One REST request the simulator answered: what was asked, what it returned and charged."""

    time_ns: int
    path: str
    """The path, without query (and without a ``/APIKEY-`` segment)."""
    params: Mapping[str, str]
    """The query parameters (``apikey`` never kept)."""
    status: int
    items: int
    """Items in the body (bars, rates, assets, periods)."""
    credits: int
    """Credits charged (what ``X-RateLimit-Request-Cost`` said)."""
    gzip: bool
    """The body was sent gzip-compressed."""
    bytes: int
    """Body bytes as sent (compressed when ``gzip``; what was sent before a cut, for a drop)."""
    fault: str | None = None
    """The scenario that shaped the answer: ``throttle``, ``fail``, ``drop``, ``inject``, ``quota``, ``auth``."""
    key_in: tuple[str, ...] = ()
    """Where the request carried a key (never the key): ``x-coinapi-key``, ``authorization``, ``query``, ``path``."""
    accept_encoding: str = ""
    """The request's ``Accept-Encoding`` header."""

    @property
    def rates(self) -> int:
        """Rates delivered: items of the history and current-rate paths (what CoinAPI bills); a cut body delivers none."""
        return self.items if RATE_PATHS.match(self.path) and self.status == 200 and self.fault != "drop" else 0


@dataclass(frozen=True, slots=True)
class _Fault:
    kind: str
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    reset_after: float = 1.0
    credits: int | None = None


@dataclass(slots=True)
class _Reply:
    status: int
    body: bytes
    items: int = 0
    fault: str | None = None
    reset_ns: int | None = None
    gz: bytes | None = None
    """The body gzip-compressed, when already made (cached, or compressed off the loop)."""
    key: tuple[Any, ...] | None = None
    """The cache key of a final history page."""


class _BadRequest(Exception):
    """A parameter the server refuses (400), named."""


_ENCODE = msgspec.json.Encoder()


def _error(status: int, message: str, fault: str | None = None) -> _Reply:
    return _Reply(status, _ENCODE.encode(ErrorWire(error=message)), fault=fault)


def _iso(ns: npt.NDArray[np.int64]) -> list[str | None]:
    """CoinAPI's ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` for a column of UTC ns at once (``None`` for NaT)."""
    text = np.datetime_as_string(ns.view("datetime64[ns]"), unit="ns")
    out: list[str | None] = np.char.add(text.astype("<U27"), "Z").tolist()
    missing = np.flatnonzero(ns == NAT)
    for i in missing.tolist():
        out[i] = None
    return out


def encode_bars(bars: BarColumns, period: int) -> bytes:
    """History bars as the documented JSON array (NaN prices become ``null``)."""
    starts: list[Any] = _iso(bars.start_ns)  # never None: period starts are times
    ends: list[Any] = _iso(bars.start_ns + period)
    opens, closes = _iso(bars.time_open_ns), _iso(bars.time_close_ns)
    rows = [BarWire(time_period_start=s, time_period_end=e, time_open=to, time_close=tc, rate_open=o, rate_high=h,
                    rate_low=lo, rate_close=c)
            for s, e, to, tc, o, h, lo, c in zip(starts, ends, opens, closes, bars.open.tolist(), bars.high.tolist(),
                                                  bars.low.tolist(), bars.close.tolist(), strict=True)]
    return _ENCODE.encode(rows)


def _query_time(params: Mapping[str, str], name: str, *, required: bool) -> int | None:
    """A time parameter in any documented format (``yyyy-MM-ddTHH:mm:ss.fffffff`` ... ``yyyy-MM-dd``; UTC)."""
    raw = params.get(name, "").strip()
    if not raw:
        if required:
            raise _BadRequest(f"Missing required parameter '{name}'.")
        return None
    text = raw + "T00:00" if len(raw) == 10 else raw
    try:
        return parse_time_any(text, name)
    except MessageError:
        raise _BadRequest(f"Invalid value of the '{name}' parameter: {raw!r} is not a time "
                          "(yyyy-MM-ddTHH:mm:ss.fffffff, ...ss, ...mm or yyyy-MM-dd).") from None


class RestApi:
    """The REST side of one :class:`~coinrates_nb.sim.server.Simulator`: routes, prices, faults and the ledger.

    Made by the simulator (``sim.rest``); it starts the price model's tape, so every instant
    the WebSocket prices is kept for history (``tape_size`` instants in full).
    """

    def __init__(self, sim: Simulator, tape_size: int = 200_000) -> None:
        self._sim = sim
        model = sim._model
        # A gap of two ticks or less is the stream's own rhythm, not a hole to bridge.
        hole = max(HOLE_NS, 2 * sim._ticker.step_ns)
        self.path = PricePath(model.specs, sim.seed, model.keep_tape(tape_size), hole_ns=hole)
        self._lock = threading.Lock()
        self._faults: deque[_Fault] = deque()
        self._delay = 0.0
        self._headers_on = True
        self._quota = DEFAULT_QUOTA
        self._charges: deque[tuple[int, int]] = deque()
        self._used = 0
        self._in_flight = 0
        self._ledger: deque[RestRecord] = deque(maxlen=LEDGER_SIZE)
        self._totals = [0, 0, 0]
        """Requests, credits and rates since construction (the ledger keeps only the newest entries)."""
        self._cache: OrderedDict[tuple[Any, ...], tuple[bytes, int, bytes | None]] = OrderedDict()
        self._cache_bytes = 0

    # ------------------------------------------------------------------ observation (any thread)

    @property
    def ledger(self) -> list[RestRecord]:
        """Every request answered, oldest first (the newest 100,000)."""
        with self._lock:
            return list(self._ledger)

    @property
    def requests(self) -> int:
        """Requests answered since construction."""
        with self._lock:
            return self._totals[0]

    @property
    def credits(self) -> int:
        """Credits charged since construction."""
        with self._lock:
            return self._totals[1]

    @property
    def rates(self) -> int:
        """Rates delivered since construction (history bars and current rates)."""
        with self._lock:
            return self._totals[2]

    # ------------------------------------------------------------------ scenarios (any thread)

    def throttle(self, count: int = 1, reset_after: float = 1.0) -> None:
        """Answer the next ``count`` requests with 429 and ``X-RateLimit-Reset`` = now + ``reset_after`` s."""
        _check_count(count)
        if isinstance(reset_after, bool) or not isinstance(reset_after, (int, float)) or reset_after < 0:
            raise ConfigError(f"reset_after must be a non-negative number of seconds, not {reset_after!r}")
        self._queue(count, _Fault("throttle", 429, reset_after=float(reset_after)))

    def fail(self, status: int, count: int = 1, message: str | None = None) -> None:
        """Answer the next ``count`` requests with HTTP ``status`` and ``{"error": message}`` (550 is "no data")."""
        _check_count(count)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigError(f"status must be an HTTP error status (400-599), not {status!r}")
        text = message if message is not None else (
            NO_DATA_MESSAGE if status == 550 else INVALID_KEY_MESSAGE if status == 401 else _REASONS.get(status, "Error"))
        self._queue(count, _Fault("fail", status, _ENCODE.encode(ErrorWire(error=text))))

    def drop(self, count: int = 1) -> None:
        """Cut the next ``count`` responses mid-body: half the body is sent, then the connection closes."""
        _check_count(count)
        self._queue(count, _Fault("drop"))

    def inject(self, body: bytes | str, status: int = 200, count: int = 1,
               headers: Mapping[str, str] | None = None, credits: int | None = None) -> None:
        """Answer the next ``count`` requests with this raw body (e.g. nulls, the sentinel, broken JSON).

        ``credits`` is what they are charged (default: 1 for a 200 or 550, else 0).
        """
        _check_count(count)
        raw = body.encode() if isinstance(body, str) else bytes(body)
        self._queue(count, _Fault("inject", status, raw, tuple((headers or {}).items()), credits=credits))

    def slow(self, seconds: float) -> None:
        """Delay every response by ``seconds`` (0 turns it off); keep it under the server's 10 s open timeout."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds <= 9:
            raise ConfigError(f"seconds must be a number from 0 to 9, not {seconds!r}")
        with self._lock:
            self._delay = float(seconds)
        logger.info("rest scenario: responses delayed by %.3g s", seconds)

    def rate_limit_headers(self, on: bool = True) -> None:
        """Send the ``X-RateLimit-*`` headers (the default) or leave them out (they are "added lazily")."""
        with self._lock:
            self._headers_on = bool(on)

    def set_quota(self, credits: int | None) -> None:
        """Allow ``credits`` per rolling 24 h (``None``: the default 1,000,000); beyond it, 429 until the window frees."""
        if credits is not None and (isinstance(credits, bool) or not isinstance(credits, int) or credits < 0):
            raise ConfigError(f"credits must be an int >= 0 or None, not {credits!r}")
        with self._lock:
            self._quota = DEFAULT_QUOTA if credits is None else credits

    def clear(self) -> None:
        """Forget queued faults and modes (delay, hidden headers, quota); the ledger stays."""
        with self._lock:
            self._faults.clear()
            self._delay = 0.0
            self._headers_on = True
            self._quota = DEFAULT_QUOTA

    def _queue(self, count: int, fault: _Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * count)
        logger.info("rest scenario: the next %d request(s) get %s%s", count, fault.kind,
                    f" {fault.status}" if fault.kind in ("fail", "inject") else "")

    # ------------------------------------------------------------------ serving (the simulator loop)

    async def respond(self, connection: ServerConnection, request: Request) -> Response:
        """Answer one plain HTTP GET (called from the server's ``process_request`` hook)."""
        received = time.time_ns()
        split = urlsplit(request.path)
        path = PATH_KEY.sub("", split.path).rstrip("/") or "/"
        params = {k: v for k, v in parse_qsl(split.query, keep_blank_values=True) if k.lower() != "apikey"}
        accept = request.headers.get("Accept-Encoding", "")
        zipped = "gzip" in accept.lower()
        forms = _key_forms(request, split.query)
        with self._lock:
            fault = self._faults.popleft() if self._faults else None
            delay, headers_on = self._delay, self._headers_on
            self._in_flight += 1
        try:
            if delay:
                await asyncio.sleep(delay)
            key = self._sim._key
            if key is not None and not any(key_matches(k, key) for k in http_keys(request.path, request.headers)):
                reply = _error(401, INVALID_KEY_MESSAGE, "auth")
                logger.info("rest: refused %s with 401: bad or missing API key", path)
            elif fault is not None and fault.kind == "throttle":
                reply = _error(429, TOO_MANY_MESSAGE, "throttle")
                reply.reset_ns = received + round(fault.reset_after * 1e9)
            elif fault is not None and fault.kind in ("fail", "inject"):
                reply = _Reply(fault.status, fault.body, fault=fault.kind)
            elif self._over_quota():
                reply = _error(429, TOO_MANY_MESSAGE + ": the daily quota is spent", "quota")
            else:
                try:
                    reply = await self._route(path, params, received)
                except _BadRequest as exc:
                    reply = _error(400, str(exc))
                except Exception:  # noqa: BLE001 - top of a request: log, answer 500, never kill the server
                    logger.error("rest: %s failed", path, exc_info=True)
                    reply = _error(500, "Internal error of the simulator (see its log)")
                if fault is not None and fault.kind == "drop":
                    reply.fault = "drop"
            if zipped and reply.gz is None and len(reply.body) > GZIP_OFF_LOOP:
                body = reply.body
                reply.gz = await asyncio.get_running_loop().run_in_executor(None, gzip.compress, body, GZIP_LEVEL)
                if reply.key is not None:
                    self._remember(reply.key, reply.body, reply.items, reply.gz)
            return self._send(reply, path, params, zipped, headers_on, fault, received, forms, accept)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _send(self, reply: _Reply, path: str, params: dict[str, str], zipped: bool, headers_on: bool,
              fault: _Fault | None, received: int, forms: tuple[str, ...], accept: str) -> Response:
        """Charge, count, build the HTTP response (headers, gzip, a cut) and record it in the ledger."""
        if reply.fault == "drop":
            credits = 0  # the client never got it: nothing is charged
        elif reply.fault == "inject" and fault is not None and fault.credits is not None:
            credits = fault.credits
        elif reply.status in (200, 550):
            credits = credits_for(reply.items)
        else:
            credits = 0
        now = time.time_ns()
        with self._lock:
            if credits:
                self._charges.append((now, credits))
                self._used += credits
            self._expire(now)
            used, quota, in_flight = self._used, self._quota, self._in_flight
            oldest = self._charges[0][0] if self._charges else now
        body = reply.body
        headers = Headers([("Content-Type", "application/json; charset=utf-8"), ("Connection", "close")])
        if zipped and body:
            body = reply.gz if reply.gz is not None else gzip.compress(body, GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        if headers_on:
            reset = reply.reset_ns if reply.reset_ns is not None else oldest + WINDOW_NS
            remaining = 0 if reply.status == 429 else max(0, quota - used)
            for name, value in (("X-RateLimit-Limit", quota), ("X-RateLimit-Used", used),
                                ("X-RateLimit-Remaining", remaining), ("X-RateLimit-Request-Cost", credits),
                                ("X-RateLimit-Reset", format_time(reset)), ("X-RateLimit-Quota-Allocated", quota),
                                ("X-RateLimit-Quota-Remaining", remaining), ("X-RateLimit-Quota-Overage", 0),
                                ("X-ConcurrencyLimit-Limit", CONCURRENCY),
                                ("X-ConcurrencyLimit-Remaining", max(0, CONCURRENCY - in_flight))):
                headers[name] = str(value)
        if fault is not None and fault.kind == "inject":
            for name, value in fault.headers:
                headers[name] = value
        headers["Content-Length"] = str(len(body))
        sent = body
        if reply.fault == "drop":
            sent = body[:len(body) // 2]  # Content-Length promises the whole body: the client sees a cut
        record = RestRecord(received, path, MappingProxyType(dict(params)), reply.status, reply.items, credits,
                            "Content-Encoding" in headers, len(sent), reply.fault, forms, accept)
        with self._lock:
            self._ledger.append(record)
            self._totals[0] += 1
            self._totals[1] += credits
            self._totals[2] += record.rates
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("rest: %s %s -> %d (%d items, %d credits, %d bytes%s)", path, params, reply.status,
                         reply.items, credits, len(sent), f", {reply.fault}" if reply.fault else "")
        return Response(reply.status, _REASONS.get(reply.status, "Error"), headers, sent)

    def _over_quota(self) -> bool:
        with self._lock:
            self._expire(time.time_ns())
            return self._used >= self._quota

    def _expire(self, now: int) -> None:
        """Drop charges older than the rolling window (lock held)."""
        charges = self._charges
        while charges and charges[0][0] <= now - WINDOW_NS:
            self._used -= charges.popleft()[1]

    # ------------------------------------------------------------------ routes

    async def _route(self, path: str, params: dict[str, str], now: int) -> _Reply:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return _error(404, f"Not found: {path}")
        rest = parts[1:]
        if rest == ["exchangerate", "history", "periods"]:
            return _Reply(200, _ENCODE.encode(list(PERIODS)), len(PERIODS))
        if rest[:1] == ["assets"] and len(rest) <= 2:
            return self._assets(rest[1].upper() if len(rest) == 2 else None, params)
        if rest[:1] == ["exchangerate"]:
            ids = [p.upper() for p in rest[1:]]
            if len(ids) == 3 and ids[2] == "HISTORY":
                return await self._history(ids[0], ids[1], params, now)
            if len(ids) == 2:
                return self._current(ids[0], ids[1], params, now)
            if len(ids) == 1:
                return self._current_all(ids[0], params, now)
        return _error(404, f"Not found: {path}")

    def _known(self, asset: AssetId) -> bool:
        return asset in self._sim._known or asset == REFERENCE

    def _origin(self, now: int) -> int:
        """Absolute ns of the model's elapsed 0, pricing "now" first when nobody is streaming.

        While clients are connected the ticker keeps the tape current (and an extra instant
        would be one the stream never sent); otherwise the model is advanced to ``now`` here,
        so history reaches the present and the WebSocket later continues from it.
        """
        sim = self._sim
        ticker = sim._ticker
        if ticker.model_ns is None or not sim._clients:
            ticker.tick(now, ())
        assert ticker.model_ns is not None
        return ticker.model_ns - sim._model.elapsed_ns

    async def _history(self, base: AssetId, quote: AssetId, params: dict[str, str], now: int) -> _Reply:
        period_id = params.get("period_id", "").strip().upper()
        if not period_id:
            raise _BadRequest("Missing required parameter 'period_id'.")
        try:
            step = period_ns(period_id)
        except ConfigError:
            raise _BadRequest(f"Invalid value of the 'period_id' parameter: {period_id!r} is not a period "
                              "(see /v1/exchangerate/history/periods).") from None
        start = _query_time(params, "time_start", required=True)
        end = _query_time(params, "time_end", required=False)
        raw_limit = params.get("limit", str(DEFAULT_LIMIT)).strip()
        try:
            limit = int(raw_limit)
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            raise _BadRequest(f"Invalid value of the 'limit' parameter: {raw_limit!r} (1 to {MAX_LIMIT}).")
        assert start is not None
        if end is not None and end <= start:
            raise _BadRequest("Invalid value of the 'time_end' parameter: it must be after time_start.")
        if not (self._known(base) and self._known(quote)) or base == quote:
            return _error(550, NO_DATA_MESSAGE)
        origin = self._origin(now)
        first = max(0, start) // step * step
        stop = now if end is None else min(end - 1, now)  # periods that have started, before time_end
        count = 0 if stop < first else (stop - first) // step + 1
        n = min(limit, count)
        if n <= 0:
            return _error(550, NO_DATA_MESSAGE)
        starts = first + np.arange(n, dtype=np.int64) * step
        last_end = int(starts[-1]) + step
        final = self._sim._ticker.model_ns is not None and last_end <= self._sim._ticker.model_ns
        key = ("history", base, quote, period_id, int(starts[0]), n, origin)
        if final:
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                return _Reply(200, hit[0], hit[1], gz=hit[2], key=key if hit[2] is None else None)
        known = self.path.known(int(starts[0]), last_end, origin)  # read the tape here, on its own thread
        path = self.path

        def build() -> bytes:
            return encode_bars(path.bars(base, quote, starts, step, origin, known), step)

        body = await asyncio.get_running_loop().run_in_executor(None, build)  # keeps the stream flowing
        if final:
            self._remember(key, body, n, None)
        return _Reply(200, body, n, key=key if final else None)

    def _remember(self, key: tuple[Any, ...], body: bytes, items: int, gz: bytes | None) -> None:
        with self._lock:
            old = self._cache.pop(key, None)
            if old is not None:
                self._cache_bytes -= len(old[0]) + len(old[2] or b"")
            self._cache[key] = (body, items, gz)
            self._cache_bytes += len(body) + len(gz or b"")
            while len(self._cache) > CACHE_ENTRIES or self._cache_bytes > CACHE_BYTES:
                _, (plain, _, packed) = self._cache.popitem(last=False)
                self._cache_bytes -= len(plain) + len(packed or b"")

    def _rate(self, base: AssetId, quote: AssetId, at: int | None, now: int) -> tuple[int, float] | None:
        origin = self._origin(now)
        return self.path.rate_at(base, quote, min(now, at) if at is not None else now, origin)

    def _current(self, base: AssetId, quote: AssetId, params: dict[str, str], now: int) -> _Reply:
        at = _query_time(params, "time", required=False)
        if not (self._known(base) and self._known(quote)) or base == quote:
            return _error(550, NO_DATA_MESSAGE)
        found = self._rate(base, quote, at, now)
        if found is None:
            return _error(550, NO_DATA_MESSAGE)
        t, rate = found
        return _Reply(200, _ENCODE.encode(RateWire(time=format_time(t), asset_id_base=base, asset_id_quote=quote,
                                                   rate=rate)), 1)

    def _current_all(self, base: AssetId, params: dict[str, str], now: int) -> _Reply:
        at = _query_time(params, "time", required=False)
        invert = params.get("invert", "false").strip().lower()
        if invert not in ("true", "false", ""):
            raise _BadRequest(f"Invalid value of the 'invert' parameter: {invert!r} (true or false).")
        if not self._known(base):
            return _error(550, NO_DATA_MESSAGE)
        wanted = _ids(params.get("filter_asset_id"))
        quotes = [a for a in self._sim._known if a != base and (wanted is None or a in wanted)]
        rows = []
        for quote in quotes:
            found = self._rate(base, quote, at, now)
            if found is not None:
                t, rate = found
                rows.append(QuoteWire(time=format_time(t), asset_id_quote=quote,
                                      rate=1.0 / rate if invert == "true" else rate))
        if not rows:
            return _error(550, NO_DATA_MESSAGE)
        return _Reply(200, _ENCODE.encode(RatesWire(asset_id_base=base, rates=rows)), len(rows))

    def _assets(self, one: AssetId | None, params: dict[str, str]) -> _Reply:
        wanted = {one} if one is not None else _ids(params.get("filter_asset_id"))
        rows = [Asset(asset_id=a, name=_NAMES.get(a, a), type_is_crypto=0 if a == REFERENCE or
                      self._sim._model.specs[a].kind == "fiat" else 1)
                for a in self._sim._known if wanted is None or a in wanted]
        if one is not None and not rows:
            return _error(550, NO_DATA_MESSAGE)
        return _Reply(200, _ENCODE.encode(rows), len(rows))

    def __repr__(self) -> str:
        with self._lock:
            n, credits, queued = self._totals[0], self._totals[1], len(self._faults)
        return f"<RestApi {n:,} requests | {credits:,} credits | {queued} fault(s) queued>"


def _key_forms(request: Request, query: str) -> tuple[str, ...]:
    """Where a request carries a key, by the documented forms (``_auth.http_keys``), without reading the key."""
    forms = []
    if request.headers.get("X-CoinAPI-Key"):
        forms.append("x-coinapi-key")
    if request.headers.get("Authorization"):
        forms.append("authorization")
    if any(k.lower() == "apikey" for k, _ in parse_qsl(query, keep_blank_values=True)):
        forms.append("query")
    if PATH_KEY.search(urlsplit(request.path).path):
        forms.append("path")
    return tuple(forms)


def _ids(raw: str | None) -> set[str] | None:
    """``filter_asset_id``: ids separated by ``,`` or ``;`` (REST notes); ``None`` when absent."""
    if raw is None or not raw.strip():
        return None
    return {p.strip().upper() for p in re.split(r"[;,]", raw) if p.strip()}


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"count must be an int >= 1, not {count!r}")

