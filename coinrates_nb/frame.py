"""The rolling columnar buffer of exchange rates and its pandas views.

:class:`RollingFrame` keeps the live window of rows in preallocated NumPy columns used as a
ring, so an append writes six scalars and copies nothing; pandas is only touched when a
view (:meth:`~RollingFrame.snapshot`, :meth:`~RollingFrame.latest`,
:meth:`~RollingFrame.wide`, :meth:`~RollingFrame.ohlc`) is asked for. That keeps the
collector's hot path flat however long it runs (a naive ``pd.concat`` per message slows
down as it grows: ``../shared/NOTES.md``, "pandas, parsing, transport").

The module is pure: no I/O, no threads, no clock reads. Callers pass every time as integer
nanoseconds since the epoch (UTC), which keeps the feed's 100 ns precision end to end.

Storage per row: time ``int64`` + pair code ``int16`` + rate ``float64`` + rate-type code
``int8`` + received ``int64`` + origin ``int8`` = 28 bytes. Pairs and rate types are stored as codes into
append-only tables, so snapshots build their categoricals with
:meth:`pandas.Categorical.from_codes` and do no per-row string work.

Eviction rules, in the order applied on every append:

1. **Capacity.** When the ring is full, the oldest row is overwritten (or, with
   ``max_rows=None``, the ring doubles instead).
2. **Window.** With ``window`` set, the cutoff is ``newest time seen - window``; rows are
   evicted from the head while ``head.time < cutoff``. Rows are assumed to arrive *roughly*
   in time order: a row that arrives late (older than its predecessors) stays until the rows
   ahead of it are evicted, and an old row that reaches the head is evicted at once. Rows
   with ``time == cutoff`` are kept.

Thread safety: one :class:`threading.Lock` guards the ring. It is held for an O(1) append
(amortised: each row is evicted once), for the copy of a batch in :meth:`extend`, and for the
raw array copy of a view; DataFrames are always built outside it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, Final, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from pandas.tseries.frequencies import to_offset  # type: ignore[import-untyped, unused-ignore]

from . import analysis
from ._inputs import span_ns
from ._types import RATE_TYPES, Pair, TimeNs, split_pair
from .batch import ORIGINS, STREAM, RateBatch
from .exceptions import ConfigError, StoreError

__all__ = ["RollingFrame"]

logger = logging.getLogger(__name__)

Int64Array = npt.NDArray[np.int64]
Int16Array = npt.NDArray[np.int16]
Int8Array = npt.NDArray[np.int8]
Float64Array = npt.NDArray[np.float64]
_Column = TypeVar("_Column", Int64Array, Int16Array, Float64Array, Int8Array)

GROWTH_START: Final = 4096
"""Initial capacity of a ring that grows (``max_rows=None``); it doubles when full."""

MAX_PAIRS: Final = int(np.iinfo(np.int16).max) + 1
"""Distinct pairs an ``int16`` code can name over a frame's life."""

MAX_RATE_TYPES: Final = int(np.iinfo(np.int8).max) + 1
"""Distinct rate types an ``int8`` code can name over a frame's life."""



_UTC_NS: Final = pd.DatetimeTZDtype("ns", "UTC")
_ORIGIN_DTYPE: Final = pd.CategoricalDtype(list(ORIGINS))
"""Where each row came from: ``stream`` (the live feed), ``history`` (REST backfill), ``healed`` (a gap filled)."""
_SCALAR_ROWS: Final = 8
"""Batches up to this many rows (with one receive time) are written row by row (``benchmarks/bench_parse.py``)."""
_SCALAR_EVICTIONS: Final = 16
"""Window evictions done one scalar at a time before switching to vectorised block scans."""
_SCAN_START: Final = 64
"""First block size when scanning the head for window eviction; it doubles per full block."""


