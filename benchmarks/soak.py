"""Soak: stream for minutes at a high rate through periodic faults, then account for every update.

The simulator runs in its own process (a server in the collector's process would share its GIL
and drag both down, NOTES.md) and is driven over a pipe: every ``--fault-every`` seconds it
drops all connections, sends a ``reconnect`` notice, stalls until the collector declares the
stream stale and replaces it, or injects bad frames, in turn. The collector runs in this
process, as in a notebook, with a rolling window of ``--rows`` rows.

Printed: RSS, threads and file descriptors every ``--sample-every`` seconds (flat once the
window is full), then updates sent (the simulator's ledger) against updates stored, reconnects
and rejected frames, and what ``stop()`` left behind (collector threads, sockets and file
descriptors above the baseline: all must be zero).

Accounting ("read" as in ``tests/test_faults.py``): on each connection the collector must hold
every ledger entry up to the last one it stored from that connection, each exactly once; the
entries after that were in flight when a connection was dropped and are reported as lost.

Usage::

    python benchmarks/soak.py              # 5 minutes
    python benchmarks/soak.py --minutes 30
    python benchmarks/soak.py --quick      # about 20 s: CI smoke
"""

from __future__ import annotations

import argparse
import array
import gc
import multiprocessing as mp
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import coinrates_nb as cr  # noqa: E402
from coinrates_nb.collector import each  # noqa: E402
from coinrates_nb.messages import ExchangeRate  # noqa: E402
from coinrates_nb.sim.prices import DEFAULT_ASSETS  # noqa: E402

BAD_FRAMES: tuple[str | bytes, ...] = (
    "{not json",
    b"\x00\x01binary",
    '{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","time":"x","rate":1}',
    '{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","time":"2024-01-01T00:00:00Z","rate":-5}',
    '{"type":"asset","asset_id":"BTC"}',
)
FAULTS = ("drop", "reconnect", "stall", "bad frames")


# --------------------------------------------------------------------------- the simulator process


def _simulator_process(conn: Connection, options: dict[str, Any]) -> None:
    """Child process: run a Simulator and execute the parent's scenario calls until ``stop``."""
    from coinrates_nb.sim.server import Simulator

    sim = Simulator(**options).start()
    conn.send(sim.url)
    while True:
        command, args = conn.recv()
        if command == "stop":
            sim.stop()
            conn.send(None)
            return
        if command == "stats":
            conn.send({"sent": sim.sent_total, "connections": sim.total_connections, "open": sim.connections,
                       "dropped": sim.dropped, "pongs": sim.pongs_received, "errors": sim.errors_sent})
        elif command == "ledger":
            ledger = sim.ledger
            names = sorted({pair for entries in ledger.values() for pair, _, _ in entries})
            code = {name: i for i, name in enumerate(names)}
            conn.send((names, {cid: _keys([code[p] for p, _, _ in entries], [t for _, t, _ in entries])
                               for cid, entries in ledger.items()}))
        else:
            conn.send(getattr(sim, command)(*args))


def _keys(codes: Any, times: Any) -> np.ndarray:
    """One int64 per update: wire time in 100 ns steps times 64 plus a pair code (< 64 pairs)."""
    return np.asarray(times, dtype=np.int64) // 100 * 64 + np.asarray(codes, dtype=np.int64)


class RemoteSimulator:
    """The simulator in its own process; scenario methods are forwarded over a pipe."""

    def __init__(self, **options: Any) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_simulator_process, args=(child, options), name="soak-simulator",
                                    daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()
        self._lock = threading.Lock()

    def call(self, command: str, *args: Any) -> Any:
        with self._lock:
            self._conn.send((command, args))
            return self._conn.recv()

    def stop(self) -> None:
        self.call("stop")
        self._process.join(10)


# --------------------------------------------------------------------------- what the collector stored


