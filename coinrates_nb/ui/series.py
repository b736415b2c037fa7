"""Plot math on one pair's rows as NumPy arrays: window, rebase, bucket into candles, decimate, convert times.

Pure functions, NumPy in and NumPy out, no plotly and no clock: what a chart redraw computes
before it touches a figure. :func:`downsample_minmax` bounds what one redraw sends (at most
``max_points`` per trace, keeping each bucket's extremes so spikes survive), and
:func:`ns_to_ms` gives plotly.js the time unit it reads on a date axis.
"""

from __future__ import annotations

import operator
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..exceptions import ConfigError

__all__ = ["GAP_FACTOR", "GAP_FLOOR_NS", "MAX_POINTS", "Float64Array", "Int64Array", "Series", "break_gaps",
           "check_max_points", "common_gaps", "downsample_minmax", "gap_threshold_ns", "gaps_of", "ns_to_ms",
           "ohlc_arrays", "rebase", "window_start", "windowed"]

MAX_POINTS: Final = 2_000
"""Points per trace one redraw sends at most (~32 kB as two float64 buffers)."""

GAP_FLOOR_NS: Final = 5_000_000_000
"""A silence shorter than this (5 s, ``rates.gaps``' default threshold) is never a gap in a chart."""

GAP_FACTOR: Final = 10
"""A silence longer than this many times a pair's median spacing (and :data:`GAP_FLOOR_NS`) is a gap."""

Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]
Series = tuple[Int64Array, Float64Array]
"""One pair's rows in time order: (time in int64 ns since the epoch, rate)."""


def check_max_points(value: Any, name: str = "max_points") -> int:
    """Return ``value`` if it is a whole number of points of at least 4 (two ends plus one min/max bucket).

    Raises:
        ConfigError: If it is not.
    """
    try:
        number = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        number = None
    if number is None or number < 4:
        raise ConfigError(f"{name} must be a whole number of points, at least 4 (e.g. 2000), not {value!r}")
    return number


def downsample_minmax(x: npt.ArrayLike, y: npt.ArrayLike, max_points: int = MAX_POINTS) -> tuple[Float64Array, Float64Array]:
    """Reduce a line to at most ``max_points`` points, keeping each bucket's minimum and maximum.

    The x span is cut into ``(max_points - 2) // 2`` equal-width buckets; from each non-empty
    bucket the first point holding its minimum and the first holding its maximum are kept, in
    their original order, plus the first and the last point of the line (so the newest rate is
    always drawn). Equal-width buckets keep gaps in the data visible as gaps. Every returned
    point is an input point, so nothing is invented; NaNs in ``y`` are ignored within a bucket.

    Args:
        x: Increasing x values (e.g. epoch milliseconds).
        y: The y values, same length as ``x``.
        max_points: Upper bound on the returned length; at least 4.

    Returns:
        ``(x, y)`` as float64 arrays; the inputs themselves (as float64) if already short enough.

    Raises:
        ConfigError: If the lengths differ, the input is not 1-D, or ``max_points`` is not a
            whole number of at least 4.
    """
    max_points = check_max_points(max_points)
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    if xs.ndim != 1 or ys.shape != xs.shape:
        raise ConfigError(f"x and y must be 1-D and of equal length, got {xs.shape} and {ys.shape}")
    n = len(xs)
    if n <= max_points:
        return xs, ys
    buckets = (max_points - 2) // 2
    lo, hi = xs[0], xs[-1]
    edges = lo + (hi - lo) * (np.arange(buckets, dtype=np.float64) / buckets)
    starts = np.unique(np.searchsorted(xs, edges, side="left"))
    starts = starts[starts < n]
    counts = np.diff(np.append(starts, n))
    keep = [np.array([0, n - 1])]
    for reduce in (np.fmin, np.fmax):
        extreme = reduce.reduceat(ys, starts)
        hits = np.flatnonzero(ys == np.repeat(extreme, counts))
        bucket = np.searchsorted(starts, hits, side="right") - 1
        _, first = np.unique(bucket, return_index=True)
        keep.append(hits[first])
    idx = np.unique(np.concatenate(keep))
    return xs[idx], ys[idx]


def ns_to_ms(ns: npt.ArrayLike) -> Float64Array:
    """Convert int64 epoch nanoseconds to float64 epoch milliseconds, what plotly.js reads on a date axis.

    A ``datetime64[ns]`` array in a FigureWidget is sent as integer nanoseconds, which plotly.js
    reads as milliseconds: dates land tens of thousands of years off (``NOTES.md``, "Plotly").
    Float64 keeps ~0.25 µs resolution at today's epoch and is sent as a binary buffer.
    """
    array = np.asarray(ns)
    if array.dtype.kind == "M":
        array = array.astype("datetime64[ns]").view(np.int64)
    return array.astype(np.float64) / 1e6


def window_start(newest_ns: int | None, window_ns: int | None) -> int | None:
    """The first time (ns) a chart with a visible span of ``window_ns`` shows: ``window_ns`` before the newest row.

    ``None`` (show everything) when there is no span or no row yet.
    """
    if window_ns is None or newest_ns is None:
        return None
    return newest_ns - window_ns


