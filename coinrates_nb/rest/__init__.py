"""The REST client of CoinAPI's Exchange Rates APIs: history bars, current rates, assets, periods.

:mod:`.wire` holds the shapes and the pure parsing (shared with the simulator), :mod:`.client`
the async client, :mod:`.sync` the blocking one.

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

from ..exceptions import QuotaExceededError
from .client import RestClient
from .sync import SyncRestClient
from .wire import (
    COINAPI_HISTORY_URL,
    COINAPI_REALTIME_REST_URL,
    DEFAULT_LIMIT,
    ITEMS_PER_CREDIT,
    MAX_LIMIT,
    NAT,
    PERIODS,
    SENTINEL,
    Asset,
    Bars,
    CurrentRate,
    CurrentRates,
    Period,
    RateLimit,
    RestUsage,
    credits_for,
    normalize_period,
    parse_bars,
    period_ns,
    rate_limit_of,
    rest_url_for,
)

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
    "rate_limit_of",
    "rest_url_for",
]
