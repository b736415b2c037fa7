"""The simulator on loopback, driven by a plain websockets client: protocol, keys, handshake, lifecycle.

Every server is started on 127.0.0.1, port 0, by a fixture (``simulator`` / ``make_simulator``)
that also stops it. The client helpers here are shared with ``test_sim_scenarios`` and
``test_sim_cli``; every wall-clock bound is scaled by ``tests.helpers.SLOW``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

import coinrates_nb
from coinrates_nb.exceptions import ConfigError, MessageError, SimulatorError, TransportError
from coinrates_nb.messages import (
    ErrorMessage,
    ExchangeRate,
    Hello,
    Reconnect,
    ServerMessage,
    Subscribe,
    Unsubscribe,
    parse_client,
    parse_server,
)
from coinrates_nb.sim import INVALID_KEY_MESSAGE, SIMULATOR_HEADER, PriceModel, Simulator
from tests.helpers import SLOW, wait_until

MakeSim = Callable[..., Simulator]
ALL_USD = {f"{a}/USD" for a in PriceModel().assets if a != "USD"}  # 12 crypto (stablecoins included) + 7 fiat
TIME_RE = re.compile(r'"time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z"')
TIMEOUT = 10.0 * SLOW
"""Seconds any single wait on the wire may take."""


# --------------------------------------------------------------------------- client helpers (shared)


@contextmanager
def client(url: str, **options: Any) -> Iterator[ClientConnection]:
    """A plain websockets client (no proxy), closed afterwards."""
    options.setdefault("open_timeout", TIMEOUT)
    options.setdefault("close_timeout", 2 * SLOW)
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


def recv(ws: ClientConnection, timeout: float = TIMEOUT) -> ServerMessage:
    """Receive and parse one text frame."""
    raw = ws.recv(timeout=timeout)
    assert isinstance(raw, str)
    return parse_server(raw)


def exrates(ws: ClientConnection, n: int, timeout: float = 2 * TIMEOUT) -> list[ExchangeRate]:
    """Receive until ``n`` exrate messages arrived (other types are skipped)."""
    out: list[ExchangeRate] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        msg = recv(ws, max(0.01, deadline - time.monotonic()))
        if isinstance(msg, ExchangeRate):
            out.append(msg)
    return out


def until_closed(ws: ClientConnection, timeout: float = 2 * TIMEOUT) -> tuple[list[str | bytes], ConnectionClosed]:
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


def one_tick(ws: ClientConnection) -> set[str]:
    """The pairs of the first full tick: every tick sends each pair once, so read until one repeats."""
    seen: list[str] = []
    while (pair := exrates(ws, 1)[0].pair) not in seen:
        seen.append(pair)
    return set(seen)


def entries(msgs: list[ExchangeRate]) -> list[tuple[str, int, float]]:
    """Messages as ledger entries ``(pair, time_ns, rate)``."""
    return [(m.pair, m.time_ns, m.rate) for m in msgs]


def sim_threads() -> list[threading.Thread]:
    """Live simulator threads (each simulator runs one)."""
    return [t for t in threading.enumerate() if t.name == "coinrates-simulator" and t.is_alive()]


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"coinapi:{key}".encode()).decode()


# --------------------------------------------------------------------------- acceptance


def test_acceptance_hello_btc_usd_streams_only_btc_usd(simulator: Simulator) -> None:
    """hello with heartbeat and filter ["BTC/USD"] streams BTC/USD exrates only, exactly as the ledger records."""
    with client(simulator.url) as ws:
        ws.send('{"type":"hello","heartbeat":true,"subscribe_filter_asset_id":["BTC/USD"]}')
        messages = [recv(ws) for _ in range(15)]
    rates = [m for m in messages if isinstance(m, ExchangeRate)]
    assert len(rates) == 15  # 20 updates/s: never a second of silence, so no heartbeat
    assert {(m.base, m.quote, m.rate_type) for m in rates} == {("BTC", "USD", "BASE_ALL_CROSSES_TO_REF")}
    assert all(50_000 < m.rate < 200_000 for m in rates)
    assert simulator.ledger[1][:15] == entries(rates)
    assert simulator.hellos == [Hello(assets=("BTC/USD",), heartbeat=True)]


def test_acceptance_heartbeat_between_throttled_updates(simulator: Simulator) -> None:
    """With a 3000 ms throttle and heartbeat on, {"type":"hearbeat"} arrives between two updates."""
    with client(simulator.url) as ws:
        ws.send('{"type":"hello","heartbeat":true,"subscribe_filter_asset_id":["BTC/USD"],'
                '"subscribe_update_limit_ms_exrate":3000}')
        frames: list[str] = []
        while sum('"exrate"' in f for f in frames) < 2:
            frame = ws.recv(timeout=TIMEOUT)
            assert isinstance(frame, str)
            frames.append(frame)
    kinds = ["exrate" if '"exrate"' in f else f for f in frames]
    first, second = kinds.index("exrate"), len(kinds) - 1
    between = kinds[first + 1:second]
    assert between and all(f == '{"type":"hearbeat"}' for f in between), kinds
    t1, t2 = (m.time_ns for m in map(parse_server, frames) if isinstance(m, ExchangeRate))
    assert t2 - t1 >= 3_000_000_000
    assert simulator.heartbeats_sent >= len(between)


# --------------------------------------------------------------------------- scope over the wire


def test_subscribe_adds_and_unsubscribe_removes(simulator: Simulator) -> None:
    """subscribe adds ETH/USD to the stream; unsubscribe BTC/USD removes it; the server logs all three."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        assert {m.pair for m in exrates(ws, 3)} == {"BTC/USD"}
        ws.send('{"type":"subscribe","heartbeat":false,"subscribe_filter_asset_id":["ETH/USD"]}')
        wait_until(lambda: len(simulator.hellos) == 2)
        assert {m.pair for m in pairs_after(ws, time.time_ns(), 8)} == {"BTC/USD", "ETH/USD"}
        ws.send('{"type":"unsubscribe","heartbeat":false,"subscribe_filter_asset_id":["BTC/USD"]}')
        wait_until(lambda: len(simulator.hellos) == 3)
        assert {m.pair for m in pairs_after(ws, time.time_ns(), 8)} == {"ETH/USD"}
    assert [type(m) for m in simulator.hellos] == [Hello, Subscribe, Unsubscribe]
    assert [m.assets for m in simulator.hellos] == [("BTC/USD",), ("ETH/USD",), ("BTC/USD",)]


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
    assert [type(m) for m in simulator.hellos] == [Subscribe]


