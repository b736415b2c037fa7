"""Command line: ``python -m coinrates_nb demo`` streams for a few seconds and writes a chart and a dataset.

This is the one place that writes to the terminal: it is the program's user interface, not the
library (which only logs).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from .collector import Collector

DEMO_PAIRS = ("BTC/USD", "ETH/USD", "SOL/USD", "BTC/EUR")


def _table(rates: Collector) -> str:
    """The latest rates as aligned text lines."""
    latest = rates.latest()
    lines = [f"{'pair':<10} {'rate':>16} {'time (UTC)':<30} {'age':>8}"]
    for pair, row in latest.iterrows():
        age_ms = row["age"] / pd.Timedelta(milliseconds=1)
        lines.append(f"{pair!s:<10} {row['rate']:>16,.4f} {row['time'].isoformat():<30} {age_ms:>6,.0f}ms")
    return "\n".join(lines)


def demo(seconds: float, out: Path, pairs: tuple[str, ...], rate_hz: float) -> int:
    """Stream ``pairs`` from the embedded simulator, show a live table, write HTML and Parquet."""
    import coinrates_nb as cr
    from coinrates_nb.exceptions import CoinratesError

    out.mkdir(parents=True, exist_ok=True)
    live_tty = sys.stdout.isatty()
    with cr.stream(list(pairs), simulated=True, seed=7, rate_hz=rate_hz, window="30min") as rates:
        print(f"coinrates_nb demo: {seconds:.0f} s of SIMULATED exchange rates from the embedded simulator")
        try:
            rates.wait(timeout=30)
        except (TimeoutError, CoinratesError) as exc:
            print(f"no data: {exc}", file=sys.stderr)
            return 1
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            block = f"{rates!r}\n{_table(rates)}"
            if live_tty:
                print("\x1b[2J\x1b[H" + block, flush=True)
            else:
                print(block + "\n", flush=True)
            time.sleep(min(1.0, max(0.0, remaining)))
        df = rates.df
        status = rates.status
    print(_table_from(df))
    parquet = out / "demo.parquet"
    df.to_parquet(parquet)
    html = out / "demo.html"
    from .ui.export import write_html  # the UI package is the one place that imports plotly

    write_html(df, html, simulated=status.simulated, title="coinrates_nb demo")
    print(f"\n{status.summary()}")
    print(f"wrote {len(df):,} rows for {df['pair'].nunique()} pairs to {parquet} and a chart to {html}")
    return 0


def _table_from(frame: pd.DataFrame) -> str:
    """The last rate of each pair in ``frame`` as text lines."""
    last = frame.groupby("pair", observed=True).tail(1).reset_index().set_index("pair")
    return "\n".join(f"{pair:<10} {row['rate']:>16,.4f}  {row['time'].isoformat()}" for pair, row in last.iterrows())


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m coinrates_nb``."""
    parser = argparse.ArgumentParser(prog="python -m coinrates_nb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="stream simulated rates, show a live table, write out/demo.html and out/demo.parquet")
    d.add_argument("--seconds", type=float, default=float(os.environ.get("COINRATES_DEMO_SECONDS", 10)))
    d.add_argument("--out", type=Path, default=Path("out"))
    d.add_argument("--pairs", nargs="+", default=list(DEMO_PAIRS))
    d.add_argument("--rate-hz", type=float, default=5.0, help="simulated updates per pair per second")
    d.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return demo(args.seconds, args.out, tuple(args.pairs), args.rate_hz)


if __name__ == "__main__":
    sys.exit(main())
