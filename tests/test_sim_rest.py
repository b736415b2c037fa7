"""The simulator's REST API, read with plain urllib: paths, paging semantics, errors, faults, headers, the ledger.

The client side (coinrates_nb.rest) is tested in test_rest.py; here the wire itself is checked,
and the core promise: the REST bar of any period the stream covered equals the OHLC of the
ticks the simulator streamed then (its ledger).
"""

from __future__ import annotations

import gzip
import http.client
import json
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from websockets.sync.client import connect

from coinrates_nb.exceptions import ConfigError
from coinrates_nb.messages import Hello, parse_server
from coinrates_nb.rest import PERIODS, SENTINEL
from coinrates_nb.sim import Simulator
from coinrates_nb.sim.prices import TAPE_CHUNK, PriceModel, PriceTape
from coinrates_nb.sim.rest import NO_DATA_MESSAGE
from coinrates_nb.times import format_time, parse_time
from tests.helpers import SLOW, wait_until

MakeSim = Callable[..., Simulator]
NS = 1_000_000_000
MINUTE = 60 * NS


def get(sim: Simulator, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
        timeout: float = 20.0) -> tuple[int, dict[str, str], Any]:
    """GET ``path`` on the simulator; (status, headers, JSON body or raw bytes if not JSON)."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    request = urllib.request.Request(sim.rest_url + path + query, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout * SLOW) as response:
            status, head, body = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, head, body = exc.code, dict(exc.headers), exc.read()
    if head.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    try:
        return status, head, json.loads(body)
    except ValueError:
        return status, head, body


def history(sim: Simulator, pair: str, **params: Any) -> tuple[int, dict[str, str], Any]:
    base, quote = pair.split("/")
    for name in ("time_start", "time_end", "time"):
        if isinstance(params.get(name), (int, np.integer)):
            params[name] = format_time(int(params[name]))
    return get(sim, f"/v1/exchangerate/{base}/{quote}/history", params)


def stream(sim: Simulator, pairs: tuple[str, ...], updates: int, timeout: float = 20.0) -> None:
    """Connect, ask for ``pairs``, read until this connection's ledger holds ``updates`` entries, close."""
    cid = sim.total_connections + 1  # connection ids count from 1, one per accepted connection
    with connect(sim.url) as ws:
        ws.send(Hello(assets=pairs).to_json())
        deadline = time.monotonic() + timeout * SLOW
        while len(sim.ledger.get(cid, [])) < updates:
            assert time.monotonic() < deadline, f"fewer than {updates} updates within {timeout} s"
            try:
                ws.recv(timeout=0.5)
            except TimeoutError:
                continue


def hour_ago() -> int:
    return (time.time_ns() - 3600 * NS) // MINUTE * MINUTE


# --------------------------------------------------------------------------- paths and shapes


def test_rest_url_shares_the_websocket_port(simulator: Simulator) -> None:
    """rest_url is http on the WebSocket's own port, and the WebSocket still upgrades there."""
    assert simulator.rest_url == f"http://127.0.0.1:{simulator.port}"
    status, headers, body = get(simulator, "/v1/exchangerate/history/periods")
    assert status == 200 and "X-Coinrates-Simulator" in headers
    with connect(simulator.url) as ws:
        ws.send(Hello(assets=("BTC/USD",)).to_json())
        assert parse_server(ws.recv(timeout=5 * SLOW)).base == "BTC"  # type: ignore[union-attr]


def test_rest_url_needs_a_port() -> None:
    """rest_url before start() is a SimulatorError, like url."""
    from coinrates_nb.exceptions import SimulatorError

    with pytest.raises(SimulatorError):
        _ = Simulator().rest_url


