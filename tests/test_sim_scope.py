"""The simulator's pure parts: the server-side scope algebra and routes, key extraction, the ticker."""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

from coinrates_nb.messages import Hello, Subscribe, Unsubscribe, parse_server
from coinrates_nb.sim import OVERFLOW_MESSAGE, PriceModel, ServerScope, http_keys, routes_for
from coinrates_nb.sim._auth import key_matches
from coinrates_nb.sim._connection import Close, Connection
from coinrates_nb.sim.ticker import Ticker

KNOWN = ["BTC", "ETH", "EUR", "USDT", "USD"]


def pairs(scope: ServerScope, known: list[str] = KNOWN) -> list[tuple[str, str]]:
    """The scope's routes as ``(pair, rate_type)``, in stream order."""
    return [(r.pair, r.rate_type) for r in routes_for(scope, known)]


def opened(items: tuple[str, ...] | None) -> ServerScope:
    """A scope after one hello with ``items`` (``None``: unfiltered)."""
    scope = ServerScope()
    scope.apply(Hello(assets=items))
    return scope


def test_scope_algebra_and_routes() -> None:
    """ServerScope: hello replaces, subscribe adds, unsubscribe removes exactly; routes follow §3.3/§4.1."""
    scope = ServerScope()
    assert pairs(scope) == []
    scope.apply(Hello(assets=None, heartbeat=True))
    assert [p for p, _ in pairs(scope)] == ["BTC/USD", "ETH/USD", "EUR/USD", "USDT/USD"] and scope.heartbeat
    scope.apply(Hello(assets=("btc", "EUR", "XYZ", "ETH/XYZ", "BTC/BTC"), heartbeat=False, update_limit_ms=100))
    assert pairs(scope) == [("BTC/USD", "BASE_ALL_CROSSES_TO_REF"), ("EUR/USD", "BASE_ALL_CROSSES_TO_REF")]
    scope.apply(Subscribe(assets=("ETH/EUR", "USD/EUR"), heartbeat=True, update_limit_ms=None))
    assert pairs(scope)[2:] == [("ETH/EUR", "BASE_AND_QUOTE_TO_REF"), ("USD/EUR", "BASE_AND_QUOTE_TO_REF")]
    assert scope.heartbeat is False and scope.update_limit_ms == 100  # subscribe keeps both
    scope.apply(Unsubscribe(assets=("BTC", "ETH/EUR")))
    assert [p for p, _ in pairs(scope)] == ["EUR/USD", "USD/EUR"]
    scope.apply(Hello(assets=("USD",)))
    assert [p for p, _ in pairs(scope)] == ["BTC/USD", "ETH/USD", "EUR/USD", "USDT/USD"]


def test_first_subscribe_opens_and_unsubscribe_cannot_carve_an_unfiltered_stream() -> None:
    """A first subscribe acts as a hello (§3.1); unsubscribing an asset from an unfiltered stream changes nothing."""
    scope = ServerScope()
    scope.apply(Subscribe(assets=("BTC/USD",), heartbeat=True, update_limit_ms=250))
    assert (scope.started, scope.unfiltered, scope.items, scope.heartbeat, scope.update_limit_ms) == \
        (True, False, ["BTC/USD"], True, 250)
    everything = opened(None)
    everything.apply(Unsubscribe(assets=("BTC", "ETH/USD")))
    assert pairs(everything) == pairs(opened(None))


def test_unfiltered_stream_is_a_superset_of_every_single_asset_filter() -> None:
    """Unfiltered routes (default model) contain the union of the routes of every single-asset filter, fiat included."""
    known = list(PriceModel().assets)
    unfiltered = set(pairs(opened(None), known))
    union: set[tuple[str, str]] = set()
    for asset in known:
        union |= set(pairs(opened((asset,)), known))
    assert union <= unfiltered
    assert unfiltered == {(f"{a}/USD", "BASE_ALL_CROSSES_TO_REF") for a in known if a != "USD"}
    assert ("EUR/USD", "BASE_ALL_CROSSES_TO_REF") in unfiltered and len(unfiltered) == 19


def test_routes_keep_the_known_order_and_ignore_the_old_crypto_argument() -> None:
    """The third (former crypto) argument no longer narrows the unfiltered stream; the order is known's."""
    assert routes_for(opened(None), KNOWN, ["BTC"]) == routes_for(opened(None), KNOWN)
    assert [r.pair for r in routes_for(opened(None), ["USD", "EUR", "BTC", "EUR"])] == ["EUR/USD", "BTC/USD"]


def _basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"coinapi:{key}".encode()).decode()


