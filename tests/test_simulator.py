"""Simulator on loopback, driven by a plain websockets client: protocol, scenarios, lifecycle, CLI."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from coinrates_nb.exceptions import ConfigError, MessageError
from coinrates_nb.messages import (
    ErrorMessage,
    ExchangeRate,
    Heartbeat,
    Hello,
    Reconnect,
    ServerMessage,
    Subscribe,
    Unsubscribe,
    parse_client,
    parse_server,
)
from coinrates_nb.sim.server import (
    INVALID_KEY_MESSAGE,
    OVERFLOW_MESSAGE,
    ServerScope,
    Simulator,
    http_keys,
    main,
    redact,
    routes_for,
)
from tests.helpers import wait_until

MakeSim = Callable[..., Simulator]
CRYPTO_USD = {f"{a}/USD" for a in ("BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT", "LINK", "AVAX", "USDT", "USDC")}
TIME_RE = re.compile(r'"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"')


# --------------------------------------------------------------------------- client helpers


@contextmanager
def client(url: str, **options: Any) -> Iterator[ClientConnection]:
    """A plain websockets client (no proxy), closed afterwards."""
    options.setdefault("open_timeout", 10)
    options.setdefault("close_timeout", 2)
    options.setdefault("max_queue", None)  # keep reading frames we never recv(), so closing is prompt
    with connect(url, proxy=None, **options) as ws:
        yield ws


def hello(ws: ClientConnection, items: list[str] | None, heartbeat: bool = False, apikey: str | None = None,
          **extra: Any) -> None:
    """Send a hello for ``items`` (``None`` omits the filter; ``apikey`` goes in the body if given)."""
    body: dict[str, Any] = {"type": "hello", "heartbeat": heartbeat, **extra}
    if apikey is not None:
        body["apikey"] = apikey
    if items is not None:
        body["subscribe_filter_asset_id"] = items
    ws.send(json.dumps(body))


def recv(ws: ClientConnection, timeout: float = 10.0) -> ServerMessage:
    """Receive and parse one text frame."""
    raw = ws.recv(timeout=timeout)
    assert isinstance(raw, str)
    return parse_server(raw)


def exrates(ws: ClientConnection, n: int, timeout: float = 20.0) -> list[ExchangeRate]:
    """Receive until ``n`` exrate messages arrived (other types are skipped)."""
    out: list[ExchangeRate] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = recv(ws, max(0.01, deadline - time.monotonic()))
        if isinstance(msg, ExchangeRate):
            out.append(msg)
    return out


def until_closed(ws: ClientConnection, timeout: float = 20.0) -> tuple[list[str | bytes], ConnectionClosed]:
    """Receive every frame until the connection closes; return them and the closing exception."""
    frames: list[str | bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            frames.append(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        except ConnectionClosed as exc:
            return frames, exc


def pairs_after(ws: ClientConnection, t_mark: int, n: int) -> list[ExchangeRate]:
    """The next ``n`` exrates stamped after ``t_mark`` (earlier ones were generated before it)."""
    out: list[ExchangeRate] = []
    while len(out) < n:
        out.extend(m for m in exrates(ws, 1) if m.time_ns > t_mark)
    return out


def sim_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "coinrates-simulator" and t.is_alive()]


# --------------------------------------------------------------------------- acceptance


def test_acceptance_hello_btc_usd_streams_only_btc_usd(simulator: Simulator) -> None:
    """hello with heartbeat and filter ["BTC/USD"] streams exrate messages for BTC/USD only."""
    with client(simulator.url) as ws:
        ws.send('{"type":"hello","heartbeat":true,"subscribe_filter_asset_id":["BTC/USD"]}')
        messages = [recv(ws) for _ in range(15)]
    rates = [m for m in messages if isinstance(m, ExchangeRate)]
    assert len(rates) >= 10
    assert all(isinstance(m, (ExchangeRate, Heartbeat)) for m in messages)
    assert {(m.base, m.quote, m.rate_type) for m in rates} == {("BTC", "USD", "BASE_ALL_CROSSES_TO_REF")}
    assert all(50_000 < m.rate < 200_000 for m in rates)


def test_acceptance_heartbeat_between_throttled_updates(simulator: Simulator) -> None:
    """With a 3000 ms throttle and heartbeat on, {"type":"hearbeat"} arrives between two updates."""
    with client(simulator.url) as ws:
        ws.send('{"type":"hello","heartbeat":true,"subscribe_filter_asset_id":["BTC/USD"],'
                '"subscribe_update_limit_ms_exrate":3000}')
        frames: list[str] = []
        while sum('"exrate"' in f for f in frames) < 2:
            frame = ws.recv(timeout=10)
            assert isinstance(frame, str)
            frames.append(frame)
    kinds = ["exrate" if '"exrate"' in f else f for f in frames]
    first, second = kinds.index("exrate"), len(kinds) - 1
    between = kinds[first + 1:second]
    assert between and all(f == '{"type":"hearbeat"}' for f in between), kinds
    t1, t2 = (m.time_ns for m in map(parse_server, frames) if isinstance(m, ExchangeRate))
    assert t2 - t1 >= 3_000_000_000


# --------------------------------------------------------------------------- scope


def test_subscribe_adds_and_unsubscribe_removes(simulator: Simulator) -> None:
    """subscribe adds ETH/USD to the stream; unsubscribe BTC/USD removes it; both are recorded."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        assert {m.pair for m in exrates(ws, 3)} == {"BTC/USD"}
        ws.send('{"type":"subscribe","heartbeat":false,"subscribe_filter_asset_id":["ETH/USD"]}')
        wait_until(lambda: len(simulator.hellos) == 2)
        t_mark = time.time_ns()
        assert {m.pair for m in pairs_after(ws, t_mark, 8)} == {"BTC/USD", "ETH/USD"}
        ws.send('{"type":"unsubscribe","heartbeat":false,"subscribe_filter_asset_id":["BTC/USD"]}')
        wait_until(lambda: len(simulator.hellos) == 3)
        t_mark = time.time_ns()
        assert {m.pair for m in pairs_after(ws, t_mark, 8)} == {"ETH/USD"}
    assert [type(m) for m in simulator.hellos] == [Hello, Subscribe, Unsubscribe]


