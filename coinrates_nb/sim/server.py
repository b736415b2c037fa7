"""A local, protocol-faithful Exchange Rates WebSocket server, with fault scenarios.

:class:`Simulator` is a real ``websockets`` server on ``127.0.0.1`` that speaks the documented
protocol (``../shared/protocol/exrates-websocket.md``, cited as "§"): hello/subscribe/unsubscribe
scopes, ``exrate`` updates from a seeded :class:`~coinrates_nb.sim.prices.PriceModel`, per-pair
throttling, heartbeats, WebSocket pings, ``error``-then-close, ``reconnect`` notices and the
slow-consumer overflow. Scenario methods (drop, stall, pause, inject, ...) are callable from any
thread; they run on the simulator's own event loop, which lives on one daemon thread.

Every frame is built and parsed with :mod:`coinrates_nb.messages`, so the simulator and the
client share one definition of the wire format.

Choices where the protocol notes say UNCONFIRMED (each is also marked where it is made):

* a bad or missing key is answered in-band (``error`` "Invalid API key", then close), or with
  HTTP 401 before the upgrade when ``auth_failure="http401"`` (§2.3);
* a key may come as ``X-CoinAPI-Key``, ``Authorization`` (raw or Basic), ``?apikey=``, a
  ``/APIKEY-<key>`` path segment, or ``apikey`` in the first hello/subscribe body (§2.1, §2.2);
* an asset id ``X`` in the filter selects ``X/USD`` plus every streamed pair with ``X`` as base
  or quote; a ``BASE/QUOTE`` item matches exactly; matching is case-insensitive because
  ``messages`` upper-cases items; unknown assets are filtered out silently (§3.3);
* only ``hello`` sets ``heartbeat``; ``subscribe``/``unsubscribe`` leave it as it is (§3.3);
  ``subscribe`` may change the throttle; a first ``subscribe`` acts as a ``hello`` (§3.1);
* unsubscribe removes exactly the listed items; it cannot carve an asset out of an unfiltered
  stream (§3.3);
* ``BASE_AND_QUOTE_TO_REF`` pairs are recomputed and sent at most once per ``cross_interval``
  seconds (1 s by default, as the server composes them, §4.1);
* after an ``error`` the server closes with code 1008; a ``reconnect`` deadline closes with
  1001 (§4.4, §5 "close codes");
* the heartbeat is ``{"type":"hearbeat"}`` with no ``time`` field, the documented form (§4.3).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import logging
import math
import os
import re
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .._loop import close_loop
from .._types import AssetId, FilterItem, Pair, TimeNs, split_pair
from ..exceptions import ConfigError, MessageError, TransportError, preview
from ..messages import (
    ClientMessage,
    ErrorMessage,
    ExchangeRate,
    Heartbeat,
    Hello,
    Reconnect,
    Subscribe,
    Unsubscribe,
    parse_client,
)
from .prices import REFERENCE, AssetSpec, PriceModel

__all__ = [
    "INVALID_KEY_MESSAGE",
    "OVERFLOW_MESSAGE",
    "LedgerEntry",
    "Route",
    "ServerScope",
    "Simulator",
    "http_keys",
    "main",
    "routes_for",
]

logger = logging.getLogger("coinrates_nb.sim")

T = TypeVar("T")

INVALID_KEY_MESSAGE: Final = "Invalid API key"
"""The documented text of the bad-key error (§2.3, §4.4)."""

OVERFLOW_MESSAGE: Final = "Reached maximum allowed buffered messages for this connection."
"""The documented text of the slow-consumer error (§4.4, §5)."""

FIRST_MESSAGE_ERROR: Final = "The first message must be hello or subscribe"
"""Wording UNCONFIRMED (§4.4): sent when a connection opens with ``unsubscribe`` (§3.1)."""

CLOSE_AFTER_ERROR: Final = 1008
"""Close code after an ``error`` (policy violation). The real code is UNCONFIRMED (§5)."""

CLOSE_RECONNECT: Final = 1001
"""Close code at a ``reconnect`` deadline (going away): the server is restarting (§4.2)."""

BASE_ALL_CROSSES_TO_REF: Final = "BASE_ALL_CROSSES_TO_REF"
BASE_AND_QUOTE_TO_REF: Final = "BASE_AND_QUOTE_TO_REF"

CLOSE_TIMEOUT: Final = 2.0
"""Seconds a closing handshake may take before the TCP connection is aborted."""

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0
CALL_TIMEOUT: Final = 10.0
"""Seconds a scenario call from another thread waits for the simulator loop."""

HEARTBEAT_POLL: Final = 0.05
"""Seconds between re-checks while a connection is not eligible for a heartbeat."""

LEDGER_CONNECTIONS: Final = 256
"""Ledgers of at most this many most recent connections are kept."""

_TIME_QUANTUM: Final = 100
"""Wire times have 7 fractional digits: 100 ns steps (§7)."""

_HEARTBEAT_TEXT: Final = Heartbeat().to_json()

LedgerEntry = tuple[Pair, TimeNs, float]
"""One ``exrate`` as sent: pair, wire time (UTC ns) and rate."""

AuthFailure = Literal["error", "http401"]


# --------------------------------------------------------------------------- pure: scope and routes


@dataclass
class ServerScope:
    """What one connection asked for: the server side of hello/subscribe/unsubscribe (§3.1).

    Pure: fed parsed client messages, it answers which pairs to stream (see :func:`routes_for`).
    """

    started: bool = False
    """True once a ``hello`` or ``subscribe`` opened the stream."""
    unfiltered: bool = False
    """True when a ``hello`` omitted ``subscribe_filter_asset_id``: stream every crypto vs USD."""
    items: list[FilterItem] = field(default_factory=list)
    heartbeat: bool = False
    update_limit_ms: int | None = None

    def apply(self, msg: ClientMessage) -> None:
        """Apply one client message: ``hello`` replaces, ``subscribe`` adds, ``unsubscribe`` removes."""
        if isinstance(msg, Hello) or (isinstance(msg, Subscribe) and not self.started):
            # A first subscribe opens the stream like a hello (§3.1: "hello or subscribe").
            self.started = True
            self.unfiltered = msg.assets is None
            self.items = list(msg.assets or ())
            self.heartbeat = msg.heartbeat
            self.update_limit_ms = msg.update_limit_ms
        elif isinstance(msg, Subscribe):
            # UNCONFIRMED (§3.3): heartbeat inside subscribe is ignored; a throttle given is applied.
            self.items.extend(i for i in (msg.assets or ()) if i not in self.items)
            if msg.update_limit_ms is not None:
                self.update_limit_ms = msg.update_limit_ms
        elif isinstance(msg, Unsubscribe):
            # Exact item removal only (§3.3: overlap handling UNCONFIRMED).
            gone = set(msg.assets or ())
            self.items = [i for i in self.items if i not in gone]


@dataclass(frozen=True, slots=True)
class Route:
    """One pair a connection streams, with how its rate is typed (§4.1)."""

    pair: Pair
    base: AssetId
    quote: AssetId
    rate_type: str
    cross: bool
    """True for a non-USD quote: composed as ``BASE/USD * USD/QUOTE`` (``BASE_AND_QUOTE_TO_REF``)."""


def _route(base: AssetId, quote: AssetId) -> Route:
    cross = quote != REFERENCE
    return Route(f"{base}/{quote}", base, quote, BASE_AND_QUOTE_TO_REF if cross else BASE_ALL_CROSSES_TO_REF, cross)


def routes_for(scope: ServerScope, known: Iterable[AssetId], crypto: Iterable[AssetId]) -> tuple[Route, ...]:
    """The pairs a scope streams, in a stable order.

    The unfiltered stream is every crypto asset vs USD. An asset id ``X`` selects ``X/USD`` (if
    ``X`` is known) and every unfiltered pair with ``X`` as base or quote (so ``"USD"`` selects
    them all); a ``BASE/QUOTE`` item selects exactly that pair when both legs are known. Unknown
    assets select nothing: the server filters, it does not complain (§3.3).
    """
    if not scope.started:
        return ()
    known_set = set(known)
    universe = [_route(c, REFERENCE) for c in crypto if c != REFERENCE]
    chosen: dict[Pair, Route] = {}
    if scope.unfiltered:
        chosen.update((r.pair, r) for r in universe)
    for item in scope.items:
        if "/" in item:
            base, quote = split_pair(item)
            if base in known_set and quote in known_set and base != quote:
                chosen.setdefault(item, _route(base, quote))
            continue
        if item in known_set and item != REFERENCE:
            chosen.setdefault(f"{item}/{REFERENCE}", _route(item, REFERENCE))
        for r in universe:
            if item in (r.base, r.quote):
                chosen.setdefault(r.pair, r)
    return tuple(chosen.values())


_BEARER = re.compile(r"(?i)bearer\s")
_BASIC = re.compile(r"(?i)basic\s+(\S+)")
_PATH_KEY = re.compile(r"(?i)/apikey-([^/?#]+)")


def http_keys(path: str, headers: Mapping[str, str] | Headers) -> list[str]:
    """Every API key the upgrade request carries, in any documented form (§2.1).

    ``X-CoinAPI-Key``, ``Authorization: <key>``, ``Authorization: Basic base64(coinapi:<key>)``,
    the ``apikey`` query parameter and a ``/APIKEY-<key>`` path segment. ``Authorization: Bearer``
    is a JWT add-on, not a key, and is ignored.
    """
    keys: list[str] = []
    get = headers.get
    value = get("X-CoinAPI-Key")
    if value:
        keys.append(value.strip())
    auth = (get("Authorization") or "").strip()
    if auth and not _BEARER.match(auth):
        basic = _BASIC.fullmatch(auth)
        if basic is None:
            keys.append(auth)
        else:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                _, _, password = base64.b64decode(basic.group(1), validate=True).decode().partition(":")
                if password:
                    keys.append(password)
    split = urlsplit(path)
    keys.extend(v for k, v in parse_qsl(split.query) if k.lower() == "apikey" and v)
    found = _PATH_KEY.search(split.path)
    if found:
        keys.append(found.group(1))
    return keys


def _key_matches(candidate: str | None, key: str) -> bool:
    """Constant-time comparison, so the simulator does not teach timing attacks."""
    return candidate is not None and hmac.compare_digest(candidate.encode(), key.encode())


_SECRET_PATTERNS: Final = (
    (re.compile(r"(?im)^((?:[<>] )?(?:x-coinapi-key|authorization):\s*).*$"), r"\1[secure]"),
    (re.compile(r"(?i)(apikey=)[^&\s#]*"), r"\1[secure]"),
    (re.compile(r"(?i)(/apikey-)[^/?#\s]*"), r"\1[secure]"),
    (re.compile(r"""(?i)(["']apikey["']\s*:\s*["'])[^"']*"""), r"\1[secure]"),
)