def test_periods_are_the_documented_list(simulator: Simulator) -> None:
    """/v1/exchangerate/history/periods lists every documented period in the documented shape."""
    status, _, body = get(simulator, "/v1/exchangerate/history/periods")
    assert status == 200
    assert [p["period_id"] for p in body] == [p.period_id for p in PERIODS]
    assert body[0] == {"period_id": "1SEC", "length_seconds": 1, "length_months": 0, "unit_count": 1,
                       "unit_name": "second", "display_name": "1 Second"}


def test_history_shape_alignment_and_default_limit(simulator: Simulator) -> None:
    """Bars are oldest first, epoch-aligned, end = start + period, all fields set; no limit means 100."""
    start = hour_ago() + 17 * NS  # not aligned: the period holding it comes first
    status, headers, body = history(simulator, "BTC/USD", period_id="1SEC", time_start=start)
    assert status == 200 and len(body) == 100
    starts = [parse_time(b["time_period_start"]) for b in body]
    assert starts[0] == start // NS * NS and np.all(np.diff(starts) == NS)
    for bar in body:
        assert parse_time(bar["time_period_end"]) - parse_time(bar["time_period_start"]) == NS
        assert bar["rate_low"] <= min(bar["rate_open"], bar["rate_close"]) <= max(bar["rate_open"], bar["rate_close"]) <= bar["rate_high"]
        assert parse_time(bar["time_period_start"]) <= parse_time(bar["time_open"]) <= parse_time(bar["time_close"])
        assert len(bar["time_open"]) == 28 and bar["time_open"].endswith("Z")
    assert headers["X-RateLimit-Request-Cost"] == "1"


def test_history_time_end_is_exclusive_and_limit_caps(simulator: Simulator) -> None:
    """time_end excludes the period starting at it; limit caps the count (1..100000)."""
    start = hour_ago()
    _, _, body = history(simulator, "ETH/USD", period_id="1MIN", time_start=start, time_end=start + 10 * MINUTE,
                         limit=1000)
    assert len(body) == 10 and parse_time(body[-1]["time_period_start"]) == start + 9 * MINUTE
    _, headers, body = history(simulator, "ETH/USD", period_id="1MIN", time_start=start, limit=3)
    assert len(body) == 3 and headers["X-RateLimit-Request-Cost"] == "1"
    _, headers, body = history(simulator, "ETH/USD", period_id="1SEC", time_start=start, limit=250)
    assert len(body) == 250 and headers["X-RateLimit-Request-Cost"] == "3"  # ceil(250 / 100)


@pytest.mark.parametrize("params, named", [
    ({"time_start": "2026-01-01"}, "period_id"),
    ({"period_id": "1WEEK", "time_start": "2026-01-01"}, "period_id"),
    ({"period_id": "1MIN"}, "time_start"),
    ({"period_id": "1MIN", "time_start": "yesterday"}, "time_start"),
    ({"period_id": "1MIN", "time_start": "2026-01-01", "limit": "0"}, "limit"),
    ({"period_id": "1MIN", "time_start": "2026-01-01", "limit": "100001"}, "limit"),
    ({"period_id": "1MIN", "time_start": "2026-01-01", "limit": "ten"}, "limit"),
    ({"period_id": "1MIN", "time_start": "2026-01-02", "time_end": "2026-01-01"}, "time_end"),
])
def test_bad_parameters_are_400_naming_them(simulator: Simulator, params: dict[str, str], named: str) -> None:
    """A missing or invalid parameter is a 400 whose error names it, and costs nothing."""
    status, headers, body = get(simulator, "/v1/exchangerate/BTC/USD/history", params)
    assert status == 400 and f"'{named}'" in body["error"]
    assert headers["X-RateLimit-Request-Cost"] == "0" and simulator.rest.ledger[-1].credits == 0


@pytest.mark.parametrize("text", ["2026-03-04", "2026-03-04T00:00", "2026-03-04T00:00:00", "2026-03-04T00:00:00.000",
                                  "2026-03-04T00:00:00.0000000", "2026-03-04T00:00:00.0000000Z"])
