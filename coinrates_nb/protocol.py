"""Pure client state machine: subscription scope, frame bookkeeping, staleness and reconnect deadlines.

Text and ``now`` go in; parsed events and outgoing texts come out. No sockets, threads or clock
reads live here, so every rule about hello/subscribe/heartbeat/error/reconnect is tested by
feeding strings (the websockets ``protocol.py`` model).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ._types import FilterItem, split_pair
from .exceptions import MessageError
from .messages import (
    ErrorMessage,
    ExchangeRate,
    Heartbeat,
    Hello,
    RateBatch,
    Reconnect,
    ServerBatch,
    ServerMessage,
    Subscribe,
    Unknown,
    Unsubscribe,
    _check_items,
    parse_server,
    parse_server_batch,
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

    # ------------------------------------------------------------------ batches

    def receive_batch(self, frames: Sequence[str | bytes], now: float) -> ServerBatch:
        """Parse frames received together: :meth:`receive` on each, then :meth:`fresh` on each update.

        Returns the fresh updates as columns and every other outcome in order (control
        messages, and a ``MessageError`` per rejected message, already counted here). The
        server closes after an ``error`` (§4.4), so nothing after the first one is taken: the
        batch ends with it, as reading frame by frame would.
        """
        if frames:
            self.last_frame_at = now
        parsed = parse_server_batch(frames)
        rates, events, n_frames = parsed.rates, parsed.events, len(frames)
        for i, event in enumerate(events):
            if isinstance(event.outcome, ErrorMessage):
                events, rates, n_frames = events[: i + 1], rates.head(event.rows_before), event.frame + 1
                break
        self.frames += n_frames
        self.exrates += len(rates)
        for event in events:
            outcome = event.outcome
            if isinstance(outcome, MessageError):
                self.rejected[outcome.kind] += 1
            elif isinstance(outcome, Heartbeat):
                self.heartbeats += 1
            elif isinstance(outcome, Reconnect):
                self.reconnect_deadline = now + max(0.0, float(outcome.within_seconds))
            elif isinstance(outcome, ErrorMessage):
                self.server_errors += 1
                self.last_error = outcome
            elif isinstance(outcome, Unknown):
                self.unknown += 1
        return ServerBatch(self.fresh_batch(rates), events, parsed.objects)

    def fresh_batch(self, rates: RateBatch) -> RateBatch:
        """The rows :meth:`fresh` would keep, called on each in order; vectorised per pair.

        A row is kept when its time is later than every earlier time of its pair (the newest
        seen before the batch, and the rows before it in the batch). The usual batch, each
        pair already in time order, is checked in one pass; a pair out of order is resolved
        with a running maximum.
        """
        n = len(rates)
        if n == 0:
            return rates
        times = rates.time_ns
        names, codes = rates.pairs()
        keys = [split_pair(name) for name in names]
        floor = np.iinfo(np.int64).min  # below any time a message can carry (messages.exchange_rate)
        last = np.array([self.last_time.get(key, floor) for key in keys], np.int64)
        if len(names) == 1:
            order = None
            sorted_times, sorted_codes = times, codes
        else:
            order = np.argsort(codes, kind="stable")
            sorted_times, sorted_codes = times[order], codes[order]
        starts = np.ones(n, bool)
        starts[1:] = sorted_codes[1:] != sorted_codes[:-1]
        previous = np.empty(n, np.int64)
        previous[1:] = sorted_times[:-1]
        previous[starts] = last[sorted_codes[starts]]
        keep_sorted = sorted_times > previous
        group_at = np.flatnonzero(starts)
        if not keep_sorted.all():  # out of order somewhere: compare with the running maximum instead
            bounds = [*group_at.tolist(), n]
            for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
                if keep_sorted[lo:hi].all():
                    continue
                segment = sorted_times[lo:hi]
                running = np.maximum.accumulate(np.concatenate(([last[sorted_codes[lo]]], segment[:-1])))
                keep_sorted[lo:hi] = segment > running
        newest = np.maximum(np.maximum.reduceat(sorted_times, group_at), last[sorted_codes[group_at]])
        for code, value in zip(sorted_codes[group_at].tolist(), newest.tolist(), strict=True):
            self.last_time[keys[code]] = value
        if keep_sorted.all():
            return rates
        keep = np.empty(n, bool)
        if order is None:
            keep = keep_sorted
        else:
            keep[order] = keep_sorted
        self.duplicates += int(n - keep.sum())
        return rates.take(keep)
