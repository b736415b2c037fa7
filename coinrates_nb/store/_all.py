"""Record a stream to a Parquet dataset, load its history, and replay it at any speed.

Three verbs over one on-disk format::

    rec = rates.record("data/rates")                 # Recorder: appends while streaming; rec.stop()
    cr.load("data/rates", start=..., end=..., pairs=[...])   # DataFrame of recorded history
    replay = cr.replay("data/rates", speed=10)       # Replay: a Collector-like stream fed from disk

**The dataset** is plain hive-partitioned Parquet, so DuckDB, Polars, Dask and Spark read it
directly (``read_parquet('data/rates/**/*.parquet', hive_partitioning=true)``)::

    data/rates/
      date=2026-11-24/                       # UTC date of the wire time
        part-<host>-<pid>-<uuid>-00000.parquet
        .part-<host>-<pid>-<uuid>-00001.parquet.tmp   # being written: every reader skips it

Columns (:data:`SCHEMA`): ``time`` (the wire time, ``timestamp[ns, UTC]``, all 7 digits),
``received_at`` (this machine's receive time, same type), ``pair``, ``base``, ``quote``,
``rate``, ``rate_type`` and ``source`` (``"simulated"`` or ``"live"``). Nothing else is
written: no URL, no settings, and never the API key.

**Durability.** The collector thread only appends ``(update, received_ns)`` to a queue (one
``deque.append``); a writer thread drains it every ``flush_interval`` seconds (sooner when
``batch_rows`` are waiting) and publishes each flush atomically: the file being filled is
rewritten in full under a hidden temporary name, then ``os.replace``-d over its final name.
So a crash at any instant leaves only complete files (the previous version of the current
file survives) plus at most one hidden ``.tmp``, and loses at most the rows received since the
last flush. A file is *rolled* (a new one started) once it reaches ``max_file_rows``,
``max_file_bytes`` or ``max_file_age``; rewriting bounds the write amplification to about
half a file per flush, the price of losing at most one batch. ``stop()`` and interpreter exit
(``atexit``) flush what is queued.

**Many writers, one location.** Any number of recorders — in one process, several processes
or several machines sharing a POSIX file system — may point at the same dataset: each writer
names its files ``part-<host>-<pid>-<uuid>-<seq>``, so no two ever touch the same file, and
readers see the union. Two recorders of the same pair store the update twice; ``load(...,
dedupe=True)`` keeps one. Object stores (S3, GCS) have no atomic rename and are not supported
as a target; copy finished files there instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .._types import Pair, State, TimeNs
from ..exceptions import ConfigError, RecordingError
from ..frame import RollingFrame
from ..messages import ExchangeRate
from ..protocol import Scope, normalize_items
from ..status import Status

if TYPE_CHECKING:
    from tqdm.auto import tqdm as Tqdm

__all__ = ["SCHEMA", "RateSource", "Recorder", "Replay", "load", "record", "replay"]

logger = logging.getLogger("coinrates_nb.store")

_UTC_NS: Final = pa.timestamp("ns", tz="UTC")

SCHEMA: Final = pa.schema(
    [
        pa.field("time", _UTC_NS, nullable=False),
        pa.field("received_at", _UTC_NS, nullable=False),
        pa.field("pair", pa.string(), nullable=False),
        pa.field("base", pa.string(), nullable=False),
        pa.field("quote", pa.string(), nullable=False),
        pa.field("rate", pa.float64(), nullable=False),
        pa.field("rate_type", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
    ],
    metadata={"coinrates_nb.format": "1"},
)
"""Columns of every recorded file; the hive ``date`` partition lives in the directory name."""

PARTITION: Final = "date"
"""Hive partition key: the UTC date of the wire ``time``, as ``date=YYYY-MM-DD``."""

_NS_PER_DAY: Final = 86_400 * 1_000_000_000
_STRING_COLUMNS: Final = ("pair", "base", "quote", "rate_type", "source")
_REPLAY_CHUNK: Final = 8_192
"""Rows a replay appends per step at most, so ``stop()`` and the progress bar stay responsive."""
_MAX_IDLE_WAIT: Final = 0.25
"""Longest a paced replay sleeps before re-checking its stop flag and clock."""

RateListener = Callable[[ExchangeRate, int], None]


class RateSource(Protocol):
    """What a :class:`Recorder` records from: a :class:`~coinrates_nb.Collector` or a :class:`Replay`."""

    def add_listener(self, listener: RateListener) -> Callable[[], None]:
        """Call ``listener(update, received_ns)`` for each stored update; return its remover."""

    @property
    def status(self) -> Status:
        """The source's status; its ``source`` labels recorded rows."""