def test_unfiltered_hello_streams_every_asset_vs_usd(simulator: Simulator) -> None:
    """A hello without subscribe_filter_asset_id streams every known asset vs USD each tick, fiat included."""
    with client(simulator.url) as ws:
        hello(ws, None)
        received = exrates(ws, 3 * len(ALL_USD))
    assert {m.pair for m in received[:len(ALL_USD)]} == {m.pair for m in received} == ALL_USD  # all of them every tick
    assert {m.rate_type for m in received} == {"BASE_ALL_CROSSES_TO_REF"} and "EUR/USD" in ALL_USD
    assert simulator.ledger[1][:len(received)] == entries(received)


def test_unfiltered_stream_delivers_every_pair_a_single_asset_filter_does(simulator: Simulator) -> None:
    """The unfiltered stream's pairs are a superset of the union over every single-asset filter (EUR gives EUR/USD)."""
    assets = list(simulator.model.assets)
    with contextlib.ExitStack() as stack:
        whole = stack.enter_context(client(simulator.url))
        hello(whole, None)
        single = {}
        for asset in assets:
            single[asset] = ws = stack.enter_context(client(simulator.url))
            hello(ws, [asset])
        unfiltered = one_tick(whole)
        by_filter = {asset: one_tick(ws) for asset, ws in single.items()}
    union = set().union(*by_filter.values())
    assert union <= unfiltered == ALL_USD
    assert by_filter["EUR"] == {"EUR/USD"} and by_filter["USD"] == ALL_USD and by_filter["BTC"] == {"BTC/USD"}
    ledger = simulator.ledger
    assert {p for p, _, _ in ledger[1]} == unfiltered  # the server's record agrees with what arrived
    assert {p for cid in range(2, len(assets) + 2) for p, _, _ in ledger[cid]} == union


def test_asset_filters_and_unknown_assets(simulator: Simulator) -> None:
    """Asset ids ETH and sol select ETH/USD and SOL/USD; unknown XYZ and BTC/XYZ select nothing, without error."""
    with client(simulator.url) as ws:
        hello(ws, ["ETH", "XYZ", "BTC/XYZ", "sol"])
        assert {m.pair for m in exrates(ws, 10)} == {"ETH/USD", "SOL/USD"}
    assert simulator.errors_sent == 0
    assert simulator.hellos == [Hello(assets=("ETH", "XYZ", "BTC/XYZ", "SOL"), heartbeat=False)]


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
    assert max(gaps) < 1_000_000_000 * SLOW  # the throttle, not something slower, sets the pace


