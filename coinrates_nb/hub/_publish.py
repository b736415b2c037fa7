"""The hub's JetStream publisher: the stream, and the queue published in order, one acknowledged window at a time.

Updates go out in the order the collector stored them; the next window goes out only once
JetStream acknowledged the last, and whatever was not acknowledged (a NATS restart, a timeout) is
sent again, first. Every update carries ``Nats-Msg-Id`` (pair and wire time), so JetStream stores
a re-sent update once. Gap and upstream markers travel in the same queue, so they land in place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..batch import RateBatch
from ..exceptions import ConfigError
from ..messages import ExchangeRate
from . import wire
from .wire import HEADER_HUB_RECEIVED, HEADER_MSG_ID, HEADER_ORIGIN, Layout

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["ACK_TIMEOUT", "MAX_BACKLOG", "WINDOW", "Gap", "Item", "Out", "Publisher", "Upstream", "ensure_stream",
           "updates"]

logger = logging.getLogger("coinrates_nb.hub")

WINDOW: Final = 2048
"""Most updates published before waiting for their acknowledgements (one window in flight)."""

ACK_TIMEOUT: Final = 5.0
"""Seconds a window may wait for JetStream's acknowledgements before it is sent again."""

MAX_BACKLOG: Final = 1_000_000
"""Updates queued while NATS is unreachable before the oldest are dropped (and a gap published)."""


