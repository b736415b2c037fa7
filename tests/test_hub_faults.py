"""Hub faults against the real simulator and a real nats-server: each ends with the ledger check.

Hub restart; NATS server restart (file-backed JetStream: nothing lost); a consumer killed and
restarted; a slow consumer (JetStream holds the backlog; the consumer reports it and its lag);
the upstream connection dropped (the gap reaches consumers, in place); a second hub against the
same NATS (refused while the first renews its lease; a crashed hub's lease is waited out; a hub
whose lease was taken stops publishing). ``check_ledger`` (``test_faults.py``, through
``test_hub.settled_ledger``) compares what the simulator sent on each upstream connection with a
consumer's frame: every update once, in order per pair, anything lost inside a reported gap.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

import coinrates_nb as cr
from coinrates_nb.exceptions import CollectorError
from coinrates_nb.hub import NatsServer, links, wire
from coinrates_nb.hub import consumer as consumer_module
from coinrates_nb.sim.server import Simulator
from tests import test_hub
from tests.helpers import SLOW, wait_until
from tests.test_faults import expected_gaps, gap_set
from tests.test_hub import PAIRS, MakeConsumer, MakeHub, settled_ledger

nats_server = test_hub.nats_server
make_hub = test_hub.make_hub
make_consumer = test_hub.make_consumer
"""The fixtures of ``test_hub.py`` (a real nats-server per test, hub and consumer factories)."""

MakeSim = Callable[..., Simulator]

pytestmark = pytest.mark.slow


def grows(rates: cr.Collector, by: int = 20, timeout: float = 15) -> None:
    """Wait until ``rates`` stored ``by`` more updates (the stream is live again)."""
    n = len(rates.frame)
    wait_until(lambda: len(rates.frame) >= n + by, timeout=timeout, message=f"{rates!r} did not grow")


def test_hub_restart_loses_nothing_and_duplicates_nothing(make_simulator: MakeSim, make_hub: MakeHub,
                                                          make_consumer: MakeConsumer) -> None:
    """A hub stopped and started again: the consumer keeps going, gets a gap at the stop, holds every update once."""
    sim = make_simulator(rate_hz=50)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20, rows=20)
    hub.stop()
    published = hub.status.published
    assert hub.status.state == "stopped" and hub.status.gaps_published == 1
    hub.start()
    wait_until(lambda: sim.total_connections == 2, timeout=10)
    grows(rates, 40)
    assert rates.status.state == "connected" and rates.status.reconnects == 0  # NATS itself never went away
    assert hub.status.duplicates == 0 and hub.status.published > 0 and published > 0
    summary = settled_ledger(sim, rates)
    assert set(summary) == {1, 2}
    assert gap_set(rates) == expected_gaps(sim, rates) and set(rates.gaps["pair"]) == set(PAIRS)


def test_nats_restart_loses_nothing(make_simulator: MakeSim, make_hub: MakeHub, make_consumer: MakeConsumer,
                                    nats_server: NatsServer) -> None:
    """NATS restarts under a running hub and consumer: both reconnect, no gap, every update once, also for a newcomer."""
    sim = make_simulator(rate_hz=50)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20, rows=20)
    nats_server.restart()
    wait_until(lambda: rates.status.reconnects >= 1 and rates.status.state == "connected", timeout=20,
               message="the consumer did not reconnect")
    grows(rates, 60)
    assert hub.status.nats_reconnects >= 1 and sim.total_connections == 1
    assert rates.gaps.empty, rates.gaps
    settled_ledger(sim, rates)
    newcomer = make_consumer(PAIRS, hub.nats_url, window="1h")
    wait_until(lambda: len(newcomer.frame) > 0, timeout=10)
    assert int(newcomer.df.index.asi8.min()) <= int(rates.df.index.asi8.min())  # from before the restart: kept
    settled_ledger(sim, newcomer)


def test_consumer_killed_and_restarted_fills_what_it_missed(make_simulator: MakeSim, make_hub: MakeHub,
                                                           make_consumer: MakeConsumer) -> None:
    """A consumer stopped for a while, then a new one and a restarted one: each holds every update once, no gap."""
    sim = make_simulator(rate_hz=50)
    hub = make_hub(PAIRS, url=sim.url)
    first = make_consumer(PAIRS, hub.nats_url, window="1h")
    first.wait(timeout=20, rows=20)
    first.stop()
    stopped_at = time.time_ns()
    wait_until(lambda: hub.status.published >= first.status.rates + 50, timeout=10)
    again = make_consumer(PAIRS, hub.nats_url, window="1h")  # a new kernel: fills its window from JetStream
    wait_until(lambda: len(again.frame) >= hub.status.published - 5, timeout=10)
    assert (again.df.index.asi8 > stopped_at).any() and int(again.df.index.asi8.min()) < stopped_at
    settled_ledger(sim, again)
    first.restart()  # the same collector again: the window comes back, what it had is not stored twice
    grows(first, 20)
    assert first.status.duplicates > 0 and first.gaps.empty
    settled_ledger(sim, first)


def test_slow_consumer_backlog_is_held_by_jetstream_and_reported(make_simulator: MakeSim, make_hub: MakeHub,
                                                                 make_consumer: MakeConsumer,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer whose store blocks 2 s: JetStream holds the backlog (reported), lag shows it, then it catches up."""
    monkeypatch.setattr(consumer_module, "MAX_ACK_PENDING", 40)
    sim = make_simulator(rate_hz=100)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20, rows=20)
    release = threading.Event()
    seen: list[tuple[int, float]] = []

    def slow(batch: cr.RateBatch, received_ns: int) -> None:
        if not release.is_set():
            release.wait(2.0 * SLOW)
            release.set()
        seen.append((links(rates)["nats"]["backlog"], rates.telemetry.lag_ns or 0))

    remove = rates.add_listener(slow)
    wait_until(lambda: release.is_set() and len(seen) > 5, timeout=20)
    published = hub.status.published
    wait_until(lambda: rates.status.rates >= published and links(rates)["nats"]["backlog"] == 0, timeout=20,
               message="the consumer did not catch up")
    remove()
    assert max(backlog for backlog, _ in seen) > 100, seen[:10]  # held in the stream, not in the notebook
    assert max(lag for _, lag in seen) > 1e9  # the lag said how far behind it was
    assert rates.status.lag_ms is not None and rates.status.lag_ms < 1000
    assert rates.gaps.empty and sim.total_connections == 1
    settled_ledger(sim, rates)


