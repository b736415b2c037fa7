"""Pure client protocol: scope algebra, outgoing texts, counters, staleness and dedupe, fed strings and `now`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinrates_nb.exceptions import MessageError
from coinrates_nb.messages import ErrorMessage, ExchangeRate, Heartbeat, RateBatch, Reconnect
from coinrates_nb.protocol import ClientProtocol, Scope

EXRATE = ('{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","rate_type":"BASE_ALL_CROSSES_TO_REF",'
          '"time":"2019-06-11T15:26:00.0000000Z","rate":10065.0319541}')


def test_hello_carries_scope() -> None:
    """The hello lists the scope, heartbeat and throttle."""
    p = ClientProtocol(["btc/usd", "ETH/USD"], heartbeat=True, update_limit_ms=500)
    assert json.loads(p.hello()) == {"type": "hello", "heartbeat": True,
                                     "subscribe_filter_asset_id": ["BTC/USD", "ETH/USD"],
                                     "subscribe_update_limit_ms_exrate": 500}


def test_unfiltered_hello_omits_filter() -> None:
    """items=None subscribes to the whole stream by omitting the filter (§3.2)."""
    assert "subscribe_filter_asset_id" not in json.loads(ClientProtocol(None).hello())


def test_subscribe_adds_only_new() -> None:
    """subscribe sends only items not yet in scope, and nothing when all are there."""
    p = ClientProtocol(["BTC/USD"])
    assert json.loads(p.subscribe(["BTC/USD", "SOL/USD"]) or "")["subscribe_filter_asset_id"] == ["SOL/USD"]
    assert p.subscribe("BTC/USD") is None
    assert p.scope.items == ("BTC/USD", "SOL/USD")


def test_unsubscribe_removes_only_present() -> None:
    """unsubscribe sends only items in scope and removes exactly them."""
    p = ClientProtocol(["BTC/USD", "BTC/EUR"])
    msg = json.loads(p.unsubscribe(["BTC/EUR", "XRP/USD"]) or "")
    assert msg["type"] == "unsubscribe" and msg["subscribe_filter_asset_id"] == ["BTC/EUR"]
    assert p.unsubscribe("XRP/USD") is None
    assert p.scope.items == ("BTC/USD",)


def test_reconnect_replays_scope_as_one_hello() -> None:
    """After subscribe/unsubscribe, the next hello carries the resulting scope (§9.6)."""
    p = ClientProtocol(["BTC/USD"])
    p.subscribe(["ETH/USD", "SOL/USD"])
    p.unsubscribe("BTC/USD")
    assert json.loads(p.hello())["subscribe_filter_asset_id"] == ["ETH/USD", "SOL/USD"]


def test_set_scope_replaces() -> None:
    """set_scope replaces the scope and returns a hello."""
    p = ClientProtocol(["BTC/USD"])
    msg = json.loads(p.set_scope(["ETH/USD"]))
    assert msg["type"] == "hello" and p.scope.items == ("ETH/USD",)


ops = st.lists(st.tuples(st.sampled_from(["hello", "sub", "unsub"]),
                         st.lists(st.sampled_from(["BTC/USD", "ETH/USD", "SOL/USD", "BTC", "EUR"]), max_size=4)),
               max_size=30)


@given(ops)
def test_scope_algebra_matches_set_model(sequence: list[tuple[str, list[str]]]) -> None:
    """Any hello/subscribe/unsubscribe sequence leaves the scope equal to a plain set model."""
    p = ClientProtocol([])
    model: set[str] = set()
    for op, items in sequence:
        if op == "hello":
            p.set_scope(items)
            model = set(items)
        elif op == "sub":
            p.subscribe(items) if items else None
            model |= set(items)
        else:
            p.unsubscribe(items) if items else None
            model -= set(items)
        assert set(p.scope.items or ()) == model
        assert len(set(p.scope.items or ())) == len(p.scope.items or ())


def test_counters() -> None:
    """Frames, rates, heartbeats, unknown types and rejects are counted by kind."""
    p = ClientProtocol(["BTC/USD"])
    assert isinstance(p.receive(EXRATE, 1.0), ExchangeRate)
    assert isinstance(p.receive('{"type":"hearbeat"}', 2.0), Heartbeat)
    p.receive('{"type":"asset"}', 3.0)
    with pytest.raises(MessageError):
        p.receive("{oops", 4.0)
    with pytest.raises(MessageError):
        p.receive(b"\x00\x01", 5.0)
    assert (p.frames, p.exrates, p.heartbeats, p.unknown) == (5, 1, 1, 1)
    assert p.rejected == {"malformed_json": 1, "binary_frame": 1}


def test_staleness_clock() -> None:
    """No frame for stale_after seconds marks the stream stale; any frame refreshes it."""
    p = ClientProtocol(["BTC/USD"], stale_after=5.0)
    assert not p.is_stale(100.0)  # not connected yet
    p.connected(100.0)
    assert not p.is_stale(104.9)
    assert p.is_stale(105.0)
    p.receive('{"type":"hearbeat"}', 105.5)
    assert not p.is_stale(110.0) and p.silence(110.0) == pytest.approx(4.5)


def test_reconnect_notice_sets_deadline() -> None:
    """A reconnect notice makes a switch due, with a deadline within_seconds ahead."""
    p = ClientProtocol(["BTC/USD"])
    p.connected(0.0)
    assert not p.switch_due()
    msg = p.receive('{"type":"reconnect","within_seconds":10,"before_time":"2020-08-06T19:19:09.7035429Z"}', 50.0)
    assert isinstance(msg, Reconnect) and p.switch_due() and p.reconnect_deadline == 60.0
    p.connected(51.0)
    assert not p.switch_due()


def test_fresh_drops_repeats_per_pair() -> None:
    """An update repeating or predating the newest of its pair is dropped and counted."""
    p = ClientProtocol(["BTC/USD"])
    a = ExchangeRate("BTC", "USD", "X", 10, 1.0)
    b = ExchangeRate("BTC", "USD", "X", 20, 1.0)
    other = ExchangeRate("ETH", "USD", "X", 5, 1.0)
    assert p.fresh(a) and p.fresh(b) and p.fresh(other)
    assert not p.fresh(a) and not p.fresh(b)
    assert p.duplicates == 2


def test_scope_none_absorbs_changes() -> None:
    """An unfiltered scope stays unfiltered under add/remove."""
    assert Scope(None).add(["BTC"]).items is None and Scope(None).remove(["BTC"]).items is None


# -- batches ---------------------------------------------------------------------------------------


def exrate(pair: str, time_ns: int, rate: float = 1.0) -> str:
    base, quote = pair.split("/")
    return ExchangeRate(base, quote, "BASE_ALL_CROSSES_TO_REF", time_ns, rate).to_json()


def one_by_one(p: ClientProtocol, frames: list[str | bytes], now: float) -> tuple[list[ExchangeRate], list[object]]:
    """receive + fresh per frame, stopping after a server error, as the session does frame by frame."""
    kept: list[ExchangeRate] = []
    outcomes: list[object] = []
    for data in frames:
        try:
            msg = p.receive(data, now)
        except MessageError as exc:
            outcomes.append(exc.kind)
            continue
        if isinstance(msg, ExchangeRate):
            if p.fresh(msg):
                kept.append(msg)
            continue
        outcomes.append(msg)
        if isinstance(msg, ErrorMessage):
            break
    return kept, outcomes


def state(p: ClientProtocol) -> tuple[object, ...]:
    return (p.frames, p.exrates, p.heartbeats, p.unknown, p.server_errors, dict(p.rejected), p.duplicates,
            dict(p.last_time), p.reconnect_deadline, p.last_error, p.last_frame_at)


PAIRS3 = ["BTC/USD", "ETH/USD", "BTC/EUR"]
T0 = 1_767_225_600_000_000_000
frame_st = st.one_of(
    st.builds(lambda pair, dt: exrate(pair, T0 + dt * 100), st.sampled_from(PAIRS3), st.integers(0, 30)),
    st.sampled_from(['{"type":"hearbeat"}', '{"type":"asset"}', "{oops", b"\x00", '{"type":"exrate"}',
                     '{"type":"reconnect","within_seconds":5}', '{"type":"error","message":"boom"}',
                     exrate("BTC/USD", T0).replace("1.0", "-1.0")]),
)


@given(st.lists(st.builds(lambda pair, dt: (pair, dt), st.sampled_from(PAIRS3), st.integers(0, 30)), max_size=40),
       st.lists(st.builds(lambda pair, dt: (pair, dt), st.sampled_from(PAIRS3), st.integers(0, 30)), max_size=5))
def test_fresh_batch_equals_fresh_in_order(rows: list[tuple[str, int]], before: list[tuple[str, int]]) -> None:
    """fresh_batch keeps exactly the rows fresh() would, in order, and leaves the same state."""
    seen = [ExchangeRate(*pair.split("/"), "X", T0 + dt * 100, 1.0) for pair, dt in before]
    updates = [ExchangeRate(*pair.split("/"), "X", T0 + dt * 100, 1.0 + i) for i, (pair, dt) in enumerate(rows)]
    a, b = ClientProtocol(None), ClientProtocol(None)
    for msg in seen:
        a.fresh(msg)
        b.fresh(msg)
    want = [msg for msg in updates if a.fresh(msg)]
    got = b.fresh_batch(RateBatch.of(updates)).updates()
    assert got == want
    assert (a.duplicates, a.last_time) == (b.duplicates, b.last_time)


@given(st.lists(frame_st, max_size=40))
def test_receive_batch_equals_receive_then_fresh(frames: list[str | bytes]) -> None:
    """receive_batch keeps the updates, outcomes and counters that receive + fresh per frame would."""
    a, b = ClientProtocol(None), ClientProtocol(None)
    kept, outcomes = one_by_one(a, frames, 7.0)
    parsed = b.receive_batch(frames, 7.0)
    assert parsed.rates.updates() == kept
    assert [e.outcome.kind if isinstance(e.outcome, MessageError) else e.outcome for e in parsed.events] == outcomes
    assert state(a) == state(b)


def test_receive_batch_stops_at_server_error() -> None:
    """Nothing after a server error is taken (§4.4): its frame is the last counted."""
    p = ClientProtocol(None)
    frames = [exrate("BTC/USD", T0), '{"type":"error","message":"boom"}', exrate("BTC/USD", T0 + 100), "{oops"]
    parsed = p.receive_batch(frames, 1.0)
    assert len(parsed.rates) == 1 and isinstance(parsed.events[-1].outcome, ErrorMessage)
    assert (p.frames, p.exrates, p.server_errors, dict(p.rejected)) == (2, 1, 1, {})


def test_receive_batch_counts_array_elements() -> None:
    """An array frame is one frame of several messages: each update counts, the frame once."""
    p = ClientProtocol(None)
    array = "[" + ",".join([exrate("BTC/USD", T0), exrate("ETH/USD", T0), '{"type":"hearbeat"}']) + "]"
    parsed = p.receive_batch([array, exrate("BTC/USD", T0)], 3.0)
    assert len(parsed.rates) == 2 and (p.frames, p.exrates, p.heartbeats, p.duplicates) == (2, 3, 1, 1)
