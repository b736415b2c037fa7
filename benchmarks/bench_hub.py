"""One hub -> 10 consumers over NATS JetStream, against 10 direct connections to the simulator.

Every party runs in its own process, as on a desk: the simulator (``--serve-sim``), the hub with
its embedded nats-server (this process), and each consumer (``--consume``), a plain
``cr.stream(pairs, url="nats://...")`` collector that measures itself after a warm-up:

* **throughput**: updates stored per second, summed over the consumers (target >= 10,000/s);
* **latency**: from the hub receiving an update from upstream to the consumer having stored it
  (``Coinrates-Hub-Received`` header to after ``Collector._on_rates``), p50/p99 over every
  update of the window, all consumers pooled (target p99 <= 50 ms on loopback), and its two legs
  per update: hub receive -> JetStream stored (the ack's timestamp on the delivery: the hub's
  collector, queue and publish window) and JetStream stored -> consumer store (the server's
  fan-out to ten push consumers, then the consumer's parse and store). The consumers first
  catch up with their window fill and warm up, then all measure the same wall-clock window.
  Ten consumer processes plus hub, broker and simulator share the machine's cores, so on a
  2-core machine the tail is scheduling: read it with the CPU that other programs used during
  the window (the machine's, from ``/proc/stat``, less this benchmark's processes), printed beside it;
* **CPU per consumer**: the consumer process's CPU time over the window, in % of one core.

Then the same 10 notebooks connect to the simulator directly (``--direct``): upstream
connections and rates delivered over the same window, which is what CoinAPI bills (per rate
delivered, ``../shared/protocol/exrates-rest.md``): 10 connections and 10x the rates, against 1.

Usage::

    python benchmarks/bench_hub.py           # 10 pairs x 120 Hz = 1,200 updates/s into the hub, 20 s windows
    python benchmarks/bench_hub.py --quick   # CI smoke: 110 Hz, 4 s windows (under a minute)
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from _common import machine_line, print_table, record  # noqa: E402

SCRIPT = "bench_hub.py"
T = TypeVar("T")
PAIRS = ["BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD", "LTC/USD", "DOT/USD", "LINK/USD",
         "AVAX/USD"]
CONSUMERS = 10
TARGET_RATE = 10_000
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class Sizes:
    rate_hz: float  # per pair, into the hub
    warmup: float
    seconds: float


FULL = Sizes(rate_hz=120.0, warmup=5.0, seconds=20.0)
QUICK = Sizes(rate_hz=110.0, warmup=1.0, seconds=4.0)


# ------------------------------------------------------------------------------------ child processes


def serve_sim(rate_hz: float) -> int:
    """The simulator in its own process: prints its port, answers ``stats`` on stdin, stops at EOF."""
    from coinrates_nb.sim.server import Simulator

    sim = Simulator(port=0, seed=5, rate_hz=rate_hz, batch=1, ping_interval=None).start()
    print(sim.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "stats":
            print(json.dumps({"total_connections": sim.total_connections, "connections": sim.connections,
                              "sent_total": sim.sent_total}), flush=True)
    sim.stop()
    return 0


def consume(url: str, warmup: float, seconds: float) -> int:
    """One notebook: stream from ``url`` (a hub or the simulator), measure a window after the warm-up, print JSON."""
    import coinrates_nb as cr

    rates = cr.stream(PAIRS, url=url, max_rows=200_000)
    try:
        rates.wait(timeout=60)
        session = rates._session  # the NatsSession of a hub consumer: its backlog and latency samples
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # caught up with the window fill: live from here
            lag = rates.telemetry.lag_ns
            if getattr(session, "backlog", 0) == 0 and lag is not None and lag < 500_000_000:
                break
            time.sleep(0.05)
        time.sleep(warmup)
        print("ready", flush=True)
        sys.stdin.readline()  # "go": every consumer measures the same wall-clock window
        samples = getattr(session, "latency_ns", None)  # a hub consumer's samples: taken and cleared on its
        hub_leg = getattr(session, "hub_leg_ns", None)  # loop thread, so the two series stay aligned per update
        on_loop(rates, lambda: [kept.clear() for kept in (samples, hub_leg) if kept is not None])
        n0, cpu0, t0, w0 = rates.status.rates, time.process_time(), time.perf_counter(), time.time()
        time.sleep(seconds)
        n1, cpu1, t1, w1 = rates.status.rates, time.process_time(), time.perf_counter(), time.time()
        total_ns, first_ns = on_loop(rates, lambda: (list(samples or ()), list(hub_leg or ())))
        latency = np.asarray(total_ns, np.int64) / 1e6
        first = np.asarray(first_ns, np.int64) / 1e6  # hub receive -> JetStream stored
        status = rates.status
        print(json.dumps({"rates": n1 - n0, "seconds": t1 - t0, "cpu_s": cpu1 - cpu0, "from": w0, "to": w1,
                          "latency_ms": latency.tolist(), "hub_leg_ms": first.tolist(),
                          "connections": status.connections, "duplicates": status.duplicates,
                          "state": status.state}), flush=True)
    finally:
        rates.stop()
    return 0


def on_loop(rates: Any, fn: Callable[[], T]) -> T:
    """``fn()`` run on the collector's loop thread (where its session appends samples), its result here."""
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    rates._loop.call_soon_threadsafe(lambda: done.set_result(fn()))
    return done.result(10)