def test_upstream_drop_reaches_consumers_as_the_hubs_gaps(make_simulator: MakeSim, make_hub: MakeHub,
                                                         make_consumer: MakeConsumer) -> None:
    """The upstream connection dropped twice: the hub reconnects; consumers report the hub's gaps, in place."""
    sim = make_simulator(rate_hz=50)
    hub = make_hub(PAIRS, url=sim.url, backoff_initial=0.05)
    early = make_consumer(PAIRS, hub.nats_url)
    early.wait(timeout=20, rows=20)
    for n in (2, 3):
        sim.drop_connections()
        wait_until(lambda n=n: sim.total_connections == n and sim.connections == 1, timeout=10)
        grows(early, 20)
    wait_until(lambda: (links(early)["upstream"] or {}).get("reconnects") == 2, timeout=5)
    upstream = hub.collector
    assert upstream is not None and upstream.status.reconnects == 2 and hub.status.gaps_published == 2
    late = make_consumer(PAIRS, hub.nats_url, window="1h")  # starts after the drops: learns them from the stream
    wait_until(lambda: len(late.frame) >= len(early.frame), timeout=10)
    hub_gaps = {(p, a.value, b.value) for p, a, b in zip(upstream.gaps["pair"], upstream.gaps["start"],
                                                          upstream.gaps["end"], strict=True)}
    assert len(hub_gaps) == 2 * len(PAIRS)
    for rates in (early, late):
        assert gap_set(rates) == hub_gaps
        settled_ledger(sim, rates)