def test_times_have_seven_digits_and_increase_per_pair(simulator: Simulator) -> None:
    """Every time has 7 fractional digits and Z, is near wall-clock now, and increases strictly per pair."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC", "ETH/USD", "EUR/USD"])
        frames: list[str] = []
        while len(frames) < 30:
            frame = ws.recv(timeout=TIMEOUT)
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
        received = entries(exrates(ws, 30))
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
    assert sim.ledger[1][:40] == entries(received)


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
    assert simulator.sent_total == 0 and simulator.errors_sent == 1 and simulator.hellos == []


def test_invalid_later_message_also_closes(simulator: Simulator) -> None:
    """A malformed message after a valid hello also ends the connection with an error."""
    with client(simulator.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        ws.send('{"type":"subscribe","subscribe_filter_asset_id":[""]}')
        frames, _ = until_closed(ws)
    assert isinstance(parse_server(frames[-1]), ErrorMessage)
    assert len(simulator.hellos) == 1 and simulator.errors_sent == 1


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
    assert sim.sent_total == 0 and sim.hellos == []


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
    assert sim.errors_sent == 0 and len(sim.hellos) == 1


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
    assert info.value.response.headers[SIMULATOR_HEADER] == coinrates_nb.__version__  # the refusal says who, too
    assert sim.total_connections == 0
    with client(sim.url, additional_headers={"X-CoinAPI-Key": "right-key"}) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
    assert sim.total_connections == 1


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
            ws.recv(timeout=TIMEOUT)
    server_logs = [r.getMessage() for r in caplog.records if r.name.startswith(("coinrates_nb", "websockets.server"))]
    assert any("[secure]" in line for line in server_logs), "the handshake dump was not logged: test is void"
    assert not [line for line in server_logs if right in line or wrong in line]
    assert right not in repr(sim)


# --------------------------------------------------------------------------- the handshake names the simulator


def test_handshake_names_the_simulator_and_its_version(simulator: Simulator) -> None:
    """The HTTP 101 upgrade response carries X-Coinrates-Simulator: <coinrates_nb.__version__>."""
    with client(simulator.url) as ws:
        response = ws.response
        assert response is not None and response.status_code == 101
        assert response.headers[SIMULATOR_HEADER] == coinrates_nb.__version__
        assert response.headers.get_all(SIMULATOR_HEADER) == [coinrates_nb.__version__]
        assert f"coinrates_nb-simulator/{coinrates_nb.__version__}" in response.headers["Server"]
    assert SIMULATOR_HEADER == "X-Coinrates-Simulator"


# --------------------------------------------------------------------------- lifecycle


def test_binds_loopback_only(simulator: Simulator) -> None:
    """The default simulator listens on 127.0.0.1 and advertises that address in its URL."""
    assert simulator.address == ("127.0.0.1", simulator.port)
    assert simulator.url == f"ws://127.0.0.1:{simulator.port}/"


def test_wait_for_clients(simulator: Simulator) -> None:
    """wait_for_clients() returns once enough clients are connected and raises SimulatorError otherwise."""
    with pytest.raises(SimulatorError):
        simulator.wait_for_clients(1, timeout=0.05)
    with client(simulator.url):
        simulator.wait_for_clients(1, timeout=TIMEOUT)
        assert simulator.connections == 1 and simulator.total_connections == 1


def test_stop_is_idempotent_and_leaves_no_thread(make_simulator: MakeSim) -> None:
    """start() twice and stop() twice are fine; no simulator thread survives and the port is closed."""
    before = len(sim_threads())
    sim = make_simulator()
    assert sim.start() is sim and len(sim_threads()) == before + 1
    port = sim.port
    sim.stop()
    sim.stop()
    assert len(sim_threads()) == before and not sim.running and sim.connections == 0 and sim.address is None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_stop_sends_reconnect_as_the_last_message_then_closes(make_simulator: MakeSim) -> None:
    """stop(): the data stops, the last message is reconnect (int within_seconds, before_time = the close), then 1001."""
    sim = make_simulator(rate_hz=50, heartbeat_after=0.05)
    with client(sim.url) as ws:
        hello(ws, ["BTC/USD", "ETH/USD"], heartbeat=True)
        first = exrates(ws, 4)
        t_stop = time.time_ns()
        started = time.monotonic()
        sim.stop()  # this client ignores the notice: it is closed after stop_grace
        took = time.monotonic() - started
        frames, closed = until_closed(ws)
    assert frames, "nothing arrived between the stop and the close"
    raw = frames[-1]
    assert isinstance(raw, str) and json.loads(raw)["within_seconds"] == 0 and type(json.loads(raw)["within_seconds"]) is int
    notice = parse_server(raw)
    assert isinstance(notice, Reconnect)
    grace_ns = round(sim.stop_grace * 1e9)
    assert t_stop + grace_ns - 100 <= notice.before_time_ns <= t_stop + grace_ns + round(took * 1e9)
    assert closed.rcvd is not None and closed.rcvd.code == 1001
    assert sim.stop_grace <= took < sim.stop_grace + 2.0 * SLOW  # the grace, not within_seconds or a timeout
    received = [m for m in map(parse_server, frames[:-1]) if isinstance(m, ExchangeRate)]
    assert sim.ledger[1] == entries(first + received)  # every exrate sent before the notice was read, nothing after


def test_stop_ends_early_once_clients_follow_the_notice(make_simulator: MakeSim) -> None:
    """With a 5 s grace, stop() returns as soon as the client that got the notice leaves; new clients are refused."""
    sim = make_simulator(rate_hz=20, stop_grace=5.0)
    url = sim.url
    done = threading.Event()
    stopper = threading.Thread(target=lambda: (sim.stop(), done.set()), name="test-stopper")
    with client(url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        t_stop = time.time_ns()
        stopper.start()
        while not isinstance(msg := recv(ws), Reconnect):
            pass
        assert msg.within_seconds == 5
        assert t_stop + 5_000_000_000 - 100 <= msg.before_time_ns <= time.time_ns() + 5_000_000_000
        with pytest.raises((ConnectionRefusedError, InvalidStatus)), client(url, open_timeout=2 * SLOW):
            pass  # a stopping server takes no new connection: the client must go elsewhere (§4.2)
        left = time.monotonic()
    assert done.wait(2.0 * SLOW), "stop() waited for the whole grace although the client had left"
    assert time.monotonic() - left < 2.0 * SLOW
    stopper.join(TIMEOUT)
    assert sim.total_connections == 1 and not sim.running


def test_stop_with_no_grace_still_sends_the_notice(make_simulator: MakeSim) -> None:
    """stop_grace=0 announces within_seconds 0 and before_time = now, and the notice still precedes the close."""
    sim = make_simulator(rate_hz=20, stop_grace=0)
    with client(sim.url) as ws:
        hello(ws, ["BTC/USD"])
        exrates(ws, 1)
        t_stop = time.time_ns()
        sim.stop()
        t_done = time.time_ns()
        frames, closed = until_closed(ws)
    notice = parse_server(frames[-1])
    assert isinstance(notice, Reconnect) and notice.within_seconds == 0
    assert t_stop - 100 <= notice.before_time_ns <= t_done
    assert closed.rcvd is not None and closed.rcvd.code == 1001


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
        assert ws.response is not None and ws.response.headers[SIMULATOR_HEADER] == coinrates_nb.__version__
    assert list(sim.ledger) == [1]


@pytest.mark.parametrize("options", [
    {"rate_hz": 0}, {"rate_hz": float("nan")}, {"batch": 0}, {"max_buffered": 0}, {"heartbeat_after": -1},
    {"ping_interval": 0}, {"port": 70_000}, {"api_key": " "}, {"auth_failure": "teapot"}, {"cross_interval": -1},
    {"stop_grace": -0.1}, {"stop_grace": float("inf")}, {"stop_grace": True},
])
def test_bad_options_rejected(options: dict[str, Any]) -> None:
    """Invalid constructor options raise ConfigError naming the option."""
    with pytest.raises(ConfigError, match=next(iter(options))):
        Simulator(**options)


def test_port_in_use_is_a_transport_error(simulator: Simulator, make_simulator: MakeSim) -> None:
    """start() on a busy port raises TransportError and leaves no thread behind."""
    before = len(sim_threads())
    with pytest.raises(TransportError, match="could not listen"):
        make_simulator(port=simulator.port)
    assert len(sim_threads()) == before
