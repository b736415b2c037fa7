"""Replay: timing, determinism, batches to listeners, scope, the start flag, SIMULATED labelling, and stop()."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coinrates_nb as cr
from coinrates_nb.batch import RateBatch
from coinrates_nb.collector import each
from coinrates_nb.exceptions import WaitTimeoutError
from coinrates_nb.messages import ExchangeRate
from coinrates_nb.store import Replay
from tests.helpers import SLOW, wait_until
from tests.test_store_recorder import SEC, T0, FakeSource, make_updates, published, record_rows


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset path inside the test's temporary directory."""
    return tmp_path / "rates"


@pytest.fixture
def replays() -> Iterator[list[Replay]]:
    """Replays created by a test, stopped afterwards."""
    made: list[Replay] = []
    yield made
    for r in made:
        r.stop()


def paced_dataset(path: Path, seconds: float = 10.0, n: int = 101, label: str = "simulated") -> list[int]:
    """Record ``n`` updates with irregular receive gaps spanning ``seconds``; return the receive times."""
    rng = np.random.default_rng(7)
    gaps = rng.uniform(0.2, 1.8, n - 1)
    offsets = np.concatenate([[0.0], np.cumsum(gaps / gaps.sum() * seconds)])
    received = [T0 - 3600 * SEC + int(o * SEC) for o in offsets]
    pairs = ("BTC/USD", "EUR/USD", "BTC/EUR")
    updates = []
    for i, r in enumerate(received):
        base, quote = pairs[i % 3].split("/")
        updates.append((ExchangeRate(base, quote, "BASE_ALL_CROSSES_TO_REF", r - 2_000_100, 1.0 + i), r))
    record_rows(path, updates, label=label)
    return received


def test_replay_at_10x_keeps_recorded_timing(dataset: Path, replays: list[Replay]) -> None:
    """At speed 10, 10 s of recording plays in ~1 s and each update keeps its scaled offset."""
    received = paced_dataset(dataset, seconds=10.0)
    player = cr.replay(dataset, speed=10, progress=False, start=False)
    replays.append(player)
    arrivals: list[tuple[int, int]] = []
    player.add_listener(lambda batch, rns: arrivals.append((rns, time.perf_counter_ns())))
    player.start()
    player.join(timeout=20 * SLOW)
    assert [r for r, _ in arrivals] == received
    wall = np.array([w for _, w in arrivals], dtype=np.int64)
    expected = (np.array(received) - received[0]) / 10
    error_ms = ((wall - wall[0]) - expected) / 1e6
    span_s = (wall[-1] - wall[0]) / 1e9
    assert 0.99 <= span_s <= 1.0 + 0.35 * SLOW, span_s
    assert error_ms.min() >= -10, "played ahead of schedule"
    assert np.median(np.abs(error_ms)) < 25 * SLOW, error_ms
    assert player.status.rates == len(received)


def test_replay_is_deterministic_and_matches_load(dataset: Path, replays: list[Replay]) -> None:
    """The same recording gives the same frame at any speed, equal to load() in arrival order."""
    paced_dataset(dataset, seconds=2.0)
    fast = cr.replay(dataset, speed=None, progress=False)
    again = cr.replay(dataset, speed=None, progress=False)
    paced = cr.replay(dataset, speed=20, progress=False)
    replays.extend([fast, again, paced])
    for player in (fast, again, paced):
        player.join(timeout=20 * SLOW)
    pd.testing.assert_frame_equal(fast.df, again.df)
    pd.testing.assert_frame_equal(fast.df, paced.df)
    loaded = cr.load(dataset).drop(columns="source").sort_values("received_at", kind="stable")
    pd.testing.assert_frame_equal(fast.df, loaded, check_categorical=False)
    pd.testing.assert_frame_equal(fast.latest(), paced.latest())


