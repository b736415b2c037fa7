"""Library work per message (parse + timestamp + dedupe + store) against the cost of receiving one frame.

The ceiling of a pure-Python client is receiving a WebSocket frame with ``websockets``
(``../shared/NOTES.md``); what the library adds per message should be small next to it. Both are
measured in the same run, as CPU time per message (``time.process_time``, robust to other
processes on the machine):

* **bare receive**: a loop that only ``await ws.recv()``s frames from the feed process;
* **library work**: what the session does with frames once received, on the same frames:
  ``ClientProtocol.receive`` (typed decode, all times of the batch at once, vectorised
  validity, time sanity and per-pair dedupe) and the collector's store (one
  ``RollingFrame.extend`` into a full 100k-row window), driven through the real
  ``Session._deliver``. There is one path: a frame received alone is a batch of one. Batches are
  cut at the size the session forms under load (measured here, against the same feed) and at
  fixed sizes; the small sizes show what the scalar fast paths inside the parser, the dedupe and
  the frame (below ``messages._VECTOR_MIN`` frames) earn;
* **naive**: ``json.loads`` + ``pd.Timestamp`` + ``pd.concat`` of a one-row frame per message.

Usage::

    python benchmarks/bench_parse.py            # about a minute
    python benchmarks/bench_parse.py --quick    # CI smoke: a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import Stat, machine_line, print_table, record_stat  # noqa: E402
from feed import DEFAULT_PAIRS, FeedProcess, build_payloads  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

import coinrates_nb as cr  # noqa: E402
from coinrates_nb.batch import RateBatch  # noqa: E402
from coinrates_nb.client import Session  # noqa: E402
from coinrates_nb.collector import Collector  # noqa: E402
from coinrates_nb.messages import _SERVER, _VECTOR_MIN, Hello, parse_server_batch  # noqa: E402
from coinrates_nb.protocol import ClientProtocol  # noqa: E402
from coinrates_nb.times import times_ns  # noqa: E402

SCRIPT = "bench_parse.py"
TARGET_RATIO = 0.25


@dataclass(frozen=True)
class Sizes:
    frames: int  # bare loop frames per run
    runs: int
    window: int
    timed: int  # messages timed per library run (after the window is full)
    naive: int
    big_window: int  # the large window of the store-by-window-size figure


FULL = Sizes(frames=200_000, runs=7, window=100_000, timed=200_000, naive=2_000, big_window=1_000_000)
QUICK = Sizes(frames=40_000, runs=3, window=10_000, timed=30_000, naive=300, big_window=100_000)


def bare_cpu(url: str, pairs: Sequence[str], frames: int) -> float:
    """CPU µs per frame of a loop that only receives frames."""

    async def run() -> float:
        async with connect(url, max_queue=1024, max_size=1 << 20) as ws:
            await ws.send(Hello(assets=tuple(pairs)).to_json())
            await ws.recv()
            began = time.process_time()
            for _ in range(frames - 1):
                await ws.recv()
            return (time.process_time() - began) / (frames - 1) * 1e6

    return asyncio.run(run())


def session_batch_sizes(url: str, pairs: Sequence[str], updates: int, window: int) -> list[int]:
    """Sizes of the batches a collector forms against the feed (as fast as it can read)."""
    rates = cr.stream(list(pairs), url=url, max_rows=window, start=False)
    sizes: list[int] = []
    rates.add_listener(lambda batch, _received: sizes.append(len(batch)))
    rates.start()
    try:
        deadline = time.monotonic() + 120
        while rates.frame.appended < updates and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        rates.stop()
    return sizes


def offline_session(window: int) -> tuple[Collector, Session]:
    """A collector that is never started, and a session wired to it as ``Collector.start`` does."""
    rates = Collector(list(DEFAULT_PAIRS), cr.Settings.resolve("ws://127.0.0.1:9"), max_rows=window)
    session = Session(rates.settings, rates.protocol, rates._on_rates, rates.telemetry)
    return rates, session


def library_cpu(frames: list[str], window: int, batch: int) -> float:
    """CPU µs per message for the session's handling of ``frames`` in batches of ``batch`` (1: each frame alone)."""
    rates, session = offline_session(window)
    received = time.time_ns()
    warm, timed = frames[:window], frames[window:]

    def deliver(chunk: list[str]) -> None:
        session._deliver(chunk, received, 1)  # type: ignore[arg-type]

    for lo in range(0, len(warm), 4096):
        deliver(warm[lo:lo + 4096])
    chunks = [timed[lo:lo + batch] for lo in range(0, len(timed), batch)]
    gc.collect()
    began = time.process_time()
    for chunk in chunks:
        deliver(chunk)
    cost = (time.process_time() - began) / len(timed) * 1e6
    assert rates.frame.appended == len(frames) and len(rates.frame) == window
    return cost


