"""The desk dashboard as a web app: Voilà serving a notebook whose kernels read from a hub.

Voilà starts a kernel per viewer (``../shared/NOTES.md``, "HTTP, brokers, dashboards"); each one
runs the notebook, which streams from the hub named by ``COINRATES_NATS_URL``, so any number of
viewers cost one CoinAPI connection. Voilà cannot listen on port 0, so a free port is found by
binding 127.0.0.1:0 first (:func:`free_port`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Final

__all__ = ["NATS_URL_ENV", "dashboard_command", "free_port", "serve_dashboard"]

NATS_URL_ENV: Final = "COINRATES_NATS_URL"
"""The hub a dashboard notebook reads from; without it the notebook starts a hub of its own."""

DEFAULT_NOTEBOOK: Final = Path("notebooks") / "05_desk_dashboard.ipynb"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def dashboard_command(notebook: str | os.PathLike[str], port: int, *, host: str = "127.0.0.1",
                      retries: int = 0) -> list[str]:
    """The Voilà command line that serves ``notebook`` on ``host:port`` (loopback, no browser opened)."""
    return [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}", f"--Voila.ip={host}",
            f"--Voila.port_retries={retries}", "--show_tracebacks=True"]


def serve_dashboard(nats_url: str, *, notebook: str | os.PathLike[str] = DEFAULT_NOTEBOOK, port: int | None = None,
                    env: Mapping[str, str] | None = None, log: str | os.PathLike[str] | None = None,
                    ) -> tuple[subprocess.Popen[bytes], str]:
    """Start Voilà on 127.0.0.1 for ``notebook`` reading from the hub at ``nats_url``; return it and its URL.

    The caller stops it (``terminate()``). ``env`` adds variables (Jupyter dirs in tests).
    """
    port = free_port() if port is None else port
    environment = {**os.environ, **(env or {}), NATS_URL_ENV: nats_url}
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    try:
        proc = subprocess.Popen(dashboard_command(notebook, port), env=environment, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None and not isinstance(out, int):
            out.close()
    return proc, f"http://127.0.0.1:{port}/"
