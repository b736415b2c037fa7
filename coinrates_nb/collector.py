"""The collector: a daemon thread that owns one event loop, one session and one rolling frame.

Notebook cells never block on the network: the loop lives on its own thread, and other threads
reach it only through ``run_coroutine_threadsafe``/``call_soon_threadsafe`` (STYLE §4). Because
the loop is ours, the library never needs ``nest_asyncio`` and is unaffected when a notebook
applied it.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._loop import close_loop
from ._types import Pair, State
from .config import Settings, redact_url
from .exceptions import CollectorError
from .frame import RollingFrame
from .messages import ExchangeRate, RateBatch
from .protocol import ClientProtocol
from .status import Status, Telemetry

if TYPE_CHECKING:
    from .sim import Simulator
    from .store import Recorder

__all__ = ["Collector", "stream"]

logger = logging.getLogger("coinrates_nb.collector")

RateListener = Callable[[ExchangeRate, int], None]
"""Called on the collector thread for every stored update, with its receive time (ns)."""

BatchListener = Callable[[RateBatch, int], None]
"""Called on the collector thread for each batch of stored updates, with their receive time (ns)."""

_REGISTRY: weakref.WeakValueDictionary[Hashable, Collector] = weakref.WeakValueDictionary()
_ALL: weakref.WeakSet[Collector] = weakref.WeakSet()


class Collector:
    """Streams exchange rates into a :class:`~coinrates_nb.frame.RollingFrame` from a background thread.

    Use :func:`stream` to create one. Reads (``df``, ``latest()``, ``status``) are safe from any
    thread; ``start()``/``stop()`` are idempotent; it is also a context manager.

    Args:
        pairs: pairs (``"BTC/USD"``) or asset ids to subscribe to; ``None`` for the whole stream.
        settings: endpoint and timeouts, see :meth:`Settings.resolve`.
        window: time span kept, e.g. ``"15min"``; ``max_rows`` bounds the row count too.
    """

    def __init__(
        self,
        pairs: str | Iterable[str] | None,
        settings: Settings,
        *,
        window: str | pd.Timedelta | None = None,
        max_rows: int | None = 100_000,
    ) -> None:
        self.settings = settings
        self.protocol = ClientProtocol(
            None if pairs is None else ([pairs] if isinstance(pairs, str) else list(pairs)),
            heartbeat=settings.heartbeat,
            update_limit_ms=settings.update_limit_ms,
            stale_after=settings.stale_after,
        )
        self.frame = RollingFrame(max_rows=max_rows, window=window)
        self.telemetry = Telemetry()
        self._listeners: list[RateListener] = []
        self._batch_listeners: list[BatchListener] = []
        self._gaps: list[dict[str, Any]] = []
        self._open_gaps: dict[str, int] = {}
        self._last_seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Any = None
        self._simulator: Simulator | None = None
        self._ready = threading.Event()
        self._active_settings = settings
        _ALL.add(self)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Collector:
        """Start the background thread (and the embedded simulator if simulated); idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            if self.settings.simulated and self.settings.url is None:
                self._start_simulator()
            self._ready.clear()
            self.telemetry = Telemetry()
            self._thread = threading.Thread(target=self._thread_main, name="coinrates-collector", daemon=True)
            self._thread.start()
        self._ready.wait(timeout=10.0)
        logger.info("collector started: %s, %s", self.settings.source, self._describe_url())
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming, close the connection, join the thread; idempotent. The data stays."""
        with self._lock:
            thread, loop, session = self._thread, self._loop, self._session
            if thread is None and self._simulator is None:
                return
            if thread is not None and loop is not None and thread.is_alive():
                if session is not None:
                    loop.call_soon_threadsafe(session.stop)
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("collector thread did not stop within %.1f s", timeout)
            self._thread = None
            if self._simulator is not None:
                self._simulator.stop()
                self._simulator = None
            if self.telemetry.state != "error":
                self.telemetry.set_state("stopped")
        logger.info("collector stopped")

    def restart(self) -> Collector:
        """Stop, then start again with the same scope and frame."""
        self.stop()
        return self.start()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def _start_simulator(self) -> None:
        from .sim import Simulator  # lazy: importing the package opens no socket

        seed = self.settings.simulator_seed
        self._simulator = Simulator(port=0, seed=seed if seed is not None else 0, rate_hz=self.settings.simulator_rate_hz)
        self._simulator.start()
        self._active_settings = self.settings.with_url(self._simulator.url)
        logger.info("no COINAPI_KEY: streaming SIMULATED data from the embedded simulator at %s", self._simulator.url)

    @property
    def simulator(self) -> Simulator | None:
        """The embedded simulator this collector started, if any (for fault scenarios and demos)."""
        return self._simulator

    def _thread_main(self) -> None:
        """Thread body: own a fresh loop, run the session, never die silently."""
        from .client import Session

        loop = asyncio.new_event_loop()
        self._loop = loop
        settings = self._active_settings
        try:
            asyncio.set_event_loop(loop)
            self._session = Session(settings, self.protocol, self._on_rate, self.telemetry, self._on_disconnect,
                                    batch_sink=self._on_rates)
            self._ready.set()
            loop.run_until_complete(self._session.run())
        except Exception as exc:  # noqa: BLE001 - top of the thread
            logger.error("collector thread failed: %s", exc, exc_info=True)
            self.telemetry.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self.telemetry.set_state("error")
        finally:
            self._ready.set()
            try:
                close_loop(loop)
            finally:
                self._loop = None

    # ------------------------------------------------------------------ data path (loop thread)

    def _on_rate(self, msg: ExchangeRate, received_ns: int) -> None:
        pair = f"{msg.base}/{msg.quote}"
        self.frame.append(msg.time_ns, pair, msg.rate, msg.rate_type, received_ns)
        if self._open_gaps:
            start = self._open_gaps.pop(pair, None)
            if start is not None:
                self._gaps.append({"pair": pair, "start": start, "end": msg.time_ns, "reason": "disconnect"})
        self._last_seen[pair] = msg.time_ns
        if self._batch_listeners:
            self._notify_batch(RateBatch.of([msg]), received_ns)
        if self._listeners:
            self._notify((msg,), received_ns)

    def _notify(self, updates: Iterable[ExchangeRate], received_ns: int) -> None:
        listeners = self._listeners
        for msg in updates:
            for listener in listeners:
                try:
                    listener(msg, received_ns)
                except Exception:  # noqa: BLE001 - a broken listener must not stop the stream
                    logger.exception("rate listener %r failed", listener)

    def _notify_batch(self, rates: RateBatch, received_ns: int) -> None:
        for batch_listener in self._batch_listeners:
            try:
                batch_listener(rates, received_ns)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the stream
                logger.exception("batch listener %r failed", batch_listener)

    def _on_rates(self, rates: RateBatch, received_ns: int) -> None:
        """Store a batch of fresh updates with one ``extend``; gaps, freshness and listeners as :meth:`_on_rate`.

        Strings stay factorised (a few names per batch, codes per row), so nothing here costs
        Python work per row unless a per-update listener is attached.
        """
        times = rates.time_ns
        n = len(times)
        pair_names, pair_codes = rates.pairs()
        type_names, type_codes = rates.rate_types()
        self.frame.extend_factorized(times, pair_codes, pair_names, rates.rate, type_codes, type_names,
                                     np.full(n, received_ns, np.int64))
        # Fresh rows grow in time per pair, so a pair's first row closes its gap and its last is its newest.
        if len(pair_names) == 1:
            firsts, lasts = {pair_names[0]: 0}, {pair_names[0]: n - 1}
        else:
            present, back = np.unique(pair_codes[::-1], return_index=True)
            lasts = {pair_names[c]: n - 1 - i for c, i in zip(present.tolist(), back.tolist(), strict=True)}
            firsts = {}
            if self._open_gaps:
                present, front = np.unique(pair_codes, return_index=True)
                firsts = {pair_names[c]: i for c, i in zip(present.tolist(), front.tolist(), strict=True)}
        if self._open_gaps:
            for pair, i in firsts.items():
                start = self._open_gaps.pop(pair, None)
                if start is not None:
                    self._gaps.append({"pair": pair, "start": start, "end": int(times[i]), "reason": "disconnect"})
        for pair, i in lasts.items():
            self._last_seen[pair] = int(times[i])
        self._notify_batch(rates, received_ns)
        if self._listeners:
            self._notify(rates.updates(), received_ns)

    def _on_disconnect(self, now_ns: int) -> None:
        for pair, last in self._last_seen.items():
            self._open_gaps.setdefault(pair, last)

    def add_listener(self, listener: RateListener) -> Callable[[], None]:
        """Call ``listener(update, received_ns)`` on the collector thread for each stored update.

        Returns a function that removes it. Used by recorders; keep listeners cheap.
        """
        # Copy-on-write: the collector thread iterates the list it loaded, so adding or removing
        # a listener from another thread never makes it skip or repeat one for an update.
        self._listeners = [*self._listeners, listener]

        def remove() -> None:
            if listener in self._listeners:
                self._listeners = [fn for fn in self._listeners if fn is not listener]

        return remove

    def add_batch_listener(self, listener: BatchListener) -> Callable[[], None]:
        """Call ``listener(batch, received_ns)`` on the collector thread for each batch of stored updates.

        Under load the collector parses and stores queued frames together; a batch listener gets
        them as columns (:class:`~coinrates_nb.messages.RateBatch`), which costs nothing per row.
        Updates stored one by one arrive as batches of one, so it sees every stored update.
        Returns a function that removes it.
        """
        self._batch_listeners = [*self._batch_listeners, listener]

        def remove() -> None:
            self._batch_listeners = [fn for fn in self._batch_listeners if fn is not listener]

        return remove

    def record(self, path: str | os.PathLike[str], **options: Any) -> Recorder:
        """Append every update from now on to a hive-partitioned Parquet dataset at ``path``.

        Returns the running :class:`~coinrates_nb.store.Recorder`; call its ``stop()`` to
        flush and detach. ``options`` go to the recorder (flush interval, file roll limits).
        """
        from .store import Recorder  # lazy: pyarrow loads only when recording

        return Recorder(self, path, **options)

    # ------------------------------------------------------------------ scope (any thread)

    def _call(self, fn: Callable[[], str | None], timeout: float = 10.0) -> None:
        """Run a scope change on the loop and send its message; applied directly if not running."""
        loop, session = self._loop, self._session
        if loop is None or session is None or not self.running:
            fn()
            return

        async def apply() -> None:
            await session.send(fn())

        asyncio.run_coroutine_threadsafe(apply(), loop).result(timeout)

    def subscribe(self, items: str | Iterable[str]) -> Collector:
        """Add pairs or asset ids to the live subscription (a ``subscribe`` message, §3.1)."""
        self._call(lambda: self.protocol.subscribe(items))
        return self

    def unsubscribe(self, items: str | Iterable[str]) -> Collector:
        """Remove pairs or asset ids from the live subscription (an ``unsubscribe`` message, §3.1)."""
        self._call(lambda: self.protocol.unsubscribe(items))
        return self

    def set_pairs(self, items: str | Iterable[str] | None) -> Collector:
        """Replace the whole subscription (a new ``hello``, §3.1)."""
        self._call(lambda: self.protocol.set_scope(items))
        return self

    @property
    def pairs(self) -> tuple[str, ...] | None:
        """The current subscription scope (``None`` means the whole stream)."""
        return self.protocol.scope.items

    # ------------------------------------------------------------------ reads (any thread)

    @property
    def df(self) -> pd.DataFrame:
        """Snapshot of the rolling window: UTC ``DatetimeIndex`` named ``time``, one row per update."""
        return self.frame.snapshot()

    def snapshot(self, pairs: Iterable[str] | None = None, since: Any = None) -> pd.DataFrame:
        """Snapshot, optionally of some pairs only and since a time."""
        since_ns = None
        if since is not None:
            stamp = pd.Timestamp(since)
            since_ns = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value
        return self.frame.snapshot(pairs=pairs, since_ns=since_ns)

    def latest(self) -> pd.DataFrame:
        """One row per pair: newest rate, its time and its age."""
        return self.frame.latest(now_ns=time.time_ns())

    def wide(self, freq: str | None = None) -> pd.DataFrame:
        """Time x pair table, one column per pair, forward-filled."""
        return self.frame.wide(freq=freq)

    def ohlc(self, freq: str = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """OHLC bars per pair resampled at ``freq``."""
        return self.frame.ohlc(freq, pair=pair)

    @property
    def gaps(self) -> pd.DataFrame:
        """Per-pair gaps caused by disconnects: ``pair``, ``start`` (last update before), ``end`` (first after)."""
        rows = list(self._gaps)
        frame = pd.DataFrame(rows, columns=["pair", "start", "end", "reason"])
        for col in ("start", "end"):
            frame[col] = pd.to_datetime(frame[col].astype("int64"), unit="ns", utc=True)
        frame["duration"] = frame["end"] - frame["start"]
        return frame

    @property
    def status(self) -> Status:
        """A typed snapshot of state, throughput, faults and freshness."""
        t, p = self.telemetry, self.protocol
        now = time.time_ns()
        stale_after_ns = int(max(p.stale_after, 5.0) * 1e9)
        stale = tuple(sorted(pair for pair, last in self._last_seen.items() if now - last > stale_after_ns))
        state: State = t.state
        if state == "idle" and not self.running and self._thread is None and t.connections:
            state = "stopped"
        return Status(
            state=state,
            source=self.settings.source,
            url=self._describe_url(),
            scope=p.scope.items,
            messages=p.frames,
            rates=p.exrates,
            msgs_per_s=t.throughput(),
            heartbeats=p.heartbeats,
            unknown=p.unknown,
            rejected=dict(t.rejected),
            duplicates=p.duplicates,
            connections=t.connections,
            reconnects=t.reconnects,
            server_errors=p.server_errors,
            last_error=t.last_error,
            lag_ms=None if t.lag_ns is None else t.lag_ns / 1e6,
            stale_pairs=stale,
            rows=len(self.frame),
            uptime_s=time.monotonic() - t.started_at,
        )

    def wait(self, timeout: float = 30.0, rows: int = 1, pairs: Iterable[str] | None = None) -> Collector:
        """Block until every subscribed pair has at least ``rows`` rows (or raise on timeout/error).

        Handy in scripts and notebook cells that need data before analysing it.
        """
        wanted: set[str]
        if pairs is not None:
            wanted = set(pairs)
        else:
            wanted = {i for i in (self.pairs or ()) if "/" in i}
        deadline = time.monotonic() + timeout
        while True:
            if self.telemetry.state == "error":  # first: rows from before a fatal error must not hide it
                raise CollectorError(f"collector failed: {self.telemetry.last_error}")
            counts = self.frame.counts() if hasattr(self.frame, "counts") else self.df["pair"].value_counts().to_dict()
            if wanted and all(counts.get(p, 0) >= rows for p in wanted) or not wanted and len(self.frame) >= rows:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"no data for {sorted(wanted - {p for p, n in counts.items() if n >= rows})} within {timeout} s")
            time.sleep(0.02)

    def _describe_url(self) -> str | None:
        url = self.settings.url or (self._simulator.url if self._simulator is not None else None)
        return None if url is None else redact_url(url)

    def __repr__(self) -> str:
        s = self.status
        label = "SIMULATED" if s.simulated else "live"
        n = "all" if s.scope is None else len(s.scope)
        lag = f"lag {s.lag_ms:,.0f} ms" if s.lag_ms is not None else "lag n/a"
        err = f" | error: {s.last_error}" if s.state == "error" and s.last_error else ""
        return (f"<Collector {s.state} | {label} | {n} pairs | {s.rates:,} msgs | {s.rows:,} rows | "
                f"{s.reconnects} reconnect{'s' if s.reconnects != 1 else ''} | {lag}{err}>")

    def _repr_html_(self) -> str:
        from html import escape

        s = self.status
        badge = ('<span style="background:#b45309;color:white;padding:1px 6px;border-radius:3px;font-weight:bold">'
                 'SIMULATED DATA</span> ' if s.simulated else "")
        return f"<div>{badge}<code>{escape(repr(self))}</code></div>"


def _registry_key(pairs: Any, settings: Settings, window: Any, max_rows: Any) -> Hashable:
    scope = None if pairs is None else (pairs,) if isinstance(pairs, str) else tuple(pairs)
    return (scope, settings.url, settings.simulated, hash(settings.api_key), str(window), max_rows,
            settings.update_limit_ms, settings.heartbeat)


def stream(
    pairs: str | Iterable[str] | None = ("BTC/USD", "ETH/USD", "BTC/EUR"),
    *,
    window: str | pd.Timedelta | None = None,
    max_rows: int | None = 100_000,
    url: str | None = None,
    api_key: str | None = None,
    simulated: bool | None = None,
    update_limit_ms: int | None = None,
    heartbeat: bool = True,
    stale_after: float = 10.0,
    seed: int | None = None,
    rate_hz: float = 5.0,
    start: bool = True,
    **options: Any,
) -> Collector:
    """Start streaming ``pairs`` in the background and return the :class:`Collector` at once.

    With ``COINAPI_KEY`` set (or ``api_key=``) it connects to CoinAPI; otherwise it starts the
    embedded simulator and labels everything as simulated. Calling it again with the same
    arguments (e.g. re-running a notebook cell) returns the running collector instead of
    leaking a second thread and socket.
    """
    settings = Settings.resolve(
        url, api_key, simulated=simulated, update_limit_ms=update_limit_ms, heartbeat=heartbeat,
        stale_after=stale_after, simulator_seed=seed, simulator_rate_hz=rate_hz, **options,
    )
    key = _registry_key(pairs, settings, window, max_rows)
    existing = _REGISTRY.get(key)
    if existing is not None and existing.running:
        return existing
    collector = Collector(pairs, settings, window=window, max_rows=max_rows)
    _REGISTRY[key] = collector
    return collector.start() if start else collector


@atexit.register
def _stop_all() -> None:
    for collector in list(_ALL):
        try:
            collector.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - interpreter exit
            pass
