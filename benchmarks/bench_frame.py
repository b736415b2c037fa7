"""Benchmark the rolling frame against the naive pandas ways, all measured in the same run.

Prints one table: append cost per row (small vs large ring, fresh vs after millions of appends,
against ``pd.concat`` of a 1-row frame per message), snapshot of a 100k-row window against
``pd.DataFrame(list_of_dicts)``, and bytes per row against a DataFrame of the same rows. Each
figure is the median of several runs with its spread, timed with ``time.perf_counter_ns``.

Usage::

    python benchmarks/bench_frame.py            # full: about a minute on a 2-core machine
    python benchmarks/bench_frame.py --quick    # tiny sizes, a few seconds: CI smoke
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import Stat  # noqa: E402  (the runner's figures file; benchmarks/ is on sys.path)
from _common import record as record_figure

from coinrates_nb._types import RATE_TYPES  # noqa: E402
from coinrates_nb.batch import RateBatch  # noqa: E402
from coinrates_nb.frame import RollingFrame  # noqa: E402

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z in ns
STEP = 1_000_000  # 1 ms between rows
PAIRS = ("BTC/USD", "ETH/USD", "SOL/EUR", "XRP/USDT", "ADA/BTC")
ISO = RATE_TYPES[0]


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; ``--quick`` shrinks everything."""

    runs: int
    chunk: int  # rows per timed append run
    small_ring: int
    large_ring: int
    long_run: int  # appends before the "after N appends" measurement
    naive_appends: int
    window: int  # rows in the snapshot window


FULL = Sizes(runs=7, chunk=100_000, small_ring=10_000, large_ring=1_000_000, long_run=5_000_000,
             naive_appends=3_000, window=100_000)
QUICK = Sizes(runs=3, chunk=10_000, small_ring=1_000, large_ring=100_000, long_run=100_000,
              naive_appends=200, window=10_000)


def row_lists(start: int, n: int) -> tuple[list[int], list[str], list[float], list[int]]:
    """Build the Python argument lists for ``n`` appends (outside any timer)."""
    times = list(range(T0 + start * STEP, T0 + (start + n) * STEP, STEP))
    pairs = [PAIRS[i % len(PAIRS)] for i in range(start, start + n)]
    rates = [100.0 + (i % 1000) * 0.01 for i in range(start, start + n)]
    received = [t + 2_500_000 for t in times]
    return times, pairs, rates, received


def time_appends(frame: RollingFrame, start: int, n: int) -> float:
    """Store ``n`` rows one by one (each a batch of one, as a frame received alone); return nanoseconds per row."""
    times, pairs, rates, received = row_lists(start, n)
    batches = [RateBatch([(*p.split("/"), ISO)], _ZERO, np.array([t], np.int64), np.array([r]))  # type: ignore[list-item]
               for t, p, r in zip(times, pairs, rates, strict=True)]
    extend = frame.extend
    gc.collect()
    began = time.process_time_ns()  # CPU time: other processes on the machine do not count
    for batch, rc in zip(batches, received, strict=True):
        extend(batch, rc)
    return (time.process_time_ns() - began) / n


_ZERO = np.zeros(1, np.intp)


def fill(frame: RollingFrame, start: int, n: int) -> None:
    """Append ``n`` rows in batches (untimed set-up)."""
    batch = 250_000
    for lo in range(start, start + n, batch):
        i = np.arange(lo, min(lo + batch, start + n))
        keys = [(*p.split("/"), ISO) for p in PAIRS]
        rows = RateBatch(keys, (i % len(PAIRS)).astype(np.intp), T0 + i * STEP, 100.0 + (i % 1000) * 0.01)  # type: ignore[arg-type]
        frame.extend(rows, T0 + i * STEP + 2_500_000)