def test_hello_replaces_scope(simulator: Simulator) -> None:
    """A second hello replaces the whole scope rather than adding to it."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD", "SOL/USD"])
        assert {m.pair for m in exrates(ws, 6)} == {"BTC/USD", "SOL/USD"}
        hello(ws, ["ETH/USD"])
        wait_until(lambda: len(simulator.hellos) == 2)
        assert {m.pair for m in pairs_after(ws, time.time_ns(), 6)} == {"ETH/USD"}


def test_first_subscribe_opens_the_stream(simulator: Simulator) -> None:
    """A connection may start with subscribe instead of hello (§3.1)."""
    with client(simulator.url) as ws:
        ws.send('{"type":"subscribe","heartbeat":false,"subscribe_filter_asset_id":["LTC/USD"]}')
        assert {m.pair for m in exrates(ws, 3)} == {"LTC/USD"}


def test_unfiltered_hello_streams_every_crypto_vs_usd(simulator: Simulator) -> None:
    """A hello without subscribe_filter_asset_id streams every crypto asset vs USD, no fiat."""
    with client(simulator.url) as ws:
        hello(ws, None)
        received = exrates(ws, 36)
    assert {m.pair for m in received[:12]} == {m.pair for m in received} == CRYPTO_USD  # all of them every tick
    assert {m.rate_type for m in received} == {"BASE_ALL_CROSSES_TO_REF"}


def test_asset_filters_and_unknown_assets(simulator: Simulator) -> None:
    """Asset ids ETH and sol select ETH/USD and SOL/USD; unknown XYZ and BTC/XYZ select nothing, without error."""
    with client(simulator.url) as ws:
        hello(ws, ["ETH", "XYZ", "BTC/XYZ", "sol"])
        assert {m.pair for m in exrates(ws, 10)} == {"ETH/USD", "SOL/USD"}
    assert simulator.errors_sent == 0


def test_cross_pair_is_composed_from_usd_legs(simulator: Simulator) -> None:
    """BTC/EUR is BASE_AND_QUOTE_TO_REF, equals BTC/USD / EUR/USD of the same instant, at most once a second."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD", "EUR/USD", "BTC/EUR"])
        by_time: dict[int, dict[str, ExchangeRate]] = defaultdict(dict)
        crosses: list[ExchangeRate] = []
        while len(crosses) < 2:  # a tick sends its pairs in hello order, so the legs come first
            for m in exrates(ws, 1):
                by_time[m.time_ns][m.pair] = m
                if m.pair == "BTC/EUR":
                    crosses.append(m)
    for cross in crosses:
        legs = by_time[cross.time_ns]
        assert cross.rate_type == "BASE_AND_QUOTE_TO_REF" and (cross.base, cross.quote) == ("BTC", "EUR")
        assert legs["EUR/USD"].rate_type == "BASE_ALL_CROSSES_TO_REF"
        assert cross.rate == pytest.approx(legs["BTC/USD"].rate / legs["EUR/USD"].rate, rel=1e-12)
    assert crosses[1].time_ns - crosses[0].time_ns >= 1_000_000_000


