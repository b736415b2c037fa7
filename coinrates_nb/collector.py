"""The collector: a daemon thread that owns one event loop, one session and one rolling frame.

Notebook cells never block on the network: the loop lives on its own thread, and other threads
reach it only through ``run_coroutine_threadsafe``/``call_soon_threadsafe`` (STYLE §4). Because
the loop is ours, the library never needs ``nest_asyncio`` and is unaffected when a notebook
applied it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._cells import close_on_rerun
from ._display import LatestFrame
from ._inputs import filter_items, span_ns
from ._listeners import Listener, Listeners
from ._loop import close_loop, run_on
from ._secrets import redact_url
from ._threads import BackgroundThread
from ._types import State
from ._views import FrameViews
from .batch import RateBatch
from .config import Settings
from .exceptions import CollectorError, ConfigError, UnknownAssetError, WaitTimeoutError
from .frame import RollingFrame
from .messages import ExchangeRate
from .protocol import ClientProtocol
from .status import NO_DATA_AFTER, Status, Telemetry

if TYPE_CHECKING:
    from .filler import Filler
    from .rest import RestClient
    from .sim import Simulator
    from .store import Recorder

__all__ = ["Collector", "Listener", "each", "stream"]

logger = logging.getLogger("coinrates_nb.collector")


def each(fn: Callable[[ExchangeRate, int], None]) -> Listener:
    """Adapt ``fn(update, received_ns)``, called once per stored update, into a :data:`Listener`.

    For code that wants one :class:`~coinrates_nb.messages.ExchangeRate` at a time; it costs a
    dataclass per row, so hot consumers (the recorder) read the columns instead.
    """

    def listener(rates: RateBatch, received_ns: int) -> None:
        for update in rates.updates():
            fn(update, received_ns)

    listener.__qualname__ = f"each({getattr(fn, '__qualname__', fn)!s})"
    return listener


_REGISTRY: weakref.WeakValueDictionary[Hashable, Collector] = weakref.WeakValueDictionary()


class Collector(FrameViews, Listeners, BackgroundThread):
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
        history: bool | str | float | pd.Timedelta | None = None,
        heal: bool | None = None,
        max_history_credits: int = 1_000,
        history_url: str | None = None,
    ) -> None:
        self.settings = settings
        self._history_span = _history_span(history, window)
        self._heal = heal
        if isinstance(max_history_credits, bool) or not isinstance(max_history_credits, int) or max_history_credits < 0:
            raise ConfigError(f"max_history_credits must be a non-negative int (credits per UTC day), "
                              f"not {max_history_credits!r}")
        self._max_history_credits = max_history_credits
        self._rest: RestClient | None = None
        """The REST client of history and healing: one for the collector's life, so a restart keeps today's budget."""
        if history_url is not None:
            from .rest import RestClient, rest_url_for  # no aiohttp yet: it loads with the first request

            self._rest = RestClient(rest_url_for(history_url), settings.api_key)  # a bad URL or key fails here
        self._rest_fixed = self._rest is not None
        self._filler: Filler | None = None
        self.protocol = ClientProtocol(
            None if pairs is None else ([pairs] if isinstance(pairs, str) else list(pairs)),
            heartbeat=settings.heartbeat,
            update_limit_ms=settings.update_limit_ms,
            stale_after=settings.stale_after,
        )
        self.frame = RollingFrame(max_rows=max_rows, window=window)
        self.telemetry = Telemetry()
        self._recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()
        """Recorders made by :meth:`record`, so ``status`` can show a failing one (a full disk)."""
        self._gaps: list[dict[str, Any]] = []
        self._open_gaps: dict[str, int] = {}
        self._last_seen: dict[str, int] = {}
        self._subscribed_at: dict[str, float] = {}
        """Monotonic time each pair joined the scope (for ``status.silent_pairs``)."""
        self._state_lock = threading.Lock()
        """Guards ``_last_seen``, ``_gaps``, ``_open_gaps`` and ``_subscribed_at`` between the loop thread and readers."""
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Any = None
        self._simulator: Simulator | None = None
        self._ready = threading.Event()
        self._active_settings = settings
        self._billed = True
        """Whether CoinAPI bills the rates this collector's session delivers (not a hub consumer's: the hub pays)."""
        self._stop_at_exit()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Collector:
        """Start the background thread (and the embedded simulator if simulated); idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return self
            if self.settings.simulated and self.settings.url is None and self._simulator is None:
                self._start_simulator()
            self._ready.clear()
            self.telemetry = Telemetry(rates_by_day=self.telemetry.rates_by_day)  # billing is per day, not per start
            self._thread = threading.Thread(target=self._thread_main, name="coinrates-collector", daemon=True)
            self._thread.start()
        self._ready.wait(timeout=10.0)
        if not getattr(self._session, "LOGS_START", False):  # a hub consumer says it once it knows the hub's source
            logger.info("collector started: %s, %s", self.settings.source, self._describe_url())
        s = self.settings
        if s.api_key is not None and not s.simulated and self.protocol.scope.items is None and not s.update_limit_ms:
            logger.warning(
                "streaming EVERY pair unthrottled: CoinAPI bills each rate delivered; one pair updating about "
                "once a second is ~86,400 rates a day, and the unfiltered stream carries thousands of pairs "
                "(millions of rates a day). Pass pairs=[...] and/or update_limit_ms= to control the cost.")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop streaming, close the connection, join the thread; idempotent. The data stays.

        The lock is held only to take the thread and simulator out; the join happens outside
        it, so a dashboard's Stop button never blocks other calls for the join's duration.
        """
        if self._on_loop_thread():
            raise CollectorError("stop() was called from the collector's own thread (a listener?): it would wait "
                                 "for itself; call it from another thread")
        with self._lock:
            thread, loop, session, simulator = self._thread, self._loop, self._session, self._simulator
            if thread is None and simulator is None:
                return
            self._thread, self._simulator = None, None
        if thread is not None and loop is not None and thread.is_alive():
            if session is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
                    loop.call_soon_threadsafe(session.stop)
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("collector thread did not stop within %.1f s", timeout)
        if simulator is not None:
            simulator.stop()
        if self.telemetry.state != "error":
            self.telemetry.set_state("stopped")
        logger.info("collector stopped")

    def _on_loop_thread(self) -> bool:
        """True when called from the collector's own thread (where waiting on the loop would deadlock)."""
        thread = self._thread
        return thread is not None and thread is threading.current_thread()

    def restart(self) -> Collector:
        """Stop, then start again with the same scope and frame."""
        self.stop()
        return self.start()

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
        session_class = _session_class(self._active_settings.url)
        self._billed = bool(getattr(session_class, "BILLED", True))

        loop = asyncio.new_event_loop()
        self._loop = loop
        settings = self._active_settings
        try:
            asyncio.set_event_loop(loop)
            self._session = session_class(settings, self.protocol, self._on_rates, self.telemetry, self._on_disconnect)
            self._filler = self._make_filler(settings)
            if self._filler is not None and self._history_span:
                pairs = tuple(p for p in (self.protocol.scope.items or ()) if "/" in p)
                loop.call_soon(self._filler.start_fill, pairs, self._history_span)
            self._ready.set()
            loop.run_until_complete(self._session.run())
        except Exception as exc:  # noqa: BLE001 - top of the thread
            logger.error("collector thread failed: %s", exc, exc_info=True)
            self.telemetry.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self.telemetry.set_state("error")
        finally:
            self._ready.set()
            try:
                if self._filler is not None:
                    with contextlib.suppress(Exception):
                        loop.run_until_complete(self._filler.close())
                close_loop(loop)
            finally:
                self._loop = None

    def _make_filler(self, settings: Settings) -> Filler | None:
        """The REST side (history fill, gap healing), or ``None`` when neither is wanted or possible."""
        url = settings.url
        heal = self._heal if self._heal is not None else (settings.api_key is not None or self._simulated_server)
        if not (self._history_span or heal) or url is None or not url.startswith(("ws://", "wss://")):
            return None
        from .filler import Filler  # lazy: aiohttp loads only for history and healing
        from .rest import RestClient, rest_url_for

        if not self._rest_fixed:  # derived from the WebSocket URL: the same server keeps its client (and usage)
            derived = RestClient(rest_url_for(url), settings.api_key)
            if self._rest is None or self._rest.base_url != derived.base_url:  # another server (a new simulator)
                self._rest = derived
        assert self._rest is not None
        return Filler(self._rest, self._store_history, self._on_rates, max_credits=self._max_history_credits,
                      simulated=self._simulated_server)

    @property
    def _simulated_server(self) -> bool:
        return self.settings.simulated or self._simulator is not None or self.telemetry.server_simulated

    # ------------------------------------------------------------------ data path (loop thread)

    def _on_rates(self, rates: RateBatch, received_ns: int) -> None:
        """Store fresh updates (a batch; one frame is a batch of one), close gaps, tell listeners.

        The collector boundary: an error of our own code here (the frame refusing rows, a bug)
        is counted in ``status.internal_errors``, shown in ``last_error`` and logged, and the
        stream goes on; it never becomes a reconnect (CoinAPI limits connections per IP).
        """
        try:
            filler = self._filler
            if filler is not None and filler.hold(rates, received_ns):
                return  # the window is being filled from history: stored right after it
            self._store(rates, received_ns)
        except Exception as exc:  # noqa: BLE001 - the collector boundary: count, show, never reconnect
            t = self.telemetry
            t.internal_errors += 1
            t.last_error = f"internal error storing {len(rates):,} update(s): {type(exc).__name__}: {exc}"
            if t.internal_errors == 1 or logger.isEnabledFor(logging.DEBUG):
                logger.error("%s (further ones are counted in status.internal_errors)", t.last_error, exc_info=True)

    def _store(self, rates: RateBatch, received_ns: int) -> None:
        self.frame.extend(rates, received_ns)
        if self._billed:
            self.telemetry.count_rates(len(rates), received_ns)
        with self._state_lock:
            self._track(rates)
        self._notify(rates, received_ns)

    def _store_history(self, rates: RateBatch, received_ns: int) -> None:
        """Store rows from REST (history, healed): into the frame and to listeners; live freshness is untouched."""
        self.frame.extend(rates, received_ns)
        self._notify(rates, received_ns)

    def _healed(self, gap: dict[str, Any]) -> None:
        logger.info("gap %s %s: %s", gap["pair"], "healed" if gap["heal"] == "healed" else "not healed", gap["heal"])

    def _track(self, rates: RateBatch) -> None:
        """Close the gaps of pairs that came back; remember each pair's newest time (state lock held)."""
        times = rates.time_ns
        n = len(times)
        last_seen, open_gaps = self._last_seen, self._open_gaps
        if n <= 8:  # the usual frame alone: Python beats a few NumPy calls
            for code, t in zip(rates.code.tolist(), times.tolist(), strict=True):
                base, quote, _ = rates.keys[code]
                pair = f"{base}/{quote}"
                if open_gaps:
                    start = open_gaps.pop(pair, None)
                    if start is not None:
                        self._gap_closed({"pair": pair, "start": start, "end": t, "reason": "disconnect"})
                last_seen[pair] = t
        else:
            pair_names, pair_codes = rates.pairs()
            # Fresh rows grow in time per pair, so a pair's first row closes its gap and its last is its newest.
            present, back = np.unique(pair_codes[::-1], return_index=True)
            if open_gaps:
                _, front = np.unique(pair_codes, return_index=True)
                for c, i in zip(present.tolist(), front.tolist(), strict=True):
                    start = open_gaps.pop(pair_names[c], None)
                    if start is not None:
                        self._gap_closed({"pair": pair_names[c], "start": start, "end": int(times[i]),
                                          "reason": "disconnect"})
            for c, i in zip(present.tolist(), back.tolist(), strict=True):
                last_seen[pair_names[c]] = int(times[n - 1 - i])

    def _gap_closed(self, gap: dict[str, Any]) -> None:
        """A pair came back after a disconnect: record the gap and heal it from REST if possible (state lock held)."""
        gap["heal"] = "open: healing off" if self._filler is None else "pending"
        self._gaps.append(gap)
        if self._filler is not None:
            self._filler.heal(gap, self._healed)

    def _on_disconnect(self, now_ns: int) -> None:
        with self._state_lock:
            for pair, last in self._last_seen.items():
                self._open_gaps.setdefault(pair, last)

    def record(self, path: str | os.PathLike[str], **options: Any) -> Recorder:
        """Append every update from now on to a hive-partitioned Parquet dataset at ``path``.

        Returns the running :class:`~coinrates_nb.store.Recorder`; call its ``stop()`` to
        flush and detach. ``options`` go to the recorder (flush interval, file roll limits).
        """
        from .store import Recorder  # lazy: pyarrow loads only when recording

        recorder = Recorder(self, path, **options)
        self._recorders.add(recorder)
        return recorder

    # ------------------------------------------------------------------ scope (any thread)

    def _call(self, fn: Callable[[], str | None], timeout: float = 10.0) -> None:
        """Run a scope change on the loop and send its message; applied directly if not running."""
        loop, session = self._loop, self._session
        if loop is None or session is None or not self.running:
            fn()
            return
        if self._on_loop_thread():
            raise CollectorError("subscribe/unsubscribe/set_pairs were called from the collector's own thread "
                                 "(a listener?): it would wait on itself; call them from another thread")

        async def apply() -> None:
            await session.send(fn())

        def closed() -> None:  # stopped meanwhile: the scope changes here, the next hello carries it
            fn()

        run_on(loop, apply(), timeout, "the scope change", CollectorError, closed=closed)

    def subscribe(self, items: str | Iterable[str]) -> Collector:
        """Add pairs or asset ids to the live subscription (a ``subscribe`` message, §3.1).

        Raises:
            ConfigError: an item is malformed, or names an asset the server's REST API does not
                list ("FOO is not a CoinAPI asset"), when the REST side is on.
        """
        self._mark_subscribed(items)
        self.check_assets(items)
        self._call(lambda: self.protocol.subscribe(items))
        return self

    def unsubscribe(self, items: str | Iterable[str]) -> Collector:
        """Remove pairs or asset ids from the live subscription (an ``unsubscribe`` message, §3.1)."""
        self._call(lambda: self.protocol.unsubscribe(items))
        return self

    def set_pairs(self, items: str | Iterable[str] | None) -> Collector:
        """Replace the whole subscription (a new ``hello``, §3.1)."""
        if items is not None:
            self._mark_subscribed(items)
        self._call(lambda: self.protocol.set_scope(items))
        return self

    def _in_scope(self, pair: str) -> bool:
        """True if ``pair`` is subscribed now: the pair itself, one of its assets, or the whole stream."""
        items = self.protocol.scope.items
        if items is None:
            return True
        base, _, quote = pair.partition("/")
        return pair in items or base in items or quote in items

    def check_assets(self, items: str | Iterable[str] | None = None, timeout: float = 15.0) -> None:
        """Refuse assets the server does not know (``GET /v1/assets``, cached), when the REST side is on.

        A stream filtered on an unknown asset is silent on the wire; this makes it a clear error.
        Without the REST side (no key, or history and healing off), only ``status.silent_pairs``
        will tell. A REST failure is logged and lets the items through.

        Raises:
            ConfigError: "FOO is not a CoinAPI asset" (with a suggestion when one is close).
        """
        filler, loop = self._filler, self._loop
        wanted = self.protocol.scope.items if items is None else filter_items(items)
        if filler is None or loop is None or not wanted or not self.running or self._on_loop_thread():
            return
        try:
            run_on(loop, filler.client.require_assets(wanted), timeout, "the asset check", CollectorError)
        except UnknownAssetError:
            raise
        except Exception as exc:  # noqa: BLE001 - the check is a courtesy: a REST outage must not block streaming
            logger.info("could not check assets over REST (%s): %s", type(exc).__name__, exc)

    def _mark_subscribed(self, items: str | Iterable[str]) -> None:
        """Remember when pairs joined the scope, so ``status.silent_pairs`` counts from then (validates ``items``)."""
        now = time.monotonic()
        fresh = [i for i in filter_items(items) if i not in set(self.protocol.scope.items or ())]
        with self._state_lock:
            for item in fresh:
                self._subscribed_at[item] = now

    @property
    def pairs(self) -> tuple[str, ...] | None:
        """The current subscription scope (``None`` means the whole stream)."""
        return self.protocol.scope.items

    # ------------------------------------------------------------------ reads (any thread)

    def latest(self) -> pd.DataFrame:
        """One row per pair: newest rate, its time and its age (a notebook shows it as a readable table)."""
        return LatestFrame(self.frame.latest(now_ns=time.time_ns()))

    @property
    def gaps(self) -> pd.DataFrame:
        """Per-pair gaps caused by disconnects: ``pair``, ``start`` (last update before), ``end`` (first after).

        ``healed`` says whether REST history filled it; ``heal`` says how it went (``healed``,
        ``pending``, or ``open: <reason>``: no key, budget spent, REST down, no data).
        """
        with self._state_lock:
            rows = [dict(g) for g in self._gaps]
        frame = pd.DataFrame(rows, columns=["pair", "start", "end", "reason", "heal"])
        for col in ("start", "end"):
            frame[col] = pd.to_datetime(frame[col].astype("int64"), unit="ns", utc=True)
        frame["duration"] = frame["end"] - frame["start"]
        frame["healed"] = frame["heal"] == "healed"
        return frame[["pair", "start", "end", "duration", "reason", "healed", "heal"]]

    @property
    def status(self) -> Status:
        """A typed snapshot of state, throughput, faults and freshness (safe from any thread)."""
        t, p = self.telemetry, self.protocol
        now = time.time_ns()
        stale_after_ns = int(max(p.stale_after, 5.0) * 1e9)
        with self._state_lock:  # the loop thread inserts into these while we read
            last_seen = dict(self._last_seen)
            subscribed_at = dict(self._subscribed_at)
        in_scope = self._in_scope
        stale = tuple(sorted(pair for pair, last in last_seen.items()
                             if now - last > stale_after_ns and in_scope(pair)))
        state: State = t.state
        if state == "idle" and not self.running and self._thread is None and t.connections:
            state = "stopped"
        silent: dict[str, float] = {}
        since = t.connected_since
        filler = self._filler
        if state == "connected" and since is not None:
            mono = time.monotonic()
            for pair in p.scope.items or ():  # a pair whose updates are held during the history fill is not silent
                if "/" in pair and pair not in last_seen and (filler is None or filler.first_live(pair) is None):
                    quiet = mono - max(since, subscribed_at.get(pair, since))
                    if quiet >= NO_DATA_AFTER:
                        silent[pair] = quiet
        return Status(
            state=state,
            source="simulated" if self.settings.simulated or t.server_simulated else self.settings.source,
            url=self._describe_url(),
            scope=p.scope.items,
            messages=p.frames,
            rates=p.exrates,
            msgs_per_s=t.throughput() if state in ("connected", "stale") else 0.0,
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
            silent_pairs=silent,
            internal_errors=t.internal_errors,
            recorders=tuple(r.status for r in list(self._recorders)),
            rates_today=t.rates_by_day.get(now // 86_400_000_000_000, 0),
            upstream=_upstream_of(self._session),
            **self._rest_figures(),
        )

    def _rest_figures(self) -> dict[str, Any]:
        filler = self._filler
        if filler is None:
            return {}
        total, today = filler.usage, filler.usage_today
        return {"rest_requests": total.requests, "rest_credits": total.credits, "rest_credits_today": today.credits,
                "rest_rates": total.rates, "history_error": filler.fill_error}

    def wait(self, timeout: float = 30.0, rows: int = 1, pairs: Iterable[str] | None = None) -> Collector:
        """Block until every subscribed pair has at least ``rows`` rows (or raise on timeout/error).

        Handy in scripts and notebook cells that need data before analysing it.
        """
        wanted: set[str]
        if pairs is not None:
            wanted = set(filter_items(pairs))
        else:
            wanted = {i for i in (self.pairs or ()) if "/" in i}
        deadline = time.monotonic() + timeout
        while True:
            if self.telemetry.state == "error":  # first: rows from before a fatal error must not hide it
                raise CollectorError(f"collector failed: {self.telemetry.last_error}")
            counts = self.frame.counts()
            if wanted and all(counts.get(p, 0) >= rows for p in wanted) or not wanted and len(self.frame) >= rows:
                return self
            if time.monotonic() > deadline:
                missing = sorted(wanted - {p for p, n in counts.items() if n >= rows})
                hint = "; ".join(self.status.no_data_notes())
                raise WaitTimeoutError(f"no data for {missing or 'any pair'} within {timeout:g} s"
                                       f" (state {self.telemetry.state}){'; ' + hint if hint else ''}")
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
        hub = f" | hub upstream {s.upstream.get('state', 'unknown')}" if s.upstream is not None else ""
        return (f"<Collector {s.state} | {label} | {n} pairs | {s.rates:,} msgs | {s.rows:,} rows | "
                f"{s.reconnects} reconnect{'s' if s.reconnects != 1 else ''} | {lag}{hub}{err}>")

    def _repr_html_(self) -> str:
        from html import escape

        from ._badge import simulated_html

        s = self.status
        notes = "".join(f'<div style="color:#b45309">{escape(n)}</div>' for n in s.no_data_notes())
        return f"<div>{simulated_html(s.simulated)}<code>{escape(repr(self))}</code>{notes}</div>"


def _upstream_of(session: Any) -> dict[str, Any] | None:
    """A hub consumer's session's view of the hub <-> CoinAPI link (a copy), ``None`` for a direct connection."""
    upstream = getattr(session, "upstream", None)
    return dict(upstream) if upstream is not None else None


def _history_span(history: Any, window: Any) -> int:
    """Nanoseconds of history to fill at start: ``True`` means the collector's window, a span means itself."""
    if history is None or history is False:
        return 0
    if history is True:
        span = span_ns(window)
        if span is None:
            raise ConfigError("history=True fills the window: give window= too (e.g. window='1h'), "
                              "or a span like history='30min'")
        return span
    return span_ns(history, "history", allow_none=False) or 0


def _session_class(url: str | None) -> Any:
    """The I/O session for ``url``: CoinAPI's WebSocket (``ws(s)://``), or a hub over NATS (``nats://``, ``tls://``).

    Both take the same arguments and feed the same data path (``ClientProtocol.receive`` ->
    ``Collector._on_rates``), so a consumer of the hub is the same collector. A session class
    with ``BILLED = False`` (the hub consumer) delivers rates CoinAPI does not bill this
    collector for: they are left out of ``status.rates_today``.
    """
    if url is not None and url.split("://", 1)[0].lower() in ("nats", "tls"):
        from .hub.consumer import NatsSession  # lazy: nats-py loads only for hub consumers

        return NatsSession
    from .client import Session

    return Session


def _registry_key(pairs: Any, settings: Settings, window: Any, max_rows: Any) -> Hashable:
    """Everything that makes a collector what it is: the same key means the same running collector."""
    scope = None if pairs is None else filter_items(pairs)
    return (scope, settings, span_ns(window), max_rows)


def stream(
    pairs: str | Iterable[str] | None = ("BTC/USD", "ETH/USD", "BTC/EUR"),
    *,
    window: str | pd.Timedelta | float | None = None,
    max_rows: int | None = 100_000,
    url: str | None = None,
    api_key: str | None = None,
    simulated: bool | None = None,
    update_limit_ms: int | None = None,
    heartbeat: bool = True,
    stale_after: float | str = 10.0,
    seed: int | None = None,
    rate_hz: float = 5.0,
    start: bool = True,
    history: bool | str | float | pd.Timedelta | None = None,
    heal: bool | None = None,
    max_history_credits: int = 1_000,
    history_url: str | None = None,
    **options: Any,
) -> Collector:
    """Start streaming ``pairs`` in the background and return the :class:`Collector` at once.

    With ``COINAPI_KEY`` set (or ``api_key=``) it connects to CoinAPI; otherwise it starts the
    embedded simulator and labels everything as simulated. Re-running a notebook cell follows
    one rule: the same arguments give back the same running collector; changed arguments give
    a new one, and the collector that cell made on its previous run is stopped (no leaked
    threads or sockets). ``window`` is how long the buffer keeps rows (a span like ``"15min"``
    or seconds); ``max_rows`` bounds it too.

    History (CoinAPI's Historical REST API; the simulator serves it too): ``history=True`` fills
    the whole window at start (``history="30min"``: that span) while the WebSocket starts, with no
    duplicate and no hole at the seam; ``heal`` (on by default with a key, and on the embedded simulator; pass ``heal=True`` for a simulator by URL)
    fills each reconnect gap with 1-second bars. Both spend at most ``max_history_credits`` a UTC
    day (CoinAPI bills every rate, REST or WebSocket); ``history_url`` overrides the REST host
    (default: CoinAPI's historical host for CoinAPI, else the WebSocket URL's own host and port).

    Raises:
        ConfigError: a pair, duration or setting is invalid (the message says what to write).
    """
    if pairs is not None and not filter_items(pairs):
        raise ConfigError("no pairs given: pass pairs like ['BTC/USD'], asset ids like 'BTC', or None for the whole stream")
    settings = Settings.resolve(
        url, api_key, simulated=simulated, update_limit_ms=update_limit_ms, heartbeat=heartbeat,
        stale_after=stale_after, simulator_seed=seed, simulator_rate_hz=rate_hz, **options,
    )
    key = (_registry_key(pairs, settings, window, max_rows), repr(history), heal, max_history_credits, history_url)
    existing = _REGISTRY.get(key)
    if existing is not None and existing.running:
        close_on_rerun(existing, Collector.stop)
        return existing
    collector = Collector(pairs, settings, window=window, max_rows=max_rows, history=history, heal=heal,
                          max_history_credits=max_history_credits, history_url=history_url)
    if not start:
        _REGISTRY[key] = collector
        close_on_rerun(collector, Collector.stop)
        return collector
    collector.start()
    try:
        collector.check_assets()
    except UnknownAssetError:
        collector.stop()
        raise
    _REGISTRY[key] = collector
    close_on_rerun(collector, Collector.stop)
    return collector

