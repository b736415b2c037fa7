"""Command line: ``python -m coinrates_nb demo`` streams for a few seconds and writes a chart and a dataset;
``python -m coinrates_nb hub --pairs BTC/USD,ETH/USD [--nats URL]`` runs a hub (``--dashboard``: and the desk dashboard).

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


def hub(args: argparse.Namespace) -> int:
    """Run a hub until Ctrl-C/SIGTERM (or ``--seconds``): one upstream connection published to NATS.

    With ``--dashboard`` it also serves the desk dashboard notebook with Voilà on 127.0.0.1,
    reading from this hub (``--dashboard-only``: from the hub already at ``--nats``).
    """
    import signal
    import threading

    from .exceptions import CoinratesError
    from .hub import Hub, serve_dashboard

    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    made: Hub | None = None
    voila = None
    try:
        if args.dashboard_only:
            if not args.nats:
                print("--dashboard-only needs --nats URL of a running hub", file=sys.stderr)
                return 2
            url = args.nats
        else:
            made = Hub(pairs, nats_url=args.nats, retention=args.retention, drop_after=args.drop_after,
                       prefix=args.prefix, replicas=args.replicas, store_dir=args.store_dir, rate_hz=args.rate_hz,
                       seed=args.seed).start()
            url = made.nats_url or ""
            source = "SIMULATED data (no COINAPI_KEY)" if made.settings.simulated else "CoinAPI"
            print(f"coinrates_nb hub: {source} for {', '.join(pairs)} -> {url}", flush=True)
            print(f"consumers: cr.stream({pairs!r}, url={url!r})", flush=True)
        if args.url_file:
            Path(args.url_file).write_text(url + "\n")
        if args.dashboard or args.dashboard_only:
            voila, page = serve_dashboard(url, notebook=args.notebook, port=args.dashboard_port)
            print(f"desk dashboard (Voila): {page}", flush=True)
        deadline = None if args.seconds is None else time.monotonic() + args.seconds
        while not done.wait(args.every):
            if made is not None:
                print(made.status.summary(), flush=True)
            if voila is not None and voila.poll() is not None:
                print(f"Voila exited with {voila.returncode}", file=sys.stderr)
                return 1
            if deadline is not None and time.monotonic() >= deadline:
                break
    except CoinratesError as exc:
        print(f"hub: {exc}", file=sys.stderr)
        return 1
    finally:
        if voila is not None:
            voila.terminate()
            try:
                voila.wait(10)
            except Exception:  # noqa: BLE001 - a Voila that ignores SIGTERM is killed
                voila.kill()
        if made is not None:
            made.stop()
            print(made.status.summary(), flush=True)
    return 0


def _replicas(text: str) -> int:
    """``--replicas``: an int from 1 to 5 (JetStream's limit), else argparse's usage error."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 5:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 5 (JetStream's limit), not {text!r}")
    return value


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
    h = sub.add_parser("hub", help="one upstream connection for a team, published to NATS JetStream (and a dashboard)")
    h.add_argument("--pairs", default=",".join(DEMO_PAIRS), help="comma-separated pairs or asset ids always carried")
    h.add_argument("--nats", default=None, help="NATS URL (default: start an embedded nats-server on 127.0.0.1)")
    h.add_argument("--retention", default="24h", help="how long JetStream keeps updates")
    h.add_argument("--drop-after", default="10min", help="drop a pair consumers asked for once unwanted this long")
    h.add_argument("--prefix", default="coinrates", help="subject/stream prefix (one hub per prefix)")
    h.add_argument("--replicas", type=_replicas, default=1,
                   help="JetStream replicas of the stream and the hub's bucket: 1 on one server, 3 on a NATS cluster")
    h.add_argument("--store-dir", default=None, help="the embedded nats-server's JetStream folder (default: temporary)")
    h.add_argument("--rate-hz", type=float, default=5.0, help="simulated updates per pair per second (no key)")
    h.add_argument("--seed", type=int, default=None)
    h.add_argument("--url-file", default=None, help="write the URL consumers use to this file once ready")
    h.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")
    h.add_argument("--every", type=float, default=5.0, help="seconds between status lines")
    h.add_argument("--dashboard", action="store_true", help="also serve the desk dashboard with Voila")
    h.add_argument("--dashboard-only", action="store_true", help="serve the dashboard for the hub at --nats")
    h.add_argument("--dashboard-port", type=int, default=None, help="Voila's port (default: a free one)")
    h.add_argument("--notebook", default="notebooks/05_desk_dashboard.ipynb")
    h.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "hub":
        return hub(args)
    return demo(args.seconds, args.out, tuple(args.pairs), args.rate_hz)


if __name__ == "__main__":
    sys.exit(main())
