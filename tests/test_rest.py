"""The REST client against the simulator: every path, error and fault, checked against the simulator's REST ledger."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from coinrates_nb.exceptions import (
    AuthenticationError,
    CollectorError,
    ConfigError,
    MessageError,
    ServerError,
    TransportError,
)
from coinrates_nb.rest import (
    COINAPI_HISTORY_URL,
    NAT,
    PERIODS,
    SENTINEL,
    Bars,
    QuotaExceededError,
    RestClient,
    RestUsage,
    SyncRestClient,
    credits_for,
    normalize_period,
    parse_bars,
    period_ns,
    rate_limit_of,
    rest_url_for,
)
from coinrates_nb.sim import Simulator
from coinrates_nb.times import format_time, parse_time
from tests.helpers import SLOW

MakeSim = Callable[..., Simulator]
NS = 1_000_000_000
MINUTE = 60 * NS
MARKER = "MARKER-KEY-3f9a1c"
FAST = {"backoff_initial": 0.02, "backoff_cap": 0.05, "timeout": 5.0 * SLOW}


@pytest.fixture
def client(simulator: Simulator) -> Iterator[SyncRestClient]:
    """A sync client on the simulator's REST URL with fast retries, stopped afterwards."""
    with SyncRestClient(simulator.rest_url, **FAST) as c:
        yield c


def hour_ago() -> int:
    return (time.time_ns() - 3600 * NS) // MINUTE * MINUTE


def books_agree(client: SyncRestClient, sim: Simulator) -> None:
    """The client's counters equal the simulator's ledger: requests, credits, rates."""
    usage = client.usage
    assert (usage.requests, usage.credits, usage.rates) == (sim.rest.requests, sim.rest.credits, sim.rest.rates)


# --------------------------------------------------------------------------- pure pieces


def test_periods_and_credits() -> None:
    """Period ids and spans normalise to the documented ids; credits are ceil(items/100), at least 1."""
    assert normalize_period("1min") == normalize_period("1MIN") == normalize_period(60) == "1MIN"
    assert normalize_period("1h") == "1HRS" and normalize_period("1D") == "1DAY" and normalize_period("1s") == "1SEC"
    assert period_ns("10DAY") == 10 * 86_400 * NS and len(PERIODS) == 33
    with pytest.raises(ConfigError, match="did you mean '1MIN'"):
        normalize_period("1MINS")
    with pytest.raises(ConfigError):
        normalize_period("7min")  # a span, but not a CoinAPI period
    assert [credits_for(n) for n in (0, 1, 100, 101, 100_000)] == [1, 1, 1, 2, 1000]