@dataclass(frozen=True, slots=True)
class Out:
    """One update to publish."""

    subject: str
    payload: bytes
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Gap:
    """An upstream gap marker to publish in place."""

    reason: str
    at_ns: int


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream (re)connect marker, published before the first update of the connection."""

    source: str
    connections: int
    at_ns: int


Item = Out | Gap | Upstream


def updates(layout: Layout, rates: RateBatch, received_ns: int) -> list[Item]:
    """The messages for a batch of stored updates: CoinAPI's wire JSON, with the dedupe id and the hub's receive time."""
    subjects = [layout.subject(base, quote) for base, quote, _ in rates.keys]
    received = str(received_ns)
    origin = getattr(rates, "origin", 0)
    origin_name = None
    if origin:
        from ..batch import ORIGINS  # type: ignore[attr-defined, unused-ignore]  # the history issue's origins

        origin_name = str(ORIGINS[origin])
    out: list[Item] = []
    for code, t, rate in zip(rates.code.tolist(), rates.time_ns.tolist(), rates.rate.tolist(), strict=True):
        base, quote, rate_type = rates.keys[code]
        headers = {HEADER_MSG_ID: wire.msg_id(base, quote, t), HEADER_HUB_RECEIVED: received}
        if origin_name is not None:
            headers[HEADER_ORIGIN] = origin_name
        payload = ExchangeRate(base, quote, rate_type, t, rate).to_json().encode()
        out.append(Out(subjects[code], payload, headers))
    return out


async def ensure_stream(js: JetStreamContext, layout: Layout, *, retention_s: float, max_bytes: int, replicas: int,
                        lease_s: float) -> KeyValue:
    """Create (or update) the stream and the KV bucket (lease and health); JetStream keeps both across restarts."""
    from nats.js import api
    from nats.js.errors import APIError, BadRequestError, NotFoundError

    config = api.StreamConfig(
        name=layout.stream, subjects=layout.stream_subjects, description="coinrates_nb hub: CoinAPI exchange rates",
        retention=api.RetentionPolicy.LIMITS, max_age=retention_s, max_bytes=max_bytes,
        discard=api.DiscardPolicy.OLD, storage=api.StorageType.FILE, num_replicas=replicas,
        duplicate_window=min(300.0, retention_s), allow_direct=True)
    try:
        try:
            await js.stream_info(layout.stream)
            await js.update_stream(config)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:  # created meanwhile by another process
                await js.update_stream(config)
        try:
            return await js.key_value(layout.bucket)
        except NotFoundError:
            return await js.create_key_value(bucket=layout.bucket, history=1, ttl=lease_s,
                                             storage=api.StorageType.FILE, replicas=replicas)
    except APIError as exc:  # a single server answers 500 "replicas > 1 not supported in non-clustered mode"
        if replicas == 1 or isinstance(exc, NotFoundError):
            raise
        raise ConfigError(f"JetStream refused replicas={replicas} for stream {layout.stream}: {exc.description or exc} "
                          f"(more than one replica needs a NATS cluster of at least {replicas} servers)") from exc


class Publisher:
    """The queue (updates and markers) and its counters; :meth:`run` publishes it on the hub loop.

    Args:
        layout: subjects of the stream.
        hub_id, since_ns: name the markers (and their ``Nats-Msg-Id``) as this hub run's.
        js: the JetStream context of the hub's connection.
        ready: whether a window may go out now (NATS connected, the lease fresh).
        fenced: whether another hub took over (a stopping publisher then gives up its queue).
        epoch: NATS reconnects so far: a reconnect mid-window stops waiting for its acknowledgements.
        note_error: shows (and logs, once) a publishing problem as the hub's last error.
    """

    def __init__(self, layout: Layout, hub_id: str, since_ns: int, *, js: Callable[[], JetStreamContext],
                 ready: Callable[[], bool], fenced: Callable[[], bool], epoch: Callable[[], int],
                 note_error: Callable[[str], None]) -> None:
        self.layout, self.hub_id, self.since_ns = layout, hub_id, since_ns
        self._js, self._ready, self._fenced, self._epoch, self._note_error = js, ready, fenced, epoch, note_error
        self.queue: deque[Item] = deque()
        self.in_flight = 0
        self.published = 0
        self.duplicates = 0
        self.gaps_published = 0
        self.dropped = 0
        self.publish_errors = 0
        self.stream_seq: int | None = None
        """The stream sequence of the last message JetStream acknowledged (not a duplicate)."""
        self._events = 0
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def backlog(self) -> int:
        """Messages queued or in flight, not yet acknowledged."""
        return len(self.queue) + self.in_flight

    def push(self, items: list[Item]) -> int:
        """Queue messages (hub loop); beyond ``MAX_BACKLOG`` drop the oldest, a gap marker in their place.

        Returns how many were dropped by this push.
        """
        queue = self.queue
        queue.extend(items)
        dropped = 0
        if len(queue) > MAX_BACKLOG:
            while len(queue) > MAX_BACKLOG:
                queue.popleft()
                dropped += 1
            if not isinstance(queue[0], Gap):
                queue.appendleft(Gap("backlog overflow", time.time_ns()))
        self.dropped += dropped
        self._wake.set()
        return dropped

    def finish(self) -> None:
        """Let :meth:`run` return once the queue is empty (or at once while fenced)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Publish the queue in order, one acknowledged window at a time; re-send what was not acknowledged."""
        queue = self.queue
        while True:
            if not queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._ready():
                if self._stopping and self._fenced():
                    return
                await asyncio.sleep(0.05)
                continue
            window = [queue.popleft() for _ in range(min(WINDOW, len(queue)))]
            self.in_flight = len(window)
            try:
                acked = await self.publish_window(window)
            finally:
                self.in_flight = 0
            if acked < len(window):
                queue.extendleft(reversed(window[acked:]))
                await asyncio.sleep(0.1)

    async def publish_window(self, window: list[Item]) -> int:
        """Publish ``window``; return how many from its start JetStream acknowledged."""
        js = self._js()
        futures: list[asyncio.Future[Any]] = []
        epoch = self._epoch()
        try:
            for item in window:
                if isinstance(item, Out):
                    futures.append(await js.publish_async(item.subject, item.payload, headers=item.headers))
                else:
                    self._events += 1
                    subject, event = self.event(item)
                    futures.append(await js.publish_async(
                        subject, wire.encode(event),
                        headers={HEADER_MSG_ID: f"event@{self.hub_id}:{self.since_ns}:{self._events}"}))
        except Exception as exc:  # noqa: BLE001 - the connection went away mid-window: re-sent below
            self._note_error(f"publish failed: {type(exc).__name__}: {exc}")
        pending: set[asyncio.Future[Any]] = set(futures)
        deadline = time.monotonic() + ACK_TIMEOUT
        while pending and time.monotonic() < deadline and epoch == self._epoch():
            _, pending = await asyncio.wait(pending, timeout=0.1)
        acked = 0
        for fut in futures:
            if not fut.done() or fut.cancelled() or fut.exception() is not None:
                break
            ack = fut.result()
            acked += 1
            if ack.duplicate:
                self.duplicates += 1
            else:
                self.stream_seq = ack.seq
            item = window[acked - 1]
            if isinstance(item, Out):
                self.published += 1
            elif isinstance(item, Gap):
                self.gaps_published += 1
        for fut in futures[acked:]:
            if fut.done():
                if not fut.cancelled() and fut.exception() is not None:
                    self._note_error(f"publish not acknowledged: {fut.exception()}")
            else:
                fut.cancel()  # releases nats-py's publish_async slot
        if acked < len(window):
            self.publish_errors += 1
            if not futures[acked:] or all(not f.done() or f.cancelled() for f in futures[acked:]):
                self._note_error(f"{len(window) - acked:,} update(s) not acknowledged by JetStream in time; re-sending")
        return acked

    def event(self, item: Gap | Upstream) -> tuple[str, wire.GapEvent | wire.UpstreamEvent]:
        """The subject and JSON of a control marker."""
        if isinstance(item, Gap):
            gap: wire.GapEvent = {"type": "upstream_gap", "hub": self.hub_id, "at_ns": item.at_ns, "reason": item.reason}
            return self.layout.gap, gap
        up: wire.UpstreamEvent = {"type": "upstream", "hub": self.hub_id, "at_ns": item.at_ns, "source": item.source,
                                  "connections": item.connections}
        return self.layout.upstream, up
