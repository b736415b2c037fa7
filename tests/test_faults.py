"""Fault scenarios against the real simulator: drops, restarts, stalls, notices, errors, bad frames, pings.

Every scenario ends with the ledger check (:func:`check_ledger`): what the simulator sent is
compared with what the collector stored.

What "read" means: when a server aborts TCP, frames it already handed to the kernel may never
reach the client, so the collector cannot be expected to hold every ledger entry. On each
connection the collector is expected to hold **every entry up to the last one it stored from
that connection** (a prefix of that connection's ledger), each exactly once across all
connections, in time order per pair. Anything after that prefix was lost with the connection
and must fall inside a reported gap (``Collector.gaps``).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coinrates_nb as cr
from coinrates_nb.batch import RateBatch
from coinrates_nb.messages import MAX_RATE, ExchangeRate, Hello, Subscribe, Unsubscribe, parse_client, parse_server
from coinrates_nb.protocol import ClientProtocol
from coinrates_nb.sim.server import OVERFLOW_MESSAGE, LedgerEntry, ServerScope, Simulator, routes_for
from tests.helpers import SLOW, wait_until

MakeSim = Callable[..., Simulator]
PAIRS = ["BTC/USD", "ETH/USD"]
SIX = [*PAIRS, "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD"]
KNOWN = ["BTC", "ETH", "SOL", "EUR", "USD"]


# --------------------------------------------------------------------------- helpers


def stored(rates: cr.Collector) -> list[LedgerEntry]:
    """Every row of the collector's frame as a ledger entry ``(pair, time_ns, rate)``, in arrival order."""
    df = rates.df
    return list(zip(df["pair"].astype(str), df.index.asi8.tolist(), df["rate"].tolist(), strict=True))


def check_ledger(sim: Simulator, rates: cr.Collector, *, complete: set[int] | None = None) -> dict[int, tuple[int, int]]:
    """Compare the simulator's ledger with the collector's frame; return ``{cid: (read, sent)}``.

    Asserts: no row twice; per pair strictly increasing times; every row was sent by the
    simulator; on every connection the collector holds a prefix of the ledger (nothing missing
    before the last entry it read); each unread tail lies inside a reported gap of its pair.
    Connections in ``complete`` were closed gracefully, so all of their entries must be held.
    """
    rows = stored(rates)
    keys = [(pair, t) for pair, t, _ in rows]
    assert len(set(keys)) == len(keys), "an update is stored twice"
    last: dict[str, int] = {}
    for pair, t, _ in rows:
        assert t > last.get(pair, -1), f"{pair} out of time order"
        last[pair] = t
    held = set(rows)
    ledger = sim.ledger
    sent = {entry for entries in ledger.values() for entry in entries}
    assert held <= sent, f"{len(held - sent)} stored rows were never sent"
    gaps = rates.gaps
    spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for pair, start, end in zip(gaps["pair"], gaps["start"], gaps["end"], strict=True):
        spans[pair].append((start.value, end.value))
    summary: dict[int, tuple[int, int]] = {}
    for cid, entries in ledger.items():
        read = max((i + 1 for i, e in enumerate(entries) if e in held), default=0)
        missing = [e for e in entries[:read] if e not in held]
        assert not missing, (f"connection {cid}: {len(missing)} of the first {read} updates missing, e.g. "
                             f"{missing[:3]}; {_where(missing[0], ledger, rows)}")
        if complete is not None and cid in complete:
            assert read == len(entries), f"connection {cid} closed gracefully but {len(entries) - read} updates were lost"
        for pair, t, _ in entries[read:]:
            if (pair, t) in {(p, s) for p, s, _ in held}:
                continue  # the same update arrived on another connection
            assert any(start < t < end for start, end in spans[pair]) or t > last.get(pair, -1), \
                f"connection {cid}: lost {pair} at {t} is not inside a reported gap"
        summary[cid] = (read, len(entries))
    return summary


