"""The API key stays secret: a marker key is searched for everywhere a user or a log could see it.

Places searched: reprs and HTML reprs, status, log records of every logger at DEBUG (ours,
the simulator's and websockets' own handshake dumps), exceptions with their chains and
tracebacks, widget state (recursively through child widgets), recorded Parquet files, and the
demo's terminal output and files. Also: a key only travels to a non-loopback host over
``wss://``, and the simulator listens on loopback only.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import coinrates_nb as cr
from coinrates_nb.sim.server import Simulator
from tests.helpers import wait_until

MARKER = "MARKER-7c41e9-SECRET"
PAIRS = ["BTC/USD", "ETH/USD", "BTC/EUR"]
ROOT = Path(__file__).resolve().parent.parent


def exception_text(exc: BaseException) -> str:
    """What an exception and every exception in its chain show: message, repr, args and attributes.

    Tracebacks show source lines, so a test must not spell the key out in a call that raises.
    """
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [str(seen), repr(seen), repr(seen.args), *traceback.format_exception_only(seen)]
        parts.append("".join(traceback.format_tb(seen.__traceback__)))
        parts.append(repr(vars(seen)) if hasattr(seen, "__dict__") else "")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def widget_texts(widget: Any, seen: set[int] | None = None) -> Iterator[str]:
    """The synced state of ``widget`` and of every widget it references, recursively, as text."""
    import ipywidgets

    seen = set() if seen is None else seen
    if id(widget) in seen:
        return
    seen.add(id(widget))

    def dump(value: Any) -> str:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("latin-1")
        return str(value)

    yield json.dumps(widget.get_state(), default=dump)
    for name in widget.keys:
        value = getattr(widget, name, None)
        children = value if isinstance(value, (list, tuple)) else [value]
        for child in children:
            if isinstance(child, ipywidgets.Widget):
                yield from widget_texts(child, seen)


def assert_secret(texts: dict[str, str]) -> None:
    """No text contains the marker key; names the places that do."""
    leaks = sorted(name for name, text in texts.items() if MARKER in text)
    assert not leaks, f"the key leaked into: {leaks}"


def test_marker_key_absent_from_reprs_logs_errors_widgets_and_recordings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, make_simulator: Callable[..., Simulator]) -> None:
    """With DEBUG logging everywhere, a marker key is in no repr, status, log, exception, widget state or file."""
    caplog.set_level(logging.DEBUG)
    for name in ("websockets", "websockets.client", "websockets.server", "coinrates_nb"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    texts: dict[str, str] = {}
    sim = make_simulator(seed=3, rate_hz=20, api_key=MARKER)
    rates = cr.stream(PAIRS, url=sim.url, api_key=MARKER, window="5min")
    try:
        rates.wait(timeout=20, rows=3)
        recorder = rates.record(tmp_path / "recording", flush_interval=0.1)
        wait_until(lambda: recorder.rows_written > 0, timeout=20)
        recorder.stop()
        sim.drop_connections()  # a reconnect re-sends the key: its logs are searched too
        wait_until(lambda: rates.status.reconnects >= 1 and rates.status.state == "connected", timeout=20)
        status = rates.status
        texts |= {
            "repr(collector)": repr(rates), "html": rates._repr_html_(), "status": repr(status),
            "status.summary": status.summary(), "status.to_dict": json.dumps(status.to_dict(), default=str),
            "settings": repr(rates.settings), "protocol": repr(rates.protocol),
            "telemetry": repr(rates.telemetry), "simulator": repr(sim), "hellos": repr(sim.hellos),
            "key": repr(rates.settings.api_key) + str(rates.settings.api_key),
        }
        texts |= dict(_widget_states(rates))
    finally:
        rates.stop()
    texts["recording"] = "\n".join(p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file())
    assert texts["recording"], "nothing was recorded"
    other = make_simulator(seed=3, api_key="the-right-key")  # a wrong key: the error path
    wrong = cr.stream(PAIRS, url=other.url, api_key=MARKER)
    try:
        wait_until(lambda: wrong.status.state == "error", timeout=20)
        with pytest.raises(cr.CollectorError) as failed:
            wrong.wait(timeout=5)
        texts |= {"wrong.error": exception_text(failed.value), "wrong.repr": repr(wrong),
                  "wrong.last_error": str(wrong.status.last_error)}
    finally:
        wrong.stop()
    with pytest.raises(cr.ConfigError) as refused:
        cr.stream(PAIRS, url=f"ws://example.com/?apikey={MARKER}", start=False)
    texts["config error"] = exception_text(refused.value)
    texts["logs"] = "\n".join(
        f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert any(r.name == "websockets.client" and r.levelno == logging.DEBUG for r in caplog.records)
    assert any("[secure]" in r.getMessage() for r in caplog.records if r.name == "websockets.client")
    assert {"widget dashboard", "widget live_chart"} <= set(texts)
    assert_secret(texts)


def _widget_states(rates: cr.Collector) -> Iterator[tuple[str, str]]:
    """Widget state of a dashboard and a live chart built on ``rates``, if the UI helpers import."""
    for name in ("dashboard", "live_chart"):
        try:
            build = getattr(cr, name)
        except (AttributeError, ImportError):
            continue
        widget = build(rates)
        try:
            yield f"widget {name}", "\n".join(widget_texts(widget))
        finally:
            widget.close()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("ws://example.com/", True),
        (f"ws://example.com/?apikey={MARKER}", True),
        (f"ws://example.com/APIKEY-{MARKER}", True),
        ("wss://example.com/", False),
        (f"wss://example.com/?apikey={MARKER}", False),
        ("ws://127.0.0.1:9/", False),
        ("ws://localhost:9/", False),
        ("http://example.com/", True),
    ],
)
def test_only_wss_carries_a_key_off_this_machine(url: str, refused: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """cr.stream refuses to send a key (argument, environment or in the URL) over plain ws:// to another host."""
    monkeypatch.setenv("COINAPI_KEY", MARKER)
    if refused:
        with pytest.raises(cr.ConfigError) as info:
            cr.stream(PAIRS, url=url, start=False)
        assert MARKER not in exception_text(info.value)
        return
    rates = cr.stream(PAIRS, url=url, start=False)
    assert rates.settings.api_key == cr.SecretKey(MARKER) and MARKER not in (rates.settings.url or "")
    assert MARKER not in repr(rates.settings) and MARKER not in repr(rates)


