"""Replay: a recording played back as a Collector-like stream, at its recorded pace times ``speed``.

The replay thread walks the recording in arrival order and writes each due slice to a
:class:`~coinrates_nb.frame.RollingFrame` with ``frame.extend``, then tells the listeners one
:class:`~coinrates_nb.batch.RateBatch` per run of equal receive times (what the collector
stored together), so charts, analysis and recorders written for a live stream run on history
unchanged. Updates keep their recorded wire and receive times: the same input always gives the
same frame, at any speed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from .._badge import simulated_html
from .._display import LatestFrame
from .._inputs import filter_items, pair_list, span_ns, utc
from .._listeners import Listeners
from .._threads import BackgroundThread
from .._types import State, TimeNs
from .._views import FrameViews
from ..batch import RateBatch
from ..exceptions import ConfigError, RecordingError, WaitTimeoutError
from ..frame import RollingFrame
from ..protocol import Scope
from ..status import Status
from ._timeline import Timeline, select
from .dataset import _matches, load
from .recorder import Recorder

if TYPE_CHECKING:
    from tqdm.auto import tqdm as Tqdm

__all__ = ["Replay", "replay"]

logger = logging.getLogger("coinrates_nb.store")

_REPLAY_CHUNK: Final = 8_192
"""Rows a replay appends per step at most, so ``stop()`` and the progress bar stay responsive."""
_MAX_IDLE_WAIT: Final = 0.25
"""Longest a paced replay sleeps before re-checking its stop flag and clock."""
_RESUME_WAIT: Final = 10.0
"""Longest ``start()`` waits for the thread of an earlier ``stop()`` to leave."""



class Replay(FrameViews, Listeners, BackgroundThread):
    """A recording played back into a :class:`~coinrates_nb.frame.RollingFrame` on a daemon thread.

    It quacks like a :class:`~coinrates_nb.Collector`: ``frame``, ``df``, ``latest()``,
    ``wide()``, ``ohlc()``, ``status``, ``pairs``, ``subscribe()``, ``unsubscribe()``,
    ``add_listener()``, ``record()``, ``start()``/``stop()``, ``wait()``, and it is a context
    manager, so charts and analysis written for a live stream run on history unchanged.
    ``latest()`` measures ages on the replay clock. A recording of simulated data reports
    ``status.source == "simulated"``, so every chart of it carries the SIMULATED badge.

    Create one with :func:`replay`.

    Args:
        data: A dataset path (read with :func:`~coinrates_nb.store.load`) or a DataFrame shaped like ``load``'s.
        speed: Playback speed: ``10`` plays 10 s of recording per second, keeping the
            recorded gaps between receive times; ``None`` plays as fast as possible.
        start: Start playing now (as ``cr.stream(start=...)``); ``False`` waits for ``start()``.
        since, until: The wire-time range to play, ``since <= time < until`` (``load``'s
            ``start`` and ``end``); naive times are UTC.
        pairs: Pairs or asset ids to read (it only narrows what is read; the scope can widen later
            only within it).
        window, max_rows: Bounds of the frame, as for :func:`~coinrates_nb.stream`; by
            default the frame holds the whole replay.
        progress: Show a ``tqdm`` bar (notebook-aware) while it plays.
        gap_threshold: Silences longer than this show up in :attr:`gaps` (a duration: ``"10s"`` or seconds).

    Raises:
        ConfigError: If ``speed`` is not positive or ``None``, ``start`` is not a bool, or a
            time, duration or pair is malformed.
        RecordingError: If the dataset cannot be read.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | pd.DataFrame,
        *,
        speed: float | None = 1.0,
        start: bool = True,
        since: Any = None,
        until: Any = None,
        pairs: str | Iterable[str] | None = None,
        window: str | pd.Timedelta | None = None,
        max_rows: int | None = None,
        progress: bool = True,
        gap_threshold: Any = "10s",
    ) -> None:
        if not isinstance(start, bool):
            raise ConfigError(f"start must be True or False (start playing now), not {start!r}; "
                              "to play from a time, give since=")
        if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0):
            raise ConfigError(f"speed must be a positive number or None, not {speed!r}")
        threshold_ns = span_ns(gap_threshold, "gap_threshold", allow_none=False)
        first = None if since is None else utc(since, "since")
        after = None if until is None else utc(until, "until")
        if isinstance(data, pd.DataFrame):
            self.path: Path | None = None
            frame = select(data, None if first is None else int(first.as_unit("ns").value),
                           None if after is None else int(after.as_unit("ns").value),
                           None if pairs is None else filter_items(pairs, "pairs"))
        else:
            self.path = Path(data).absolute()
            frame = load(data, start=first, end=after, pairs=pairs)
        self._timeline = Timeline.from_frame(frame)
        self.speed = None if speed is None else float(speed)
        self.progress = progress
        self.gap_threshold = pd.Timedelta(threshold_ns, unit="ns")
        self.frame = RollingFrame(max_rows=max_rows if max_rows is not None else max(len(self._timeline), 1),
                                  window=window)
        self.done = threading.Event()
        """Set once every row has been played (not when merely stopped)."""
        self._scope = Scope(self._timeline.pair_names)
        self._mask = np.ones(len(self._timeline.pair_names), dtype=bool)
        self._pos = 0
        self._stored = 0
        self._state: State = "idle"
        self._last_error: str | None = None
        self._lag_ns: int | None = None
        self._max_lag_ns = 0
        self._clock: tuple[int, int] | None = None  # (wall perf_counter_ns, recorded ns) at (re)start
        self._run_started: float | None = None
        self._elapsed = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping: threading.Thread | None = None  # a thread stop() signalled and may still be joining
        self._bar: Tqdm | None = None
        self._stop_at_exit()
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Replay:
        """Start (or resume) playing on a daemon thread; idempotent, and a no-op once done."""
        previous = self._stopping
        if previous is not None and previous is not threading.current_thread():
            previous.join(_RESUME_WAIT)  # a stop() in flight: resume once its thread has left, so no row plays twice
            if previous.is_alive():
                raise RecordingError(f"cannot resume: the stopped replay thread is still busy after {_RESUME_WAIT:g} s")
        with self._lock:
            if self.running or self.done.is_set():
                return self
            if self._pos >= len(self._timeline):
                self._finish()
                return self
            if self.progress and self._bar is None:
                self._bar = self._make_bar()
            self._state = "connected"
            self._stop = stop = threading.Event()  # per run: an old thread keeps its own, set
            self._thread = threading.Thread(target=self._thread_main, args=(stop,), name="coinrates-replay",
                                            daemon=True)
            self._thread.start()
        logger.info("replay started: %s rows at %s", f"{len(self._timeline):,}",
                    "full speed" if self.speed is None else f"{self.speed:g}x")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Pause playing and join the thread; idempotent. ``start()`` resumes where it stopped.

        The lock is held only to take the thread and signal it; the join happens outside it.
        """
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stop.set()
                self._stopping = thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("replay thread did not stop within %.1f s", timeout)
        with self._lock:
            if self._stopping is thread and (thread is None or not thread.is_alive()):
                self._stopping = None
            if self._state == "connected":
                self._state = "stopped"
            if self._bar is not None and not self.done.is_set():
                self._bar.refresh()

    def restart(self) -> Replay:
        """Play again from the beginning into an emptied frame (same result as the first time)."""
        self.stop()
        with self._lock:
            self.frame.clear()
            self._pos = self._stored = 0
            self._lag_ns, self._max_lag_ns, self._elapsed = None, 0, 0.0
            self.done.clear()
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            self._state = "idle"
        return self.start()

    def join(self, timeout: float | None = None) -> Replay:
        """Block until every row has been played.

        Raises:
            WaitTimeoutError: If it is not done within ``timeout`` seconds (also a ``TimeoutError``).
            RecordingError: If the replay thread failed.
        """
        if not self.done.wait(timeout):
            self._raise_if_failed()
            raise WaitTimeoutError(f"replay not finished within {timeout} s ({self._pos:,}/{len(self._timeline):,} rows)")
        self._raise_if_failed()
        return self

    def wait(self, timeout: float = 30.0, rows: int = 1, pairs: Iterable[str] | None = None) -> Replay:
        """Block until each of ``pairs`` (default: the subscribed pairs) has ``rows`` rows in the frame.

        Same contract as :meth:`Collector.wait`, except that a replay which ends first raises
        at once instead of waiting for data that will never come.

        Raises:
            WaitTimeoutError: If the rows do not arrive within ``timeout`` (also a ``TimeoutError``).
            RecordingError: If the replay failed or ended without them.
            ConfigError: If ``pairs`` is malformed.
        """
        wanted = set(pair_list(pairs, "pairs")) if pairs is not None else {i for i in (self.pairs or ()) if "/" in i}
        deadline = time.monotonic() + timeout
        while True:
            finished = self.done.is_set()
            counts = self.frame.counts()
            if (all(counts.get(p, 0) >= rows for p in wanted) if wanted else len(self.frame) >= rows):
                return self
            self._raise_if_failed()
            missing = sorted(p for p in wanted if counts.get(p, 0) < rows) if wanted else []
            if finished:
                raise RecordingError(f"replay ended before {rows} row(s) of {missing or 'any pair'}")
            if time.monotonic() > deadline:
                raise WaitTimeoutError(f"no data for {missing or 'any pair'} within {timeout:g} s")
            self.done.wait(0.02)

    def _raise_if_failed(self) -> None:
        if self._state == "error":
            raise RecordingError(f"replay failed: {self._last_error}")

    # -- the replay thread ---------------------------------------------------------------------

    def _thread_main(self, stop: threading.Event) -> None:
        """Thread body: play rows on schedule until the end or ``stop()``; never dies silently."""
        timeline = self._timeline
        n = len(timeline)
        received = timeline.received
        wall0, rec0 = time.perf_counter_ns(), int(received[self._pos])
        self._clock = (wall0, rec0)
        self._run_started = started = time.monotonic()
        try:
            while self._pos < n and not stop.is_set():
                pos = self._pos
                if self.speed is None:
                    end = min(n, pos + _REPLAY_CHUNK)
                else:
                    elapsed_ns = time.perf_counter_ns() - wall0
                    due = rec0 + elapsed_ns * self.speed  # the recorded instant that is due now
                    end = min(int(np.searchsorted(received, due, side="right")), pos + _REPLAY_CHUNK)
                    if end <= pos:
                        wait_s = ((received[pos] - rec0) / self.speed - elapsed_ns) / 1e9
                        stop.wait(min(max(wait_s, 0.0), _MAX_IDLE_WAIT))
                        continue
                    self._lag_ns = lag = elapsed_ns - int((received[end - 1] - rec0) / self.speed)
                    self._max_lag_ns = max(self._max_lag_ns, lag)
                self._emit(pos, end)
            if self._pos >= n:
                self._finish()
        except Exception as exc:  # noqa: BLE001 - top of the thread
            logger.error("replay thread failed: %s", exc, exc_info=True)
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._state = "error"
            self.done.set()
        finally:
            self._elapsed += time.monotonic() - started
            self._run_started = None
            self._clock = None

    def _emit(self, pos: int, end: int) -> None:
        """Store rows ``[pos, end)`` that are in scope with one ``frame.extend``, then tell the listeners.

        Listeners get one batch per run of equal receive times: what the collector stored together.
        A run of rows of one origin (stream, history, healed) is one batch, so the origin is kept.
        """
        t = self._timeline
        keep = self._mask[t.code[pos:end]]
        sel: slice | npt.NDArray[np.intp] = slice(pos, end) if keep.all() else pos + np.flatnonzero(keep)
        kept = int(keep.sum())
        if kept:
            origin = t.origin[sel]
            runs = [0, *(np.flatnonzero(np.diff(origin)) + 1).tolist(), kept]
            rows = None if len(runs) == 2 else np.arange(pos, end) if isinstance(sel, slice) else sel
            for lo, hi in zip(runs[:-1], runs[1:], strict=True):
                part = sel if rows is None else rows[lo:hi]
                self._store(RateBatch(t.keys, t.key[part], t.time[part], t.rate[part], int(origin[lo])),
                            t.received[part])
        self._stored += kept
        self._pos = end
        if self._bar is not None:
            self._bar.update(end - pos)

    def _store(self, rates: RateBatch, received: npt.NDArray[np.int64]) -> None:
        """One ``frame.extend`` of rows of one origin, then the listeners, one batch per receive time."""
        self.frame.extend(rates, received)
        if not self._listeners:
            return
        n = len(rates)
        bounds = [0, *(np.flatnonzero(np.diff(received)) + 1).tolist(), n]
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            self._notify(rates if hi - lo == n else rates.take(slice(lo, hi)), int(received[lo]))

    def _finish(self) -> None:
        """Mark the replay done and close the progress bar."""
        self._state = "stopped"
        if self._bar is not None:
            self._bar.close()
        self.done.set()
        logger.info("replay finished: %s rows stored, max lag %.1f ms", f"{self._stored:,}", self._max_lag_ns / 1e6)

    def _make_bar(self) -> Tqdm | None:
        """A notebook-aware progress bar over the timeline, created on the caller's thread so it
        displays in the caller's cell."""
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            return None
        label = "replay" if self.speed is None else f"replay {self.speed:g}x"
        bar: Tqdm = tqdm(total=len(self._timeline), initial=self._pos, unit="rows", desc=label, leave=True,
                         mininterval=0.2)
        return bar

    # -- scope ---------------------------------------------------------------------------------

    def _set_scope(self, scope: Scope) -> None:
        items = scope.items
        names = self._timeline.pair_names
        chosen = set(names) if items is None else _matches(items, names)
        self._scope = scope
        self._mask = np.array([name in chosen for name in names], dtype=bool)  # replaced whole: thread-safe

    def subscribe(self, items: str | Iterable[str]) -> Replay:
        """Play these pairs (or asset ids) too, from the current position on."""
        self._set_scope(self._scope.add(filter_items(items, "items")))
        return self

    def unsubscribe(self, items: str | Iterable[str]) -> Replay:
        """Stop playing these pairs (or asset ids); the rest of the timeline is unchanged."""
        self._set_scope(self._scope.remove(filter_items(items, "items")))
        return self

    def set_pairs(self, items: str | Iterable[str] | None) -> Replay:
        """Replace the scope; ``None`` plays every pair of the recording."""
        self._set_scope(Scope(self._timeline.pair_names if items is None else filter_items(items, "items")))
        return self

    @property
    def pairs(self) -> tuple[str, ...] | None:
        """The current scope; it starts as every pair in the recording."""
        return self._scope.items

    def record(self, path: str | os.PathLike[str], **options: Any) -> Recorder:
        """Record what this replay plays to another dataset (e.g. a filtered or sped-up copy)."""
        return Recorder(self, path, **options)

    # -- reads -----------------------------------------------------------------------------------

    @property
    def now_ns(self) -> TimeNs:
        """The replay clock: the recorded receive time playing now (the last played, when idle)."""
        t = self._timeline
        if len(t) == 0:
            return 0
        clock = self._clock
        last = int(t.received[max(self._pos - 1, 0)])
        if clock is None or self.speed is None:
            return last
        wall0, rec0 = clock
        return max(last, min(int(rec0 + (time.perf_counter_ns() - wall0) * self.speed), int(t.received[-1])))

    def latest(self) -> pd.DataFrame:
        """One row per pair: newest rate, its time and its age on the replay clock (shown as a readable table)."""
        return LatestFrame(self.frame.latest(now_ns=self.now_ns))

    @property
    def gaps(self) -> pd.DataFrame:
        """Recorded silences longer than ``gap_threshold`` per pair, shaped like ``Collector.gaps``."""
        from ..analysis import gaps

        out = gaps(self.df, self.gap_threshold)
        out.insert(3, "reason", "silence")
        return out[["pair", "start", "end", "reason", "duration"]]

    @property
    def sources(self) -> tuple[str, ...]:
        """Where the recorded rows came from (``"simulated"``, ``"live"``)."""
        return self._timeline.sources

    @property
    def simulated(self) -> bool:
        """True when every recorded row came from the simulator (so the replay is labelled SIMULATED)."""
        return self._timeline.sources == ("simulated",)

    @property
    def lag_ms(self) -> float | None:
        """How far playback trails its schedule, in ms, at the last step (``None`` unpaced)."""
        return None if self._lag_ns is None else self._lag_ns / 1e6

    @property
    def max_lag_ms(self) -> float:
        """The worst lag behind schedule so far, in ms."""
        return self._max_lag_ns / 1e6

    @property
    def status(self) -> Status:
        """A typed snapshot shaped like a collector's.

        ``source`` is ``"simulated"`` when every recorded row is simulated (so charts show the
        SIMULATED badge), else ``"replay"``; ``url`` is the dataset path. ``messages`` counts
        timeline rows played, ``rates`` those in scope (stored), ``lag_ms`` how far playback
        trails its schedule, and ``stale_pairs`` the pairs silent for over ``gap_threshold``
        on the replay clock. ``state`` is ``"connected"`` while playing.
        """
        now = self.now_ns
        latest = self.frame.latest(now_ns=now)
        stale = tuple(sorted(str(p) for p, age in latest["age"].items() if age > self.gap_threshold))
        run_started = self._run_started
        elapsed = self._elapsed + (0.0 if run_started is None else time.monotonic() - run_started)
        return Status(
            state=self._state,
            source="simulated" if self.simulated else "replay",
            url=None if self.path is None else str(self.path),
            scope=self.pairs,
            messages=self._pos,
            rates=self._stored,
            msgs_per_s=self._stored / elapsed if elapsed > 0 else 0.0,
            heartbeats=0,
            unknown=0,
            rejected={},
            duplicates=0,
            connections=0,
            reconnects=0,
            server_errors=0,
            last_error=self._last_error,
            lag_ms=self.lag_ms,
            stale_pairs=stale,
            rows=len(self.frame),
            uptime_s=elapsed,
            replay=True,
        )

    def __len__(self) -> int:
        """Rows in the timeline (all pairs)."""
        return len(self._timeline)

    def __repr__(self) -> str:
        n = len(self._timeline)
        pct = 100.0 * self._pos / n if n else 100.0
        state: str = "done" if self.done.is_set() and self._state != "error" else self._state
        state = "playing" if state == "connected" else state
        speed = "max speed" if self.speed is None else f"{self.speed:g}x"
        what = "+".join(s.upper() if s == "simulated" else s for s in self.sources) or "recorded"
        scope = len(self.pairs or ())
        return (f"<Replay {state} | {what} data | {speed} | {scope} pairs | {self._pos:,}/{n:,} rows ({pct:.0f}%) | "
                f"{len(self.frame):,} in frame>")

    def _repr_html_(self) -> str:
        from html import escape

        return f"<div>{simulated_html('simulated' in self.sources)}<code>{escape(repr(self))}</code></div>"


def replay(
    data: str | os.PathLike[str] | pd.DataFrame,
    speed: float | None = 1.0,
    *,
    start: bool = True,
    since: Any = None,
    until: Any = None,
    pairs: str | Iterable[str] | None = None,
    window: str | pd.Timedelta | None = None,
    max_rows: int | None = None,
    progress: bool = True,
    **options: Any,
) -> Replay:
    """Play a recording back as a Collector-like stream, ``speed`` times faster than it was recorded.

    ``speed=None`` plays as fast as possible. Returns at once; the replay runs on a daemon
    thread (``replay.done.wait()`` or ``replay.join()`` to block until the end);
    ``start=False`` returns it stopped, so listeners and charts can attach first. See
    :class:`Replay` for the arguments.
    """
    return Replay(data, speed=speed, start=start, since=since, until=until, pairs=pairs, window=window,
                  max_rows=max_rows, progress=progress, **options)

