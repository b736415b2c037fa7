"""The async REST client: requests, paging, retries, errors into the tree, and what every response costs."""

from __future__ import annotations

import asyncio
import difflib
import logging
import math
import random
import ssl as _ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from .._inputs import filter_items
from .._secrets import SecretKey, redact, redact_url, resolve_key, split_url_key
from .._types import AssetId, TimeNs
from ..config import SIMULATOR_HEADER, is_loopback
from ..exceptions import (
    AuthenticationError,
    CollectorError,
    ConfigError,
    MessageError,
    QuotaExceededError,
    ServerError,
    TransportError,
    UnknownAssetError,
)
from ..retry import backoff
from ..times import format_time, parse_time
from .wire import (
    _DECODE_ASSETS,
    _DECODE_PERIODS,
    _DECODE_RATE,
    _DECODE_RATES,
    MAX_LIMIT,
    OFF_LOOP_BYTES,
    SAFE_WAIT_MARGIN,
    Asset,
    Bars,
    CurrentRate,
    CurrentRates,
    Period,
    RateLimit,
    RestUsage,
    T,
    _asset,
    _day,
    _decode,
    _error_text,
    _time_column,
    _unpack,
    _unpack_parse,
    credits_for,
    normalize_period,
    parse_bars,
    period_ns,
    rate_limit_of,
)

if TYPE_CHECKING:
    import aiohttp

logger = logging.getLogger("coinrates_nb.rest")



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
        key = resolve_key(api_key)
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

    @property
    def has_key(self) -> bool:
        """Whether requests carry an API key (never the key itself)."""
        return self._key is not None

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

        from .. import __version__

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