def redact(text: str) -> str:
    """``text`` with every API key form replaced by ``[secure]``: headers, query, path, JSON body."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Wraps the ``websockets`` server logger: its DEBUG handshake dump shows request headers."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, "%s", redact(text), **kwargs)


# --------------------------------------------------------------------------- per-connection state


@dataclass(frozen=True, slots=True)
class _Close:
    """A queued instruction to close the connection after the frames before it."""

    code: int
    reason: str


class _TextBytes(bytes):
    """Bytes to send in a *text* frame as they are, even if not valid UTF-8 (``inject(..., text=True)``)."""


_Out = tuple[str | bytes, LedgerEntry | None] | _Close


class _Client:
    """One connection's scope, outgoing queue and counters; touched only on the simulator loop."""

    def __init__(self, cid: int, ws: ServerConnection, now: float, ledger: deque[LedgerEntry]) -> None:
        self.cid = cid
        self.ws = ws
        self.scope = ServerScope()
        self.routes: tuple[Route, ...] = ()
        self.pending: deque[_Out] = deque()
        """Messages queued but not yet handed to the socket: the §5 buffer."""
        self.wake = asyncio.Event()
        self.last_sent = now
        self.last_time: dict[Pair, TimeNs] = {}
        self.exrates = 0
        self.since_drop_set = 0
        self.closing = False
        self.lag_ns = 0
        """Each ``exrate`` is held until its time is this old (``Simulator.lag``): a slower route."""
        self.ledger = ledger
        self.http_auth: Literal["open", "ok", "bad", "absent"] = "open"

    def enqueue(self, frame: str | bytes, entry: LedgerEntry | None = None) -> None:
        self.pending.append((frame, entry))
        self.wake.set()


