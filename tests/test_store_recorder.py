"""The recorder: columns in, Parquet out; batching off the source thread, crash safety, failing disks, bounded memory.

Also home of the helpers the other store tests share (``FakeSource``, ``make_updates``, ``record_rows``).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import coinrates_nb as cr
from coinrates_nb.batch import RateBatch
from coinrates_nb.messages import ExchangeRate
from coinrates_nb.sim.server import Simulator
from coinrates_nb.store import Recorder, RecorderStatus, _parts
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[1]
T0 = 1_796_083_199_000_000_000 + 1_234_000  # 2026-11-30 23:59:59.001234 UTC
"""One second before midnight, so batches straddle two date partitions; 100 ns digits non-zero."""
SEC = 1_000_000_000
NO_SPACE = OSError(28, "No space left on device")


class FakeSource:
    """A stand-in collector: keeps listeners and calls them with batches on the caller's thread."""

    def __init__(self, label: str = "simulated") -> None:
        self.listeners: list[Callable[[RateBatch, int], None]] = []
        self.status = SimpleNamespace(source=label)

    def add_listener(self, fn: Callable[[RateBatch, int], None]) -> Callable[[], None]:
        self.listeners.append(fn)
        return lambda: self.listeners.remove(fn)

    def emit(self, updates: list[tuple[ExchangeRate, int]]) -> None:
        """Deliver each update as a batch of one, as a collector does for a frame received alone."""
        for update, received in updates:
            self.emit_batch([update], received)

    def emit_batch(self, updates: list[ExchangeRate], received: int) -> None:
        """Deliver ``updates`` as one batch received at ``received``."""
        batch = RateBatch.of(updates)
        for fn in list(self.listeners):
            fn(batch, received)


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


def read_back(root: Path) -> pa.Table:
    """Every published row, read by pyarrow alone (not by ``load``), sorted by receive then wire time."""
    table = pa.concat_tables([pq.read_table(f) for f in published(root)])
    return table.sort_by([("received_at", "ascending"), ("time", "ascending")])


def record_rows(path: Path, updates: list[tuple[ExchangeRate, int]], label: str = "simulated",
                **options: Any) -> Recorder:
    """Record ``updates`` from a fake source and stop (flushing)."""
    source = FakeSource(label)
    rec = cr.record(source, path, **options)
    source.emit(updates)
    rec.stop()
    return rec


CHILD_PRELUDE = textwrap.dedent('''
    import os, sys
    from tests.test_store_recorder import FakeSource, make_updates, T0
    import coinrates_nb as cr
    from coinrates_nb.store import _parts
''')