def test_rest_url_for_websocket_urls() -> None:
    """CoinAPI's WebSocket maps to its historical host; other ws(s) URLs keep host and port over http(s)."""
    assert rest_url_for("wss://api-realtime.exrates.coinapi.io/") == COINAPI_HISTORY_URL
    assert rest_url_for("ws://127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert rest_url_for("wss://proxy.example:9443/ws?apikey=k") == "https://proxy.example:9443"
    assert rest_url_for("https://proxy.example/prefix/") == "https://proxy.example/prefix"
    with pytest.raises(ConfigError):
        rest_url_for("ftp://x")


def test_sentinel_and_null_fields_parse() -> None:
    """The 0001-01-01 sentinel and null time/rate fields become NaT and NaN; other times keep 7 digits."""
    body = json.dumps([
        {"time_period_start": "2026-01-01T00:00:00.0000000Z", "time_period_end": SENTINEL,
         "time_open": None, "time_close": None, "rate_open": None, "rate_high": None, "rate_low": None,
         "rate_close": None},
        {"time_period_start": "2026-01-01T00:00:01.0000000Z", "time_period_end": "2026-01-01T00:00:02.0000000Z",
         "time_open": "2026-01-01T00:00:01.1234567Z", "time_close": "2026-01-01T00:00:01.9", "rate_open": 1.5,
         "rate_high": 2.0, "rate_low": 1.0, "rate_close": 1.25},
    ]).encode()
    bars = parse_bars(body, "BTC", "USD", "1SEC")
    assert bars.end_ns[0] == NAT and bars.time_open_ns[0] == NAT and np.isnan(bars.open[0]) and np.isnan(bars.close[0])
    assert bars.time_open_ns[1] == parse_time("2026-01-01T00:00:01.1234567Z")
    assert bars.time_close_ns[1] == parse_time("2026-01-01T00:00:01.900Z")  # another shape: the general parser
    assert list(bars.open[1:]) == [1.5] and bars.start_ns[1] - bars.start_ns[0] == NS
    frame = bars.frame()
    assert str(frame.index.tz) == "UTC" and list(frame.columns) == ["open", "high", "low", "close"]


@pytest.mark.parametrize("body", [b"{not json", b'{"error": "x"}', b'[{"rate_open": 1}]',
                                  b'[{"time_period_start": "yesterday"}]'])
def test_bad_bodies_are_message_errors(body: bytes) -> None:
    """A body that is not the documented JSON is a MessageError that shows it."""
    with pytest.raises(MessageError):
        parse_bars(body, "BTC", "USD", "1SEC")


def test_rate_limit_headers_parse_in_every_reading() -> None:
    """X-RateLimit-Reset may be an ISO time, epoch seconds or seconds to wait; absent headers give None."""
    now = 1_800_000_000 * NS
    iso = rate_limit_of({"X-RateLimit-Reset": "2027-01-15T10:00:00.0000000Z", "X-RateLimit-Remaining": "5"}, now)
    assert iso is not None and iso.reset_ns == parse_time("2027-01-15T10:00:00Z") and iso.remaining == 5
    epoch = rate_limit_of({"X-RateLimit-Reset": "1800000100"}, now)
    assert epoch is not None and epoch.reset_ns == 1_800_000_100 * NS
    wait = rate_limit_of({"X-RateLimit-Reset": "2.5"}, now)
    assert wait is not None and wait.reset_ns == now + 2_500_000_000
    assert rate_limit_of({"Content-Type": "application/json"}, now) is None


# --------------------------------------------------------------------------- the key


def test_key_only_over_https_or_loopback() -> None:
    """A key never goes over plain http to a remote host; https, loopback and keyless http are fine."""
    with pytest.raises(ConfigError, match="unencrypted http"):
        RestClient("http://example.com", MARKER)
    with pytest.raises(ConfigError, match="unencrypted http"):
        RestClient("http://example.com?apikey=" + MARKER)
    RestClient("https://example.com", MARKER)
    RestClient("http://127.0.0.1:9", MARKER)
    RestClient("http://localhost:9", MARKER)
    RestClient("http://example.com")
    with pytest.raises(ConfigError, match="rest_url_for"):
        RestClient("wss://example.com/")
    with pytest.raises(ConfigError, match="two different"):
        RestClient("https://example.com/?apikey=a", "b")


def test_key_travels_only_in_the_header_and_never_shows(make_simulator: MakeSim,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The key goes in X-CoinAPI-Key only (not query, path, Authorization) and never in reprs, logs or errors."""
    sim = make_simulator(api_key=MARKER)
    caplog.set_level(logging.DEBUG)
    with SyncRestClient(sim.rest_url + "/?apikey=" + MARKER, **FAST) as c:
        c.current("BTC", "USD")
        c.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + 5 * MINUTE)
        shown = repr(c) + repr(c.client) + str(c.usage)
    record = sim.rest.ledger[-1]
    assert record.key_in == ("x-coinapi-key",) and all(r.key_in == ("x-coinapi-key",) for r in sim.rest.ledger)
    assert "apikey" not in record.params and record.accept_encoding == "gzip"
    with SyncRestClient(sim.rest_url, "wrong-" + MARKER, **FAST) as bad:
        with pytest.raises(AuthenticationError) as caught:
            bad.current("BTC", "USD")
    assert MARKER not in shown + caplog.text + str(caught.value) + repr(caught.value)
    assert "[secure]" in shown


# --------------------------------------------------------------------------- paths


def test_history_pages_without_duplicate_or_hole(simulator: Simulator, client: SyncRestClient) -> None:
    """Paging (limit 100) gives the same bars as one page: every period once, none missing, in order."""
    start = hour_ago()
    end = start + 1234 * NS
    pages: list[int] = []
    paged = client.history("BTC/USD".split("/")[0], "USD", "1SEC", start, end, limit=100, on_page=pages.append)
    whole = client.history("BTC", "USD", "1SEC", start, end)
    assert len(paged) == 1234 and np.all(np.diff(paged.start_ns) == NS) and paged.start_ns[0] == start
    for name in ("start_ns", "end_ns", "time_open_ns", "time_close_ns", "open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(paged, name), getattr(whole, name))
    assert pages == [100] * 12 + [34]
    sent = [r.params["time_start"] for r in simulator.rest.ledger[:13]]
    assert [parse_time(t) for t in sent] == [start + k * 100 * NS for k in range(13)]  # time_start moves on
    books_agree(client, simulator)
    assert client.usage.credits == 13 + 13  # 13 pages of <= 100, then one page of 1,234 bars


def test_history_drops_a_period_repeated_at_a_seam(simulator: Simulator, client: SyncRestClient) -> None:
    """A server that repeats the last period (inclusive time_start) does not make a duplicate."""
    def bars(seconds: range) -> str:
        return json.dumps([{"time_period_start": format_time(t0 + s * NS), "time_period_end": format_time(t0 + (s + 1) * NS),
                            "time_open": format_time(t0 + s * NS), "time_close": format_time(t0 + s * NS),
                            "rate_open": float(s), "rate_high": float(s), "rate_low": float(s), "rate_close": float(s)}
                           for s in seconds])

    t0 = hour_ago()
    simulator.rest.inject(bars(range(0, 3)))
    simulator.rest.inject(bars(range(2, 5)))  # repeats second 2
    simulator.rest.inject(bars(range(4, 6)))  # repeats second 4; a short page: the last
    got = client.history("BTC", "USD", "1SEC", t0, t0 + 60 * NS, limit=3)
    assert list(got.open) == [0, 1, 2, 3, 4, 5] and np.all(np.diff(got.start_ns) == NS)


def test_history_550_is_empty_and_unaligned_start(client: SyncRestClient, simulator: Simulator) -> None:
    """An asset without data gives empty Bars (not an error); an unaligned start includes its period."""
    empty = client.history("FOO", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)
    assert len(empty) == 0 and isinstance(empty, Bars) and simulator.rest.ledger[-1].status == 550
    got = client.history("ETH", "USD", "1MIN", hour_ago() + 30 * NS, hour_ago() + 3 * MINUTE)
    assert got.start_ns[0] == hour_ago() and len(got) == 3
    books_agree(client, simulator)


def test_history_argument_checks(client: SyncRestClient) -> None:
    """Bad periods, limits, ranges and assets are ConfigErrors before anything is sent."""
    start = hour_ago()
    for call in (lambda: client.history("BTC", "USD", "1WEEK", start, start + NS),
                 lambda: client.history("BTC", "USD", "1SEC", start, start + NS, limit=0),
                 lambda: client.history("BTC", "USD", "1SEC", start, start + NS, limit=100_001),
                 lambda: client.history("BTC", "USD", "1SEC", start, start),
                 lambda: client.history("BTC", "USD", "1SEC", "2026-01-01", start),  # type: ignore[arg-type]
                 lambda: client.history("BTC/USD", "USD", "1SEC", start, start + NS)):
        with pytest.raises(ConfigError):
            call()
    assert client.usage.requests == 0


def test_current_rate_and_rates_of_a_base(client: SyncRestClient, simulator: Simulator) -> None:
    """current() is one rate; current_all() every quote, filtered (with ';'), inverted; time= a past one."""
    rate = client.current("BTC", "USD")
    assert rate is not None and rate.base == "BTC" and rate.quote == "USD" and rate.rate > 1000
    every = client.current_all("BTC")
    assert set(every.quotes) == set(simulator.model.assets) - {"BTC"}
    some = client.current_all("BTC", ["EUR", "ETH"])
    assert set(some.quotes) == {"EUR", "ETH"} and simulator.rest.ledger[-1].params["filter_asset_id"] == "EUR;ETH"
    inverted = client.current_all("BTC", "USD", invert=True)
    assert inverted.rate[0] == pytest.approx(1 / client.current("BTC", "USD").rate, rel=1e-3)  # type: ignore[union-attr]
    past = client.current("BTC", "USD", time_ns=time.time_ns() - 86_400 * NS)
    assert past is not None and past.time_ns < time.time_ns() - 86_000 * NS
    assert client.current("FOO", "USD") is None and len(client.current_all("FOO")) == 0  # 550
    frame = some.frame()
    assert list(frame.columns) == ["time", "rate"] and set(frame.index) == {"EUR", "ETH"}
    books_agree(client, simulator)


def test_assets_are_cached_and_unknown_ones_refused(client: SyncRestClient, simulator: Simulator) -> None:
    """assets() asks once; require_assets() passes known pairs and names the unknown asset."""
    assert "BTC" in client.assets() and "USD" in client.assets()
    assert simulator.rest.requests == 1
    client.require_assets(["BTC/USD", "EUR"])
    with pytest.raises(ConfigError, match="FOO is not a CoinAPI asset"):
        client.require_assets(["BTC/USD", "FOO/USD"])
    with pytest.raises(ConfigError, match=r"BTCC \(did you mean BTC\?\), XYZ are not CoinAPI assets"):
        client.require_assets(["BTCC/USD", "XYZ"])
    assert simulator.rest.requests == 1
    client.assets(refresh=True)
    assert simulator.rest.requests == 2


def test_periods_endpoint(client: SyncRestClient) -> None:
    """periods() returns the server's list, cached."""
    assert client.periods() == PERIODS
    assert client.periods() is client.periods()


def test_simulated_server_is_recognised(client: SyncRestClient) -> None:
    """A response from the simulator (X-Coinrates-Simulator) marks the client simulated."""
    assert not client.simulated
    client.periods()
    assert client.simulated


# --------------------------------------------------------------------------- errors and faults


def test_401_and_403_are_authentication_errors_never_retried(client: SyncRestClient, simulator: Simulator) -> None:
    """401/403 raise AuthenticationError with the server's text at once (one request each)."""
    simulator.rest.fail(401)
    simulator.rest.fail(403, message="The key lacks the privilege")
    with pytest.raises(AuthenticationError, match="Invalid API key"):
        client.assets()
    with pytest.raises(AuthenticationError, match="privilege"):
        client.assets()
    assert simulator.rest.requests == 2 and client.usage.retries == 0 and client.usage.failures == 2


def test_wrong_key_on_a_keyed_simulator(make_simulator: MakeSim) -> None:
    """A simulator with a key answers a keyless client 401: an AuthenticationError."""
    sim = make_simulator(api_key="right")
    with SyncRestClient(sim.rest_url, **FAST) as c, pytest.raises(AuthenticationError):
        c.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)
    with SyncRestClient(sim.rest_url, "right", **FAST) as c:
        assert len(c.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)) == 1


