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

__all__ = ["MAX_POINTS", "Float64Array", "Int64Array", "Series", "check_max_points", "downsample_minmax",
           "ns_to_ms", "ohlc_arrays", "rebase", "window_start", "windowed"]

MAX_POINTS: Final = 2_000
"""Points per trace one redraw sends at most (~32 kB as two float64 buffers)."""

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


def windowed(t: Int64Array, r: Float64Array, since_ns: int | None) -> Series:
    """The rows of one time-sorted series from ``since_ns`` on (all of them for ``None``); views, not copies."""
    if since_ns is None:
        return t, r
    start = int(np.searchsorted(t, since_ns, side="left"))
    return t[start:], r[start:]


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