def run_child(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that has FakeSource/make_updates, from the repo root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset path inside the test's temporary directory."""
    return tmp_path / "rates"


class Disk:
    """A replacement for ``_parts.publish`` that fails with ENOSPC while ``full`` is set, and counts calls."""

    def __init__(self, full: bool = True) -> None:
        self.full = full
        self.calls = 0
        self.real = _parts.publish

    def __call__(self, tmp: Path, final: Path) -> None:
        self.calls += 1
        if self.full:
            os.unlink(tmp)
            raise OSError(28, "No space left on device")
        self.real(tmp, final)


# --------------------------------------------------------------------------- what is written


def test_roundtrip_keeps_full_precision_and_columns(dataset: Path) -> None:
    """Recorded rows read back exactly (by pyarrow and by load): ns times, pair/base/quote, rate, type, source."""
    updates = make_updates(30)
    rec = record_rows(dataset, updates)
    assert rec.rows_written == 30 and rec.pending == 0
    table = read_back(dataset)
    assert table.schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert table.schema.field("received_at").type == pa.timestamp("ns", tz="UTC")
    assert table.column("time").cast(pa.int64()).to_pylist() == [u.time_ns for u, _ in updates]
    assert table.column("received_at").cast(pa.int64()).to_pylist() == [r for _, r in updates]
    assert table.column("pair").to_pylist() == [u.pair for u, _ in updates]
    assert table.column("base").to_pylist() == [u.base for u, _ in updates]
    assert table.column("quote").to_pylist() == [u.quote for u, _ in updates]
    assert table.column("rate").to_pylist() == [u.rate for u, _ in updates]
    assert set(table.column("rate_type").to_pylist()) == {"BASE_ALL_CROSSES_TO_REF"}
    assert set(table.column("source").to_pylist()) == {"simulated"}
    df = cr.load(dataset)
    assert list(df.columns) == ["pair", "base", "quote", "rate", "rate_type", "received_at", "source", "origin"]
    assert set(df["origin"]) == {"stream"}
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.name == "time" and str(df.index.dtype) == "datetime64[ns, UTC]"
    assert df.index.asi8.tolist() == [u.time_ns for u, _ in updates]
    assert (df.index.asi8 % 1000 == 300).all(), "sub-microsecond digits were lost"


def test_multi_row_batches_are_recorded_from_their_columns(dataset: Path) -> None:
    """Batches of many rows (one receive time each) and single rows, interleaved, keep order, values and receive times."""
    source = FakeSource("live")
    rec = cr.record(source, dataset, flush_interval=3600)
    rows = make_updates(12, start_ns=T0 - 3600 * SEC)
    source.emit_batch([u for u, _ in rows[:5]], 111)
    source.emit(rows[5:6])
    source.emit_batch([u for u, _ in rows[6:12]], 333)
    rec.stop()
    table = pq.read_table(published(dataset)[0])
    assert table.num_rows == 12
    assert table.column("received_at").cast(pa.int64()).to_pylist() == [111] * 5 + [rows[5][1]] + [333] * 6
    assert table.column("pair").to_pylist() == [u.pair for u, _ in rows]
    assert table.column("rate").to_pylist() == [u.rate for u, _ in rows]
    assert set(table.column("source").to_pylist()) == {"live"}


def test_writes_happen_off_the_source_thread_in_batches(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listener only queues; the writer thread publishes, and only when a batch is due."""
    writers: list[str] = []
    real = _parts.publish

    def spy(tmp: Path, final: Path) -> None:
        writers.append(threading.current_thread().name)
        real(tmp, final)

    monkeypatch.setattr(_parts, "publish", spy)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600, batch_rows=50)
    try:
        source.emit(make_updates(49))
        assert rec.pending == 49 and writers == [] and published(dataset) == []
        source.emit(make_updates(1, start_ns=T0 + 10 * SEC))  # the 50th row wakes the writer
        wait_until(lambda: rec.rows_written == 50, timeout=10, message="batch not written")
        assert set(writers) == {"coinrates-recorder"} and len(writers) == 2  # one file per date partition
    finally:
        rec.stop()
    assert read_back(dataset).num_rows == 50


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
    assert rec.files == tuple(files) and len(cr.load(dataset)) == 40


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


def test_recorder_rejects_bad_options(dataset: Path) -> None:
    """Non-positive limits, an unknown codec and a non-bool start flag are a ConfigError naming the option."""
    with pytest.raises(cr.ConfigError, match="flush_interval"):
        cr.record(FakeSource(), dataset, flush_interval=0)
    with pytest.raises(cr.ConfigError, match="max_backlog_rows"):
        cr.record(FakeSource(), dataset, max_backlog_rows=0)
    with pytest.raises(cr.ConfigError, match="compression"):
        cr.record(FakeSource(), dataset, compression="zip-ish")
    with pytest.raises(cr.ConfigError, match="start"):
        cr.record(FakeSource(), dataset, start="now")  # type: ignore[arg-type]


def test_start_false_records_nothing_until_started(dataset: Path) -> None:
    """start=False (the collector's flag name) creates a stopped recorder that attaches on start()."""
    source = FakeSource()
    rec = cr.record(source, dataset, start=False)
    assert not rec.running and source.listeners == []
    source.emit(make_updates(5))
    rec.start()
    source.emit(make_updates(3, start_ns=T0 + 10 * SEC))
    rec.stop()
    assert rec.rows_received == 3 and read_back(dataset).num_rows == 3 and source.listeners == []


# --------------------------------------------------------------------------- crashes


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
    assert read_back(dataset).num_rows == 123


def test_crash_between_temp_write_and_rename_loses_one_batch(dataset: Path) -> None:
    """A crash after a half-written temp file keeps every published batch and no reader sees the temp."""
    out = run_child(f'''
        real = _parts.publish
        calls = 0
        def crash(tmp, final):
            global calls
            calls += 1
            if calls == 3:  # the third flush dies mid-write: half the temp file, no rename
                with open(tmp, "r+b") as fh:
                    fh.truncate(os.path.getsize(tmp) // 2)
                os._exit(9)
            real(tmp, final)
        _parts.publish = crash
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
    assert len(cr.load(dataset)) == 200  # batches 1-2 survive; batch 3 (the one in flight) is lost, nothing else
    pid = int(temps[0].name.split("-")[-3])
    assert not _parts.pid_alive(pid)
    source = FakeSource()  # a new recorder reclaims the dead writer's temporary
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
    lines: list[list[str]] = []
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
        frame, label = rates.df, rates.status.source
    df = cr.load(dataset)
    assert set(df["source"]) == {label} and len(df) == rec.rows_written  # rows carry the collector's label
    keys = ["time", "pair", "received_at"]
    recorded = df.reset_index()[keys].assign(pair=lambda d: d["pair"].astype(str))
    streamed = frame.reset_index()[keys].assign(pair=lambda d: d["pair"].astype(str))
    assert len(recorded.merge(streamed, on=keys)) == len(recorded), "recorded rows differ from the stream's"
    blobs = [p.read_bytes() for p in dataset.rglob("*") if p.is_file()]
    assert blobs and all(marker.encode() not in blob for blob in blobs)
    assert marker not in repr(rec)


# --------------------------------------------------------------------------- failing disks


def test_write_failure_raises_recording_error_and_retries(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed publish raises RecordingError from the OSError; the rows stay queued and the next flush writes them."""
    disk = Disk(full=True)
    monkeypatch.setattr(_parts, "publish", disk)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600)
    source.emit(make_updates(25, start_ns=T0 - 3600 * SEC))  # one partition, so one file fails
    with pytest.raises(cr.RecordingError, match="No space left") as info:
        rec.flush()
    assert isinstance(info.value.__cause__, OSError) and rec.errors == 1 and rec.rows_written == 0
    assert rec.status.state == "failing" and rec.status.rows_queued == 25 and isinstance(rec.error, OSError)
    disk.full = False
    source.emit(make_updates(5, start_ns=T0 + 10 * SEC))
    rec.stop()
    assert rec.rows_written == 30 and read_back(dataset).num_rows == 30
    assert rec.status.state == "stopped" and rec.error is None and "1 error" in repr(rec)


def test_failing_recorder_retries_at_its_interval_and_reports_it(
        dataset: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """While the disk is full the writer retries every flush_interval (not per batch), and status says so."""
    disk = Disk(full=True)
    monkeypatch.setattr(_parts, "publish", disk)
    source = FakeSource()
    caplog.set_level(logging.DEBUG, logger="coinrates_nb.store")
    rec = cr.record(source, dataset, flush_interval=0.2, batch_rows=1)  # every row would wake a healthy writer
    try:
        source.emit(make_updates(10, start_ns=T0 - 3600 * SEC))
        wait_until(lambda: rec.status.state == "failing", timeout=10)
        calls = disk.calls
        source.emit(make_updates(40, start_ns=T0 - 3500 * SEC))  # 40 wake-ups: none may be a write attempt
        wait_until(lambda: disk.calls >= calls + 3, timeout=10)
        assert disk.calls <= calls + 4, "retried per batch, not per flush interval"
        status = rec.status
        assert isinstance(status, RecorderStatus)
        assert (status.state, status.rows_received, status.rows_written, status.rows_queued, status.rows_dropped) == \
            ("failing", 50, 0, 50, 0)
        assert status.errors == rec.errors >= 4 and status.last_error == "OSError: [Errno 28] No space left on device"
        assert not status.ok and "error: OSError" in status.summary() and status.to_dict()["rows_queued"] == 50
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, "every retry was logged at ERROR"
        disk.full = False  # the disk recovers: the next retry writes everything
        wait_until(lambda: rec.status.state == "recording", timeout=10)
        assert rec.status.rows_written == 50 and rec.status.rows_queued == 0 and rec.error is None
        assert any("recovered" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
    finally:
        rec.stop()
    assert read_back(dataset).num_rows == 50


def test_backlog_is_bounded_oldest_dropped_and_counted(
        dataset: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Past max_backlog_rows the oldest unwritten rows are dropped, counted, and warned about once."""
    disk = Disk(full=True)
    monkeypatch.setattr(_parts, "publish", disk)
    source = FakeSource()
    caplog.set_level(logging.INFO, logger="coinrates_nb.store")
    rec = cr.record(source, dataset, flush_interval=3600, max_backlog_rows=100)  # retries only when asked
    updates = make_updates(180, start_ns=T0 - 3600 * SEC)
    try:
        source.emit(updates[:30])
        with pytest.raises(cr.RecordingError):
            rec.flush()
        for lo, dropped in ((30, 0), (80, 30), (130, 80)):
            source.emit(updates[lo:lo + 50])
            wait_until(lambda d=dropped: rec.status.rows_dropped == d, timeout=10)
        status = rec.status
        assert (status.rows_received, status.rows_queued, status.rows_dropped, status.rows_written) == (180, 100, 80, 0)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "max_backlog_rows=100" in warnings[0].getMessage()
        assert "80 dropped" in repr(rec)
        assert disk.calls == 1, "a trim wake-up tried to write before the retry was due"
        disk.full = False
        rec.flush()
        assert rec.status.rows_written == 100 and rec.status.state == "recording"
    finally:
        rec.stop()
    kept = read_back(dataset).column("time").cast(pa.int64()).to_pylist()
    assert kept == [u.time_ns for u, _ in updates[80:]], "not the oldest rows were dropped"


def test_a_writer_stuck_in_a_write_still_bounds_the_queue(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the writer hangs inside a write, the source sheds the oldest queued rows itself: memory stays bounded."""
    entered, release = threading.Event(), threading.Event()
    real = _parts.publish

    def hang(tmp: Path, final: Path) -> None:
        entered.set()
        release.wait(30)
        real(tmp, final)

    monkeypatch.setattr(_parts, "publish", hang)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600, batch_rows=10, max_backlog_rows=50)
    updates = make_updates(120, start_ns=T0 - 3600 * SEC)
    try:
        source.emit(updates[:10])  # wakes the writer, which hangs publishing these 10
        assert entered.wait(10)
        source.emit(updates[10:120])  # 110 rows while the writer is stuck: the queue keeps the newest 40
        status = rec.status
        assert (status.rows_received, status.rows_dropped, status.rows_queued) == (120, 70, 50)
    finally:
        release.set()
        rec.stop()
    kept = read_back(dataset).column("time").cast(pa.int64()).to_pylist()
    assert kept == [u.time_ns for u, _ in updates[:10] + updates[80:]]


def test_a_failing_recorder_never_disturbs_the_collector(
        dataset: Path, monkeypatch: pytest.MonkeyPatch, make_simulator: Callable[..., Simulator]) -> None:
    """A recorder on a full disk keeps the collector connected and storing; its failure shows on the recorder."""
    monkeypatch.setattr(_parts, "publish", Disk(full=True))
    sim = make_simulator(seed=2, rate_hz=50)
    with cr.stream(["BTC/USD", "ETH/USD"], url=sim.url) as rates:
        rates.wait(timeout=20)
        rec = rates.record(dataset, flush_interval=0.05, max_backlog_rows=20)
        wait_until(lambda: rec.status.rows_dropped > 0, timeout=20, message="backlog never reached its bound")
        before = rates.status.rates
        wait_until(lambda: rates.status.rates >= before + 20, timeout=20, message="the collector stopped storing")
        status = rates.status
        assert status.state == "connected" and status.reconnects == 0 and status.last_error is None
        held = rec.status
        assert held.state == "failing" and held.rows_written == 0
        assert held.rows_received == held.rows_queued + held.rows_dropped
        assert held.rows_queued < 40, "the backlog grew past its bound (20, plus what arrives between two trims)"
        with pytest.raises(cr.RecordingError, match="No space left"):
            rec.stop()
        assert rates.running and not rec.running


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user for permissions")
def test_read_only_folder_fails_and_recovers(dataset: Path) -> None:
    """A folder made read-only fails the writes (status failing); made writable again, the rows are written."""
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=0.05)
    dataset.chmod(0o555)
    try:
        source.emit(make_updates(10, start_ns=T0 - 3600 * SEC))
        wait_until(lambda: rec.status.state == "failing", timeout=10)
        assert "Permission" in (rec.status.last_error or "")
    finally:
        dataset.chmod(0o755)
    wait_until(lambda: rec.status.rows_written == 10, timeout=10)
    rec.stop()


# --------------------------------------------------------------------------- lifecycle


def test_stop_joins_outside_its_lock_and_is_idempotent(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While stop() waits for a slow final write, the lifecycle lock is free; a second stop() is a no-op."""
    entered, release = threading.Event(), threading.Event()
    real = _parts.publish

    def slow(tmp: Path, final: Path) -> None:
        entered.set()
        release.wait(30)
        real(tmp, final)

    monkeypatch.setattr(_parts, "publish", slow)
    source = FakeSource()
    rec = cr.record(source, dataset, flush_interval=3600)
    source.emit(make_updates(5, start_ns=T0 - 3600 * SEC))
    stopper = threading.Thread(target=rec.stop)
    stopper.start()
    try:
        assert entered.wait(10), "the final flush never started"
        assert rec._life_lock.acquire(timeout=1), "stop() holds its lock while joining the writer"
        rec._life_lock.release()
        assert source.listeners == [] and rec.status.rows_queued == 5  # status answers while stop() waits
    finally:
        release.set()
        stopper.join(10)
    assert not stopper.is_alive() and not rec.running
    monkeypatch.setattr(_parts, "publish", real)
    rec.stop()
    assert rec.rows_written == 5 and rec.status.state == "stopped" and len(rec.files) == 1


def test_to_table_handles_empty_and_numpy_heavy_batches() -> None:
    """Columns of a 10,000-row batch become a table of the schema without a Python object per row."""
    from coinrates_nb.store.dataset import SCHEMA, _to_table

    n = 10_000
    keys = [("BTC", "USD", "BASE_QUOTE_ISOLATED"), ("ETH", "EUR", "BASE_ALL_CROSSES_TO_REF")]
    code = np.arange(n, dtype=np.intp) % 2
    batch = RateBatch(keys, code, np.arange(n, dtype=np.int64) + T0, np.linspace(1, 2, n))
    table, times = _to_table([(batch, T0 + 5), (RateBatch.empty(), T0)], "live")
    assert table.schema == SCHEMA and table.num_rows == n and times.tolist() == (np.arange(n) + T0).tolist()
    assert table.column("pair").to_pylist()[:3] == ["BTC/USD", "ETH/EUR", "BTC/USD"]
    assert table.column("quote").to_pylist()[-1] == "EUR" and table.column("rate_type").to_pylist()[1] == keys[1][2]
    empty, none = _to_table([], "live")
    assert empty.num_rows == 0 and len(none) == 0


def test_rows_that_cannot_become_a_table_raise_a_recording_error(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A conversion failure in flush() is a RecordingError (in the tree), and the lost rows are counted."""
    import coinrates_nb.store.recorder as recorder_module

    def broken(*_: Any) -> Any:
        raise ValueError("arrow says no")

    source = FakeSource("simulated")
    rec = cr.record(source, dataset, flush_interval=3600)
    source.emit(make_updates(5))
    monkeypatch.setattr(recorder_module, "_to_table", broken)
    with pytest.raises(cr.RecordingError, match="arrow says no"):
        rec.flush()
    assert rec.rows_dropped == 5
    monkeypatch.undo()
    rec.stop()
