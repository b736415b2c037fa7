"""Benchmark one live-chart refresh at a 100k-row window against the naive way, measured in the same run.

A refresh is what the refresher does a few times a second: snapshot the rolling frame, split it
per pair, window and decimate each line to at most 2,000 points (min/max per bucket), convert
times to float64 epoch ms, and update the FigureWidget's traces inside ``batch_update()``. The
naive baseline sends every point with ``datetime64[ns]`` x, as ``trace.x = df.index[...]``
would. Each comm message is serialised the way the kernel does it (JSON for the message, binary
buffers as they are) so the Python cost and the bytes on the wire are both counted.

Printed per configuration: payload bytes per trace (target <= 64 kB), Python ms per refresh, and
the share of one core at 2 redraws/s (target <= 5 %), with a breakdown of our refresh. Figures are
medians over runs with [min-max]. Exits 1 if a target is missed.

Usage::

    python benchmarks/bench_refresh.py            # full: 100k-row window, about 30 s on 2 cores
    python benchmarks/bench_refresh.py --quick    # 10k-row window, a few seconds: CI smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import plotly.graph_objects as go  # noqa: E402
from _common import Stat  # noqa: E402  (the runner's figures file; benchmarks/ is on sys.path)
from _common import record as record_figure

from coinrates_nb.batch import RateBatch  # noqa: E402
from coinrates_nb.frame import RollingFrame  # noqa: E402
from coinrates_nb.status import Status  # noqa: E402
from coinrates_nb.ui.plots import ChartView, date_template  # noqa: E402
from coinrates_nb.ui.refresh import Tick  # noqa: E402
from coinrates_nb.ui.series import MAX_POINTS, downsample_minmax, ns_to_ms  # noqa: E402

T0 = 1_735_689_600_000_000_000  # 2025-01-01T00:00:00Z in ns
STEP = 10_000_000  # 10 ms between rows
TARGET_BYTES_PER_TRACE = 64_000
TARGET_CORE_PCT_AT_2HZ = 5.0


@dataclass(frozen=True)
class Sizes:
    """How much work the run does; ``--quick`` shrinks it."""

    window: int  # rows in the rolling frame
    runs: int
    naive_runs: int


FULL = Sizes(window=100_000, runs=15, naive_runs=5)
QUICK = Sizes(window=10_000, runs=5, naive_runs=3)


class Source:
    """A collector stand-in: a full rolling frame that grows by a few rows before each refresh."""

    def __init__(self, rows: int, pairs: Sequence[str]) -> None:
        self.pairs = tuple(pairs)
        self.keys = [(*pair.split("/"), "BASE_QUOTE_ISOLATED") for pair in self.pairs]
        self.frame = RollingFrame(max_rows=rows)
        self.next = T0
        self.rng = np.random.default_rng(1)
        self.add(rows)

    def add(self, n: int) -> None:
        """Store ``n`` rows, cycling through the pairs, as one batch built from columns (no per-row objects)."""
        times = self.next + STEP * np.arange(n, dtype=np.int64)
        self.next = int(times[-1]) + STEP
        codes = np.arange(n, dtype=np.intp) % len(self.pairs)
        rates = 100 + np.cumsum(self.rng.normal(0, 0.1, n))
        self.frame.extend(RateBatch(self.keys, codes, times, rates), times)

    @property
    def status(self) -> Status:
        return Status(state="connected", source="simulated", url=None, scope=self.pairs, messages=0, rates=0,
                      msgs_per_s=0.0, heartbeats=0, unknown=0, rejected={}, duplicates=0, connections=1,
                      reconnects=0, server_errors=0, last_error=None, lag_ms=None, stale_pairs=(),
                      rows=len(self.frame), uptime_s=0.0)


class Wire:
    """Stands in for the kernel comm: serialises each message like ipykernel and counts its bytes."""

    def __init__(self, widget: Any) -> None:
        self.bytes = 0
        widget.comm.send = self.send

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.bytes += len(json.dumps(data, default=str).encode())
        self.bytes += sum(memoryview(b).nbytes for b in buffers or ())


def new_figure(pairs: Sequence[str]) -> Any:
    fig = go.FigureWidget(layout=dict(template=date_template(), xaxis=dict(type="date")))
    for pair in pairs:
        fig.add_trace(go.Scatter(x=[], y=[], name=pair, mode="lines"))
    return fig


def measure(refresh: Callable[[], None], source: Source, wire: Wire, runs: int) -> tuple[Stat, Stat]:
    """Time ``refresh`` ``runs`` times (new rows before each, untimed); return ms and bytes per refresh."""
    ms, sent = [], []
    refresh()  # warm-up: first-use imports and validator caches
    for _ in range(runs):
        source.add(10)
        wire.bytes = 0
        gc.collect()
        began = time.perf_counter_ns()
        refresh()
        ms.append((time.perf_counter_ns() - began) / 1e6)
        sent.append(wire.bytes)
    return Stat.of(ms), Stat.of(sent)


def bench_ours(source: Source, runs: int) -> tuple[Stat, Stat, dict[str, Stat]]:
    """Our refresh through the real ChartView, plus a breakdown of its stages."""
    fig = new_figure(source.pairs)
    view = ChartView(fig, None, None, fps=2, max_points=MAX_POINTS)
    wire = Wire(fig)
    version = [0]

    def refresh() -> None:
        version[0] += 1
        assert view.run(Tick(source), time.monotonic(), version[0]), view.last_error

    ms, sent = measure(refresh, source, wire, runs)
    stages: dict[str, list[float]] = {"snapshot + split per pair": [], "window + min/max + ms": [],
                                      "plotly update + serialise": []}
    for _ in range(runs):
        source.add(10)
        t0 = time.perf_counter_ns()
        tick = Tick(source)
        _ = tick.series
        t1 = time.perf_counter_ns()
        lines = {pair: downsample_minmax(ns_to_ms(t), r, MAX_POINTS) for pair, (t, r) in tick.series.items()}
        t2 = time.perf_counter_ns()
        with fig.batch_update():
            for trace in fig.data:
                trace.x, trace.y = lines[trace.name]
        t3 = time.perf_counter_ns()
        for name, value in zip(stages, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            stages[name].append(value / 1e6)
    fig.close()
    return ms, sent, {name: Stat.of(values) for name, values in stages.items()}


def bench_naive(source: Source, runs: int) -> tuple[Stat, Stat]:
    """Every point, datetime64[ns] x, one batch_update per refresh."""
    fig = new_figure(source.pairs)
    wire = Wire(fig)

    def refresh() -> None:
        df = source.frame.snapshot()
        with fig.batch_update():
            for trace in fig.data:
                rows = df[df["pair"] == trace.name]
                trace.x = rows.index.to_numpy()  # datetime64[ns]: sent as a list of int ns
                trace.y = rows["rate"].to_numpy()

    result = measure(refresh, source, wire, runs)
    fig.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Run both configurations and print the table; return 1 if a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k-row window and fewer runs (CI smoke)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter_ns()
    print(f"coinrates_nb.ui chart refresh benchmark{' (--quick)' if args.quick else ''}: python "
          f"{platform.python_version()}, {sizes.window:,}-row window, max {MAX_POINTS:,} points per trace")
    print("figures: median [min-max] over runs; one refresh = snapshot -> traces -> one comm update")
    ok = True
    for pairs in (("BTC/USD",), ("BTC/USD", "ETH/USD", "BTC/EUR")):
        source = Source(sizes.window, pairs)
        n = len(pairs)
        ours_ms, ours_bytes, stages = bench_ours(source, sizes.runs)
        naive_ms, naive_bytes = bench_naive(source, sizes.naive_runs)
        per_trace = ours_bytes.median / n
        core = ours_ms.median * 2 / 1000 * 100
        ok &= per_trace <= TARGET_BYTES_PER_TRACE and core <= TARGET_CORE_PCT_AT_2HZ
        where = f"{sizes.window:,}-row window, {n} trace{'s' * (n != 1)}"
        record_figure(f"chart refresh payload per trace ({where})", per_trace / 1000, "kB", target="<= 64",
                      met=per_trace <= TARGET_BYTES_PER_TRACE, script="bench_refresh.py",
                      note=f"naive datetime64: {naive_bytes.median / n / 1000:,.0f} kB")
        record_figure(f"chart refresh Python at 2 Hz ({where})", core, "% core", target="<= 5",
                      met=core <= TARGET_CORE_PCT_AT_2HZ, low=ours_ms.low * 0.2, high=ours_ms.high * 0.2,
                      script="bench_refresh.py", note=f"{ours_ms.median:.1f} ms per refresh; naive {naive_ms.median * 0.2:.0f} %")
        title = f"{n} trace{'s' * (n != 1)}, {sizes.window // n:,} rows each"
        width = 40
        print(f"\n{title}\n" + "-" * (width + 44))
        rows = [
            ("payload per trace, ours", f"{per_trace / 1000:,.1f} kB   (target <= {TARGET_BYTES_PER_TRACE // 1000} kB)"),
            ("payload per trace, naive datetime64", f"{naive_bytes.median / n / 1000:,.1f} kB"),
            ("Python per refresh, ours", ours_ms.show("ms", 2)),
            ("Python per refresh, naive", naive_ms.show("ms", 1)),
            ("one core at 2 redraws/s, ours", f"{core:.2f} %   (target <= {TARGET_CORE_PCT_AT_2HZ:g} %)"),
            ("one core at 2 redraws/s, naive", f"{naive_ms.median * 2 / 10:.1f} %"),
            ("naive / ours: bytes, time", f"{naive_bytes.median / ours_bytes.median:,.0f}x, "
                                         f"{naive_ms.median / ours_ms.median:,.0f}x"),
        ] + [(f"  ours: {name}", stat.show("ms", 2)) for name, stat in stages.items()]
        for label, value in rows:
            print(f"{label:<{width}}{value}")
    print(f"\ntargets {'met' if ok else 'MISSED'}; total {(time.perf_counter_ns() - began) / 1e9:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