def test_throttle_respected_per_pair(simulator: Simulator) -> None:
    """subscribe_update_limit_ms_exrate=250 spaces each pair's updates at least 250 ms apart."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD", "ETH/USD"], subscribe_update_limit_ms_exrate=250)
        received = exrates(ws, 12)
    times: dict[str, list[int]] = defaultdict(list)
    for m in received:
        times[m.pair].append(m.time_ns)
    assert set(times) == {"BTC/USD", "ETH/USD"}
    gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:], strict=False)]
    assert min(gaps) >= 250_000_000
    assert max(gaps) < 1_000_000_000  # the throttle, not something slower, sets the pace


def test_times_have_seven_digits_and_increase_per_pair(simulator: Simulator) -> None:
    """Every time has 7 fractional digits and Z, is near wall-clock now, and increases strictly per pair."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC", "ETH/USD", "EUR/USD"])
        frames: list[str] = []
        while len(frames) < 30:
            frame = ws.recv(timeout=10)
            assert isinstance(frame, str)
            frames.append(frame)
    assert all(TIME_RE.search(f) for f in frames)
    last: dict[str, int] = {}
    for m in map(parse_server, frames):
        assert isinstance(m, ExchangeRate)
        assert m.time_ns > last.get(m.pair, 0)
        assert abs(m.time_ns - time.time_ns()) < 60_000_000_000
        last[m.pair] = m.time_ns


def test_ledger_matches_what_the_client_received(simulator: Simulator) -> None:
    """The ledger holds exactly the (pair, time, rate) the client parsed, in order."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD", "ETH/USD", "BTC/EUR"])
        received = [(m.pair, m.time_ns, m.rate) for m in exrates(ws, 30)]
    (cid,) = simulator.ledger
    assert simulator.ledger[cid][:30] == received
    assert simulator.sent_total >= 30


def test_batch_sends_several_updates_per_wakeup(make_simulator: MakeSim) -> None:
    """batch=10 at 200 Hz still gives one object per frame, times 5 ms apart, strictly increasing."""
    sim = make_simulator(rate_hz=200, batch=10)
    with client(sim.url) as ws:
        hello(ws, ["BTC/USD"])
        received = exrates(ws, 40)
    times = [m.time_ns for m in received]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(g > 0 for g in gaps)
    assert sorted(gaps)[len(gaps) // 2] == pytest.approx(5_000_000, abs=200)


# --------------------------------------------------------------------------- errors and keys


@pytest.mark.parametrize("first", [
    '{"type": "helo", "heartbeat": false, "subscribe_filter_asset_id": ["BTC/USD"]}',
    "not json",
    '{"type":"unsubscribe","heartbeat":true,"subscribe_filter_asset_id":["BTC/EUR"]}',
    '{"type":"hello","subscribe_filter_asset_id":"BTC/USD"}',
])
def test_invalid_first_message_gets_error_then_close(simulator: Simulator, first: str) -> None:
    """An invalid first message (or unsubscribe first) is answered with error, then the server closes."""
    with client(simulator.url) as ws:
        ws.send(first)
        frames, closed = until_closed(ws)
    assert len(frames) == 1
    msg = parse_server(frames[0])
    assert isinstance(msg, ErrorMessage) and msg.message
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert simulator.sent_total == 0


def test_invalid_later_message_also_closes(simulator: Simulator) -> None:
    """A malformed message after a valid hello also ends the connection with an error."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        ws.send('{"type":"subscribe","subscribe_filter_asset_id":[""]}')
        frames, _ = until_closed(ws)
    assert isinstance(parse_server(frames[-1]), ErrorMessage)


