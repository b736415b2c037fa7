"""Pure client protocol: scope algebra, outgoing texts, counters, staleness and dedupe, fed strings and `now`."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinrates_nb.batch import RateBatch
from coinrates_nb.exceptions import ConfigError, MessageError
from coinrates_nb.messages import ErrorMessage, ExchangeRate, Heartbeat, Reconnect
from coinrates_nb.protocol import (
    HOLD_MAX,
    MAX_AHEAD_NS,
    MAX_BEHIND_NS,
    SWITCH_GRACE,
    SWITCH_MAX,
    ClientProtocol,
    Scope,
)

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


T_2019 = 1_560_266_760_000_000_000  # 2019-06-11T15:26:00Z, EXRATE's time: the receive clock in these tests


def test_counters() -> None:
    """Frames, rates, heartbeats, unknown types and rejects are counted by kind; a batch counts each frame."""
    p = ClientProtocol(["BTC/USD"])
    got = p.receive([EXRATE], 1.0, T_2019)
    assert got.rates.updates() == [ExchangeRate("BTC", "USD", "BASE_ALL_CROSSES_TO_REF", T_2019, 10065.0319541)]
    assert isinstance(p.receive(['{"type":"hearbeat"}'], 2.0, T_2019).events[0].outcome, Heartbeat)
    p.receive(['{"type":"asset"}', "{oops", b"\x00\x01"], 3.0, T_2019)
    assert (p.frames, p.exrates, p.heartbeats, p.unknown) == (5, 1, 1, 1)
    assert p.rejected == {"malformed_json": 1, "binary_frame": 1}


def test_staleness_clock() -> None:
    """No frame for stale_after seconds marks the stream stale; any frame refreshes it."""
    p = ClientProtocol(["BTC/USD"], stale_after=5.0)
    assert not p.is_stale(100.0)  # not connected yet
    p.connected(100.0)
    assert not p.is_stale(104.9)
    assert p.is_stale(105.0)
    p.receive(['{"type":"hearbeat"}'], 105.5, T_2019)
    assert not p.is_stale(110.0) and p.silence(110.0) == pytest.approx(4.5)


def test_reconnect_notice_sets_deadline() -> None:
    """A reconnect notice makes a switch due, with a deadline within_seconds ahead."""
    p = ClientProtocol(["BTC/USD"])
    p.connected(0.0)
    assert not p.switch_due()
    got = p.receive(['{"type":"reconnect","within_seconds":10,"before_time":"2020-08-06T19:19:09.7035429Z"}'], 50.0, 0)
    assert isinstance(got.events[0].outcome, Reconnect) and p.switch_due() and p.reconnect_deadline == 60.0
    p.connected(51.0)
    assert not p.switch_due()


def test_fresh_drops_repeats_per_pair() -> None:
    """An update repeating or predating the newest of its pair is dropped and counted."""
    p = ClientProtocol(["BTC/USD"])
    a = ExchangeRate("BTC", "USD", "X", 10, 1.0)
    b = ExchangeRate("BTC", "USD", "X", 20, 1.0)
    other = ExchangeRate("ETH", "USD", "X", 5, 1.0)
    assert p.fresh(RateBatch.of([a, b, other])).updates() == [a, b, other]
    assert len(p.fresh(RateBatch.of([a]))) == 0 and len(p.fresh(RateBatch.of([b]))) == 0
    assert p.duplicates == 2


def test_scope_none_absorbs_changes() -> None:
    """An unfiltered scope stays unfiltered under add/remove."""
    assert Scope(None).add(["BTC"]).items is None and Scope(None).remove(["BTC"]).items is None


def test_pair_shaped_mistakes_are_config_errors() -> None:
    """Typos that used to stream nothing forever are refused with the pair they probably meant."""
    for typo in ("BTCUSD", "BTC-USD", "BTC USD", " BTC / USD "):
        with pytest.raises(ConfigError, match="did you mean 'BTC/USD'"):
            ClientProtocol([typo])
    for bad in (5, None, "", ["BTC/USD", 5]):
        with pytest.raises(ConfigError):
            ClientProtocol(["BTC/USD"]).subscribe(bad)  # type: ignore[arg-type]


# -- time sanity -------------------------------------------------------------------------------------


def test_a_future_time_is_rejected_and_the_pair_keeps_flowing() -> None:
    """A year-ahead update is counted as time_ahead and does not become the pair's newest time."""
    p = ClientProtocol(None)
    now = T0
    year = 365 * 86_400 * 10**9
    got = p.receive([exrate("BTC/USD", now + year), exrate("BTC/USD", now)], 1.0, now)
    assert [u.time_ns for u in got.rates.updates()] == [now]
    assert p.rejected == {"time_ahead": 1}
    assert [e.outcome.kind for e in got.events if isinstance(e.outcome, MessageError)] == ["time_ahead"]
    later = p.receive([exrate("BTC/USD", now + 10**9)], 2.0, now + 10**9)
    assert len(later.rates) == 1 and p.duplicates == 0