def windowed(t: Int64Array, r: Float64Array, since_ns: int | None, until_ns: int | None = None) -> Series:
    """The rows of one time-sorted series from ``since_ns`` (to ``until_ns``, inclusive) on; views, not copies.

    ``None`` leaves that end open.
    """
    start = 0 if since_ns is None else int(np.searchsorted(t, since_ns, side="left"))
    stop = len(t) if until_ns is None else int(np.searchsorted(t, until_ns, side="right"))
    if start == 0 and stop == len(t):
        return t, r
    return t[start:stop], r[start:stop]


def gap_threshold_ns(t: Int64Array, floor_ns: int = GAP_FLOOR_NS, factor: float = GAP_FACTOR) -> int:
    """How long a silence must be to count as missing data for one pair: ``max(floor, factor x median spacing)``.

    A pair updating ten times a second has a gap after 5 s of silence (the floor); one composed
    about once a second (BTC/EUR in the simulator) after 10 s, so its ordinary spacing never
    breaks its line.
    """
    if len(t) < 3:
        return floor_ns
    spacing = float(np.median(np.diff(t)))
    return max(floor_ns, int(factor * spacing))


def gaps_of(t: Int64Array, threshold_ns: int) -> tuple[Int64Array, Int64Array]:
    """Silences longer than ``threshold_ns`` in one sorted series: (last time before, first time after) each.

    The same rule as ``df.rates.gaps(threshold)`` (strictly longer), on NumPy arrays.
    """
    if len(t) < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    hit = np.flatnonzero(np.diff(t) > threshold_ns)
    return t[hit], t[hit + 1]


def break_gaps(x: Float64Array, y: Float64Array, starts: Float64Array) -> tuple[Float64Array, Float64Array]:
    """Insert a NaN point after each gap start, so plotly.js breaks the line there instead of drawing across it.

    ``x`` is increasing (the drawn, possibly decimated line) and ``starts`` are the x values at
    which gaps begin (the last point before each silence, in the same unit). The NaN goes
    between the last drawn point at or before a gap start and the next one, at their mid x.
    A chart never draws a line across missing data: nothing is invented.
    """
    if len(starts) == 0 or len(x) < 2:
        return x, y
    at = np.unique(np.searchsorted(x, starts, side="right"))
    at = at[(at > 0) & (at < len(x))]
    if len(at) == 0:
        return x, y
    mid = (x[at - 1] + x[at]) / 2.0
    return np.insert(x, at, mid), np.insert(y, at, np.nan)


def common_gaps(gaps: list[tuple[Int64Array, Int64Array]]) -> list[tuple[int, int]]:
    """The spans in which every series was silent (intersection of their gaps), e.g. a stop/start or a disconnect.

    Each entry of ``gaps`` is one series' (starts, ends), as :func:`gaps_of` returns. Shading
    only these keeps a chart honest: one quiet pair does not grey out the others.
    """
    if not gaps:
        return []
    spans = list(zip(gaps[0][0].tolist(), gaps[0][1].tolist(), strict=True))
    for starts, ends in gaps[1:]:
        other = list(zip(starts.tolist(), ends.tolist(), strict=True))
        merged: list[tuple[int, int]] = []
        i = j = 0
        while i < len(spans) and j < len(other):
            lo, hi = max(spans[i][0], other[j][0]), min(spans[i][1], other[j][1])
            if lo < hi:
                merged.append((lo, hi))
            if spans[i][1] < other[j][1]:
                i += 1
            else:
                j += 1
        spans = merged
        if not spans:
            break
    return spans


def rebase(r: Float64Array) -> Float64Array:
    """Rebase a rate series to 100 at its first value (unchanged if empty or if it starts at 0)."""
    if len(r) == 0 or r[0] == 0:
        return r
    rebased: Float64Array = r / float(r[0]) * 100.0  # r0 / r0 is exactly 1: the first point is exactly 100
    return rebased


def ohlc_arrays(t: Int64Array, r: Float64Array, freq_ns: int) -> dict[str, Float64Array]:
    """Open/high/low/close of ``r`` per ``freq_ns`` bucket of ``t`` (sorted int64 ns), left-labelled.

    Buckets are aligned on the Unix epoch, as ``resample`` aligns frequencies that divide a day.
    Empty buckets are left out. Returns ``x`` (bucket start, epoch ms) and the four prices.
    """
    if len(t) == 0:
        empty = np.empty(0, dtype=np.float64)
        return {"x": empty, "open": empty, "high": empty, "low": empty, "close": empty}
    bucket = t // freq_ns
    starts = np.flatnonzero(np.diff(bucket, prepend=bucket[0] - 1))
    ends = np.append(starts[1:], len(t)) - 1
    return {
        "x": ns_to_ms(bucket[starts] * freq_ns),
        "open": r[starts],
        "high": np.maximum.reduceat(r, starts),
        "low": np.minimum.reduceat(r, starts),
        "close": r[ends],
    }