def test_listeners_get_one_batch_per_receive_time(dataset: Path, replays: list[Replay]) -> None:
    """Rows the collector stored together (one receive time) reach listeners as one RateBatch, in order."""
    source = FakeSource()
    rec = cr.record(source, dataset)
    rows = [u for u, _ in make_updates(9, start_ns=T0 - 3600 * SEC)]
    source.emit_batch(rows[:4], T0 - 3000 * SEC)
    source.emit_batch(rows[4:5], T0 - 2999 * SEC)
    source.emit_batch(rows[5:], T0 - 2998 * SEC)
    rec.stop()
    player = cr.replay(dataset, speed=None, progress=False, start=False)
    replays.append(player)
    batches: list[tuple[RateBatch, int]] = []
    updates: list[ExchangeRate] = []
    player.add_listener(lambda batch, rns: batches.append((batch, rns)))
    player.add_listener(each(lambda update, rns: updates.append(update)))
    player.start().join(timeout=20 * SLOW)
    assert [(len(b), r) for b, r in batches] == [(4, T0 - 3000 * SEC), (1, T0 - 2999 * SEC), (4, T0 - 2998 * SEC)]
    assert all(isinstance(b, RateBatch) for b, _ in batches)
    assert updates == rows  # pair, rate type, wire time and rate survive the round trip
    assert len(player.frame) == 9 and player.frame.counts() == {"BTC/USD": 3, "ETH/USD": 3, "EUR/USD": 3}


def test_replay_scope_filters_pairs(dataset: Path, replays: list[Replay]) -> None:
    """unsubscribe/subscribe on a replay filter which pairs reach the frame."""
    paced_dataset(dataset, seconds=1.0)
    player = cr.replay(dataset, speed=None, progress=False, start=False)
    replays.append(player)
    assert set(player.pairs or ()) == {"BTC/USD", "EUR/USD", "BTC/EUR"}
    player.unsubscribe("BTC/EUR").unsubscribe("EUR/USD")
    assert player.pairs == ("BTC/USD",)
    player.subscribe("eur")  # an asset id: every pair with EUR
    player.start().join(timeout=20 * SLOW)
    assert player.frame.counts() == {"BTC/USD": 34, "EUR/USD": 34, "BTC/EUR": 33}
    only = cr.replay(dataset, speed=None, progress=False, pairs=["BTC/USD"])
    replays.append(only)
    only.join(timeout=20 * SLOW)
    assert set(only.df["pair"]) == {"BTC/USD"} and only.status.rates == len(only.df) == 34
    with pytest.raises(cr.ConfigError, match="did you mean 'BTC/USD'"):
        only.subscribe("BTC-USD")


def test_replay_quacks_like_a_collector(dataset: Path, replays: list[Replay]) -> None:
    """A replay stops, resumes, and offers df/latest/wide/ohlc/status/gaps/repr like a collector."""
    received = paced_dataset(dataset, seconds=4.0)
    with cr.replay(dataset, speed=2, progress=False) as player:  # ~2 s of playback: stop() lands mid-way
        replays.append(player)
        wait_until(lambda: player.status.messages >= 5, timeout=10)
        player.stop()
        paused_at = player.status.messages
        assert not player.running and not player.done.is_set() and paused_at < len(received)
        assert player.status.messages == paused_at  # nothing plays while stopped
        player.start().join(timeout=20 * SLOW)
        assert "done" in repr(player) and "SIMULATED" in repr(player)
        assert player.status.messages == len(received) and len(player.frame) == len(received)
        latest = player.latest()
        assert set(latest.index) == {"BTC/USD", "EUR/USD", "BTC/EUR"} and (latest["age"] >= pd.Timedelta(0)).all()
        assert set(player.wide().columns) == set(latest.index)
        assert len(player.ohlc("1s", pair="BTC/USD")) == 5
        assert list(player.gaps.columns) == ["pair", "start", "end", "reason", "duration"]
        assert player.status.state == "stopped"
        player.wait(rows=10, pairs=["BTC/USD"])
        with pytest.raises(cr.RecordingError, match="ended"):
            player.wait(rows=10_000, timeout=5)
        player.restart().join(timeout=20 * SLOW)
        assert len(player.frame) == len(received)


