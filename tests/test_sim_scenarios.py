"""Fault scenarios as simulator methods, checked from a plain websockets client and the simulator's ledger."""

from __future__ import annotations

import base64
import os
import socket
import time
from typing import Any

import pytest

from coinrates_nb.exceptions import ConfigError
from coinrates_nb.messages import ErrorMessage, ExchangeRate, Heartbeat, Reconnect, parse_server
from coinrates_nb.sim import OVERFLOW_MESSAGE, Simulator
from tests.helpers import SLOW, wait_until
from tests.test_sim_server import MakeSim, client, entries, exrates, hello, pairs_after, recv, until_closed


def test_drop_connections_aborts_without_close_frame(simulator: Simulator) -> None:
    """drop_connections() aborts every client's TCP connection (no close frame) and counts them."""
    with client(simulator.url) as a, client(simulator.url) as b:
        for ws in (a, b):
            hello(ws, ["BTC/USD"])
            exrates(ws, 1)
        assert simulator.drop_connections() == 2
        for ws in (a, b):
            _, closed = until_closed(ws)
            assert closed.rcvd is None
    wait_until(lambda: simulator.connections == 0)
    assert simulator.drop_connections() == 0 and simulator.dropped == 2


def test_drop_every_n_messages(simulator: Simulator) -> None:
    """drop_every(5) aborts each connection right after its 5th exrate, exactly those the client got; None turns it off."""
    simulator.drop_every(5)
    received: list[list[tuple[str, int, float]]] = []
    for _ in range(2):
        with client(simulator.url) as ws:
            hello(ws, ["BTC/USD", "ETH/USD"])
            frames, closed = until_closed(ws)
        assert closed.rcvd is None
        received.append(entries([m for m in map(parse_server, frames) if isinstance(m, ExchangeRate)]))
    assert [len(r) for r in received] == [5, 5]
    assert list(simulator.ledger.values()) == received and simulator.dropped == 2
    simulator.drop_every(None)
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 12)
    assert simulator.dropped == 2


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "5"])
def test_drop_every_rejects_bad_counts(simulator: Simulator, bad: Any) -> None:
    """drop_every() takes an int >= 1 or None; anything else is a ConfigError and changes nothing."""
    with pytest.raises(ConfigError, match="n_messages"):
        simulator.drop_every(bad)
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 8)
    assert simulator.dropped == 0


def test_send_error_then_close(simulator: Simulator) -> None:
    """send_error() delivers {"type":"error"} to every client and then closes the connection."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        simulator.send_error("Something went wrong")
        frames, closed = until_closed(ws)
    assert parse_server(frames[-1]) == ErrorMessage("Something went wrong")
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert simulator.errors_sent == 1


def test_send_error_without_close_keeps_streaming(simulator: Simulator) -> None:
    """send_error(close=False) sends the error in-band and the stream goes on."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        simulator.send_error("just saying", close=False)
        while not isinstance(msg := recv(ws), ErrorMessage):
            pass
        assert msg == ErrorMessage("just saying")
        pairs_after(ws, time.time_ns(), 3)
    assert simulator.errors_sent == 1


def test_request_reconnect_then_close_at_deadline(simulator: Simulator) -> None:
    """request_reconnect sends a valid reconnect, keeps streaming, closes at before_time; new clients are served."""
    with client(simulator.url) as old:
        hello(old, ["BTC/USD"])
        exrates(old, 1)
        t_request = time.time_ns()
        simulator.request_reconnect(within_seconds=1.0)
        while not isinstance(msg := recv(old), Reconnect):
            pass
        assert msg.within_seconds == 1.0
        assert t_request + 1_000_000_000 - 100 <= msg.before_time_ns <= time.time_ns() + 1_000_000_000
        with client(simulator.url) as new:
            hello(new, ["ETH/USD"])
            frames, closed = until_closed(old)
            t_closed = time.time_ns()
            assert any('"exrate"' in str(f) for f in frames), "data stopped before the deadline"
            assert t_closed >= msg.before_time_ns - 50_000_000
            assert closed.rcvd is not None and closed.rcvd.code == 1001
            assert {m.pair for m in exrates(new, 3)} == {"ETH/USD"}
            wait_until(lambda: simulator.connections == 1, message="the old connection is still registered")
    assert simulator.total_connections == 2


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), True])
def test_request_reconnect_and_lag_reject_bad_seconds(simulator: Simulator, bad: Any) -> None:
    """request_reconnect() and lag() take a finite number of seconds >= 0; anything else is a ConfigError."""
    with pytest.raises(ConfigError, match="within_seconds"):
        simulator.request_reconnect(bad)
    with pytest.raises(ConfigError, match="seconds"):
        simulator.lag(bad)


def test_lag_delays_frames_of_current_connections_only(simulator: Simulator) -> None:
    """lag(0.4): frames reach the current client at least 0.4 s after their time; a new client is not delayed."""
    with client(simulator.url) as slow:
        hello(slow, ["BTC/USD"])
        exrates(slow, 1)
        simulator.lag(0.4)
        t_mark = time.time_ns()
        late = pairs_after(slow, t_mark, 3)
        arrived = time.time_ns()
        assert arrived - late[0].time_ns >= 400_000_000
        with client(simulator.url) as fast:
            hello(fast, ["BTC/USD"])
            fresh = exrates(fast, 3)
            assert min(time.time_ns() - m.time_ns for m in fresh) < 400_000_000