def test_far_past_times_are_rejected_within_tolerance_kept() -> None:
    """Updates older than MAX_BEHIND_NS are time_behind; skew within the tolerances is kept."""
    p = ClientProtocol(None)
    now = T0
    frames = [exrate("BTC/USD", now - MAX_BEHIND_NS - 1), exrate("ETH/USD", now - MAX_BEHIND_NS + 10**9),
              exrate("SOL/USD", now + MAX_AHEAD_NS - 10**9)]
    got = p.receive(frames, 1.0, now)
    assert sorted(u.pair for u in got.rates.updates()) == ["ETH/USD", "SOL/USD"]
    assert p.rejected == {"time_behind": 1}


# -- the make-before-break switch ----------------------------------------------------------------------


def test_switch_holds_the_new_link_until_the_old_one_ends() -> None:
    """During a switch the old link's updates flow, the new link's are held, then released deduped in order."""
    p = ClientProtocol(None)
    p.connected(0.0)
    p.receive(['{"type":"reconnect","within_seconds":10}'], 1.0, T0, link=1)
    assert p.switch_due()
    p.begin_switch(2.0, new_link=2)
    p.connected(2.0)
    assert not p.switch_due()
    new = p.receive([exrate("BTC/USD", T0 + 300), exrate("BTC/USD", T0 + 400)], 2.1, T0, link=2)
    assert len(new.rates) == 0 and p.released() == []
    old = p.receive([exrate("BTC/USD", T0 + 100), exrate("BTC/USD", T0 + 300)], 2.2, T0, link=1)
    assert [u.time_ns for u in old.rates.updates()] == [T0 + 100, T0 + 300]
    assert p.end_switch() == 2
    released = p.released()
    assert [[u.time_ns for u in b.updates()] for b, _ in released] == [[T0 + 400]]
    assert p.duplicates == 1 and p.switch is None
    after = p.receive([exrate("BTC/USD", T0 + 500)], 3.0, T0, link=2)
    assert len(after.rates) == 1


def test_cut_old_decides_by_deadline_state_and_queue() -> None:
    """The old link is read to its end; past the deadline + grace an idle open one is cut; after SWITCH_MAX any."""
    p = ClientProtocol(None)
    p.connected(0.0)
    p.receive(['{"type":"reconnect","within_seconds":10}'], 0.0, T0)
    p.begin_switch(0.0, new_link=2)
    assert not p.cut_old(5.0, old_open=True, old_queued=0)  # before the deadline
    assert not p.cut_old(10.5, old_open=True, old_queued=0)  # within the grace
    assert p.cut_old(11.0, old_open=True, old_queued=0)  # idle past deadline + grace
    assert not p.cut_old(11.0, old_open=True, old_queued=3)  # still has frames to read
    assert not p.cut_old(20.0, old_open=False, old_queued=None)  # closing: read to its end...
    assert p.cut_old(SWITCH_MAX + SWITCH_GRACE, old_open=False, old_queued=None)  # ...up to SWITCH_MAX


def test_a_switch_releases_when_the_hold_is_full() -> None:
    """More than HOLD_MAX held updates are released at once, so memory stays bounded."""
    p = ClientProtocol(None)
    p.receive(['{"type":"reconnect","within_seconds":10}'], 0.0, T0)
    p.begin_switch(0.0, new_link=2)
    rows = [(T0 + i * 100, "BTC/USD", 1.0, "X") for i in range(HOLD_MAX)]
    p.receive([exrate(pair, t) for t, pair, _, _ in rows[:10]], 0.1, T0, link=2)
    assert p.released() == []
    p.switch.held_rows = HOLD_MAX - 1  # type: ignore[union-attr]  # as if nearly full
    p.receive([exrate("BTC/USD", T0 + 10 * 100)], 0.2, T0, link=2)
    assert sum(len(b) for b, _ in p.released()) == 11


