"""Thousands of pairs: the cost of a new pair, and of merging a big subscription, against naive baselines.

``pairs=None`` against the whole CoinAPI feed means thousands of assets. Two costs must stay
amortised O(1) per pair:

* **a new pair**: the first update of each of N distinct pairs, through the collector's real
  data path (``Session._deliver`` -> protocol -> ``Collector._on_rates`` -> ``RollingFrame``),
  one frame at a time (the worst case: every frame alone). Per-pair cost at 10,000 pairs vs at
  100; beside it, a naive frame that rebuilds its categorical tables on every new pair (what
  ``RollingFrame`` did before), in the same run.
* **a scope merge**: ``subscribe`` of 10,000 pairs into a 10,000-pair scope
  (``ClientProtocol.subscribe``), against a naive list-membership merge.

Usage::

    python benchmarks/bench_pairs.py            # about 20 s
    python benchmarks/bench_pairs.py --quick    # CI smoke: a few seconds
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import Stat, machine_line, print_table, record, record_stat  # noqa: E402

import coinrates_nb as cr  # noqa: E402
from coinrates_nb.client import Session  # noqa: E402
from coinrates_nb.collector import Collector  # noqa: E402
from coinrates_nb.messages import ExchangeRate  # noqa: E402
from coinrates_nb.protocol import ClientProtocol  # noqa: E402

SCRIPT = "bench_pairs.py"
ISO = "BASE_ALL_CROSSES_TO_REF"


def frames_for(n: int, start: int = 0) -> list[str]:
    """One exrate frame for each of ``n`` distinct pairs ``P<i>/USD``, stamped now."""
    now = time.time_ns() // 100 * 100
    return [ExchangeRate(f"P{i}", "USD", ISO, now + i * 100, 1.0 + i).to_json() for i in range(start, start + n)]


def new_pairs_cost(n: int) -> tuple[float, float]:
    """(total seconds, µs per pair) to store the first update of ``n`` distinct pairs, each frame alone."""
    rates = Collector(None, cr.Settings.resolve("ws://127.0.0.1:9"), max_rows=max(n, 1000))
    session = Session(rates.settings, rates.protocol, rates._on_rates, rates.telemetry)
    frames = frames_for(n)
    received = time.time_ns()
    gc.collect()
    began = time.process_time()
    for frame in frames:
        session._deliver([frame], received, 1)
    seconds = time.process_time() - began
    assert len(rates.frame.pairs) == n, "every pair must be stored"
    return seconds, seconds / n * 1e6


def naive_new_pairs_cost(n: int) -> float:
    """µs per pair of a frame that rebuilds a pair CategoricalDtype (and its base/quote ones) on each new pair."""
    names: list[str] = []
    gc.collect()
    began = time.process_time()
    for i in range(n):
        names.append(f"P{i}/USD")
        pd.CategoricalDtype(names)
        pd.CategoricalDtype([p.split("/")[0] for p in names])
        pd.CategoricalDtype(["USD"])
        pd.CategoricalDtype([ISO])
    return (time.process_time() - began) / n * 1e6


def merge_cost(n: int) -> tuple[float, float]:
    """(ours, naive) milliseconds to subscribe ``n`` new pairs into an ``n``-pair scope."""
    existing = [f"A{i}/USD" for i in range(n)]
    new = [f"B{i}/USD" for i in range(n)]
    protocol = ClientProtocol(existing)
    began = time.process_time()
    protocol.subscribe(new)
    ours = (time.process_time() - began) * 1e3
    assert len(protocol.scope.items or ()) == 2 * n
    scope = list(existing)
    began = time.process_time()
    for item in new:  # membership in a tuple/list per item: what Scope.add did before
        if item not in scope:
            scope.append(item)
    naive = (time.process_time() - began) * 1e3
    return ours, naive


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes for a CI smoke test")
    args = parser.parse_args(argv)
    runs = 2 if args.quick else 5
    big = 2_000 if args.quick else 10_000
    began = time.perf_counter()
    print(f"coinrates_nb many-pairs benchmark{' (--quick)' if args.quick else ''}: {machine_line()}")
    small_costs, big_costs, totals = [], [], []
    for _ in range(runs):  # alternate sizes, so drifts of the machine hit both alike
        small_costs.append(new_pairs_cost(100)[1])
        total, per_pair = new_pairs_cost(big)
        big_costs.append(per_pair)
        totals.append(total)
    ratio = Stat.of([b / s for s, b in zip(small_costs, big_costs, strict=True)])
    total = Stat.of(totals)
    naive_small = naive_new_pairs_cost(100)
    naive_big = naive_new_pairs_cost(min(big, 2_000))
    merges = [merge_cost(big) for _ in range(runs)]
    ours_merge, naive_merge = Stat.of([m[0] for m in merges]), Stat.of([m[1] for m in merges])
    rows = [
        (f"first update of {big:,} distinct pairs, each frame alone", total.show("s", 3) + "   target < 1 s: "
                                                                       + ("met" if total.median < 1.0 else "MISSED")),
        ("  per new pair at 100 pairs", Stat.of(small_costs).show("µs", 1)),
        (f"  per new pair at {big:,} pairs", Stat.of(big_costs).show("µs", 1)),
        (f"  at {big:,} / at 100 (paired runs)", ratio.show("", 2) + "   target <= 1.5: "
                                                 + ("met" if ratio.median <= 1.5 else "MISSED")),
        ("naive: categorical tables rebuilt per new pair, at 100", f"{naive_small:,.1f} µs"),
        (f"naive: the same, at {min(big, 2_000):,}", f"{naive_big:,.1f} µs = {naive_big / naive_small:,.0f}x at 100"),
        (f"subscribe {big:,} pairs into a {big:,}-pair scope", ours_merge.show("ms", 2)),
        ("  naive list-membership merge", f"{naive_merge.show('ms', 1)} = {naive_merge.median / ours_merge.median:,.0f}x"),
    ]
    record_stat(f"first update of {big:,} distinct pairs (total)", total, "s", target="< 1", met=total.median < 1.0,
                script=SCRIPT, note="each frame alone, through Session._deliver into the collector")
    record_stat(f"cost per new pair at {big:,} / at 100", ratio, "ratio", target="<= 1.5", met=ratio.median <= 1.5,
                script=SCRIPT, note=f"naive (tables rebuilt per pair): {naive_big / naive_small:,.0f}x at "
                                    f"{min(big, 2_000):,}")
    record(f"subscribe {big:,} into a {big:,}-pair scope", ours_merge.median, "ms", low=ours_merge.low,
           high=ours_merge.high, script=SCRIPT, note=f"naive list merge {naive_merge.median:,.0f} ms")
    print_table("thousands of pairs", rows)
    print(f"\ntotal {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
