"""The collector at its edges: re-run cells, wrong threads, its own errors, silent pairs, bad times, redirects."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

import coinrates_nb as cr
from coinrates_nb import _cells, status
from coinrates_nb.batch import RateBatch
from coinrates_nb.exceptions import CollectorError, ConfigError
from coinrates_nb.messages import ExchangeRate
from coinrates_nb.sim.server import Simulator
from coinrates_nb.times import format_time
from tests.helpers import wait_until

PAIRS = ["BTC/USD", "ETH/USD"]


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "coinrates-collector" and t.is_alive()]


@pytest.fixture
def cell(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Pretend to be JupyterLab running one cell again and again: bump ``run[0]`` for a new run."""
    run = [0]
    monkeypatch.setattr(_cells, "_BY_CELL", {})
    monkeypatch.setattr(_cells, "parent_message",
                        lambda: {"metadata": {"cellId": "cell-1"}, "header": {"msg_id": f"run-{run[0]}"}})
    yield run


def test_rerunning_an_edited_cell_stops_the_collector_it_made_before(simulator: Simulator, cell: list[int]) -> None:
    """Same arguments give the same collector; 20 edits of one cell leave exactly one collector running."""
    first = cr.stream(PAIRS, url=simulator.url)
    try:
        cell[0] += 1
        assert cr.stream(PAIRS, url=simulator.url) is first  # re-run, unchanged: the same running collector
        made = [first]
        for i in range(20):  # each run edits an option that used to be ignored by the reuse key
            cell[0] += 1
            made.append(cr.stream(PAIRS, url=simulator.url, stale_after=5.0 + i, compression=None))
            assert made[-1] is not made[-2]
        wait_until(lambda: [c for c in made if c.running] == [made[-1]], timeout=20,
                   message="old collectors still running")
        assert collector_threads() == [made[-1]._thread]
        assert made[-1].settings.stale_after == 24.0 and made[-1].settings.compression is None
    finally:
        for c in made:
            c.stop()


def test_stream_rejects_pair_typos_and_wrong_types() -> None:
    """Pair-shaped typos and wrong types are ConfigErrors before any thread starts."""
    before = len(collector_threads())
    for bad, hint in (("BTCUSD", "did you mean 'BTC/USD'"), ("BTC-USD", "did you mean 'BTC/USD'"),
                      (5, "must be a pair"), (["BTC/USD", 5], "must be strings"), ("", "must not be empty"),
                      ([], "no pairs given")):
        with pytest.raises(ConfigError, match=hint):
            cr.stream(bad)  # type: ignore[arg-type]
    assert len(collector_threads()) == before


def test_scope_calls_from_the_collector_thread_fail_at_once(simulator: Simulator) -> None:
    """A listener that calls subscribe() or stop() gets a CollectorError at once instead of waiting on itself."""
    errors: list[BaseException] = []

    def listener(_rates: RateBatch, _received: int) -> None:
        if not errors:
            for call in (lambda: rates.subscribe("SOL/USD"), rates.stop):
                try:
                    call()
                except CollectorError as exc:
                    errors.append(exc)

    with cr.stream(PAIRS, url=simulator.url, start=False) as rates:
        rates.add_listener(listener)
        wait_until(lambda: len(errors) == 2, timeout=5, message="the calls did not fail at once")
        assert all("own thread" in str(e) for e in errors)
        assert rates.running and rates.status.state == "connected"