# --------------------------------------------------------------------------- the server


class Simulator:
    """A local Exchange Rates WebSocket server that follows the documented protocol.

    Args:
        host: interface to bind; loopback by default, so nothing is exposed to the network.
        port: TCP port; 0 picks a free one (read :attr:`port` / :attr:`url` after :meth:`start`).
            A restart after :meth:`stop` binds the port chosen the first time.
        seed: seed of the price model.
        rate_hz: updates per pair per second (before any client throttle).
        ping_interval: seconds between WebSocket pings; ``None`` disables them (§5: ~60 s).
        ping_timeout: seconds a client has to answer a ping before it is dropped.
        api_key: if set, clients must present it (header, query, path or hello body, §2.1/§2.2).
        heartbeat_after: seconds of silence before a heartbeat, for clients that asked (§4.3).
        batch: updates per pair generated per timer wake-up, sent back to back without yielding;
            a throughput knob. The timer then wakes ``rate_hz / batch`` times a second, and the
            updates of one wake-up carry times spaced ``1 / rate_hz`` apart, ending at "now".
            The wire format stays one JSON object per frame (§4.1).
        max_buffered: queued-but-unsent messages per connection before the overflow error (§5).
        assets: USD levels or specs for the price model (default: its built-in assets).
        cross_interval: minimum seconds between two ``BASE_AND_QUOTE_TO_REF`` updates of a pair
            (§4.1 says they are composed every 1 s); 0 sends them with every tick.
        auth_failure: ``"error"`` answers a bad key in-band, ``"http401"`` refuses the upgrade
            (either is possible on the real server, §2.3); with ``"http401"`` the key must come
            in the upgrade request, since a hello body arrives too late.
        send_buffer: ``SO_SNDBUF`` for accepted sockets; small values make back-pressure show
            sooner in tests. ``None`` keeps the OS default.
        ledger_size: ``exrate`` entries kept per connection in :attr:`ledger`.

    Example:
        >>> with Simulator(seed=1) as sim:          # doctest: +SKIP
        ...     collector = Collector(url=sim.url)   # any client; no key needed
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        seed: int = 0,
        rate_hz: float = 10.0,
        ping_interval: float | None = 60.0,
        ping_timeout: float | None = 20.0,
        api_key: str | None = None,
        heartbeat_after: float = 1.0,
        batch: int = 1,
        max_buffered: int = 131_072,
        assets: Mapping[str, float | AssetSpec] | None = None,
        cross_interval: float = 1.0,
        auth_failure: AuthFailure = "error",
        send_buffer: int | None = None,
        ledger_size: int = 100_000,
    ) -> None:
        _require(isinstance(port, int) and 0 <= port <= 65535, f"port must be 0-65535, got {port!r}")
        _require(_positive(rate_hz), f"rate_hz must be a positive number, got {rate_hz!r}")
        _require(_positive(heartbeat_after), f"heartbeat_after must be positive, got {heartbeat_after!r}")
        _require(ping_interval is None or _positive(ping_interval), f"ping_interval must be positive or None, got {ping_interval!r}")
        _require(ping_timeout is None or _positive(ping_timeout), f"ping_timeout must be positive or None, got {ping_timeout!r}")
        _require(isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1, f"batch must be an int >= 1, got {batch!r}")
        _require(isinstance(max_buffered, int) and max_buffered >= 1, f"max_buffered must be an int >= 1, got {max_buffered!r}")
        _require(isinstance(cross_interval, (int, float)) and math.isfinite(cross_interval) and cross_interval >= 0,
                 f"cross_interval must be >= 0, got {cross_interval!r}")
        _require(auth_failure in ("error", "http401"), f"auth_failure must be 'error' or 'http401', got {auth_failure!r}")
        _require(api_key is None or (isinstance(api_key, str) and api_key.strip() != ""), "api_key must be a non-empty string or None")
        _require(send_buffer is None or (isinstance(send_buffer, int) and send_buffer > 0), "send_buffer must be a positive int or None")
        _require(isinstance(ledger_size, int) and ledger_size >= 0, "ledger_size must be an int >= 0")
        self.host = host
        self.seed = seed
        self.rate_hz = float(rate_hz)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.heartbeat_after = float(heartbeat_after)
        self.batch = batch
        self.max_buffered = max_buffered
        self.cross_interval = float(cross_interval)
        self.auth_failure: AuthFailure = auth_failure
        self.send_buffer = send_buffer
        self.ledger_size = ledger_size
        self._key = api_key.strip() if api_key is not None else None
        self._port = port
        self._model = PriceModel(seed, assets)
        self._known = frozenset(self._model.assets)
        self._crypto = self._model.crypto
        self._model_ns: TimeNs | None = None

        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._has_clients: asyncio.Event | None = None
        self._server: Server | None = None
        self._startup_error: BaseException | None = None

        self._clients: dict[int, _Client] = {}
        self._ids = itertools.count(1)
        self._ledgers: OrderedDict[int, deque[LedgerEntry]] = OrderedDict()
        self._hellos: list[ClientMessage] = []
        self._stalled = False
        self._data_paused = False
        self._drop_every: int | None = None

        self.total_connections = 0
        """Connections accepted since construction (after the WebSocket handshake)."""
        self.sent_total = 0
        """``exrate`` messages handed to sockets since construction."""
        self.heartbeats_sent = 0
        self.pings_sent = 0
        self.pong_timeouts = 0
        self.pongs_received = 0
        """Pings answered in time by clients (see ``ping_interval``)."""
        self.errors_sent = 0
        self.overflows = 0
        self.dropped = 0
        """Connections aborted by a scenario (``drop_connections``/``drop_every``) or a missed pong."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Simulator:
        """Start the server on its own daemon thread and event loop; return once it listens.

        Idempotent: a running simulator is returned as is.

        Raises:
            TransportError: the port could not be bound.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            self._startup_error = None
            ready = threading.Event()
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=self._run_loop, args=(loop, ready), name="coinrates-simulator", daemon=True)
            self._loop, self._thread = loop, thread
            thread.start()
            if not ready.wait(START_TIMEOUT):
                raise TransportError(f"simulator did not start listening within {START_TIMEOUT:.0f} s")
            if self._startup_error is not None:
                thread.join(STOP_TIMEOUT)
                self._thread = self._loop = None
                err = self._startup_error
                raise TransportError(f"simulator could not listen on {self.host}:{self._port}: {err}") from err
            return self

    def stop(self) -> None:
        """Close every connection (code 1001) and the server, and join the thread; idempotent."""
        with self._lock:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            if thread is None:
                return
            if threading.current_thread() is thread:
                raise RuntimeError("Simulator.stop() cannot be called from the simulator's own loop")
            if loop is not None and stop_event is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stop_event.set)
            thread.join(STOP_TIMEOUT + CLOSE_TIMEOUT + 5)
            if thread.is_alive():
                logger.warning("simulator thread did not end within %.0f s", STOP_TIMEOUT + CLOSE_TIMEOUT + 5)
            self._thread = self._loop = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the server thread is alive and listening."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._server is not None

    @property
    def port(self) -> int:
        """The bound TCP port (the requested one before the first start)."""
        return self._port

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>/``: the address clients connect to (§1.1: path ``/``)."""
        if self._port == 0:
            raise RuntimeError("the simulator picks its port in start(); call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._port}/"

    @property
    def address(self) -> tuple[str, int] | None:
        """``(host, port)`` of the listening socket, or ``None`` when not running."""
        server = self._server
        if server is None or not server.sockets:
            return None
        name = server.sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def model(self) -> PriceModel:
        """The price model (read it only while the simulator is stopped: the loop owns it)."""
        return self._model

    # ------------------------------------------------------------------ observation (any thread)

    @property
    def connections(self) -> int:
        """Open client connections."""
        return len(self._clients)

    @property
    def hellos(self) -> list[ClientMessage]:
        """Every accepted client message (hello, subscribe, unsubscribe), oldest first.

        A message is listed once its scope change is in effect; refused ones are not listed.
        """
        return list(self._hellos)

    @property
    def ledger(self) -> dict[int, list[LedgerEntry]]:
        """Per connection id (1, 2, ...), every ``exrate`` sent as ``(pair, time_ns, rate)``.

        Keeps the last ``ledger_size`` entries of the last 256 connections.
        """
        return {cid: list(entries) for cid, entries in list(self._ledgers.items())}

    def wait_for_clients(self, n: int = 1, timeout: float = 10.0) -> None:
        """Block until at least ``n`` clients are connected.

        Raises:
            TimeoutError: fewer than ``n`` were connected after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._clients) >= n, timeout):
                raise TimeoutError(f"{len(self._clients)} of {n} client(s) connected after {timeout} s")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"ws://{self.host}:{self._port}/" if self._port else "no port yet"
        key = " | key required" if self._key is not None else ""
        modes = "".join(f" | {m}" for m, on in (("stalled", self._stalled), ("data paused", self._data_paused)) if on)
        return (f"<Simulator {state} {where} | {self.connections} clients | {self.sent_total:,} exrates"
                f" | seed {self.seed}{key}{modes}>")

    # ------------------------------------------------------------------ scenarios (any thread)

    def drop_connections(self) -> int:
        """Abort every client's TCP connection without a close frame; return how many."""
        def drop() -> int:
            count = 0
            for client in list(self._clients.values()):
                if not client.ws.transport.is_closing():
                    client.ws.transport.abort()
                    count += 1
            self.dropped += count
            if count:
                logger.info("scenario: dropped %d connection(s) without a close frame", count)
            return count
        return self._on_loop(drop, 0)

    def drop_every(self, n_messages: int | None) -> None:
        """Abort each connection after every ``n_messages`` ``exrate`` messages; ``None`` disables.

        Counting restarts for every connection when this is called.
        """
        if n_messages is not None and (not isinstance(n_messages, int) or n_messages < 1):
            raise ConfigError(f"n_messages must be an int >= 1 or None, got {n_messages!r}")

        def apply() -> None:
            self._drop_every = n_messages
            for client in self._clients.values():
                client.since_drop_set = 0
            logger.info("scenario: drop every %s exrate message(s)", n_messages)
        self._on_loop(apply, None)

    def send_error(self, message: str, close: bool = True) -> None:
        """Send ``{"type":"error","message":...}`` to every client, then close them (§4.4)."""
        text = ErrorMessage(message).to_json()

        def send() -> None:
            for client in list(self._clients.values()):
                if close:
                    self._fail(client, message)
                elif not client.closing:
                    client.enqueue(text)
                    self.errors_sent += 1
            logger.info("scenario: sent error to %d client(s)%s", len(self._clients), " and closing" if close else "")
        self._on_loop(send, None)

    def request_reconnect(self, within_seconds: float = 2.0) -> None:
        """Send ``reconnect`` (``before_time`` = now + ``within_seconds``) to every client and close
        each at the deadline (code 1001); new connections are accepted meanwhile (§4.2)."""
        if not (isinstance(within_seconds, (int, float)) and math.isfinite(within_seconds) and within_seconds >= 0):
            raise ConfigError(f"within_seconds must be a non-negative number, got {within_seconds!r}")

        def notify() -> None:
            loop = asyncio.get_running_loop()
            before = _quantize(time.time_ns() + round(within_seconds * 1e9))
            text = Reconnect(within_seconds, before).to_json()
            targets = [c for c in self._clients.values() if not c.closing]
            for client in targets:
                client.enqueue(text)
                loop.call_later(within_seconds, self._close_at_deadline, client)
            logger.info("scenario: reconnect requested from %d client(s) within %.3g s", len(targets), within_seconds)
        self._on_loop(notify, None)

    def lag(self, seconds: float) -> None:
        """Deliver every frame to the clients connected now ``seconds`` late; later ones are not delayed.

        Models a slow route: after a ``reconnect`` notice the new connection goes to another
        server (§4.2), which may be nearer, so the new link can run ahead of the old one.
        """
        if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds >= 0):
            raise ConfigError(f"seconds must be a non-negative number, got {seconds!r}")

        def apply() -> None:
            for client in self._clients.values():
                client.lag_ns = round(seconds * 1e9)
                client.wake.set()
            logger.info("scenario: %d connection(s) lag by %.3g s", len(self._clients), seconds)
        self._on_loop(apply, None)

    def stall(self, on: bool = True) -> None:
        """Freeze every connection: sockets stay open, nothing is sent (no data, heartbeats or
        pings) and nothing is read (so client pings go unanswered), until ``stall(False)``."""
        def apply() -> None:
            self._stalled = on
            for client in self._clients.values():
                _set_reading(client.ws, not on)
                client.wake.set()
            logger.info("scenario: stall %s", "on" if on else "off")
        self._on_loop(apply, None, setter=lambda: setattr(self, "_stalled", on))

    def pause_data(self, on: bool = True) -> None:
        """Stop sending ``exrate`` messages (heartbeats and pings go on) until ``pause_data(False)``."""
        def apply() -> None:
            self._data_paused = on
            logger.info("scenario: data %s", "paused" if on else "resumed")
        self._on_loop(apply, None, setter=lambda: setattr(self, "_data_paused", on))

    def inject(self, text_or_bytes: str | bytes, *, text: bool = False) -> None:
        """Send one raw frame to every client: ``str`` as a text frame, ``bytes`` as binary.

        ``text=True`` sends ``bytes`` in a text frame unchecked, e.g. invalid UTF-8, which a
        client must refuse (RFC 6455 §8.1: it fails the connection with code 1007).
        """
        if not isinstance(text_or_bytes, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"inject() takes str or bytes, got {type(text_or_bytes).__name__}")
        frame: str | bytes = text_or_bytes if isinstance(text_or_bytes, str) else bytes(text_or_bytes)
        if text and isinstance(frame, bytes):
            frame = _TextBytes(frame)

        def send() -> None:
            for client in self._clients.values():
                if not client.closing:
                    client.enqueue(frame)
            logger.info("scenario: injected a %d-byte frame into %d client(s)", len(frame), len(self._clients))
        self._on_loop(send, None)

    # ------------------------------------------------------------------ loop plumbing

    def _on_loop(self, fn: Callable[[], T], idle: T, setter: Callable[[], None] | None = None) -> T:
        """Run ``fn`` on the simulator loop and return its result; ``idle`` when not running.

        Scenario calls come from test or notebook threads; every websockets object lives on the
        loop, so the work is handed over and awaited (STYLE principle 4).
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive() or loop.is_closed():
            if setter is not None:
                setter()
            return idle
        if threading.current_thread() is thread:
            return fn()

        async def call() -> T:
            return fn()
        try:
            future = asyncio.run_coroutine_threadsafe(call(), loop)
        except RuntimeError:  # the loop closed in between
            if setter is not None:
                setter()
            return idle
        return future.result(CALL_TIMEOUT)

    def _run_loop(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        """Thread body: run the server until stopped; log anything that escapes (nothing dies silently)."""
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # noqa: BLE001 - top of the thread
            if not ready.is_set():
                self._startup_error = exc
            else:
                logger.error("simulator loop failed", exc_info=True)
        finally:
            ready.set()
            try:
                close_loop(loop)
            finally:
                self._server = None
                self._stop_event = self._has_clients = None
                self._clients.clear()
                with self._cond:
                    self._cond.notify_all()

    async def _main(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        self._has_clients = asyncio.Event()
        try:
            server = await serve(
                self._handle,
                self.host,
                self._port,
                ping_interval=None,  # our own keepalive honours stall(); see _keepalive
                ping_timeout=None,
                close_timeout=CLOSE_TIMEOUT,
                process_request=self._process_request if self.auth_failure == "http401" and self._key else None,
                server_header=f"coinrates_nb-simulator websockets/{websockets.version.version}",
                logger=_RedactingLogger(logging.getLogger("websockets.server"), {}),
            )
        except OSError as exc:
            self._startup_error = exc
            ready.set()
            return
        self._server = server
        self._port = int(server.sockets[0].getsockname()[1])
        ticker = asyncio.create_task(self._tick_loop(), name="simulator-ticker")
        logger.info("simulator listening on %s (seed %d, %.3g updates/pair/s%s)", self.url, self.seed, self.rate_hz,
                    ", key required" if self._key else "")
        ready.set()
        try:
            await self._stop_event.wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self._stalled = False  # a stalled socket would not read the client's close frame
            for client in list(self._clients.values()):
                _set_reading(client.ws, True)
                client.wake.set()
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)
            except TimeoutError:
                for client in list(self._clients.values()):
                    client.ws.transport.abort()
            logger.info("simulator stopped (%d connection(s) served, %d exrates sent)", self.total_connections, self.sent_total)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """``auth_failure="http401"``: refuse a bad or missing key before the upgrade (§2.3)."""
        assert self._key is not None
        if any(_key_matches(k, self._key) for k in http_keys(request.path, request.headers)):
            return None
        logger.info("refused an upgrade with HTTP 401: bad or missing API key")
        return connection.respond(401, INVALID_KEY_MESSAGE + "\n")

    # ------------------------------------------------------------------ connections

    async def _handle(self, ws: ServerConnection) -> None:
        """One connection, from handshake to close: auth, scope messages, and its helper tasks."""
        loop = asyncio.get_running_loop()
        cid = next(self._ids)
        ledger: deque[LedgerEntry] = deque(maxlen=self.ledger_size)
        self._ledgers[cid] = ledger
        while len(self._ledgers) > LEDGER_CONNECTIONS:
            self._ledgers.popitem(last=False)
        client = _Client(cid, ws, loop.time(), ledger)
        if self.send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        if self._stalled:
            _set_reading(ws, False)
        self._clients[cid] = client
        self.total_connections += 1
        assert self._has_clients is not None
        self._has_clients.set()
        with self._cond:
            self._cond.notify_all()
        logger.info("client %d connected from %s (%d open)", cid, _peer(ws), len(self._clients))
        tasks = [
            asyncio.create_task(self._guard(client, self._write(client)), name=f"simulator-writer-{cid}"),
            asyncio.create_task(self._guard(client, self._heartbeats(client)), name=f"simulator-heartbeat-{cid}"),
            asyncio.create_task(self._guard(client, self._keepalive(client)), name=f"simulator-ping-{cid}"),
        ]
        try:
            await self._converse(client)
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - top of a connection task: log, never kill the server
            logger.error("client %d: handler failed", cid, exc_info=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._clients.pop(cid, None)
            with self._cond:
                self._cond.notify_all()
            logger.info("client %d disconnected (code %s, %d exrates sent, %d open)",
                        cid, ws.close_code, client.exrates, len(self._clients))

    async def _guard(self, client: _Client, work: Any) -> None:
        """Run a connection helper; a closed connection ends it quietly, anything else is logged."""
        try:
            await work
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - top of a task: log and close, never die silently
            logger.error("client %d: task failed; closing the connection", client.cid, exc_info=True)
            client.ws.transport.abort()

    async def _converse(self, client: _Client) -> None:
        """Read client messages until the connection closes (§3.1)."""
        ws = client.ws
        request = ws.request
        if self._key is not None and request is not None:
            keys = http_keys(request.path, request.headers)
            if not keys:
                client.http_auth = "absent"
            elif any(_key_matches(k, self._key) for k in keys):
                client.http_auth = "ok"
            else:
                client.http_auth = "bad"
                self._fail(client, INVALID_KEY_MESSAGE)  # §2.3: in-band error, then close
        async for raw in ws:
            if client.closing:
                continue  # after an error nothing more is processed (§4.4)
            try:
                msg = parse_client(raw)
            except MessageError as exc:
                if logger.isEnabledFor(logging.DEBUG):
                    logger.debug("client %d < invalid %s", client.cid, preview(redact(_text(raw))))
                where = f" ({exc.field})" if exc.field else ""
                self._fail(client, f"Invalid message{where}: {exc.reason}")  # §3.1: error, then disconnect
                continue
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("client %d < %r", client.cid, msg)  # the dataclass repr hides apikey
            if not client.scope.started:
                if isinstance(msg, Unsubscribe):
                    self._fail(client, FIRST_MESSAGE_ERROR)  # §3.1: the first message must be hello/subscribe
                    continue
                if client.http_auth == "absent" and self._key is not None and not _key_matches(msg.apikey, self._key):
                    self._fail(client, INVALID_KEY_MESSAGE)  # §2.2: the key may come in the body
                    continue
            client.scope.apply(msg)
            client.routes = routes_for(client.scope, self._known, self._crypto)
            self._hellos.append(msg)  # after the scope changed: a test that sees it sees the new scope

    def _fail(self, client: _Client, message: str) -> None:
        """Queue ``error`` and a close: every error ends the connection (§4.4)."""
        if client.closing:
            return
        client.closing = True
        self.errors_sent += 1
        logger.info("client %d: sending error %r and closing", client.cid, message)
        client.enqueue(ErrorMessage(message).to_json())
        client.pending.append(_Close(CLOSE_AFTER_ERROR, message[:120]))

    def _close_at_deadline(self, client: _Client) -> None:
        """The ``reconnect`` deadline passed: close the connection (§4.2)."""
        if client.closing or self._clients.get(client.cid) is not client:
            return
        client.closing = True
        client.pending.append(_Close(CLOSE_RECONNECT, "reconnect deadline"))
        client.wake.set()

    async def _write(self, client: _Client) -> None:
        """Hand queued frames to the socket in order; record every ``exrate`` in the ledger."""
        ws = client.ws
        loop = asyncio.get_running_loop()
        pending = client.pending
        while True:
            if not pending or self._stalled:
                client.wake.clear()
                await client.wake.wait()
                continue
            if client.lag_ns:  # hold the head of the queue until it is lag_ns old
                head = pending[0]
                if not isinstance(head, _Close) and head[1] is not None:
                    late = head[1][1] + client.lag_ns - time.time_ns()
                    if late > 0:
                        await asyncio.sleep(late / 1e9)
                        continue
            item = pending.popleft()
            if isinstance(item, _Close):
                await ws.close(item.code, item.reason)
                return
            frame, entry = item
            # send() waits (drain) while the socket's write buffer is full: back-pressure
            await ws.send(frame, text=True) if type(frame) is _TextBytes else await ws.send(frame)
            client.last_sent = loop.time()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("client %d > %s", client.cid, preview(frame))
            if entry is None:
                if frame is _HEARTBEAT_TEXT:
                    self.heartbeats_sent += 1
                continue
            client.ledger.append(entry)
            client.exrates += 1
            client.since_drop_set += 1
            self.sent_total += 1
            if self._drop_every is not None and client.since_drop_set >= self._drop_every:
                await _flush(ws)  # so the client receives exactly the n messages before the drop
                logger.info("client %d: dropping after %d exrate(s) (drop_every)", client.cid, client.since_drop_set)
                self.dropped += 1
                ws.transport.abort()
                return

    async def _heartbeats(self, client: _Client) -> None:
        """Send a heartbeat after each ``heartbeat_after`` seconds of silence, if asked (§4.3)."""
        loop = asyncio.get_running_loop()
        after = self.heartbeat_after
        while True:
            wait = client.last_sent + after - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            scope = client.scope
            if scope.started and scope.heartbeat and not client.closing and not self._stalled and not client.pending:
                client.enqueue(_HEARTBEAT_TEXT)
                client.last_sent = loop.time()
            else:
                await asyncio.sleep(min(after, HEARTBEAT_POLL))

    async def _keepalive(self, client: _Client) -> None:
        """Ping every ``ping_interval``; drop a client that does not pong within ``ping_timeout`` (§5).

        ``websockets``' own keepalive does the same, but cannot be silenced by :meth:`stall`.
        """
        interval, timeout = self.ping_interval, self.ping_timeout
        if interval is None:
            return
        ws = client.ws
        while True:
            await asyncio.sleep(interval)
            if self._stalled:
                continue
            pong = await ws.ping()
            self.pings_sent += 1
            if timeout is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await pong
                self.pongs_received += 1
            except TimeoutError:
                if self._stalled:
                    continue  # reading is paused during a stall, so no pong could arrive
                self.pong_timeouts += 1
                self.dropped += 1
                logger.info("client %d: no pong within %.3g s; disconnecting (§5)", client.cid, timeout)
                ws.transport.abort()
                return

    # ------------------------------------------------------------------ data

    async def _tick_loop(self) -> None:
        """Advance the model and emit updates ``rate_hz / batch`` times a second, while anyone listens."""
        loop = asyncio.get_running_loop()
        assert self._has_clients is not None
        interval = self.batch / self.rate_hz
        step_ns = round(1e9 / self.rate_hz)
        next_at = loop.time()
        while True:
            if not self._clients:
                self._has_clients.clear()
                await self._has_clients.wait()
                next_at = loop.time()
            try:
                self._tick(time.time_ns(), step_ns)
            except Exception:  # noqa: BLE001 - the ticker must outlive a bad tick
                logger.error("simulator tick failed", exc_info=True)
            next_at += interval
            delay = next_at - loop.time()
            if delay < -1.0:  # far behind (a busy machine): skip ahead instead of bursting
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))

    def _tick(self, now_ns: TimeNs, step_ns: int) -> None:
        """One timer wake-up: ``batch`` model steps, each emitted to every streaming connection."""
        emit = not (self._stalled or self._data_paused)
        clients = [c for c in self._clients.values() if c.routes and not c.closing] if emit else []
        cache: dict[Pair, tuple[float, dict[TimeNs, str]]] = {}
        for k in range(self.batch):
            t = _quantize(now_ns - (self.batch - 1 - k) * step_ns)
            if self._model_ns is None:
                self._model_ns = t
            elif t > self._model_ns:
                self._model.step((t - self._model_ns) / 1e9)
                self._model_ns = t
            else:
                # An instant at or before one already emitted (a wake-up soon after a late one):
                # skip it, so every connection sees one update per instant with the same time,
                # as two links to the real server would.
                continue
            for client in clients:
                if not client.closing:
                    self._emit(client, t, cache)
            cache.clear()
        for client in clients:
            if client.pending:
                client.wake.set()

    def _emit(self, client: _Client, t: TimeNs, cache: dict[Pair, tuple[float, dict[TimeNs, str]]]) -> None:
        """Queue this instant's update of each of the client's pairs, honouring the throttles."""
        limit_ms = client.scope.update_limit_ms
        limit_ns = limit_ms * 1_000_000 if limit_ms else 0
        cross_ns = round(self.cross_interval * 1e9)
        pending = client.pending
        last_time = client.last_time
        for route in client.routes:
            last = last_time.get(route.pair)
            if last is not None:
                gap = t - last
                # §3.2: subscribe_update_limit_ms_exrate is the minimum delay between two updates of a pair.
                if gap < limit_ns or (route.cross and gap < cross_ns):
                    continue
            stamp = t if last is None or t > last else last + _TIME_QUANTUM  # strictly increasing per pair
            if len(pending) >= self.max_buffered:
                self._overflow(client)
                return
            cached = cache.get(route.pair)
            if cached is None:
                cached = cache[route.pair] = (self._model.rate(route.base, route.quote), {})
            rate, texts = cached
            text = texts.get(stamp)
            if text is None:
                text = texts[stamp] = ExchangeRate(route.base, route.quote, route.rate_type, stamp, rate).to_json()
            pending.append((text, (route.pair, stamp, rate)))
            last_time[route.pair] = stamp

    def _overflow(self, client: _Client) -> None:
        """§5: the queue is full: drop what is buffered (never re-sent), send the error, close."""
        self.overflows += 1
        logger.warning("client %d: more than %d messages buffered; sending the overflow error and closing",
                       client.cid, self.max_buffered)
        client.pending.clear()
        self._fail(client, OVERFLOW_MESSAGE)


# --------------------------------------------------------------------------- helpers


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _quantize(ns: int) -> TimeNs:
    """Round down to the wire's 100 ns resolution, so the ledger equals what clients parse (§7)."""
    return ns - ns % _TIME_QUANTUM