@pytest.mark.parametrize("how", ["wrong-header", "no-key", "wrong-body"])
def test_wrong_or_missing_key_gets_invalid_api_key_then_close(make_simulator: MakeSim, how: str) -> None:
    """A wrong or missing key gets {"type":"error","message":"Invalid API key"}, then the server closes."""
    sim = make_simulator(api_key="right-key")
    headers = {"X-CoinAPI-Key": "wrong-key"} if how == "wrong-header" else {}
    with client(sim.url, additional_headers=headers) as ws:
        if how != "wrong-header":  # a bad header key is refused at once, before any hello
            hello(ws, ["BTC/USD"], apikey="wrong-key" if how == "wrong-body" else None)
        frames, closed = until_closed(ws)
    assert [parse_server(f) for f in frames] == [ErrorMessage(INVALID_KEY_MESSAGE)]
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    assert sim.sent_total == 0


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"coinapi:{key}".encode()).decode()


@pytest.mark.parametrize("how", ["x-coinapi-key", "authorization", "basic", "query", "path", "body"])
def test_right_key_accepted_in_every_documented_form(make_simulator: MakeSim, how: str) -> None:
    """The right key via X-CoinAPI-Key, Authorization (raw or Basic), ?apikey=, /APIKEY- or hello body is accepted."""
    key = "73034021-THIS-IS-SAMPLE-KEY"
    sim = make_simulator(api_key=key)
    url = {"query": f"{sim.url}?apikey={key}", "path": f"{sim.url}APIKEY-{key}"}.get(how, sim.url)
    headers = {"x-coinapi-key": {"X-CoinAPI-Key": key}, "authorization": {"Authorization": key},
               "basic": {"Authorization": _basic(key)}}.get(how, {})
    with client(url, additional_headers=headers) as ws:
        hello(ws, ["BTC/USD"], apikey=key if how == "body" else None)
        assert {m.pair for m in exrates(ws, 3)} == {"BTC/USD"}
    assert sim.errors_sent == 0


def test_invalid_hello_never_echoes_its_body_key(simulator: Simulator) -> None:
    """A malformed hello carrying apikey is refused without the key in the error, the parse error or the logs."""
    marker = "MARKER-BODY-KEY-1f2e"
    frame = f'{{"type":"hello","apikey":"{marker}","heartbeat":"yes"}}'
    with pytest.raises(MessageError) as info:
        parse_client(frame)
    assert marker not in str(info.value) and "[secure]" in str(info.value) and info.value.__context__ is None
    with client(simulator.url) as ws:
        ws.send(frame)
        frames, _ = until_closed(ws)
    assert len(frames) == 1 and marker not in str(frames[0]) and isinstance(parse_server(frames[0]), ErrorMessage)


def test_http401_mode_refuses_upgrade(make_simulator: MakeSim) -> None:
    """auth_failure="http401" refuses a bad key before the upgrade and still accepts the right one."""
    sim = make_simulator(api_key="right-key", auth_failure="http401")
    with pytest.raises(InvalidStatus) as info, client(sim.url, additional_headers={"X-CoinAPI-Key": "nope"}):
        pass
    assert info.value.response.status_code == 401
    with client(sim.url, additional_headers={"X-CoinAPI-Key": "right-key"}) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)


