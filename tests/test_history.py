"""cr.history(): the DataFrame, the credit estimate, the simulator fallback, progress, and the bars store."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from coinrates_nb import historical as history_module
from coinrates_nb.exceptions import AuthenticationError, ConfigError, RecordingError
from coinrates_nb.frame import RollingFrame
from coinrates_nb.historical import FIELDS, HistoryEstimate, estimate, history
from coinrates_nb.sim import Simulator
from coinrates_nb.times import parse_time
from tests.helpers import put

MakeSim = Callable[..., Simulator]
NS = 1_000_000_000
MINUTE = 60 * NS


def minutes_ago(n: int) -> pd.Timestamp:
    """A whole minute ``n`` minutes before now (UTC)."""
    return pd.Timestamp.now(tz="UTC").floor("1min") - pd.Timedelta(minutes=n)


def sim_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("coinrates-simulator", "coinrates-rest"))}


# --------------------------------------------------------------------------- shape


def test_one_pair_gives_flat_columns_like_ohlc_of_a_pair(simulator: Simulator) -> None:
    """One pair as a string: UTC index ``time`` per period, flat open/high/low/close, sane bars."""
    df = history("BTC/USD", minutes_ago(30), minutes_ago(10), url=simulator.rest_url, progress=False)
    assert list(df.columns) == list(FIELDS) and df.index.name == "time" and str(df.index.tz) == "UTC"
    assert len(df) == 20 and (df.index[1:] - df.index[:-1] == pd.Timedelta("1min")).all()
    assert df.index[0] == minutes_ago(30)
    assert (df["low"] <= df[["open", "close"]].min(axis=1)).all() and (df["high"] >= df[["open", "close"]].max(axis=1)).all()


def test_several_pairs_give_the_ohlc_multiindex(simulator: Simulator) -> None:
    """A list of pairs: columns (pair, field) named like rates.ohlc()'s, pairs in the order given."""
    df = history(["ETH/USD", "BTC/EUR"], minutes_ago(5), url=simulator.rest_url, progress=False)
    frame = RollingFrame(max_rows=10)
    put(frame, time.time_ns(), "BTC/USD", 1.0)
    reference = frame.ohlc("1min")
    assert df.columns.names == reference.columns.names == ["pair", "field"]
    assert list(df.columns.get_level_values("pair").unique()) == ["ETH/USD", "BTC/EUR"]
    assert set(df.columns.get_level_values("field")) == set(reference.columns.get_level_values("field")) == set(FIELDS)
    assert df.index.name == reference.index.name and str(df.index.tz) == str(reference.index.tz)
    assert 5 <= len(df) <= 6 and df.notna().all().all()  # the current, partial minute is included


def test_values_are_the_simulators_bars(simulator: Simulator) -> None:
    """The frame holds exactly the bars the REST API serves (checked against a raw client call)."""
    from coinrates_nb.rest import SyncRestClient

    start, end = minutes_ago(50), minutes_ago(40)
    df = history("SOL/USD", start, end, "1MIN", url=simulator.url, progress=False)  # a ws:// URL works too
    with SyncRestClient(simulator.rest_url) as c:
        bars = c.history("SOL", "USD", "1MIN", start.value, end.value)
    np.testing.assert_array_equal(df["open"].to_numpy(), bars.open)
    np.testing.assert_array_equal(df["close"].to_numpy(), bars.close)


def test_empty_periods_are_nan(make_simulator: MakeSim) -> None:
    """A pair without data (550) is all NaN beside the others; alone it gives an empty frame."""
    sim = make_simulator()
    df = history(["BTC/USD", "FOO/USD"], minutes_ago(3), url=sim.rest_url, progress=False)
    assert df["FOO/USD"].isna().all().all() and df["BTC/USD"].notna().all().all()
    alone = history("FOO/USD", minutes_ago(3), url=sim.rest_url, progress=False)
    assert alone.empty and list(alone.columns) == list(FIELDS)


# --------------------------------------------------------------------------- the simulator fallback and the key


