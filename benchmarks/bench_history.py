"""History throughput: fetch + parse + merge of 1 day of 1SEC bars for 3 pairs, against a naive loop, same run.

The simulator serves the REST history from its own process (a server in the client's process
would share its GIL, ``../shared/NOTES.md``). A warm-up fetch fills its cache of final pages, so
every timed run measures the client side (HTTP, decompression, parsing, merging) on identical
bytes. Both sides fetch the same pages (``limit=100000``, one page per pair per day):

* **ours**: ``cr.history(pairs, start, end, "1SEC", url=...)``: aiohttp with gzip, typed msgspec
  decode, the 7-digit times of every column converted with NumPy, bars merged into one
  ``(pair, field)`` frame on a regular grid;
* **naive**: ``urllib.request`` (asking for gzip, as ``requests`` does by default) + ``json.loads`` +
  ``pd.DataFrame(list_of_dicts)`` + ``pd.to_datetime`` per page, then ``pd.concat`` of the pages
  and of the pairs (what a quick script does; ``requests`` is not a dependency, ``urllib``
  plays its part), one pair after the other.

Runs alternate (ours, naive, ours, ...) so both see the same machine. Figures: bars per second
of wall time (median [min-max]), and the client's CPU seconds per run.

Usage::

    python benchmarks/bench_history.py            # 1 day x 3 pairs, 5 runs each (~1 min)
    python benchmarks/bench_history.py --quick    # CI smoke: 2 hours x 3 pairs, 2 runs
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import Stat, machine_line, print_table, record_stat  # noqa: E402

from coinrates_nb.historical import history  # noqa: E402
from coinrates_nb.rest import MAX_LIMIT  # noqa: E402
from coinrates_nb.times import format_time  # noqa: E402

SCRIPT = "bench_history.py"
PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD")


@dataclass(frozen=True)
class Sizes:
    seconds: int
    runs: int


FULL = Sizes(seconds=86_400, runs=5)
QUICK = Sizes(seconds=7_200, runs=2)


def serve() -> int:
    """Child process: run a simulator, print its port, serve until stdin closes."""
    from coinrates_nb.sim import Simulator

    with Simulator(port=0, seed=1) as sim:
        print(sim.port, flush=True)
        sys.stdin.read()
    return 0


class Server:
    """The simulator in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError("the simulator process did not start")
        self.url = f"http://127.0.0.1:{int(line)}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ours(url: str, start: int, end: int) -> pd.DataFrame:
    return history(list(PAIRS), pd.Timestamp(start, unit="ns", tz="UTC"), pd.Timestamp(end, unit="ns", tz="UTC"),
                   "1SEC", url=url, progress=False)


def naive(url: str, start: int, end: int) -> pd.DataFrame:
    """urllib + json + list-of-dicts DataFrames + pd.concat, paging by moving time_start."""
    frames = {}
    for pair in PAIRS:
        base, quote = pair.split("/")
        pages = []
        cursor = format_time(start)
        while True:
            query = urllib.parse.urlencode({"period_id": "1SEC", "time_start": cursor, "time_end": format_time(end),
                                            "limit": MAX_LIMIT})
            request = urllib.request.Request(f"{url}/v1/exchangerate/{base}/{quote}/history?{query}",
                                             headers={"Accept-Encoding": "gzip"})  # as requests sends it
            with urllib.request.urlopen(request, timeout=60) as r:
                body = r.read()
                rows = json.loads(gzip.decompress(body) if r.headers.get("Content-Encoding") == "gzip" else body)
            page = pd.DataFrame(rows)
            page["time"] = pd.to_datetime(page["time_period_start"], format="ISO8601", utc=True)
            page = page.set_index("time")[["rate_open", "rate_high", "rate_low", "rate_close"]]
            page.columns = ["open", "high", "low", "close"]
            if pages:
                page = page[page.index > pages[-1].index[-1]]
            pages.append(page)
            if len(rows) < MAX_LIMIT:
                break
            cursor = rows[-1]["time_period_start"]
        frames[pair] = pd.concat(pages)
    return pd.concat(frames, axis=1, names=["pair", "field"])


def timed(fn: object, *args: object) -> tuple[float, float, pd.DataFrame]:
    began, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)  # type: ignore[operator]
    return time.perf_counter() - began, time.process_time() - cpu, out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="2 hours instead of a day, 2 runs (CI smoke)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve()
    logging.getLogger("coinrates_nb").setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL
    print(f"coinrates_nb history benchmark{' (--quick)' if args.quick else ''}: {machine_line()}")
    server = Server()
    try:
        end = (time.time_ns() - 3600 * 10**9) // 10**9 * 10**9  # wholly in the past: the server caches final pages
        start = end - sizes.seconds * 10**9
        bars = len(PAIRS) * sizes.seconds
        warm = ours(server.url, start, end)  # fills the server's cache; checks the shape
        assert warm.shape == (sizes.seconds, 4 * len(PAIRS)), warm.shape
        ours_rate, naive_rate, ours_cpu, naive_cpu = [], [], [], []
        check = None
        for _ in range(sizes.runs):
            wall, cpu, mine = timed(ours, server.url, start, end)
            ours_rate.append(bars / wall)
            ours_cpu.append(cpu)
            wall, cpu, theirs = timed(naive, server.url, start, end)
            naive_rate.append(bars / wall)
            naive_cpu.append(cpu)
            check = (mine, theirs)
        assert check is not None
        mine, theirs = check
        np.testing.assert_array_equal(mine[("BTC/USD", "close")].to_numpy(), theirs[("BTC/USD", "close")].to_numpy())
        assert mine.attrs["requests"] == len(PAIRS) * -(-sizes.seconds // MAX_LIMIT)
    finally:
        server.close()
    ours_stat, naive_stat = Stat.of(ours_rate), Stat.of(naive_rate)
    speedup = Stat.of([a / b for a, b in zip(ours_rate, naive_rate, strict=True)])
    label = f"{sizes.seconds // 3600} h" if sizes.seconds < 86_400 else f"{sizes.seconds // 86_400} day"
    note = f"{label} of 1SEC bars x {len(PAIRS)} pairs = {bars:,} bars, {len(PAIRS)} requests"
    record_stat(f"history fetch + parse + merge ({label} of 1SEC x {len(PAIRS)} pairs)", ours_stat, "bars/s",
                script=SCRIPT, note=note)
    record_stat("naive urllib + json + pd.concat history", naive_stat, "bars/s", script=SCRIPT,
                note=f"ours is {speedup.median:,.1f}x faster (paired runs)")
    print_table(f"history: {note}, {sizes.runs} paired runs", [
        ("ours (cr.history)", f"{ours_stat.show('bars/s', 0)}, CPU {Stat.of(ours_cpu).show('s')} per run"),
        ("naive urllib + json + pd.concat", f"{naive_stat.show('bars/s', 0)}, CPU {Stat.of(naive_cpu).show('s')} per run"),
        ("ours / naive", speedup.show("x")),
    ])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