class Spool:
    """Every stored update as (pair code, wire time), spilled to a temp file so RSS stays honest."""

    CHUNK = 65_536

    def __init__(self) -> None:
        self.names: dict[str, int] = {}
        self.times = array.array("q")
        self.codes = array.array("b")
        self._file = tempfile.TemporaryFile()
        self.count = 0

    def __call__(self, update: ExchangeRate, received_ns: int) -> None:
        pair = update.pair
        code = self.names.get(pair)
        if code is None:
            code = self.names[pair] = len(self.names)
        self.times.append(update.time_ns)
        self.codes.append(code)
        if len(self.times) >= self.CHUNK:
            self._spill()

    def _spill(self) -> None:
        self._file.write(np.frombuffer(self.times, dtype=np.int64).tobytes())
        self._file.write(np.frombuffer(self.codes, dtype=np.int8).astype(np.int64).tobytes())
        self.count += len(self.times)
        self.times, self.codes = array.array("q"), array.array("b")

    def keys(self, names: list[str]) -> np.ndarray:
        """All stored updates as ledger keys (pair codes mapped onto the simulator's ``names``)."""
        self._spill()
        self._file.seek(0)
        raw = np.frombuffer(self._file.read(), dtype=np.int64)
        remap = np.array([names.index(n) if n in names else 63 for n in sorted(self.names, key=self.names.get)],
                         dtype=np.int64)
        chunks, out, pos = [], [], 0
        while pos < len(raw):  # file layout: [times x n][codes x n] per spill
            n = min(self.CHUNK, (len(raw) - pos) // 2)
            while n and pos + 2 * n > len(raw):
                n -= 1
            chunks.append((raw[pos:pos + n], raw[pos + n:pos + 2 * n]))
            pos += 2 * n
        for times, codes in chunks:
            out.append(_keys(remap[codes] if len(remap) else codes, times))
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


# --------------------------------------------------------------------------- measuring


@dataclass
class Sample:
    elapsed: float
    stored: int
    rows: int
    rss_mb: float
    threads: int
    fds: int


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def open_fds() -> int:
    return psutil.Process().num_fds()


def sockets() -> int:
    return len(psutil.Process().net_connections("inet"))


def collector_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "coinrates-collector" and t.is_alive())


