"""Pure client state machine: scope, frame bookkeeping, staleness, dedupe, time sanity and the reconnect switch.

Text and clocks go in; parsed batches, decisions and outgoing texts come out. No sockets,
threads or clock reads live here, so every rule about hello/subscribe/heartbeat/error/reconnect
and the make-before-break switch is tested by feeding strings and times (the websockets
``protocol.py`` model). ``client.py`` only moves bytes and asks this object what to do.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from ._inputs import filter_items
from ._types import FilterItem, split_pair
from .batch import RateBatch
from .exceptions import MessageError
from .messages import (
    BatchEvent,
    ErrorMessage,
    Heartbeat,
    Hello,
    Reconnect,
    ServerBatch,
    Subscribe,
    Unknown,
    Unsubscribe,
    parse_server_batch,
)

__all__ = ["MAX_AHEAD_NS", "MAX_BATCH_FRAMES", "MAX_BEHIND_NS", "ClientProtocol", "Scope", "Switch", "normalize_items"]

MAX_BATCH_FRAMES: Final = 4096
"""Most queued frames handled as one batch, to bound one batch's latency and memory."""

SWITCH_MAX: Final = 30.0
"""Most seconds an old connection is read after a ``reconnect`` notice (its ``within_seconds`` is
normally ~10, §4.2); past that it is cut and the held updates of the new one are released."""

SWITCH_GRACE: Final = 1.0
"""Seconds past the notice's deadline an old connection may stay open with nothing queued
before it is cut; one that is closing is read to its end (up to ``SWITCH_MAX``)."""

HOLD_MAX: Final = 131_072
"""Most updates held back during a switch: the server's own per-connection buffer (§5)."""

MAX_AHEAD_NS: Final = 60 * 1_000_000_000
"""An update stamped more than this ahead of the receive clock is rejected (``time_ahead``).

One far-future time would otherwise become the pair's newest, so every later update of it
would count as a duplicate forever, its age would go negative, and the window cutoff (newest
time minus the span) would evict every other pair. A minute tolerates any sane clock skew."""

MAX_BEHIND_NS: Final = 7 * 86_400 * 1_000_000_000
"""An update stamped more than this before the receive clock is rejected (``time_behind``): a
live stream carries current rates; a week tolerates rarely-updated assets."""

logger = logging.getLogger("coinrates_nb.protocol")


def normalize_items(items: str | Iterable[str]) -> tuple[FilterItem, ...]:
    """Turn ``"BTC/USD"`` or ``["btc/usd", "ETH"]`` into validated, upper-case filter items (``ConfigError`` if not)."""
    return filter_items(items)


@dataclass(frozen=True, slots=True)
class Scope:
    """The client-side copy of the server's subscription scope (§3.1).

    ``items is None`` means unfiltered (the whole stream); otherwise the ordered filter items.
    """

    items: tuple[FilterItem, ...] | None = ()

    def add(self, new: Iterable[FilterItem]) -> Scope:
        """``subscribe`` semantics: add filters, remove nothing; O(len(scope) + len(new))."""
        if self.items is None:
            return self
        merged = dict.fromkeys(self.items)
        merged.update(dict.fromkeys(new))
        return Scope(tuple(merged))

    def remove(self, gone: Iterable[FilterItem]) -> Scope:
        """``unsubscribe`` semantics: remove exactly the listed filters."""
        if self.items is None:
            return self
        drop = set(gone)
        return Scope(tuple(i for i in self.items if i not in drop))


@dataclass
class Switch:
    """A make-before-break switch in progress (§4.2 option 3): the new link's updates are held.

    Released at once, a newer update from the new link could overtake an older one still in
    flight on the old link, and dedupe would drop the older as out of order. Held until the old
    link has ended, every update is stored once and in time order per pair.
    """

    new_link: int
    soft: float
    """After this, an old link that is still open with nothing queued is cut."""
    hard: float
    """After this, the old link is cut whatever its state."""
    held: list[tuple[RateBatch, int]] = field(default_factory=list)
    held_rows: int = 0