def test_without_key_or_url_uses_an_embedded_simulator_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """No key and no URL: an embedded simulator serves it, the frame says simulated, nothing is left running."""
    caplog.set_level(logging.INFO, logger="coinrates_nb")
    before = sim_threads()
    df = history("BTC/USD", minutes_ago(10), progress=False)
    assert df.attrs["source"] == "simulated" and len(df) >= 10
    assert df.attrs["requests"] == 1 and df.attrs["credits"] == 1 and df.attrs["rates"] == len(df)
    assert "SIMULATED" in caplog.text
    assert sim_threads() - before == set()


def test_a_url_to_a_simulator_is_labelled_simulated(simulator: Simulator) -> None:
    """Through a URL, the simulator's response header labels the data simulated."""
    df = history("BTC/USD", minutes_ago(3), url=simulator.rest_url, progress=False)
    assert df.attrs["source"] == "simulated"


def test_keyed_simulator_needs_the_key(make_simulator: MakeSim) -> None:
    """The key (argument or COINAPI_KEY) is sent; a wrong one is an AuthenticationError."""
    sim = make_simulator(api_key="right-key")
    assert len(history("BTC/USD", minutes_ago(3), url=sim.rest_url, api_key="right-key", progress=False)) >= 3
    with pytest.raises(AuthenticationError):
        history("BTC/USD", minutes_ago(3), url=sim.rest_url, api_key="wrong", progress=False)
    os.environ["COINAPI_KEY"] = "right-key"  # the autouse fixture removes it again
    assert len(history("BTC/USD", minutes_ago(3), url=sim.rest_url, progress=False)) >= 3


def test_key_never_over_plain_http_to_a_remote_host() -> None:
    """A key with an http:// URL to a host that is not loopback is refused before anything is sent."""
    with pytest.raises(ConfigError, match="unencrypted"):
        history("BTC/USD", minutes_ago(3), url="http://example.com", api_key="k", progress=False)


def test_a_key_means_coinapi_and_estimate_only_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """With COINAPI_KEY, estimate_only works out the cost without any request (no network here)."""
    monkeypatch.setenv("COINAPI_KEY", "some-key")

    def boom(*_: Any, **__: Any) -> None:
        raise AssertionError("no client may be made for an estimate")

    monkeypatch.setattr(history_module, "_client", boom)
    guess = history(["BTC/USD", "ETH/USD"], "2026-01-01", "2026-01-02", "1SEC", estimate_only=True)
    assert isinstance(guess, HistoryEstimate) and guess.bars == 2 * 86_400


# --------------------------------------------------------------------------- the estimate


def test_estimate_counts_pages_and_credits() -> None:
    """Credits are ceil(items/100) per page of up to 100,000 bars; requests count pages."""
    day = estimate(["BTC/USD", "ETH/USD", "SOL/USD"], "2026-01-01", "2026-01-02", "1SEC")
    assert (day.bars, day.requests, day.credits) == (3 * 86_400, 3, 3 * 864)
    week = estimate("BTC/USD", "2026-01-01", "2026-01-08", "1SEC")
    assert (week.bars, week.requests, week.credits) == (604_800, 7, 6 * 1000 + 48)
    small = estimate("BTC/USD", "2026-01-01 00:00:30", "2026-01-01 00:02:10", "1MIN")
    assert (small.bars, small.requests, small.credits) == (3, 1, 1)  # 00:00, 00:01, 00:02 overlap the range
    assert small.start == pd.Timestamp("2026-01-01", tz="UTC")
    assert "credits" in str(day) and "3 pair(s)" in str(day)


def test_estimate_stops_at_the_current_period() -> None:
    """Periods that have not started are not counted."""
    now = pd.Timestamp("2026-06-01 12:00:30", tz="UTC")
    guess = estimate("BTC/USD", "2026-06-01 11:58", "2026-06-01 13:00", "1MIN", now=now)
    assert guess.bars == 3  # 11:58, 11:59, 12:00 (the current one)


