"""A hub consumer: the collector's session when its URL is ``nats://`` (or ``tls://``).

``cr.stream(pairs, url="nats://HOST:PORT")`` builds :class:`NatsSession` instead of the
WebSocket ``Session`` (``collector._session_class``); it has the same interface (``run()`` until
``stop()``, ``send()`` after a scope change) and feeds the SAME data path: the hub publishes each
update as CoinAPI's wire JSON, and the payloads received together go to
``ClientProtocol.receive`` as one batch, so parsing, time checks, dedupe and counters are the
WebSocket's own, and the collector (``df``, ``latest()``, ``gaps``, charts, ``record()``) cannot
tell the difference.

The JetStream consumer, and why this kind:

* **Ephemeral push consumer with ``AckPolicy.ALL`` and ``max_ack_pending``**, made and remade by
  this session. Push keeps the latency of a plain subscription; acknowledging the last message
  of each stored batch (one ack per batch) lets JetStream hold back whatever a slow notebook
  has not stored yet, so the backlog waits in the stream, not in memory, and ``backlog`` /
  ``lag`` report it. A durable consumer would outlive the notebook and need a name per
  notebook; the session already knows where it is (the last stream sequence it stored), so it
  resumes from there with a new ephemeral consumer after any reconnect: no hole, no duplicate
  (and the protocol's per-pair dedupe behind that). nats-py's "ordered consumer" does the
  same reset but hides the sequence, and its flow control is per message, not per stored batch.
* **Start**: by time, ``now - window`` of the collector (1 h if it has none), so a late notebook
  has its window at once; **resume**: by sequence, ``last + 1``. Each delivery's consumer
  sequence must follow the previous one, and idle heartbeats name the last one sent: anything
  missed remakes the consumer from ``last + 1``.
* **Scope changes**: pairs the hub does not carry are asked for (request/reply); the new
  pairs' window is read by a one-off consumer up to the last stored sequence, then the main
  consumer is remade from ``last + 1`` with the new filter, so the new pair starts with its
  history and no other pair sees a hole or a repeat.
* **Gaps**: a hub's upstream gap marker (in the stream, in place) calls ``on_disconnect``, so
  ``rates.gaps`` shows the hub's gaps; a link to NATS that drops and resumes is no gap. Only a
  resume the stream cannot serve (updates aged out meanwhile) is one.

The consumer <-> NATS link is ``status.state``/``reconnects``/``connections``; the hub <-> CoinAPI
link (the hub's ``health`` key, read every second) is :attr:`NatsSession.upstream`, shown as
``status.upstream``; it labels the data simulated when the hub's upstream is the simulator, and
shows in ``status.last_error`` when it is not connected. :func:`links` gives both, with the
consumer's backlog and latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

import numpy as np

from .._secrets import redact_url
from .._session import ReconnectingSession
from .._types import FilterItem
from ..batch import RateBatch
from ..config import Settings
from ..exceptions import ConfigError, MessageError, TransportError
from ..frame import RollingFrame
from ..messages import parse_server_batch
from ..protocol import ClientProtocol
from ..status import Telemetry
from . import wire
from ._nats import tls_context, translate
from .wire import HEADER_HUB_RECEIVED, HEADER_ORIGIN, HealthWire, Layout

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["NatsSession", "links"]

logger = logging.getLogger("coinrates_nb.hub")
_collector_log = logging.getLogger("coinrates_nb.collector")
"""The collector's own logger, for the one line a collector logs when it starts."""

Sink = Callable[[RateBatch, int], None]

TICK: Final = 0.1
"""Seconds between watchdog checks (throughput samples, heartbeats, stop)."""

MAX_ACK_PENDING: Final = 20_000
"""Deliveries in flight before JetStream waits for our acknowledgement: the most held in memory."""

IDLE_HEARTBEAT: Final = 2.0
"""Seconds of silence after which JetStream sends the consumer a heartbeat."""