def test_400_is_a_config_error_naming_the_parameter(client: SyncRestClient, simulator: Simulator) -> None:
    """A 400 says what the server refused and which parameters were sent."""
    simulator.rest.fail(400, message="Invalid value of the 'limit' parameter.")
    with pytest.raises(ConfigError, match=r"'limit' parameter.*sent period_id=1MIN.*limit=100000"):
        client.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)
    assert simulator.rest.requests == 1


def test_429_waits_for_the_reset_then_retries(client: SyncRestClient, simulator: Simulator) -> None:
    """A 429 with X-RateLimit-Reset is waited out, retried once, and counted."""
    simulator.rest.throttle(1, reset_after=0.4)
    began = time.monotonic()
    assert client.current("BTC", "USD") is not None
    assert time.monotonic() - began >= 0.35
    usage = client.usage
    assert (usage.throttled, usage.retries, usage.requests, usage.failures) == (1, 1, 2, 0)
    assert [r.status for r in simulator.rest.ledger] == [429, 200]
    books_agree(client, simulator)


def test_429_without_headers_backs_off(client: SyncRestClient, simulator: Simulator) -> None:
    """Without X-RateLimit-Reset, a 429 is retried after the jittered backoff."""
    simulator.rest.rate_limit_headers(False)
    simulator.rest.throttle(2, reset_after=60)
    began = time.monotonic()
    assert client.current("BTC", "USD") is not None
    assert time.monotonic() - began < 5 * SLOW  # the 60 s reset was never seen
    assert client.usage.throttled == 2 and client.usage.retries == 2