def test_a_second_hub_refuses_while_the_first_publishes(make_simulator: MakeSim, make_hub: MakeHub,
                                                        make_consumer: MakeConsumer) -> None:
    """A second hub on the same NATS refuses to start (never both publishing); the first goes on; the ledger holds."""
    sim = make_simulator(rate_hz=50)
    first = make_hub(PAIRS, url=sim.url, lease=1.0)
    rates = make_consumer(PAIRS, first.nats_url)
    rates.wait(timeout=20, rows=10)
    second = make_hub(PAIRS, url=sim.url, lease=1.0, start=False)
    started = time.monotonic()
    with pytest.raises(CollectorError, match="another hub"):
        second.start()
    assert time.monotonic() - started < 5 * SLOW
    assert second.status.state == "error" and not second.running and sim.total_connections == 1
    grows(rates, 20)
    assert first.status.state == "running"
    settled_ledger(sim, rates)


def test_a_crashed_hubs_lease_is_waited_out_then_taken(make_simulator: MakeSim, make_hub: MakeHub,
                                                       nats_server: NatsServer) -> None:
    """A lease left by a crashed hub (never renewed) blocks a new hub only until it expires, then it takes over."""
    sim = make_simulator(rate_hz=20)
    layout = wire.Layout()

    async def leave_a_stale_lease() -> None:
        import nats
        from nats.js import api

        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        kv = await js.create_key_value(bucket=layout.bucket, history=1, ttl=1.5, storage=api.StorageType.FILE)
        await kv.create("leader", wire.encode({"hub": "crashed", "host": "elsewhere", "pid": 1}))
        await nc.close()

    asyncio.run(leave_a_stale_lease())
    started = time.monotonic()
    hub = make_hub(PAIRS, url=sim.url, lease=1.5)
    assert 0.5 <= time.monotonic() - started < 6 * SLOW
    wait_until(lambda: hub.status.published > 10, timeout=10)


def test_a_hub_whose_lease_was_taken_stops_publishing(make_simulator: MakeSim, make_hub: MakeHub,
                                                      nats_server: NatsServer) -> None:
    """Another hub's lease in place of ours (we were cut off too long): this hub is fenced and stops publishing."""
    sim = make_simulator(rate_hz=50)
    hub = make_hub(PAIRS, url=sim.url, lease=1.0)
    wait_until(lambda: hub.status.published > 10, timeout=10)

    async def steal() -> None:
        import nats

        nc = await nats.connect(nats_server.url)
        kv = await nc.jetstream().key_value(wire.Layout().bucket)
        await kv.put("leader", wire.encode({"hub": "usurper", "host": "elsewhere", "pid": 2}))
        await nc.close()

    asyncio.run(steal())
    wait_until(lambda: hub.status.state == "fenced", timeout=10, message="the hub did not notice")
    assert "took over" in (hub.status.last_error or "")
    wait_until(lambda: hub.collector is not None and not hub.collector.running, timeout=10)
    # a window sent before the fence may still be acknowledged; after that nothing more reaches the stream
    wait_until(lambda: hub._publisher.in_flight == 0, timeout=10, message="the window in flight was never settled")

    async def last_seq() -> int:
        import nats

        nc = await nats.connect(nats_server.url)
        info = await nc.jetstream().stream_info(wire.Layout().stream)
        await nc.close()
        return int(info.state.last_seq)

    published, seq = hub.status.published, asyncio.run(last_seq())
    time.sleep(0.5)  # nothing may be published any more: observe a quiet interval
    assert hub.status.published == published and asyncio.run(last_seq()) == seq and sim.connections == 0