def test_stall_sends_nothing_until_released(make_simulator: MakeSim) -> None:
    """stall() keeps the socket open but sends no data, heartbeats or pings; stall(False) resumes."""
    sim = make_simulator(rate_hz=20, heartbeat_after=0.1, ping_interval=0.1)
    with client(sim.url, ping_interval=None) as ws:
        hello(ws, ["BTC/USD"], heartbeat=True)
        exrates(ws, 2)
        sim.stall(True)
        with pytest.raises(TimeoutError):  # drain what was in flight
            for _ in range(1000):
                ws.recv(timeout=0.5 * SLOW)
        counts = (sim.sent_total, sim.heartbeats_sent, sim.pings_sent)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.8)  # eight heartbeat periods and eight ping periods of silence
        assert (sim.sent_total, sim.heartbeats_sent, sim.pings_sent) == counts
        assert sim.connections == 1 and "stalled" in repr(sim)
        sim.stall(False)
        exrates(ws, 2)


def test_pause_data_keeps_heartbeats(make_simulator: MakeSim) -> None:
    """pause_data() stops exrate messages while heartbeats continue; pause_data(False) resumes."""
    sim = make_simulator(rate_hz=20, heartbeat_after=0.1)
    with client(sim.url) as ws:
        hello(ws, ["BTC/USD"], heartbeat=True)
        exrates(ws, 1)
        sim.pause_data(True)
        t_mark = time.time_ns()
        heartbeats = 0
        while heartbeats < 3:
            msg = recv(ws)
            if isinstance(msg, ExchangeRate):
                assert msg.time_ns <= t_mark
            else:
                assert msg == Heartbeat("hearbeat")
                heartbeats += 1
        assert sim.heartbeats_sent >= 3 and "data paused" in repr(sim)
        sim.pause_data(False)
        pairs_after(ws, t_mark, 1)


def test_inject_sends_raw_frames(simulator: Simulator) -> None:
    """inject() sends a raw text frame and a raw binary frame to every client, verbatim."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"], subscribe_update_limit_ms_exrate=60_000)
        exrates(ws, 1)
        simulator.inject("{not json")
        simulator.inject(b"\x00\x01binary")
        assert ws.recv(timeout=10 * SLOW) == "{not json"
        assert ws.recv(timeout=10 * SLOW) == b"\x00\x01binary"
    with pytest.raises(ConfigError, match="str or bytes"):
        simulator.inject(42)  # type: ignore[arg-type]


def test_slow_consumer_gets_overflow_error_then_close(make_simulator: MakeSim) -> None:
    """A client that stops reading fills the queue: the overflow error arrives after the data, then close (§5)."""
    sim = make_simulator(rate_hz=200, max_buffered=100, send_buffer=4096)
    with client(sim.url, compression=None, max_queue=4) as ws:
        hello(ws, None)  # every pair: 3,800 messages a second
        wait_until(lambda: sim.overflows >= 1, timeout=30, message="the queue never overflowed")
        frames, closed = until_closed(ws, timeout=30 * SLOW)
    assert parse_server(frames[-1]) == ErrorMessage(OVERFLOW_MESSAGE)
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    received = [m for m in map(parse_server, frames[:-1]) if isinstance(m, ExchangeRate)]
    (ledger,) = sim.ledger.values()
    assert entries(received) == ledger  # the dropped queue was never sent
    assert (sim.overflows, sim.errors_sent) == (1, 1)


def _raw_handshake(port: int) -> socket.socket:
    """Open a WebSocket at the byte level; the returned socket never answers anything."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101")
    return sock


def test_client_that_never_pongs_is_dropped(make_simulator: MakeSim) -> None:
    """A client that does not answer the server's ping within ping_timeout is disconnected (§5)."""
    sim = make_simulator(ping_interval=0.2, ping_timeout=0.3)
    sock = _raw_handshake(sim.port)
    try:
        wait_until(lambda: sim.pong_timeouts == 1 and sim.connections == 0, timeout=10)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data[:1] == b"\x89"  # the unanswered ping frame
        assert sim.dropped == 1 and sim.pings_sent == 1
    finally:
        sock.close()


def test_client_that_pongs_stays_connected(make_simulator: MakeSim) -> None:
    """Pings are sent every ping_interval and a client that answers them stays connected."""
    sim = make_simulator(ping_interval=0.05, ping_timeout=2.0)
    with client(sim.url, ping_interval=None) as ws:
        hello(ws, ["BTC/USD"])
        wait_until(lambda: sim.pongs_received >= 5, timeout=10)
        exrates(ws, 1)
    assert sim.pong_timeouts == 0 and sim.total_connections == 1


def test_scenarios_are_harmless_when_stopped() -> None:
    """Scenario calls on a never-started simulator do nothing (no clients) or just set the mode."""
    sim = Simulator()
    assert sim.drop_connections() == 0
    sim.send_error("x")
    sim.request_reconnect(0.1)
    sim.inject("x")
    sim.lag(0.1)
    sim.drop_every(3)
    sim.stall(True)
    sim.pause_data(True)
    assert "stalled | data paused" in repr(sim)
    sim.stall(False)
    sim.pause_data(False)
    assert "stalled" not in repr(sim) and "paused" not in repr(sim) and sim.errors_sent == 0
    with pytest.raises(RuntimeError, match="start"):
        _ = sim.url