def test_every_documented_time_format_is_accepted(simulator: Simulator, text: str) -> None:
    """yyyy-MM-dd, ...mm, ...ss, ...ss.fff and ...ss.fffffff all mean the same UTC instant."""
    status, _, body = history(simulator, "BTC/USD", period_id="1HRS", time_start=text, limit=2)
    assert status == 200 and body[0]["time_period_start"] == "2026-03-04T00:00:00.0000000Z"


def test_no_data_is_550(simulator: Simulator) -> None:
    """An unknown asset, a pair of one asset, or a range in the future is 550 with CoinAPI's text."""
    future = time.time_ns() + 3600 * NS
    for pair, start in (("FOO/USD", hour_ago()), ("BTC/BTC", hour_ago()), ("BTC/USD", future)):
        status, _, body = history(simulator, pair, period_id="1MIN", time_start=start)
        assert status == 550 and body == {"error": NO_DATA_MESSAGE}
    assert get(simulator, "/v1/exchangerate/FOO/USD")[0] == 550
    assert get(simulator, "/v1/assets/FOO")[0] == 550
    assert simulator.rest.ledger[-1].credits == 1  # UNCONFIRMED choice: a 550 costs one credit


def test_unknown_path_is_404(simulator: Simulator) -> None:
    """A path the API does not have is a 404 with an error body."""
    status, _, body = get(simulator, "/v2/nothing")
    assert status == 404 and "error" in body


