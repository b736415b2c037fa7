"""The recorder: appends a stream to a Parquet dataset from a writer thread, never from the source's thread.

**Durability.** The source's thread only appends ``(batch, received_ns)`` to a queue (one
``deque.append`` under a lock held for O(1)); a writer thread drains it every
``flush_interval`` seconds (sooner when ``batch_rows`` are waiting) and publishes each flush
atomically: the file being filled is rewritten in full under a hidden temporary name, then
``os.replace``-d over its final name. So a crash at any instant leaves only complete files (the
previous version of the current file survives) plus at most one hidden ``.tmp``, and loses at
most the rows received since the last flush. A file is *rolled* (a new one started) once it
reaches ``max_file_rows``, ``max_file_bytes`` or ``max_file_age``; rewriting bounds the write
amplification to about half a file per flush, the price of losing at most one batch.
``stop()`` and interpreter exit (``atexit``) flush what is queued.

**Failures.** When a write fails (disk full, folder made read-only), the rows stay in memory
and the writer retries at its flush interval; :attr:`Recorder.status` says ``"failing"`` with
the error and the counters. The rows held in memory are bounded by ``max_backlog_rows``:
beyond it the oldest unwritten rows are dropped and counted (``rows_dropped``), so a disk that
stays full cannot exhaust memory. Nothing of this reaches the source: the collector keeps
streaming whatever happens to its recorder.

**Many writers, one location.** Any number of recorders — in one process, several processes
or several machines sharing a POSIX file system — may point at the same dataset: each writer
names its files ``part-<host>-<pid>-<uuid>-<seq>``, so no two ever touch the same file, and
readers see the union. Two recorders of the same pair store the update twice; ``load(...,
dedupe=True)`` keeps one. Object stores (S3, GCS) have no atomic rename and are not supported
as a target; copy finished files there instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pyarrow as pa

from .._listeners import Listener
from .._threads import BackgroundThread
from ..batch import RateBatch
from ..exceptions import ConfigError, RecordingError
from ..status import Status
from . import _parts
from .dataset import _NS_PER_DAY, _part_name, _partition_dir, _temp_name, _to_table, _writer_id

__all__ = ["RateListener", "RateSource", "Recorder", "RecorderStatus", "record"]

logger = logging.getLogger("coinrates_nb.store")

RateListener = Listener
"""Called with each batch of stored updates (columns) and their receive time (ns): the sources' one listener type."""

_TRIM_INTERVAL = 0.05
"""Shortest pause between two backlog trims while writes fail (seconds)."""

RecorderState = Literal["recording", "failing", "stopped"]
"""``"failing"`` while the last write attempt failed and rows wait in memory for the next."""


class RateSource(Protocol):
    """What a :class:`Recorder` records from: a :class:`~coinrates_nb.Collector` or a :class:`~coinrates_nb.store.Replay`."""

    def add_listener(self, listener: RateListener) -> Callable[[], None]:
        """Call ``listener(batch, received_ns)`` for each batch of stored updates; return its remover."""

    @property
    def status(self) -> Status:
        """The source's status; its ``source`` labels recorded rows."""


@dataclass(frozen=True)
class RecorderStatus:
    """A point-in-time view of a recorder: is it writing, and where are the rows it was given.

    ``rows_received == rows_written + rows_queued + rows_dropped`` at any instant.
    """

    state: RecorderState
    path: str
    source: str
    """The label written in each row's ``source`` column."""
    rows_received: int
    """Rows the source handed to the recorder."""
    rows_written: int
    """Rows published on disk."""
    rows_queued: int
    """Rows in memory, not yet on disk (waiting for the next flush, or for a failing disk)."""
    rows_dropped: int
    """Rows discarded because the backlog reached ``max_backlog_rows`` while writes failed."""
    files: int
    errors: int
    """Failed write attempts."""
    last_error: str | None
    """The most recent write error (kept after recovery; ``state`` says whether it is current)."""

    @property
    def ok(self) -> bool:
        """True unless the last write attempt failed."""
        return self.state != "failing"

    def summary(self) -> str:
        """One line for a status bar or a repr."""
        parts = [self.state, f"{self.rows_written:,} rows written", f"{self.rows_queued:,} queued"]
        if self.rows_dropped:
            parts.append(f"{self.rows_dropped:,} dropped")
        if self.state == "failing" and self.last_error:
            parts.append(f"error: {self.last_error}")
        return " | ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) for widgets and logs."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --------------------------------------------------------------------------- the recorder




