"""``python -m coinrates_nb.sim``: run the simulator in the foreground until Ctrl-C or ``--duration``.

Either way the stop is a planned shutdown (:meth:`~coinrates_nb.sim.server.Simulator.stop`):
every client gets the ``reconnect`` notice the real server sends before it goes away
(``../shared/protocol/exrates-websocket.md`` §4.2), then the close.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Sequence

from ..exceptions import ConfigError, TransportError
from .server import Simulator

__all__ = ["main"]

logger = logging.getLogger("coinrates_nb.sim")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m coinrates_nb.sim",
        description="Run a local CoinAPI Exchange Rates WebSocket simulator (SIMULATED data).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 for any free one (default: 8765)")
    parser.add_argument("--seed", type=int, default=0, help="price model seed (default: 0)")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="updates per pair per second (default: 10)")
    parser.add_argument("--heartbeat-after", type=float, default=1.0, help="seconds of silence before a heartbeat")
    parser.add_argument("--ping-interval", type=float, default=60.0, help="seconds between WebSocket pings")
    parser.add_argument("--ping-timeout", type=float, default=20.0, help="seconds to answer a ping")
    parser.add_argument("--batch", type=int, default=1, help="updates per pair per timer wake-up (throughput knob)")
    parser.add_argument("--api-key-required", action="store_true",
                        help="require the key in $COINAPI_KEY from clients (header, query or hello body)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--stop-grace", type=float, default=0.5,
                        help="seconds clients get after the stop's reconnect notice before the close (default: 0.5)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator until Ctrl-C or ``--duration``; return the exit code (0, or 1 if it cannot start)."""
    parser = _parser()
    args = parser.parse_args(argv)
    key: str | None = None
    if args.api_key_required:
        key = os.environ.get("COINAPI_KEY", "").strip() or None
        if key is None:
            parser.error("--api-key-required needs the key in the COINAPI_KEY environment variable")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        sim = Simulator(args.host, args.port, seed=args.seed, rate_hz=args.rate_hz, heartbeat_after=args.heartbeat_after,
                        ping_interval=args.ping_interval, ping_timeout=args.ping_timeout, batch=args.batch, api_key=key,
                        stop_grace=args.stop_grace)
        sim.start()
    except (ConfigError, TransportError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("SIMULATED exchange rates at %s; press Ctrl-C to stop", sim.url)
    try:
        threading.Event().wait(args.duration)
    except KeyboardInterrupt:
        logger.info("interrupted")
    finally:
        sim.stop()  # a planned shutdown: the reconnect notice, then the close
    return 0