def _where(entry: LedgerEntry, ledger: dict[int, list[LedgerEntry]], rows: list[LedgerEntry]) -> str:
    """Where a missing update sits: on which connections, and the pair's stored times around it (ms)."""
    pair, t, _ = entry
    on = {cid: entries.index(entry) for cid, entries in ledger.items() if entry in entries}
    spans = {cid: (round((e[0][1] - t) / 1e6, 1), round((e[-1][1] - t) / 1e6, 1)) for cid, e in ledger.items() if e}
    near = [round((s - t) / 1e6, 1) for p, s, _ in rows if p == pair and abs(s - t) < 20_000_000]
    return f"sent on {on} (index); connection spans {spans} ms; stored {pair} at {near} ms"


def gap_set(rates: cr.Collector) -> set[tuple[str, int, int]]:
    """The collector's reported gaps as ``(pair, start_ns, end_ns)``."""
    gaps = rates.gaps
    assert (gaps["reason"] == "disconnect").all() and (gaps["duration"] > pd.Timedelta(0)).all()
    return {(p, a.value, b.value) for p, a, b in zip(gaps["pair"], gaps["start"], gaps["end"], strict=True)}


def expected_gaps(sim: Simulator, rates: cr.Collector) -> set[tuple[str, int, int]]:
    """The gaps the ledger implies for sequential connections: per pair, last update held on one
    connection to the first held on a later one."""
    held = set(stored(rates))
    last: dict[str, int] = {}
    out: set[tuple[str, int, int]] = set()
    for _, entries in sorted(sim.ledger.items()):
        opened = dict(last)
        for pair, t, rate in entries:
            if (pair, t, rate) not in held:
                continue
            if pair in opened:
                out.add((pair, opened.pop(pair), t))
            last[pair] = t
    return out


@pytest.fixture
def collectors() -> Iterator[list[cr.Collector]]:
    """Collectors a test starts are appended here and stopped afterwards, even on failure."""
    made: list[cr.Collector] = []
    yield made
    for c in made:
        c.stop()


# --------------------------------------------------------------------------- 1. repeated drops


@pytest.mark.slow
def test_repeated_drops_reconnect_resubscribe_and_lose_nothing_read(make_simulator: MakeSim,
                                                                    collectors: list[cr.Collector]) -> None:
    """Dropped every 200 updates, 20 times: reconnects each time, replays the scope, keeps every read update once."""
    sim = make_simulator(rate_hz=200)
    rates = cr.stream(PAIRS, url=sim.url, stale_after=5.0, backoff_initial=0.05)
    collectors.append(rates)
    rates.wait(timeout=20)
    sim.drop_every(200)
    wait_until(lambda: sim.dropped >= 5, timeout=60, message="the first drops did not happen")
    rates.subscribe("SOL/USD")  # a scope change mid-way must be replayed by every later hello
    wait_until(lambda: sim.dropped >= 20, timeout=90, message="fewer than 20 drops")
    sim.drop_every(None)
    wait_until(lambda: rates.status.state == "connected" and rates.status.reconnects == sim.dropped
               and sim.connections == 1, timeout=20)
    wait_until(lambda: len([h for h in sim.hellos if isinstance(h, Hello)]) == sim.total_connections, timeout=10,
               message="a connection's hello never reached the server")  # 'connected' is before the server read it
    status = rates.status
    assert status.connections == sim.total_connections == sim.dropped + 1
    assert rates.running and status.last_error is not None and "connection closed" in status.last_error
    hellos = sim.hellos
    assert len([h for h in hellos if isinstance(h, Hello)]) == sim.total_connections
    last_hello = [h for h in hellos if isinstance(h, Hello)][-1]
    assert last_hello.assets == (*PAIRS, "SOL/USD")
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 20, timeout=20, message="no data after the last reconnect")
    summary = check_ledger(sim, rates, complete=set(range(1, sim.total_connections)))
    *dropped, _ = sorted(summary)
    assert len(dropped) == sim.dropped and all(summary[cid][1] == 200 for cid in dropped[1:])
    assert gap_set(rates) == expected_gaps(sim, rates)
    assert len(rates.gaps[rates.gaps["pair"] == "BTC/USD"]) == sim.dropped


# --------------------------------------------------------------------------- 2. server restart