def test_429_far_reset_is_a_quota_error(simulator: Simulator) -> None:
    """A reset further away than max_wait is a QuotaExceededError that says when it frees."""
    simulator.rest.throttle(1, reset_after=3600)
    with SyncRestClient(simulator.rest_url, max_wait=1.0, **FAST) as c, pytest.raises(QuotaExceededError) as caught:
        c.current("BTC", "USD")
    assert isinstance(caught.value, ServerError) and caught.value.reset_ns is not None
    assert caught.value.reset_ns > time.time_ns() + 3000 * NS and simulator.rest.requests == 1


def test_persistent_429_gives_up_after_max_attempts(simulator: Simulator) -> None:
    """429 on every attempt: QuotaExceededError after max_attempts requests."""
    simulator.rest.throttle(10, reset_after=0.01)
    with SyncRestClient(simulator.rest_url, max_attempts=3, **FAST) as c, pytest.raises(QuotaExceededError):
        c.current("BTC", "USD")
    assert simulator.rest.requests == 3


def test_5xx_is_retried_then_succeeds_or_gives_up(client: SyncRestClient, simulator: Simulator) -> None:
    """500/503 are retried with backoff; past max_attempts it is a TransportError naming the status."""
    simulator.rest.fail(500)
    simulator.rest.fail(503)
    assert len(client.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + 2 * MINUTE)) == 2
    assert client.usage.retries == 2
    simulator.rest.fail(503, count=5)
    with pytest.raises(TransportError, match="HTTP 503"):
        client.assets(refresh=True)
    assert simulator.rest.requests == 3 + 5
    books_agree(client, simulator)


