"""One simulator connection: its scope, the outgoing queue (the §5 buffer) and its three tasks.

Touched only on the simulator's event loop. The queue holds frames in send order, each with the
ledger entry it records once handed to the socket, and close instructions that take effect
after the frames before them (``../shared/protocol/exrates-websocket.md`` §4.4: an ``error`` is
followed by a close). The tasks are the writer (queue to socket, ledger), the heartbeats (§4.3)
and the keepalive pings (§5); they read the server's modes (stall, drop_every, a stop under way)
and count into its counters. Also the small socket helpers the server and the scenarios share.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from websockets.asyncio.server import ServerConnection

from .._types import Pair, TimeNs
from ..exceptions import preview
from ..messages import ErrorMessage, Heartbeat
from .scope import Route, ServerScope

if TYPE_CHECKING:
    from .server import Simulator

__all__ = ["CLOSE_AFTER_ERROR", "CLOSE_RECONNECT", "OVERFLOW_MESSAGE", "TIME_QUANTUM", "Close", "Connection", "LedgerEntry",
           "TextBytes", "flush", "peer", "quantize", "set_reading", "text_of"]

LedgerEntry = tuple[Pair, TimeNs, float]
"""One ``exrate`` as sent: pair, wire time (UTC ns) and rate."""

OVERFLOW_MESSAGE: Final = "Reached maximum allowed buffered messages for this connection."
"""The documented text of the slow-consumer error (§4.4, §5)."""

CLOSE_AFTER_ERROR: Final = 1008
"""Close code after an ``error`` (policy violation). The real code is UNCONFIRMED (§5)."""

CLOSE_RECONNECT: Final = 1001
"""Close code at a ``reconnect`` deadline or a planned stop (going away): the server restarts (§4.2)."""

TIME_QUANTUM: Final = 100
"""Wire times have 7 fractional digits: 100 ns steps (§7)."""

HEARTBEAT_POLL: Final = 0.05
"""Seconds between re-checks while a connection is not eligible for a heartbeat."""

HEARTBEAT_TEXT: Final = Heartbeat().to_json()

logger = logging.getLogger("coinrates_nb.sim")


@dataclass(frozen=True, slots=True)
class Close:
    """A queued instruction to close the connection after the frames before it."""

    code: int
    reason: str


class TextBytes(bytes):
    """Bytes to send in a *text* frame as they are, even if not valid UTF-8 (``inject(..., text=True)``)."""


Out = tuple[str | bytes, LedgerEntry | None] | Close
"""One queued item: a frame with its ledger entry (``None`` for control messages), or a close."""


class Connection:
    """One connection's scope, outgoing queue, counters and tasks; touched only on the simulator loop."""

    def __init__(self, server: Simulator, cid: int, ws: ServerConnection, now: float, ledger: deque[LedgerEntry]) -> None:
        self.server = server
        self.cid = cid
        self.ws = ws
        self.scope = ServerScope()
        self.routes: tuple[Route, ...] = ()
        self.pending: deque[Out] = deque()
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
        """Queue one frame after everything queued before it and wake the writer."""
        self.pending.append((frame, entry))
        self.wake.set()

    def fail(self, message: str) -> bool:
        """Queue ``error`` and a close (code 1008): every error ends the connection (§4.4).

        Returns False (and queues nothing) when the connection is already closing.
        """
        if self.closing:
            return False
        self.closing = True
        self.enqueue(ErrorMessage(message).to_json())
        self.pending.append(Close(CLOSE_AFTER_ERROR, message[:120]))
        return True

    def close_soon(self, code: int, reason: str) -> bool:
        """Queue a close after what is queued; False when the connection is already closing."""
        if self.closing:
            return False
        self.closing = True
        self.pending.append(Close(code, reason))
        self.wake.set()
        return True

    # ------------------------------------------------------------------ tasks (one each per connection)

    async def write(self) -> None:
        """Hand queued frames to the socket in order; record every ``exrate`` in the ledger as it is handed over.

        The entry is written before ``send()`` returns (it may wait on back-pressure), so the
        ledger never lags what a client can already have stored; a frame whose send fails
        because the connection dropped stays listed: an unread tail, inside the client's gap.
        """
        server, ws, pending = self.server, self.ws, self.pending
        loop = asyncio.get_running_loop()
        while True:
            if not pending or server._stalled:
                self.wake.clear()
                await self.wake.wait()
                continue
            if self.lag_ns:  # hold the head of the queue until it is lag_ns old
                head = pending[0]
                if not isinstance(head, Close) and head[1] is not None:
                    late = head[1][1] + self.lag_ns - time.time_ns()
                    if late > 0:
                        await asyncio.sleep(late / 1e9)
                        continue
            item = pending.popleft()
            if isinstance(item, Close):
                await ws.close(item.code, item.reason)
                return
            frame, entry = item
            if entry is not None:  # in the ledger before the send returns: a client in this process may store it first
                self.ledger.append(entry)
            # send() waits (drain) while the socket's write buffer is full: back-pressure
            await ws.send(frame, text=True) if type(frame) is TextBytes else await ws.send(frame)
            self.last_sent = loop.time()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug("client %d > %s", self.cid, preview(frame))
            if entry is None:
                if frame is HEARTBEAT_TEXT:
                    server.heartbeats_sent += 1
                continue
            self.exrates += 1
            self.since_drop_set += 1
            server.sent_total += 1
            if server._drop_every is not None and self.since_drop_set >= server._drop_every:
                await flush(ws)  # so the client receives exactly the n messages before the drop
                logger.info("client %d: dropping after %d exrate(s) (drop_every)", self.cid, self.since_drop_set)
                server.dropped += 1
                ws.transport.abort()
                return

    async def heartbeats(self) -> None:
        """Send a heartbeat after each ``heartbeat_after`` seconds of silence, if asked (§4.3)."""
        server = self.server
        loop = asyncio.get_running_loop()
        after = server.heartbeat_after
        while True:
            wait = self.last_sent + after - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            scope = self.scope
            if (scope.started and scope.heartbeat and not self.closing and not server._stalled and not self.pending
                    and server._farewell is None):  # a stop's reconnect notice stays the last message
                self.enqueue(HEARTBEAT_TEXT)
                self.last_sent = loop.time()
            else:
                await asyncio.sleep(min(after, HEARTBEAT_POLL))

    async def keepalive(self) -> None:
        """Ping every ``ping_interval``; drop a client that does not pong within ``ping_timeout`` (§5).

        ``websockets``' own keepalive does the same, but cannot be silenced by ``Simulator.stall``.
        """
        server, ws = self.server, self.ws
        interval, timeout = server.ping_interval, server.ping_timeout
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval)
            if server._stalled:
                continue
            pong = await ws.ping()
            server.pings_sent += 1
            if timeout is None:
                continue
            try:
                async with asyncio.timeout(timeout):
                    await pong
                server.pongs_received += 1
            except TimeoutError:
                if server._stalled:
                    continue  # reading is paused during a stall, so no pong could arrive
                server.pong_timeouts += 1
                server.dropped += 1
                logger.info("client %d: no pong within %.3g s; disconnecting (§5)", self.cid, timeout)
                ws.transport.abort()
                return


def quantize(ns: int) -> TimeNs:
    """Round down to the wire's 100 ns resolution, so the ledger equals what clients parse (§7)."""
    return ns - ns % TIME_QUANTUM


def text_of(raw: str | bytes) -> str:
    """A received frame as text, for logs (invalid UTF-8 replaced)."""
    return raw if isinstance(raw, str) else bytes(raw).decode("utf-8", errors="replace")


def peer(ws: ServerConnection) -> str:
    """``host:port`` of the remote end, for logs."""
    addr = ws.remote_address
    return f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) and len(addr) >= 2 else str(addr)


def set_reading(ws: ServerConnection, on: bool) -> None:
    """Pause or resume reading the socket (``stall``); a closing transport is left alone."""
    transport = ws.transport
    if transport.is_closing():
        return
    if on:
        transport.resume_reading()
    else:
        transport.pause_reading()


async def flush(ws: ServerConnection, timeout: float = 1.0) -> None:
    """Wait (briefly) until the transport handed its buffer to the kernel."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while ws.transport.get_write_buffer_size() > 0 and loop.time() < deadline and not ws.transport.is_closing():
        await asyncio.sleep(0.005)
