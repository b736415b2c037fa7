"""Recording to Parquet, loading history, crash safety, DuckDB interop, and replay timing/determinism."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coinrates_nb as cr
from coinrates_nb.messages import ExchangeRate
from coinrates_nb.sim.server import Simulator
from coinrates_nb.store import _all as recording
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
T0 = 1_796_083_199_000_000_000 + 1_234_000  # 2026-11-30 23:59:59.001234 UTC
"""One second before midnight, so batches straddle two date partitions; 100 ns digits non-zero."""
SEC = 1_000_000_000


class FakeSource:
    """A stand-in collector: keeps listeners and emits updates on the caller's thread."""

    def __init__(self, label: str = "simulated") -> None:
        self.listeners: list[Callable[[ExchangeRate, int], None]] = []
        self.status = SimpleNamespace(source=label)

    def add_listener(self, fn: Callable[[ExchangeRate, int], None]) -> Callable[[], None]:
        self.listeners.append(fn)
        return lambda: self.listeners.remove(fn)

    def emit(self, updates: list[tuple[ExchangeRate, int]]) -> None:
        for update, received in updates:
            for fn in list(self.listeners):
                fn(update, received)


def make_updates(n: int, start_ns: int = T0, step_ns: int = 100_000_000,
                 pairs: tuple[str, ...] = ("BTC/USD", "ETH/USD", "EUR/USD")) -> list[tuple[ExchangeRate, int]]:
    """``n`` updates cycling through ``pairs``, ``step_ns`` apart, received 1.5 ms after their wire time."""
    out = []
    for i in range(n):
        base, quote = pairs[i % len(pairs)].split("/")
        t = start_ns + i * step_ns + 300  # keep a 100 ns digit
        out.append((ExchangeRate(base, quote, "BASE_ALL_CROSSES_TO_REF", t, 100.0 + i * 0.25), t + 1_500_000))
    return out


