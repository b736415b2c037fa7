"""End-to-end ingest: the collector against a bare ``websockets`` receive loop on the same feed, same run.

The feed (:mod:`benchmarks/feed.py`) runs in its own process and writes pre-built frames as fast
as the socket takes them, so the client is the bottleneck (``../shared/NOTES.md``). Per run:

* **bare**: ``websockets`` ``connect`` (the collector's options) + ``await ws.recv()`` in a loop,
  doing nothing with the frames: the ceiling of a pure-Python client;
* **collector**: ``cr.stream(...)`` with a 100k-row window and ``cr.live_chart(..., fps=2)``
  redrawing from its own thread, i.e. parse + timestamps + dedupe + store + a 2 Hz chart;
* **naive**: ``json.loads`` + ``pd.concat`` of a one-row frame per message, on a short feed
  (it slows down as it grows, so its rate depends on the length: stated in the label).

Rates are updates per second from the first frame received to the last one stored; bare and
collector runs alternate, and the ratio is the median of the paired ratios (spread: min-max).

Usage::

    python benchmarks/bench_ingest.py           # 300k updates per run, 5 runs: about 1.5 minutes
    python benchmarks/bench_ingest.py --quick   # CI smoke: about 15 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import Stat, machine_line, print_table, record, record_stat  # noqa: E402
from feed import FeedProcess  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

import coinrates_nb as cr  # noqa: E402
from coinrates_nb.messages import Hello  # noqa: E402

SCRIPT = "bench_ingest.py"
TARGET_RATIO = 0.75


@dataclass(frozen=True)
class Sizes:
    updates: int  # per run
    runs: int
    window: int
    naive: int  # messages for the naive client


FULL = Sizes(updates=300_000, runs=5, window=100_000, naive=3_000)
QUICK = Sizes(updates=60_000, runs=2, window=20_000, naive=500)


def hello(pairs: Sequence[str]) -> str:
    return Hello(assets=tuple(pairs)).to_json()


@dataclass(frozen=True)
class Run:
    """One run: updates per second (wall clock) and CPU µs per update (the whole process)."""

    rate: float
    cpu_us: float


def bare(url: str, pairs: Sequence[str], frames: int) -> Run:
    """A loop that only receives frames (with the collector's connect options)."""

    async def run() -> Run:
        async with connect(url, max_queue=1024, max_size=1 << 20, compression="deflate") as ws:
            await ws.send(hello(pairs))
            await ws.recv()
            began, cpu = time.perf_counter(), time.process_time()
            for _ in range(frames - 1):
                await ws.recv()
            return Run((frames - 1) / (time.perf_counter() - began),
                       (time.process_time() - cpu) / (frames - 1) * 1e6)

    return asyncio.run(run())


def collector(url: str, pairs: Sequence[str], updates: int, window: int, chart_fps: float | None,
              timeout: float = 300.0) -> tuple[Run, list[int], float]:
    """A collector (with a live chart) storing the feed; its batch sizes and chart redraws per second."""
    rates = cr.stream(list(pairs), url=url, max_rows=window, start=False)
    first: list[tuple[int, float]] = []
    end: list[tuple[int, float]] = []
    sizes: list[int] = []
    done = threading.Event()

    def on_first(_msg: object, received_ns: int) -> None:
        first.append((received_ns, time.process_time()))
        remove_first()

    def on_batch(batch: object, _received_ns: int) -> None:
        sizes.append(len(batch))  # type: ignore[arg-type]
        if not done.is_set() and rates.frame.appended >= updates:
            end.append((time.time_ns(), time.process_time()))
            done.set()

    remove_first = rates.add_listener(on_first)
    rates.add_listener(on_batch)
    fig = cr.live_chart(rates, fps=chart_fps) if chart_fps else None
    view = getattr(fig, "_coinrates_view", None)
    redraws = view.redraws if view is not None else 0
    began = time.monotonic()
    rates.start()
    try:
        while not done.wait(0.02):  # the last rows may come one by one (no batch listener call)
            if rates.frame.appended >= updates:
                end.append((time.time_ns(), time.process_time()))
                break
            if time.monotonic() - began > timeout:
                raise TimeoutError(f"collector stored {rates.frame.appended:,} of {updates:,} updates")
            if rates.status.state == "error":
                raise RuntimeError(f"collector failed: {rates.status.last_error}")
        seconds = (end[0][0] - first[0][0]) / 1e9
        redraw_rate = (view.redraws - redraws) / seconds if view is not None else 0.0
        run = Run((updates - 1) / seconds, (end[0][1] - first[0][1]) / (updates - 1) * 1e6)
        return run, sizes, redraw_rate
    finally:
        if fig is not None:
            fig.close()
        rates.stop()


def naive(url: str, pairs: Sequence[str], messages: int) -> float:
    """Messages per second of json.loads + pd.concat of a one-row DataFrame per message."""

    async def run() -> float:
        df = pd.DataFrame()
        async with connect(url, max_queue=1024) as ws:
            await ws.send(hello(pairs))
            began = time.perf_counter()
            for _ in range(messages):
                msg = json.loads(await ws.recv())
                row = {"time": pd.Timestamp(msg["time"]), "pair": f"{msg['asset_id_base']}/{msg['asset_id_quote']}",
                       "rate": msg["rate"], "rate_type": msg.get("rate_type")}
                df = pd.concat([df, pd.DataFrame([row])], ignore_index=True)
            assert len(df) == messages
            return messages / (time.perf_counter() - began)

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs for a CI smoke test")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    print(f"coinrates_nb ingest benchmark{' (--quick)' if args.quick else ''}: {machine_line()}")
    print(f"feed: separate process, pre-built frames; {sizes.updates:,} updates per run, {sizes.runs} runs; "
          f"figures: median [min-max]")

    rows: list[tuple[str, str]] = []
    with FeedProcess(frames=sizes.updates) as feed:
        pairs = feed.pairs
        bares: list[Run] = []
        ours: list[Run] = []
        all_sizes: list[int] = []
        redraws: list[float] = []
        for _ in range(sizes.runs):  # alternate, so slow drifts of the machine hit both alike
            bares.append(bare(feed.url, pairs, sizes.updates))
            run, batch_sizes, redraw_rate = collector(feed.url, pairs, sizes.updates, sizes.window, chart_fps=2.0)
            ours.append(run)
            all_sizes += batch_sizes
            redraws.append(redraw_rate)
        naive_rate = naive(feed.url, pairs, sizes.naive)
    bare_s, ours_s = Stat.of([r.rate for r in bares]), Stat.of([r.rate for r in ours])
    ratio_s = Stat.of([o.rate / b.rate for o, b in zip(ours, bares, strict=True)])
    cpu_bare, cpu_ours = Stat.of([r.cpu_us for r in bares]), Stat.of([r.cpu_us for r in ours])
    cpu_ratio = Stat.of([b.cpu_us / o.cpu_us for o, b in zip(ours, bares, strict=True)])
    median_batch = float(np.median(all_sizes)) if all_sizes else 0.0
    met = ratio_s.median >= TARGET_RATIO
    rows += [
        ("bare websockets receive loop", bare_s.show("frames/s", 0)),
        (f"collector, {sizes.window:,}-row window + chart at 2 Hz", ours_s.show("updates/s", 0)),
        ("  collector / bare, updates per second", f"{ratio_s.show('', 3)}   target >= {TARGET_RATIO:.2f}: "
                                                  f"{'met' if met else 'MISSED'}"),
        ("  CPU per message: bare | collector", f"{cpu_bare.show('µs', 2)} | {cpu_ours.show('µs', 2)}"),
        ("  bare / collector CPU per message", f"{cpu_ratio.show('', 3)}   (same figure, free of scheduling noise)"),
        ("  frames per batch (median over batches)", f"{median_batch:,.0f}"),
        ("  chart redraws per second", Stat.of(redraws).show("", 2)),
        (f"naive json + pd.concat per message, {sizes.naive:,} msgs", f"{naive_rate:,.0f} updates/s  = "
                                                                      f"{ours_s.median / naive_rate:,.0f}x slower than ours"),
    ]
    record_stat("end-to-end ingest / bare websockets", ratio_s, "ratio", target=f">= {TARGET_RATIO}", met=met,
                script=SCRIPT, note=f"{ours_s.median:,.0f} vs {bare_s.median:,.0f} per s (CPU-time ratio "
                                    f"{cpu_ratio.median:.2f}); {sizes.window:,}-row window, 2 Hz chart")
    record("naive json + pd.concat ingest", naive_rate, "updates/s", script=SCRIPT,
           note=f"ours is {ours_s.median / naive_rate:,.0f}x faster ({sizes.naive:,} msgs)")

    print_table("end-to-end ingest, one update per frame (as CoinAPI sends them)", rows)
    print(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