def breakdown(frames: list[str], batch: int) -> dict[str, float]:
    """CPU µs per message of the stages of one batch: decode, times, the rest of parsing, dedupe, store."""
    chunks = [frames[lo:lo + batch] for lo in range(0, len(frames), batch)]
    n = len(frames)
    out: dict[str, float] = {}

    def clock(name: str, fn: Callable[[list[str]], object], inputs: Sequence[object]) -> list[object]:
        best = float("inf")
        for _ in range(3):  # best of three: a breakdown, not a headline
            gc.collect()
            began = time.process_time()
            results = [fn(x) for x in inputs]  # type: ignore[arg-type]
            best = min(best, time.process_time() - began)
        out[name] = best / n * 1e6
        return results

    clock("typed decode (msgspec, per frame)", lambda c: [_SERVER.decode(f) for f in c], chunks)
    texts = [[f[f.index('"time":"') + 8:][:28] for f in c] for c in chunks]
    clock("times of the batch (NumPy)", times_ns, texts)
    parsed = clock("parse_server_batch (all of parsing)", parse_server_batch, chunks)
    clock("per-pair dedupe (ClientProtocol.fresh)", lambda p: ClientProtocol(None).fresh(p.rates), parsed)  # type: ignore[attr-defined]
    rates, _ = offline_session(100_000)
    received = time.time_ns()
    clock("store (Collector._on_rates: extend ...)", lambda p: rates._on_rates(p.rates, received), parsed)  # type: ignore[attr-defined]
    return out