class Recorder(BackgroundThread):
    """Appends every update of a stream to a hive-partitioned Parquet dataset, off the receiving thread.

    Create one with ``collector.record(path)`` or :func:`record`. The source's thread only
    queues each batch's columns; a daemon writer thread turns the queue into Arrow tables and
    publishes them (see the module docstring for the durability, failure and multi-writer
    rules). ``stop()`` is idempotent; the recorder is also a context manager.

    Args:
        source: A collector or replay (anything with ``add_listener`` and ``status``).
        path: Dataset root directory; created if missing.
        start: Start recording now (as ``cr.stream(start=...)``); ``False`` waits for ``start()``.
        flush_interval: Seconds between flushes: the most data a crash can lose, and the
            retry interval while writes fail.
        batch_rows: Queued rows that wake the writer before ``flush_interval`` is up.
        max_file_rows: Roll to a new file after this many rows.
        max_file_bytes: Roll to a new file once the current one is this large.
        max_file_age: Roll to a new file after this many seconds.
        max_backlog_rows: Most rows kept in memory while they cannot be written; the oldest
            beyond it are dropped and counted in ``status.rows_dropped`` (a busy source may
            exceed it by the rows of one trim interval, 50 ms, before the writer catches up).
        compression: Parquet codec (``"zstd"``, ``"snappy"``, ``None``...).
        fsync: Also ``fsync`` each file before publishing it, to survive power loss, not
            just a process crash.

    Raises:
        ConfigError: If a limit is not positive or the codec is unknown.
        RecordingError: If ``path`` cannot be created.
    """

    EXIT_ORDER = 2  # flushed after the sources stopped
    EXIT_TIMEOUT = 5.0

    def __init__(
        self,
        source: RateSource,
        path: str | os.PathLike[str],
        *,
        start: bool = True,
        flush_interval: float = 1.0,
        batch_rows: int = 10_000,
        max_file_rows: int = 200_000,
        max_file_bytes: int = 32 << 20,
        max_file_age: float = 600.0,
        max_backlog_rows: int = 1_000_000,
        compression: str | None = "zstd",
        fsync: bool = False,
    ) -> None:
        if not isinstance(start, bool):
            raise ConfigError(f"start must be True or False (start recording now), not {start!r}")
        limits = {"flush_interval": flush_interval, "batch_rows": batch_rows, "max_file_rows": max_file_rows,
                  "max_file_bytes": max_file_bytes, "max_file_age": max_file_age,
                  "max_backlog_rows": max_backlog_rows}
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, not {value!r}")
        if compression is not None and (not isinstance(compression, str) or not _codec_available(compression)):
            raise ConfigError(f"compression must be a Parquet codec available here ('zstd', 'snappy', 'gzip', "
                              f"'lz4', 'brotli') or None, not {compression!r}")
        self.source = source
        self.path = Path(path).absolute()
        self.flush_interval = float(flush_interval)
        self.batch_rows = int(batch_rows)
        self.max_file_rows = int(max_file_rows)
        self.max_file_bytes = int(max_file_bytes)
        self.max_file_age = float(max_file_age)
        self.max_backlog_rows = int(max_backlog_rows)
        self.compression = compression
        self.fsync = fsync
        self.writer_id = _writer_id()
        self.label = source.status.source
        # The queue and the row counters both threads change (queue lock, held only for O(1) work).
        self._queue: deque[tuple[RateBatch, int]] = deque()
        self._queue_lock = threading.Lock()
        self._queued_rows = 0
        self._unwritten_rows = 0  # rows drained into open files but not yet on disk
        self.rows_received = 0
        self.rows_dropped = 0
        self._warned_drop = False
        # Writer state (write lock).
        self._write_lock = threading.Lock()
        self._open: dict[int, _parts.OpenFile] = {}
        self._files: list[Path] = []
        self._seq = 0
        self._failure: Exception | None = None  # the current write error, None once a write succeeds
        self._next_retry = 0.0
        self._writing = False  # True while a write is in progress (the source may shed rows meanwhile)
        self.rows_written = 0
        self.flushes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.write_seconds = 0.0
        # Lifecycle (life lock).
        self._wake = threading.Event()
        self._life_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._remove_listener: Callable[[], None] | None = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create the recording directory {self.path}: {exc}") from exc
        _parts.sweep_temp(self.path)
        self._stop_at_exit()
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Recorder:
        """Attach to the source and start the writer thread; idempotent."""
        with self._life_lock:
            if self.running:
                return self
            # A fresh event per run: a writer still finishing an earlier stop() keeps its own, set.
            self._stopping = stopping = threading.Event()
            self._thread = threading.Thread(target=self._writer_main, args=(stopping,), name="coinrates-recorder",
                                            daemon=True)
            self._thread.start()
            self._remove_listener = self.source.add_listener(self._on_batch)
        logger.info("recording %s data to %s (writer %s)", self.label, self.path, self.writer_id)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Detach from the source, flush everything queued, and end the writer; idempotent.

        The lock is held only to take the thread and signal it; the join happens outside it,
        so a ``start()``, ``status`` or second ``stop()`` from another thread never waits on it.

        Raises:
            RecordingError: If the last rows could not be written (they stay queued, so a
                later ``flush()`` may retry).
        """
        with self._life_lock:
            remove, self._remove_listener = self._remove_listener, None
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stopping.set()
                self._wake.set()
        if remove is not None:
            remove()
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("recorder writer did not stop within %.1f s", timeout)
        self.flush()
        if thread is not None:
            logger.info("recording stopped: %s rows in %d file(s) under %s", f"{self.rows_written:,}",
                        len(self._files), self.path)

    # -- the hot path (source thread) ---------------------------------------------------------

    def _on_batch(self, rates: RateBatch, received_ns: int) -> None:
        """The source's listener: queue the batch (its columns, no per-row work); never blocks on I/O.

        Past ``max_backlog_rows`` it wakes the writer, which drops the oldest unwritten rows.
        While the writer is inside a write (which may hang on a sick disk) the source sheds
        the oldest queued rows itself, so memory stays bounded whatever the disk does.
        """
        n = len(rates)
        if n == 0:
            return
        dropped = 0
        with self._queue_lock:
            self._queue.append((rates, int(received_ns)))
            self.rows_received += n
            self._queued_rows = queued = self._queued_rows + n
            excess = queued + self._unwritten_rows - self.max_backlog_rows
            if excess > 0 and (self._writing or queued > self.max_backlog_rows):
                dropped = self._shed_queue(min(excess, queued))
        if dropped:
            self._note_dropped(dropped)
        if excess > 0 or (queued >= self.batch_rows and self._failure is None):  # failing: retry at the interval only
            self._wake.set()

    def _shed_queue(self, k: int) -> int:
        """Drop the ``k`` oldest queued rows (queue lock held); return how many were dropped."""
        queue, dropped = self._queue, 0
        while dropped < k and queue:
            rates, received_ns = queue.popleft()
            take = min(len(rates), k - dropped)
            if take < len(rates):
                queue.appendleft((rates.take(slice(take, None)), received_ns))
            dropped += take
        self._queued_rows -= dropped
        self.rows_dropped += dropped
        return dropped

    def _note_dropped(self, k: int) -> None:
        """Log the first drop at WARNING (the counter tells the rest)."""
        if not self._warned_drop:
            self._warned_drop = True
            logger.warning("recorder backlog for %s reached max_backlog_rows=%s (last error: %s): dropping the "
                           "oldest unwritten rows, %d so far; further drops are counted in status.rows_dropped",
                           self.path, f"{self.max_backlog_rows:,}", self.last_error or "none, the writer is busy",
                           self.rows_dropped)
        else:
            logger.debug("recorder dropped %d more rows (%d in total)", k, self.rows_dropped)

    # -- writing (writer thread, or the caller of flush/stop) ----------------------------------

    def flush(self) -> Recorder:
        """Write everything queued so far and publish it; returns when it is on disk.

        Raises:
            RecordingError: If the dataset could not be written (the rows stay in memory).
        """
        with self._write_lock:
            try:
                failure = self._flush_once(write=True)
            except Exception as exc:  # noqa: BLE001 - rows that cannot become a table (counted as dropped)
                raise RecordingError(f"could not convert the queued rows for {self.path}: {exc}") from exc
        if failure is not None:
            raise RecordingError(f"could not write to {self.path}: {failure}") from failure
        return self

    def _writer_main(self, stopping: threading.Event) -> None:
        """Thread body: flush every interval (or when woken) until stopped; never dies silently.

        While writes fail it attempts a write once per ``flush_interval``; woken in between
        (the backlog is over its bound), it only drains the queue and drops the oldest rows,
        at most every ``_TRIM_INTERVAL``.
        """
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stop = stopping.is_set()
            write = True
            try:
                with self._write_lock:
                    write = stop or self._failure is None or time.monotonic() + _TRIM_INTERVAL >= self._next_retry
                    self._flush_once(write=write)
            except Exception:  # noqa: BLE001 - top of the thread; _flush_once already reports I/O errors
                self.errors += 1
                logger.exception("recorder writer failed; retrying at the next flush")
            if stop:
                return
            if not write:
                stopping.wait(_TRIM_INTERVAL)  # a busy source wakes us per batch: trim in bulk, not per row

    def _flush_once(self, write: bool) -> Exception | None:
        """Drain the queue into the open files, publish each changed file, bound the backlog (write lock held).

        Returns the last write error instead of raising, so the writer thread keeps going and
        the rows stay in memory for the next attempt.
        """
        with self._queue_lock:
            items = list(self._queue)
            self._queue.clear()
            drained, self._queued_rows = self._queued_rows, 0
            self._unwritten_rows += drained
        now = time.monotonic()
        if items:
            try:
                table, times = _to_table(items, self.label)
            except Exception:
                with self._queue_lock:  # keep the counters true: these rows are gone
                    self._unwritten_rows -= drained
                    self.rows_dropped += drained
                raise
            days = times // _NS_PER_DAY
            unique_days = np.unique(days).tolist()
            for day in unique_days:
                part = table if len(unique_days) == 1 else table.filter(pa.array(days == day))
                (self._open.get(day) or self._new_file(day, now)).add(part)
        failure: Exception | None = None
        if write:
            self._writing = True
            try:
                failure = self._write_all(now)
            finally:
                self._writing = False
            if failure is None and self._failure is not None:
                logger.info("writes to %s recovered after %d failed attempt(s)", self.path, self.errors)
            self._failure = failure
            self._next_retry = now + self.flush_interval
        self._bound_backlog()
        return failure

    def _write_all(self, now: float) -> Exception | None:
        """Publish every open file with unwritten rows and roll the full ones; return the last error (write lock held)."""
        failure: Exception | None = None
        for day, current in sorted(self._open.items()):
            if current.unwritten:
                try:
                    self._write(current)
                except (OSError, pa.ArrowException) as exc:
                    failure = exc
                    self._note_failure(current, exc)
                    continue
            if (current.rows >= self.max_file_rows or current.size >= self.max_file_bytes
                    or now - current.opened_at >= self.max_file_age):
                del self._open[day]  # roll: the file is complete; the next rows start a new one
                logger.debug("rolled %s at %d rows, %d bytes", current.final.name, current.rows, current.size)
        return failure

    def _note_failure(self, current: _parts.OpenFile, exc: Exception) -> None:
        """Count a failed write; log the first of a run of failures at ERROR, the retries at DEBUG."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._failure is None:
            logger.error("could not write %s (%d rows kept in memory; retrying every %g s): %s", current.final,
                         current.unwritten, self.flush_interval, exc, exc_info=True)
        else:
            logger.debug("write of %s failed again: %s", current.final, exc)

    def _bound_backlog(self) -> None:
        """Drop the oldest unwritten rows beyond ``max_backlog_rows`` (write lock held).

        The rows are counted as dropped under the queue lock *before* they are cut from the
        open files, so the source thread never sees more rows in memory than there are.
        """
        with self._queue_lock:
            take = min(self._unwritten_rows + self._queued_rows - self.max_backlog_rows, self._unwritten_rows)
            if take <= 0:
                return
            self._unwritten_rows -= take
            self.rows_dropped += take
        dropped = 0
        for day in sorted(self._open):
            current = self._open[day]
            dropped += current.drop_oldest_unwritten(take - dropped)
            if current.rows == 0:
                del self._open[day]  # never written and now empty: no file to make
            if dropped >= take:
                break
        self._note_dropped(take)

    def _new_file(self, day: int, now: float) -> _parts.OpenFile:
        """Start a new file in the partition of ``day`` (write lock held)."""
        directory = _partition_dir(self.path, day)  # created by _write, where errors are retried
        name = _part_name(self.writer_id, self._seq)
        self._seq += 1
        current = _parts.OpenFile(final=directory / name, tmp=directory / _temp_name(name), opened_at=now)
        self._open[day] = current
        return current

    def _write(self, current: _parts.OpenFile) -> None:
        """Publish ``current`` and count it (write lock held)."""
        started = time.perf_counter()
        first = current.written_rows == 0
        added = current.write(self.compression, self.fsync)
        if first:
            self._files.append(current.final)
        self.rows_written += added
        with self._queue_lock:
            self._unwritten_rows -= added
        self.flushes += 1
        self.write_seconds += time.perf_counter() - started

    # -- reads ---------------------------------------------------------------------------------

    @property
    def status(self) -> RecorderStatus:
        """A typed snapshot: state, counters, and the last write error."""
        failing = self._failure is not None
        state: RecorderState = "failing" if failing else "recording" if self.running else "stopped"
        written = self.rows_written  # read before the others, so rows_queued is never negative
        with self._queue_lock:
            received, dropped = self.rows_received, self.rows_dropped
        return RecorderStatus(
            state=state,
            path=str(self.path),
            source=self.label,
            rows_received=received,
            rows_written=written,
            rows_queued=received - written - dropped,
            rows_dropped=dropped,
            files=len(self._files),
            errors=self.errors,
            last_error=self.last_error,
        )

    @property
    def error(self) -> Exception | None:
        """The current write error (``None`` while writes succeed); ``status.last_error`` is its text."""
        return self._failure

    @property
    def pending(self) -> int:
        """Rows received but not yet on disk (queued, or waiting for a failing disk)."""
        return self.status.rows_queued

    @property
    def files(self) -> tuple[Path, ...]:
        """Files this recorder has published, oldest first."""
        return tuple(self._files)

    def __repr__(self) -> str:
        s = self.status
        err = f" | {s.errors} error{'s' * (s.errors != 1)}" if s.errors else ""
        dropped = f" | {s.rows_dropped:,} dropped" if s.rows_dropped else ""
        return (f"<Recorder {s.state} | {self.label} | {self.path} | {s.rows_written:,} rows | "
                f"{s.files} file{'s' * (s.files != 1)} | {s.rows_queued:,} pending{dropped}{err}>")


def _codec_available(name: str) -> bool:
    """True if Parquet can write with codec ``name`` here (an unknown name would fail every flush)."""
    try:
        return bool(pa.Codec.is_available(name))
    except (ValueError, pa.ArrowException):
        return False


def record(source: RateSource, path: str | os.PathLike[str], **options: Any) -> Recorder:
    """Start recording ``source`` (a collector or replay) to the dataset at ``path``.

    Same as ``source.record(path, **options)``; see :class:`Recorder` for the options
    (``start=False`` creates it stopped).
    """
    return Recorder(source, path, **options)

