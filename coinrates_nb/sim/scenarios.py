"""Fault scenarios as methods: drop, error, reconnect notice, lag, stall, pause, inject.

:class:`Scenarios` is a mixin of :class:`~coinrates_nb.sim.server.Simulator`. Each method may be
called from any thread (a test, a notebook): the work is handed to the simulator's own event
loop, which owns every websockets object (STYLE principle 4), and the call returns once it is
in effect. On a stopped simulator a scenario does nothing, or just sets its mode.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from .._loop import run_on
from ..exceptions import ConfigError, SimulatorError
from ..messages import ErrorMessage, Reconnect
from ._connection import CLOSE_RECONNECT, Connection, TextBytes, quantize, set_reading

__all__ = ["CALL_TIMEOUT", "Scenarios"]

logger = logging.getLogger("coinrates_nb.sim")

T = TypeVar("T")

CALL_TIMEOUT: Final = 10.0
"""Seconds a scenario call from another thread waits for the simulator loop."""


class Scenarios:
    """The fault scenarios of the simulator (``../shared/protocol/exrates-websocket.md`` §4, §5)."""

    if TYPE_CHECKING:  # provided by Simulator
        _loop: asyncio.AbstractEventLoop | None
        _thread: threading.Thread | None
        _clients: dict[int, Connection]
        _stalled: bool
        _data_paused: bool
        _drop_every: int | None
        _refusing: bool
        dropped: int
        errors_sent: int

        def _fail(self, client: Connection, message: str) -> None: ...

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

        Raises:
            ConfigError: ``n_messages`` is not an int >= 1 or ``None``.
        """
        if n_messages is not None and (not isinstance(n_messages, int) or isinstance(n_messages, bool) or n_messages < 1):
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
        each at the deadline (code 1001); data flows until then and new connections are accepted
        meanwhile (§4.2).

        Raises:
            ConfigError: ``within_seconds`` is negative or not a finite number.
        """
        _check_seconds(within_seconds, "within_seconds")

        def notify() -> None:
            loop = asyncio.get_running_loop()
            before = quantize(time.time_ns() + round(within_seconds * 1e9))
            text = Reconnect(within_seconds, before).to_json()
            targets = [c for c in self._clients.values() if not c.closing]
            for client in targets:
                client.enqueue(text)
                loop.call_later(within_seconds, self._close_at_deadline, client)
            logger.info("scenario: reconnect requested from %d client(s) within %.3g s", len(targets), within_seconds)
        self._on_loop(notify, None)

    def refuse_connections(self, on: bool = True) -> None:
        """Answer new WebSocket upgrades with HTTP 429 (CoinAPI's per-IP connection limit), until
        ``refuse_connections(False)``; open connections go on streaming. Counted in ``refused_connections``."""

        def apply() -> None:
            self._refusing = bool(on)
            logger.info("scenario: new connections %s", "refused (429)" if on else "accepted again")
        self._on_loop(apply, None)

    def lag(self, seconds: float) -> None:
        """Deliver every frame to the clients connected now ``seconds`` late; later ones are not delayed.

        Models a slow route: after a ``reconnect`` notice the new connection goes to another
        server (§4.2), which may be nearer, so the new link can run ahead of the old one.

        Raises:
            ConfigError: ``seconds`` is negative or not a finite number.
        """
        _check_seconds(seconds, "seconds")

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
                set_reading(client.ws, not on)
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

        Raises:
            ConfigError: the frame is neither ``str`` nor bytes-like.
        """
        if not isinstance(text_or_bytes, (str, bytes, bytearray, memoryview)):
            raise ConfigError(f"inject() takes str or bytes, got {type(text_or_bytes).__name__}")
        frame: str | bytes = text_or_bytes if isinstance(text_or_bytes, str) else bytes(text_or_bytes)
        if text and isinstance(frame, bytes):
            frame = TextBytes(frame)

        def send() -> None:
            for client in self._clients.values():
                if not client.closing:
                    client.enqueue(frame)
            logger.info("scenario: injected a %d-byte frame into %d client(s)", len(frame), len(self._clients))
        self._on_loop(send, None)

    # ------------------------------------------------------------------ plumbing

    def _close_at_deadline(self, client: Connection) -> None:
        """The ``reconnect`` deadline passed: close the connection (§4.2)."""
        if self._clients.get(client.cid) is client:
            client.close_soon(CLOSE_RECONNECT, "reconnect deadline")

    def _on_loop(self, fn: Callable[[], T], idle: T, setter: Callable[[], None] | None = None) -> T:
        """Run ``fn`` on the simulator loop and return its result; ``idle`` when not running.

        Scenario calls come from test or notebook threads; every websockets object lives on the
        loop, so the work is handed over and awaited (STYLE principle 4). ``setter`` records a
        mode while stopped, so it is in effect from the next start.
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

        def closed() -> T:  # the loop closed in between
            if setter is not None:
                setter()
            return idle
        return run_on(loop, call(), CALL_TIMEOUT, "the scenario", SimulatorError, closed=closed)


def _check_seconds(value: object, name: str) -> None:
    """A duration argument must be a finite number >= 0 (bools are not numbers here)."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"{name} must be a non-negative number of seconds, got {value!r}")
