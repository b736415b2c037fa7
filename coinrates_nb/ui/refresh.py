"""The refresher: one thread per collector that redraws its live views, throttled and coalesced.

Widgets are views: they own no data and no threads (STYLE §14). One :class:`Refresher` per
collector pulls a snapshot of its rolling frame at most ``fps`` times a second, whatever the
message rate, and hands the same :class:`Tick` to every live view; each view redraws only when
its own :class:`~coinrates_nb.ui.throttle.Throttle` says so and the data changed since its last
redraw (:func:`~coinrates_nb.ui.throttle.data_version`). The refresher holds views weakly and its
thread ends when the last view is closed or garbage collected.

Charts are costly for the browser (a full plotly.js re-render each, whatever their size), so a
source's charts also share one :class:`~coinrates_nb.ui.throttle.Budget` of redraws per second
(``View.costly``); status bars and tables do not wait for it.

The decision is pure and lives apart from this thread: :mod:`coinrates_nb.ui.throttle` says
whether a redraw is due, :mod:`coinrates_nb.ui.series` computes what it sends.

Which thread redraws
--------------------
ipykernel 7 moved shell-message handling onto its own thread, and widget updates made from other
threads broke in places (``../shared/NOTES.md``, "Jupyter kernel and widgets"). Two ways to
drive the redraws were built and tested in real JupyterLab 4.6 with ipykernel 7.4, in headless
Chromium (``tests/test_browser.py``):

``mode="thread"`` (default)
    The refresher's own daemon thread takes the snapshot and updates the widgets. Comm messages
    from a thread go out through ipykernel's thread-safe IOPub socket; comm messages do not
    need a cell's parent header to reach the widget manager.
``mode="loop"``
    The refresher thread only keeps time and hands each tick to the kernel's event loop, captured
    in the cell that created the view, with ``call_soon_threadsafe``.

Evidence (``tests/test_browser.py::test_redraws_during_a_long_cell``; JupyterLab 4.6,
ipykernel 7.4, headless Chromium; simulator at 20 updates/pair/s, chart at 4 fps; the newest x
value of the Plotly graph in the page sampled every 100 ms): while another cell ran
``time.sleep(8)``, the ``"thread"`` chart showed 33 distinct redraws and its newest point
advanced 8.0 s; the ``"loop"`` chart showed 1, its newest point advanced 0.0 s, and it caught
up only when the cell ended. Between cells both redraw at 4 fps, and updates from the thread
reach the browser without setting a parent header. So ``"thread"`` is the default: only it keeps
charts updating while the user runs other cells. Its one hazard, the kernel's main thread
handling a message from the browser (a zoom, Plotly's edit acknowledgements) while the refresher
mutates the same figure, is closed by a per-view lock that the refresher holds while drawing and
that wraps the widget's incoming-message handler (:meth:`View.guard_incoming`). ``"loop"`` stays
available for code that wants every widget mutation on the kernel's thread.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, Final, Literal, Protocol, cast, get_args

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ..exceptions import ConfigError
from ..frame import RollingFrame
from ..status import Status
from .series import Series
from .throttle import CHART_BUDGET, DEFAULT_FPS, Budget, Throttle, data_version

__all__ = ["Mode", "Refresher", "Source", "Tick", "View", "check_mode"]

logger = logging.getLogger(__name__)

Mode = Literal["thread", "loop"]
"""Where redraws run: the refresher's own thread, or the kernel's event loop (see module docstring)."""

MIN_WAIT: Final = 0.01
"""Shortest sleep between refresher wake-ups, in seconds."""

MAX_WAIT: Final = 1.0
"""Longest sleep between wake-ups, so closed views are noticed within a second."""


def check_mode(mode: Any) -> Mode:
    """Return ``mode`` if it is ``"thread"`` or ``"loop"``.

    Raises:
        ConfigError: If it is anything else.
    """
    if not isinstance(mode, str) or mode not in get_args(Mode):
        raise ConfigError(f"mode must be 'thread' (redraw from the refresher's thread, the default) or 'loop' "
                          f"(on the kernel's event loop), not {mode!r}")
    return cast(Mode, mode)


# --------------------------------------------------------------------------------------- data


class Source(Protocol):
    """What a refresher reads from: a :class:`~coinrates_nb.collector.Collector` or a test double."""

    @property
    def frame(self) -> RollingFrame: ...

    @property
    def status(self) -> Status: ...


class Tick:
    """What one refresh sees: the source's data at one instant, computed lazily and shared by all views.

    The snapshot is taken only if some view asks for it, and only once per tick however many
    views draw from it.

    Args:
        source: The collector (or test double) to read.
        now_ns: Wall-clock time of the tick (UTC ns), for ages in tables.
    """

    def __init__(self, source: Source, now_ns: int | None = None) -> None:
        self.source = source
        self.now_ns = time.time_ns() if now_ns is None else now_ns

    @cached_property
    def df(self) -> pd.DataFrame:
        """The rolling window as a DataFrame (one snapshot per tick)."""
        return self.source.frame.snapshot()

    @cached_property
    def series(self) -> dict[str, Series]:
        """Each pair's rows in time order, as NumPy arrays, in first-seen pair order."""
        df = self.df
        if df.empty:
            return {}
        times = np.asarray(cast(pd.DatetimeIndex, df.index).as_unit("ns").asi8, dtype=np.int64)
        rates = df["rate"].to_numpy(dtype=np.float64)
        pair = df["pair"]
        codes = pair.cat.codes.to_numpy()
        out: dict[str, Series] = {}
        for code, name in enumerate(pair.cat.categories):
            mask = codes == code
            if not mask.any():
                continue
            t, r = times[mask], rates[mask]
            if len(t) > 1 and not bool(np.all(t[1:] >= t[:-1])):
                order = np.argsort(t, kind="stable")
                t, r = t[order], r[order]
            out[str(name)] = (t, r)
        return out

    @cached_property
    def newest_ns(self) -> int | None:
        """The newest row time in the window, or ``None`` if it is empty."""
        ends = [int(t[-1]) for t, _ in self.series.values()]
        return max(ends) if ends else None

    @cached_property
    def status(self) -> Status:
        """The source's status at this tick."""
        return self.source.status

    @cached_property
    def latest(self) -> pd.DataFrame:
        """One row per pair: newest rate, time and age, on the source's own clock when it has one.

        A collector measures ages against the wall clock, a replay against its replay clock.
        """
        latest = getattr(self.source, "latest", None)
        if callable(latest):
            return cast(pd.DataFrame, latest())
        return self.source.frame.latest(now_ns=self.now_ns)


