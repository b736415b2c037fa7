"""I/O edge: the ``websockets`` session loop that connects, says hello, reads, and reconnects.

All policy lives elsewhere (``protocol``: scope and staleness; ``retry``: backoff and classify);
this loop only moves bytes and translates foreign errors into the ``CoinratesError`` tree once.
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
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.protocol import State
from websockets.typing import Data
from websockets.version import version as websockets_version

from .config import SECURE, Settings, is_loopback, redact_url
from .exceptions import (
    AuthenticationError,
    CoinratesError,
    ConfigError,
    MessageError,
    ServerError,
    StaleStreamError,
    TransportError,
)
from .messages import ErrorMessage, ExchangeRate, RateBatch, Reconnect, ServerMessage
from .protocol import ClientProtocol
from .retry import backoff, classify
from .status import Telemetry

__all__ = ["Session"]

logger = logging.getLogger("coinrates_nb.client")

RateSink = Callable[[ExchangeRate, int], None]
"""Called on the loop thread with each fresh update and its receive time (ns)."""

BatchSink = Callable[[RateBatch, int], None]
"""Called on the loop thread with a batch of fresh updates (columns) and their receive time (ns)."""

TICK = 0.1
"""Seconds between watchdog checks (staleness, reconnect notices, throughput samples)."""


BATCH_MIN = 64
"""Frames taken together from which they are parsed and stored as one batch, not one by one.

Below it the vectorised path's fixed cost (a few dozen NumPy calls) exceeds what it saves
(``benchmarks/bench_parse.py``)."""

BATCH_MAX = 4096
"""Most frames taken from the receive queue at once, to bound one batch's latency and memory."""

SWITCH_MAX = 30.0
"""Most seconds an old connection is read after a ``reconnect`` notice (its ``within_seconds`` is
normally ~10, §4.2); past that it is closed and the held updates of the new one are released."""

SWITCH_GRACE = 1.0
"""Seconds past the notice's deadline an old connection may stay open with nothing queued
before it is cut; one that is closing is read to its end (up to ``SWITCH_MAX``)."""

HOLD_MAX = 131_072
"""Most updates held back during a switch: the server's own per-connection buffer (§5)."""


class _Hold:
    """Updates a new connection received while the old one drains (make-before-break, §4.2)."""

    __slots__ = ("items", "open")

    def __init__(self) -> None:
        self.items: list[tuple[ExchangeRate, int]] = []
        self.open = True