class _Tables(NamedTuple):
    """The code tables at one moment: immutable, replaced whole when a pair or rate type appears.

    Views capture the current instance under the lock, so they never see a half-registered pair.
    """

    pair_names: tuple[Pair, ...]
    pair_dtype: Any  # pd.CategoricalDtype over pair_names, in code order
    base_of: Int16Array  # pair code -> code in base_dtype
    quote_of: Int16Array  # pair code -> code in quote_dtype
    base_dtype: Any
    quote_dtype: Any
    rate_type_dtype: Any


class _Raw(NamedTuple):
    """A consistent copy of the live window's columns, taken under the lock."""

    time: Int64Array
    code: Int16Array
    rate: Float64Array
    rate_type: Int8Array
    received: Int64Array
    origin: Int8Array
    tables: _Tables


def _format_span(ns: int) -> str:
    """Format nanoseconds the way pandas spells a frequency (``"15min"``, ``"90s"``)."""
    try:
        return str(to_offset(pd.Timedelta(ns, unit="ns")).freqstr)
    except ValueError:  # pragma: no cover - every positive Timedelta has an offset today
        return str(pd.Timedelta(ns, unit="ns"))


def _utc(ns: Int64Array, name: str | None = None) -> Any:
    """Wrap int64 nanoseconds as a UTC ``DatetimeIndex`` without touching Python datetimes."""
    return pd.DatetimeIndex(ns.view("datetime64[ns]"), dtype=_UTC_NS, name=name)


def _empty_time_index() -> Any:
    """Return the empty UTC index every empty view carries, so its dtype matches a full one."""
    return _utc(np.empty(0, dtype=np.int64), "time")


def _ring_copy(column: npt.NDArray[Any], start: int, count: int) -> npt.NDArray[Any]:
    """Copy ``count`` ring entries from ``start`` into a new contiguous array, in ring order."""
    end = start + count
    if end <= len(column):
        return column[start:end].copy()
    return np.concatenate((column[start:], column[: end - len(column)]))


def _regrow(column: _Column, start: int, count: int, capacity: int) -> _Column:
    """Return a new ``capacity``-row column holding ``column``'s ring rows at the front, oldest first."""
    grown = np.zeros(capacity, dtype=column.dtype)
    grown[:count] = _ring_copy(column, start, count)
    return grown