def test_current_rates_and_a_past_rate(simulator: Simulator) -> None:
    """/{base}/{quote} gives one rate; /{base} every quote, filtered and inverted; time= a past rate."""
    status, _, one = get(simulator, "/v1/exchangerate/BTC/EUR")
    assert status == 200 and one["asset_id_base"] == "BTC" and one["asset_id_quote"] == "EUR" and one["rate"] > 1000
    _, _, usd = get(simulator, "/v1/exchangerate/BTC/USD")
    _, _, eur = get(simulator, "/v1/exchangerate/EUR/USD")
    assert one["rate"] == pytest.approx(usd["rate"] / eur["rate"], rel=1e-3)
    _, headers, every = get(simulator, "/v1/exchangerate/BTC", {"filter_asset_id": "ETH;EUR,USD"})
    assert {r["asset_id_quote"] for r in every["rates"]} == {"ETH", "EUR", "USD"}
    assert headers["X-RateLimit-Request-Cost"] == "1"
    _, _, inverted = get(simulator, "/v1/exchangerate/BTC", {"filter_asset_id": "USD", "invert": "true"})
    _, _, plain = get(simulator, "/v1/exchangerate/BTC", {"filter_asset_id": "USD"})
    assert inverted["rates"][0]["rate"] == pytest.approx(1 / plain["rates"][0]["rate"], rel=1e-3)
    day_ago = format_time(time.time_ns() - 86_400 * NS)
    _, _, past = get(simulator, "/v1/exchangerate/BTC/USD", {"time": day_ago})
    assert abs(parse_time(past["time"]) - parse_time(day_ago)) <= NS // 10
    _, _, bar = history(simulator, "BTC/USD", period_id="1SEC", time_start=parse_time(past["time"]) // NS * NS, limit=1)
    assert bar[0]["rate_low"] <= past["rate"] <= bar[0]["rate_high"]  # the same path


def test_assets(simulator: Simulator) -> None:
    """/v1/assets lists the model's assets (and USD); filter_asset_id and /v1/assets/{id} pick some."""
    _, _, body = get(simulator, "/v1/assets")
    ids = [a["asset_id"] for a in body]
    assert set(ids) == set(simulator.model.assets)
    btc = next(a for a in body if a["asset_id"] == "BTC")
    assert btc == {"asset_id": "BTC", "name": "Bitcoin", "type_is_crypto": 1}
    assert next(a for a in body if a["asset_id"] == "EUR")["type_is_crypto"] == 0
    _, _, some = get(simulator, "/v1/assets", {"filter_asset_id": "ETH,EUR"})
    assert sorted(a["asset_id"] for a in some) == ["ETH", "EUR"]
    assert get(simulator, "/v1/assets/btc")[2][0]["asset_id"] == "BTC"


# --------------------------------------------------------------------------- the price path


def test_history_is_deterministic_and_page_independent(simulator: Simulator) -> None:
    """The same query gives the same bars; pages of any size concatenate to the one big answer."""
    start = hour_ago()
    whole = history(simulator, "SOL/USD", period_id="1SEC", time_start=start, limit=600)[2]
    again = history(simulator, "SOL/USD", period_id="1SEC", time_start=start, limit=600)[2]
    assert whole == again
    paged: list[Any] = []
    cursor = start
    while len(paged) < 600:
        page = history(simulator, "SOL/USD", period_id="1SEC", time_start=cursor, limit=70)[2]
        paged.extend(page[1:] if paged and page[0] == paged[-1] else page)
        cursor = parse_time(page[-1]["time_period_start"])  # the documented way: inclusive time_start
    assert paged[:600] == whole


def test_coarse_bars_agree_with_the_fine_bars_inside_them(simulator: Simulator) -> None:
    """A 1MIN bar opens where its first 1SEC bar opens, closes where its last one opens, within their range."""
    start = hour_ago() - 2 * 86_400 * NS
    minute = history(simulator, "ETH/EUR", period_id="1MIN", time_start=start, limit=3)[2]
    seconds = history(simulator, "ETH/EUR", period_id="1SEC", time_start=start, limit=180)[2]
    for k, bar in enumerate(minute):
        inside = seconds[60 * k:60 * (k + 1)]
        assert bar["rate_open"] == inside[0]["rate_open"]
        assert bar["rate_close"] == inside[-1]["rate_open"]  # sampled each second: the last second's first sample
        assert min(b["rate_low"] for b in inside) <= bar["rate_low"] <= bar["rate_high"] <= max(b["rate_high"] for b in inside)


def test_same_seed_same_moves_at_any_past_time(make_simulator: MakeSim) -> None:
    """Two simulators with one seed, started apart, draw the same returns for the same past hour."""
    a = make_simulator(seed=7)
    get(a, "/v1/exchangerate/BTC/USD")  # a's path is anchored now
    time.sleep(0.3)
    b = make_simulator(seed=7)
    c = make_simulator(seed=8)
    start = hour_ago() - 86_400 * NS
    closes = {}
    for name, sim in (("a", a), ("b", b), ("c", c)):
        body = history(sim, "BTC/USD", period_id="1MIN", time_start=start, limit=60)[2]
        closes[name] = np.diff(np.log([bar["rate_close"] for bar in body]))
    np.testing.assert_allclose(closes["a"], closes["b"], rtol=1e-6, atol=1e-12)
    assert not np.allclose(closes["a"], closes["c"])


def test_past_ends_at_the_starting_prices(make_simulator: MakeSim) -> None:
    """The history before the model's first instant ends at its starting prices: the stream continues it."""
    sim = make_simulator(seed=2)
    levels = sim.model.prices()
    now = get(sim, "/v1/exchangerate/BTC/USD")[2]
    assert now["rate"] == levels["BTC"]
    last = history(sim, "BTC/USD", period_id="1SEC", time_start=parse_time(now["time"]) - 3 * NS, limit=3)[2]
    assert abs(last[-1]["rate_close"] / levels["BTC"] - 1) < 0.01


def test_bars_equal_the_ohlc_of_the_streamed_ticks(make_simulator: MakeSim) -> None:
    """For every second a client's stream covered, the REST 1SEC bar is the OHLC of the ledger's ticks."""
    sim = make_simulator(seed=5, rate_hz=25, batch=2)
    pairs = ("BTC/USD", "ETH/USD", "EUR/USD", "USDT/USD")
    stream(sim, pairs, 4 * 25 * 4)
    ledger = [e for entries in sim.ledger.values() for e in entries]
    checked = 0
    for pair in pairs:
        times = np.array([t for p, t, _ in ledger if p == pair])
        rates = np.array([r for p, _, r in ledger if p == pair])
        lo, hi = (times[0] // NS + 1) * NS, times[-1] // NS * NS
        body = history(sim, pair, period_id="1SEC", time_start=lo, time_end=hi, limit=1000)[2]
        assert len(body) == (hi - lo) // NS >= 2
        for bar in body:
            s = parse_time(bar["time_period_start"])
            inside = rates[(times >= s) & (times < s + NS)]
            assert (bar["rate_open"], bar["rate_high"], bar["rate_low"], bar["rate_close"]) == \
                (inside[0], inside.max(), inside.min(), inside[-1]), pair
            assert parse_time(bar["time_open"]) == times[(times >= s)][0]
            checked += 1
    assert checked >= 8


def test_a_hole_in_the_stream_is_bridged_and_the_stream_continues(make_simulator: MakeSim) -> None:
    """Seconds when nobody was connected get bridged bars between the prices before and after."""
    sim = make_simulator(seed=4, rate_hz=20)
    stream(sim, ("BTC/USD",), 20)
    wait_until(lambda: sim.connections == 0)
    time.sleep(2.5)  # nobody connected: the ticker sleeps, so the tape has a hole
    stream(sim, ("BTC/USD",), 20)
    before, after = sim.ledger[1][-1], sim.ledger[2][0]
    lo, hi = before[1] // NS * NS, (after[1] // NS + 1) * NS
    body = history(sim, "BTC/USD", period_id="1SEC", time_start=lo, time_end=hi, limit=100)[2]
    assert len(body) >= 3 and all(bar["rate_open"] is not None for bar in body)
    inner = [bar for bar in body if parse_time(bar["time_period_start"]) > before[1]
             and parse_time(bar["time_period_start"]) + NS <= after[1]]
    assert inner, "the gap should hold whole seconds"
    for bar in inner:
        assert min(before[2], after[2]) * 0.97 < bar["rate_open"] < max(before[2], after[2]) * 1.03
    edges = [(before, body[0]), (after, body[-1])]  # the seconds holding the last tick before, the first after
    for (_, t, rate), bar in edges:
        assert parse_time(bar["time_period_start"]) <= t < parse_time(bar["time_period_end"])
        assert bar["rate_low"] <= rate <= bar["rate_high"]


def test_sparse_ticks_leave_empty_periods_with_nulls(make_simulator: MakeSim) -> None:
    """With an update every 2 s, 1SEC periods without one have null times and rates (not bridged)."""
    sim = make_simulator(seed=4, rate_hz=0.5)
    stream(sim, ("BTC/USD",), 2)
    first, last = sim.ledger[1][0][1], sim.ledger[1][-1][1]
    body = history(sim, "BTC/USD", period_id="1SEC", time_start=first, time_end=last, limit=100)[2]
    empty = [bar for bar in body if bar["rate_open"] is None]
    assert empty and all(bar["time_open"] is None and bar["rate_close"] is None and bar["time_close"] is None
                         for bar in empty)
    assert all(bar["time_period_end"] is not None for bar in body)


def test_rest_keeps_the_stream_flowing(make_simulator: MakeSim) -> None:
    """A big history page is built off the loop: the WebSocket keeps sending meanwhile."""
    sim = make_simulator(seed=1, rate_hz=50)
    arrivals: list[float] = []
    done = threading.Event()
    with connect(sim.url) as ws:
        ws.send(Hello(assets=("BTC/USD",)).to_json())
        ws.recv(timeout=5 * SLOW)

        def read() -> None:
            while not done.is_set():
                try:
                    ws.recv(timeout=0.2)
                    arrivals.append(time.monotonic())
                except TimeoutError:
                    continue

        reader = threading.Thread(target=read)
        reader.start()
        try:
            began = time.monotonic()
            start = time.time_ns() - 3 * 86_400 * NS
            status, _, body = history(sim, "ETH/USD", period_id="1SEC", time_start=start, limit=100_000)
            ended = time.monotonic()
        finally:
            done.set()
            reader.join(5 * SLOW)
    assert status == 200 and len(body) == 100_000
    during = [t for t in arrivals if began < t < ended]
    assert len(during) >= 0.3 * 50 * (ended - began), (len(during), ended - began)


# --------------------------------------------------------------------------- headers, cost, ledger


def test_rate_limit_headers_and_the_ledger(simulator: Simulator) -> None:
    """Every answer carries X-RateLimit-* (cost ceil(items/100)); the ledger records what was charged."""
    start = hour_ago()
    _, h1, _ = history(simulator, "BTC/USD", period_id="1SEC", time_start=start, limit=1001)
    _, h2, _ = get(simulator, "/v1/exchangerate/BTC/USD")
    assert h1["X-RateLimit-Request-Cost"] == "11" and h2["X-RateLimit-Request-Cost"] == "1"
    assert int(h2["X-RateLimit-Used"]) == 12
    assert int(h2["X-RateLimit-Remaining"]) == int(h2["X-RateLimit-Limit"]) - 12
    for name in ("X-RateLimit-Reset", "X-RateLimit-Quota-Allocated", "X-RateLimit-Quota-Remaining",
                 "X-ConcurrencyLimit-Limit", "X-ConcurrencyLimit-Remaining"):
        assert name in h2
    assert parse_time(h2["X-RateLimit-Reset"]) > time.time_ns() + 86_000 * NS  # the oldest charge leaves in 24 h
    first, second = simulator.rest.ledger
    assert (first.path, first.status, first.items, first.credits) == ("/v1/exchangerate/BTC/USD/history", 200, 1001, 11)
    assert first.params["period_id"] == "1SEC" and first.rates == 1001
    assert (second.items, second.credits, second.rates) == (1, 1, 1)
    assert (simulator.rest.requests, simulator.rest.credits, simulator.rest.rates) == (2, 12, 1002)


def test_gzip_when_asked(simulator: Simulator) -> None:
    """Accept-Encoding: gzip gets a gzip body (smaller, same JSON); without it, plain JSON."""
    params = {"period_id": "1SEC", "time_start": format_time(hour_ago()), "limit": "500"}
    status, headers, zipped = get(simulator, "/v1/exchangerate/BTC/USD/history", params, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    status, headers, plain = get(simulator, "/v1/exchangerate/BTC/USD/history", params)
    assert "Content-Encoding" not in headers and plain == zipped
    first, second = simulator.rest.ledger
    assert first.gzip and not second.gzip and first.bytes < second.bytes / 3
    assert first.accept_encoding == "gzip"


def test_quota_gives_429_until_the_window_frees(simulator: Simulator) -> None:
    """Past set_quota(n) credits in 24 h, requests get 429 with Remaining 0 and a Reset time."""
    simulator.rest.set_quota(2)
    assert get(simulator, "/v1/exchangerate/BTC/USD")[0] == 200
    assert get(simulator, "/v1/exchangerate/ETH/USD")[0] == 200
    status, headers, body = get(simulator, "/v1/exchangerate/ETH/USD")
    assert status == 429 and headers["X-RateLimit-Remaining"] == "0" and "quota" in body["error"]
    assert parse_time(headers["X-RateLimit-Reset"]) > time.time_ns()
    assert simulator.rest.ledger[-1].fault == "quota" and simulator.rest.ledger[-1].credits == 0
    simulator.rest.set_quota(None)
    assert get(simulator, "/v1/exchangerate/ETH/USD")[0] == 200


def test_key_required_when_the_simulator_has_one(make_simulator: MakeSim) -> None:
    """With a key, a request without it or with a wrong one is 401 "Invalid API key"; every documented form works."""
    sim = make_simulator(api_key="right-key")
    path = "/v1/exchangerate/BTC/USD"
    for headers in ({}, {"X-CoinAPI-Key": "wrong"}):
        status, _, body = get(sim, path, headers=headers)
        assert status == 401 and body == {"error": "Invalid API key"}
    assert get(sim, path, headers={"X-CoinAPI-Key": "right-key"})[0] == 200
    assert get(sim, path, headers={"Authorization": "right-key"})[0] == 200
    assert get(sim, path, {"apikey": "right-key"})[0] == 200
    assert get(sim, "/APIKEY-right-key" + path)[0] == 200
    forms = [r.key_in for r in sim.rest.ledger]
    assert forms == [(), ("x-coinapi-key",), ("x-coinapi-key",), ("authorization",), ("query",), ("path",)]
    assert all("apikey" not in r.params for r in sim.rest.ledger)
    assert [r.fault for r in sim.rest.ledger[:2]] == ["auth", "auth"]


def test_http401_mode_still_refuses_bad_upgrades_and_serves_rest(make_simulator: MakeSim) -> None:
    """auth_failure="http401" keeps refusing bad upgrades; plain GETs with the key get the REST API."""
    from websockets.exceptions import InvalidStatus

    sim = make_simulator(api_key="right-key", auth_failure="http401")
    with pytest.raises(InvalidStatus):
        connect(sim.url, additional_headers={"X-CoinAPI-Key": "wrong"}).close()
    assert get(sim, "/v1/assets", headers={"X-CoinAPI-Key": "right-key"})[0] == 200
    with connect(sim.url, additional_headers={"X-CoinAPI-Key": "right-key"}):
        pass


# --------------------------------------------------------------------------- fault scenarios


def test_throttle_sends_429_with_reset(simulator: Simulator) -> None:
    """throttle(n, reset_after) answers the next n requests 429 with X-RateLimit-Reset = now + reset_after."""
    simulator.rest.throttle(2, reset_after=30)
    for _ in range(2):
        status, headers, body = get(simulator, "/v1/exchangerate/BTC/USD")
        assert status == 429 and body == {"error": "Too many requests"}
        wait = (parse_time(headers["X-RateLimit-Reset"]) - time.time_ns()) / NS
        assert 25 < wait <= 30 and headers["X-RateLimit-Remaining"] == "0"
    assert get(simulator, "/v1/exchangerate/BTC/USD")[0] == 200
    assert [r.fault for r in simulator.rest.ledger] == ["throttle", "throttle", None]


def test_fail_sends_any_status(simulator: Simulator) -> None:
    """fail(status) answers with that status and an error body; 401 says "Invalid API key"."""
    simulator.rest.fail(503, message="try later")
    simulator.rest.fail(401)
    assert get(simulator, "/v1/assets")[0:3:2] == (503, {"error": "try later"})
    assert get(simulator, "/v1/assets")[0:3:2] == (401, {"error": "Invalid API key"})
    assert get(simulator, "/v1/assets")[0] == 200
    with pytest.raises(ConfigError):
        simulator.rest.fail(200)


def test_missing_rate_limit_headers(simulator: Simulator) -> None:
    """rate_limit_headers(False) leaves every X-RateLimit-* header out; the ledger still charges."""
    simulator.rest.rate_limit_headers(False)
    _, headers, _ = get(simulator, "/v1/exchangerate/BTC/USD")
    assert not [h for h in headers if h.lower().startswith(("x-ratelimit", "x-concurrencylimit"))]
    assert simulator.rest.ledger[-1].credits == 1
    simulator.rest.rate_limit_headers(True)
    assert "X-RateLimit-Used" in get(simulator, "/v1/exchangerate/BTC/USD")[1]


def test_slow_responses(simulator: Simulator) -> None:
    """slow(s) delays every response by s seconds until slow(0)."""
    simulator.rest.slow(0.4)
    began = time.monotonic()
    assert get(simulator, "/v1/assets")[0] == 200
    assert time.monotonic() - began >= 0.4
    simulator.rest.slow(0)
    began = time.monotonic()
    get(simulator, "/v1/assets")
    assert time.monotonic() - began < 0.4 * SLOW


def test_drop_cuts_the_body(simulator: Simulator) -> None:
    """drop() sends half the promised body, then closes: the reader sees a short read; nothing is charged."""
    simulator.rest.drop()
    request = urllib.request.Request(simulator.rest_url + "/v1/assets")
    with urllib.request.urlopen(request, timeout=10 * SLOW) as response, pytest.raises(http.client.IncompleteRead):
        response.read()
    record = simulator.rest.ledger[-1]
    assert record.fault == "drop" and record.credits == 0 and record.bytes > 0
    assert get(simulator, "/v1/assets")[0] == 200


def test_inject_serves_a_raw_body(simulator: Simulator) -> None:
    """inject(body) answers the next request with exactly that body (here a sentinel and nulls)."""
    raw = json.dumps([{"time_period_start": "2026-01-01T00:00:00.0000000Z", "time_period_end": SENTINEL,
                       "time_open": None, "time_close": None, "rate_open": None, "rate_high": None,
                       "rate_low": None, "rate_close": None}])
    simulator.rest.inject(raw, headers={"X-Extra": "1"})
    status, headers, body = get(simulator, "/v1/exchangerate/BTC/USD/history")
    assert status == 200 and body == json.loads(raw) and headers["X-Extra"] == "1"
    assert simulator.rest.ledger[-1].fault == "inject" and simulator.rest.ledger[-1].credits == 1


def test_clear_forgets_faults(simulator: Simulator) -> None:
    """clear() drops queued faults and modes."""
    simulator.rest.throttle(3)
    simulator.rest.slow(2)
    simulator.rest.clear()
    began = time.monotonic()
    assert get(simulator, "/v1/assets")[0] == 200 and time.monotonic() - began < 2
    assert "0 fault(s)" in repr(simulator.rest)


def test_concurrent_requests_are_all_recorded(simulator: Simulator) -> None:
    """Requests from several threads at once are all answered and all in the ledger."""
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(get(simulator, "/v1/exchangerate/BTC/USD")[0]))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20 * SLOW)
    assert results == [200] * 8 and simulator.rest.requests == 8


# --------------------------------------------------------------------------- the tape (prices.py)


def test_tape_records_every_instant_and_keeps_waypoints() -> None:
    """The tape holds each step's prices; past its size whole blocks go, each leaving its last instant."""
    model = PriceModel(seed=1)
    tape = model.keep_tape(size=TAPE_CHUNK)
    assert model.keep_tape() is tape and len(tape) == 1
    for _ in range(3 * TAPE_CHUNK):
        model.step(0.1)
    assert len(tape) <= 2 * TAPE_CHUNK and tape.last_ns == model.elapsed_ns == 3 * TAPE_CHUNK * 100_000_000
    times, prices = tape.window(0, model.elapsed_ns + 1)
    assert times[0] == 0 and np.all(np.diff(times) > 0)  # the first instant is never dropped
    assert prices[-1, tape.column("BTC")] == model.usd("BTC")
    assert tape.column("USD") == -1
    t, _ = tape.window(50 * 100_000_000, 52 * 100_000_000)  # a dropped region: waypoints around it
    assert len(t) == 2 and t[0] < 50 * 100_000_000 and t[1] >= 52 * 100_000_000
    with pytest.raises(ConfigError):
        PriceTape(("BTC",), 0)


def test_elapsed_ns_is_exact() -> None:
    """elapsed_ns adds each step rounded to the nanosecond, so tape times are exact integers."""
    model = PriceModel(seed=1)
    for _ in range(1000):
        model.step(0.0000001)
    assert model.elapsed_ns == 100_000 and math.isclose(model.elapsed, 1e-4)