@pytest.mark.slow
def test_server_restart_backs_off_with_jitter_and_cap_then_recovers(make_simulator: MakeSim,
                                                                     collectors: list[cr.Collector]) -> None:
    """While the server is down the status says reconnecting and delays grow, jittered, up to the cap; then it recovers."""
    initial, cap = 0.05, 0.4
    sim = make_simulator(rate_hz=50)
    rates = cr.stream(PAIRS, url=sim.url, backoff_initial=initial, backoff_cap=cap, stale_after=5.0)
    collectors.append(rates)
    rates.wait(timeout=20, rows=3)
    sim.stop()
    stopped_at = time.monotonic()
    states: set[str] = set()

    def retried(n: int) -> bool:
        if rates.telemetry.retry_delays:
            states.add(rates.status.state)
        return len(rates.telemetry.retry_delays) >= n

    wait_until(lambda: retried(9), timeout=30, message="too few reconnect attempts while the server was down")
    delays = list(rates.telemetry.retry_delays)
    assert time.monotonic() - stopped_at >= sum(delays[:-1])  # every delay but the current one was waited out
    assert states == {"reconnecting"} and rates.status.reconnects == 1
    for i, delay in enumerate(delays):
        ceiling = min(cap, initial * 2**i)
        assert ceiling / 2 <= delay <= ceiling, f"attempt {i}: {delay:.3f} s outside [{ceiling / 2}, {ceiling}]"
    capped = delays[4:]
    assert len(set(capped)) == len(capped), "no jitter: capped delays repeat"
    assert max(delays[:2]) < min(capped) <= max(capped) <= cap
    sim.start()  # same port: the URL the collector retries
    wait_until(lambda: rates.status.state == "connected" and sim.connections == 1, timeout=20)
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 5, timeout=20, message="no data after the restart")
    status = rates.status
    assert status.reconnects == 1 and status.connections == 2 and rates.running
    check_ledger(sim, rates, complete={1})
    assert gap_set(rates) == expected_gaps(sim, rates) and {p for p, _, _ in gap_set(rates)} == set(PAIRS)


# --------------------------------------------------------------------------- 3. stalls


@pytest.mark.slow
def test_quiet_stream_is_kept_but_a_stall_is_replaced_within_the_timeout(make_simulator: MakeSim,
                                                                        collectors: list[cr.Collector]) -> None:
    """Data paused with heartbeats flowing is not stale; a full stall is detected within stale_after and replaced."""
    stale_after = 1.5
    sim = make_simulator(rate_hz=20)
    rates = cr.stream(PAIRS, url=sim.url, stale_after=stale_after)
    collectors.append(rates)
    rates.wait(timeout=20)
    sim.pause_data(True)
    beats = rates.status.heartbeats
    wait_until(lambda: rates.status.heartbeats >= beats + 3, timeout=20, message="no heartbeats while data paused")
    assert rates.status.state == "connected" and rates.status.reconnects == 0  # silence of data is not a dead link
    sim.pause_data(False)
    sim.stall(True)
    stalled_at = time.monotonic()
    wait_until(lambda: rates.status.reconnects >= 1, timeout=30, message="stall not detected")
    detected_after = time.monotonic() - stalled_at
    assert detected_after >= stale_after
    assert detected_after < stale_after + 5.0  # well before the client's own ping timeout (20 s + 20 s)
    assert "stream stale" in (rates.status.last_error or "")
    wait_until(lambda: sim.total_connections >= 2 and rates.status.state == "connected", timeout=20)
    sim.stall(False)
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 5, timeout=20, message="no data after the stall was replaced")
    check_ledger(sim, rates)
    assert {p for p, _, _ in gap_set(rates)} == set(PAIRS)


# --------------------------------------------------------------------------- 4. reconnect notices