class RollingFrame:
    """A bounded, thread-safe, columnar rolling buffer of exchange-rate rows.

    Rows go in one at a time (:meth:`append`) or in batches (:meth:`extend`) and come out as
    pandas DataFrames; in between they live in preallocated NumPy columns so that appending
    never copies the window, whatever its size.

    Args:
        max_rows: Ring capacity. ``None`` makes the ring grow (starting at 4,096 rows and
            doubling when full), in which case ``window`` is required to bound it.
        window: Time span to keep, e.g. ``"15min"``, measured back from the newest row time
            seen. ``None`` keeps rows until capacity evicts them.

    Raises:
        ConfigError: If both bounds are ``None``, ``max_rows`` is not a positive int, or
            ``window`` is not a positive time span.

    Example::

        frame = RollingFrame(max_rows=100_000, window="15min")
        frame.append(time_ns, "BTC/USD", 64_012.5, "BASE_QUOTE_ISOLATED", received_ns)
        frame.snapshot()       # DataFrame with a UTC DatetimeIndex named "time"
        frame.ohlc("1min")     # bars per pair
    """

    def __init__(self, max_rows: int | None = 100_000, window: str | pd.Timedelta | None = None) -> None:
        if max_rows is None and window is None:
            raise ConfigError("RollingFrame needs a bound: give max_rows, window, or both")
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
            raise ConfigError(f"max_rows must be a positive int or None, not {max_rows!r}")
        self._window_ns = span_ns(window)
        self._grows = max_rows is None
        capacity = GROWTH_START if max_rows is None else max_rows
        self._lock = threading.Lock()
        self._time: Int64Array = np.zeros(capacity, dtype=np.int64)
        self._code: Int16Array = np.zeros(capacity, dtype=np.int16)
        self._rate: Float64Array = np.zeros(capacity, dtype=np.float64)
        self._rate_type: Int8Array = np.zeros(capacity, dtype=np.int8)
        self._received: Int64Array = np.zeros(capacity, dtype=np.int64)
        self._origin: Int8Array = np.zeros(capacity, dtype=np.int8)
        self._bind_views()
        self._capacity = capacity
        self._start = 0  # ring index of the oldest live row
        self._count = 0
        self._appended = 0
        self._evicted = 0
        self._newest: TimeNs | None = None  # newest row time ever appended (since clear)
        # Code tables: append-only, so a code means the same pair for the frame's life.
        self._pair_code: dict[Pair, int] = {}
        self._base_code: dict[str, int] = {}
        self._quote_code: dict[str, int] = {}
        self._base_of: list[int] = []
        self._quote_of: list[int] = []
        self._rate_type_code: dict[str, int] = {name: code for code, name in enumerate(RATE_TYPES)}
        # Per pair code: live rows, and the ring index of the pair's newest row by time (-1: find it
        # again). Stream rows arrive in time order per pair (the protocol drops older ones), so a
        # stream row is its pair's newest; history and healed rows arrive after newer live rows and
        # take the slot only when they are newer. The newest row can then be evicted before older,
        # later-arrived ones: :meth:`latest` checks the slot and looks again when it went stale.
        self._live: list[int] = []
        self._last: list[int] = []
        self._table_cache: _Tables | None = None

    # -- writing ---------------------------------------------------------------------------

    def extend(self, rates: RateBatch, received_ns: TimeNs | npt.ArrayLike) -> None:
        """Store a batch of updates (one update is a batch of one), evicting by capacity and window.

        Copy-free for the window: the batch's columns are written into the ring in at most two
        slices, and strings stay factorised (a few names looked up per batch, codes per row). A
        batch larger than the capacity keeps only its last ``capacity`` rows (a growing ring
        grows instead). ``received_ns`` is one receive time for the whole batch, or one per row.

        Raises:
            StoreError: If ``received_ns`` does not match the batch, or more distinct pairs or
                rate types arrive than the codes can name.
        """
        n = len(rates)
        if n == 0:
            return
        if n <= _SCALAR_ROWS and isinstance(received_ns, int):
            keys = rates.keys
            for code, time_ns, rate in zip(rates.code.tolist(), rates.time_ns.tolist(), rates.rate.tolist(),
                                           strict=True):
                base, quote, rate_type = keys[code]
                self._write_one(f"{base}/{quote}", rate_type, time_ns, rate, received_ns, rates.origin)
            return
        received = np.asarray(received_ns, dtype=np.int64)
        if received.ndim == 0:
            received = np.full(n, received, np.int64)
        elif received.shape != (n,):
            raise StoreError(f"received_ns must be one time or one per row ({n}), not shape {received.shape}")
        pair_names, pair_codes = rates.pairs()
        type_names, type_codes = rates.rate_types()
        codes = self._codes(pair_names, self._pair_code, self._register_pair).astype(np.int16)[pair_codes]
        types = self._codes(type_names, self._rate_type_code, self._register_rate_type).astype(np.int8)[type_codes]
        with self._lock:
            self._write_batch(rates.time_ns, codes, rates.rate, types, received,
                              np.full(n, rates.origin, np.int8))

    def _write_one(self, pair: Pair, rate_type: str, time_ns: TimeNs, rate: float, received_ns: TimeNs,
                   origin: int = 0) -> None:
        """The scalar path of :meth:`extend` for a few rows, one at a time: ~1 µs a row instead of ~30 µs of NumPy calls."""
        lock = self._lock
        lock.acquire()  # not `with`: the context manager costs ~2x on this hot path
        try:
            code = self._pair_code.get(pair)
            if code is None:
                code = self._register_pair(pair)
            type_code = self._rate_type_code.get(rate_type)
            if type_code is None:
                type_code = self._register_rate_type(rate_type)
            count, capacity, start = self._count, self._capacity, self._start
            head_moved = count == 0
            if count == capacity:
                if self._grows:
                    self._grow(capacity * 2)
                    capacity, start = self._capacity, self._start
                else:  # overwrite the oldest row: _drop_head(1), inlined
                    self._live[self._code_view[start]] -= 1
                    start += 1
                    if start == capacity:
                        start = 0
                    self._start = start
                    count -= 1
                    self._evicted += 1
                    head_moved = True
            pos = start + count
            if pos >= capacity:
                pos -= capacity
            # Scalar writes go through memoryviews of the same buffers: ~3x cheaper than ndarray.__setitem__.
            self._time_view[pos] = time_ns
            self._code_view[pos] = code
            self._rate_view[pos] = rate
            self._rate_type_view[pos] = type_code
            self._received_view[pos] = received_ns
            self._origin_view[pos] = origin
            self._count = count + 1
            self._appended += 1
            if origin == STREAM or self._live[code] == 0:
                self._last[code] = pos
            else:
                self._last[code] = self._newer_slot(code, pos, time_ns, start, count)
            self._live[code] += 1
            newest = self._newest
            if newest is None or time_ns > newest:
                self._newest = newest = time_ns
                head_moved = True  # the cutoff moved: re-check the head
            if head_moved and self._window_ns is not None:
                cutoff = newest - self._window_ns
                if self._time_view[self._start] < cutoff:  # the common case, nothing to evict, stays inline
                    self._evict_before(cutoff)
        finally:
            lock.release()

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self, pairs: Iterable[Pair] | None = None, since_ns: TimeNs | None = None) -> pd.DataFrame:
        """Return a copy of the live window in arrival order.

        The index is a ``DatetimeIndex`` named ``"time"`` (``datetime64[ns, UTC]``); the
        columns are ``pair``, ``base``, ``quote`` (categorical), ``rate`` (float64),
        ``rate_type`` (categorical), ``received_at`` (``datetime64[ns, UTC]``) and ``origin``
        (categorical: ``stream``, ``history`` or ``healed``). An empty
        window gives the same columns and dtypes. Categories are every pair/asset/rate type
        the frame has seen, in first-seen order, so snapshots concatenate without losing the
        categorical dtype.

        Args:
            pairs: Keep only these pairs (unknown names match nothing; one string is one pair).
            since_ns: Keep only rows with ``time >= since_ns``.
        """
        raw = self._copy_raw()
        keep: npt.NDArray[np.bool_] | None = None
        if pairs is not None:
            chosen = {pairs} if isinstance(pairs, str) else set(pairs)
            wanted = np.array([name in chosen for name in raw.tables.pair_names], dtype=bool)
            keep = wanted[raw.code]
        if since_ns is not None:
            recent = raw.time >= since_ns
            keep = recent if keep is None else keep & recent
        if keep is not None:
            raw = _Raw(raw.time[keep], raw.code[keep], raw.rate[keep], raw.rate_type[keep], raw.received[keep],
                       raw.origin[keep], raw.tables)
        return self._build(raw)

    def latest(self, now_ns: TimeNs | None = None) -> pd.DataFrame:
        """Return the newest row of each live pair, with its age.

        The index is ``pair`` (first-seen order); columns are ``time``, ``rate``,
        ``rate_type``, ``received_at`` and ``age`` (``now - time`` as a Timedelta). O(pairs):
        it reads one ring slot per pair, not the window.

        Args:
            now_ns: The instant ages are measured from. By default the newest ``received_at``
                among the rows returned, which is the newest in the buffer when receive
                times grow in arrival order (they come from the receiver's clock).
        """
        with self._lock:
            codes = [code for code, rows in enumerate(self._live) if rows]
            slots = self._newest_slots(codes)
            times = self._time[slots]
            rates = self._rate[slots]
            type_codes = self._rate_type[slots]
            received = self._received[slots]
            tables = self._tables
        if now_ns is None:
            now_ns = int(received.max()) if len(received) else 0
        age = (np.int64(now_ns) - times).view("timedelta64[ns]")
        index = pd.Index([tables.pair_names[code] for code in codes], dtype="str", name="pair")
        return pd.DataFrame(
            {
                "time": _utc(times).array,
                "rate": rates,
                "rate_type": pd.Categorical.from_codes(type_codes, dtype=tables.rate_type_dtype, validate=False),
                "received_at": _utc(received).array,
                "age": pd.TimedeltaIndex(age).array,
            },
            index=index,
            copy=False,
        )

    def wide(self, freq: str | None = None, how: str = "last") -> pd.DataFrame:
        """Rates as time x pair, forward-filled: :func:`coinrates_nb.analysis.wide` of the snapshot."""
        return analysis.wide(self.snapshot(), freq=freq, how=how)

    def ohlc(self, freq: str = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """Open/high/low/close bars per ``freq``: :func:`coinrates_nb.analysis.ohlc` of the snapshot."""
        return analysis.ohlc(self.snapshot(), freq, pair=pair)

    # -- housekeeping ------------------------------------------------------------------------

    def clear(self) -> None:
        """Drop every live row and forget the newest time; keep capacity and the code tables.

        ``appended`` and ``evicted`` are lifetime counters and do not change: cleared rows
        were not evicted.
        """
        with self._lock:
            self._start = 0
            self._count = 0
            self._newest = None
            self._live = [0] * len(self._live)

    def __len__(self) -> int:
        """Return the number of live rows."""
        return self._count

    def counts(self) -> dict[Pair, int]:
        """Return live rows per pair (first-seen order), without copying the window: O(pairs)."""
        with self._lock:
            return {name: rows for name, rows in zip(self._tables.pair_names, self._live, strict=True) if rows}

    @property
    def pairs(self) -> tuple[Pair, ...]:
        """Pairs with at least one row in the live window, in first-seen order."""
        with self._lock:
            return tuple(name for name, rows in zip(self._tables.pair_names, self._live, strict=True) if rows)

    @property
    def capacity(self) -> int:
        """Rows the ring holds before it evicts (or, when growing, before it doubles)."""
        return self._capacity

    @property
    def window(self) -> pd.Timedelta | None:
        """The time span kept, or ``None``."""
        return None if self._window_ns is None else pd.Timedelta(self._window_ns, unit="ns")

    @property
    def window_ns(self) -> int | None:
        """The time span kept in nanoseconds, or ``None`` (what a hub consumer fills from JetStream at start)."""
        return self._window_ns

    @property
    def appended(self) -> int:
        """Rows ever appended (monotonic; ``clear`` does not reset it)."""
        return self._appended

    @property
    def evicted(self) -> int:
        """Rows dropped by the capacity or window bound (not by ``clear``)."""
        return self._evicted

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated columns: 28 per row of capacity."""
        return sum(column.nbytes for column in self._columns())

    def __repr__(self) -> str:
        with self._lock:
            count, capacity = self._count, self._capacity
            n_pairs = sum(1 for rows in self._live if rows)
        grows = " (grows)" if self._grows else ""
        window = "no window" if self._window_ns is None else f"window {_format_span(self._window_ns)}"
        return (f"<RollingFrame {count:,}/{capacity:,} rows{grows} | {n_pairs} pair{'s' * (n_pairs != 1)} | "
                f"{window}>")

    # -- internals (callers hold the lock where noted) -----------------------------------------

    def _columns(self) -> tuple[npt.NDArray[Any], ...]:
        """Return the six ring columns, in storage order."""
        return self._time, self._code, self._rate, self._rate_type, self._received, self._origin

    def _bind_views(self) -> None:
        """Point the scalar-access memoryviews at the current columns (same buffers, no copy)."""
        self._time_view = self._time.data
        self._code_view = self._code.data
        # typeshed types every memoryview item as int; this one holds float64 ("d").
        self._rate_view: Any = self._rate.data
        self._rate_type_view = self._rate_type.data
        self._received_view = self._received.data
        self._origin_view = self._origin.data

    @property
    def _tables(self) -> _Tables:
        """The code tables as of now (lock held), rebuilt only when a pair or rate type was added since.

        Registering a pair only appends to the code dicts (O(1)); the categorical dtypes are
        built here, at most once per view after new names, so 10,000 new pairs cost one
        rebuild, not 10,000.
        """
        cached = self._table_cache
        if (cached is not None and len(cached.pair_names) == len(self._pair_code)
                and len(cached.rate_type_dtype.categories) == len(self._rate_type_code)):
            return cached
        self._table_cache = tables = self._make_tables()
        return tables

    def _make_tables(self) -> _Tables:
        """Build an immutable :class:`_Tables` from the code dicts (lock held)."""
        return _Tables(
            pair_names=tuple(self._pair_code),
            pair_dtype=pd.CategoricalDtype(list(self._pair_code)),
            base_of=np.array(self._base_of, dtype=np.int16),
            quote_of=np.array(self._quote_of, dtype=np.int16),
            base_dtype=pd.CategoricalDtype(list(self._base_code)),
            quote_dtype=pd.CategoricalDtype(list(self._quote_code)),
            rate_type_dtype=pd.CategoricalDtype(list(self._rate_type_code)),
        )

    def _codes(self, names: Sequence[str], table: dict[str, int], register: Callable[[str], int]) -> Int64Array:
        """Map ``names`` to their codes in ``table``, registering new names under the lock.

        The tables are append-only and a code never changes, so known names are looked up
        without the lock (one C-level ``dict.get`` per row, ~4x cheaper than ``pd.factorize``
        on a batch of a few hundred); only misses take it.
        """
        if not isinstance(names, list):
            names = list(names)
        codes = np.fromiter(map(table.get, names, repeat(-1)), np.int64, len(names))
        if codes.min() < 0:
            with self._lock:
                for i in np.flatnonzero(codes < 0).tolist():
                    name = names[i]
                    code = table.get(name)
                    codes[i] = register(name) if code is None else code
        return codes

    def _register_pair(self, pair: Pair) -> int:
        """Give ``pair`` the next code and rebuild the tables (lock held; rare)."""
        try:
            base, quote = split_pair(pair)
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"pair must be 'BASE/QUOTE', not {pair!r}") from exc
        code = len(self._pair_code)
        if code >= MAX_PAIRS:
            raise StoreError(f"RollingFrame holds at most {MAX_PAIRS:,} distinct pairs; {pair!r} is one more")
        self._pair_code[pair] = code
        self._base_of.append(self._base_code.setdefault(base, len(self._base_code)))
        self._quote_of.append(self._quote_code.setdefault(quote, len(self._quote_code)))
        self._live.append(0)
        self._last.append(0)
        logger.debug("frame: new pair %s (code %d)", pair, code)
        return code

    def _register_rate_type(self, rate_type: str) -> int:
        """Give ``rate_type`` the next code and rebuild the tables (lock held; rare)."""
        code = len(self._rate_type_code)
        if code >= MAX_RATE_TYPES:
            raise StoreError(f"RollingFrame holds at most {MAX_RATE_TYPES} rate types; {rate_type!r} is one more")
        self._rate_type_code[str(rate_type)] = code
        logger.debug("frame: new rate type %s (code %d)", rate_type, code)
        return code

    def _newer_slot(self, code: int, slot: int, time_ns: int, start: int, count: int) -> int:
        """The pair's newest slot after writing a history/healed row at ``slot`` (lock held).

        ``start``/``count`` are the live rows before the write: the current newest slot is kept
        if it is still live and newer; -1 if it was evicted (:meth:`latest` looks again).
        """
        cur = self._last[code]
        if cur < 0 or (cur - start) % self._capacity >= count:
            return -1
        return cur if self._time_view[cur] >= time_ns else slot

    def _newest_slots(self, codes: list[int]) -> npt.NDArray[np.intp]:
        """The ring slot of each pair's newest row, found again where the kept one went stale (lock held)."""
        start, count, capacity = self._start, self._count, self._capacity
        slots = np.array([self._last[code] for code in codes], dtype=np.intp)
        offset = (slots - start) % capacity
        stale = (slots < 0) | (offset >= count) | (self._code[slots] != np.array(codes, dtype=np.int64))
        for i in np.flatnonzero(stale).tolist():  # rare: a newest row evicted before older healed rows
            ring = (start + np.arange(count)) % capacity
            mine = ring[self._code[ring] == codes[i]]  # the pair's live rows, in arrival order
            streamed = np.flatnonzero(self._origin[mine] == STREAM)
            after = mine[streamed[-1] if len(streamed) else 0:]  # from its last stream row on
            slots[i] = self._last[codes[i]] = int(after[np.argmax(self._time[after])])
        return slots

    def _drop_head(self, k: int) -> None:
        """Evict the ``k`` oldest live rows and update the per-pair counts (lock held)."""
        if k <= 8:
            for i in range(k):
                slot = self._start + i
                self._live[self._code_view[slot - self._capacity if slot >= self._capacity else slot]] -= 1
        else:
            dropped = _ring_copy(self._code, self._start, k)
            tally = np.bincount(dropped, minlength=len(self._live))
            for code in np.flatnonzero(tally):
                self._live[code] -= int(tally[code])
        self._start = (self._start + k) % self._capacity
        self._count -= k
        self._evicted += k

    def _evict_before(self, cutoff: TimeNs) -> None:
        """Evict from the head while ``head.time < cutoff`` (lock held).

        In steady state each append evicts about one row, so the first rows are checked as
        scalars (~0.1 µs each; a NumPy call costs ~1 µs). A long run of old rows, as after a
        quiet spell, is then scanned in blocks that double in size, so the cost stays
        proportional to the rows evicted.
        """
        times, codes, live, capacity = self._time_view, self._code_view, self._live, self._capacity
        start, count, dropped = self._start, self._count, 0
        while count and dropped < _SCALAR_EVICTIONS and times[start] < cutoff:
            live[codes[start]] -= 1
            start += 1
            if start == capacity:
                start = 0
            count -= 1
            dropped += 1
        self._start, self._count = start, count
        self._evicted += dropped
        if dropped == _SCALAR_EVICTIONS and count and times[start] < cutoff:
            self._evict_blocks(cutoff)

    def _evict_blocks(self, cutoff: TimeNs) -> None:
        """Evict a long run of rows older than ``cutoff`` with vectorised block scans (lock held)."""
        k, block = 0, _SCAN_START
        while k < self._count:
            slot = (self._start + k) % self._capacity
            size = min(block, self._count - k, self._capacity - slot)
            below = self._time[slot:slot + size] < cutoff
            if not below.all():
                k += int(np.argmin(below))
                break
            k += size
            block *= 2
        self._drop_head(k)

    def _grow(self, capacity: int) -> None:
        """Move the live rows into new columns of ``capacity`` rows, oldest first (lock held).

        The only place rows are copied on the write path; it happens ``log2`` times.
        """
        old = self._capacity
        start, count = self._start, self._count
        self._time = _regrow(self._time, start, count, capacity)
        self._code = _regrow(self._code, start, count, capacity)
        self._rate = _regrow(self._rate, start, count, capacity)
        self._rate_type = _regrow(self._rate_type, start, count, capacity)
        self._received = _regrow(self._received, start, count, capacity)
        self._origin = _regrow(self._origin, start, count, capacity)
        self._bind_views()
        self._last = [-1 if slot < 0 else (slot - start) % old for slot in self._last]
        self._start = 0
        self._capacity = capacity
        logger.debug("frame: ring grew from %d to %d rows", old, capacity)

    def _write_batch(self, times: Int64Array, codes: Int16Array, rates: Float64Array, type_codes: Int8Array,
                     received: Int64Array, origins: Int8Array) -> None:
        """Write a batch at the tail with the same result as appending row by row (lock held)."""
        n = len(times)
        batch_newest = int(times.max())
        if self._grows:
            capacity = self._capacity
            while capacity < self._count + n:
                capacity *= 2
            if capacity != self._capacity:
                self._grow(capacity)
        elif n >= self._capacity:
            # Every live row and the batch's head would be overwritten one by one.
            skip = n - self._capacity
            self._drop_head(self._count)
            self._start = 0
            self._appended += skip
            self._evicted += skip
            times, codes, rates, type_codes, received, origins = (
                times[skip:], codes[skip:], rates[skip:], type_codes[skip:], received[skip:], origins[skip:])
            n = self._capacity
        elif self._count + n > self._capacity:
            self._drop_head(self._count + n - self._capacity)
        pos = (self._start + self._count) % self._capacity
        first = min(n, self._capacity - pos)
        batch: tuple[npt.NDArray[Any], ...] = (times, codes, rates, type_codes, received, origins)
        for column, values in zip(self._columns(), batch, strict=True):
            column[pos:pos + first] = values[:first]
            column[: n - first] = values[first:]
        tally = np.bincount(codes, minlength=len(self._live))
        for code in np.flatnonzero(tally):
            self._live[code] += int(tally[code])
        if origins[0] == STREAM:  # a batch is of one origin; stream rows are their pairs' newest
            present, from_end = np.unique(codes[::-1], return_index=True)
            for code, back in zip(present.tolist(), from_end.tolist(), strict=True):
                self._last[code] = (pos + n - 1 - back) % self._capacity
        else:
            order = np.lexsort((-np.arange(n), times, codes))  # per pair, its group's last: the first newest row
            ends = np.flatnonzero(np.append(codes[order][1:] != codes[order][:-1], True))
            for row in order[ends].tolist():
                pair, slot = int(codes[row]), int((pos + row) % self._capacity)
                had = self._live[pair] - int(tally[pair])
                self._last[pair] = slot if had == 0 else self._newer_slot(pair, slot, int(times[row]),
                                                                          self._start, self._count)
        self._count += n
        self._appended += n
        if self._newest is None or batch_newest > self._newest:
            self._newest = batch_newest
        if self._window_ns is not None:
            self._evict_before(self._newest - self._window_ns)

    def _copy_raw(self) -> _Raw:
        """Copy the live window's raw columns under the lock: the only work done while holding it."""
        with self._lock:
            start, count = self._start, self._count
            time, code, rate, rate_type, received, origin = (_ring_copy(c, start, count) for c in self._columns())
            tables = self._tables
        return _Raw(time, code, rate, rate_type, received, origin, tables)

    @staticmethod
    def _build(raw: _Raw) -> pd.DataFrame:
        """Turn a raw copy into the snapshot DataFrame (no lock; no per-row string work)."""
        tables = raw.tables
        return pd.DataFrame(
            {
                "pair": pd.Categorical.from_codes(raw.code, dtype=tables.pair_dtype, validate=False),
                "base": pd.Categorical.from_codes(tables.base_of[raw.code], dtype=tables.base_dtype, validate=False),
                "quote": pd.Categorical.from_codes(tables.quote_of[raw.code], dtype=tables.quote_dtype,
                                                   validate=False),
                "rate": raw.rate,
                "rate_type": pd.Categorical.from_codes(raw.rate_type, dtype=tables.rate_type_dtype, validate=False),
                "received_at": _utc(raw.received).array,
                "origin": pd.Categorical.from_codes(raw.origin, dtype=_ORIGIN_DTYPE, validate=False),
            },
            index=_utc(raw.time, "time"),
            copy=False,
        )
