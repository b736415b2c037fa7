"""The hub: ONE upstream connection (CoinAPI or the simulator), every update published to NATS JetStream.

A team that opens fifteen notebooks pays CoinAPI for every rate fifteen times and meets its
per-IP connection limits; with a hub it pays once. The hub is an ordinary
:class:`~coinrates_nb.collector.Collector` (so reconnects, dedupe, time checks and the simulator
fallback are the same code) whose listener publishes each stored update, as CoinAPI's own wire
JSON, to a subject per pair of a JetStream stream bounded by ``retention`` and bytes
(:mod:`.wire` has the layout). Consumers are collectors too (``cr.stream(url="nats://...")``,
:mod:`.consumer`).

What the hub guarantees, and how:

* **Order and no duplicates.** Updates are published in the order the collector stored them,
  one window at a time: the next window goes out only once JetStream acknowledged the last, and
  whatever was not acknowledged (a NATS restart, a timeout) is sent again, first. Every update
  carries ``Nats-Msg-Id`` = pair and wire time, so JetStream stores a re-sent update once, and a
  restarted hub cannot store twice what its predecessor stored (within the duplicate window).
* **Gaps in place.** When the upstream link drops (and when the hub stops), a gap marker is
  published in the stream between the last update before and the first after; consumers mark
  their gaps there, exactly where the hub's are.
* **One publisher.** A lease in the KV bucket (``leader``) is created atomically and renewed
  every ``lease / 5``; a second hub against the same NATS and prefix refuses to start while the
  lease is renewed, and takes over only once a crashed holder's lease expired. A hub that finds
  its lease taken (it was cut off longer than ``lease``) stops publishing and says so
  (``status.state == "fenced"``); a window is only sent while the lease is fresh.
* **Demand.** Consumers ask for pairs the hub does not carry (request/reply on ``<prefix>.hub.want``)
  and repeat what they want every ``interest_s``; the hub subscribes upstream once, however
  many ask, and unsubscribes a pair nobody asked for during ``drop_after``. The pairs it was
  started with are always carried.
* **Health.** The upstream link (state, reconnects, lag, last error, rates billed) is written to
  the KV key ``health`` twice a second, for consumers' status.

With no ``nats_url`` the hub starts an embedded ``nats-server`` (:mod:`._server`) on 127.0.0.1 with
file-backed JetStream, and stops it in :meth:`Hub.stop`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

import pandas as pd

from .._inputs import filter_items, span_ns
from .._loop import close_loop
from .._secrets import redact_url
from .._threads import BackgroundThread
from .._types import FilterItem
from ..batch import RateBatch
from ..collector import Collector
from ..config import Settings
from ..exceptions import ConfigError, MessageError, TransportError
from . import wire
from ._lease import Lease
from ._nats import check_url, tls_context, translate
from ._publish import ACK_TIMEOUT, Gap, Item, Publisher, Upstream, ensure_stream, updates
from ._server import NatsServer
from ._status import HubStatus
from .wire import Layout

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["Hub", "HubStatus", "hub"]

logger = logging.getLogger("coinrates_nb.hub")

HEALTH_EVERY: Final = 0.5
"""Seconds between two writes of the ``health`` key."""

START_TIMEOUT: Final = 30.0
DRAIN_TIMEOUT: Final = 5.0
"""Seconds :meth:`Hub.stop` waits for the queued updates to be published."""

class _UpstreamCollector(Collector):
    """The hub's collector: tells the hub when the upstream link dropped, so a gap marker goes out in place."""

    def __init__(self, hub: Hub, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._hub_ref = weakref.ref(hub)

    def _on_disconnect(self, now_ns: int) -> None:
        super()._on_disconnect(now_ns)
        hub = self._hub_ref()
        if hub is not None:
            hub._upstream_lost(now_ns)


class Hub(BackgroundThread):
    """One upstream connection shared by any number of consumers through NATS JetStream.

    Use :func:`hub` to make one. ``start()``/``stop()`` are idempotent; it is a context manager.

    Args:
        pairs: pairs or asset ids always carried (``None``: the whole stream).
        url, api_key: the upstream, as for :func:`~coinrates_nb.collector.stream` (no key: the
            embedded simulator, and everything downstream is labelled simulated).
        nats_url: a NATS server or cluster (``nats://host:4222``, several comma-separated);
            ``None`` starts an embedded ``nats-server`` on 127.0.0.1.
        retention: how long JetStream keeps updates (``"24h"``); ``max_bytes`` bounds it too.
        drop_after: a pair added for consumers is dropped upstream after this long unwanted.
        prefix: subject/stream prefix (one hub per prefix on a NATS system).
        replicas: JetStream replicas of the stream and bucket (1 on one server; 3 on a cluster).
        lease: how long a crashed hub's lease blocks a new hub (see the module docstring).
        store_dir: the embedded server's data folder (default: a temporary one).
        options: collector settings (``stale_after=``, ``update_limit_ms=``, ...), as for ``stream``.
    """

    EXIT_ORDER = 0  # before its own upstream collector
    EXIT_TIMEOUT = 5.0

    def __init__(
        self,
        pairs: str | Iterable[str] | None = ("BTC/USD", "ETH/USD", "BTC/EUR"),
        *,
        url: str | None = None,
        api_key: str | None = None,
        nats_url: str | None = None,
        retention: str | float | pd.Timedelta = "24h",
        max_bytes: int = 1 << 30,
        drop_after: str | float | pd.Timedelta = "10min",
        prefix: str = wire.DEFAULT_PREFIX,
        replicas: int = 1,
        lease: str | float | pd.Timedelta = "5s",
        store_dir: str | os.PathLike[str] | None = None,
        simulated: bool | None = None,
        seed: int | None = None,
        rate_hz: float = 5.0,
        window: str | float | pd.Timedelta = "5min",
        **options: Any,
    ) -> None:
        self._nc: NatsClient | None = None
        self._items: tuple[FilterItem, ...] | None = None if pairs is None else filter_items(pairs, "pairs")
        if self._items == ():
            raise ConfigError("no pairs given: pass pairs like ['BTC/USD'], asset ids like 'BTC', or None for everything")
        self.layout = Layout(prefix)
        self.settings = Settings.resolve(url, api_key, simulated=simulated, simulator_seed=seed,
                                         simulator_rate_hz=rate_hz, **options)
        if self.settings.url is not None and self.settings.url.split("://", 1)[0].lower() in ("nats", "tls"):
            raise ConfigError("the hub's url= is its upstream (CoinAPI wss:// or a simulator ws://); "
                              "pass the NATS server as nats_url=")
        self.retention_s = _seconds(retention, "retention")
        self.drop_after_s = _seconds(drop_after, "drop_after")
        self.lease_s = _seconds(lease, "lease")
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1 << 20:
            raise ConfigError(f"max_bytes must be an int of at least 1 MiB, not {max_bytes!r}")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= 5:
            raise ConfigError(f"replicas must be 1 to 5, not {replicas!r}")
        self.max_bytes = max_bytes
        self.replicas = replicas
        self._window = window
        self._nats_arg = None if nats_url is None else check_url(nats_url)
        self._store_dir = store_dir
        self.hub_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: NatsServer | None = None
        self._collector: _UpstreamCollector | None = None
        self._nats_url: str | None = self._nats_arg
        self._state = "idle"
        self._reset_counters()
        self._stop_at_exit()

    _js: JetStreamContext
    _kv: KeyValue
    _lease: Lease | None = None
    _stopping: asyncio.Event
    _health_due: asyncio.Event

    def _reset_counters(self) -> None:
        self.nats_reconnects = 0
        self.last_error: str | None = None
        self._requested: dict[FilterItem, float] = {}
        self._consumers: dict[str, float] = {}
        self._since_ns = time.time_ns()
        self._announced = 0
        self._publisher = Publisher(self.layout, self.hub_id, self._since_ns, js=lambda: self._js,
                                    ready=lambda: self._client().is_connected and self._lease_fresh(),
                                    fenced=lambda: self._state == "fenced", epoch=lambda: self.nats_reconnects,
                                    note_error=self._note_error)

    @property
    def published(self) -> int:
        """Updates JetStream stored (acknowledged, not duplicates) since the last start."""
        return self._publisher.published

    @property
    def duplicates(self) -> int:
        """Messages JetStream had already stored (a re-sent window, a hub restart)."""
        return self._publisher.duplicates

    @property
    def gaps_published(self) -> int:
        return self._publisher.gaps_published

    @property
    def dropped(self) -> int:
        """Updates dropped from a queue over ``MAX_BACKLOG`` while NATS was unreachable."""
        return self._publisher.dropped

    @property
    def publish_errors(self) -> int:
        """Windows not fully acknowledged (re-sent)."""
        return self._publisher.publish_errors

    # ------------------------------------------------------------------ lifecycle (any thread)

    def start(self) -> Hub:
        """Start NATS (if embedded), take the lease, then the upstream collector; idempotent.

        Raises:
            CollectorError: another hub is publishing to this NATS (the message names it).
            TransportError: NATS cannot be reached or the embedded server did not start.
        """
        with self._lock:
            if self.running:
                return self
            self._reset_counters()
            self._state = "starting"
            try:
                if self._nats_arg is None:
                    if self._server is None:
                        self._server = NatsServer(store_dir=self._store_dir)
                    self._server.start()
                    self._nats_url = self._server.url
                ready: concurrent.futures.Future[None] = concurrent.futures.Future()
                self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="coinrates-hub",
                                                daemon=True)
                self._thread.start()
                ready.result(START_TIMEOUT)
                collector = _UpstreamCollector(self, self._items, self.settings, window=self._window, max_rows=50_000)
                collector.add_listener(self._on_batch)
                self._collector = collector
                collector.start()
            except BaseException as exc:
                self._state = "error"
                self.last_error = str(exc)
                self._stop_locked()
                self._state = "error"
                if isinstance(exc, concurrent.futures.TimeoutError):
                    raise TransportError(f"the hub did not start within {START_TIMEOUT:.0f} s "
                                         f"(NATS at {self._nats_url})") from None
                raise
            self._state = "running"
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._wake_maintenance)
        logger.info("hub %s started: %s upstream, publishing to %s (stream %s)", self.hub_id, self.settings.source,
                    self._nats_url, self.layout.stream)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop upstream, publish what is queued and a gap marker, release the lease, stop NATS if embedded; idempotent."""
        with self._lock:
            collector = self._collector
            if self._thread is None and self._server is None and (collector is None or not collector.running):
                return
            self._stop_locked(timeout)
            if self._state != "error":
                self._state = "stopped"
        logger.info("hub %s stopped (%d published, %d duplicates)", self.hub_id, self.published, self.duplicates)

    def _stop_locked(self, timeout: float = 15.0) -> None:
        collector = self._collector  # kept: its status is the hub's last word on the upstream
        if collector is not None:
            collector.stop()  # no batch arrives after this: the queue is complete
        thread, loop = self._thread, self._loop
        if thread is not None and loop is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._begin_stop)
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("hub thread did not stop within %.0f s", timeout)
        self._thread = None
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def restart(self) -> Hub:
        """Stop, then start again (a new upstream connection; JetStream keeps what was published)."""
        self.stop()
        return self.start()

    @property
    def nats_url(self) -> str | None:
        """Where consumers connect: ``cr.stream(pairs, url=hub.nats_url)``."""
        url = self._nats_url
        if url is not None and self.layout.prefix != wire.DEFAULT_PREFIX:
            return f"{url.split(',', 1)[0]}/{self.layout.prefix}"
        return url

    @property
    def collector(self) -> Collector | None:
        """The upstream collector (its ``df``, ``status``, ``gaps`` are the hub's own view)."""
        return self._collector

    @property
    def server(self) -> NatsServer | None:
        """The embedded ``nats-server``, when this hub started one."""
        return self._server

    @property
    def simulator(self) -> Any:
        """The embedded simulator of the upstream collector, if it started one."""
        collector = self._collector
        return None if collector is None else collector.simulator

    @property
    def status(self) -> HubStatus:
        """A typed snapshot (safe from any thread)."""
        collector = self._collector
        upstream = collector.status if collector is not None else None
        now = time.monotonic()
        nc = self._nc
        return HubStatus(
            state=self._state,
            hub_id=self.hub_id,
            nats_url=None if self._nats_url is None else redact_url(self._nats_url),
            embedded_nats=self._nats_arg is None,
            upstream=upstream,
            scope=None if collector is None else collector.pairs,
            requested={item: now - at for item, at in list(self._requested.items())},
            consumers=sum(1 for at in list(self._consumers.values()) if now - at <= 2 * self.interest_s + 1),
            published=self.published,
            duplicates=self.duplicates,
            gaps_published=self.gaps_published,
            backlog=self._publisher.backlog,
            dropped=self.dropped,
            nats_connected=bool(nc is not None and nc.is_connected),
            nats_reconnects=self.nats_reconnects,
            last_error=self.last_error,
            stream_seq=self._publisher.stream_seq,
        )

    @property
    def interest_s(self) -> float:
        """How often consumers repeat what they want: a quarter of ``drop_after`` (0.25 s to 60 s)."""
        return min(60.0, max(0.25, self.drop_after_s / 4))

    def __repr__(self) -> str:
        s = self.status
        return (f"<Hub {s.state} | {'SIMULATED' if s.simulated else s.source} | "
                f"{'all' if s.scope is None else len(s.scope)} pairs | {s.rates_billed:,} rates billed | "
                f"{s.published:,} published | {s.consumers} consumers | {s.nats_url}>")

    # ------------------------------------------------------------------ collector thread -> hub loop

    def _on_batch(self, rates: RateBatch, received_ns: int) -> None:
        """Listener (collector thread): turn stored updates into messages and queue them on the hub loop."""
        loop = self._loop
        if loop is None:
            return
        out: list[Item] = []
        collector = self._collector
        telemetry = collector.telemetry if collector is not None else None
        if telemetry is not None and telemetry.connections != self._announced:
            self._announced = telemetry.connections
            source = "simulated" if self.settings.simulated or telemetry.server_simulated else "live"
            out.append(Upstream(source, telemetry.connections, received_ns))
        out += updates(self.layout, rates, received_ns)
        with contextlib.suppress(RuntimeError):  # the loop closed: the hub is stopping
            loop.call_soon_threadsafe(self._push, out)

    def _upstream_lost(self, now_ns: int) -> None:
        """The upstream connection ended (collector thread): a gap marker goes out after what came before."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                gap: list[Item] = [Gap("disconnect", now_ns)]
                loop.call_soon_threadsafe(self._push, gap)

    def _push(self, items: list[Item]) -> None:
        """Queue messages (hub loop); a queue over ``MAX_BACKLOG`` drops the oldest (a gap marker in their place)."""
        if self._publisher.push(items):
            self.last_error = (f"NATS unreachable: dropped {self._publisher.dropped:,} queued update(s) "
                               "(reported as a gap)")

    # ------------------------------------------------------------------ the hub loop

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            self._stopping = asyncio.Event()
            self._health_due = asyncio.Event()
            self._loop = loop
            loop.run_until_complete(self._main(ready))
        except BaseException as exc:  # noqa: BLE001 - top of the thread: never die silently
            if not ready.done():
                ready.set_exception(exc)
            else:
                logger.error("hub thread failed: %s", exc, exc_info=True)
                self.last_error = f"internal error: {type(exc).__name__}: {exc}"
                self._state = "error"
        finally:
            self._loop = None
            close_loop(loop)

    def _wake_maintenance(self) -> None:
        """Write the health now (hub loop): the hub just started, consumers should not wait for the next tick."""
        self._health_due.set()

    def _begin_stop(self) -> None:
        self._stopping.set()
        self._health_due.set()

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            await self._connect()
            self._kv = await ensure_stream(self._js, self.layout, retention_s=self.retention_s,
                                           max_bytes=self.max_bytes, replicas=self.replicas, lease_s=self.lease_s)
            self._lease = Lease(self._kv, self.hub_id, self._since_ns, self.lease_s)
            await self._lease.acquire(f"{redact_url(self._nats_url or '')} (stream {self.layout.stream})")
            await self._client().subscribe(self.layout.want, cb=self._on_want)
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.close()
            ready.set_exception(translate(exc))
            return
        ready.set_result(None)
        tasks = [asyncio.create_task(self._guard(self._publisher.run, "publisher")),
                 asyncio.create_task(self._guard(self._maintain, "maintenance"))]
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(tasks)

    async def _guard(self, make: Callable[[], Awaitable[None]], name: str) -> None:
        """Run a hub task; anything it raises is logged and shown, and the task starts again (never silently dead)."""
        while True:
            try:
                await make()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - top of a task
                logger.error("hub %s task failed: %s", name, exc, exc_info=True)
                self.last_error = f"internal error in {name}: {type(exc).__name__}: {exc}"
                await asyncio.sleep(0.5)

    async def _connect(self) -> None:
        import nats

        url = self._nats_url
        assert url is not None
        servers = [u.strip() for u in url.split(",")]

        async def disconnected() -> None:
            if not self._stopping.is_set():
                logger.warning("hub: NATS connection lost; publishing resumes on reconnect (updates are queued)")

        async def reconnected() -> None:
            self.nats_reconnects += 1
            logger.info("hub: NATS reconnected")

        async def error(exc: Exception) -> None:
            logger.debug("hub: NATS error: %s", exc)

        timeout = self.settings.open_timeout
        try:  # nats-py retries a first connect forever when reconnecting is allowed: bound it here
            self._nc = await asyncio.wait_for(nats.connect(
                servers, name=f"coinrates hub {self.hub_id}", allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.25, connect_timeout=max(1, round(timeout)),
                ping_interval=max(1, round(self.settings.ping_interval or 20)), max_outstanding_pings=3,
                disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error,
                tls=tls_context(self.settings, url), pending_size=64 * 1024 * 1024), timeout)
        except TimeoutError:
            raise TransportError(f"cannot reach NATS at {redact_url(url)} within {timeout:g} s") from None
        except Exception as exc:  # noqa: BLE001 - translated at this edge
            raise TransportError(f"cannot reach NATS at {redact_url(url)}: {type(exc).__name__}: {exc}") from exc
        self._js = self._client().jetstream(timeout=ACK_TIMEOUT)  # WINDOW stays below publish_async's 4,000 slots

    # ------------------------------------------------------------------ the lease (one publisher)

    def _lease_fresh(self) -> bool:
        """True while the last renewal is recent enough that no other hub can have taken over."""
        return self._state != "fenced" and self._lease is not None and self._lease.fresh()

    async def _renew(self) -> None:
        """Renew the lease; if another hub holds it now, fence this one."""
        assert self._lease is not None
        holder = await self._lease.renew()
        if holder is not None:
            await self._fence(holder)

    async def _fence(self, holder: str) -> None:
        """Another hub holds the lease: stop publishing and stop paying for the upstream."""
        self._state = "fenced"
        self.last_error = (f"another hub ({holder}) took over publishing while this one was cut off from NATS; "
                           "this hub stopped publishing")
        logger.error("hub %s: %s", self.hub_id, self.last_error)
        collector = self._collector
        if collector is not None:
            await asyncio.get_running_loop().run_in_executor(None, collector.stop)

    def _note_error(self, text: str) -> None:
        if text != self.last_error:
            logger.warning("hub: %s", text)
        self.last_error = text

    # ------------------------------------------------------------------ demand and health

    async def _on_want(self, msg: Msg) -> None:
        """A consumer asks for filter items: carry the new ones (one upstream subscribe), remember who wants what."""
        reply: wire.WantReply
        try:
            request = wire.decode(msg.data)
            if not isinstance(request, dict):
                raise MessageError("a want request is a JSON object", payload=msg.data, kind="hub_message")
            consumer = str(request.get("consumer", "?"))[:120]
            raw = request.get("items")
            now = time.monotonic()
            self._consumers[consumer] = now
            collector = self._collector
            carried = None if collector is None else collector.pairs
            if raw is None:
                if carried is not None:
                    raise ConfigError("this hub carries a list of pairs, not the whole stream: ask for pairs")
                items: tuple[str, ...] = ()
            else:
                items = filter_items(raw, "items")
            for item in items:
                self._requested[item] = now
            added: list[str] = []
            if carried is not None and collector is not None and self._state == "running":
                have = set(carried)
                added = [item for item in items if item not in have]
                if added:
                    await asyncio.get_running_loop().run_in_executor(None, collector.subscribe, added)
                    logger.info("hub: now carrying %s (asked by consumer %s)", ", ".join(added), consumer)
                carried = collector.pairs
            reply = {"ok": True, "carried": None if carried is None else list(carried), "added": added}
        except Exception as exc:  # noqa: BLE001 - answer the consumer with the reason, never die
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(wire.encode(reply))

    async def _maintain(self) -> None:
        """Renew the lease, write the health key, drop pairs nobody wanted for ``drop_after``."""
        every = self.lease_s / 5
        last_renew = last_health = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            connected = self._client().is_connected
            if self._state == "running" and connected and now - last_renew >= every:
                last_renew = now
                await self._renew_safely()
            if connected and (now - last_health >= HEALTH_EVERY or self._health_due.is_set()):
                self._health_due.clear()
                last_health = now
                await self._put_health()
            await self._drop_unwanted(now)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._health_due.wait(), timeout=min(HEALTH_EVERY, every) / 2)

    async def _renew_safely(self) -> None:
        try:
            await self._renew()
        except Exception as exc:  # noqa: BLE001 - NATS flapping: the next renewal tries again
            logger.debug("hub: lease renewal failed: %s", exc)

    def health(self) -> wire.HealthWire:
        """What consumers read from the ``health`` key: the upstream link and the hub's publishing."""
        s = self.status
        up = s.upstream
        state = s.state if s.state != "running" or up is None else up.state
        return {
            "hub": self.hub_id, "host": socket.gethostname(), "pid": os.getpid(), "state": state,
            "source": s.source, "url": None if up is None else up.url,
            "scope": None if s.scope is None else list(s.scope),
            "connections": 0 if up is None else up.connections, "reconnects": 0 if up is None else up.reconnects,
            "lag_ms": None if up is None else up.lag_ms,
            "last_error": (up.last_error if up is not None and up.last_error else None) or s.last_error,
            "rates_billed": s.rates_billed, "published": s.published, "backlog": s.backlog,
            "interest_s": self.interest_s, "updated_ns": time.time_ns(), "since_ns": self._since_ns,
        }

    async def _put_health(self, health: wire.HealthWire | None = None) -> None:
        try:
            await self._kv.put("health", wire.encode(health or self.health()))
        except Exception as exc:  # noqa: BLE001 - NATS flapping: written again in HEALTH_EVERY
            logger.debug("hub: health not written: %s", exc)

    async def _drop_unwanted(self, now: float) -> None:
        collector = self._collector
        if collector is None or self._state != "running":
            return
        base = set(self._items or ())
        stale = [item for item, at in list(self._requested.items()) if now - at > self.drop_after_s]
        for item in stale:
            del self._requested[item]
        drop = [item for item in stale if item not in base and item in set(collector.pairs or ())]
        if drop:
            logger.info("hub: dropping %s upstream (no consumer wanted it for %.0f s)", ", ".join(drop),
                        self.drop_after_s)
            await asyncio.get_running_loop().run_in_executor(None, collector.unsubscribe, drop)

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Publish what is queued and a ``hub stopped`` marker, write the last health, release the lease."""
        if self._state != "fenced":
            self._push([Gap("hub stopped", time.time_ns())])
        self._publisher.finish()  # after the last marker: it returns once the queue is published
        publisher = tasks[0]
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(publisher), timeout=DRAIN_TIMEOUT)
        if self._publisher.queue:
            logger.warning("hub: %d update(s) were still queued at stop (NATS unreachable?)",
                           len(self._publisher.queue))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            final = self.health()
            final["state"] = "stopped" if self._state != "fenced" else "fenced"
            await self._put_health(final)
        if self._state != "fenced" and self._lease is not None:
            with contextlib.suppress(Exception):
                await self._lease.release()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client().close(), timeout=5.0)

    def _client(self) -> NatsClient:
        """The NATS connection (made in ``_connect``, before anything uses it)."""
        assert self._nc is not None, "the hub's NATS connection is made first"
        return self._nc


def _seconds(value: Any, name: str) -> float:
    ns = span_ns(value, name, allow_none=False)
    assert ns is not None
    return ns / 1e9


def hub(
    pairs: str | Iterable[str] | None = ("BTC/USD", "ETH/USD", "BTC/EUR"),
    *,
    url: str | None = None,
    api_key: str | None = None,
    nats_url: str | None = None,
    retention: str | float | pd.Timedelta = "24h",
    start: bool = True,
    **options: Any,
) -> Hub:
    """Start a hub: one upstream connection for ``pairs``, published to NATS JetStream; returns it at once.

    Consumers connect with ``cr.stream(pairs, url=hub.nats_url)``. With no ``nats_url`` an
    embedded ``nats-server`` is started on 127.0.0.1; with no key the upstream is the embedded
    simulator (and every consumer is labelled simulated). ``options`` are :class:`Hub`'s.

    Raises:
        ConfigError: a pair, duration or setting is invalid.
        CollectorError: another hub already publishes to that NATS under the same prefix.
        TransportError: NATS cannot be reached.
    """
    made = Hub(pairs, url=url, api_key=api_key, nats_url=nats_url, retention=retention, **options)
    from .._cells import close_on_rerun

    close_on_rerun(made, Hub.stop)
    return made.start() if start else made