class _RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Hands websockets a logger that replaces the key wherever it would appear.

    websockets logs every request header at DEBUG (``> X-CoinAPI-Key: ...``); a user who turns
    on DEBUG logging must still never see the key.
    """

    def __init__(self, logger: logging.Logger, secret: str | None) -> None:
        super().__init__(logger, {})
        self.secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        secret = self.secret
        if secret:
            msg = str(msg).replace(secret, SECURE)
            args = tuple(str(a).replace(secret, SECURE) if secret in str(a) else a for a in args)
        self.logger.log(level, msg, *args, **kwargs)


class Session:
    """One logical stream over successive connections: connect, hello, read, reconnect.

    Args:
        settings: endpoint, key and timeouts.
        protocol: scope and liveness state; survives reconnects so the scope is replayed.
        sink: receives each fresh ``ExchangeRate`` with its receive time.
        telemetry: counters shown in the collector's status.
        on_disconnect: told when a connection ends, with the wall-clock time (ns), to record gaps.
        rng: randomness for backoff jitter (seedable in tests).
        batch_sink: receives the fresh updates of a batch as columns (see ``BATCH_MIN``); by
            default each row goes to ``sink``.
    """

    def __init__(
        self,
        settings: Settings,
        protocol: ClientProtocol,
        sink: RateSink,
        telemetry: Telemetry,
        on_disconnect: Callable[[int], None] | None = None,
        rng: random.Random | None = None,
        batch_sink: BatchSink | None = None,
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.sink = sink
        self.batch_sink: BatchSink = batch_sink or self._each
        self.telemetry = telemetry
        self.on_disconnect = on_disconnect
        self.rng = rng or random.Random()
        self.current: ClientConnection | None = None
        key = settings.api_key.reveal() if settings.api_key is not None else None
        self._ws_logger = _RedactingLogger(logging.getLogger("websockets.client"), key)
        self._stopping = asyncio.Event()
        self._delivered = False
        """True once the current connection (or its make-before-break successor) delivered an update."""
        self._drains: set[asyncio.Future[None]] = set()
        """Old connections still being read after a make-before-break switch (strong refs for the loop)."""

    # ------------------------------------------------------------------ public (loop thread)

    async def run(self) -> None:
        """Connect and read until :meth:`stop`, or until an error that must not be retried.

        Between attempts it waits a jittered, capped, growing delay (``retry.backoff``). A
        connection that delivered updates restarts that sequence from its initial delay, so a
        one-off drop is retried within ``backoff_initial`` while a server that accepts and then
        fails, or refuses, is retried ever more slowly. ``reconnects`` counts connections lost,
        not attempts; every delay chosen is kept in ``telemetry.retry_delays``.
        """
        settings = self.settings
        delays = backoff(settings.backoff_initial, cap=settings.backoff_cap, rng=self.rng)
        first = True
        while not self._stopping.is_set():
            self.telemetry.set_state("connecting" if first else "reconnecting")
            self._delivered = established = False
            try:
                ws = await self._connect()
                first = False
                established = True
                await self._serve(ws)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - top of the task: classify, count, never die
                err = self._translate(exc)
                decision = classify(err)
                self.telemetry.last_error = str(err)
                self.telemetry.transport_errors += 1
                if not decision.retry:
                    logger.error("stream stopped: %s (%s)", err, decision.reason)
                    self.telemetry.set_state("error")
                    return
                # STYLE §10: a stale stream is a WARNING; an ordinary drop or server error is INFO
                quiet = isinstance(err, (TransportError, ServerError)) and not isinstance(err, StaleStreamError)
                log = logger.info if quiet else logger.warning
                log("connection ended: %s; reconnecting (%s)", err, decision.reason,
                    exc_info=not isinstance(err, CoinratesError))
            finally:
                self.current = None
            if self._stopping.is_set():
                break
            if self.on_disconnect is not None:
                self.on_disconnect(time.time_ns())
            if established:
                self.telemetry.reconnects += 1
            self.telemetry.set_state("reconnecting")
            if self._delivered:  # a connection that worked restarts the backoff
                delays = backoff(settings.backoff_initial, cap=settings.backoff_cap, rng=self.rng)
            delay = next(delays)
            self.telemetry.retry_delays.append(delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        self.telemetry.set_state("stopped")

    def stop(self) -> None:
        """Ask :meth:`run` to end; closes the open connection."""
        self._stopping.set()
        if self.current is not None:
            asyncio.ensure_future(self.current.close())

    async def send(self, text: str | None) -> None:
        """Send a scope change on the open connection; while disconnected the next hello carries it."""
        if text is None or self.current is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await self.current.send(text)

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> ClientConnection:
        """Open a connection and send the hello for the current scope."""
        url = self.settings.url
        assert url is not None
        try:
            ws = await connect(
                url,
                additional_headers=self.settings.headers(),
                compression=self.settings.compression,
                open_timeout=self.settings.open_timeout,
                ping_interval=self.settings.ping_interval,
                ping_timeout=self.settings.ping_timeout,
                max_size=self.settings.max_frame_bytes,
                max_queue=1024,
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
        self.protocol.connected(time.monotonic())
        self.telemetry.connections += 1
        self.telemetry.set_state("connected")
        logger.info("connected to %s (%s)", redact_url(url), self.settings.source)
        return ws

    async def _serve(self, ws: ClientConnection) -> None:
        """Read ``ws`` until it ends; on a server ``reconnect`` notice, switch to a new connection.

        Returns when the session stops; otherwise raises why the connection ended.
        """
        self.current = ws
        reader: asyncio.Future[None] = asyncio.ensure_future(self._read(ws))
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
        """Make-before-break (§4.2 option 3): open the new connection, drain the old one until it closes.

        The old connection keeps delivering until the server closes it at the deadline. The new
        one's updates are held back meanwhile and released through ``ClientProtocol.fresh`` once
        the old one has ended: released at once, a newer update from the new link could overtake
        an older one still in flight on the old link, and ``fresh`` would then drop the older as
        out of order. Held back, every update is stored once and in time order per pair.
        """
        deadline = self.protocol.reconnect_deadline or time.monotonic()
        logger.info("server asked to reconnect within %.1f s: opening a new connection first",
                    max(0.0, deadline - time.monotonic()))
        new = await self._connect()  # resets the deadline; a failure here goes to run()'s retry loop
        self.telemetry.reconnects += 1
        hold = _Hold()
        new_reader: asyncio.Future[None] = asyncio.ensure_future(self._read(new, hold))
        self.current = new
        now = time.monotonic()
        soft = now + min(max(0.0, deadline - now), SWITCH_MAX) + SWITCH_GRACE
        hard = now + SWITCH_MAX + SWITCH_GRACE

        async def drain() -> None:
            # Read the old link to its end: the server closes it at the deadline, and what it
            # sent before is still queued here if we lag. Past the deadline (+ grace) an old link
            # that is still open with nothing queued is cut; after SWITCH_MAX, any old link is.
            try:
                while not old_reader.done():
                    now = time.monotonic()
                    if now >= hard or now >= soft and old.state is State.OPEN and _queued_frames(old) == 0:
                        break
                    await asyncio.wait({old_reader}, timeout=TICK)
            finally:
                old_reader.cancel()
                with contextlib.suppress(BaseException):
                    await old_reader
                self._release(hold)
                await _close_quietly(old)

        self._drains.add(task := asyncio.ensure_future(drain()))
        task.add_done_callback(self._drains.discard)
        return new, new_reader

    def _release(self, hold: _Hold) -> None:
        """Deliver the updates a make-before-break switch held back; later ones flow directly."""
        hold.open = False
        items, hold.items = hold.items, []
        kept = 0
        try:
            for msg, received in items:
                if self.protocol.fresh(msg):
                    self.sink(msg, received)
                    kept += 1
        except Exception:  # noqa: BLE001 - runs in a drain task: log, never die silently
            logger.error("releasing held updates failed", exc_info=True)
        if kept:
            self._delivered = True
        logger.info("switched connections: %d held update(s), %d new", len(items), kept)

    async def _read(self, ws: ClientConnection, hold: _Hold | None = None) -> None:
        """Read frames until the connection closes, delivering fresh updates (or holding them, see ``_switch``).

        After each wait it also takes every frame already queued (``_take_queued``). A few
        are handled one by one; from ``BATCH_MIN`` on they are parsed and stored as one batch
        (``ClientProtocol.receive_batch``, ``batch_sink``), with the same outcome.
        """
        protocol, telemetry = self.protocol, self.telemetry
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
            if (hold is None or not hold.open) and (
                    len(frames) >= BATCH_MIN or any(type(d) is str and _is_array(d) for d in frames)):
                self._deliver_batch(frames, received)  # array frames (a batching feed) hold many updates each
                continue
            for data in frames:
                if type(data) is str and _is_array(data):  # a batching feed's frame (not CoinAPI): bypasses a hold
                    self._deliver_batch([data], received)
                    continue
                try:
                    msg = protocol.receive(data, time.monotonic())
                except MessageError as exc:
                    telemetry.reject(exc.kind, str(exc))
                    continue
                self._deliver(msg, received, hold)

    def _deliver(self, msg: ServerMessage, received: int, hold: _Hold | None) -> None:
        """Act on one parsed frame: store a fresh update (or hold it during a switch), raise a server error."""
        if type(msg) is ExchangeRate:
            if hold is not None and hold.open:
                hold.items.append((msg, received))
                if len(hold.items) >= HOLD_MAX:
                    self._release(hold)
            elif self.protocol.fresh(msg):
                self.telemetry.lag_ns = received - msg.time_ns
                self.sink(msg, received)
                self._delivered = True
        elif isinstance(msg, ErrorMessage):
            self._server_error(msg)
        elif isinstance(msg, Reconnect):
            logger.info("server reconnect notice: within %s s", msg.within_seconds)

    def _deliver_batch(self, frames: list[Data], received: int) -> None:
        """Parse and store frames as one batch; the same outcome as :meth:`_deliver` on each frame."""
        parsed = self.protocol.receive_batch(frames, time.monotonic())
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
            self.batch_sink(rates, received)
            self._delivered = True
        if error is not None:
            self._server_error(error)

    def _each(self, rates: RateBatch, received: int) -> None:
        """The default batch sink: each row to ``sink``, as an ``ExchangeRate``."""
        for msg in rates.updates():
            self.sink(msg, received)

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


async def _close_quietly(ws: Any) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(), timeout=2.0)


async def _take_queued(ws: ClientConnection, frames: list[Data]) -> ConnectionClosed | None:
    """Append to ``frames`` the messages ``ws`` already received, without waiting for more.

    ``websockets`` has no public "receive if available"; its documented way to bound a
    ``recv()`` is a timeout, and cancelling ``recv()`` loses nothing. ``asyncio.timeout(0)``
    fires only once the task would actually wait, so every ``recv()`` that completes from the
    queue returns normally and the first one that would block is cancelled. The count of
    queued frames, when the connection exposes it, bounds the loop so that the usual drain
    ends without that cancellation; it may count fragments, which the timeout still covers.

    Returns the ``ConnectionClosed`` met while draining, for the caller to handle after
    processing the frames taken before it.
    """
    queued = _queued_frames(ws)
    if queued == 0:
        return None
    limit = BATCH_MAX if queued is None else min(BATCH_MAX, len(frames) + queued)
    try:
        async with asyncio.timeout(0):
            while len(frames) < limit:
                frames.append(await ws.recv())
    except TimeoutError:
        pass
    except ConnectionClosed as exc:
        return exc
    return None


def _queued_frames(ws: ClientConnection) -> int | None:
    """Frames waiting in ``ws``'s receive queue, or ``None`` if this websockets version hides it."""
    try:
        return len(ws.recv_messages.frames)
    except (AttributeError, TypeError):
        return None


def _is_array(text: str) -> bool:
    """True if the frame is a JSON array (a batching feed's frame); cheap for the usual ``{``."""
    head = text[:1]
    return head == "[" or head.isspace() and text.lstrip()[:1] == "["