def bench_append(sizes: Sizes) -> tuple[list[tuple[str, str]], float]:
    """Per-row append cost: small vs large ring, fresh vs after a long run; flat means O(1).

    Returns the table rows and the median µs/row after the long run.
    """
    out: list[tuple[str, str]] = []
    rings = {capacity: RollingFrame(max_rows=capacity) for capacity in (sizes.small_ring, sizes.large_ring)}
    costs: dict[int, list[float]] = {capacity: [] for capacity in rings}
    for capacity, frame in rings.items():
        fill(frame, 0, capacity)  # start full, so every timed append also evicts
    for k in range(sizes.runs):  # alternate the two rings, so a busier moment of the machine hits both
        for capacity, frame in rings.items():
            costs[capacity].append(time_appends(frame, capacity + k * sizes.chunk, sizes.chunk) / 1e3)
    for capacity in rings:
        out.append((f"RollingFrame.extend (a batch of one), full ring of {capacity:,}", Stat.of(costs[capacity]).show("µs/row", 3)))
    ratio = Stat.of([b / a for a, b in zip(costs[sizes.small_ring], costs[sizes.large_ring], strict=True)])
    record_figure(f"append at {sizes.large_ring:,} rows / at {sizes.small_ring:,}", ratio.median, "ratio",
                  low=ratio.low, high=ratio.high, target="0.8-1.2", met=0.8 <= ratio.median <= 1.2,
                  script="bench_frame.py", note=f"{Stat.of(costs[sizes.large_ring]).median:.3f} vs "
                                                f"{Stat.of(costs[sizes.small_ring]).median:.3f} µs/row, paired runs")

    frame = RollingFrame(max_rows=sizes.large_ring, window="15min")
    fresh = [time_appends(frame, k * sizes.chunk, sizes.chunk) for k in range(sizes.runs)]
    done = sizes.runs * sizes.chunk
    long_chunks = []
    while done < sizes.long_run:
        long_chunks.append(time_appends(frame, done, sizes.chunk))
        done += sizes.chunk
    later = [time_appends(frame, done + k * sizes.chunk, sizes.chunk) for k in range(sizes.runs)]
    first, late = Stat.of([v / 1e3 for v in fresh]), Stat.of([v / 1e3 for v in later])
    every = Stat.of([v / 1e3 for v in fresh + long_chunks + later])
    # Flat over time: the aged frame against a frame of the same shape that has just filled its window
    # (rows are 1 ms apart: a 15 min window holds 900k rows; before it fills nothing is evicted, which
    # is cheaper), timed alternately so that the machine's load drifts out of the ratio.
    young = RollingFrame(max_rows=sizes.large_ring, window="15min")
    filled = min(sizes.large_ring, 900_000) + sizes.chunk
    fill(young, 0, filled)
    aged_costs, young_costs = [], []
    for k in range(sizes.runs):
        aged_costs.append(time_appends(frame, done + (sizes.runs + k) * sizes.chunk, sizes.chunk) / 1e3)
        young_costs.append(time_appends(young, filled + k * sizes.chunk, sizes.chunk) / 1e3)
    aging = Stat.of([a / y for a, y in zip(aged_costs, young_costs, strict=True)])
    record_figure(f"append after {sizes.long_run:,} appends / just after the window filled", aging.median, "ratio",
                  low=aging.low, high=aging.high, target="<= 1.2", met=aging.median <= 1.2, script="bench_frame.py",
                  note=f"{Stat.of(aged_costs).median:.3f} vs {Stat.of(young_costs).median:.3f} µs/row, paired runs "
                       f"(before the window fills, evicting nothing: {first.median:.3f})")
    out += [
        (f"ring {sizes.large_ring:,} + 15min window, first appends", first.show("µs/row", 3)),
        (f"  same frame after {sizes.long_run:,} appends", late.show("µs/row", 3)),
        (f"  all {len(fresh) + len(long_chunks) + len(later)} runs of {sizes.chunk:,} rows", every.show("µs/row", 3)),
    ]
    return out, late.median


def naive_row(i: int) -> dict[str, Any]:
    """One message as a naive collector would store it."""
    pair = PAIRS[i % len(PAIRS)]
    base, quote = pair.split("/")
    t = T0 + i * STEP
    return {"time": pd.Timestamp(t, unit="ns", tz="UTC"), "pair": pair, "base": base, "quote": quote,
            "rate": 100.0 + (i % 1000) * 0.01, "rate_type": ISO,
            "received_at": pd.Timestamp(t + 2_500_000, unit="ns", tz="UTC")}