def test_key_never_logged(make_simulator: MakeSim, caplog: pytest.LogCaptureFixture) -> None:
    """At DEBUG, neither the simulator's nor websockets' server logs show a key, right or wrong."""
    right, wrong = "MARKER-RIGHT-5d1c", "MARKER-WRONG-77fa"
    caplog.set_level(logging.DEBUG)
    sim = make_simulator(api_key=right)
    cases: list[tuple[str, dict[str, str], str | None]] = [
        (sim.url, {"X-CoinAPI-Key": right}, None),
        (sim.url, {"Authorization": _basic(wrong)}, None),
        (f"{sim.url}?apikey={wrong}", {}, None),
        (sim.url, {}, right),
    ]
    for url, headers, body in cases:
        with client(url, additional_headers=headers) as ws:
            with contextlib.suppress(ConnectionClosed):  # a wrong key may close before the hello
                hello(ws, ["BTC/USD"], apikey=body)
            ws.recv(timeout=10)
    server_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("coinrates_nb", "websockets.server"))]
    assert any("[secure]" in line for line in server_logs), "the handshake dump was not logged: test is void"
    assert not [line for line in server_logs if right in line or wrong in line]
    assert right not in repr(sim)


# --------------------------------------------------------------------------- scenarios


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
    assert simulator.drop_connections() == 0


def test_drop_every_n_messages(simulator: Simulator) -> None:
    """drop_every(5) aborts each connection right after its 5th exrate; None turns it off."""
    simulator.drop_every(5)
    for _ in range(2):
        with client(simulator.url) as ws:
            hello(ws, ["BTC/USD", "ETH/USD"])
            frames, closed = until_closed(ws)
        assert len([f for f in frames if '"exrate"' in str(f)]) == 5 and closed.rcvd is None
    assert [len(v) for v in simulator.ledger.values()] == [5, 5]
    simulator.drop_every(None)
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 12)


def test_send_error_then_close(simulator: Simulator) -> None:
    """send_error() delivers {"type":"error"} to every client and then closes the connection."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        simulator.send_error("Something went wrong")
        frames, closed = until_closed(ws)
    assert parse_server(frames[-1]) == ErrorMessage("Something went wrong")
    assert closed.rcvd is not None and closed.rcvd.code == 1008


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
        assert t_request <= msg.before_time_ns <= t_request + 1_000_000_000 + 500_000_000
        with client(simulator.url) as new:
            hello(new, ["ETH/USD"])
            frames, closed = until_closed(old)
            t_closed = time.time_ns()
            assert any('"exrate"' in str(f) for f in frames), "data stopped before the deadline"
            assert t_closed >= msg.before_time_ns - 50_000_000
            assert closed.rcvd is not None and closed.rcvd.code == 1001
            assert {m.pair for m in exrates(new, 3)} == {"ETH/USD"}
            wait_until(lambda: simulator.connections == 1, message="the old connection is still registered")


def test_stall_sends_nothing_until_released(make_simulator: MakeSim) -> None:
    """stall() keeps the socket open but sends no data, heartbeats or pings; stall(False) resumes."""
    sim = make_simulator(rate_hz=20, heartbeat_after=0.1, ping_interval=0.1)
    with client(sim.url, ping_interval=None) as ws:
        hello(ws, ["BTC/USD"], heartbeat=True)
        exrates(ws, 2)
        sim.stall(True)
        with pytest.raises(TimeoutError):  # drain what was in flight
            for _ in range(1000):
                ws.recv(timeout=0.5)
        counts = (sim.sent_total, sim.heartbeats_sent, sim.pings_sent)
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.8)  # eight heartbeat periods and eight ping periods of silence
        assert (sim.sent_total, sim.heartbeats_sent, sim.pings_sent) == counts
        assert sim.connections == 1
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
        sim.pause_data(False)
        pairs_after(ws, t_mark, 1)


def test_inject_sends_raw_frames(simulator: Simulator) -> None:
    """inject() sends a raw text frame and a raw binary frame to every client, verbatim."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"], subscribe_update_limit_ms_exrate=60_000)
        exrates(ws, 1)
        simulator.inject("{not json")
        simulator.inject(b"\x00\x01binary")
        assert ws.recv(timeout=10) == "{not json"
        assert ws.recv(timeout=10) == b"\x00\x01binary"