def published(root: Path) -> list[Path]:
    """Files a reader may see: every non-hidden *.parquet under ``root``."""
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def run_child(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that has FakeSource/make_updates, from the repo root."""
    script = CHILD_PRELUDE + textwrap.dedent(code)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=env)


CHILD_PRELUDE = textwrap.dedent('''
    import os, sys
    from tests.test_recording import FakeSource, make_updates, T0
    import coinrates_nb as cr
    from coinrates_nb.store import _all as recording
''')


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset path inside the test's temporary directory."""
    return tmp_path / "rates"


def record_rows(path: Path, updates: list[tuple[ExchangeRate, int]], **options: Any) -> recording.Recorder:
    """Record ``updates`` from a fake source and stop (flushing)."""
    source = FakeSource()
    rec = cr.record(source, path, **options)
    source.emit(updates)
    rec.stop()
    return rec


# --------------------------------------------------------------------------- recording + load


def test_roundtrip_keeps_full_precision_and_columns(dataset: Path) -> None:
    """Recorded rows load back exactly: ns wire time, receive time, pair/base/quote, rate, type, source."""
    updates = make_updates(30)
    rec = record_rows(dataset, updates)
    assert rec.rows_written == 30 and rec.pending == 0
    df = cr.load(dataset)
    assert list(df.columns) == ["pair", "base", "quote", "rate", "rate_type", "received_at", "source"]
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "time" and str(df.index.dtype) == "datetime64[ns, UTC]"
    assert df.index.asi8.tolist() == [u.time_ns for u, _ in updates]
    assert (df.index.asi8 % 1000 == 300).all(), "sub-microsecond digits were lost"
    assert pd.DatetimeIndex(df["received_at"]).asi8.tolist() == [r for _, r in updates]
    assert df["pair"].astype(str).tolist() == [u.pair for u, _ in updates]
    assert df["rate"].tolist() == [u.rate for u, _ in updates]
    assert set(df["source"]) == {"simulated"} and set(df["base"]) == {"BTC", "ETH", "EUR"}
    schema = pq.read_schema(published(dataset)[0])
    assert schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("received_at").type == pa.timestamp("ns", tz="UTC")


def test_partitions_by_utc_date_and_load_prunes(dataset: Path) -> None:
    """Rows land in hive date=YYYY-MM-DD folders by wire time; start/end are a half-open range."""
    record_rows(dataset, make_updates(40, step_ns=SEC // 20))  # 2 s across midnight
    dirs = sorted(p.name for p in dataset.iterdir() if p.is_dir())
    assert dirs == ["date=2026-11-30", "date=2026-12-01"]
    midnight = pd.Timestamp("2026-12-01", tz="UTC")
    before, after = cr.load(dataset, end=midnight), cr.load(dataset, start=midnight)
    assert len(before) + len(after) == 40 and len(before) == 20
    assert (before.index < midnight).all() and (after.index >= midnight).all()
    assert len(cr.load(dataset, start="2026-12-02")) == 0


def test_load_filters_pairs_and_assets(dataset: Path) -> None:
    """pairs= takes BASE/QUOTE pairs and asset ids (any pair containing the asset)."""
    record_rows(dataset, make_updates(30))
    assert set(cr.load(dataset, pairs=["BTC/USD"])["pair"]) == {"BTC/USD"}
    assert set(cr.load(dataset, pairs="eth")["pair"]) == {"ETH/USD"}
    assert set(cr.load(dataset, pairs=["USD"])["pair"]) == {"BTC/USD", "ETH/USD", "EUR/USD"}
    assert len(cr.load(dataset, pairs=["SOL/USD"])) == 0


def test_load_errors_are_recording_errors(tmp_path: Path) -> None:
    """A missing dataset or a corrupt file raises RecordingError naming the problem."""
    with pytest.raises(cr.RecordingError, match="no recording"):
        cr.load(tmp_path / "nowhere")
    bad = tmp_path / "bad" / "date=2026-11-24"
    bad.mkdir(parents=True)
    (bad / "part-x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(cr.RecordingError, match="cannot read"):
        cr.load(tmp_path / "bad")


def test_writes_happen_off_the_source_thread_in_batches(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener only queues; the writer thread publishes, and only when a batch is due."""
    writers: list[str] = []
    real = recording._publish

    def spy(tmp: Path, final: Path) -> None:
        writers.append(threading.current_thread().name)
        real(tmp, final)

    monkeypatch.setattr(recording, "_publish", spy)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600, batch_rows=50)
    try:
        source.emit(make_updates(49))
        assert rec.pending == 49 and writers == [] and published(dataset) == []
        source.emit(make_updates(1, start_ns=T0 + 10 * SEC))  # the 50th row wakes the writer
        wait_until(lambda: rec.rows_written == 50, timeout=10, message="batch not written")
        assert writers and set(writers) == {"coinrates-recorder"}
    finally:
        rec.stop()
    assert len(cr.load(dataset)) == 50


def test_files_roll_and_are_named_per_writer(dataset: Path) -> None:
    """A file rolls at max_file_rows; names carry host-pid-uuid, and every file is complete."""
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600, max_file_rows=25)
    for i in range(4):  # 4 flushes of 10 rows, all on one date: 20 -> roll at 30, then 10
        source.emit(make_updates(10, start_ns=T0 - 3600 * SEC + i * SEC))
        rec.flush()
    rec.stop()
    files = published(dataset)
    assert len(files) == 2 and [pq.read_metadata(f).num_rows for f in files] == [30, 10]
    pattern = re.compile(rf"part-[A-Za-z0-9._-]+-{os.getpid()}-[0-9a-f]{{8}}-\d{{5}}\.parquet")
    assert all(pattern.fullmatch(f.name) for f in files), [f.name for f in files]
    assert {f.name.rsplit("-", 1)[0] for f in files} == {f"part-{rec.writer_id}"}
    assert len(cr.load(dataset)) == 40


def test_two_writers_share_one_dataset(dataset: Path) -> None:
    """Two recorders on one path never share a file; load sees the union, dedupe drops repeats."""
    a, b = FakeSource(), FakeSource()
    rec_a, rec_b = cr.record(a, dataset), cr.record(b, dataset)
    assert rec_a.writer_id != rec_b.writer_id
    updates = make_updates(20)
    a.emit(updates)
    b.emit(updates[:10])  # the same pair updates seen by both
    rec_a.stop()
    rec_b.stop()
    assert set(rec_a.files).isdisjoint(rec_b.files)
    assert len(cr.load(dataset)) == 30
    deduped = cr.load(dataset, dedupe=True)
    assert len(deduped) == 20 and deduped.index.is_monotonic_increasing


def test_duckdb_reads_the_dataset(dataset: Path) -> None:
    """DuckDB reads the hive-partitioned files directly, with the date column and ns timestamps."""
    duckdb = pytest.importorskip("duckdb")
    record_rows(dataset, make_updates(40, step_ns=SEC // 20))
    (dataset / "date=2026-12-01" / ".part-ghost-1-deadbeef-00009.parquet.tmp").write_bytes(b"half a file")
    rows = duckdb.sql(
        f"SELECT CAST(date AS VARCHAR) AS date, pair, count(*) AS n, max(epoch_ns(time)) AS last "
        f"FROM read_parquet('{dataset}/**/*.parquet', hive_partitioning=true) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert sum(r[2] for r in rows) == 40
    assert {r[0] for r in rows} == {"2026-11-30", "2026-12-01"}
    df = cr.load(dataset)
    assert max(r[3] for r in rows) == int(df.index.asi8.max())
    assert len(df) == 40  # the temporary is invisible to both readers


def test_atexit_flushes_an_unstopped_recorder(dataset: Path) -> None:
    """A recorder the user never stopped is flushed when the interpreter exits normally."""
    out = run_child(f'''
        source = FakeSource()
        rec = cr.record(source, {str(dataset)!r}, flush_interval=3600)
        source.emit(make_updates(123))
        print("queued", rec.pending)
    ''')
    assert out.returncode == 0, out.stderr
    assert "queued 123" in out.stdout
    assert len(cr.load(dataset)) == 123


def test_crash_between_temp_write_and_rename_loses_one_batch(dataset: Path) -> None:
    """A crash after a half-written temp file keeps every published batch and no reader sees the temp."""
    out = run_child(f'''
        real = recording._publish
        calls = 0
        def crash(tmp, final):
            global calls
            calls += 1
            if calls == 3:  # the third flush dies mid-write: half the temp file, no rename
                with open(tmp, "r+b") as fh:
                    fh.truncate(os.path.getsize(tmp) // 2)
                os._exit(9)
            real(tmp, final)
        recording._publish = crash
        source = FakeSource()
        rec = cr.record(source, {str(dataset)!r}, flush_interval=3600)
        for i in range(5):
            source.emit(make_updates(100, start_ns=T0 - 3600 * 10**9 + i * 10**10))
            print("flushing", i, flush=True)
            rec.flush()
    ''')
    assert out.returncode == 9, out.stderr
    temps = list(dataset.rglob(".part-*.tmp"))
    assert len(temps) == 1, "the crash left its temporary behind"
    files = published(dataset)
    assert len(files) == 1 and pq.read_metadata(files[0]).num_rows == 200
    df = cr.load(dataset)
    assert len(df) == 200  # batches 1-2 survive; batch 3 (the one in flight) is lost, nothing else
    pid = int(temps[0].name.split("-")[-3])
    if not recording._pid_alive(pid):  # a new recorder reclaims the dead writer's temporary
        source = FakeSource()
        rec = cr.record(source, dataset)
        assert not temps[0].exists()
        source.emit(make_updates(10, start_ns=T0 - 60 * SEC))
        rec.stop()
        assert len(cr.load(dataset)) == 210


def test_sigkill_mid_stream_loses_at_most_the_unflushed_batch(dataset: Path) -> None:
    """SIGKILL at an arbitrary moment leaves only readable files and loses at most the last batch."""
    batch = 500
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(f'''
            source = FakeSource()
            rec = cr.record(source, {str(dataset)!r}, flush_interval=3600, batch_rows=10**9)
            for i in range(10**6):
                source.emit(make_updates({batch}, start_ns=T0 - 7200 * 10**9 + i * {batch} * 10**8))
                print("fed", (i + 1) * {batch}, flush=True)
                rec.flush()
                print("flushed", (i + 1) * {batch}, flush=True)
        ''')],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.split())
            if line.startswith("flushed") and int(line.split()[1]) >= 6 * batch:
                proc.kill()  # lands while feeding, flushing or printing: any of them must be safe
                break
        rest, _ = proc.communicate(timeout=30)
        lines.extend(line.split() for line in rest.splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fed = max(int(n) for kind, n in lines if kind == "fed")
    flushed = max(int(n) for kind, n in lines if kind == "flushed")
    for file in published(dataset):
        pq.read_table(file)  # every visible file is complete
    loaded = len(cr.load(dataset))
    assert flushed <= loaded <= fed + batch
    assert loaded in (flushed, flushed + batch), (flushed, loaded, fed)


def test_recorded_files_never_contain_the_api_key(dataset: Path, make_simulator: Callable[..., Simulator]) -> None:
    """Recording a keyed stream: rows match the collector's, and no file or repr holds the key."""
    marker = "MARKER-KEY-4d1f9c2e7b"
    sim = make_simulator(seed=5, rate_hz=50, api_key=marker)
    with cr.stream(["BTC/USD", "ETH/USD"], url=sim.url, api_key=marker) as rates:
        rates.wait(timeout=20)
        rec = rates.record(dataset, flush_interval=0.1)
        wait_until(lambda: rec.rows_written >= 40, timeout=20, message="nothing recorded")
        rec.stop()
        frame = rates.df
    df = cr.load(dataset)
    assert set(df["source"]) == {"live"} and len(df) >= 40
    keys = ["time", "pair", "received_at"]
    recorded = df.reset_index()[keys].assign(pair=lambda d: d["pair"].astype(str))
    streamed = frame.reset_index()[keys].assign(pair=lambda d: d["pair"].astype(str))
    assert len(recorded.merge(streamed, on=keys)) == len(recorded), "recorded rows differ from the stream's"
    blobs = [p.read_bytes() for p in dataset.rglob("*") if p.is_file()]
    assert blobs and all(marker.encode() not in blob for blob in blobs)
    assert marker not in repr(rec)


def test_write_failure_raises_recording_error_and_retries(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed publish raises RecordingError from the OSError; the rows stay queued and the next flush writes them."""
    real = recording._publish
    failures = iter([OSError(28, "No space left on device")])

    def flaky(tmp: Path, final: Path) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real(tmp, final)

    monkeypatch.setattr(recording, "_publish", flaky)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600)
    source.emit(make_updates(25, start_ns=T0 - 3600 * SEC))  # one partition, so one file fails
    with pytest.raises(cr.RecordingError, match="No space left") as info:
        rec.flush()
    assert isinstance(info.value.__cause__, OSError) and rec.errors == 1 and rec.rows_written == 0
    source.emit(make_updates(5, start_ns=T0 + 10 * SEC))
    rec.stop()
    assert rec.rows_written == 30 and len(cr.load(dataset)) == 30
    assert "1 error" in repr(rec)


def test_recorder_rejects_bad_limits(dataset: Path) -> None:
    """Non-positive limits are a ConfigError."""
    with pytest.raises(cr.ConfigError, match="flush_interval"):
        cr.record(FakeSource(), dataset, flush_interval=0)


# --------------------------------------------------------------------------- replay


def paced_dataset(path: Path, seconds: float = 10.0, n: int = 101) -> list[int]:
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
    record_rows(path, updates)
    return received


@pytest.fixture
def replays() -> Iterator[list[recording.Replay]]:
    """Replays created by a test, stopped afterwards."""
    made: list[recording.Replay] = []
    yield made
    for r in made:
        r.stop()


def test_replay_at_10x_keeps_recorded_timing(dataset: Path, replays: list[recording.Replay]) -> None:
    """At speed 10, 10 s of recording plays in ~1 s and each update keeps its scaled offset."""
    received = paced_dataset(dataset, seconds=10.0)
    player = cr.replay(dataset, speed=10, progress=False, autostart=False)
    replays.append(player)
    arrivals: list[tuple[int, int]] = []
    player.add_listener(lambda update, rns: arrivals.append((rns, time.perf_counter_ns())))
    player.start()
    player.join(timeout=20)
    assert [r for r, _ in arrivals] == received
    wall = np.array([w for _, w in arrivals], dtype=np.int64)
    expected = (np.array(received) - received[0]) / 10
    error_ms = ((wall - wall[0]) - expected) / 1e6
    span_s = (wall[-1] - wall[0]) / 1e9
    assert 0.99 <= span_s <= 1.35, span_s
    assert error_ms.min() >= -10, "played ahead of schedule"
    assert np.median(np.abs(error_ms)) < 25, error_ms
    assert player.status.source == "replay" and player.status.rates == len(received)


def test_replay_is_deterministic_and_matches_load(dataset: Path, replays: list[recording.Replay]) -> None:
    """The same recording gives the same frame at any speed, equal to load() in arrival order."""
    paced_dataset(dataset, seconds=2.0)
    fast = cr.replay(dataset, speed=None, progress=False)
    again = cr.replay(dataset, speed=None, progress=False)
    paced = cr.replay(dataset, speed=20, progress=False)
    replays.extend([fast, again, paced])
    for player in (fast, again, paced):
        player.join(timeout=20)
    pd.testing.assert_frame_equal(fast.df, again.df)
    pd.testing.assert_frame_equal(fast.df, paced.df)
    loaded = cr.load(dataset).drop(columns="source").sort_values("received_at", kind="stable")
    pd.testing.assert_frame_equal(fast.df, loaded, check_categorical=False)
    pd.testing.assert_frame_equal(fast.latest(), paced.latest())


def test_replay_scope_filters_pairs(dataset: Path, replays: list[recording.Replay]) -> None:
    """unsubscribe/subscribe on a replay filter which pairs reach the frame."""
    paced_dataset(dataset, seconds=1.0)
    player = cr.replay(dataset, speed=None, progress=False, autostart=False)
    replays.append(player)
    assert set(player.pairs or ()) == {"BTC/USD", "EUR/USD", "BTC/EUR"}
    player.unsubscribe("BTC/EUR").unsubscribe("EUR/USD")
    player.subscribe("EUR")  # an asset id: every pair with EUR
    player.start().join(timeout=20)
    assert set(player.df["pair"]) == {"BTC/USD", "BTC/EUR", "EUR/USD"}
    only = cr.replay(dataset, speed=None, progress=False, pairs=["BTC/USD"])
    replays.append(only)
    only.join(timeout=20)
    assert set(only.df["pair"]) == {"BTC/USD"} and only.status.rates == len(only.df)


def test_replay_quacks_like_a_collector(dataset: Path, replays: list[recording.Replay]) -> None:
    """A replay stops, resumes, and offers df/latest/wide/ohlc/status/gaps/repr like a collector."""
    received = paced_dataset(dataset, seconds=4.0)
    with cr.replay(dataset, speed=2, progress=False) as player:  # ~2 s of playback: stop() lands mid-way
        replays.append(player)
        wait_until(lambda: player.status.messages >= 5, timeout=10)
        player.stop()
        paused_at = player.status.messages
        assert not player.running and not player.done.is_set() and paused_at < len(received)
        assert player.status.messages == paused_at  # nothing plays while stopped
        player.start().join(timeout=20)
        assert "done" in repr(player) and "SIMULATED" in repr(player)
        assert player.status.messages == len(received) and len(player.frame) == len(received)
        latest = player.latest()
        assert set(latest.index) == {"BTC/USD", "EUR/USD", "BTC/EUR"} and (latest["age"] >= pd.Timedelta(0)).all()
        assert set(player.wide().columns) == set(latest.index)
        assert len(player.ohlc("1s", pair="BTC/USD")) >= 4
        assert list(player.gaps.columns) == ["pair", "start", "end", "reason", "duration"]
        assert player.status.state == "stopped" and player.status.source == "replay"
        player.wait(rows=10, pairs=["BTC/USD"])
        with pytest.raises(cr.RecordingError, match="ended"):
            player.wait(rows=10_000, timeout=5)
        player.restart().join(timeout=20)
        assert len(player.frame) == len(received)


def test_replay_progress_bar_and_empty(tmp_path: Path, dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finite replay shows a tqdm bar to completion; an empty dataset is done at once."""
    paced_dataset(dataset, seconds=1.0, n=20)
    cr.replay(dataset, speed=None).join(timeout=20)
    assert "20/20" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    empty = cr.replay(tmp_path / "empty", speed=None, progress=False)
    assert empty.done.is_set() and len(empty.df) == 0
    with pytest.raises(cr.ConfigError, match="speed"):
        cr.replay(dataset, speed=0)


def test_replay_can_be_recorded(tmp_path: Path, dataset: Path, replays: list[recording.Replay]) -> None:
    """A replay is a source too: recording it writes the played (filtered) rows to a new dataset."""
    paced_dataset(dataset, seconds=1.0)
    player = cr.replay(dataset, speed=None, progress=False, pairs=["BTC/USD"], autostart=False)
    replays.append(player)
    rec = player.record(tmp_path / "copy")
    player.start().join(timeout=20)
    rec.stop()
    copy = cr.load(tmp_path / "copy")
    original = cr.load(dataset, pairs=["BTC/USD"])
    assert set(copy["source"]) == {"replay"}
    assert copy.index.equals(original.index) and copy["rate"].tolist() == original["rate"].tolist()