@dataclass
class ClientProtocol:
    """Scope, counters, liveness and dedupe of one logical stream across reconnects.

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
    switch: Switch | None = field(default=None, init=False)
    _released: list[tuple[RateBatch, int]] = field(default_factory=list, init=False)

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
        current = set(self.scope.items or ())
        new = tuple(i for i in normalize_items(items) if self.scope.items is not None and i not in current)
        if not new:
            return None
        self.scope = self.scope.add(new)
        return Subscribe(assets=new, heartbeat=self.heartbeat, update_limit_ms=self.update_limit_ms).to_json()

    def unsubscribe(self, items: str | Iterable[str]) -> str | None:
        """Remove filters; returns the ``unsubscribe`` text to send, or ``None`` if none was subscribed."""
        current = set(self.scope.items or ())
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

    def receive(self, frames: Sequence[str | bytes], now: float, received_ns: int, link: int = 0) -> ServerBatch:
        """Parse frames received together (one frame is a batch of one); count, dedupe, check times.

        Returns the fresh updates as columns and every other outcome in order (control
        messages, and a ``MessageError`` per rejected message, already counted in
        ``rejected``). The server closes after an ``error`` (§4.4), so nothing after the first
        one is taken. A rejected frame still proves the link is alive, so any frame refreshes
        the stale clock. Updates of the new link during a :class:`Switch` are held, not
        returned; they come out of :meth:`released`.

        Args:
            frames: text (or binary) frames in arrival order.
            now: monotonic seconds, for staleness and deadlines.
            received_ns: the wall clock (UTC ns) when the frames arrived, for time sanity.
            link: which connection they came from (see :meth:`begin_switch`).
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
        rates, bad_times = self._sane_times(rates, received_ns)
        if bad_times:
            events = [*events, *bad_times]
        switch = self.switch
        if switch is not None and link == switch.new_link and len(rates):
            switch.held.append((rates, received_ns))
            switch.held_rows += len(rates)
            if switch.held_rows >= HOLD_MAX:
                self._release()
            return ServerBatch(RateBatch.empty(), events)
        return ServerBatch(self.fresh(rates), events)

    def _sane_times(self, rates: RateBatch, received_ns: int) -> tuple[RateBatch, list[BatchEvent]]:
        """Drop rows stamped implausibly far from the receive clock (see ``MAX_AHEAD_NS``); count them."""
        n = len(rates)
        if n == 0:
            return rates, []
        times = rates.time_ns
        if n == 1:
            t = int(times[0])
            if received_ns - MAX_BEHIND_NS <= t <= received_ns + MAX_AHEAD_NS:
                return rates, []
            ahead = np.array([t > received_ns])
            bad = np.array([True])
        else:
            ahead = times > received_ns + MAX_AHEAD_NS
            bad = ahead | (times < received_ns - MAX_BEHIND_NS)
            if not bad.any():
                return rates, []
        events: list[BatchEvent] = []
        for i in np.flatnonzero(bad).tolist():
            kind = "time_ahead" if ahead[i] else "time_behind"
            self.rejected[kind] += 1
            base, quote, _ = rates.keys[int(rates.code[i])]
            gap_s = (int(times[i]) - received_ns) / 1e9
            events.append(BatchEvent(-1, 0, MessageError(
                f"{base}/{quote} time is {abs(gap_s):,.0f} s {'ahead of' if ahead[i] else 'behind'} the receive clock",
                field="time", kind=kind)))
        return rates.take(~bad), events

    def released(self) -> list[tuple[RateBatch, int]]:
        """Held updates a switch let go since the last call, deduped, each with its receive time; clears them."""
        out, self._released = self._released, []
        return out

    def silence(self, now: float) -> float:
        """Seconds since the last frame (0 before the first connection)."""
        return 0.0 if self.last_frame_at is None else max(0.0, now - self.last_frame_at)

    def is_stale(self, now: float) -> bool:
        """True when no frame at all arrived for ``stale_after`` seconds on an open connection."""
        return self.last_frame_at is not None and now - self.last_frame_at >= self.stale_after

    # ------------------------------------------------------------------ the reconnect switch (§4.2)

    def switch_due(self) -> bool:
        """True once a server ``reconnect`` notice asked for a new connection and no switch is under way.

        The client opens the replacement at once (make-before-break, §4.2 option 3) and keeps
        reading the old connection until the server closes it, so nothing is missed.
        """
        return self.reconnect_deadline is not None and self.switch is None

    def switch_failed(self) -> None:
        """The replacement could not be opened: forget the notice and keep reading the old link.

        The server closes the old link at its deadline; the ordinary reconnect (with backoff)
        follows then, instead of a retry at every tick until the deadline.
        """
        self.reconnect_deadline = None

    def begin_switch(self, now: float, new_link: int) -> Switch:
        """The replacement ``new_link`` is open: hold its updates until the old link ends (or is cut).

        Call before :meth:`connected` resets the notice's deadline.
        """
        deadline = self.reconnect_deadline if self.reconnect_deadline is not None else now
        self.switch = Switch(new_link, soft=now + min(max(0.0, deadline - now), SWITCH_MAX) + SWITCH_GRACE,
                             hard=now + SWITCH_MAX + SWITCH_GRACE)
        return self.switch

    def cut_old(self, now: float, *, old_open: bool, old_queued: int | None) -> bool:
        """Whether to stop reading the old link now.

        It is read to its end: the server closes it at the deadline, and what it sent before is
        still queued here if we lag. Past the deadline (+ grace) an old link that is still open
        with nothing queued is cut; after ``SWITCH_MAX`` (+ grace), any old link is.
        """
        switch = self.switch
        if switch is None:
            return True
        return now >= switch.hard or (now >= switch.soft and old_open and old_queued == 0)

    def end_switch(self) -> int:
        """The old link has ended: release the held updates (see :meth:`released`); returns how many were held."""
        if self.switch is None:
            return 0
        held = self._release()
        self.switch = None
        return held

    def _release(self) -> int:
        """Move the switch's held updates, deduped, to :meth:`released`.

        At :meth:`end_switch` the switch ends and later updates flow directly; on the ``HOLD_MAX``
        path the switch stays on, so later updates of the new link are held (and released) again.
        """
        switch = self.switch
        if switch is None:
            return 0
        held, switch.held, switch.held_rows = switch.held, [], 0
        for rates, received_ns in held:
            fresh = self.fresh(rates)
            if len(fresh):
                self._released.append((fresh, received_ns))
        return sum(len(rates) for rates, _ in held)

    # ------------------------------------------------------------------ dedupe

    def fresh(self, rates: RateBatch) -> RateBatch:
        """The rows that are later than every earlier time of their pair; counts the rest as duplicates.

        Two connections overlap during a make-before-break switch; this keeps each update once
        and every pair in time order. A row is kept when its time is later than the newest seen
        before the batch and than the rows before it in the batch. Small batches (the usual
        frame alone) are checked row by row; larger ones per pair with NumPy.
        """
        n = len(rates)
        if n == 0:
            return rates
        if n <= _SCALAR_ROWS:
            return self._fresh_rows(rates)
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

    def _fresh_rows(self, rates: RateBatch) -> RateBatch:
        """:meth:`fresh` for a few rows, one at a time: cheaper than a dozen NumPy calls."""
        last_time, keys = self.last_time, rates.keys
        keep: list[bool] = []
        for code, t in zip(rates.code.tolist(), rates.time_ns.tolist(), strict=True):
            base, quote, _ = keys[code]
            key = (base, quote)
            last = last_time.get(key)
            if last is not None and t <= last:
                keep.append(False)
            else:
                last_time[key] = t
                keep.append(True)
        if all(keep):
            return rates
        self.duplicates += keep.count(False)
        return rates.take(np.array(keep, bool))


_SCALAR_ROWS: Final = 8
"""Batches up to this many rows are deduped row by row (``benchmarks/bench_parse.py``)."""