def test_slow_consumer_gets_overflow_error_then_close(make_simulator: MakeSim) -> None:
    """A client that stops reading fills the queue: the overflow error arrives after the data, then close (§5)."""
    sim = make_simulator(rate_hz=200, max_buffered=100, send_buffer=4096)
    with client(sim.url, compression=None, max_queue=4) as ws:
        hello(ws, None)  # every crypto pair: 2,400 messages a second
        wait_until(lambda: sim.overflows >= 1, timeout=30, message="the queue never overflowed")
        frames, closed = until_closed(ws, timeout=30)
    assert parse_server(frames[-1]) == ErrorMessage(OVERFLOW_MESSAGE)
    assert closed.rcvd is not None and closed.rcvd.code == 1008
    received = [m for m in map(parse_server, frames[:-1]) if isinstance(m, ExchangeRate)]
    (ledger,) = sim.ledger.values()
    assert [(m.pair, m.time_ns, m.rate) for m in received] == ledger  # the dropped queue was never sent


def _raw_handshake(port: int) -> socket.socket:
    """Open a WebSocket at the byte level; the returned socket never answers anything."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
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
    finally:
        sock.close()


def test_client_that_pongs_stays_connected(make_simulator: MakeSim) -> None:
    """Pings are sent every ping_interval and a client that answers them stays connected."""
    sim = make_simulator(ping_interval=0.05, ping_timeout=2.0)
    with client(sim.url, ping_interval=None) as ws:
        hello(ws, ["BTC/USD"])
        wait_until(lambda: sim.pings_sent >= 5, timeout=10)
        exrates(ws, 1)
    assert sim.pong_timeouts == 0


# --------------------------------------------------------------------------- lifecycle


def test_binds_loopback_only(simulator: Simulator) -> None:
    """The default simulator listens on 127.0.0.1 and advertises that address in its URL."""
    assert simulator.address == ("127.0.0.1", simulator.port)
    assert simulator.url == f"ws://127.0.0.1:{simulator.port}/"


def test_wait_for_clients(simulator: Simulator) -> None:
    """wait_for_clients() returns once enough clients are connected and raises TimeoutError otherwise."""
    with pytest.raises(TimeoutError):
        simulator.wait_for_clients(1, timeout=0.05)
    with client(simulator.url):
        simulator.wait_for_clients(1, timeout=10)
        assert simulator.connections == 1 and simulator.total_connections == 1


def test_stop_is_idempotent_and_leaves_no_thread() -> None:
    """start() twice and stop() twice are fine; no simulator thread survives and the port is closed."""
    before = len(sim_threads())
    sim = Simulator(seed=1)
    sim.start()
    assert sim.start() is sim and len(sim_threads()) == before + 1
    port = sim.port
    with client(sim.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        sim.stop()
        _, closed = until_closed(ws)
        assert closed.rcvd is not None and closed.rcvd.code == 1001
    sim.stop()
    assert len(sim_threads()) == before and not sim.running and sim.connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_restart_reuses_port(make_simulator: MakeSim) -> None:
    """After stop(), start() listens again on the same port, so clients can reconnect to the same URL."""
    sim = make_simulator()
    url = sim.url
    sim.stop()
    sim.start()
    assert sim.url == url
    with client(url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)


def test_scenarios_are_harmless_when_stopped() -> None:
    """Scenario calls on a stopped simulator do nothing (no clients) or just set the mode."""
    sim = Simulator()
    assert sim.drop_connections() == 0
    sim.send_error("x")
    sim.request_reconnect(0.1)
    sim.inject("x")
    sim.stall(True)
    assert "stalled" in repr(sim)
    sim.stall(False)
    with pytest.raises(RuntimeError, match="start"):
        _ = sim.url


@pytest.mark.parametrize("options", [
    {"rate_hz": 0}, {"rate_hz": float("nan")}, {"batch": 0}, {"max_buffered": 0}, {"heartbeat_after": -1},
    {"ping_interval": 0}, {"port": 70_000}, {"api_key": " "}, {"auth_failure": "teapot"}, {"cross_interval": -1},
])
def test_bad_options_rejected(options: dict[str, Any]) -> None:
    """Invalid constructor options raise ConfigError naming the option."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        Simulator(**options)


def test_port_in_use_is_a_transport_error(simulator: Simulator) -> None:
    """start() on a busy port raises TransportError and leaves no thread behind."""
    from coinrates_nb.exceptions import TransportError

    before = len(sim_threads())
    with pytest.raises(TransportError, match="could not listen"):
        Simulator(port=simulator.port).start()
    assert len(sim_threads()) == before


# --------------------------------------------------------------------------- pure parts