def wait_for(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> int:
    duration = args.minutes * 60.0
    sim = RemoteSimulator(port=0, seed=11, rate_hz=args.rate_hz, batch=args.batch, ping_interval=5.0,
                          ping_timeout=5.0, ledger_size=10_000_000)
    spool = Spool()
    base = {"threads": threading.active_count(), "fds": open_fds(), "sockets": sockets()}
    rates = cr.stream(None, url=sim.url, max_rows=args.rows, stale_after=args.stale_after, compression=None,
                      backoff_initial=0.05, start=False)
    rates.add_listener(each(spool))
    rates.start()
    n_pairs = len(DEFAULT_ASSETS)  # the unfiltered stream: every simulated asset against USD
    expected_rate = n_pairs * args.rate_hz
    print(f"soak: {args.minutes:g} min, ~{expected_rate:,.0f} updates/s ({n_pairs} pairs x {args.rate_hz:g} Hz), window "
          f"{args.rows:,} rows, a fault every {args.fault_every:g} s ({', '.join(FAULTS)}); simulator pid "
          f"{sim._process.pid}")
    if not wait_for(lambda: len(rates.frame) > 0, 30):
        print("no data within 30 s", file=sys.stderr)
        return 1
    started = time.monotonic()
    faults: dict[str, int] = dict.fromkeys(FAULTS, 0)
    done = threading.Event()

    def fault_loop() -> None:  # its own thread, so the samples below stay on schedule during a stall
        k = 0
        while not done.wait(args.fault_every):
            fault = FAULTS[k % len(FAULTS)]
            k += 1
            faults[fault] += 1
            inject(sim, rates, fault, args.stale_after)

    injector = threading.Thread(target=fault_loop, name="soak-faults", daemon=True)
    injector.start()
    samples: list[Sample] = []
    print(f"{'t (s)':>7} {'stored':>11} {'rows':>9} {'RSS MB':>8} {'threads':>7} {'fds':>5}  state")
    next_sample = started
    while (now := time.monotonic()) < started + duration:
        if now >= next_sample:
            s = Sample(now - started, rates.frame.appended, len(rates.frame), rss_mb(), threading.active_count(),
                       open_fds())
            samples.append(s)
            print(f"{s.elapsed:7.1f} {s.stored:11,} {s.rows:9,} {s.rss_mb:8.1f} {s.threads:7} {s.fds:5}  "
                  f"{rates.status.state}", flush=True)
            next_sample += args.sample_every
        time.sleep(0.05)
    done.set()
    injector.join(60)
    final_rss = rss_mb()
    status = rates.status
    stats = sim.call("stats")
    rates.stop()
    gc.collect()
    left = {
        "collector threads": collector_threads(),
        "threads": threading.active_count() - base["threads"],
        "sockets": sockets() - base["sockets"],
        "fds": open_fds() - base["fds"],
    }
    names, ledger = sim.call("ledger")
    sim.stop()
    ok = report(spool.keys(names), ledger, status, stats, samples, final_rss, left, faults, expected_rate, duration)
    leaked = left["collector threads"] or left["sockets"] > 0 or left["fds"] > 0
    return 0 if ok and not leaked else 1


def inject(sim: RemoteSimulator, rates: cr.Collector, fault: str, stale_after: float) -> None:
    """Apply one fault and wait until the collector is streaming again."""
    before = rates.status.reconnects
    if fault == "drop":
        sim.call("drop_connections")
    elif fault == "reconnect":
        sim.call("request_reconnect", 1.0)
    elif fault == "stall":
        sim.call("stall", True)
        wait_for(lambda: rates.status.reconnects > before, stale_after + 10)
        sim.call("stall", False)
    else:
        for frame in BAD_FRAMES:
            sim.call("inject", frame)
        return
    wait_for(lambda: rates.status.reconnects > before and rates.status.state == "connected", 30)


def report(stored: np.ndarray, ledger: dict[int, np.ndarray], status: cr.Status, stats: dict[str, int],
           samples: list[Sample], final_rss: float, left: dict[str, int], faults: dict[str, int],
           expected_rate: float, duration: float) -> bool:
    """Print the accounting and the resource figures; True if every read update was stored exactly once."""
    sent = sum(len(keys) for keys in ledger.values())
    distinct = np.unique(np.concatenate(list(ledger.values()))) if ledger else np.empty(0, dtype=np.int64)
    unique = np.unique(stored)
    read = set_read = holes = 0
    prefixes = []
    for keys in ledger.values():
        held = np.isin(keys, unique)
        last = int(np.flatnonzero(held)[-1]) + 1 if held.any() else 0
        read += last
        holes += int((~held[:last]).sum())
        prefixes.append(keys[:last])
    set_read = len(np.unique(np.concatenate(prefixes))) if prefixes else 0
    lost = len(distinct) - int(np.isin(distinct, unique).sum())
    alien = len(unique) - int(np.isin(unique, distinct).sum())
    peak = max([s.rss_mb for s in samples] + [final_rss])
    full = [s for s in samples if s.rows >= samples[-1].rows * 0.999 and s.rows > 0]
    flat = f"{full[0].rss_mb:.1f} -> {full[-1].rss_mb:.1f} MB over {full[-1].elapsed - full[0].elapsed:,.0f} s" \
        if len(full) >= 2 else "window not full yet"
    ok = holes == 0 and len(stored) == len(unique) == set_read and alien == 0
    print()
    print(f"duration               {duration:,.0f} s at ~{expected_rate:,.0f} updates/s offered")
    print(f"faults injected        {', '.join(f'{n} {k}' for k, n in faults.items())}")
    print(f"sent (ledger)          {sent:,} frames on {len(ledger)} connections = {len(distinct):,} distinct updates "
          f"(the rest sent twice across make-before-break switches)")
    print(f"read                   {set_read:,} distinct updates up to each connection's last stored one; "
          f"lost in flight at drops: {lost:,}")
    print(f"stored                 {len(stored):,} ({len(stored) - len(unique):,} twice, {alien:,} never sent); "
          f"missing before a connection's last stored update: {holes:,}")
    print(f"dropped as duplicates  {status.duplicates:,} (the overlap of old and new links)")
    print(f"reconnects             {status.reconnects} (simulator: {stats['connections'] - 1} new connections, "
          f"{stats['dropped']} dropped, {stats['pongs']} pings answered)")
    print(f"rejected frames        {dict(status.rejected)}; unknown types {status.unknown}")
    print(f"RSS                    peak {peak:.1f} MB, final {final_rss:.1f} MB; window full: {flat}")
    print(f"left after stop()      {', '.join(f'{k} {v}' for k, v in left.items())}")
    print(f"verdict                {'OK' if ok else 'FAIL: an update read was not stored exactly once'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="about 20 s with a fault every 2.5 s (CI smoke)")
    parser.add_argument("--rate-hz", type=float, default=250.0, help="updates per pair per second (every simulated pair)")
    parser.add_argument("--batch", type=int, default=10, help="simulator updates per pair per wake-up")
    parser.add_argument("--rows", type=int, default=200_000, help="the collector's rolling window (max_rows)")
    parser.add_argument("--fault-every", type=float, default=10.0)
    parser.add_argument("--stale-after", type=float, default=2.0)
    parser.add_argument("--sample-every", type=float, default=15.0)
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.fault_every, args.sample_every, args.rows = 20 / 60, 2.5, 2.0, 20_000
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