# --------------------------------------------------------------------------------------- views


class View(abc.ABC):
    """Something a :class:`Refresher` redraws: a chart, a status bar, a table.

    Subclasses implement :meth:`draw` and :attr:`alive`. The refresher holds views weakly, so
    the widget a view draws into must keep the view alive (``widget._coinrates_view = view``)
    while the view refers to the widget only weakly; when the widget is closed or collected, the
    view dies with it and the refresher forgets it.

    Args:
        fps: Redraws per second at most.
        always: Redraw at ``fps`` even when no new rows arrived (status bars, ages).
    """

    costly: bool = False
    """True for views whose redraw costs the browser a full re-render (charts): they share the refresher's
    :class:`~coinrates_nb.ui.throttle.Budget`. Text views (status bars, tables) are cheap and do not."""

    def __init__(self, fps: float = DEFAULT_FPS, *, always: bool = False) -> None:
        self.throttle = Throttle(fps)
        self.always = always
        self.drawn: Hashable = None
        self.redraws = 0
        self.errors = 0
        self.last_error: str | None = None
        self.lock = threading.RLock()
        self.refresher: Refresher | None = None

    @property
    @abc.abstractmethod
    def alive(self) -> bool:
        """False once the widget is closed or gone; the refresher then drops the view."""

    @property
    def visible(self) -> bool:
        """False while no browser view shows the widget (redraws are skipped, not lost)."""
        return True

    @abc.abstractmethod
    def draw(self, tick: Tick) -> None:
        """Update the widget from ``tick``; called with :attr:`lock` held."""

    def show_error(self, message: str | None) -> None:
        """Show ``message`` on the widget (``None`` clears it); by default errors are only logged."""
        return None

    def due(self, now: float, version: Hashable) -> bool:
        """Return True if this view should redraw at ``now`` for data ``version``."""
        return self.visible and self.throttle.due(now, changed=self.always or version != self.drawn)

    def invalidate(self) -> None:
        """Force a redraw at the next tick (e.g. after the user changed the window)."""
        self.drawn = None
        self.throttle.reset()
        if self.refresher is not None:
            self.refresher.wake()

    def run(self, tick: Tick, now: float, version: Hashable) -> bool:
        """Draw under the lock; on error, log, count and show it instead of raising. Return success."""
        with self.lock:
            try:
                self.draw(tick)
            except Exception as exc:  # noqa: BLE001 - top of a widget callback: never die silently
                self.errors += 1
                message = f"{type(exc).__name__}: {exc}"
                if message != self.last_error:
                    logger.error("redraw of %r failed: %s", self, message, exc_info=True)
                else:
                    logger.debug("redraw of %r failed again: %s", self, message)
                self.last_error = message
                self._safe_show_error(f"refresh error: {message}")
                ok = False
            else:
                self.redraws += 1
                if self.last_error is not None:
                    self.last_error = None
                    self._safe_show_error(None)
                ok = True
            finally:
                self.throttle.mark(now)
                self.drawn = version
        return ok

    def _safe_show_error(self, message: str | None) -> None:
        try:
            self.show_error(message)
        except Exception:  # noqa: BLE001 - showing the error must not hide it
            logger.exception("could not show an error on %r", self)

    def guard_incoming(self, widget: Any) -> None:
        """Serialise the widget's incoming browser messages with this view's redraws.

        The kernel's main thread handles comm messages from the browser (a zoom, Plotly's edit
        acknowledgements); in ``"thread"`` mode they would otherwise mutate the figure while the
        refresher does. Wrapping the comm's message callback with :attr:`lock` closes that race.
        """
        comm = getattr(widget, "comm", None)
        handler = getattr(widget, "_handle_msg", None)
        if comm is None or handler is None:
            return
        lock = self.lock

        def locked(msg: Any) -> None:
            with lock:
                handler(msg)

        comm.on_msg(locked)