def test_replay_progress_bar_and_empty(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finite replay shows a tqdm bar to completion; an empty dataset is done at once."""
    paced_dataset(dataset, seconds=1.0, n=20)
    cr.replay(dataset, speed=None).join(timeout=20 * SLOW)
    assert "20/20" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    empty = cr.replay(tmp_path / "empty", speed=None, progress=False)
    assert empty.done.is_set() and len(empty.df) == 0 and empty.status.source == "replay"
    with pytest.raises(cr.ConfigError, match="speed"):
        cr.replay(dataset, speed=0)


def test_start_flag_and_time_range(dataset: Path, replays: list[Replay]) -> None:
    """start= is the start-now flag (as in cr.stream); since/until pick the wire-time range, naive meaning UTC."""
    received = paced_dataset(dataset, seconds=2.0, n=20)
    idle = cr.replay(dataset, speed=None, progress=False, start=False)
    replays.append(idle)
    assert not idle.running and idle.status.state == "idle" and len(idle.frame) == 0
    with pytest.raises(WaitTimeoutError, match="not finished"):
        idle.join(timeout=0.01)
    with pytest.raises(WaitTimeoutError, match=r"no data for \['BTC/USD'\]"):
        idle.wait(timeout=0.05, pairs=["BTC/USD"])
    direct = Replay(dataset, speed=None, progress=False)  # the class starts by default too
    replays.append(direct)
    direct.join(timeout=20 * SLOW)
    assert len(direct.frame) == 20
    with pytest.raises(cr.ConfigError, match="since="):
        cr.replay(dataset, start="2026-11-30")  # type: ignore[arg-type]
    wire = cr.load(dataset).index
    since = wire[5].tz_convert(None)  # naive: UTC
    part = cr.replay(dataset, speed=None, progress=False, since=since, until=wire[15])
    replays.append(part)
    part.join(timeout=20 * SLOW)
    assert part.df.index.equals(wire[5:15]) and len(received) == 20
    frame = cr.load(dataset)
    from_frame = cr.replay(frame, speed=None, progress=False, since=since, until=wire[15], pairs="BTC")
    replays.append(from_frame)
    from_frame.join(timeout=20 * SLOW)
    assert set(from_frame.df["pair"]) == {"BTC/USD", "BTC/EUR"} and len(from_frame.df) == 7
    with pytest.raises(cr.ConfigError, match="until"):
        cr.replay(dataset, until="soon")


def test_simulated_recordings_replay_as_simulated(tmp_path: Path, replays: list[Replay]) -> None:
    """status.source is "simulated" when every recorded row is simulated (SIMULATED badge), else "replay"."""
    paced_dataset(tmp_path / "sim", seconds=1.0, n=6)
    paced_dataset(tmp_path / "live", seconds=1.0, n=6, label="live")
    sim = cr.replay(tmp_path / "sim", speed=None, progress=False)
    live = cr.replay(tmp_path / "live", speed=None, progress=False)
    mixed = cr.replay(pd.concat([cr.load(tmp_path / "sim"), cr.load(tmp_path / "live")]), speed=None, progress=False)
    replays.extend([sim, live, mixed])
    assert (sim.status.source, sim.status.simulated, sim.simulated) == ("simulated", True, True)
    assert (live.status.source, live.status.simulated) == ("replay", False)
    assert (mixed.status.source, mixed.sources) == ("replay", ("live", "simulated"))
    assert "SIMULATED DATA" in sim._repr_html_() and "SIMULATED DATA" not in live._repr_html_()
    assert sim.status.url == str((tmp_path / "sim").absolute())


def test_replay_can_be_recorded(tmp_path: Path, dataset: Path, replays: list[Replay]) -> None:
    """A replay is a source too: recording it writes the played (filtered) rows, labelled by the replay's status."""
    paced_dataset(dataset, seconds=1.0)
    paced_dataset(tmp_path / "live", seconds=1.0, label="live")
    for source, label in ((dataset, "simulated"), (tmp_path / "live", "replay")):
        player = cr.replay(source, speed=None, progress=False, pairs=["BTC/USD"], start=False)
        replays.append(player)
        copy_path = tmp_path / f"copy-{label}"
        rec = player.record(copy_path)
        player.start().join(timeout=20 * SLOW)
        rec.stop()
        copy = pq.read_table(published(copy_path)[0])
        original = cr.load(source, pairs=["BTC/USD"])
        assert set(copy.column("source").to_pylist()) == {label}  # simulated data stays labelled simulated
        assert copy.column("time").cast(pa.int64()).to_pylist() == original.index.asi8.tolist()
        assert copy.column("rate").to_pylist() == original["rate"].tolist()


def test_stop_joins_outside_its_lock_and_is_idempotent(dataset: Path, replays: list[Replay]) -> None:
    """While stop() waits for a busy listener, the replay's lock is free and status answers; stop() twice is fine."""
    paced_dataset(dataset, seconds=1.0, n=10)
    entered, release = threading.Event(), threading.Event()

    def busy(batch: RateBatch, received_ns: int) -> None:
        entered.set()
        release.wait(30)

    player = cr.replay(dataset, speed=1, progress=False, start=False)  # one row per step: stop() lands mid-way
    replays.append(player)
    player.add_listener(busy)
    player.start()
    assert entered.wait(10 * SLOW)
    stopper = threading.Thread(target=player.stop)
    stopper.start()
    try:
        wait_until(lambda: player._stop.is_set(), timeout=10)
        assert player._lock.acquire(timeout=1), "stop() holds its lock while joining the thread"
        player._lock.release()
        assert player.status.state == "connected" and not player.running  # readable while stop() waits
    finally:
        release.set()
        stopper.join(10 * SLOW)
    assert not stopper.is_alive() and player.status.state == "stopped"
    player.stop()
    assert player.status.state == "stopped" and not player.done.is_set()
    player.start().join(timeout=20 * SLOW)  # resumes where it stopped: every row once
    assert len(player.frame) == 10


def test_a_replay_keeps_where_each_row_came_from(tmp_path: Path) -> None:
    """history/healed/stream rows keep their origin through record -> load -> replay (DuckDB reads the file too)."""
    duckdb = pytest.importorskip("duckdb")
    t0 = pd.Timestamp("2026-01-05 12:00", tz="UTC")
    origins = ["history", "history", "stream", "healed", "stream", "stream"]
    frame = pd.DataFrame({
        "pair": ["BTC/USD"] * 6, "base": ["BTC"] * 6, "quote": ["USD"] * 6,
        "rate": [100.0, 101.0, 102.0, 103.0, 104.0, 105.0], "rate_type": ["UNSPECIFIED"] * 6,
        "received_at": [t0 + pd.Timedelta(seconds=i // 2) for i in range(6)], "source": ["simulated"] * 6,
        "origin": origins,
    }, index=pd.DatetimeIndex([t0 + pd.Timedelta(seconds=i) for i in range(6)], name="time"))
    for speed in (None, 20.0):  # all in one chunk, and paced: two rows at a time, from later positions
        seen: list[tuple[int, int]] = []
        replay = cr.replay(frame, speed=speed, start=False, progress=False)
        replay.add_listener(lambda batch, _received, seen=seen: seen.append((len(batch), batch.origin)))
        replay.start().join(timeout=10 * SLOW)
        assert replay.df["origin"].tolist() == origins and replay.df["rate"].tolist() == frame["rate"].tolist()
        assert seen == [(2, 1), (1, 0), (1, 2), (2, 0)]  # one batch per receive time and origin
    with pytest.raises(cr.ConfigError, match="origins"):
        cr.replay(frame.assign(origin="guessed"))
    again = cr.replay(frame, speed=None, start=False, progress=False)
    recorder = again.record(tmp_path / "rec")  # the replay recorded anew: the dataset, read by DuckDB, keeps them
    again.start().join(timeout=10)
    recorder.stop()
    got = duckdb.sql(f"select origin from read_parquet('{tmp_path / 'rec'}/**/*.parquet') order by rate").fetchall()
    assert [g[0] for g in got] == origins


def test_views_are_one_set_for_collectors_and_replays() -> None:
    """df and snapshot() are sorted and validate their inputs the same way on a replay and a collector."""
    t0 = pd.Timestamp("2026-01-05 12:00", tz="UTC")
    times = [t0 + pd.Timedelta(seconds=s) for s in (10, 11, 3, 4)]  # healed rows arrive after newer live ones
    frame = pd.DataFrame({"pair": ["BTC/USD"] * 4, "rate": [1.0, 2.0, 3.0, 4.0],
                          "received_at": [t0 + pd.Timedelta(seconds=20 + i) for i in range(4)]},
                         index=pd.DatetimeIndex(times, name="time"))
    replay = cr.replay(frame, speed=None, progress=False).join(timeout=10)
    assert replay.df["rate"].tolist() == [3.0, 4.0, 1.0, 2.0]
    assert replay.snapshot(pairs="btc/usd", since=t0 + pd.Timedelta(seconds=4))["rate"].tolist() == [4.0, 1.0, 2.0]
    collector = cr.stream(["BTC/USD"], start=False)
    for source in (replay, collector):
        with pytest.raises(cr.ConfigError):
            source.snapshot(since="not a time")
        with pytest.raises(cr.ConfigError):
            source.snapshot(pairs=["BTC/USD", 5])