def test_an_error_of_our_own_code_is_counted_not_a_reconnect(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The frame raising on a batch is counted in status and shown; the connection stays up, data goes on."""
    with cr.stream(PAIRS, url=simulator.url) as rates:
        rates.wait(timeout=20)
        real, calls = rates.frame.extend, [0]

        def failing(batch: RateBatch, received: Any) -> None:
            calls[0] += 1
            if calls[0] <= 3:
                raise RuntimeError("boom")
            real(batch, received)

        monkeypatch.setattr(rates.frame, "extend", failing)
        wait_until(lambda: calls[0] > 10, timeout=20)
        s = rates.status
        assert s.internal_errors == 3 and "RuntimeError: boom" in (s.last_error or "")
        assert s.state == "connected" and s.reconnects == 0 and simulator.total_connections == 1


def test_a_pair_that_never_delivers_is_reported_apart_from_connection_health(
        simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """FOO/USD (unknown to the server) shows in status.silent_pairs and the summary; the live pairs do not."""
    monkeypatch.setattr("coinrates_nb.collector.NO_DATA_AFTER", 0.5)
    with cr.stream([*PAIRS, "FOO/USD"], url=simulator.url) as rates:
        rates.wait(timeout=20, pairs=PAIRS)
        s = wait_until(lambda: rates.status if rates.status.silent_pairs else None, timeout=10)
        assert list(s.silent_pairs) == ["FOO/USD"] and s.state == "connected"
        assert "no data for FOO/USD for" in s.summary() and "no data for FOO/USD" in rates._repr_html_()
    assert rates.status.silent_pairs == {}  # stopped: nothing is "silent"
    assert status.NO_DATA_AFTER == 30.0


def test_stopped_collector_shows_zero_throughput(simulator: Simulator) -> None:
    """After stop() the status shows 0 msgs/s, not the last rate measured."""
    rates = cr.stream(PAIRS, url=simulator.url)
    rates.wait(timeout=20, rows=20)
    wait_until(lambda: rates.status.msgs_per_s > 0, timeout=10)
    rates.stop()
    assert rates.status.state == "stopped" and rates.status.msgs_per_s == 0.0


def test_a_future_update_does_not_freeze_its_pair_or_the_window(simulator: Simulator) -> None:
    """A year-ahead BTC/USD update is rejected: BTC/USD keeps flowing, ages stay >= 0, the window keeps evicting."""
    with cr.stream(PAIRS, url=simulator.url, window="3s") as rates:
        rates.wait(timeout=20)
        year_ahead = pd.Timestamp.now(tz="UTC").value + 365 * 86_400 * 10**9
        simulator.inject(ExchangeRate("BTC", "USD", "BASE_ALL_CROSSES_TO_REF", year_ahead, 1.0).to_json())
        wait_until(lambda: rates.status.rejected.get("time_ahead") == 1, timeout=10)
        n = rates.frame.counts().get("BTC/USD", 0)
        wait_until(lambda: rates.frame.counts().get("BTC/USD", 0) > n + 5 or rates.frame.evicted > 0, timeout=20)
        latest = rates.latest()
        assert (latest["age"] >= pd.Timedelta(0)).all() and latest["time"].max().value < year_ahead
        assert rates.status.duplicates == 0
        span = rates.df.index.max() - rates.df.index.min()
        assert span <= pd.Timedelta("3s")


def test_simulator_by_url_is_labelled_simulated(simulator: Simulator) -> None:
    """A collector given the simulator's URL labels its data simulated (the simulator says so in its handshake)."""
    with cr.stream(PAIRS, url=simulator.url) as rates:
        rates.wait(timeout=20)
        assert rates.status.source == "simulated" and "SIMULATED" in repr(rates)


def test_the_key_does_not_follow_a_redirect_to_another_host() -> None:
    """A server that redirects to another origin gets a ConfigError-stopped collector; the other host sees no key."""
    seen: list[Headers] = []
    ready = threading.Event()
    ports: dict[str, int] = {}
    stop = asyncio.Event()

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()

        def other(connection: Any, request: Any) -> Response | None:
            seen.append(request.headers)
            return connection.respond(404, "no")

        def redirect(connection: Any, request: Any) -> Response:
            response = connection.respond(302, "moved")
            response.headers["Location"] = f"ws://localhost:{ports['other']}/"  # same machine, other origin
            return response

        async def never(_ws: Any) -> None:  # pragma: no cover - every request is answered in process_request
            await asyncio.sleep(0)

        async with serve(never, "127.0.0.1", 0, process_request=other) as b, \
                serve(never, "127.0.0.1", 0, process_request=redirect) as a:
            ports["other"] = b.sockets[0].getsockname()[1]
            ports["first"] = a.sockets[0].getsockname()[1]
            ready.set()
            await stop.wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        assert ready.wait(10)
        rates = cr.stream(PAIRS, url=f"ws://127.0.0.1:{ports['first']}/", api_key="MARKER-KEY-1234567890")
        try:
            wait_until(lambda: rates.status.state == "error", timeout=20)
            assert "refusing to follow a redirect" in (rates.status.last_error or "")
            assert "MARKER" not in (rates.status.last_error or "")
        finally:
            rates.stop()
        assert seen == []
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def test_gaps_and_status_copy_under_the_lock_while_the_loop_writes(simulator: Simulator) -> None:
    """Reading status and gaps from another thread while many pairs arrive never raises."""
    with cr.stream(None, url=simulator.url) as rates:
        rates.wait(timeout=20)
        for _ in range(300):
            s = rates.status
            assert s.rows >= 0
            assert list(rates.gaps.columns) == ["pair", "start", "end", "duration", "reason", "healed", "heal"]
        assert format_time(0).startswith("1970")


def test_an_unsubscribed_pair_is_not_reported_stale(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """After unsubscribe a pair's old rows stay in the window, but it never shows as stale."""
    with cr.stream([*PAIRS, "BTC/EUR"], url=simulator.url, stale_after=1.0) as rates:
        rates.wait(timeout=20, rows=2)
        rates.unsubscribe("BTC/EUR")
        wait_until(lambda: rates.status.stale_pairs == () and "BTC/EUR" in rates.frame.counts(), timeout=5)
        monkeypatch.setattr(rates, "_in_scope", lambda pair: True)  # the old rule: every pair in the window
        wait_until(lambda: "BTC/EUR" in rates.status.stale_pairs, timeout=20, message="the test cannot fail")


def test_an_unknown_asset_is_a_config_error_when_the_rest_side_is_on() -> None:
    """On the embedded simulator (REST on), FOO/USD is refused by name at stream() and subscribe(); nothing leaks."""
    before = len(collector_threads())
    with pytest.raises(ConfigError, match="FOO is not a CoinAPI asset"):
        cr.stream(["FOO/USD", "BTC/USD"])
    assert len(collector_threads()) == before
    with cr.stream(["BTC/USD"]) as rates:
        with pytest.raises(ConfigError, match="did you mean ETH"):
            rates.subscribe("ETHH/USD")
        assert rates.pairs == ("BTC/USD",)
        rates.subscribe("ETH/USD")
        assert rates.pairs == ("BTC/USD", "ETH/USD")
