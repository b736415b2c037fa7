"""``python -m coinrates_nb.sim``: arguments, serving, and a planned stop that sends ``reconnect`` first."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import coinrates_nb
from coinrates_nb.messages import ExchangeRate, Reconnect, parse_server
from coinrates_nb.sim import SIMULATOR_HEADER
from coinrates_nb.sim.cli import main
from tests.helpers import SLOW, wait_until
from tests.test_sim_server import client, exrates, hello, sim_threads, until_closed

URL_RE = re.compile(r"listening on (ws://\S+/)")


class _Lines(logging.Handler):
    """Keeps the simulator's log lines, so a test can read the URL it listens on."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def sim_log() -> Iterator[_Lines]:
    """The coinrates_nb.sim logger's INFO lines during the test; level and handlers restored afterwards."""
    log = logging.getLogger("coinrates_nb.sim")
    handler, level = _Lines(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


@pytest.fixture
def cli() -> Iterator[list[subprocess.Popen[str]]]:
    """Simulator processes a test starts are appended here, and killed afterwards if still running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def spawn(procs: list[subprocess.Popen[str]], *args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``python -m coinrates_nb.sim --port 0 ...``; return the process and the URL it listens on."""
    proc = subprocess.Popen([sys.executable, "-m", "coinrates_nb.sim", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    procs.append(proc)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = URL_RE.search(line)
        if found:
            return proc, found.group(1)
    raise AssertionError(f"the simulator exited ({proc.wait()}) without listening")


def test_main_requires_key_in_environment() -> None:
    """--api-key-required without COINAPI_KEY exits with a usage error."""
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--api-key-required"])
    assert info.value.code == 2


def test_main_bad_option_fails_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    """A simulator option out of range is logged as an error and main() returns 1, leaving no thread."""
    before = len(sim_threads())
    assert main(["--port", "0", "--rate-hz", "0", "--log-level", "WARNING"]) == 1
    assert any("rate_hz" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert len(sim_threads()) == before


def test_main_duration_sends_reconnect_before_it_stops(sim_log: _Lines) -> None:
    """main() with --duration serves, then its planned stop sends reconnect as the last message, closes, returns 0."""
    before = len(sim_threads())
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(main(["--port", "0", "--duration", str(3 * SLOW),
                                                                  "--rate-hz", "20", "--log-level", "INFO"])))
    runner.start()
    try:
        found = wait_until(lambda: next((m for line in sim_log.lines if (m := URL_RE.search(line))), None), timeout=10)
        with client(found.group(1)) as ws:
            assert ws.response is not None and ws.response.headers[SIMULATOR_HEADER] == coinrates_nb.__version__
            hello(ws, ["BTC/USD"])
            exrates(ws, 1)
            frames, closed = until_closed(ws, timeout=10 * SLOW)
    finally:
        runner.join(20 * SLOW)
    notice = parse_server(frames[-1])
    assert isinstance(notice, Reconnect) and notice.within_seconds == 0
    assert all(isinstance(parse_server(f), ExchangeRate) for f in frames[:-1])
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert result == [0] and len(sim_threads()) == before


def test_cli_serves_until_ctrl_c_and_says_reconnect(cli: list[subprocess.Popen[str]]) -> None:
    """python -m coinrates_nb.sim names itself, serves, and on Ctrl-C sends reconnect, closes and exits 0."""
    proc, url = spawn(cli, "--seed", "3", "--rate-hz", "20", "--stop-grace", "0.2")
    assert url.startswith("ws://127.0.0.1:")
    with client(url) as ws:
        assert ws.response is not None and ws.response.headers[SIMULATOR_HEADER] == coinrates_nb.__version__
        hello(ws, ["BTC/USD"])
        assert exrates(ws, 1)[0].pair == "BTC/USD"
        t_signal = time.time_ns()
        proc.send_signal(signal.SIGINT)
        frames, closed = until_closed(ws, timeout=20 * SLOW)
    notice = parse_server(frames[-1])
    assert isinstance(notice, Reconnect) and notice.within_seconds == 0
    assert t_signal + 200_000_000 - 100 <= notice.before_time_ns <= time.time_ns() + 200_000_000
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert proc.wait(timeout=30 * SLOW) == 0


def test_cli_duration_exits_zero_after_the_notice(cli: list[subprocess.Popen[str]]) -> None:
    """python -m coinrates_nb.sim --duration N ends by itself: reconnect, close 1001, exit code 0."""
    proc, url = spawn(cli, "--duration", str(3 * SLOW), "--rate-hz", "20")
    with client(url) as ws:
        hello(ws, ["ETH/USD"])
        exrates(ws, 1)
        frames, closed = until_closed(ws, timeout=20 * SLOW)
    assert isinstance(parse_server(frames[-1]), Reconnect)
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert proc.wait(timeout=30 * SLOW) == 0