# --------------------------------------------------------------------------- file naming


def _safe(text: str) -> str:
    """Keep a host name usable in a file name that every engine parses (no ``=``, ``/``, spaces)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("._") or "host"


def _writer_id() -> str:
    """A name no other writer uses: ``<host>-<pid>-<uuid8>``."""
    return f"{_safe(socket.gethostname())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _date_of(day: int) -> str:
    """``YYYY-MM-DD`` for a day number since the epoch."""
    return str(np.datetime64(day, "D"))


def _publish(tmp: Path, final: Path) -> None:
    """Make a fully written temporary file visible under its final name, atomically.

    A module-level seam so tests can simulate a crash between the write and the rename.
    """
    os.replace(tmp, final)


def _sweep_temp(root: Path) -> int:
    """Delete temporaries left by dead writers on this host; return how many were removed.

    Readers ignore them anyway; this only reclaims space. Files of live or remote writers are
    never touched, because their pid cannot be checked from here.
    """
    host = _safe(socket.gethostname())
    pattern = re.compile(rf"^\.part-{re.escape(host)}-(\d+)-[0-9a-f]{{8}}-\d+\.parquet\.tmp$")
    removed = 0
    for tmp in root.glob(f"{PARTITION}=*/.part-*.tmp"):
        match = pattern.match(tmp.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:  # another sweeper won, or no permission: harmless
            continue
    if removed:
        logger.info("removed %d temporary file(s) left by crashed writers under %s", removed, root)
    return removed


def _pid_alive(pid: int) -> bool:
    """True if a process with ``pid`` exists on this host (or we cannot tell)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM), or unknown: leave its files alone
        return True
    return True


# --------------------------------------------------------------------------- recorder


@dataclass
class _OpenFile:
    """The file currently being filled for one date partition, with all its rows in memory."""

    final: Path
    tmp: Path
    opened_at: float
    tables: list[pa.Table] = field(default_factory=list)
    rows: int = 0
    written_rows: int = 0
    size: int = 0
    dirty: bool = False


_RECORDERS: weakref.WeakSet[Recorder] = weakref.WeakSet()


