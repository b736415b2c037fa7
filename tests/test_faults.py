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

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import pandas as pd
import pytest

import coinrates_nb as cr
from coinrates_nb.simulator import OVERFLOW_MESSAGE, LedgerEntry, Simulator
from tests.helpers import wait_until

MakeSim = Callable[..., Simulator]
PAIRS = ["BTC/USD", "ETH/USD"]
SIX = [*PAIRS, "SOL/USD", "XRP/USD", "ADA/USD", "DOGE/USD"]


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
        assert not missing, f"connection {cid}: {len(missing)} of the first {read} updates missing, e.g. {missing[:3]}"
        if complete is not None and cid in complete:
            assert read == len(entries), f"connection {cid} closed gracefully but {len(entries) - read} updates were lost"
        for pair, t, _ in entries[read:]:
            if (pair, t) in {(p, s) for p, s, _ in held}:
                continue  # the same update arrived on another connection
            assert any(start < t < end for start, end in spans[pair]) or t > last.get(pair, -1), \
                f"connection {cid}: lost {pair} at {t} is not inside a reported gap"
        summary[cid] = (read, len(entries))
    return summary


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
    status = rates.status
    assert status.connections == sim.total_connections == sim.dropped + 1
    assert rates.running and status.last_error is not None and "connection closed" in status.last_error
    hellos = sim.hellos
    assert len([h for h in hellos if isinstance(h, cr.Hello)]) == sim.total_connections
    last_hello = [h for h in hellos if isinstance(h, cr.Hello)][-1]
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

    def slow_listener(update: cr.ExchangeRate, received_ns: int) -> None:
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
