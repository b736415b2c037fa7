"""Pure client state machine: subscription scope, frame bookkeeping, staleness and reconnect deadlines.

Text and ``now`` go in; parsed events and outgoing texts come out. No sockets, threads or clock
reads live here, so every rule about hello/subscribe/heartbeat/error/reconnect is tested by
feeding strings (the websockets ``protocol.py`` model).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ._types import FilterItem
from .exceptions import MessageError
from .messages import (
    ErrorMessage,
    ExchangeRate,
    Heartbeat,
    Hello,
    Reconnect,
    ServerMessage,
    Subscribe,
    Unknown,
    Unsubscribe,
    _check_items,
    parse_server,
)

__all__ = ["ClientProtocol", "Scope", "normalize_items"]

logger = logging.getLogger("coinrates_nb.protocol")


def normalize_items(items: str | Iterable[str]) -> tuple[FilterItem, ...]:
    """Turn ``"BTC/USD"`` or ``["btc/usd", "ETH"]`` into validated, upper-case filter items."""
    if isinstance(items, str):
        items = [items]
    return _check_items(list(items))


@dataclass(frozen=True, slots=True)
class Scope:
    """The client-side copy of the server's subscription scope (§3.1).

    ``items is None`` means unfiltered (the whole stream); otherwise the ordered filter items.
    """

    items: tuple[FilterItem, ...] | None = ()

    def add(self, new: Iterable[FilterItem]) -> Scope:
        """``subscribe`` semantics: add filters, remove nothing."""
        if self.items is None:
            return self
        return Scope(self.items + tuple(i for i in new if i not in self.items))

    def remove(self, gone: Iterable[FilterItem]) -> Scope:
        """``unsubscribe`` semantics: remove exactly the listed filters."""
        if self.items is None:
            return self
        drop = set(gone)
        return Scope(tuple(i for i in self.items if i not in drop))


@dataclass
class ClientProtocol:
    """Scope, counters and liveness of one logical stream across reconnects.

    Args:
        items: initial filter items (pairs or asset ids); ``None`` subscribes to everything.
        heartbeat: ask the server for heartbeats, so silence can be told from a dead link (§4.3).
        update_limit_ms: per-pair throttle sent as ``subscribe_update_limit_ms_exrate``.
        stale_after: seconds without any frame after which the stream counts as stale.
    """

    items: Iterable[FilterItem] | None = ()
    heartbeat: bool = True
    update_limit_ms: int | None = None
    stale_after: float = 10.0
    scope: Scope = field(init=False)
    last_frame_at: float | None = field(default=None, init=False)
    reconnect_deadline: float | None = field(default=None, init=False)
    frames: int = field(default=0, init=False)
    exrates: int = field(default=0, init=False)
    heartbeats: int = field(default=0, init=False)
    unknown: int = field(default=0, init=False)
    server_errors: int = field(default=0, init=False)
    rejected: Counter[str] = field(default_factory=Counter, init=False)
    last_error: ErrorMessage | None = field(default=None, init=False)
    duplicates: int = field(default=0, init=False)
    last_time: dict[tuple[str, str], int] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.scope = Scope(None if self.items is None else normalize_items(self.items))

    # ------------------------------------------------------------------ outgoing

    def hello(self) -> str:
        """The ``hello`` that (re)establishes the whole current scope on a fresh connection (§9.6)."""
        return Hello(assets=self.scope.items, heartbeat=self.heartbeat, update_limit_ms=self.update_limit_ms).to_json()

    def set_scope(self, items: str | Iterable[str] | None) -> str:
        """Replace the scope; returns the ``hello`` to send on an open connection."""
        self.scope = Scope(None if items is None else normalize_items(items))
        return self.hello()

    def subscribe(self, items: str | Iterable[str]) -> str | None:
        """Add filters; returns the ``subscribe`` text to send, or ``None`` if nothing is new."""
        new = tuple(i for i in normalize_items(items) if self.scope.items is not None and i not in self.scope.items)
        if not new:
            return None
        self.scope = self.scope.add(new)
        return Subscribe(assets=new, heartbeat=self.heartbeat, update_limit_ms=self.update_limit_ms).to_json()

    def unsubscribe(self, items: str | Iterable[str]) -> str | None:
        """Remove filters; returns the ``unsubscribe`` text to send, or ``None`` if none was subscribed."""
        current = self.scope.items or ()
        gone = tuple(i for i in normalize_items(items) if i in current)
        if not gone:
            return None
        self.scope = self.scope.remove(gone)
        return Unsubscribe(assets=gone, heartbeat=self.heartbeat).to_json()

    # ------------------------------------------------------------------ incoming

    def connected(self, now: float) -> None:
        """A new connection opened: silence is measured from now; any reconnect deadline is met."""
        self.last_frame_at = now
        self.reconnect_deadline = None

    def receive(self, data: str | bytes, now: float) -> ServerMessage:
        """Parse one frame, update counters and deadlines; raises ``MessageError`` on bad input.

        A rejected frame still proves the link is alive, so it refreshes the stale clock.
        """
        self.frames += 1
        self.last_frame_at = now
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.rejected["binary_frame"] += 1
            raise MessageError("binary frame: the API sends JSON text frames", payload=bytes(data), kind="binary_frame")
        try:
            msg = parse_server(data)
        except MessageError as exc:
            self.rejected[exc.kind] += 1
            raise
        if type(msg) is ExchangeRate:
            self.exrates += 1
        elif isinstance(msg, Heartbeat):
            self.heartbeats += 1
        elif isinstance(msg, Reconnect):
            self.reconnect_deadline = now + max(0.0, float(msg.within_seconds))
        elif isinstance(msg, ErrorMessage):
            self.server_errors += 1
            self.last_error = msg
        elif isinstance(msg, Unknown):
            self.unknown += 1
        return msg

    def silence(self, now: float) -> float:
        """Seconds since the last frame (0 before the first connection)."""
        return 0.0 if self.last_frame_at is None else max(0.0, now - self.last_frame_at)

    def is_stale(self, now: float) -> bool:
        """True when no frame at all arrived for ``stale_after`` seconds on an open connection."""
        return self.last_frame_at is not None and now - self.last_frame_at >= self.stale_after

    def switch_due(self) -> bool:
        """True once a server ``reconnect`` notice asked for a new connection (§4.2).

        We open the replacement at once (make-before-break, §4.2 option 3) and keep reading the
        old connection until the server closes it, so nothing is missed across the switch.
        """
        return self.reconnect_deadline is not None

    def fresh(self, msg: ExchangeRate) -> bool:
        """True unless ``msg`` repeats or predates the newest update already seen for its pair.

        Two connections overlap during a make-before-break switch; this keeps each update once
        and every pair in time order.
        """
        key = (msg.base, msg.quote)
        last = self.last_time.get(key)
        if last is not None and msg.time_ns <= last:
            self.duplicates += 1
            return False
        self.last_time[key] = msg.time_ns
        return True