@pytest.mark.slow
def test_reconnect_notices_switch_before_the_deadline_without_missing_an_update(make_simulator: MakeSim,
                                                                                collectors: list[cr.Collector]) -> None:
    """Three reconnect notices at 1,200 updates/s: each new link opens before the deadline and no update is missed."""
    sim = make_simulator(rate_hz=400, batch=4)
    rates = cr.stream([*PAIRS, "SOL/USD"], url=sim.url, stale_after=5.0)
    collectors.append(rates)
    rates.wait(timeout=20, rows=20)
    for k in range(1, 4):
        sim.request_reconnect(within_seconds=1.0)
        wait_until(lambda k=k: sim.total_connections == k + 1, timeout=1.0,
                   message="no new connection before the deadline")
        wait_until(lambda k=k: sim.connections == 1 and len(sim.ledger.get(k + 1, ())) > 100, timeout=20)
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 100, timeout=20)
    ledger = sim.ledger
    for k in range(1, 4):  # make-before-break: each new link streamed before the old one's last update
        assert ledger[k + 1][0][1] < ledger[k][-1][1]
    check_ledger(sim, rates, complete={1, 2, 3})  # closed by the server with a close frame: fully read
    status = rates.status
    assert status.reconnects == 3 and status.duplicates > 0 and rates.gaps.empty
    assert status.state == "connected" and status.last_error is None


def test_reconnect_to_a_faster_route_keeps_the_old_links_backlog(make_simulator: MakeSim,
                                                                collectors: list[cr.Collector]) -> None:
    """The old link lags 0.5 s behind the new one: its in-flight updates are still stored, once and in order."""
    sim = make_simulator(rate_hz=50)
    rates = cr.stream(SIX, url=sim.url, stale_after=5.0)
    collectors.append(rates)
    rates.wait(timeout=20, rows=5)
    sim.lag(0.5)  # the current connection's route is slow; the replacement's will not be
    sim.request_reconnect(within_seconds=2.0)
    wait_until(lambda: sim.total_connections == 2 and sim.connections == 1, timeout=20)
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 20, timeout=20)
    ledger = sim.ledger
    assert ledger[2][0][1] < ledger[1][-1][1] - 400_000_000  # the new link ran ahead of the old one
    check_ledger(sim, rates, complete={1})
    assert rates.gaps.empty and rates.status.duplicates > 0 and rates.status.reconnects == 1


# --------------------------------------------------------------------------- 5. invalid key


@pytest.mark.parametrize("when", ["http401", "mid-stream"])
def test_invalid_key_stops_retrying_and_says_so(when: str, make_simulator: MakeSim, collectors: list[cr.Collector],
                                                caplog: pytest.LogCaptureFixture) -> None:
    """HTTP 401 at the upgrade, or "Invalid API key" mid-stream: one attempt, state error, readable, thread ends."""
    caplog.set_level(logging.INFO)
    if when == "http401":
        sim = make_simulator(api_key="the-right-key", auth_failure="http401")
        rates = cr.stream(PAIRS, url=sim.url, api_key="a-wrong-key", backoff_initial=0.01)
    else:
        sim = make_simulator(rate_hz=20)
        rates = cr.stream(PAIRS, url=sim.url, backoff_initial=0.01)
        rates.wait(timeout=20)
        sim.send_error("Invalid API key")  # e.g. a key revoked while streaming
    collectors.append(rates)
    wait_until(lambda: not rates.running, timeout=20, message="the collector kept retrying")
    status = rates.status
    expected = "HTTP 401" if when == "http401" else "Invalid API key"
    assert status.state == "error" and expected in (status.last_error or "")
    assert f"error: {status.last_error}" in repr(rates)
    with pytest.raises(cr.CollectorError, match=expected):
        rates.wait(timeout=5)
    attempts = [r for r in caplog.records if "refused an upgrade" in r.getMessage()] if when == "http401" else []
    assert (len(attempts), sim.total_connections) == ((1, 0) if when == "http401" else (0, 1))
    assert status.reconnects == 0 and list(rates.telemetry.retry_delays) == []
    stopped = [r for r in caplog.records if r.name == "coinrates_nb.client" and r.levelno == logging.ERROR]
    assert len(stopped) == 1 and "authentication failed" in stopped[0].getMessage()


# --------------------------------------------------------------------------- 6. slow consumer