def test_dropped_connection_mid_response_is_retried(client: SyncRestClient, simulator: Simulator) -> None:
    """A body cut mid-way (gzip or not) is retried; the result is whole and nothing is paid twice."""
    simulator.rest.drop(2)
    got = client.history("BTC", "USD", "1SEC", hour_ago(), hour_ago() + 500 * NS)
    assert len(got) == 500 and client.usage.retries == 2
    assert [r.fault for r in simulator.rest.ledger] == ["drop", "drop", None]
    books_agree(client, simulator)


def test_slow_response_times_out_then_transport_error(simulator: Simulator) -> None:
    """A response slower than timeout is retried; when every attempt is slow it is a TransportError."""
    simulator.rest.slow(1.0)
    with SyncRestClient(simulator.rest_url, max_attempts=2, backoff_initial=0.01, backoff_cap=0.01,
                        timeout=0.3) as c, pytest.raises(TransportError, match="2 attempt"):
        c.current("BTC", "USD")
    simulator.rest.slow(0.2)
    with SyncRestClient(simulator.rest_url, timeout=5 * SLOW) as c:
        assert c.current("BTC", "USD") is not None


def test_server_down_is_a_transport_error(make_simulator: MakeSim) -> None:
    """Nothing listening: bounded retries, then a TransportError (never a bare aiohttp error)."""
    sim = make_simulator()
    url = sim.rest_url
    sim.stop()
    with SyncRestClient(url, max_attempts=3, **FAST) as c, pytest.raises(TransportError, match="3 attempt"):
        c.periods()
    assert c.usage.requests == 3 and c.usage.retries == 2 and c.usage.failures == 1


def test_garbled_body_is_retried_then_a_message_error(client: SyncRestClient, simulator: Simulator) -> None:
    """A 200 whose body is not JSON is retried; a good answer afterwards wins, else a MessageError."""
    simulator.rest.inject("[{garbage")
    assert len(client.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)) == 1
    simulator.rest.inject("[{garbage", count=5)
    with pytest.raises(MessageError):
        client.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + MINUTE)


def test_missing_rate_limit_headers_counted_from_items(client: SyncRestClient, simulator: Simulator) -> None:
    """Without X-RateLimit-Request-Cost the client charges ceil(items/100), as the simulator's ledger does."""
    simulator.rest.rate_limit_headers(False)
    client.history("BTC", "USD", "1SEC", hour_ago(), hour_ago() + 250 * NS)
    client.current("BTC", "USD")
    client.current_all("BTC")
    assert client.client.rate_limit is None
    assert client.usage.credits == 3 + 1 + 1
    books_agree(client, simulator)


def test_gzip_is_asked_for_and_decoded(client: SyncRestClient, simulator: Simulator) -> None:
    """Every request sends Accept-Encoding: gzip; gzip bodies decode to the same bars."""
    got = client.history("BTC", "USD", "1SEC", hour_ago(), hour_ago() + 300 * NS)
    record = simulator.rest.ledger[-1]
    assert record.gzip and record.accept_encoding == "gzip" and len(got) == 300