def test_scope_algebra_and_routes() -> None:
    """ServerScope: hello replaces, subscribe adds, unsubscribe removes exactly; routes follow §3.3/§4.1."""
    known = ["BTC", "ETH", "EUR", "USDT", "USD"]
    crypto = ["BTC", "ETH", "USDT"]

    def pairs(scope: ServerScope) -> list[tuple[str, str]]:
        return [(r.pair, r.rate_type) for r in routes_for(scope, known, crypto)]

    scope = ServerScope()
    assert pairs(scope) == []
    scope.apply(Hello(assets=None, heartbeat=True))
    assert [p for p, _ in pairs(scope)] == ["BTC/USD", "ETH/USD", "USDT/USD"] and scope.heartbeat
    scope.apply(Hello(assets=("btc", "EUR", "XYZ", "ETH/XYZ", "BTC/BTC"), heartbeat=False, update_limit_ms=100))
    assert pairs(scope) == [("BTC/USD", "BASE_ALL_CROSSES_TO_REF"), ("EUR/USD", "BASE_ALL_CROSSES_TO_REF")]
    scope.apply(Subscribe(assets=("ETH/EUR", "USD/EUR"), heartbeat=True, update_limit_ms=None))
    assert pairs(scope)[2:] == [("ETH/EUR", "BASE_AND_QUOTE_TO_REF"), ("USD/EUR", "BASE_AND_QUOTE_TO_REF")]
    assert scope.heartbeat is False and scope.update_limit_ms == 100  # subscribe keeps both
    scope.apply(Unsubscribe(assets=("BTC", "ETH/EUR")))
    assert [p for p, _ in pairs(scope)] == ["EUR/USD", "USD/EUR"]
    scope.apply(Hello(assets=("USD",)))
    assert [p for p, _ in pairs(scope)] == ["BTC/USD", "ETH/USD", "USDT/USD"]


def test_http_keys_reads_every_documented_form() -> None:
    """http_keys finds the key in X-CoinAPI-Key, Authorization (raw/Basic), query and path; ignores Bearer."""
    assert http_keys("/", {"X-CoinAPI-Key": "k1"}) == ["k1"]
    assert http_keys("/", {"Authorization": "k2"}) == ["k2"]
    assert http_keys("/", {"Authorization": _basic("k3")}) == ["k3"]
    assert http_keys("/", {"Authorization": "Bearer eyJhbGciOi"}) == []
    assert http_keys("/", {"Authorization": "Basic !!!notbase64"}) == []
    assert http_keys("/?apikey=k4&x=1", {}) == ["k4"]
    assert http_keys("/APIKEY-k5", {}) == ["k5"]
    assert http_keys("/", {}) == []


def test_redact_hides_keys_in_every_form() -> None:
    """redact() replaces header values, query and path keys and JSON apikey fields with [secure]."""
    text = redact('< X-CoinAPI-Key: s1\n< Authorization: Basic s2\nGET /APIKEY-s3?apikey=s4 {"apikey": "s5"}')
    assert not any(f"s{i}" in text for i in range(1, 6)) and text.count("[secure]") == 5


# --------------------------------------------------------------------------- command line


def test_main_requires_key_in_environment() -> None:
    """--api-key-required without COINAPI_KEY exits with a usage error."""
    with pytest.raises(SystemExit) as info:
        main(["--port", "0", "--api-key-required"])
    assert info.value.code == 2


def test_main_runs_for_duration() -> None:
    """main() with --duration serves and returns 0 when the time is up."""
    before = len(sim_threads())
    assert main(["--port", "0", "--duration", "0.2", "--log-level", "WARNING"]) == 0
    assert len(sim_threads()) == before


def test_cli_serves_until_ctrl_c() -> None:
    """python -m coinrates_nb.sim serves clients and exits 0 on Ctrl-C (SIGINT)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "coinrates_nb.sim", "--port", "0", "--seed", "3", "--rate-hz", "20"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            found = re.search(r"listening on (ws://\S+/)", line)
            if found:
                url = found.group(1)
                break
        assert url is not None and url.startswith("ws://127.0.0.1:")
        with client(url) as ws:
            hello(ws, ["BTC/USD"])
            assert exrates(ws, 1)[0].pair == "BTC/USD"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