# ------------------------------------------------------------------------------------ orchestration


class SimProcess:
    """The simulator child: its URL and its counters."""

    def __init__(self, rate_hz: float) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-sim", str(rate_hz)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.url = f"ws://127.0.0.1:{int(self.proc.stdout.readline())}/"

    def stats(self) -> dict[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(30)


def cpu_seconds(pids: Sequence[int]) -> tuple[float, float]:
    """CPU seconds used so far by the whole machine (all cores) and by ``pids``; ``nan`` off Linux."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        machine = (sum(fields[:8]) - fields[3] - fields[4]) / tick  # all but idle and iowait
        ours = 0.0
        for pid in pids:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ours += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
        return machine, ours
    except (OSError, ValueError, IndexError):
        return float("nan"), float("nan")


def run_consumers(url: str, sizes: Sizes, ours: Sequence[int]) -> tuple[list[dict[str, Any]], float]:
    """Start ``CONSUMERS`` consumer processes on ``url``; return what each measured and the CPU of other programs.

    The second figure is the machine's CPU over the measured window less that of this benchmark's
    own processes (``ours``: simulator, hub, nats-server; the consumers report theirs), in % of one
    core: what else was running, which is what a latency tail on a small machine mostly is.
    """
    env = {**os.environ, "COINAPI_KEY": ""}
    procs = [subprocess.Popen([sys.executable, __file__, "--consume", url, str(sizes.warmup), str(sizes.seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(CONSUMERS)]
    for proc in procs:  # each has caught up with its window fill and warmed up
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"a consumer failed before measuring (said {line!r})")
    machine0, ours0, t0 = (*cpu_seconds(ours), time.perf_counter())
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    lines = []
    for proc in procs:  # each prints its figures at the end of the window, then stops
        assert proc.stdout is not None
        lines.append(proc.stdout.readline())
        if len(lines) == 1:
            machine1, ours1, t1 = (*cpu_seconds(ours), time.perf_counter())
    results = []
    for proc, line in zip(procs, lines, strict=True):
        proc.communicate(timeout=120 + sizes.seconds)
        if proc.returncode != 0 or not line.strip():
            raise RuntimeError(f"a consumer failed (exit {proc.returncode})")
        results.append(json.loads(line))
    consumers_cpu = sum(r["cpu_s"] for r in results)
    others = 100 * (machine1 - machine0 - (ours1 - ours0) - consumers_cpu) / max(1e-9, t1 - t0)
    return results, others if math.isnan(others) else max(0.0, others)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short windows for a CI smoke test")
    parser.add_argument("--serve-sim", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--consume", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sim is not None:
        return serve_sim(args.serve_sim)
    if args.consume is not None:
        return consume(args.consume[0], float(args.consume[1]), float(args.consume[2]))

    from coinrates_nb.hub import Hub

    sizes = QUICK if args.quick else FULL
    began = time.perf_counter()
    print(f"coinrates_nb hub benchmark{' (--quick)' if args.quick else ''}: {machine_line()}")
    print(f"{len(PAIRS)} pairs x {sizes.rate_hz:g} Hz = {len(PAIRS) * sizes.rate_hz:,.0f} updates/s upstream; "
          f"{CONSUMERS} consumer processes; {sizes.seconds:g} s windows after {sizes.warmup:g} s warm-up")
    sim = SimProcess(sizes.rate_hz)
    try:
        # --- one hub, ten consumers
        before = sim.stats()
        hub = Hub(PAIRS, url=sim.url).start()
        samples: list[tuple[float, int, float]] = []  # (wall time, rates billed, hub CPU) every 0.2 s
        sampling = threading.Event()

        def sample_hub() -> None:
            while not sampling.wait(0.2):
                samples.append((time.time(), hub.status.rates_billed, time.process_time()))

        try:
            sampler = threading.Thread(target=sample_hub, daemon=True)
            sampler.start()
            server = hub.server
            ours = [sim.proc.pid, os.getpid(), *([server.pid] if server is not None and server.pid else [])]
            via_hub, others_pct = run_consumers(hub.nats_url or "", sizes, ours)
            sampling.set()
            sampler.join()
        finally:
            hub.stop()
        after = sim.stats()
        hub_connections = after["total_connections"] - before["total_connections"]
        opened, closed = max(r["from"] for r in via_hub), min(r["to"] for r in via_hub)  # when all measured
        times = np.array([t for t, _, _ in samples])
        billed = np.interp([opened, closed], times, [b for _, b, _ in samples])
        cpu = np.interp([opened, closed], times, [c for _, _, c in samples])
        span = max(1e-9, closed - opened)
        hub_billed_rate = float(billed[1] - billed[0]) / span
        hub_cpu_pct = 100 * float(cpu[1] - cpu[0]) / span
        seconds = float(np.median([r["seconds"] for r in via_hub]))
        delivered = sum(r["rates"] for r in via_hub) / seconds
        latency = np.concatenate([np.asarray(r["latency_ms"], float) for r in via_hub])
        p50, p99 = (float(v) for v in np.percentile(latency, [50, 99])) if len(latency) else (float("nan"),) * 2
        p99_each = [float(np.percentile(r["latency_ms"], 99)) for r in via_hub if r["latency_ms"]]
        hub_leg = np.concatenate([np.asarray(r["hub_leg_ms"], float) for r in via_hub])  # aligned with latency
        legs = {"hub receive -> JetStream stored": hub_leg, "JetStream stored -> consumer store": latency - hub_leg}
        leg_pct = {name: np.percentile(v, [50, 99]) if len(v) else (float("nan"),) * 2 for name, v in legs.items()}
        cpu_each = [100 * r["cpu_s"] / r["seconds"] for r in via_hub]

        # --- the same ten notebooks, each with its own upstream connection
        before = sim.stats()
        direct, _ = run_consumers(sim.url, sizes, [sim.proc.pid])
        after = sim.stats()
        direct_connections = after["total_connections"] - before["total_connections"]
        direct_seconds = float(np.median([r["seconds"] for r in direct]))
        direct_billed_rate = sum(r["rates"] for r in direct) / direct_seconds
    finally:
        sim.stop()

    ok_rate, ok_p99 = delivered >= TARGET_RATE, p99 <= TARGET_P99_MS
    ratio = direct_billed_rate / hub_billed_rate if hub_billed_rate else float("nan")
    rows = [
        ("updates stored per second, 10 consumers", f"{delivered:,.0f}/s   (target >= {TARGET_RATE:,})"),
        ("  per consumer", f"{min(r['rates'] for r in via_hub) / seconds:,.0f}-"
                           f"{max(r['rates'] for r in via_hub) / seconds:,.0f}/s"),
        ("latency hub receive -> consumer store, p50", f"{p50:,.2f} ms   ({len(latency):,} updates)"),
        ("latency hub receive -> consumer store, p99", f"{p99:,.2f} ms   (target <= {TARGET_P99_MS:g} ms; "
                                                       f"per consumer {min(p99_each):,.1f}-{max(p99_each):,.1f} ms)"),
        *((f"  {name}, p50 / p99", f"{lo:,.2f} / {hi:,.2f} ms") for name, (lo, hi) in leg_pct.items()),
        ("CPU per consumer", f"{np.median(cpu_each):,.1f} % of a core   [{min(cpu_each):,.1f}-{max(cpu_each):,.1f}]"),
        ("CPU of the hub process", f"{hub_cpu_pct:,.1f} % of a core (upstream collector + publisher)"),
        ("CPU of other programs meanwhile", f"{others_pct:,.0f} % of a core, of {100 * (os.cpu_count() or 1)} % "
                                            "(the machine less this benchmark's processes)"),
        ("duplicates stored by consumers", f"{sum(r['duplicates'] for r in via_hub)}"),
        ("upstream connections: hub / 10 direct", f"{hub_connections} / {direct_connections}"),
        ("rates billed per second: hub / 10 direct", f"{hub_billed_rate:,.0f} / {direct_billed_rate:,.0f}   "
                                                     f"({ratio:,.1f}x)"),
    ]
    print_table("one hub -> 10 consumers (NATS JetStream, loopback)", rows)
    record("hub: updates stored per second by 10 consumers", delivered, "updates/s", target=f">= {TARGET_RATE:,}",
           met=ok_rate, script=SCRIPT, note=f"{len(PAIRS)} pairs x {sizes.rate_hz:g} Hz into one hub, "
                                            f"{CONSUMERS} consumer processes")
    record("hub: latency hub receive -> consumer store, p50", p50, "ms", script=SCRIPT,
           note=f"{len(latency):,} updates, all consumers pooled")
    record("hub: latency hub receive -> consumer store, p99", p99, "ms", target=f"<= {TARGET_P99_MS:g}", met=ok_p99,
           low=min(p99_each), high=max(p99_each), script=SCRIPT, note="range: per consumer")
    record("hub: CPU per consumer", float(np.median(cpu_each)), "% core", low=min(cpu_each), high=max(cpu_each),
           script=SCRIPT, note=f"at {delivered / CONSUMERS:,.0f} updates/s each")
    record("upstream connections, 10 notebooks direct / via one hub", direct_connections / max(1, hub_connections),
           "ratio", script=SCRIPT, note=f"{direct_connections} vs {hub_connections}")
    record("rates billed, 10 notebooks direct / via one hub", ratio, "ratio", script=SCRIPT,
           note=f"{direct_billed_rate:,.0f} vs {hub_billed_rate:,.0f} per second")
    record("hub: CPU of other programs during the window", others_pct, "% core", script=SCRIPT,
           note="a latency tail on a small machine is mostly this")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntargets {'met' if ok_rate and ok_p99 else 'MISSED'}; total {time.perf_counter() - began:.1f} s; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    return 0 if ok_rate and ok_p99 else 1


if __name__ == "__main__":
    sys.exit(main())