# --------------------------------------------------------------------------------------- refresher


_REGISTRY: weakref.WeakValueDictionary[tuple[int, str], Refresher] = weakref.WeakValueDictionary()
_REGISTRY_LOCK = threading.Lock()


def _alive(ref: weakref.ReferenceType[View]) -> bool:
    view = ref()
    return view is not None and view.alive


def _kernel_loop() -> asyncio.AbstractEventLoop | None:
    """Return the event loop running in this thread (the kernel's, inside a cell), if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class Refresher:
    """Drives the views of one source: one snapshot per tick, at most the fastest view's fps.

    Use :meth:`for_source` so every view of a collector shares one refresher (and one thread).
    Views are held weakly; when none is left the thread ends by itself, so re-running a cell
    or closing a chart leaks nothing. A view that is hidden (no browser view shows it) is skipped.

    Args:
        source: The collector to read.
        mode: ``"thread"`` redraws on the refresher's thread; ``"loop"`` hands each tick to the
            event loop running where the refresher was created (see the module docstring).
        clock: Monotonic clock in seconds (injectable for tests).

    Raises:
        ConfigError: If ``mode`` is neither ``"thread"`` nor ``"loop"``.
    """

    def __init__(self, source: Source, mode: Mode = "thread", clock: Callable[[], float] = time.monotonic) -> None:
        mode = check_mode(mode)
        self.source = source
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        if mode == "loop":
            self.loop = _kernel_loop()
            if self.loop is None:
                logger.info("refresher: no running event loop here; redrawing from a thread instead")
                mode = "thread"
        self.mode: Mode = mode
        self.ticks = 0
        self.budget = Budget(CHART_BUDGET)
        """Redraws per second that this source's costly views (charts) share."""
        self.deferred = 0
        """Chart redraws that were due but waited for the budget."""
        self._waiting = False
        self._views: list[weakref.ReferenceType[View]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending = False  # loop mode: a tick is scheduled and has not run yet

    @classmethod
    def for_source(cls, source: Source, mode: Mode = "thread") -> Refresher:
        """Return the refresher shared by all views of ``source`` in ``mode``, creating it if needed."""
        key = (id(source), mode)
        with _REGISTRY_LOCK:
            refresher = _REGISTRY.get(key)
            if refresher is None or refresher.source is not source:
                refresher = cls(source, mode)
                _REGISTRY[key] = refresher
            return refresher

    # -- views ---------------------------------------------------------------------------

    def add(self, view: View) -> View:
        """Start driving ``view`` (held weakly) and start the thread if it is not running."""
        view.refresher = self
        with self._lock:
            self._views.append(weakref.ref(view, self._on_view_gone))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._thread_main, name="coinrates-refresh", daemon=True)
                self._thread.start()
                logger.debug("refresher started for %r (%s mode)", self.source, self.mode)
        self.wake()
        return view

    def discard(self, view: View) -> None:
        """Stop driving ``view``."""
        with self._lock:
            self._views = [ref for ref in self._views if ref() not in (None, view)]
        self.wake()

    def views(self) -> list[View]:
        """The live views, pruning the closed and collected ones."""
        with self._lock:
            pairs = [(ref, v) for ref in self._views if (v := ref()) is not None and v.alive]
            self._views = [ref for ref, _ in pairs]
            return [v for _, v in pairs]

    def _any_alive(self) -> bool:
        """True if some view is still alive (lock held; binds no view in the caller's frame)."""
        return any(_alive(ref) for ref in self._views)

    def _on_view_gone(self, _ref: weakref.ReferenceType[View]) -> None:
        self._wake.set()

    def wake(self) -> None:
        """Make the thread look at its views now (a view was added, closed or invalidated)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        """True while the refresher's thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Forget every view and end the thread; idempotent."""
        with self._lock:
            self._views = []
            thread = self._thread
        self.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end by itself (after the last view went away)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- ticking -------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Redraw every due view once from one shared snapshot; return how many redrew.

        Safe to call directly (tests, benchmarks); the thread calls it in ``"thread"`` mode and
        the kernel loop does in ``"loop"`` mode.
        """
        now = self.clock() if now is None else now
        self.ticks += 1
        views = self.views()
        if not views:
            return 0
        version = data_version(self.source.frame)
        tick: Tick | None = None
        drawn = 0
        charts = [view.throttle.fps for view in views if view.costly]
        self.budget.rate = max([CHART_BUDGET, *charts])  # a chart asked for more gets it: the budget binds many
        due = [view for view in views if view.due(now, version)]
        due.sort(key=lambda v: (v.costly, v.throttle.last if v.throttle.last is not None else -1.0))
        self._waiting = False
        for view in due:  # text views first, then charts, the one waiting longest first
            if view.costly and not self.budget.take(now):
                self.deferred += 1
                self._waiting = True  # look again as soon as the budget has a redraw, not an interval later
                continue
            tick = tick or Tick(self.source)
            if view.run(tick, now, version):
                drawn += 1
        return drawn

    def next_wait(self, now: float) -> float:
        """Seconds until the next look, clamped to [MIN_WAIT, MAX_WAIT].

        A view that may redraw already but had nothing new is polled again one interval later,
        so an idle refresher wakes ``fps`` times a second, not in a busy loop.
        """
        views = [v for v in self.views() if v.visible]
        waits = [v.throttle.wait(now) or v.throttle.interval for v in views]
        if any(v.costly for v in views):
            budget = self.budget.wait(now)
            waits = [max(w, budget) if v.costly else w for v, w in zip(views, waits, strict=True)]
            if self._waiting:  # a chart was due but the budget said wait: back when it has a redraw
                waits.append(budget)
        soonest = min(waits, default=MAX_WAIT)
        return min(MAX_WAIT, max(MIN_WAIT, soonest))

    def _thread_main(self) -> None:
        """Thread body: tick (or schedule a tick on the loop), sleep until the next due time, repeat."""
        me = threading.current_thread()
        try:
            while True:
                with self._lock:
                    if self._thread is not me:
                        return
                    if not self._any_alive():
                        self._views = []
                        self._thread = None
                        logger.debug("refresher for %r stopped: no views left", self.source)
                        return
                self._wake.clear()
                try:
                    if self.mode == "thread":
                        self.tick()
                    else:
                        self._schedule_on_loop()
                except Exception:  # noqa: BLE001 - top of the thread: never die silently
                    logger.exception("refresher tick failed")
                self._wake.wait(self.next_wait(self.clock()))
        finally:
            with self._lock:
                if self._thread is me:
                    self._thread = None

    def _schedule_on_loop(self) -> None:
        """Hand one tick to the kernel's loop unless one is already waiting there (coalescing)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            logger.warning("refresher: the event loop is gone; stopping")
            self.stop(timeout=0)
            return
        if self._pending:
            return
        self._pending = True
        try:
            loop.call_soon_threadsafe(self._tick_on_loop)
        except RuntimeError:  # loop closed between the check and the call
            self._pending = False
            self.stop(timeout=0)

    def _tick_on_loop(self) -> None:
        try:
            self.tick()
        except Exception:  # noqa: BLE001 - a loop callback must not raise into the kernel
            logger.exception("refresher tick failed on the event loop")
        finally:
            self._pending = False

    def __repr__(self) -> str:
        with self._lock:
            n = sum(1 for ref in self._views if ref() is not None)
        state = "running" if self.running else "stopped"
        return f"<Refresher {state} | {self.mode} | {n} view{'s' * (n != 1)} | {self.ticks:,} ticks>"