# -- one data path: a batch equals its frames one at a time -------------------------------------------------


def exrate(pair: str, time_ns: int, rate: float = 1.0) -> str:
    base, quote = pair.split("/")
    return ExchangeRate(base, quote, "BASE_ALL_CROSSES_TO_REF", time_ns, rate).to_json()


def state(p: ClientProtocol) -> tuple[object, ...]:
    return (p.frames, p.exrates, p.heartbeats, p.unknown, p.server_errors, dict(p.rejected), p.duplicates,
            dict(p.last_time), p.reconnect_deadline, p.last_error, p.last_frame_at)


PAIRS3 = ["BTC/USD", "ETH/USD", "BTC/EUR"]
T0 = 1_767_225_600_000_000_000
frame_st = st.one_of(
    st.builds(lambda pair, dt: exrate(pair, T0 + dt * 100), st.sampled_from(PAIRS3), st.integers(0, 30)),
    st.sampled_from(['{"type":"hearbeat"}', '{"type":"asset"}', "{oops", b"\x00", '{"type":"exrate"}',
                     '{"type":"reconnect","within_seconds":5}', '{"type":"error","message":"boom"}',
                     exrate("BTC/USD", T0).replace("1.0", "-1.0"), exrate("BTC/USD", T0 + 10**18)]),
)


@given(st.lists(st.builds(lambda pair, dt: (pair, dt), st.sampled_from(PAIRS3), st.integers(0, 30)), max_size=40),
       st.lists(st.builds(lambda pair, dt: (pair, dt), st.sampled_from(PAIRS3), st.integers(0, 30)), max_size=5))
def test_fresh_vectorised_equals_row_by_row(rows: list[tuple[str, int]], before: list[tuple[str, int]]) -> None:
    """The NumPy dedupe of a large batch keeps exactly the rows that one-row batches would, leaving the same state."""
    seen = RateBatch.of([ExchangeRate(*pair.split("/"), "X", T0 + dt * 100, 1.0) for pair, dt in before])
    updates = [ExchangeRate(*pair.split("/"), "X", T0 + dt * 100, 1.0 + i) for i, (pair, dt) in enumerate(rows)]
    a, b = ClientProtocol(None), ClientProtocol(None)
    a.fresh(seen)
    b.fresh(seen)
    want = [u for u in updates if len(a.fresh(RateBatch.of([u])))]
    got = b.fresh(RateBatch.of(updates)).updates()
    assert got == want
    assert (a.duplicates, a.last_time) == (b.duplicates, b.last_time)


@given(st.lists(frame_st, max_size=40))
def test_a_batch_equals_its_frames_one_at_a_time(frames: list[str | bytes]) -> None:
    """Frames received together give the updates, outcomes and counters of the same frames received one by one."""
    a, b = ClientProtocol(None), ClientProtocol(None)
    kept: list[ExchangeRate] = []
    outcomes: list[object] = []
    for data in frames:
        got = a.receive([data], 7.0, T0)
        kept += got.rates.updates()
        outcomes += [e.outcome.kind if isinstance(e.outcome, MessageError) else e.outcome for e in got.events]
        if any(isinstance(e.outcome, ErrorMessage) for e in got.events):
            break
    parsed = b.receive(frames, 7.0, T0)
    assert parsed.rates.updates() == kept
    assert sorted(map(str, (e.outcome.kind if isinstance(e.outcome, MessageError) else e.outcome
                            for e in parsed.events))) == sorted(map(str, outcomes))
    assert state(a) == state(b)


def test_receive_stops_at_server_error() -> None:
    """Nothing after a server error is taken (§4.4): its frame is the last counted."""
    p = ClientProtocol(None)
    frames = [exrate("BTC/USD", T0), '{"type":"error","message":"boom"}', exrate("BTC/USD", T0 + 100), "{oops"]
    parsed = p.receive(frames, 1.0, T0)
    assert len(parsed.rates) == 1 and isinstance(parsed.events[-1].outcome, ErrorMessage)
    assert (p.frames, p.exrates, p.server_errors, dict(p.rejected)) == (2, 1, 1, {})