def test_http_keys_reads_every_documented_form() -> None:
    """http_keys finds the key in X-CoinAPI-Key, Authorization (raw/Basic), query and path; ignores Bearer."""
    assert http_keys("/", {"X-CoinAPI-Key": "k1"}) == ["k1"]
    assert http_keys("/", {"Authorization": "k2"}) == ["k2"]
    assert http_keys("/", {"Authorization": _basic("k3")}) == ["k3"]
    assert http_keys("/", {"Authorization": "Bearer eyJhbGciOi"}) == []
    assert http_keys("/", {"Authorization": "Basic !!!notbase64"}) == []
    assert http_keys("/?apikey=k4&x=1", {}) == ["k4"]
    assert http_keys("/APIKEY-k5", {}) == ["k5"]
    assert http_keys("/APIKEY-k6?apikey=k7", {"X-CoinAPI-Key": " k8 "}) == ["k8", "k7", "k6"]
    assert http_keys("/", {}) == []


def test_key_matches_only_the_exact_key() -> None:
    """key_matches is exact (case, length, None) and compares in constant time via hmac."""
    assert key_matches("right-key", "right-key")
    assert not key_matches("Right-key", "right-key")
    assert not key_matches("right-key ", "right-key")
    assert not key_matches(None, "right-key")


# --------------------------------------------------------------------------- the ticker (pure: times passed in)


def connection(cid: int, items: tuple[str, ...] | None, known: list[str], **scope: Any) -> Connection:
    """A connection whose scope is one hello; its socket is never touched by the ticker."""
    conn = Connection(None, cid, None, 0.0, deque())  # type: ignore[arg-type]  # the ticker reads neither
    conn.scope.apply(Hello(assets=items, **scope))
    conn.routes = routes_for(conn.scope, known)
    return conn


def queued(conn: Connection) -> list[tuple[str, int, float]]:
    """The ledger entries queued on ``conn``, in order."""
    return [item[1] for item in conn.pending if not isinstance(item, Close) and item[1] is not None]


def test_ticker_batches_instants_and_throttles_per_pair() -> None:
    """batch=4 at 100 Hz queues 4 instants 10 ms apart; a 25 ms throttle keeps every third; crosses at most 1/s."""
    model = PriceModel(seed=3)
    known = list(model.assets)
    ticker = Ticker(model, rate_hz=100, batch=4, cross_interval=1.0, max_buffered=1000)
    free = connection(1, ("BTC/USD", "BTC/EUR"), known)
    slow = connection(2, ("BTC/USD",), known, update_limit_ms=25)
    now = 1_700_000_000_000_000_000
    assert ticker.tick(now, [free, slow]) == []
    times = [now - 30_000_000, now - 20_000_000, now - 10_000_000, now]
    assert [t for p, t, _ in queued(free) if p == "BTC/USD"] == times
    assert [t for p, t, _ in queued(free) if p == "BTC/EUR"] == times[:1]  # BASE_AND_QUOTE_TO_REF: once a second
    assert [t for _, t, _ in queued(slow)] == [times[0], times[3]]  # >= 25 ms apart
    assert ticker.model_ns == now and model.steps == 3  # one step per new instant; the first only sets the clock
    same = {p: r for p, _, r in queued(free) if p == "BTC/USD"}
    assert queued(slow)[-1][2] == same["BTC/USD"]  # both connections got the same price for the same instant


def test_ticker_skips_instants_already_emitted() -> None:
    """A wake-up at or before the last emitted instant queues nothing and does not step the model."""
    model = PriceModel(seed=3)
    ticker = Ticker(model, rate_hz=10, batch=1, cross_interval=1.0, max_buffered=1000)
    conn = connection(1, ("ETH/USD",), list(model.assets))
    ticker.tick(2_000_000_000, [conn])
    ticker.tick(1_999_999_950, [conn])  # 50 ns earlier: the same 100 ns quantum on the wire
    ticker.tick(2_000_000_000, [conn])
    assert [t for _, t, _ in queued(conn)] == [2_000_000_000] and model.steps == 0


def test_ticker_overflow_empties_the_queue_and_fails_the_connection() -> None:
    """Past max_buffered the queue is dropped (never sent) and replaced by the overflow error, then a 1008 close."""
    model = PriceModel(seed=3)
    ticker = Ticker(model, rate_hz=10, batch=1, cross_interval=1.0, max_buffered=5)
    conn = connection(1, ("BTC/USD", "ETH/USD"), list(model.assets))
    overflowed = []
    for k in range(4):
        overflowed += ticker.tick(1_000_000_000 * (k + 1), [conn])
    assert overflowed == [conn] and conn.closing
    (frame, entry), close = conn.pending
    assert isinstance(frame, str) and parse_server(frame).message == OVERFLOW_MESSAGE and entry is None  # type: ignore[union-attr]
    assert close == Close(1008, OVERFLOW_MESSAGE)
    assert ticker.tick(5_000_000_000, [conn]) == [] and len(conn.pending) == 2  # a closing connection gets nothing more
