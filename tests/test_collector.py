"""Collector against the real simulator on loopback: connect, scope changes, reconnects, errors, reads."""

from __future__ import annotations

import logging
import threading

import pandas as pd
import pytest

import coinrates_nb as cr
from coinrates_nb.messages import Hello, Subscribe, Unsubscribe
from coinrates_nb.sim.server import Simulator
from tests.helpers import wait_until

PAIRS = ["BTC/USD", "ETH/USD", "BTC/EUR"]


def collector_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "coinrates-collector" and t.is_alive()]


@pytest.fixture
def rates(simulator: Simulator):
    """A collector streaming PAIRS from the fixture simulator, stopped afterwards."""
    c = cr.stream(PAIRS, url=simulator.url, stale_after=5.0)
    yield c
    c.stop()


def test_df_holds_every_pair_utc_100ns(rates: cr.Collector) -> None:
    """After a few updates the frame has rows for every pair, UTC index, 100 ns wire precision."""
    rates.wait(timeout=20, rows=3)
    df = rates.df
    assert set(df["pair"].unique()) == set(PAIRS)
    assert isinstance(df.index, pd.DatetimeIndex) and str(df.index.tz) == "UTC" and df.index.name == "time"
    assert (df.index.asi8 % 100 == 0).all()
    assert (df.index.asi8 % 1000 != 0).any(), "sub-microsecond digits from the wire were lost"
    eur = df[df["pair"] == "BTC/EUR"]
    assert set(eur["rate_type"]) == {"BASE_AND_QUOTE_TO_REF"}
    assert set(df[df["pair"] == "BTC/USD"]["rate_type"]) == {"BASE_ALL_CROSSES_TO_REF"}


def test_latest_wide_ohlc(rates: cr.Collector) -> None:
    """latest/wide/ohlc give one row or column per pair."""
    rates.wait(timeout=20, rows=3)
    latest = rates.latest()
    assert set(latest.index) == set(PAIRS) and (latest["age"] >= pd.Timedelta(0)).all()
    assert set(rates.wide().columns) == set(PAIRS)
    bars = rates.ohlc("1s")
    assert set(bars.columns.get_level_values("pair")) == set(PAIRS)
    assert list(bars.columns.get_level_values("field").unique()) == ["open", "high", "low", "close"]


def test_live_subscribe_and_unsubscribe(rates: cr.Collector, simulator: Simulator) -> None:
    """subscribe/unsubscribe reach the server over the open connection; after the server applied the unsubscribe it sends no BTC/EUR."""
    rates.wait(timeout=20)
    rates.subscribe("SOL/USD")
    wait_until(lambda: "SOL/USD" in set(rates.df["pair"]), timeout=20, message="SOL/USD never arrived")
    assert simulator.total_connections == 1  # no reconnect was needed
    assert isinstance(simulator.hellos[-1], Subscribe) and simulator.hellos[-1].assets == ("SOL/USD",)
    rates.unsubscribe("BTC/EUR")
    wait_until(lambda: isinstance(simulator.hellos[-1], Unsubscribe), timeout=10,
               message="the server never received the unsubscribe")
    assert simulator.hellos[-1].assets == ("BTC/EUR",)
    (cid,) = simulator.ledger
    applied = len(simulator.ledger[cid])  # the unsubscribe is in effect from here on (Simulator.hellos)
    wait_until(lambda: len(simulator.ledger[cid]) > applied + 30, timeout=20)
    after = simulator.ledger[cid][applied:]
    assert [e for e in after if e[0] == "BTC/EUR"] == [], "the server kept sending BTC/EUR"
    assert {e[0] for e in after} == {"BTC/USD", "ETH/USD", "SOL/USD"}
    assert rates.pairs == ("BTC/USD", "ETH/USD", "SOL/USD")


def test_reconnect_after_drop_resubscribes(rates: cr.Collector, simulator: Simulator) -> None:
    """A dropped connection is reconnected, the current scope replayed in one hello, and counted."""
    rates.wait(timeout=20)
    rates.subscribe("SOL/USD")
    simulator.drop_connections()
    wait_until(lambda: simulator.total_connections >= 2 and rates.status.state == "connected", timeout=20)
    wait_until(lambda: rates.status.reconnects >= 1, timeout=10)
    # the server may process the new hello a moment after the client reports "connected"
    want = {*PAIRS, "SOL/USD"}
    wait_until(lambda: isinstance(simulator.hellos[-1], Hello) and set(simulator.hellos[-1].assets or ()) == want,
               timeout=10, message="the reconnect hello did not carry the whole current scope")
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 10, timeout=20, message="no data after reconnect")
    gaps = rates.gaps
    assert set(gaps["pair"]) >= set(PAIRS) and (gaps["duration"] > pd.Timedelta(0)).all()


