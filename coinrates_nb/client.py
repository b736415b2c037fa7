"""I/O edge: the ``websockets`` session that connects, says hello, reads, and reconnects.

All policy lives elsewhere (``protocol``: scope and staleness; ``retry``: backoff and classify;
``_session``: the reconnect loop, shared with the hub consumer); this session only moves bytes and translates foreign errors into the ``CoinratesError`` tree once.
Everything here runs on the collector's own event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.protocol import State
from websockets.typing import Data
from websockets.version import version as websockets_version

from ._secrets import RedactingLogger, redact_url
from ._session import ReconnectingSession
from ._ws_compat import queued_frames
from .batch import RateBatch
from .config import SIMULATOR_HEADER, Settings, is_loopback, key_allowed
from .exceptions import (
    AuthenticationError,
    CoinratesError,
    ConfigError,
    MessageError,
    ServerError,
    StaleStreamError,
    TransportError,
)
from .messages import ErrorMessage, Reconnect
from .protocol import MAX_BATCH_FRAMES, ClientProtocol
from .status import Telemetry

__all__ = ["Session"]

logger = logging.getLogger("coinrates_nb.client")

Sink = Callable[[RateBatch, int], None]
"""Called on the loop thread with each batch of fresh updates (columns) and their receive time (ns)."""

TICK = 0.1
"""Seconds between watchdog checks (staleness, reconnect notices, throughput samples)."""


class Session(ReconnectingSession[tuple[ClientConnection, int]]):
    """One logical stream over successive connections: connect, hello, read, reconnect.

    Args:
        settings: endpoint, key and timeouts.
        protocol: scope and liveness state; survives reconnects so the scope is replayed.
        sink: receives each batch of fresh updates (columns) with its receive time.
        telemetry: counters shown in the collector's status.
        on_disconnect: told when a connection ends or an attempt fails, with the wall-clock time (ns), to record gaps.
        rng: randomness for backoff jitter (seedable in tests).
    """

    def __init__(
        self,
        settings: Settings,
        protocol: ClientProtocol,
        sink: Sink,
        telemetry: Telemetry,
        on_disconnect: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.sink = sink
        self.telemetry = telemetry
        self.on_disconnect = on_disconnect
        self.rng = rng or random.Random()
        self.current: ClientConnection | None = None
        key = settings.api_key.reveal() if settings.api_key is not None else None
        self._ws_logger = RedactingLogger(logging.getLogger("websockets.client"), [key] if key else [])
        self._links = 0
        """Connections opened so far; each one's number tells the protocol which link frames came from."""
        self._stopping = asyncio.Event()
        self._delivered = False
        """True once the current connection (or its make-before-break successor) delivered an update."""
        self._drains: set[asyncio.Future[None]] = set()
        """Old connections still being read after a make-before-break switch (strong refs for the loop)."""

    _log = logger
    _STOPPED = "stream stopped"
    _ENDED = "connection ended"

    # ------------------------------------------------------------------ public (loop thread)
    # run() is ReconnectingSession.run: connect, serve, classify, back off; the hooks are below.

    def stop(self) -> None:
        """Ask :meth:`run` to end; closes the open connection."""
        self._stopping.set()
        if self.current is not None:  # wakes the reader at once; kept referenced until done
            self._drains.add(task := asyncio.ensure_future(self.current.close()))
            task.add_done_callback(self._drains.discard)

    async def send(self, text: str | None) -> None:
        """Send a scope change on the open connection; while disconnected the next hello carries it."""
        if text is None or self.current is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self.current.send(text)

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> tuple[ClientConnection, int]:
        """Open a connection and send the hello for the current scope; returns it and its link number."""
        url = self.settings.url
        assert url is not None
        context = self.settings.ssl_context()
        tls: dict[str, Any] = {} if context is None else {"ssl": context}  # websockets refuses ssl=None for wss://
        try:
            ws = await _GuardedConnect(
                url,
                additional_headers=self.settings.headers(),
                compression=self.settings.compression,
                open_timeout=self.settings.open_timeout,
                ping_interval=self.settings.ping_interval,
                ping_timeout=self.settings.ping_timeout,
                max_size=self.settings.max_frame_bytes,
                max_queue=1024,
                **tls,
                proxy=None if is_loopback(url) else True,
                user_agent_header=f"coinrates_nb websockets/{websockets_version}",
                logger=self._ws_logger,
            )
        except Exception as exc:  # noqa: BLE001 - translated at this edge
            raise self._translate(exc) from exc
        try:
            await ws.send(self.protocol.hello())
        except ConnectionClosed:
            # The server may answer the upgrade with an in-band error and close before our hello
            # lands (§2.3); the reader still gets that queued error, so let it decide.
            logger.debug("connection closed before the hello was sent")
        self._links += 1
        if ws.response is not None and ws.response.headers.get(SIMULATOR_HEADER):
            self.telemetry.server_simulated = True  # our own simulator said so in its handshake
        self.telemetry.connections += 1
        self.telemetry.set_state("connected")
        logger.info("connected to %s (%s)", redact_url(url), self.settings.source)
        return ws, self._links

    async def _open(self) -> tuple[ClientConnection, int]:
        return await self._connect()

    async def _release(self) -> None:
        self.current = None

    def _link_lost(self) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect(time.time_ns())

    def _retry_level(self, err: BaseException) -> int:
        # STYLE §10: a stale stream is a WARNING; an ordinary drop or server error is INFO
        quiet = isinstance(err, (TransportError, ServerError)) and not isinstance(err, StaleStreamError)
        return logging.INFO if quiet else logging.WARNING

    async def _serve(self, link: tuple[ClientConnection, int]) -> None:
        """Read the connection until it ends; on a server ``reconnect`` notice, switch to a new connection.

        Returns when the session stops; otherwise raises why the connection ended.
        """
        ws, number = link
        self.current = ws
        self.protocol.connected(time.monotonic())
        reader: asyncio.Future[None] = asyncio.ensure_future(self._read(ws, number))
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=TICK)
                now = time.monotonic()
                self.telemetry.sample(now, self.protocol.exrates)
                if reader in done:
                    reader.result()
                    return
                if self._stopping.is_set():
                    return
                if self.protocol.is_stale(now):
                    self.telemetry.set_state("stale")
                    raise StaleStreamError(self.protocol.silence(now), self.protocol.stale_after)
                if self.protocol.switch_due():
                    ws, reader = await self._switch(ws, reader)
        finally:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
            await _close_quietly(ws)

    async def _switch(self, old: ClientConnection, old_reader: asyncio.Future[None]) -> tuple[ClientConnection, asyncio.Future[None]]:
        """Make-before-break (§4.2 option 3): open the new connection, read the old one until the protocol cuts it.

        The protocol holds the new link's updates until the old link has ended
        (``ClientProtocol.begin_switch``); this only opens, reads and closes.
        """
        deadline = self.protocol.reconnect_deadline or time.monotonic()
        logger.info("server asked to reconnect within %.1f s: opening a new connection first",
                    max(0.0, deadline - time.monotonic()))
        try:
            new, link = await self._connect()
        except Exception as exc:  # noqa: BLE001 - translated by _connect; the old link still works
            self.telemetry.last_error = f"the replacement connection failed: {exc}"
            self.protocol.switch_failed()
            logger.warning("%s; reading the old connection until the server closes it", self.telemetry.last_error)
            return old, old_reader
        self.protocol.begin_switch(time.monotonic(), link)
        self.protocol.connected(time.monotonic())
        self.telemetry.reconnects += 1
        new_reader: asyncio.Future[None] = asyncio.ensure_future(self._read(new, link))
        self.current = new

        async def drain() -> None:
            try:
                while not old_reader.done():
                    if self.protocol.cut_old(time.monotonic(), old_open=old.state is State.OPEN,
                                             old_queued=queued_frames(old)):
                        break
                    await asyncio.wait({old_reader}, timeout=TICK)
            finally:
                old_reader.cancel()
                with contextlib.suppress(BaseException):
                    await old_reader
                held = self.protocol.end_switch()
                kept = self._store_released()
                logger.info("switched connections: %d held update(s), %d new", held, kept)
                await _close_quietly(old)

        self._drains.add(task := asyncio.ensure_future(drain()))
        task.add_done_callback(self._drains.discard)
        return new, new_reader

    async def _read(self, ws: ClientConnection, link: int) -> None:
        """Read frames until the connection closes; each wait's frames, with all already queued, are one batch."""
        telemetry = self.telemetry
        debug = logger.isEnabledFor(logging.DEBUG)
        closed: ConnectionClosed | None = None
        while True:
            try:
                if closed is not None:
                    raise closed
                data = await ws.recv()
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1009 or exc.sent is not None and exc.sent.code == 1009:
                    telemetry.reject("oversized_frame", "frame larger than max_frame_bytes")
                elif exc.sent is not None and exc.sent.code == 1007:
                    telemetry.reject("invalid_utf8", "text frame is not valid UTF-8")
                if self._stopping.is_set():
                    return
                raise TransportError(f"connection closed: {exc}") from exc
            received = time.time_ns()
            frames: list[Data] = [data]
            closed = await _take_queued(ws, frames)
            if debug:
                for data in frames:
                    logger.debug("frame %s", data[:200] if isinstance(data, str) else f"<{len(data)} bytes>")
            self._deliver(frames, received, link)

    def _deliver(self, frames: list[Data], received: int, link: int) -> None:
        """Hand frames to the protocol, store what it deems fresh, report what it rejected; raise a server error."""
        parsed = self.protocol.receive(frames, time.monotonic(), received, link)
        error: ErrorMessage | None = None
        for event in parsed.events:
            outcome = event.outcome
            if isinstance(outcome, MessageError):
                self.telemetry.reject(outcome.kind, str(outcome))
            elif isinstance(outcome, ErrorMessage):
                error = outcome  # always the last event: the protocol stops there (§4.4)
            elif isinstance(outcome, Reconnect):
                logger.info("server reconnect notice: within %s s", outcome.within_seconds)
        rates = parsed.rates
        if len(rates):
            self.telemetry.lag_ns = received - int(rates.time_ns[-1])
            self.sink(rates, received)
            self._delivered = True
        self._store_released()
        if error is not None:
            self._server_error(error)

    def _store_released(self) -> int:
        """Store the updates a switch held back, once the protocol released them; returns how many."""
        kept = 0
        for rates, received in self.protocol.released():
            self.sink(rates, received)
            kept += len(rates)
        if kept:
            self._delivered = True
        return kept

    def _server_error(self, msg: ErrorMessage) -> None:
        """Log a server ``error`` and raise it; the server closes the connection after one (§4.4)."""
        logger.warning("server error: %s", msg.message)
        if msg.is_auth:
            raise AuthenticationError(msg.message)
        raise ServerError(msg.message)

    # ------------------------------------------------------------------ errors

    def _translate(self, exc: BaseException) -> BaseException:
        """Map foreign errors into the ``CoinratesError`` tree, once, at this edge."""
        if isinstance(exc, CoinratesError):
            return exc
        if isinstance(exc, InvalidStatus):
            code = exc.response.status_code
            if code in (401, 403):
                return AuthenticationError(f"the server refused the API key (HTTP {code})")
            return TransportError(f"the server refused the connection (HTTP {code})")
        if isinstance(exc, InvalidURI):
            return ConfigError(f"invalid URL {redact_url(self.settings.url or '')}")
        if isinstance(exc, (OSError, asyncio.TimeoutError, WebSocketException, EOFError)):
            return TransportError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return exc


