"""A local, protocol-faithful Exchange Rates WebSocket server: serving, data and the ledger.

:class:`Simulator` is a real ``websockets`` server on ``127.0.0.1`` that speaks the documented
protocol (``../shared/protocol/exrates-websocket.md``, cited as "§"): hello/subscribe/unsubscribe
scopes (:mod:`.scope`), keys in every documented form (:mod:`._auth`), ``exrate`` updates from a
seeded :class:`~coinrates_nb.sim.prices.PriceModel`, per-pair throttling, heartbeats, WebSocket
pings, ``error``-then-close, ``reconnect`` notices and the slow-consumer overflow. The fault
scenarios (:mod:`.scenarios`) are methods, callable from any thread; everything runs on the
simulator's own event loop, which lives on one daemon thread. Every ``exrate`` handed to a
socket is recorded in :attr:`Simulator.ledger`, so tests compare what was sent with what a
client stored.

Every frame is built and parsed with :mod:`coinrates_nb.messages`, so the simulator and the
client share one definition of the wire format. The handshake response carries
``X-Coinrates-Simulator: <version>``, so a client connecting by URL can label the data simulated.

The same port serves CoinAPI's REST API (:mod:`.rest`, :attr:`Simulator.rest_url`): every plain
HTTP GET that is not a WebSocket upgrade is answered from the ``process_request`` hook
(python-websockets/websockets#1500) with the same seeded prices; ``sim.rest`` holds its ledger
and fault scenarios.

Choices where the protocol notes say UNCONFIRMED (each is also marked where it is made):

* a bad or missing key is answered in-band (``error`` "Invalid API key", then close), or with
  HTTP 401 before the upgrade when ``auth_failure="http401"`` (§2.3);
* ``BASE_AND_QUOTE_TO_REF`` pairs are recomputed and sent at most once per ``cross_interval``
  seconds (1 s by default, as the server composes them, §4.1);
* after an ``error`` the server closes with code 1008; a ``reconnect`` deadline closes with
  1001 (§4.4, §5 "close codes");
* a planned stop (:meth:`Simulator.stop`) is announced like a server shutdown (§4.2): new
  connections are refused, the data stops, every client gets ``reconnect`` as its last message,
  then up to ``stop_grace`` seconds to leave before the close (1001);
* the heartbeat is ``{"type":"hearbeat"}`` with no ``time`` field, the documented form (§4.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Mapping
from typing import Any, Final, Literal

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .. import __version__
from .._loop import close_loop
from .._secrets import RedactingLogger, redact
from .._threads import BackgroundThread
from .._types import AssetId
from ..config import SIMULATOR_HEADER
from ..exceptions import ConfigError, MessageError, SimulatorError, TransportError, preview
from ..messages import ClientMessage, Reconnect, Unsubscribe, parse_client
from ._auth import INVALID_KEY_MESSAGE, http_keys, key_matches
from ._connection import (
    CLOSE_RECONNECT,
    OVERFLOW_MESSAGE,
    Connection,
    LedgerEntry,
    peer,
    quantize,
    set_reading,
    text_of,
)
from .prices import AssetSpec, PriceModel
from .rest import RestApi
from .scenarios import Scenarios
from .scope import Route, ServerScope, routes_for
from .ticker import Ticker

__all__ = [
    "INVALID_KEY_MESSAGE",
    "OVERFLOW_MESSAGE",
    "SIMULATOR_HEADER",
    "LedgerEntry",
    "Route",
    "ServerScope",
    "Simulator",
    "http_keys",
    "routes_for",
]

logger = logging.getLogger("coinrates_nb.sim")

FIRST_MESSAGE_ERROR: Final = "The first message must be hello or subscribe"
"""Wording UNCONFIRMED (§4.4): sent when a connection opens with ``unsubscribe`` (§3.1)."""

CLOSE_TIMEOUT: Final = 2.0
"""Seconds a closing handshake may take before the TCP connection is aborted."""

START_TIMEOUT: Final = 10.0
STOP_TIMEOUT: Final = 5.0

LEDGER_CONNECTIONS: Final = 256
"""Ledgers of at most this many most recent connections are kept."""

AuthFailure = Literal["error", "http401"]


class Simulator(Scenarios, BackgroundThread):
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
        stop_grace: seconds :meth:`stop` gives clients, after its ``reconnect`` notice, to leave
            before it closes their connections; the notice's ``before_time`` is that deadline.

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
        stop_grace: float = 0.5,
    ) -> None:
        _require(isinstance(port, int) and 0 <= port <= 65535, f"port must be 0-65535, got {port!r}")
        _require(_positive(rate_hz), f"rate_hz must be a positive number, got {rate_hz!r}")
        _require(_positive(heartbeat_after), f"heartbeat_after must be positive, got {heartbeat_after!r}")
        _require(ping_interval is None or _positive(ping_interval), f"ping_interval must be positive or None, got {ping_interval!r}")
        _require(ping_timeout is None or _positive(ping_timeout), f"ping_timeout must be positive or None, got {ping_timeout!r}")
        _require(isinstance(batch, int) and not isinstance(batch, bool) and batch >= 1, f"batch must be an int >= 1, got {batch!r}")
        _require(isinstance(max_buffered, int) and max_buffered >= 1, f"max_buffered must be an int >= 1, got {max_buffered!r}")
        _require(_non_negative(cross_interval), f"cross_interval must be >= 0, got {cross_interval!r}")
        _require(auth_failure in ("error", "http401"), f"auth_failure must be 'error' or 'http401', got {auth_failure!r}")
        _require(api_key is None or (isinstance(api_key, str) and api_key.strip() != ""), "api_key must be a non-empty string or None")
        _require(send_buffer is None or (isinstance(send_buffer, int) and send_buffer > 0), "send_buffer must be a positive int or None")
        _require(isinstance(ledger_size, int) and ledger_size >= 0, "ledger_size must be an int >= 0")
        _require(_non_negative(stop_grace) and stop_grace <= 60, f"stop_grace must be 0-60 seconds, got {stop_grace!r}")
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
        self.stop_grace = float(stop_grace)
        self._key = api_key.strip() if api_key is not None else None
        self._port = port
        self._model = PriceModel(seed, assets)
        self._known: tuple[AssetId, ...] = self._model.assets  # ordered: the unfiltered stream's order
        self._ticker = Ticker(self._model, rate_hz=self.rate_hz, batch=batch, cross_interval=self.cross_interval,
                              max_buffered=max_buffered)
        self.rest = RestApi(self)
        """The REST side on the same port (:mod:`.rest`): its ledger and fault scenarios."""

        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._has_clients: asyncio.Event | None = None
        self._no_clients: asyncio.Event | None = None
        self._server: Server | None = None
        self._startup_error: BaseException | None = None
        self._farewell: str | None = None
        """The ``reconnect`` notice of a stop under way; every client gets it as its last message."""

        self._clients: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._ledgers: OrderedDict[int, deque[LedgerEntry]] = OrderedDict()
        self._hellos: list[ClientMessage] = []
        self._stalled = False
        self._data_paused = False
        self._drop_every: int | None = None
        self._refusing = False
        self.refused_connections = 0
        """WebSocket upgrades answered with HTTP 429 while :meth:`Scenarios.refuse_connections` is on."""

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
        """Shut down as the real server does (§4.2), join the thread; idempotent.

        New connections are refused, the data stops, and every client gets a ``reconnect``
        notice as its last message; clients that have not left within ``stop_grace`` seconds
        are closed with code 1001. Returns as soon as every client is gone.
        """
        with self._lock:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            if thread is None:
                return
            if threading.current_thread() is thread:
                raise SimulatorError("Simulator.stop() cannot be called from the simulator's own loop")
            if loop is not None and stop_event is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(stop_event.set)
            limit = self.stop_grace + 2 * CLOSE_TIMEOUT + STOP_TIMEOUT + 5
            thread.join(limit)
            if thread.is_alive():
                logger.warning("simulator thread did not end within %.0f s", limit)
            self._thread = self._loop = None

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
            raise SimulatorError("the simulator picks its port in start(); call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self._port}/"

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:<port>``: the REST API's base URL, on the WebSocket's port (:mod:`.rest`)."""
        if self._port == 0:
            raise SimulatorError("the simulator picks its port in start(); call start() first")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

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
            SimulatorError: fewer than ``n`` were connected after ``timeout`` seconds.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._clients) >= n, timeout):
                raise SimulatorError(f"{len(self._clients)} of {n} client(s) connected after {timeout} s")

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        where = f"ws://{self.host}:{self._port}/" if self._port else "no port yet"
        key = " | key required" if self._key is not None else ""
        modes = "".join(f" | {m}" for m, on in (("stalled", self._stalled), ("data paused", self._data_paused)) if on)
        return (f"<Simulator {state} {where} | {self.connections} clients | {self.sent_total:,} exrates"
                f" | seed {self.seed}{key}{modes}>")

    # ------------------------------------------------------------------ the loop thread

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
                self._stop_event = self._has_clients = self._no_clients = None
                self._farewell = None
                self._clients.clear()
                with self._cond:
                    self._cond.notify_all()

    async def _main(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        self._has_clients = asyncio.Event()
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        try:
            server = await serve(
                self._handle,
                self.host,
                self._port,
                ping_interval=None,  # our own keepalive honours stall(); see Connection.keepalive
                ping_timeout=None,
                close_timeout=CLOSE_TIMEOUT,
                process_request=self._process_request,
                process_response=_identify,
                server_header=f"coinrates_nb-simulator/{__version__} websockets/{websockets.version.version}",
                logger=RedactingLogger(logging.getLogger("websockets.server"), secrets=(self._key or "",)),
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
            await self._shutdown(server)
            logger.info("simulator stopped (%d connection(s) served, %d exrates sent)", self.total_connections, self.sent_total)

    async def _shutdown(self, server: Server) -> None:
        """A planned stop (§4.2): refuse new connections, send ``reconnect``, wait ``stop_grace``, close."""
        server.server.close()  # stop listening: a client that follows the notice must go elsewhere (§4.2)
        self._stalled = False  # a stalled connection would neither send the notice nor read the close frame
        grace = self.stop_grace
        # within_seconds is an int on the wire (§4.2): rounded down, so a client is never told it has longer.
        self._farewell = Reconnect(math.floor(grace), quantize(time.time_ns() + round(grace * 1e9))).to_json()
        clients = list(self._clients.values())
        for client in clients:
            self._say_farewell(client)
        if clients:
            logger.info("simulator stopping: sent reconnect to %d client(s), closing within %.3g s", len(clients), grace)
        await self._until_no_clients(grace)
        for client in list(self._clients.values()):
            client.close_soon(CLOSE_RECONNECT, "server shutting down")  # after the notice and what precedes it
        await self._until_no_clients(2 * CLOSE_TIMEOUT)
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)
        except TimeoutError:
            for client in list(self._clients.values()):
                client.ws.transport.abort()

    def _say_farewell(self, client: Connection) -> None:
        """Queue the stop's ``reconnect`` notice after what the client has queued; release stalls and lags."""
        set_reading(client.ws, True)
        client.lag_ns = 0
        if self._farewell is not None and not client.closing:
            client.enqueue(self._farewell)
        client.wake.set()

    async def _until_no_clients(self, timeout: float) -> None:
        """Wait until every connection handler has ended, at most ``timeout`` seconds."""
        if self._no_clients is not None and self._clients and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_clients.wait(), timeout)

    def _process_request(self, connection: ServerConnection, request: Request) -> Awaitable[Response] | Response | None:
        """Route a plain HTTP GET to the REST API; with ``auth_failure="http401"``, refuse a bad key before the upgrade (§2.3)."""
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return self.rest.respond(connection, request)
        if self._refusing:
            self.refused_connections += 1
            logger.info("refused an upgrade with HTTP 429: connection limit (scenario)")
            return connection.respond(429, "Too many connections\n")
        if self.auth_failure != "http401" or self._key is None:
            return None
        if any(key_matches(k, self._key) for k in http_keys(request.path, request.headers)):
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
        client = Connection(self, cid, ws, loop.time(), ledger)
        if self.send_buffer is not None:
            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        if self._stalled:
            set_reading(ws, False)
        self._clients[cid] = client
        self.total_connections += 1
        assert self._has_clients is not None and self._no_clients is not None
        self._has_clients.set()
        self._no_clients.clear()
        if self._farewell is not None:  # the handshake finished while a stop was under way
            self._say_farewell(client)
        with self._cond:
            self._cond.notify_all()
        logger.info("client %d connected from %s (%d open)", cid, peer(ws), len(self._clients))
        tasks = [
            asyncio.create_task(self._guard(client, client.write()), name=f"simulator-writer-{cid}"),
            asyncio.create_task(self._guard(client, client.heartbeats()), name=f"simulator-heartbeat-{cid}"),
            asyncio.create_task(self._guard(client, client.keepalive()), name=f"simulator-ping-{cid}"),
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
            if not self._clients:
                self._no_clients.set()
            with self._cond:
                self._cond.notify_all()
            logger.info("client %d disconnected (code %s, %d exrates sent, %d open)",
                        cid, ws.close_code, client.exrates, len(self._clients))

    async def _guard(self, client: Connection, work: Any) -> None:
        """Run a connection helper; a closed connection ends it quietly, anything else is logged."""
        try:
            await work
        except ConnectionClosed:
            pass
        except Exception:  # noqa: BLE001 - top of a task: log and close, never die silently
            logger.error("client %d: task failed; closing the connection", client.cid, exc_info=True)
            client.ws.transport.abort()

    async def _converse(self, client: Connection) -> None:
        """Read client messages until the connection closes (§3.1)."""
        ws = client.ws
        request = ws.request
        if self._key is not None and request is not None:
            keys = http_keys(request.path, request.headers)
            if not keys:
                client.http_auth = "absent"
            elif any(key_matches(k, self._key) for k in keys):
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
                    logger.debug("client %d < invalid %s", client.cid, preview(redact(text_of(raw), (self._key or "",))))
                where = f" ({exc.field})" if exc.field else ""
                self._fail(client, f"Invalid message{where}: {exc.reason}")  # §3.1: error, then disconnect
                continue
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("client %d < %r", client.cid, msg)  # the dataclass repr hides apikey
            if not client.scope.started:
                if isinstance(msg, Unsubscribe):
                    self._fail(client, FIRST_MESSAGE_ERROR)  # §3.1: the first message must be hello/subscribe
                    continue
                if client.http_auth == "absent" and self._key is not None and not key_matches(msg.apikey, self._key):
                    self._fail(client, INVALID_KEY_MESSAGE)  # §2.2: the key may come in the body
                    continue
            client.scope.apply(msg)
            client.routes = routes_for(client.scope, self._known)
            self._hellos.append(msg)  # after the scope changed: a test that sees it sees the new scope

    def _fail(self, client: Connection, message: str) -> None:
        """Queue ``error`` and a close: every error ends the connection (§4.4)."""
        if client.fail(message):
            self.errors_sent += 1
            logger.info("client %d: sending error %r and closing", client.cid, message)

    # ------------------------------------------------------------------ data

    async def _tick_loop(self) -> None:
        """Advance the model and emit updates ``rate_hz / batch`` times a second, while anyone listens."""
        loop = asyncio.get_running_loop()
        assert self._has_clients is not None
        ticker = self._ticker
        next_at = loop.time()
        while True:
            if not self._clients:
                self._has_clients.clear()
                await self._has_clients.wait()
                next_at = loop.time()
            try:
                # Stalled or paused, the model's time moves on while nothing is sent.
                streaming = () if self._stalled or self._data_paused else list(self._clients.values())
                for client in ticker.tick(time.time_ns(), streaming):
                    self.overflows += 1
                    self.errors_sent += 1
                    logger.warning("client %d: more than %d messages buffered; sent the overflow error, closing",
                                   client.cid, self.max_buffered)
            except Exception:  # noqa: BLE001 - the ticker must outlive a bad tick
                logger.error("simulator tick failed", exc_info=True)
            next_at += ticker.interval
            delay = next_at - loop.time()
            if delay < -1.0:  # far behind (a busy machine): skip ahead instead of bursting
                next_at = loop.time()
            await asyncio.sleep(max(0.0, delay))


# --------------------------------------------------------------------------- helpers


def _identify(connection: ServerConnection, request: Request, response: Response) -> None:
    """Name the simulator in every handshake response, so a client can label the data simulated."""
    response.headers[SIMULATOR_HEADER] = __version__


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def _non_negative(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