def _text(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="replace")


def _peer(ws: ServerConnection) -> str:
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


def _set_reading(ws: ServerConnection, on: bool) -> None:
    transport = ws.transport
    if transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()


async def _flush(ws: ServerConnection, timeout: float = 1.0) -> None:
    """Wait (briefly) until the transport handed its buffer to the kernel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while ws.transport.get_write_buffer_size() > 0 and loop.time() < deadline and not ws.transport.is_closing():
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m coinrates_nb.sim``: run the simulator in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m coinrates_nb.sim",
        description="Run a local CoinAPI Exchange Rates WebSocket simulator (SIMULATED data).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free one (default: 8765)")
    parser.add_argument("--seed", type=int, default=0, help="price model seed (default: 0)")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="updates per pair per second (default: 10)")
    parser.add_argument("--heartbeat-after", type=float, default=1.0, help="seconds of silence before a heartbeat")
    parser.add_argument("--ping-interval", type=float, default=60.0, help="seconds between WebSocket pings")
    parser.add_argument("--ping-timeout", type=float, default=20.0, help="seconds to answer a ping")
    parser.add_argument("--batch", type=int, default=1, help="updates per pair per timer wake-up (throughput knob)")
    parser.add_argument("--api-key-required", action="store_true",
                        help="require the key in $COINAPI_KEY from clients (header, query or hello body)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    key: str | None = None
    if args.api_key_required:
        key = os.environ.get("COINAPI_KEY", "").strip() or None
        if key is None:
            parser.error("--api-key-required needs the key in the COINAPI_KEY environment variable")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sim = Simulator(args.host, args.port, seed=args.seed, rate_hz=args.rate_hz, heartbeat_after=args.heartbeat_after,
                        ping_interval=args.ping_interval, ping_timeout=args.ping_timeout, batch=args.batch, api_key=key)
        sim.start()
    except (ConfigError, TransportError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("SIMULATED exchange rates at %s; press Ctrl-C to stop", sim.url)
    done = threading.Event()
    try:
        done.wait(args.duration)
    except KeyboardInterrupt:
        logger.info("interrupted")
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