class _GuardedConnect(connect):
    """websockets' ``connect`` that follows a redirect only where the API key may go.

    websockets strips ``Authorization`` and ``Cookie`` on a cross-origin redirect, not our
    ``X-CoinAPI-Key``: a redirect that would carry the key to another host, or over plain
    ``ws://`` to a remote one, is refused with a ``ConfigError`` (fatal, not retried).
    """

    def process_redirect(self, exc: Exception) -> Exception | str:
        target = super().process_redirect(exc)
        if isinstance(target, str) and self.additional_headers is not None:
            has_key = any(k.lower() == "x-coinapi-key" for k, _ in Headers(self.additional_headers).raw_items())
            if has_key and not key_allowed(self.uri, target):
                return ConfigError(f"refusing to follow a redirect to {redact_url(target)}: the API key goes only "
                                   f"to {redact_url(self.uri)} (and only over wss:// or to loopback)")
        return target


async def _close_quietly(ws: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), timeout=2.0)


async def _take_queued(ws: ClientConnection, frames: list[Data]) -> ConnectionClosed | None:
    """Append to ``frames`` the messages ``ws`` already received, without waiting for more.

    ``websockets`` has no public "receive if available"; its documented way to bound a
    ``recv()`` is a timeout, and cancelling ``recv()`` loses nothing. ``asyncio.timeout(0)``
    fires only once the task would actually wait, so every ``recv()`` that completes from the
    queue returns normally and the first one that would block is cancelled. The count of
    queued frames (``_ws_compat.queued_frames``), when this websockets version exposes it,
    bounds the loop so that the usual drain ends without that cancellation.

    Returns the ``ConnectionClosed`` met while draining, for the caller to handle after
    processing the frames taken before it.
    """
    queued = queued_frames(ws)
    if queued == 0:
        return None
    limit = MAX_BATCH_FRAMES if queued is None else min(MAX_BATCH_FRAMES, len(frames) + queued)
    try:
        async with asyncio.timeout(0):
            while len(frames) < limit:
                frames.append(await ws.recv())
    except TimeoutError:
        pass
    except ConnectionClosed as exc:
        return exc
    return None