def test_usage_per_utc_day_and_rate_limit(client: SyncRestClient, simulator: Simulator) -> None:
    """Usage is kept per UTC day; the latest rate-limit headers are kept as a RateLimit."""
    client.current("BTC", "USD")
    days = client.usage_by_day()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert list(days) == [today] and days[today] == client.usage == RestUsage(1, 1, 1, 0, 0, 0)
    assert client.client.usage_today() == client.usage
    limits = client.client.rate_limit
    assert limits is not None and limits.request_cost == 1 and limits.used == 1 and limits.limit == 1_000_000


# --------------------------------------------------------------------------- loops and threads


def test_async_client_on_the_callers_loop(simulator: Simulator) -> None:
    """RestClient runs on whatever loop awaits it (the collector's); concurrent calls share one session."""
    async def main() -> tuple[int, int]:
        async with RestClient(simulator.rest_url, **FAST) as c:  # type: ignore[arg-type]
            a, b = await asyncio.gather(c.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + 5 * MINUTE),
                                        c.history("ETH", "USD", "1MIN", hour_ago(), hour_ago() + 7 * MINUTE))
            return len(a), len(b)

    assert asyncio.run(main()) == (5, 7)


def test_one_client_one_loop(simulator: Simulator) -> None:
    """A RestClient used on a second loop says so (aiohttp sessions cannot move)."""
    c = RestClient(simulator.rest_url, **FAST)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(c.periods())
        with pytest.raises(CollectorError, match="another event loop"):
            asyncio.run(c.periods(refresh=True))
    finally:
        loop.run_until_complete(c.close())
        loop.close()


def test_sync_client_thread_ends_on_stop(simulator: Simulator) -> None:
    """stop() closes the session and ends the loop thread and its parsing workers; it is idempotent."""
    start = hour_ago() - 86_400 * NS
    with SyncRestClient(simulator.rest_url) as warm:  # the simulator's own worker threads start here
        warm.history("BTC", "USD", "1SEC", start, start + 20_000 * NS)
    before = set(threading.enumerate())
    c = SyncRestClient(simulator.rest_url)
    assert len(c.history("BTC", "USD", "1SEC", start, start + 20_000 * NS)) == 20_000  # parsed off the loop
    assert simulator.rest.ledger[-1].bytes >= 256 << 10
    assert c.running
    c.stop()
    c.stop()
    assert not c.running and set(threading.enumerate()) - before == set()


def test_sync_client_from_its_own_loop_thread_is_refused(client: SyncRestClient) -> None:
    """A blocking call made on the client's own loop thread raises instead of deadlocking."""
    errors: list[BaseException] = []

    async def inside() -> None:
        try:
            client.periods()
        except CollectorError as exc:
            errors.append(exc)

    client.submit(inside()).result(10 * SLOW)
    assert errors and "own loop thread" in str(errors[0])


def test_reprs_say_what_they_count(client: SyncRestClient) -> None:
    """Reprs show the URL, counters and simulated label; Bars show the pair and span."""
    client.periods()
    assert "requests" in repr(client) and "simulated" in repr(client)
    bars = client.history("BTC", "USD", "1MIN", hour_ago(), hour_ago() + 2 * MINUTE)
    assert repr(bars).startswith("<Bars BTC/USD 1MIN | 2 bars | ")


def test_options_are_checked() -> None:
    """Retry, timeout and page options outside their range are ConfigErrors."""
    for options in ({"timeout": 0}, {"max_attempts": 0}, {"page_limit": 100_001}, {"concurrency": 0},
                    {"max_wait": -1}, {"ssl": "ca.pem"}):
        with pytest.raises(ConfigError):
            RestClient("https://example.com", **options)


def test_bars_helpers() -> None:
    """Bars.concat and take keep columns aligned; empty Bars have every column."""
    empty = Bars.empty("BTC", "USD", "1SEC")
    assert len(empty) == 0 and empty.frame().empty
    body = json.dumps([{"time_period_start": format_time(k * NS), "rate_open": float(k)} for k in range(1, 4)]).encode()
    bars = parse_bars(body, "BTC", "USD", "1SEC")
    both = Bars.concat([bars, bars.take(slice(1, None))], "BTC", "USD", "1SEC")
    assert list(both.open) == [1, 2, 3, 2, 3] and len(both.end_ns) == 5