@pytest.mark.slow
def test_slow_consumer_overflow_is_reported_and_recovered(make_simulator: MakeSim, collectors: list[cr.Collector]) -> None:
    """A collector whose loop is blocked fills the server's buffer: overflow error, every sent update kept, reconnect."""
    sim = make_simulator(rate_hz=200, max_buffered=200, send_buffer=4096)
    rates = cr.stream(None, url=sim.url, compression=None, stale_after=10.0)  # every crypto pair: ~2,400/s
    collectors.append(rates)
    rates.wait(timeout=20, rows=50)
    blocking, release = threading.Event(), threading.Event()

    def slow_listener(batch: RateBatch, received_ns: int) -> None:
        if blocking.is_set():
            blocking.clear()
            release.wait(timeout=30)

    remove = rates.add_listener(slow_listener)
    blocking.set()
    try:
        wait_until(lambda: sim.overflows >= 1, timeout=30, message="the server buffer never overflowed")
    finally:
        release.set()
        remove()
    wait_until(lambda: rates.status.server_errors >= 1, timeout=20)
    wait_until(lambda: rates.status.state == "connected" and sim.total_connections >= 2, timeout=20)
    status = rates.status
    assert OVERFLOW_MESSAGE in (status.last_error or "") and status.reconnects >= 1 and rates.running
    n = status.rates
    wait_until(lambda: rates.status.rates > n + 50, timeout=20, message="no data after the overflow")
    check_ledger(sim, rates, complete={1})  # the error came after every frame that was sent
    assert set(PAIRS) <= {p for p, _, _ in gap_set(rates)}  # the dropped queue shows up as gaps


# --------------------------------------------------------------------------- 7. bad frames

_EXRATE = ('{{"type":"exrate","asset_id_base":"{base}","asset_id_quote":"USD","rate_type":"BASE_ALL_CROSSES_TO_REF",'
           '"time":"{time}","rate":{rate}}}')


def _exrate(base: str = "BTC", time: str = "2019-06-11T15:26:00.0000000Z", rate: str = "10065.0319541") -> str:
    return _EXRATE.format(base=base, time=time, rate=rate)


REJECTED: list[tuple[str | bytes, str]] = [
    ("{not json", "malformed_json"),
    (b"\x00\x01binary", "binary_frame"),
    ("42", "not_object"),
    ('"just a string"', "not_object"),
    ('{"no_type": 1}', "bad_type"),
    ('{"type": 5}', "bad_type"),
    ('{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","time":"2019-06-11T15:26:00Z"}', "bad_rate"),
    ('{"type":"exrate","asset_id_quote":"USD","time":"2019-06-11T15:26:00Z","rate":1}', "bad_asset_id_base"),
    (_exrate(rate='"10065.03"'), "bad_rate"),
    (_exrate(rate='"NaN"'), "bad_rate"),
    (_exrate(rate="NaN"), "malformed_json"),  # not JSON at all
    (_exrate(rate="-1.5"), "bad_rate"),
    (_exrate(rate="0"), "bad_rate"),
    (_exrate(rate="1e300"), "bad_rate"),
    (_exrate(time="yesterday"), "bad_time"),
    (_exrate(time="2019-13-01T00:00:00Z"), "bad_time"),
    (_exrate(time="2019-06-11T15:26:00.0000000Z"), "time_behind"),  # years old: not a live rate
    (_exrate(time="2099-06-11T15:26:00.0000000Z"), "time_ahead"),  # would freeze the pair and the window
    ('{"type":"reconnect","within_seconds":-1}', "bad_within_seconds"),
]
"""Frames the spec says to refuse, with the kind they are counted under (Status.rejected)."""

_DAY = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)).date().isoformat()
"""Yesterday (UTC): accepted frames carry recent times, since far-past ones are rejected as time_behind."""
_NS = int(datetime.datetime.fromisoformat(f"{_DAY}T15:26:00+00:00").timestamp()) * 1_000_000_000

ACCEPTED: list[tuple[str, str, int]] = [  # (base, wire time, UTC ns): 0-7 fractional digits, offsets (§7)
    ("TSA", f"{_DAY}T15:26:00Z", _NS),
    ("TSB", f"{_DAY}T15:26:00.5Z", _NS + 500_000_000),
    ("TSC", f"{_DAY}T15:26:00.123Z", _NS + 123_000_000),
    ("TSD", f"{_DAY}T15:26:00.123456Z", _NS + 123_456_000),
    ("TSE", f"{_DAY}T15:26:00.1234567Z", _NS + 123_456_700),
    ("TSF", f"{_DAY}T17:26:00.1234567+02:00", _NS + 123_456_700),
    ("TSG", f"{_DAY}T10:26:00-0500", _NS),
]