def test_two_different_keys_are_refused_without_showing_either() -> None:
    """A URL key that differs from api_key is a configuration error that shows neither key."""
    other = MARKER.replace("SECRET", "OTHER")
    with pytest.raises(cr.ConfigError) as info:
        cr.stream(PAIRS, url=f"wss://example.com/?apikey={MARKER}", api_key=other, start=False)
    text = exception_text(info.value)
    assert MARKER not in text and other not in text


def test_simulators_listen_on_loopback_only() -> None:
    """The simulator binds 127.0.0.1 by default, and so does the collector's embedded one."""
    assert Simulator().host == "127.0.0.1"
    with cr.stream(["BTC/USD"]) as rates:
        sim = rates.simulator
        assert sim is not None and sim.address == ("127.0.0.1", sim.port)
        listening = [c for c in psutil.Process().net_connections("inet")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == sim.port]
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)


@pytest.mark.slow
def test_demo_never_prints_or_writes_the_key(tmp_path: Path) -> None:
    """python -m coinrates_nb demo with COINAPI_KEY set uses the simulator and shows the key nowhere."""
    env = {**os.environ, "COINAPI_KEY": MARKER}
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "coinrates_nb", "demo", "--seconds", "2", "--out", str(out), "-v"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SIMULATED" in done.stdout and "coinrates_nb" in done.stderr  # -v logged at INFO
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"demo.html", "demo.parquet"}
    texts = {"stdout": done.stdout, "stderr": done.stderr}
    texts |= {str(p.relative_to(out)): p.read_bytes().decode("latin-1") for p in files}
    assert_secret(texts)