def bench_naive_concat(sizes: Sizes) -> tuple[list[tuple[str, str]], float]:
    """``df = pd.concat([df, 1-row frame])`` per message: cost per append early and late in the run."""
    df = pd.DataFrame([naive_row(0)])
    costs = []
    for i in range(1, sizes.naive_appends + 1):
        began = time.perf_counter_ns()
        df = pd.concat([df, pd.DataFrame([naive_row(i)])], ignore_index=True)
        costs.append((time.perf_counter_ns() - began) / 1e3)
    tenth = max(1, len(costs) // 10)
    first, last = Stat.percentiles(costs[:tenth]), Stat.percentiles(costs[-tenth:])
    n = sizes.naive_appends
    return [
        (f"naive pd.concat per message, appends 1-{tenth:,} of {n:,} (p10-p90)", first.show("µs/row", 1)),
        (f"naive pd.concat per message, appends {n - tenth + 1:,}-{n:,} (p10-p90)", last.show("µs/row", 1)),
    ], last.median


def timed(fn: Callable[[], Any], runs: int) -> tuple[Stat, Any]:
    """Run ``fn`` ``runs`` times; return milliseconds per call and the last result."""
    values, result = [], None
    for _ in range(runs):
        gc.collect()
        began = time.perf_counter_ns()
        result = fn()
        values.append((time.perf_counter_ns() - began) / 1e6)
    return Stat.of(values), result


def bench_snapshot_and_memory(sizes: Sizes) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Snapshot of a full window vs building a DataFrame from dicts; bytes per row of each."""
    n = sizes.window
    frame = RollingFrame(max_rows=n)
    fill(frame, 0, n + n // 2)  # wrapped: the snapshot copies two slices, the realistic case
    records = [naive_row(i) for i in range(n // 2, n + n // 2)]
    for record in records:  # what a list-based collector would hold: ints, not Timestamps
        record["time"] = record["time"].value
        record["received_at"] = record["received_at"].value

    def naive_same_dtypes() -> pd.DataFrame:
        df = pd.DataFrame(records)
        for column in ("pair", "base", "quote", "rate_type"):
            df[column] = df[column].astype("category")
        df["received_at"] = pd.to_datetime(df["received_at"], unit="ns", utc=True)
        df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("time"), unit="ns", utc=True), name="time")
        return df

    ours, snap = timed(frame.snapshot, sizes.runs)
    naive, naive_df = timed(lambda: pd.DataFrame(records), sizes.runs)
    same, same_df = timed(naive_same_dtypes, sizes.runs)
    assert len(snap) == len(naive_df) == len(same_df) == n
    record_figure(f"snapshot of {n:,} rows: list of dicts / ours", naive.median / ours.median, "x", target=">= 20",
                  met=naive.median / ours.median >= 20, script="bench_frame.py",
                  note=f"ours {ours.median:.2f} ms, pd.DataFrame(list_of_dicts) {naive.median:.1f} ms")
    timings = [
        (f"RollingFrame.snapshot(), {n:,} rows", ours.show("ms")),
        (f"pd.DataFrame(list_of_dicts), {n:,} rows", f"{naive.show('ms')}  = {naive.median / ours.median:,.1f}x ours"),
        ("  ... then converted to the snapshot's dtypes", f"{same.show('ms')}  = {same.median / ours.median:,.1f}x ours"),
    ]

    def per_row(df: pd.DataFrame) -> float:
        return float(df.memory_usage(deep=True, index=True).sum()) / len(df)

    record_figure("memory per row in the window", frame.nbytes / frame.capacity, "B/row", target="<= 32",
                  met=frame.nbytes / frame.capacity <= 32, script="bench_frame.py",
                  note=f"DataFrame of the same rows: {per_row(naive_df):,.0f} B/row (list of dicts), "
                       f"{per_row(snap):,.0f} B/row (snapshot)")
    memory = [
        ("RollingFrame ring columns (preallocated)", f"{frame.nbytes / frame.capacity:,.1f} B/row"),
        ("snapshot DataFrame, memory_usage(deep=True)", f"{per_row(snap):,.1f} B/row"),
        ("DataFrame(list_of_dicts), memory_usage(deep=True)", f"{per_row(naive_df):,.1f} B/row"),
    ]
    return timings, memory


def main(argv: Sequence[str] | None = None) -> int:
    """Run every section and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CI smoke run (< 5 s)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter_ns()

    append_rows, ours_late = bench_append(sizes)
    naive_rows, naive_late = bench_naive_concat(sizes)
    snapshot_rows, memory_rows = bench_snapshot_and_memory(sizes)

    sections = [
        ("append one row", append_rows + naive_rows),
        ("snapshot", snapshot_rows),
        ("memory", memory_rows),
    ]
    width = max(len(label) for _, rows in sections for label, _ in rows) + 2
    print(f"coinrates_nb.frame benchmark{' (--quick)' if args.quick else ''}: python {platform.python_version()}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, {sizes.runs} runs per figure")
    print("figures: median [min-max over runs] unless marked p10-p90 (single-message timings)")
    for title, rows in sections:
        print(f"\n{title}")
        print("-" * (width + 40))
        for label, value in rows:
            print(f"{label:<{width}}{value}")
    print(f"\nlate in its run, naive concat costs {naive_late / ours_late:,.0f}x an append to the ring "
          f"(and grows with the frame; the ring does not)")
    print(f"total {(time.perf_counter_ns() - began) / 1e9:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