def test_reconnect_notice_switches_before_deadline(rates: cr.Collector, simulator: Simulator) -> None:
    """On a server reconnect notice a new connection opens before the deadline, with no duplicates."""
    rates.wait(timeout=20)
    simulator.request_reconnect(within_seconds=3.0)
    wait_until(lambda: simulator.total_connections >= 2, timeout=3.0, message="no new connection before deadline")
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 20, timeout=20)
    df = rates.df
    for _, group in df.groupby("pair", observed=True):
        assert group.index.is_monotonic_increasing and not group.index.duplicated().any()


def test_stale_stream_replaced(simulator: Simulator) -> None:
    """A stream that goes silent (no data, no heartbeats) is marked stale and replaced."""
    with cr.stream(["BTC/USD"], url=simulator.url, stale_after=1.0) as rates:
        rates.wait(timeout=20)
        simulator.stall(True)
        wait_until(lambda: rates.status.reconnects >= 1, timeout=20, message="stall not detected")
        simulator.stall(False)
        n = rates.status.rates
        wait_until(lambda: rates.status.rates > n, timeout=20)
        assert rates.status.state == "connected"


def test_wrong_key_is_fatal_and_clear(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong key ends the stream with a clear error, no reconnect storm, and no key in any text."""
    marker = "MARKER-WRONG-KEY-93b1"
    with Simulator(port=0, seed=2, api_key="the-right-key") as sim, caplog.at_level(logging.DEBUG):
        rates = cr.stream(["BTC/USD"], url=sim.url, api_key=marker)
        try:
            wait_until(lambda: rates.status.state == "error", timeout=20)
            status = rates.status
            assert "Invalid API key" in (status.last_error or "")
            assert sim.total_connections == 1
            with pytest.raises(cr.CollectorError, match="Invalid API key"):
                rates.wait(timeout=5)
            texts = [repr(rates), str(status), repr(status), caplog.text, rates._repr_html_()]
            assert all(marker not in t for t in texts)
        finally:
            rates.stop()


def test_right_key_in_header_streams() -> None:
    """With the right key the simulator accepts the connection and data flows."""
    with Simulator(port=0, seed=2, api_key="the-right-key") as sim:
        with cr.stream(["BTC/USD"], url=sim.url, api_key="the-right-key") as rates:
            rates.wait(timeout=20, rows=2)
            assert "the-right-key" not in repr(rates)


def test_server_error_reconnects(rates: cr.Collector, simulator: Simulator) -> None:
    """A non-auth server error (buffer overflow) is reported and the collector recovers."""
    rates.wait(timeout=20)
    simulator.send_error("Reached maximum allowed buffered messages for this connection.")
    wait_until(lambda: rates.status.server_errors >= 1, timeout=20)
    wait_until(lambda: rates.status.state == "connected" and simulator.total_connections >= 2, timeout=20)
    assert "buffered messages" in (rates.status.last_error or "")


def test_bad_frames_counted_not_fatal(rates: cr.Collector, simulator: Simulator) -> None:
    """Malformed, binary and wrong-shape frames are counted by kind; the stream continues."""
    rates.wait(timeout=20)
    simulator.inject("{not json")
    simulator.inject(b"\x00\x01binary")
    simulator.inject('{"type":"exrate","asset_id_base":"BTC","asset_id_quote":"USD","time":"x","rate":1}')
    simulator.inject('{"type":"asset","asset_id":"BTC"}')
    wait_until(lambda: sum(rates.status.rejected.values()) >= 3 and rates.status.unknown >= 1, timeout=20)
    rejected = rates.status.rejected
    assert rejected.get("malformed_json") == 1 and rejected.get("binary_frame") == 1 and rejected.get("bad_time") == 1
    n = rates.status.rates
    wait_until(lambda: rates.status.rates > n + 5, timeout=20)
    assert rates.running


def test_stop_is_idempotent_and_leaves_nothing(simulator: Simulator) -> None:
    """stop() twice is fine; no collector thread survives it."""
    before = len(collector_threads())
    rates = cr.stream(["BTC/USD"], url=simulator.url)
    rates.wait(timeout=20)
    rates.stop()
    rates.stop()
    assert len(collector_threads()) == before
    assert rates.status.state == "stopped" and "stopped" in repr(rates)


def test_same_arguments_reuse_running_collector(simulator: Simulator) -> None:
    """Calling stream() again with the same arguments returns the running collector (no leak)."""
    a = cr.stream(["BTC/USD"], url=simulator.url)
    try:
        b = cr.stream(["BTC/USD"], url=simulator.url)
        assert a is b
    finally:
        a.stop()


def test_embedded_simulator_fallback() -> None:
    """With no key and no URL the collector starts its own simulator and says SIMULATED."""
    with cr.stream(["BTC/USD", "ETH/USD"]) as rates:
        rates.wait(timeout=20)
        assert rates.status.simulated and "SIMULATED" in repr(rates) and "SIMULATED DATA" in rates._repr_html_()
        assert rates.simulator is not None
    assert rates.simulator is None