def test_estimate_is_what_the_fetch_spends(simulator: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    """The logged estimate comes before the first request and equals the requests and credits spent."""
    caplog.set_level(logging.INFO, logger="coinrates_nb.historical")
    start = pd.Timestamp.now(tz="UTC").floor("1s") - pd.Timedelta("3h")
    end = start + pd.Timedelta(seconds=250_000 // 3)
    df = history(["BTC/USD", "ETH/USD", "EUR/USD"], start, end, "1SEC", url=simulator.rest_url, progress=False)
    guess = df.attrs["estimate"]
    assert (df.attrs["requests"], df.attrs["credits"]) == (guess.requests, guess.credits)
    assert df.attrs["credits"] == simulator.rest.credits and df.attrs["requests"] == simulator.rest.requests
    logged = next(r for r in caplog.records if r.getMessage().startswith("history: ~"))
    assert logged.created * 1e9 < simulator.rest.ledger[0].time_ns


def test_estimate_only_sends_nothing(simulator: Simulator) -> None:
    """estimate_only=True returns the estimate and the server sees no request."""
    guess = history("BTC/USD", minutes_ago(60), url=simulator.rest_url, estimate_only=True)
    assert isinstance(guess, HistoryEstimate) and guess.bars in (60, 61) and simulator.rest.requests == 0


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("kwargs, match", [
    ({"pairs": "BTCUSD"}, "did you mean 'BTC/USD'"),
    ({"pairs": "BTC"}, "pairs"),
    ({"pairs": []}, "no pairs"),
    ({"period": "1WEEK"}, "periods"),
    ({"start": 1732438800}, "start"),
    ({"start": "2199-01-01"}, "future"),
    ({"end": "2000-01-01"}, "after start"),
])
def test_bad_inputs_are_config_errors(simulator: Simulator, kwargs: dict[str, Any], match: str) -> None:
    """Pairs, periods and times go through the package's input rules; nothing is sent."""
    call: dict[str, Any] = {"pairs": "BTC/USD", "start": minutes_ago(5), "url": simulator.rest_url, "progress": False,
                            **kwargs}
    with pytest.raises(ConfigError, match=match):
        history(call.pop("pairs"), call.pop("start"), **call)
    assert simulator.rest.requests == 0


def test_period_aliases(simulator: Simulator) -> None:
    """A pandas span of a period's length names it: '1h' is 1HRS."""
    df = history("BTC/USD", minutes_ago(240), period="1h", url=simulator.rest_url, progress=False)
    assert df.attrs["period"] == "1HRS" and (df.index[1:] - df.index[:-1] == pd.Timedelta("1h")).all()


# --------------------------------------------------------------------------- progress


def test_progress_bar_for_long_fetches(simulator: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch of >= 10,000 bars shows a progress bar that reaches the number of bars; small ones show none."""
    bars: list[Any] = []

    class Bar:
        def __init__(self, total: int, period: str) -> None:
            self.total, self.n, self.closed = total, 0, False
            bars.append(self)

        def update(self, k: int) -> None:
            self.n += k

        def close(self) -> None:
            self.closed = True

    monkeypatch.setattr(history_module, "_progress", Bar)
    start = pd.Timestamp.now(tz="UTC").floor("1s") - pd.Timedelta("5h")
    df = history(["BTC/USD", "ETH/USD"], start, start + pd.Timedelta(seconds=6000), "1SEC", url=simulator.rest_url)
    assert len(bars) == 1 and bars[0].closed and bars[0].n == bars[0].total == 12_000 == df.notna().all(axis=1).sum() * 2
    history("BTC/USD", minutes_ago(5), url=simulator.rest_url)
    assert len(bars) == 1


# --------------------------------------------------------------------------- the bars store


def test_store_means_nobody_pays_twice(simulator: Simulator, tmp_path: Path) -> None:
    """A second call for stored bars sends no history request; the bars read back are the same."""
    store = tmp_path / "bars"
    start, end = minutes_ago(120), minutes_ago(60)
    first = history(["BTC/USD", "ETH/USD"], start, end, url=simulator.rest_url, store=store, progress=False)
    paid = simulator.rest.credits
    history_requests = sum(1 for r in simulator.rest.ledger if r.path.endswith("/history"))
    again = history(["BTC/USD", "ETH/USD"], start, end, url=simulator.rest_url, store=store, progress=False)
    pd.testing.assert_frame_equal(first, again)
    assert sum(1 for r in simulator.rest.ledger if r.path.endswith("/history")) == history_requests == 2
    assert simulator.rest.credits == paid and again.attrs["credits"] == 0
    assert again.attrs["estimate"].cached_bars == 120 and again.attrs["estimate"].bars == 0


def test_store_fetches_only_what_is_missing(simulator: Simulator, tmp_path: Path) -> None:
    """A wider range fetches only the periods on either side of what is stored."""
    store = tmp_path / "bars"
    history("BTC/USD", minutes_ago(100), minutes_ago(80), url=simulator.rest_url, store=store, progress=False)
    n = simulator.rest.requests
    wide = history("BTC/USD", minutes_ago(110), minutes_ago(70), url=simulator.rest_url, store=store, progress=False)
    asked = [(parse_time(r.params["time_start"]), parse_time(r.params["time_end"])) for r in simulator.rest.ledger[n:]]
    assert sorted(asked) == [(minutes_ago(110).value, minutes_ago(100).value), (minutes_ago(80).value, minutes_ago(70).value)]
    assert len(wide) == 40 and wide.notna().all().all()
    assert wide.attrs["estimate"].cached_bars == 20 and wide.attrs["estimate"].bars == 20


def test_store_layout_is_hive_parquet_duckdb_reads(simulator: Simulator, tmp_path: Path) -> None:
    """period=/date= folders of part files, no temporaries left, readable with hive partitioning."""
    store = tmp_path / "bars"
    df = history(["BTC/USD", "ETH/USD"], minutes_ago(30), minutes_ago(20), url=simulator.rest_url, store=store,
                 progress=False)
    files = sorted(store.rglob("*.parquet"))
    assert files and all(f.parent.name.startswith("date=") and f.parent.parent.name == "period=1MIN" for f in files)
    assert all(f.name.startswith("part-") for f in files) and not list(store.rglob("*.tmp"))
    table = ds.dataset(str(store), format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 20 and set(table.column("pair").to_pylist()) == {"BTC/USD", "ETH/USD"}
    assert set(table.column("source").to_pylist()) == {"simulated"}
    import duckdb

    rows = duckdb.sql(f"SELECT count(*), min(period) FROM read_parquet('{store}/**/*.parquet', hive_partitioning=true) "
                      "WHERE pair = 'BTC/USD'").fetchall()
    assert rows == [(10, "1MIN")]
    assert float(table.filter(ds.field("pair") == "BTC/USD").column("close")[0].as_py()) == df[("BTC/USD", "close")].iloc[0]


def test_store_keeps_sources_apart(simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated bars in the store never stand in for live ones."""
    store = tmp_path / "bars"
    history("BTC/USD", minutes_ago(30), minutes_ago(20), url=simulator.rest_url, store=store, progress=False)
    store_ = history_module.BarStore(store)
    start, end = minutes_ago(30).value, minutes_ago(20).value
    assert store_.covered("BTC/USD", "1MIN", "simulated", start, end) == [(start, end)]
    assert store_.covered("BTC/USD", "1MIN", "live", start, end) == []


def test_store_refuses_a_rate_recording(tmp_path: Path) -> None:
    """Pointing store= at a rates dataset (date= folders) is a RecordingError naming a better folder."""
    (tmp_path / "rates" / "date=2026-01-01").mkdir(parents=True)
    with pytest.raises(RecordingError, match="folder of their own"):
        history("BTC/USD", minutes_ago(5), store=tmp_path / "rates", progress=False)


def test_store_never_keeps_the_current_period(simulator: Simulator, tmp_path: Path) -> None:
    """The period still running is fetched every time and never written."""
    store = tmp_path / "bars"
    history("BTC/USD", minutes_ago(3), url=simulator.rest_url, store=store, progress=False)
    table = ds.dataset(str(store), format="parquet", partitioning="hive").to_table()
    newest = max(table.column("time").to_pylist())
    assert pd.Timestamp(newest) < pd.Timestamp.now(tz="UTC").floor("1min")
    n = simulator.rest.requests
    df = history("BTC/USD", minutes_ago(3), url=simulator.rest_url, store=store, progress=False)
    assert simulator.rest.requests - n >= 1 and df.index[-1] >= pd.Timestamp.now(tz="UTC").floor("1min") - pd.Timedelta("1min")