MISSED_HEARTBEATS: Final = 3
"""Heartbeat intervals without anything on the consumer before it is remade."""

INACTIVE_THRESHOLD: Final = 30.0
"""Seconds an ephemeral consumer outlives a consumer that vanished (a killed kernel)."""

DEFAULT_BACKFILL_NS: Final = 3600 * 1_000_000_000
"""What a collector with no time window fills at start: the last hour."""

HEALTH_POLL: Final = 1.0
"""Seconds between two reads of the hub's health."""

HEALTH_STALE_NS: Final = 5 * 1_000_000_000
"""A health record older than this means the hub is gone."""

WANT_TIMEOUT: Final = 3.0

LATENCY_SAMPLES: Final = 100_000

_ORIGIN_CODES: Final = {"stream": 0, "history": 1, "healed": 2}


class NatsSession(ReconnectingSession[None]):
    """One logical stream from a hub over successive NATS connections (the WebSocket ``Session``'s interface).

    ``BILLED = False``: its rates are not counted in ``status.rates_today`` (the hub's upstream
    collector counts them, once for every consumer; ``status.upstream`` shows the hub's figure).

    Args:
        settings: ``url`` is ``nats://host:port`` or ``tls://host:port``; an optional path is the
            hub's prefix (``nats://host:4222/desk`` reads the hub started with ``prefix="desk"``).
        protocol: the collector's protocol (scope, dedupe, counters).
        sink: stores each batch of fresh updates with its receive time.
        telemetry: the collector's counters (the consumer <-> NATS link).
        on_disconnect: called with a time (ns) where the data has a gap (a hub's upstream gap).
        rng: randomness for the reconnect backoff.
        backfill_ns: how far back to fill at start (default: the collector's window, else 1 h).
    """

    BILLED: Final = False
    """CoinAPI does not bill a consumer: the hub received these rates, and paid for them, once."""

    LOGS_START: Final = True
    """The collector's "collector started: <source>" line is this session's: the source (simulated or
    live) is the hub's, known from its health once connected (or the line says NATS was not reached)."""

    def __init__(self, settings: Settings, protocol: ClientProtocol, sink: Sink, telemetry: Telemetry,
                 on_disconnect: Callable[[int], None] | None = None, rng: random.Random | None = None,
                 *, backfill_ns: int | None = None) -> None:
        url = settings.url
        if url is None:
            raise ConfigError("a hub consumer needs url='nats://host:port'")
        parts = urlsplit(url)
        prefix = parts.path.strip("/") or wire.DEFAULT_PREFIX
        self.layout = Layout(prefix)
        self.servers = f"{parts.scheme}://{parts.netloc}"
        self.settings = settings
        self.protocol = protocol
        self.sink = sink
        self.telemetry = telemetry
        self.on_disconnect = on_disconnect
        self.rng = rng or random.Random()
        self.backfill_ns = backfill_ns or _window_of(sink) or DEFAULT_BACKFILL_NS
        self.consumer_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.upstream: HealthWire | None = None
        """The hub's last health record: the hub <-> CoinAPI link (``None`` until read)."""
        self.stream_seq = 0
        """The stream sequence of the last message this session took: where a resume starts."""
        self.backlog = 0
        """Messages the stream holds for this consumer beyond the last one taken (JetStream's count)."""
        self.latency_ns: deque[int] = deque(maxlen=LATENCY_SAMPLES)
        """Per update: from the hub receiving it to this session having stored it (ns)."""
        self.hub_leg_ns: deque[int] = deque(maxlen=LATENCY_SAMPLES)
        """Per update, the first part of ``latency_ns``: from the hub receiving it to JetStream storing it (ns)."""
        self.backfilled = 0
        self.remade = 0
        """Times the JetStream consumer was remade on a live connection (missed deliveries, scope changes)."""
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._gen = 0
        self._dseq = 0
        self._inbox: list[Msg] = []
        self._arrived = asyncio.Event()
        self._lost = asyncio.Event()
        self._stopping = asyncio.Event()
        self._lock = asyncio.Lock()
        self._links = 0
        self._delivered = False
        self._last_activity = time.monotonic()
        self._scope: tuple[FilterItem, ...] | None = ()
        self._match: Callable[[str, str], bool] | None = None
        self._upstream_bad: str | None = None
        self._heard = False
        """Whether the hub answered the last request for this consumer's scope (else it is repeated every second)."""
        self._announced = 0
        """0: the collector's start line is not logged yet; 1: logged without the source; 2: with it."""

    _log = logger
    _STOPPED = "hub consumer stopped"
    _ENDED = "hub consumer"

    # ------------------------------------------------------------------ public (loop thread)
    # run() is ReconnectingSession.run (the WebSocket session's loop): connect, serve, classify, back off.
    # A lost link to NATS is no gap in the data (the stream resumes from the last sequence): no _link_lost.

    def stop(self) -> None:
        """Ask :meth:`run` to end (it deletes its consumer and closes the connection)."""
        self._stopping.set()
        self._arrived.set()

    async def send(self, text: str | None) -> None:
        """Apply a scope change (read from ``protocol.scope``; the text is the WebSocket's and is not used).

        New pairs are asked of the hub, their window is read, and the consumer is remade from
        the last sequence with the new filter. While disconnected, the next connection uses the
        new scope.
        """
        if self._js is None or self._nc is None or not self._nc.is_connected:
            return
        async with self._lock:
            await self._rescope()

    def links(self) -> dict[str, Any]:
        """Both links: ``nats`` (this consumer <-> NATS) and ``upstream`` (the hub <-> CoinAPI, from its health)."""
        t = self.telemetry
        nc = self._nc
        return {
            "nats": {"state": t.state, "url": redact_url(self.settings.url or ""), "connections": t.connections,
                     "reconnects": t.reconnects, "connected": bool(nc is not None and nc.is_connected),
                     "backlog": self.backlog, "stream_seq": self.stream_seq, "consumer": self._consumer,
                     "latency_ms": self.latency_ms()},
            "upstream": dict(self.upstream) if self.upstream is not None else None,
        }

    def _announce(self, problem: str | None = None) -> None:
        """Log the collector's start line: the source from the hub's health; before it is known, once, why not."""
        if self._announced == 2 or (self._announced == 1 and problem is not None):
            return
        url = redact_url(self.settings.url or "")
        source = (self.upstream or {}).get("source") if problem is None else None
        if problem is None and self.telemetry.server_simulated:  # the hub's upstream marker said so, in the stream
            source = "simulated"
        if source == "simulated":
            _collector_log.info("collector started: simulated (the hub's upstream is the simulator), hub consumer of %s",
                                url)
        elif source == "live":
            _collector_log.info("collector started: live (the hub's upstream is %s), hub consumer of %s",
                                (self.upstream or {}).get("url") or "CoinAPI", url)
        elif self._announced == 0:
            health = self.upstream or {}
            why = problem or health.get("last_error") or f"the hub's upstream is {health.get('state') or 'not known'}"
            _collector_log.info("collector started: hub consumer of %s; source not known yet (%s)", url, why)
        else:
            return
        self._announced = 2 if source in ("simulated", "live") else 1

    def latency_ms(self, q: float = 50.0) -> float | None:
        """The ``q``-th percentile of hub-receive-to-stored latency over the last samples (ms)."""
        samples = list(self.latency_ns)
        if not samples:
            return None
        return float(np.percentile(np.asarray(samples, np.int64), q)) / 1e6

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        import nats

        lost = self._lost
        lost.clear()

        async def gone() -> None:
            lost.set()
            self._arrived.set()

        async def error(exc: Exception) -> None:
            logger.debug("hub consumer: NATS error: %s", exc)

        try:
            self._nc = await nats.connect(
                self.servers, name=f"coinrates consumer {self.consumer_id}", allow_reconnect=False,
                connect_timeout=max(1, round(self.settings.open_timeout)),
                ping_interval=max(1, round(self.settings.ping_interval or 20)), max_outstanding_pings=2,
                disconnected_cb=gone, closed_cb=gone, error_cb=error, tls=tls_context(self.settings, self.servers),
                pending_size=4 * 1024 * 1024)
        except Exception as exc:  # noqa: BLE001 - translated at this edge
            raise TransportError(f"cannot reach NATS at {redact_url(self.servers)}: {type(exc).__name__}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=5.0)
        self._links += 1
        self.telemetry.connections += 1

    async def _open(self) -> None:
        await self._connect()

    def _translate(self, exc: BaseException) -> BaseException:
        return translate(exc)

    def _failed(self, err: BaseException) -> None:
        self._announce(str(err))

    async def _release(self) -> None:
        await self._close()

    async def _close(self) -> None:
        nc, self._nc, self._js, self._kv = self._nc, None, None, None
        self._sub = None
        consumer, self._consumer = self._consumer, None
        if nc is None:
            return
        if consumer is not None and nc.is_connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.jetstream().delete_consumer(self.layout.stream, consumer), timeout=1.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), timeout=2.0)

    async def _serve(self, link: None = None) -> None:
        """Find the stream, read the hub's health, ask for the scope, make the consumer, read until lost or stopped."""
        from nats.js.errors import NotFoundError

        js = self._jetstream()
        try:
            info = await js.stream_info(self.layout.stream)
        except NotFoundError:
            raise TransportError(f"no hub on {redact_url(self.servers)} yet (stream {self.layout.stream} does not "
                                 "exist): start one with `python -m coinrates_nb hub --pairs ...` or cr.hub(...)") from None
        await self._read_health()
        self._announce()
        await self._want(self.protocol.scope.items)
        async with self._lock:
            await self._make_consumer(info.state.first_seq, info.state.last_seq)
        self.protocol.connected(time.monotonic())
        self.telemetry.set_state("connected")
        logger.info("hub consumer connected to %s (stream %s, %s)", redact_url(self.servers), self.layout.stream,
                    f"resuming after #{self.stream_seq}" if self.stream_seq else "filling the window")
        health = asyncio.create_task(self._health_loop())
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), timeout=TICK)
                self._arrived.clear()
                now = time.monotonic()
                self.telemetry.sample(now, self.protocol.exrates)
                if self._stopping.is_set():
                    return
                if self._lost.is_set():
                    raise TransportError("NATS connection lost")
                if self._inbox:
                    async with self._lock:
                        msgs, self._inbox = self._inbox, []
                        await self._process(msgs)
                elif now - self._last_activity > IDLE_HEARTBEAT * MISSED_HEARTBEATS:
                    logger.info("hub consumer: no delivery or heartbeat for %.0f s; remaking the consumer",
                                now - self._last_activity)
                    async with self._lock:
                        await self._remake()
        finally:
            health.cancel()
            with contextlib.suppress(BaseException):
                await health

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise TransportError("NATS connection lost")
        return self._js

    # ------------------------------------------------------------------ the JetStream consumer (lock held)

    async def _subscribe(self) -> tuple[str, Subscription]:
        """A fresh inbox for the main consumer: its deliveries land in ``_inbox`` (earlier subscriptions' never do)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._gen += 1
        gen = self._gen
        self._inbox = []

        async def deliver(msg: Msg) -> None:
            if gen == self._gen:
                self._inbox.append(msg)
                self._arrived.set()

        return await self._inbox_subscription(deliver)

    async def _inbox_subscription(self, deliver: Callable[[Msg], Any]) -> tuple[str, Subscription]:
        nc = self._nc
        if nc is None:
            raise TransportError("NATS connection lost")
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, cb=deliver, pending_msgs_limit=4 * MAX_ACK_PENDING, pending_bytes_limit=-1)
        return inbox, sub

    def _config(self, inbox: str, subjects: list[str], start_seq: int | None) -> Any:
        from nats.js import api

        config = api.ConsumerConfig(
            deliver_subject=inbox, ack_policy=api.AckPolicy.ALL, max_ack_pending=MAX_ACK_PENDING, ack_wait=60.0,
            idle_heartbeat=IDLE_HEARTBEAT, inactive_threshold=INACTIVE_THRESHOLD, mem_storage=True,
            description=f"coinrates consumer {self.consumer_id}")
        if len(subjects) == 1:
            config.filter_subject = subjects[0]
        else:
            config.filter_subjects = subjects
        if start_seq is None:
            config.deliver_policy = api.DeliverPolicy.BY_START_TIME
            config.opt_start_time = dt.datetime.fromtimestamp((time.time_ns() - self.backfill_ns) / 1e9, dt.UTC)
        else:
            config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = start_seq
        return config

    async def _make_consumer(self, first_seq: int | None = None, last_seq: int | None = None) -> None:
        """(Re)make the main consumer for the current scope: by time at first, from ``stream_seq + 1`` after."""
        js = self._jetstream()
        if first_seq is None or last_seq is None:
            state = (await js.stream_info(self.layout.stream)).state
            first_seq, last_seq = state.first_seq, state.last_seq
        start: int | None = None
        if self.stream_seq:
            if last_seq < self.stream_seq:  # the stream was deleted and made again: start over
                logger.warning("hub consumer: the stream restarted below our sequence; filling the window again")
                self._gap(time.time_ns())
                self.stream_seq = 0
            else:
                if first_seq > self.stream_seq + 1:  # what we missed aged out of the stream meanwhile
                    logger.warning("hub consumer: %d update(s) aged out of the stream while away: a gap",
                                   first_seq - self.stream_seq - 1)
                    self._gap(time.time_ns())
                start = max(first_seq, self.stream_seq + 1)
        await self._delete_consumer()
        items = self.protocol.scope.items
        subjects, client_filter = self.layout.filter_subjects(items)
        inbox, sub = await self._subscribe()
        info = await js.add_consumer(self.layout.stream, self._config(inbox, subjects, start))
        self._sub, self._consumer, self._dseq = sub, info.name, 0
        self._scope = items
        self._match = wire.matcher(items) if client_filter else None
        self._last_activity = time.monotonic()

    async def _delete_consumer(self) -> None:
        consumer, self._consumer = self._consumer, None
        js = self._js
        if consumer is not None and js is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(js.delete_consumer(self.layout.stream, consumer), timeout=2.0)

    async def _remake(self) -> None:
        """Remake the main consumer from ``stream_seq + 1`` (deliveries were missed, or it vanished)."""
        self.remade += 1
        await self._make_consumer()

    async def _rescope(self) -> None:
        """The scope changed: ask the hub for what is new, read the new pairs' window, remake the consumer."""
        items, old = self.protocol.scope.items, self._scope
        if items == old:
            return
        if items is None:
            added: tuple[FilterItem, ...] | None = None
        else:
            covered = wire.matcher(old)
            added = tuple(i for i in items if old is not None and i not in old
                          and not ("/" in i and covered(*i.split("/", 1))))
        await self._want(items)
        if self.stream_seq and (added is None or added):
            await self._backfill(added, old, self.stream_seq)
        await self._remake()

    async def _backfill(self, added: tuple[FilterItem, ...] | None, old: tuple[FilterItem, ...] | None,
                        upto: int) -> None:
        """Deliver the window of pairs that just joined the scope, up to stream sequence ``upto``.

        A one-off consumer of their subjects, by time, read until it passes ``upto`` (where the
        main consumer, remade next, resumes) or has nothing left; rows of pairs the old scope
        already had are skipped (they were delivered live).
        """
        js = self._jetstream()
        await self._delete_consumer()  # the main one: remade from upto + 1 afterwards
        subjects, _ = self.layout.filter_subjects(added, events=False)
        new, had = wire.matcher(added), wire.matcher(old)
        got: list[Msg] = []
        arrived = asyncio.Event()

        async def deliver(msg: Msg) -> None:
            got.append(msg)
            arrived.set()

        inbox, sub = await self._inbox_subscription(deliver)
        name: str | None = None
        taken = 0
        try:
            info = await js.add_consumer(self.layout.stream, self._config(inbox, subjects, None))
            name = info.name
            done = info.num_pending == 0
            while not done:
                try:
                    await asyncio.wait_for(arrived.wait(), timeout=IDLE_HEARTBEAT * MISSED_HEARTBEATS)
                except TimeoutError:
                    logger.warning("hub consumer: the backfill of %s stalled; going on live", added)
                    return
                arrived.clear()
                msgs, got[:] = list(got), []
                frames: list[str] = []
                stamps: list[tuple[int, int]] = []
                last_reply = None
                for msg in msgs:
                    ack = wire.parse_ack(msg.reply) if msg.reply else None
                    if ack is None:
                        continue
                    last_reply = msg.reply
                    if ack.stream_seq > upto:
                        done = True
                        break
                    pair = self.layout.pair_of(msg.subject)
                    if pair is not None and new(*pair) and not had(*pair):
                        self._take(msg, frames, stamps, ack.timestamp_ns)
                    if ack.pending == 0:
                        done = True
                        break
                taken += len(frames)
                self._deliver(frames, stamps, time.time_ns())
                if last_reply is not None and self._nc is not None:
                    await self._nc.publish(last_reply, b"")
                if self._stopping.is_set() or self._lost.is_set():
                    return
        finally:
            self.backfilled += taken
            logger.info("hub consumer: filled %d update(s) of %s from the stream", taken,
                        "everything" if added is None else ", ".join(added))
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            if name is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(js.delete_consumer(self.layout.stream, name), timeout=2.0)

    # ------------------------------------------------------------------ the data path

    async def _process(self, msgs: list[Msg]) -> None:
        """Take deliveries in order: check sequences, act on gap markers, batch payloads into the protocol, ack."""
        self._last_activity = time.monotonic()
        received = time.time_ns()
        frames: list[str] = []
        stamps: list[tuple[int, int]] = []
        layout, match = self.layout, self._match
        events = layout.events + "."
        last_reply: str | None = None
        missed = False
        for msg in msgs:
            reply = msg.reply
            ack = wire.parse_ack(reply) if reply else None
            if ack is None:
                missed = await self._control(msg)
                if missed:
                    break
                continue
            if ack.consumer_seq != self._dseq + 1:
                if ack.consumer_seq <= self._dseq:
                    continue  # a redelivery of something taken
                missed = True
                break
            self._dseq = ack.consumer_seq
            last_reply = reply
            if ack.stream_seq <= self.stream_seq:
                continue
            self.stream_seq, self.backlog = ack.stream_seq, ack.pending
            subject = msg.subject
            if subject.startswith(events):
                self._deliver(frames, stamps, received)
                frames, stamps = [], []
                self._event(subject, msg.data)
                continue
            if match is not None:
                pair = layout.pair_of(subject)
                if pair is None or not match(*pair):
                    continue
            headers = msg.headers
            if headers is not None and HEADER_ORIGIN in headers:
                self._deliver(frames, stamps, received)
                frames, stamps = [], []
                self._deliver_origin(msg, headers[HEADER_ORIGIN], received)
                continue
            self._take(msg, frames, stamps, ack.timestamp_ns)
        self._deliver(frames, stamps, received)
        if last_reply is not None and self._nc is not None:
            await self._nc.publish(last_reply, b"")  # AckPolicy.ALL: everything up to here is stored
        if missed:
            logger.info("hub consumer: deliveries were missed after #%d; resuming from there", self.stream_seq)
            await self._remake()

    async def _control(self, msg: Msg) -> bool:
        """A status message on the consumer's inbox (heartbeat, flow control); True if deliveries were missed."""
        headers = msg.headers or {}
        if headers.get("Status") != "100":
            return False
        last = headers.get("Nats-Last-Consumer")
        if last is not None and last.isdigit() and int(last) > self._dseq:
            return True
        if msg.reply and self._nc is not None:  # a flow-control request wants an empty answer
            await self._nc.publish(msg.reply, b"")
        return False

    def _take(self, msg: Msg, frames: list[str], stamps: list[tuple[int, int]], stream_ns: int) -> None:
        """Queue one update's payload (the CoinAPI wire JSON), the hub's receive time and JetStream's store time."""
        try:
            frames.append(msg.data.decode())
        except UnicodeDecodeError:
            self.telemetry.reject("invalid_utf8", "a hub message is not valid UTF-8")
            return
        headers = msg.headers
        raw = headers.get(HEADER_HUB_RECEIVED) if headers is not None else None
        stamps.append((int(raw) if raw is not None and raw.isdigit() else 0, stream_ns))

    def _deliver(self, frames: list[str], stamps: list[tuple[int, int]], received: int) -> None:
        """Hand payloads to the protocol (parse, time checks, dedupe, counters) and store the fresh rows."""
        if not frames:
            return
        parsed = self.protocol.receive(frames, time.monotonic(), received, self._links)
        for event in parsed.events:
            if isinstance(event.outcome, MessageError):
                self.telemetry.reject(event.outcome.kind, str(event.outcome))
        rates = parsed.rates
        if len(rates):
            self.telemetry.lag_ns = received - int(rates.time_ns[-1])
            self.sink(rates, received)
            self._delivered = True
        stored = time.time_ns()
        for hub_ns, stream_ns in stamps:
            if hub_ns:
                self.latency_ns.append(stored - hub_ns)
                self.hub_leg_ns.append(stream_ns - hub_ns)

    def _deliver_origin(self, msg: Msg, origin: str, received: int) -> None:
        """An update the hub marked as not live (REST history, a healed gap): parsed, stored with its origin.

        It is older than what the live stream already delivered, so the protocol's time-order
        dedupe would drop it; sequences already guarantee it is taken once.
        """
        try:
            parsed = parse_server_batch([msg.data.decode()])
        except UnicodeDecodeError:
            self.telemetry.reject("invalid_utf8", "a hub message is not valid UTF-8")
            return
        rates = parsed.rates
        if len(rates):
            code = _ORIGIN_CODES.get(origin, 0)
            with contextlib.suppress(TypeError):  # a RateBatch without origins (before the history issue)
                rates = RateBatch(rates.keys, rates.code, rates.time_ns, rates.rate, code)  # type: ignore[call-arg, unused-ignore]
            self.sink(rates, received)

    def _event(self, subject: str, data: bytes) -> None:
        """A hub marker in the stream: an upstream gap (marks gaps here), or an upstream (re)connect (labels the data)."""
        if subject == self.layout.upstream:
            with contextlib.suppress(MessageError, AttributeError):
                if wire.decode(data).get("source") == "simulated":
                    self.telemetry.server_simulated = True
                    self._announce()
            return
        if subject != self.layout.gap:
            return
        try:
            event = wire.decode(data)
            at = int(event.get("at_ns") or time.time_ns())
            reason = str(event.get("reason", "disconnect"))
        except (MessageError, AttributeError, TypeError, ValueError):
            at, reason = time.time_ns(), "unknown"
        logger.info("hub consumer: the hub reported an upstream gap (%s)", reason)
        self._gap(at)

    def _gap(self, at_ns: int) -> None:
        if self.on_disconnect is not None:
            self.on_disconnect(at_ns)

    # ------------------------------------------------------------------ the hub: health and demand

    async def _health_loop(self) -> None:
        """Read the hub's health every second; repeat what this consumer wants every ``interest_s``."""
        last_want = time.monotonic()
        while True:
            await asyncio.sleep(HEALTH_POLL)
            try:
                await self._read_health()
                self._announce()
                every = float((self.upstream or {}).get("interest_s") or 5.0)
                if not self._heard or time.monotonic() - last_want >= every:  # unanswered: ask again soon
                    last_want = time.monotonic()
                    await self._want(self.protocol.scope.items)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a health read must never end the stream
                logger.debug("hub consumer: health read failed: %s", exc)

    async def _read_health(self) -> None:
        from nats.js.errors import NotFoundError

        js = self._js
        if js is None:
            return
        try:
            if self._kv is None:
                self._kv = await js.key_value(self.layout.bucket)
            entry = await self._kv.get("health")
            health: HealthWire = wire.decode(entry.value or b"{}")
        except (NotFoundError, MessageError):
            health = {"state": "no hub", "last_error": "no hub is publishing (no health record)"}
        if health.get("state") not in ("stopped", "fenced", "no hub"):
            if time.time_ns() - int(health.get("updated_ns") or 0) > HEALTH_STALE_NS:
                health = {**health, "state": "no hub", "last_error": "the hub stopped writing its health"}
        self.upstream = health
        if health.get("source") == "simulated":
            self.telemetry.server_simulated = True
        state = str(health.get("state"))
        fine = state in ("connected", "connecting", "starting", "idle")
        bad = None if fine else f"upstream (hub <-> CoinAPI) {state}: {health.get('last_error') or ''}"
        if bad != self._upstream_bad:
            self._upstream_bad = bad
            if bad is not None:
                self.telemetry.last_error = bad.rstrip(": ")
                logger.info("hub consumer: %s", self.telemetry.last_error)

    async def _want(self, items: tuple[FilterItem, ...] | None) -> None:
        """Tell the hub what this consumer wants; it adds what it does not carry (once, however many ask)."""
        from nats.errors import NoRespondersError
        from nats.errors import TimeoutError as NatsTimeout

        nc = self._nc
        if nc is None or not nc.is_connected or items == ():
            return
        request: wire.WantRequest = {"consumer": self.consumer_id, "items": None if items is None else list(items)}
        self._heard = False
        try:
            msg = await nc.request(self.layout.want, wire.encode(request), timeout=WANT_TIMEOUT)
        except NoRespondersError:
            logger.debug("hub consumer: no hub answers %s", self.layout.want)
            return
        except (TimeoutError, NatsTimeout):
            logger.info("hub consumer: the hub did not answer a request for %s in time", items)
            return
        try:
            reply: wire.WantReply = wire.decode(msg.data)
        except MessageError:
            return
        self._heard = True
        if not reply.get("ok", False):
            self.telemetry.last_error = f"the hub refused {items}: {reply.get('error')}"
            logger.warning("hub consumer: %s", self.telemetry.last_error)
        elif reply.get("added"):
            logger.info("hub consumer: the hub now carries %s", ", ".join(reply.get("added") or ()))


def links(collector: Any) -> dict[str, Any]:
    """Both links of a hub consumer (``cr.stream(url="nats://...")``): this consumer <-> NATS, hub <-> CoinAPI.

    Empty for a collector that does not read from a hub.
    """
    session = getattr(collector, "_session", None)
    return session.links() if isinstance(session, NatsSession) else {}


def _window_of(sink: Any) -> int | None:
    """The time window of the collector that owns ``sink`` (its ``_on_rates``), to fill that much at start."""
    frame = getattr(getattr(sink, "__self__", None), "frame", None)
    value = frame.window_ns if isinstance(frame, RollingFrame) else None
    return value if value is not None and value > 0 else None