class Recorder:
    """Appends every update of a stream to a hive-partitioned Parquet dataset, off the receiving thread.

    Create one with ``collector.record(path)`` or :func:`record`. The source's thread only
    queues each update; a daemon writer thread turns the queue into Arrow batches and
    publishes them (see the module docstring for the durability and multi-writer rules).
    ``stop()`` is idempotent; the recorder is also a context manager.

    Args:
        source: A collector or replay (anything with ``add_listener`` and ``status``).
        path: Dataset root directory; created if missing.
        flush_interval: Seconds between flushes: the most data a crash can lose.
        batch_rows: Queued rows that wake the writer before ``flush_interval`` is up.
        max_file_rows: Roll to a new file after this many rows.
        max_file_bytes: Roll to a new file once the current one is this large.
        max_file_age: Roll to a new file after this many seconds.
        compression: Parquet codec (``"zstd"``, ``"snappy"``, ``None``...).
        fsync: Also ``fsync`` each file before publishing it, to survive power loss, not
            just a process crash.
        start: Start recording at once.

    Raises:
        ConfigError: If a limit is not positive.
        RecordingError: If ``path`` cannot be created.
    """

    def __init__(
        self,
        source: RateSource,
        path: str | os.PathLike[str],
        *,
        flush_interval: float = 1.0,
        batch_rows: int = 10_000,
        max_file_rows: int = 200_000,
        max_file_bytes: int = 32 << 20,
        max_file_age: float = 600.0,
        compression: str | None = "zstd",
        fsync: bool = False,
        start: bool = True,
    ) -> None:
        limits = {"flush_interval": flush_interval, "batch_rows": batch_rows, "max_file_rows": max_file_rows,
                  "max_file_bytes": max_file_bytes, "max_file_age": max_file_age}
        for name, value in limits.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a positive number, not {value!r}")
        self.source = source
        self.path = Path(path).absolute()
        self.flush_interval = float(flush_interval)
        self.batch_rows = int(batch_rows)
        self.max_file_rows = int(max_file_rows)
        self.max_file_bytes = int(max_file_bytes)
        self.max_file_age = float(max_file_age)
        self.compression = compression
        self.fsync = fsync
        self.writer_id = _writer_id()
        self.label = source.status.source
        self._queue: deque[tuple[ExchangeRate, int]] = deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._write_lock = threading.Lock()
        self._life_lock = threading.Lock()
        self._open: dict[int, _OpenFile] = {}
        self._files: list[Path] = []
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._remove_listener: Callable[[], None] | None = None
        self.rows_received = 0
        self.rows_written = 0
        self.flushes = 0
        self.errors = 0
        self.last_error: str | None = None
        self.write_seconds = 0.0
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RecordingError(f"cannot create the recording directory {self.path}: {exc}") from exc
        _sweep_temp(self.path)
        _RECORDERS.add(self)
        if start:
            self.start()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Recorder:
        """Attach to the source and start the writer thread; idempotent."""
        with self._life_lock:
            if self.running:
                return self
            self._stopping.clear()
            self._thread = threading.Thread(target=self._writer_main, name="coinrates-recorder", daemon=True)
            self._thread.start()
            self._remove_listener = self.source.add_listener(self.append)
        logger.info("recording %s data to %s (writer %s)", self.label, self.path, self.writer_id)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Detach from the source, flush everything queued, and end the writer; idempotent.

        Raises:
            RecordingError: If the last rows could not be written (they stay queued, so a
                later ``flush()`` may retry).
        """
        with self._life_lock:
            if self._remove_listener is not None:
                self._remove_listener()
                self._remove_listener = None
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stopping.set()
                self._wake.set()
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("recorder writer did not stop within %.1f s", timeout)
        self.flush()
        if thread is None:
            return
        logger.info("recording stopped: %s rows in %d file(s) under %s", f"{self.rows_written:,}",
                    len(self._files), self.path)

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the writer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # -- the hot path (source thread) ---------------------------------------------------------

    def append(self, update: ExchangeRate, received_ns: int) -> None:
        """Queue one update for the writer: O(1), no I/O, safe from any thread."""
        queue = self._queue
        queue.append((update, received_ns))
        if len(queue) >= self.batch_rows:
            self._wake.set()

    # -- writing (writer thread, or the caller of flush/stop) ----------------------------------

    def flush(self) -> Recorder:
        """Write everything queued so far and publish it; returns when it is on disk.

        Raises:
            RecordingError: If the dataset could not be written.
        """
        with self._write_lock:
            failure = self._flush_once()
        if failure is not None:
            raise RecordingError(f"could not write to {self.path}: {failure}") from failure
        return self

    def _writer_main(self) -> None:
        """Thread body: flush every interval (or when woken) until stopped; never dies silently."""
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                with self._write_lock:
                    self._flush_once()
            except Exception:  # noqa: BLE001 - top of the thread; _flush_once already reports I/O errors
                self.errors += 1
                logger.exception("recorder writer failed; retrying at the next flush")
            if self._stopping.is_set():
                return

    def _flush_once(self) -> Exception | None:
        """Drain the queue into the open files and publish each changed file (write lock held).

        Returns the last write error instead of raising, so the writer thread keeps going and
        the rows stay in memory for the next attempt.
        """
        queue = self._queue
        items = [queue.popleft() for _ in range(len(queue))]
        now = time.monotonic()
        if items:
            table, times = _to_table(items, self.label)
            self.rows_received += len(items)
            days = times // _NS_PER_DAY
            unique_days = np.unique(days).tolist()
            for day in unique_days:
                part = table if len(unique_days) == 1 else table.filter(pa.array(days == day))
                current = self._open.get(day) or self._new_file(day, now)
                current.tables.append(part)
                current.rows += part.num_rows
                current.dirty = True
        failure: Exception | None = None
        for day, current in list(self._open.items()):
            if current.dirty:
                try:
                    self._write(current)
                except (OSError, pa.ArrowException) as exc:
                    failure = exc
                    self.errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    logger.error("could not write %s (%d rows kept for retry): %s", current.final,
                                 current.rows, exc, exc_info=True)
                    continue
            if (current.rows >= self.max_file_rows or current.size >= self.max_file_bytes
                    or now - current.opened_at >= self.max_file_age) and not current.dirty:
                del self._open[day]  # roll: the file is complete; the next rows start a new one
                logger.debug("rolled %s at %d rows, %d bytes", current.final.name, current.rows, current.size)
        return failure

    def _new_file(self, day: int, now: float) -> _OpenFile:
        """Start a new file in the partition of ``day`` (write lock held)."""
        directory = self.path / f"{PARTITION}={_date_of(day)}"  # created by _write, where errors are retried
        name = f"part-{self.writer_id}-{self._seq:05d}.parquet"
        self._seq += 1
        current = _OpenFile(final=directory / name, tmp=directory / f".{name}.tmp", opened_at=now)
        self._open[day] = current
        return current

    def _write(self, current: _OpenFile) -> None:
        """Rewrite ``current`` in full under its temporary name, then publish it atomically."""
        started = time.perf_counter()
        table = pa.concat_tables(current.tables)
        current.final.parent.mkdir(parents=True, exist_ok=True)
        with open(current.tmp, "wb") as sink:
            pq.write_table(table, sink, compression=self.compression)
            if self.fsync:
                sink.flush()
                os.fsync(sink.fileno())
        _publish(current.tmp, current.final)
        if self.fsync:
            _fsync_dir(current.final.parent)
        current.tables = [table]
        current.size = current.final.stat().st_size
        if current.written_rows == 0:
            self._files.append(current.final)
        self.rows_written += current.rows - current.written_rows
        current.written_rows = current.rows
        current.dirty = False
        self.flushes += 1
        self.write_seconds += time.perf_counter() - started

    # -- reads ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Updates queued but not yet handed to the writer."""
        return len(self._queue)

    @property
    def files(self) -> tuple[Path, ...]:
        """Files this recorder has published, oldest first."""
        return tuple(self._files)

    def __repr__(self) -> str:
        state = "recording" if self.running else "stopped"
        err = f" | {self.errors} error{'s' * (self.errors != 1)}" if self.errors else ""
        return (f"<Recorder {state} | {self.label} | {self.path} | {self.rows_written:,} rows | "
                f"{len(self._files)} file{'s' * (len(self._files) != 1)} | {self.pending:,} pending{err}>")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by syncing its directory (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_table(items: Sequence[tuple[ExchangeRate, int]], label: str) -> tuple[pa.Table, npt.NDArray[np.int64]]:
    """Turn queued ``(update, received_ns)`` pairs into one Arrow table of :data:`SCHEMA` (and its wire times)."""
    n = len(items)
    times = np.fromiter((u.time_ns for u, _ in items), dtype=np.int64, count=n)
    received = np.fromiter((r for _, r in items), dtype=np.int64, count=n)
    rates = np.fromiter((u.rate for u, _ in items), dtype=np.float64, count=n)
    base = pa.array([u.base for u, _ in items], pa.string())
    quote = pa.array([u.quote for u, _ in items], pa.string())
    table = pa.Table.from_arrays(
        [
            pa.array(times, _UTC_NS),
            pa.array(received, _UTC_NS),
            pc.binary_join_element_wise(base, quote, "/"),
            base,
            quote,
            pa.array(rates, pa.float64()),
            pa.array([u.rate_type for u, _ in items], pa.string()),
            pa.array([label], pa.string()).take(pa.array(np.zeros(n, dtype=np.int32))),
        ],
        schema=SCHEMA,
    )
    return table, times


def record(source: RateSource, path: str | os.PathLike[str], **options: Any) -> Recorder:
    """Start recording ``source`` (a collector or replay) to the dataset at ``path``.

    Same as ``source.record(path, **options)``; see :class:`Recorder` for the options.
    """
    return Recorder(source, path, **options)


@atexit.register
def _flush_all() -> None:
    """Interpreter exit: flush every live recorder, so only a hard crash can lose a batch."""
    for recorder in list(_RECORDERS):
        try:
            recorder.stop(timeout=5.0)
        except Exception:  # noqa: BLE001 - interpreter exit: log and go on with the others
            logger.exception("could not flush %r at exit", recorder)
    for replay_ in list(_REPLAYS):
        try:
            replay_.stop(timeout=2.0)
        except Exception:  # noqa: BLE001 - interpreter exit
            logger.debug("could not stop %r at exit", replay_, exc_info=True)


# --------------------------------------------------------------------------- load


def _to_ns(value: Any, name: str) -> TimeNs | None:
    """Turn anything ``pd.Timestamp`` accepts into UTC nanoseconds (naive means UTC)."""
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a time, not {value!r}") from exc
    if stamp is pd.NaT:
        raise ConfigError(f"{name} must be a time, not {value!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.as_unit("ns").value)


def _matches(items: Iterable[str], pairs: Iterable[str]) -> set[str]:
    """The ``pairs`` a filter selects: a ``BASE/QUOTE`` item matches that pair, an asset id any pair with it."""
    wanted = set(items)
    return {p for p in pairs if p in wanted or p.split("/", 1)[0] in wanted or p.split("/", 1)[-1] in wanted}


def _dataset_files(root: Path, start_ns: TimeNs | None, end_ns: TimeNs | None) -> list[Path]:
    """Published files under ``root`` whose date partition can hold rows in ``[start, end)``.

    Hidden (``.``) and ``_``-prefixed names are skipped, as Spark, Arrow and Hive do, so
    temporaries and markers (``_SUCCESS``) never reach a reader.
    """
    first = None if start_ns is None else _date_of(start_ns // _NS_PER_DAY)
    last = None if end_ns is None else _date_of((end_ns - 1) // _NS_PER_DAY)
    files = []
    for file in sorted(root.rglob("*.parquet")):
        relative = file.relative_to(root).parts
        if any(part.startswith((".", "_")) for part in relative):
            continue
        dates = [part.split("=", 1)[1] for part in relative[:-1] if part.startswith(f"{PARTITION}=")]
        if dates and ((first is not None and dates[0] < first) or (last is not None and dates[0] > last)):
            continue
        files.append(file)
    return files


def load(
    path: str | os.PathLike[str],
    start: Any = None,
    end: Any = None,
    pairs: str | Iterable[str] | None = None,
    *,
    dedupe: bool = False,
) -> pd.DataFrame:
    """Read recorded history as a DataFrame shaped like ``collector.df``, plus a ``source`` column.

    The index is the wire time (``DatetimeIndex`` named ``time``, UTC, 100 ns precision),
    sorted, with ties in receive order; columns are ``pair``, ``base``, ``quote``,
    ``rate_type``, ``source`` (categorical), ``rate`` and ``received_at``. Date partitions
    outside the range are never opened, and the time and pair filters are pushed into the
    Parquet scan. Files being written (hidden ``.tmp`` names) are ignored, so it is safe to
    load while recorders are running.

    Args:
        path: Dataset root directory.
        start: Keep rows with ``time >= start`` (anything ``pd.Timestamp`` accepts; naive is UTC).
        end: Keep rows with ``time < end``: half-open, so consecutive ranges never overlap.
        pairs: Pairs (``"BTC/USD"``) or asset ids (``"BTC"``: any pair with it); ``None`` for all.
        dedupe: Drop repeated updates (same time, pair, rate and rate type), as two recorders
            of one pair produce; the first received is kept.

    Raises:
        RecordingError: If ``path`` does not exist or a file cannot be read.
        ConfigError: If ``start``/``end`` are not times or ``pairs`` is malformed.
    """
    root = Path(path)
    if not root.is_dir():
        raise RecordingError(f"no recording at {root}: not a directory")
    start_ns, end_ns = _to_ns(start, "start"), _to_ns(end, "end")
    files = _dataset_files(root, start_ns, end_ns)
    expr: Any = None

    def both(condition: Any) -> None:
        nonlocal expr
        expr = condition if expr is None else expr & condition

    if start_ns is not None:
        both(ds.field("time") >= pa.scalar(start_ns, _UTC_NS))
    if end_ns is not None:
        both(ds.field("time") < pa.scalar(end_ns, _UTC_NS))
    if pairs is not None:
        items = normalize_items(pairs)
        chosen = [i for i in items if "/" in i]
        assets = [i for i in items if "/" not in i]
        chosen_set, asset_set = pa.array(chosen, pa.string()), pa.array(assets, pa.string())
        both(ds.field("pair").isin(chosen_set) | ds.field("base").isin(asset_set) | ds.field("quote").isin(asset_set))
    try:
        if files:
            table = ds.dataset([str(f) for f in files], schema=SCHEMA, format="parquet").to_table(filter=expr)
        else:
            table = SCHEMA.empty_table()
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(f"cannot read the recording at {root}: {exc}") from exc
    frame = _to_frame(table)
    if dedupe and len(frame):
        keys = pd.DataFrame({"time": frame.index.asi8, "pair": frame["pair"].cat.codes.to_numpy(),
                             "rate": frame["rate"].to_numpy(), "type": frame["rate_type"].cat.codes.to_numpy()})
        frame = frame[~keys.duplicated().to_numpy()]
    logger.debug("loaded %d rows from %d file(s) under %s", len(frame), len(files), root)
    return frame


def _to_frame(table: pa.Table) -> pd.DataFrame:
    """Sort an Arrow table of :data:`SCHEMA` and convert it to the snapshot-shaped DataFrame."""
    table = table.select(SCHEMA.names).sort_by([("time", "ascending"), ("received_at", "ascending")])
    for name in _STRING_COLUMNS:
        index = table.schema.get_field_index(name)
        table = table.set_column(index, name, pc.dictionary_encode(table[name]))
    frame = table.to_pandas()
    frame = frame.set_index("time")
    frame.index = pd.DatetimeIndex(frame.index).as_unit("ns")
    frame["received_at"] = pd.DatetimeIndex(frame["received_at"]).as_unit("ns")
    for name in _STRING_COLUMNS:
        if not isinstance(frame[name].dtype, pd.CategoricalDtype):  # empty tables come back as object
            frame[name] = frame[name].astype("category")
    return frame[["pair", "base", "quote", "rate", "rate_type", "received_at", "source"]]


# --------------------------------------------------------------------------- replay


_REPLAYS: weakref.WeakSet[Replay] = weakref.WeakSet()


@dataclass(frozen=True)
class _Timeline:
    """A recording as arrays in arrival order: what the replay thread walks through."""

    time: npt.NDArray[np.int64]
    received: npt.NDArray[np.int64]
    code: npt.NDArray[np.intp]
    rate: npt.NDArray[np.float64]
    rate_type: npt.NDArray[np.object_]
    pair_names: tuple[Pair, ...]
    sources: tuple[str, ...]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> _Timeline:
        """Build from a DataFrame with a ``time`` index (or column), ``pair`` and ``rate``.

        ``received_at`` paces the replay; without it the wire time does. ``rate_type`` defaults
        to ``"UNSPECIFIED"``.
        """
        if "time" in frame.columns:
            frame = frame.set_index("time")
        missing = {"pair", "rate"} - set(frame.columns)
        if missing or not isinstance(frame.index, pd.DatetimeIndex):
            raise ConfigError(f"a replay needs a DatetimeIndex 'time' and columns pair, rate; missing {sorted(missing)}")
        index = frame.index if frame.index.tz is not None else frame.index.tz_localize("UTC")
        times = index.as_unit("ns").asi8.astype(np.int64)
        if "received_at" in frame.columns:
            received = pd.DatetimeIndex(frame["received_at"]).as_unit("ns").asi8.astype(np.int64)
        else:
            received = times
        order = np.lexsort((times, received))  # arrival order, stable on wire time
        codes, names = pd.factorize(np.asarray(frame["pair"], dtype=object)[order])
        types = (np.asarray(frame["rate_type"], dtype=object) if "rate_type" in frame.columns
                 else np.full(len(frame), "UNSPECIFIED", dtype=object))
        sources = tuple(sorted(map(str, pd.unique(np.asarray(frame["source"], dtype=object))))) \
            if "source" in frame.columns else ()
        return cls(
            time=times[order],
            received=received[order],
            code=codes.astype(np.intp),
            rate=np.asarray(frame["rate"], dtype=np.float64)[order],
            rate_type=types[order],
            pair_names=tuple(str(n) for n in names),
            sources=sources,
        )

    def __len__(self) -> int:
        return len(self.time)


class Replay:
    """A recording played back into a :class:`~coinrates_nb.frame.RollingFrame` on a daemon thread.

    It quacks like a :class:`~coinrates_nb.Collector`: ``frame``, ``df``, ``latest()``,
    ``wide()``, ``ohlc()``, ``status`` (source ``"replay"``), ``pairs``, ``subscribe()``,
    ``unsubscribe()``, ``add_listener()``, ``record()``, ``start()``/``stop()``, ``wait()``,
    and it is a context manager, so charts and analysis written for a live stream run on
    history unchanged. Updates keep their recorded wire and receive times, so the same input
    always gives the same frame; ``latest()`` measures ages on the replay clock.

    Create one with :func:`replay`.

    Args:
        data: A dataset path (read with :func:`load`) or a DataFrame shaped like ``load``'s.
        speed: Playback speed: ``10`` plays 10 s of recording per second, keeping the
            recorded gaps between receive times; ``None`` plays as fast as possible.
        start, end, pairs: Passed to :func:`load` (``pairs`` only narrows what is read).
        window, max_rows: Bounds of the frame, as for :func:`~coinrates_nb.stream`; by
            default the frame holds the whole replay.
        progress: Show a ``tqdm`` bar (notebook-aware) while it plays.
        gap_threshold: Silences longer than this show up in :attr:`gaps`.

    Raises:
        ConfigError: If ``speed`` is not positive or ``None``.
        RecordingError: If the dataset cannot be read.
    """

    def __init__(
        self,
        data: str | os.PathLike[str] | pd.DataFrame,
        *,
        speed: float | None = 1.0,
        start: Any = None,
        end: Any = None,
        pairs: str | Iterable[str] | None = None,
        window: str | pd.Timedelta | None = None,
        max_rows: int | None = None,
        progress: bool = True,
        gap_threshold: str | pd.Timedelta = "10s",
    ) -> None:
        if speed is not None and (isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0):
            raise ConfigError(f"speed must be a positive number or None, not {speed!r}")
        if isinstance(data, pd.DataFrame):
            self.path: Path | None = None
            frame = data
            if pairs is not None:
                frame = frame[frame["pair"].astype(str).isin(_matches(normalize_items(pairs),
                                                                       set(frame["pair"].astype(str))))]
        else:
            self.path = Path(data).absolute()
            frame = load(data, start=start, end=end, pairs=pairs)
        self._timeline = _Timeline.from_frame(frame)
        self.speed = None if speed is None else float(speed)
        self.progress = progress
        self.gap_threshold = pd.Timedelta(gap_threshold)
        self.frame = RollingFrame(max_rows=max_rows if max_rows is not None else max(len(self._timeline), 1),
                                  window=window)
        self.done = threading.Event()
        """Set once every row has been played (not when merely stopped)."""
        self._scope = Scope(self._timeline.pair_names)
        self._mask = np.ones(len(self._timeline.pair_names), dtype=bool)
        self._names = np.array(self._timeline.pair_names, dtype=object)
        self._listeners: list[RateListener] = []
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
        self._bar: Tqdm | None = None
        _REPLAYS.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Replay:
        """Start (or resume) playing on a daemon thread; idempotent, and a no-op once done."""
        with self._lock:
            if self.running or self.done.is_set():
                return self
            if self._pos >= len(self._timeline):
                self._finish()
                return self
            self._stop.clear()
            if self.progress and self._bar is None:
                self._bar = self._make_bar()
            self._state = "connected"
            self._thread = threading.Thread(target=self._thread_main, name="coinrates-replay", daemon=True)
            self._thread.start()
        logger.info("replay started: %s rows at %s", f"{len(self._timeline):,}",
                    "full speed" if self.speed is None else f"{self.speed:g}x")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Pause playing and join the thread; idempotent. ``start()`` resumes where it stopped."""
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._stop.set()
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("replay thread did not stop within %.1f s", timeout)
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

    def __enter__(self) -> Replay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the replay thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> Replay:
        """Block until every row has been played.

        Raises:
            TimeoutError: If it is not done within ``timeout`` seconds.
            RecordingError: If the replay thread failed.
        """
        if not self.done.wait(timeout):
            self._raise_if_failed()
            raise TimeoutError(f"replay not finished within {timeout} s ({self._pos:,}/{len(self._timeline):,} rows)")
        self._raise_if_failed()
        return self

    def wait(self, timeout: float = 30.0, rows: int = 1, pairs: Iterable[str] | None = None) -> Replay:
        """Block until each of ``pairs`` (default: the subscribed pairs) has ``rows`` rows in the frame.

        Same contract as :meth:`Collector.wait`, except that a replay which ends first raises
        at once instead of waiting for data that will never come.

        Raises:
            TimeoutError: If the rows do not arrive within ``timeout``.
            RecordingError: If the replay failed or ended without them.
        """
        wanted = set(pairs) if pairs is not None else {i for i in (self.pairs or ()) if "/" in i}
        deadline = time.monotonic() + timeout
        while True:
            finished = self.done.is_set()
            counts = self.frame.snapshot()["pair"].value_counts().to_dict() if wanted else {}
            if (all(counts.get(p, 0) >= rows for p in wanted) if wanted else len(self.frame) >= rows):
                return self
            self._raise_if_failed()
            missing = sorted(p for p in wanted if counts.get(p, 0) < rows) if wanted else []
            if finished:
                raise RecordingError(f"replay ended before {rows} row(s) of {missing or 'any pair'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no data for {missing or 'any pair'} within {timeout} s")
            self.done.wait(0.02)

    def _raise_if_failed(self) -> None:
        if self._state == "error":
            raise RecordingError(f"replay failed: {self._last_error}")

    # -- the replay thread ---------------------------------------------------------------------

    def _thread_main(self) -> None:
        """Thread body: play rows on schedule until the end or ``stop()``; never dies silently."""
        timeline, stop = self._timeline, self._stop
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
        """Append rows ``[pos, end)`` that are in scope to the frame and tell the listeners."""
        t = self._timeline
        codes = t.code[pos:end]
        keep = self._mask[codes]
        sel: slice | npt.NDArray[np.intp] = slice(pos, end) if keep.all() else pos + np.flatnonzero(keep)
        kept = int(keep.sum())
        if kept:
            pairs = self._names[t.code[sel]]
            self.frame.extend(t.time[sel], cast(Sequence[str], pairs), t.rate[sel],
                              cast(Sequence[str], t.rate_type[sel]), t.received[sel])
            listeners = self._listeners
            if listeners:
                for pair, rtype, tns, rate, rns in zip(pairs.tolist(), t.rate_type[sel].tolist(), t.time[sel].tolist(),
                                                       t.rate[sel].tolist(), t.received[sel].tolist(), strict=True):
                    base, _, quote = pair.partition("/")
                    update = ExchangeRate(base, quote, rtype, tns, rate)
                    for listener in listeners:
                        try:
                            listener(update, rns)
                        except Exception:  # noqa: BLE001 - a broken listener must not stop the replay
                            logger.exception("rate listener %r failed", listener)
        self._stored += kept
        self._pos = end
        if self._bar is not None:
            self._bar.update(end - pos)

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
        self._set_scope(self._scope.add(normalize_items(items)))
        return self

    def unsubscribe(self, items: str | Iterable[str]) -> Replay:
        """Stop playing these pairs (or asset ids); the rest of the timeline is unchanged."""
        self._set_scope(self._scope.remove(normalize_items(items)))
        return self

    def set_pairs(self, items: str | Iterable[str] | None) -> Replay:
        """Replace the scope; ``None`` plays every pair of the recording."""
        self._set_scope(Scope(self._timeline.pair_names if items is None else normalize_items(items)))
        return self

    @property
    def pairs(self) -> tuple[str, ...] | None:
        """The current scope; it starts as every pair in the recording."""
        return self._scope.items

    def add_listener(self, listener: RateListener) -> Callable[[], None]:
        """Call ``listener(update, received_ns)`` on the replay thread for each played update.

        Returns its remover. With a listener, ``replay.record(path)`` re-records a replay.
        """
        self._listeners = [*self._listeners, listener]

        def remove() -> None:
            self._listeners = [fn for fn in self._listeners if fn is not listener]

        return remove

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

    @property
    def df(self) -> pd.DataFrame:
        """Snapshot of the frame: UTC ``DatetimeIndex`` named ``time``, one row per played update."""
        return self.frame.snapshot()

    def snapshot(self, pairs: Iterable[str] | None = None, since: Any = None) -> pd.DataFrame:
        """Snapshot, optionally of some pairs only and since a time."""
        return self.frame.snapshot(pairs=pairs, since_ns=_to_ns(since, "since"))

    def latest(self) -> pd.DataFrame:
        """One row per pair: newest rate, its time and its age on the replay clock."""
        return self.frame.latest(now_ns=self.now_ns)

    def wide(self, freq: str | None = None) -> pd.DataFrame:
        """Time x pair table, one column per pair, forward-filled."""
        return self.frame.wide(freq=freq)

    def ohlc(self, freq: str = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """OHLC bars per pair resampled at ``freq``."""
        return self.frame.ohlc(freq, pair=pair)

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
    def lag_ms(self) -> float | None:
        """How far playback trails its schedule, in ms, at the last step (``None`` unpaced)."""
        return None if self._lag_ns is None else self._lag_ns / 1e6

    @property
    def max_lag_ms(self) -> float:
        """The worst lag behind schedule so far, in ms."""
        return self._max_lag_ns / 1e6

    @property
    def status(self) -> Status:
        """A typed snapshot shaped like a collector's, with source ``"replay"``.

        ``messages`` counts timeline rows played, ``rates`` those in scope (stored),
        ``lag_ms`` how far playback trails its schedule, and ``stale_pairs`` the pairs
        silent for over ``gap_threshold`` on the replay clock. ``state`` is ``"connected"``
        while playing.
        """
        now = self.now_ns
        latest = self.frame.latest(now_ns=now)
        stale = tuple(sorted(str(p) for p, age in latest["age"].items() if age > self.gap_threshold))
        run_started = self._run_started
        elapsed = self._elapsed + (0.0 if run_started is None else time.monotonic() - run_started)
        return Status(
            state=self._state,
            source="replay",
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

        badge = ('<span style="background:#b45309;color:white;padding:1px 6px;border-radius:3px;font-weight:bold">'
                 'SIMULATED DATA</span> ' if "simulated" in self.sources else "")
        return f"<div>{badge}<code>{escape(repr(self))}</code></div>"


def replay(
    data: str | os.PathLike[str] | pd.DataFrame,
    speed: float | None = 1.0,
    *,
    start: Any = None,
    end: Any = None,
    pairs: str | Iterable[str] | None = None,
    window: str | pd.Timedelta | None = None,
    max_rows: int | None = None,
    progress: bool = True,
    autostart: bool = True,
    **options: Any,
) -> Replay:
    """Play a recording back as a Collector-like stream, ``speed`` times faster than it was recorded.

    ``speed=None`` plays as fast as possible. Returns at once; the replay runs on a daemon
    thread (``replay.done.wait()`` or ``replay.join()`` to block until the end). See
    :class:`Replay` for the arguments.
    """
    player = Replay(data, speed=speed, start=start, end=end, pairs=pairs, window=window, max_rows=max_rows,
                    progress=progress, **options)
    return player.start() if autostart else player
