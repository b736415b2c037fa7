"""Run every benchmark script and print one table of the figures that have targets.

Each ``bench_*.py`` runs in its own process (so one cannot slow the next through leftover
threads or memory), prints its own detailed table, and hands its headline figures to
``_common.record`` through a results file. This runner then prints the summary: each figure as a
median with its range, its target, and whether it was met.

Exit status: non-zero only if a script crashed (a traceback, a signal, a timeout, or no figures
at all), never because a target was missed: a missed target is a finding, not a broken build.

Usage::

    python benchmarks/run_all.py            # make bench: every script in full, under 10 minutes
    python benchmarks/run_all.py --quick    # make bench-quick (CI): small sizes, under a minute
    python benchmarks/run_all.py --markdown out/bench.md   # also write the summary as Markdown
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import RESULTS_ENV, machine, machine_line

HERE = Path(__file__).resolve().parent
ORDER = ("bench_parse.py", "bench_ingest.py", "bench_frame.py", "bench_refresh.py")
"""Scripts in the order their figures appear in the issue; any other bench_*.py runs after them."""

TIMEOUT = {"full": 420.0, "quick": 150.0}
SLOW_START = {"bench_browser.py": 2.0}
"""Scripts that start servers first (JupyterLab, Chromium): their timeouts are this many times longer."""
"""Seconds one script may take before it counts as crashed."""


def scripts() -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    ranked = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda p: (ranked.get(p.name, len(ORDER)), p.name))


def run(script: Path, quick: bool, results: Path) -> tuple[str, float]:
    """Run one script with its output streaming through; return its status and seconds taken."""
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    env = {**os.environ, RESULTS_ENV: str(results), "PYTHONUNBUFFERED": "1"}
    print(f"\n{'=' * 100}\n$ {' '.join(cmd[1:])}", flush=True)
    began = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, stderr=subprocess.PIPE, text=True, cwd=HERE.parent,
                              timeout=TIMEOUT["quick" if quick else "full"] * SLOW_START.get(script.name, 1.0))
    except subprocess.TimeoutExpired:
        return "crashed (timeout)", time.perf_counter() - began
    seconds = time.perf_counter() - began
    if done.stderr:
        sys.stderr.write(done.stderr)
    if done.returncode == 0:
        return "ok", seconds
    if done.returncode < 0 or "Traceback (most recent call last)" in done.stderr:
        return f"crashed (exit {done.returncode})", seconds
    return f"ok (exit {done.returncode}: a target missed)", seconds


def summary(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, str, str]]:
    out = []
    for row in rows:
        value, unit = row["value"], row["unit"]
        digits = 3 if unit == "ratio" else 2 if abs(value) < 100 else 0
        shown = f"{value:,.{digits}f}"
        if row.get("low") is not None and row.get("high") is not None:
            shown += f" [{row['low']:,.{digits}f}-{row['high']:,.{digits}f}]"
        shown += f" {unit}" if unit not in ("ratio",) else ""
        met = "" if row["met"] is None else ("met" if row["met"] else "MISSED")
        out.append((row["figure"], shown, row["target"], met, row["note"]))
    return out


def print_summary(table: list[tuple[str, str, str, str, str]]) -> None:
    head = ("figure", "median [min-max]", "target", "", "note")
    widths = [max(len(r[i]) for r in [head, *table]) for i in range(4)]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(line.format(*head))
    print("-" * (sum(widths) + 8 + max(len(r[4]) for r in [head, *table])))
    for r in table:
        print(line.format(*r))


def markdown(table: list[tuple[str, str, str, str, str]], statuses: dict[str, tuple[str, float]],
             quick: bool) -> str:
    m = machine()
    lines = [f"Machine: {m['nproc']} cores ({m['cpu']}), {m['os']}; Python {m['python']}, websockets "
             f"{m['websockets']}, msgspec {m['msgspec']}, numpy {m['numpy']}, pandas {m['pandas']}"
             f"{' (--quick sizes)' if quick else ''}.", "",
             "| figure | median [min-max] | target | | note |", "|---|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in table]
    lines += ["", "Scripts: " + ", ".join(f"{name} {s} in {t:.0f} s" for name, (s, t) in statuses.items())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes (CI): under a minute in total")
    parser.add_argument("--markdown", type=Path, help="also write the summary table as Markdown to this file")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    print(f"coinrates_nb benchmarks{' (--quick)' if args.quick else ''}: {machine_line()}")
    statuses: dict[str, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "figures.jsonl"
        results.touch()
        for script in scripts():
            before = len(results.read_text().splitlines())
            status, seconds = run(script, args.quick, results)
            if status.startswith("ok") and len(results.read_text().splitlines()) == before:
                status = "crashed (no figures)"
            statuses[script.name] = (status, seconds)
        rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    table = summary(rows)
    print(f"\n{'=' * 100}\nsummary{' (--quick sizes: see the full run for the figures)' if args.quick else ''}: "
          f"{machine_line()}\n")
    print_summary(table)
    print()
    for name, (status, seconds) in statuses.items():
        print(f"{name:<20} {status} in {seconds:.1f} s")
    print(f"total {time.perf_counter() - began:.1f} s")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(table, statuses, args.quick))
        print(f"markdown summary written to {args.markdown}")
    crashed = [name for name, (status, _) in statuses.items() if status.startswith("crashed")]
    if crashed:
        print(f"CRASHED: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