def store_by_window(frames: list[str], batch: int, windows: tuple[int, int], runs: int, rows: int) -> dict[int, list[float]]:
    """CPU µs per row of the collector's batch store (``Collector._on_rates``) into full windows of two sizes.

    The same parsed batch is stored again and again with its times moved forward, alternating
    between the two collectors, so the machine's load drifts out of the comparison.
    """
    template = parse_server_batch(frames[:batch]).rates
    span = int(template.time_ns[-1] - template.time_ns[0]) + 100
    stores = {w: offline_session(w)[0] for w in windows}
    shift = {w: 0 for w in windows}

    def store(window: int, n_batches: int) -> None:
        rates = stores[window]
        for _ in range(n_batches):
            shift[window] += span
            rates._on_rates(RateBatch(template.keys, template.code, template.time_ns + shift[window], template.rate), 0)

    for window in windows:
        store(window, -(-window // batch) + 1)  # fill: every timed row also evicts one
    costs: dict[int, list[float]] = {w: [] for w in windows}
    n_batches = max(1, rows // batch)
    for _ in range(runs):
        for window in windows:
            gc.collect()
            began = time.process_time()
            store(window, n_batches)
            costs[window].append((time.process_time() - began) / (n_batches * batch) * 1e6)
    return costs


def naive_cpu(frames: list[str], messages: int) -> Stat:
    """CPU µs per message of json.loads + pd.Timestamp + pd.concat, over the last tenth of the run."""
    df = pd.DataFrame()
    costs = []
    for data in frames[:messages]:
        began = time.process_time()
        msg = json.loads(data)
        row = {"time": pd.Timestamp(msg["time"]), "pair": f"{msg['asset_id_base']}/{msg['asset_id_quote']}",
               "rate": msg["rate"], "rate_type": msg["rate_type"]}
        df = pd.concat([df, pd.DataFrame([row])], ignore_index=True)
        costs.append((time.process_time() - began) * 1e6)
    tail = costs[-max(1, messages // 10):]
    return Stat(float(np.median(tail)), float(np.percentile(tail, 10)), float(np.percentile(tail, 90)), len(tail))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs for a CI smoke test")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    print(f"coinrates_nb library-work benchmark{' (--quick)' if args.quick else ''}: {machine_line()}")
    print(f"CPU time per message; {sizes.runs} runs per figure, median [min-max]; store into a full "
          f"{sizes.window:,}-row window")

    frames = [p.decode() for p in build_payloads(sizes.window + sizes.timed)]
    with FeedProcess(frames=sizes.frames) as feed:
        formed = session_batch_sizes(feed.url, feed.pairs, sizes.frames, sizes.window)
        observed = int(np.median(formed)) if formed else 64
        bares, ours = [], []
        for _ in range(sizes.runs):  # alternate, so slow drifts of the machine hit both alike
            bares.append(bare_cpu(feed.url, feed.pairs, sizes.frames))
            ours.append(library_cpu(frames, sizes.window, observed))
    bare, headline = Stat.of(bares), Stat.of(ours)
    ratio = Stat.of([o / b for o, b in zip(ours, bares, strict=True)])
    met = ratio.median <= TARGET_RATIO

    rows: list[tuple[str, str]] = [
        ("bare websockets receive, per frame", bare.show("µs", 2)),
        (f"library work, batches of {observed:,} (formed under load)", headline.show("µs", 2)),
        ("  library / bare receive (paired runs)", f"{ratio.show('', 3)}   target <= {TARGET_RATIO}: "
                                                  f"{'met' if met else 'MISSED'}"),
        (f"  frames per batch under load (median of {len(formed):,})", f"{observed:,}"),
    ]
    by_batch: dict[int, Stat] = {}
    for batch in sorted({1, 4, _VECTOR_MIN, 64, 256, 1024}):
        stat = by_batch[batch] = Stat.of([library_cpu(frames, sizes.window, batch) for _ in range(max(3, sizes.runs // 2))])
        label = "a frame alone (batch of 1, scalar paths)" if batch == 1 else f"batches of {batch:,}"
        rows.append((f"library work, {label}", f"{stat.show('µs', 2)} = {stat.median / bare.median:.0%} of a frame"))
    naive = naive_cpu(frames, sizes.naive)
    rows.append((f"naive json + pd.concat, messages {sizes.naive * 9 // 10:,}-{sizes.naive:,} (p10-p90)",
                 f"{naive.show('µs', 0)} = {naive.median / headline.median:,.0f}x ours"))
    record_stat("library work per message / bare receive per frame", ratio, "ratio", target=f"<= {TARGET_RATIO}",
                met=met, script=SCRIPT, note=f"{headline.median:.2f} vs {bare.median:.2f} µs CPU; batches of {observed:,}")
    record_stat("library work per message, a frame alone (batch of 1)", by_batch[1], "µs", script=SCRIPT,
                note=f"{by_batch[1].median / bare.median:.0%} of a {bare.median:.2f} µs frame: why queued frames are batched")
    record_stat("naive json + pd.concat per message", naive, "µs", script=SCRIPT,
                note=f"{naive.median / headline.median:,.0f}x ours, at {sizes.naive:,} rows")
    small, large = 10_000, sizes.big_window
    stored = store_by_window(frames, observed, (small, large), sizes.runs, sizes.timed)
    growth = Stat.of([b / a for a, b in zip(stored[small], stored[large], strict=True)])
    rows.append((f"store per row, batches of {observed:,}: {large:,} | {small:,}-row window",
                 f"{Stat.of(stored[large]).show('µs', 3)} | {Stat.of(stored[small]).show('µs', 3)}"))
    record_stat(f"batch store per row at {large:,} rows / at {small:,}", growth, "ratio", target="0.8-1.2",
                met=0.8 <= growth.median <= 1.2, script=SCRIPT,
                note=f"the collector's own write path (extend, batches of {observed:,}), paired runs")
    stages = breakdown(frames[:sizes.timed], observed)
    print_table("library work per message vs receiving one frame", rows)
    print_table(f"where library time goes, batches of {observed:,} (µs per message)",
                [(name, f"{value:.3f}") for name, value in stages.items()])
    print(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