@pytest.mark.slow
def test_bad_frames_counted_by_kind_logged_once_never_fatal(make_simulator: MakeSim, collectors: list[cr.Collector],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Each bad frame, sent twice, is refused and counted under its kind, logged once per kind; good odd ones are kept."""
    caplog.set_level(logging.DEBUG, logger="coinrates_nb")
    sim = make_simulator(rate_hz=20)
    rates = cr.stream(PAIRS, url=sim.url, max_frame_bytes=4096, backoff_initial=0.01, stale_after=5.0)
    collectors.append(rates)
    rates.wait(timeout=20)
    for _ in range(2):
        for frame, _kind in REJECTED:
            sim.inject(frame)
        for base, wire_time, _ in ACCEPTED:
            sim.inject(_exrate(base=base, time=wire_time, rate="1.25"))
        sim.inject('{"type":"asset","asset_id":"BTC","name":"Bitcoin"}')  # unknown type: ignored (§4.5)
    expected: dict[str, int] = defaultdict(int)
    for _, kind in REJECTED:
        expected[kind] += 2
    wait_until(lambda: rates.status.rejected == expected and rates.status.unknown == 2, timeout=20,
               message=f"rejected {rates.status.rejected}")
    for n, frame in enumerate(["x" * 10_000, b"\xff\xfe not utf-8"], start=1):  # these end the connection
        for k in range(2):
            sim.inject(frame, text=True)
            wait_until(lambda n=n, k=k: rates.status.reconnects == 2 * (n - 1) + k + 1
                       and rates.status.state == "connected", timeout=20)
    expected.update(oversized_frame=2, invalid_utf8=2)
    wait_until(lambda: rates.status.rejected == expected, timeout=10)
    rows = rates.df
    for base, _, ns in ACCEPTED:
        kept = rows[rows["pair"] == f"{base}/USD"]
        assert kept.index.asi8.tolist() == [ns] and kept["rate"].tolist() == [1.25]
    assert rates.status.duplicates >= len(ACCEPTED)  # the second copy of each was dropped
    warned = [r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING and r.getMessage().startswith("rejected frame (")]
    assert sorted(m.split(")")[0].removeprefix("rejected frame (") for m in warned) == sorted(expected)
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 5, timeout=20, message="the stream did not go on")
    assert rates.running and rates.status.state == "connected"


# --------------------------------------------------------------------------- 8. ping/pong


@pytest.mark.slow
def test_answers_server_pings_for_ten_seconds_on_one_connection(make_simulator: MakeSim,
                                                                collectors: list[cr.Collector]) -> None:
    """The server pings every second and drops silent clients: the collector answers every ping, one connection."""
    sim = make_simulator(rate_hz=5, ping_interval=1.0, ping_timeout=2.0)
    rates = cr.stream(PAIRS, url=sim.url, ping_interval=None)  # only the server pings
    collectors.append(rates)
    rates.wait(timeout=20)
    wait_until(lambda: sim.pongs_received >= 10, timeout=40, message="fewer than 10 pings answered")
    assert sim.total_connections == 1 and sim.pong_timeouts == 0 and sim.dropped == 0
    status = rates.status
    assert status.state == "connected" and status.reconnects == 0 and status.uptime_s >= 10
    check_ledger(sim, rates)


# --------------------------------------------------------------------------- fuzzing: scope algebra, parser

ITEMS = st.lists(st.sampled_from(["BTC/USD", "ETH/USD", "btc/eur", "BTC", "ETH", "EUR", "SOL/USD"]), max_size=4)
SCOPE_OPS = st.lists(st.tuples(st.sampled_from(["hello", "hello-all", "subscribe", "unsubscribe"]), ITEMS), max_size=25)


@settings(max_examples=300, deadline=None)
@given(SCOPE_OPS)
def test_server_scope_matches_a_set_model(ops: list[tuple[str, list[str]]]) -> None:
    """ServerScope: hello replaces (or unfilters), a first subscribe opens, subscribe adds, unsubscribe removes exactly."""
    scope = ServerScope()
    started, unfiltered, model = False, False, set[str]()
    for op, raw in ops:
        items = tuple(dict.fromkeys(i.upper() for i in raw))
        if op == "hello" or op == "hello-all" or (op == "subscribe" and not started):
            assets = None if op == "hello-all" else items
            scope.apply((Hello if op != "subscribe" else Subscribe)(assets=assets))
            started, unfiltered, model = True, assets is None, set(items if assets is not None else ())
        elif op == "subscribe":
            scope.apply(Subscribe(assets=items))
            model |= set(items)
        else:
            scope.apply(Unsubscribe(assets=items))
            model -= set(items)
        assert (scope.started, scope.unfiltered, set(scope.items)) == (started, unfiltered, model)
        assert len(scope.items) == len(set(scope.items))
        routes = [r.pair for r in routes_for(scope, KNOWN)]
        assert len(routes) == len(set(routes)) and (routes != []) <= started


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "set-all", "subscribe", "unsubscribe", "reconnect"]), ITEMS),
                max_size=25))
def test_server_scope_follows_the_client_scope_over_the_wire(ops: list[tuple[str, list[str]]]) -> None:
    """Whatever the client sends (and replays after a reconnect), the server's scope equals the client's."""
    client = ClientProtocol(["BTC/USD"])
    server = ServerScope()
    server.apply(parse_client(client.hello()))
    for op, items in ops:
        if op == "reconnect":
            server = ServerScope()
            text: str | None = client.hello()
        elif op in ("set", "set-all"):
            text = client.set_scope(None if op == "set-all" else items)
        elif op == "subscribe":
            text = client.subscribe(items) if items else None
        else:
            text = client.unsubscribe(items) if items else None
        if text is not None:
            server.apply(parse_client(text))
        if client.scope.items is None:
            assert server.unfiltered
        else:
            assert not server.unfiltered and set(server.items) == set(client.scope.items)


@settings(max_examples=300, deadline=None)
@given(base=st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=10),
       quote=st.sampled_from(["USD", "EUR", "USDT", "BTC"]),
       rate_type=st.sampled_from(["BASE_ALL_CROSSES_TO_REF", "BASE_QUOTE_ISOLATED", "BASE_AND_QUOTE_TO_REF"]),
       ticks=st.integers(0, 4_102_444_800 * 10**7),
       rate=st.floats(min_value=1e-12, max_value=MAX_RATE, allow_nan=False, allow_infinity=False))
def test_any_valid_exrate_round_trips(base: str, quote: str, rate_type: str, ticks: int, rate: float) -> None:
    """Any valid update serialised the simulator's way parses back to itself, all 7 time digits and the exact rate."""
    update = ExchangeRate(base, quote, rate_type, ticks * 100, rate)
    assert parse_server(update.to_json()) == update
    assert parse_server(update.to_json().encode()) == update  # bytes in a text frame's payload


def test_a_replacement_that_is_refused_leaves_the_old_link_streaming(make_simulator: MakeSim,
                                                                    collectors: list[cr.Collector]) -> None:
    """A reconnect notice while the server refuses new links (429): the old link streams to its deadline, then a retry."""
    sim = make_simulator(rate_hz=50)
    rates = cr.stream(PAIRS, url=sim.url, stale_after=5.0, backoff_initial=0.2)
    collectors.append(rates)
    rates.wait(timeout=20, rows=5)
    sim.refuse_connections()
    sim.request_reconnect(within_seconds=3.0 * SLOW)
    wait_until(lambda: sim.refused_connections >= 1, timeout=5, message="the client did not try a replacement")
    on_old = len(sim.ledger[1])
    wait_until(lambda: len(sim.ledger[1]) > on_old + 20 and rates.status.rates >= len(sim.ledger[1]) - 10,
               timeout=5, message="the old link stopped streaming when its replacement was refused")
    assert sim.connections == 1 and rates.status.state == "connected" and sim.refused_connections == 1
    assert "replacement connection failed" in (rates.status.last_error or "")
    sim.refuse_connections(False)
    wait_until(lambda: sim.total_connections == 2 and len(sim.ledger.get(2, ())) > 20, timeout=20,
               message="no new connection after the old one's deadline")
    check_ledger(sim, rates, complete={1})  # the old link was read to the close at its deadline
