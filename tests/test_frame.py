"""The rolling frame: ring and window eviction, exact dtypes and precision, views, threads, a model check."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinrates_nb import frame as frame_module
from coinrates_nb._types import RATE_TYPES
from coinrates_nb.batch import HEALED, HISTORY, RateBatch
from coinrates_nb.exceptions import ConfigError, StoreError
from coinrates_nb.frame import RollingFrame
from tests.helpers import SLOW, put, rate_batch

T0 = int(pd.Timestamp("2024-01-01", tz="UTC").value)
"""A minute-aligned epoch, so resample buckets fall on round offsets from it."""
SEC = 1_000_000_000
ISO = RATE_TYPES[0]
Row = tuple[int, str, float, str, int]


def rows_of(frame: RollingFrame, **kwargs: Any) -> list[Row]:
    """Return a snapshot as plain (time_ns, pair, rate, rate_type, received_ns) tuples."""
    df = frame.snapshot(**kwargs)
    return list(
        zip(
            df.index.asi8.tolist(),
            df["pair"].astype(str).tolist(),
            df["rate"].tolist(),
            df["rate_type"].astype(str).tolist(),
            pd.DatetimeIndex(df["received_at"]).asi8.tolist(),
            strict=True,
        )
    )


def fill(frame: RollingFrame, n: int, start: int = 0, pairs: tuple[str, ...] = ("BTC/USD", "ETH/USD")) -> list[Row]:
    """Append ``n`` rows one second apart with rate = index, returning what was appended."""
    rows = [(T0 + i * SEC, pairs[i % len(pairs)], float(i), ISO, T0 + i * SEC + 5) for i in range(start, start + n)]
    for row in rows:
        put(frame, *row)
    return rows


def extend_rows(frame: RollingFrame, rows: list[Row]) -> None:
    """Feed ``rows`` to ``extend`` as one batch of columns, with one receive time per row."""
    frame.extend(rate_batch([r[:4] for r in rows]), np.array([r[4] for r in rows], dtype=np.int64))


# -- bounds and eviction -----------------------------------------------------------------------


def test_ring_wraps_keeping_newest_capacity_rows_in_order() -> None:
    """After 2.5x capacity appends the snapshot holds exactly the newest `capacity` rows, oldest first."""
    frame = RollingFrame(max_rows=40)
    rows = fill(frame, 100)
    assert rows_of(frame) == rows[-40:]
    assert (len(frame), frame.appended, frame.evicted) == (40, 100, 60)


def test_window_evicts_rows_older_than_newest_minus_window() -> None:
    """Rows with time < newest - window leave from the head; a row exactly at the cutoff stays."""
    frame = RollingFrame(max_rows=None, window="10s")
    rows = fill(frame, 25)
    assert rows_of(frame) == rows[14:]  # newest 24 s, cutoff 14 s: 14 s itself is kept
    assert frame.evicted == 14
    assert frame.window_ns == 10 * SEC and frame.window == pd.Timedelta("10s")
    assert RollingFrame(max_rows=10).window_ns is None and RollingFrame(max_rows=10).window is None


def test_quiet_spell_evicts_a_long_run_across_the_ring_edge() -> None:
    """One late-arriving newest time evicts hundreds of rows at once, across the wrap, up to the cutoff."""
    frame = RollingFrame(max_rows=1000, window="1000s")
    rows = fill(frame, 1500)  # wrapped: the head sits mid-ring
    newest = (T0 + 2200 * SEC, "BTC/USD", -1.0, ISO, 0)
    put(frame, *newest)  # cutoff 1,200 s: rows 500-1,199 go
    assert rows_of(frame) == rows[1200:] + [newest]
    assert frame.evicted == 500 + 700


def test_window_assumes_rough_time_order() -> None:
    """A late row stays behind newer rows until it reaches the head, then goes at once if too old."""
    frame = RollingFrame(max_rows=10, window="10s")
    put(frame, T0 + 20 * SEC, "A/B", 1.0, ISO, 0)
    put(frame, T0 + 5 * SEC, "A/B", 2.0, ISO, 0)  # late and already older than the cutoff
    assert [r[2] for r in rows_of(frame)] == [1.0, 2.0]
    put(frame, T0 + 31 * SEC, "A/B", 3.0, ISO, 0)  # cutoff 21 s: the 20 s head goes, then the late row
    assert [r[2] for r in rows_of(frame)] == [3.0]


def test_capacity_and_window_together() -> None:
    """Whichever bound is tighter wins: capacity in a burst, the window after a quiet spell."""
    frame = RollingFrame(max_rows=5, window="100s")
    rows = fill(frame, 8)
    assert rows_of(frame) == rows[-5:]
    late = (T0 + 500 * SEC, "BTC/USD", 9.0, ISO, 1)
    put(frame, *late)
    assert rows_of(frame) == [late]
    assert (frame.appended, frame.evicted, len(frame)) == (9, 8, 1)


def test_growing_ring_doubles_and_keeps_every_row_in_window() -> None:
    """With max_rows=None the ring starts at 4,096 rows and doubles, keeping rows in order across the copy."""
    frame = RollingFrame(max_rows=None, window="10000s")
    assert frame.capacity == 4096
    rows = fill(frame, 10_000)
    assert frame.capacity == 16_384
    assert rows_of(frame) == rows
    assert frame.latest()["rate"].to_dict() == {"BTC/USD": 9998.0, "ETH/USD": 9999.0}
    more = fill(frame, 10_000, start=10_000)  # the window now evicts as fast as rows arrive: no growth
    assert frame.capacity == 16_384
    assert rows_of(frame) == (rows + more)[-10_001:]


def test_growth_after_eviction_keeps_each_pairs_newest_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Doubling a wrapped ring (head not at slot 0) re-maps where each pair's newest row lives."""
    monkeypatch.setattr(frame_module, "GROWTH_START", 4)
    frame = RollingFrame(max_rows=None, window=pd.Timedelta(10, "ns"))
    for t, pair, rate in [(0, "A/B", 0.0), (1, "C/D", 1.0), (2, "A/B", 2.0), (12, "A/B", 3.0),
                          (12, "E/F", 4.0), (12, "E/F", 5.0)]:
        put(frame, T0 + t, pair, rate, ISO, T0 + t)
    assert (frame.capacity, frame._start, len(frame)) == (4, 2, 4)  # wrapped, full
    put(frame, T0 + 13, "G/H", 6.0, ISO, T0 + 13)
    assert frame.capacity == 8
    assert frame.latest()["rate"].to_dict() == {"A/B": 3.0, "E/F": 5.0, "G/H": 6.0}
    assert [r[2] for r in rows_of(frame)] == [3.0, 4.0, 5.0, 6.0]  # cutoff 3 ns: the 2 ns row goes


@pytest.mark.parametrize(
    ("max_rows", "window"),
    [(None, None), (0, None), (-1, "1s"), (True, None), (10, "soon"), (10, "-5s"), (10, "0s")],
)
def test_bad_bounds_raise_config_error(max_rows: Any, window: Any) -> None:
    """No bound, a non-positive/non-int capacity, or a bad window is a ConfigError (also a ValueError)."""
    with pytest.raises(ConfigError):
        RollingFrame(max_rows=max_rows, window=window)


def test_bad_pair_is_a_store_error() -> None:
    """A pair that is not BASE/QUOTE raises StoreError, on both write paths, and stores nothing."""
    frame = RollingFrame(10)
    with pytest.raises(StoreError, match="BASE/QUOTE"):
        put(frame, T0, "BTCUSD", 1.0, ISO, T0)
    with pytest.raises(StoreError, match="BASE/QUOTE"):
        extend_rows(frame, [(T0, "BTCUSD", 1.0, ISO, T0), (T0, "A/B", 1.0, ISO, T0)])
    assert len(frame) == 0 and frame.appended == 0


def test_clear_empties_but_keeps_lifetime_counters() -> None:
    """clear() drops live rows and the newest time; appended/evicted and capacity stay."""
    frame = RollingFrame(max_rows=4, window="1h")
    fill(frame, 6)
    frame.clear()
    assert (len(frame), frame.pairs, frame.appended, frame.evicted, frame.capacity) == (0, (), 6, 2, 4)
    put(frame, T0 - 10_000 * SEC, "A/B", 1.0, ISO, 0)  # older than the pre-clear cutoff: kept
    assert len(frame) == 1


# -- snapshot shape and precision -------------------------------------------------------------

EXPECTED_DTYPES = {
    "pair": "category",
    "base": "category",
    "quote": "category",
    "rate": "float64",
    "rate_type": "category",
    "received_at": "datetime64[ns, UTC]",
    "origin": "category",
}


def test_snapshot_dtypes_index_and_tz_exactly() -> None:
    """The snapshot has a UTC ns DatetimeIndex named 'time' and the documented column dtypes."""
    frame = RollingFrame(10)
    fill(frame, 3, pairs=("BTC/USD", "ETH/EUR"))
    df = frame.snapshot()
    assert isinstance(df.index, pd.DatetimeIndex)
    assert df.index.name == "time"
    assert str(df.index.dtype) == "datetime64[ns, UTC]"
    assert {c: str(t) for c, t in df.dtypes.items()} == EXPECTED_DTYPES
    assert list(df.columns) == list(EXPECTED_DTYPES)
    assert df["base"].astype(str).tolist() == ["BTC", "ETH", "BTC"]
    assert df["quote"].astype(str).tolist() == ["USD", "EUR", "USD"]
    assert list(df["quote"].cat.categories) == ["USD", "EUR"]


def test_empty_snapshot_has_same_columns_and_dtypes() -> None:
    """An empty frame snapshots to zero rows with the same index and column dtypes."""
    df = RollingFrame(10).snapshot()
    assert df.shape == (0, 7)
    assert str(df.index.dtype) == "datetime64[ns, UTC]" and df.index.name == "time"
    assert {c: str(t) for c, t in df.dtypes.items()} == EXPECTED_DTYPES


def test_100ns_precision_survives_end_to_end() -> None:
    """Seven fractional digits (100 ns) of time and received_at come back exactly via asi8."""
    time_ns = 1_717_171_717_703_542_900  # ...:37.7035429
    received_ns = 1_717_171_717_803_542_900
    frame = RollingFrame(10)
    put(frame, time_ns, "BTC/USD", 1.0, ISO, received_ns)
    extend_rows(frame, [(time_ns + 100, "BTC/USD", 2.0, ISO, received_ns + 100)])
    df = frame.snapshot()
    assert df.index.asi8.tolist() == [time_ns, time_ns + 100]
    assert pd.DatetimeIndex(df["received_at"]).asi8.tolist() == [received_ns, received_ns + 100]
    assert frame.latest().loc["BTC/USD", "time"].value == time_ns + 100


def test_snapshot_filters_by_pairs_and_since() -> None:
    """snapshot(pairs=..., since_ns=...) keeps matching rows in arrival order; categories stay stable."""
    frame = RollingFrame(10)
    rows = fill(frame, 6, pairs=("A/B", "C/D", "E/F"))
    assert rows_of(frame, pairs=["C/D"]) == [rows[1], rows[4]]
    assert rows_of(frame, pairs="C/D") == [rows[1], rows[4]]
    assert rows_of(frame, since_ns=T0 + 3 * SEC) == rows[3:]
    assert rows_of(frame, pairs=["A/B", "E/F", "X/Y"], since_ns=T0 + 1 * SEC) == [rows[2], rows[3], rows[5]]
    assert list(frame.snapshot(pairs=["C/D"])["pair"].cat.categories) == ["A/B", "C/D", "E/F"]


def test_snapshot_is_a_copy() -> None:
    """Mutating a snapshot leaves the frame untouched."""
    frame = RollingFrame(10)
    fill(frame, 3)
    df = frame.snapshot()
    df["rate"] = -1.0
    assert [r[2] for r in rows_of(frame)] == [0.0, 1.0, 2.0]


def test_writes_do_not_copy_the_window() -> None:
    """The ring's ndarray objects and their buffers are the same before and after many wrapping appends."""
    frame = RollingFrame(max_rows=64, window="1h")
    columns = frame._columns()
    pointers = [c.ctypes.data for c in columns]
    fill(frame, 200)
    extend_rows(frame, [(T0 + 300 * SEC + i, "A/B", 1.0, ISO, 0) for i in range(100)])
    assert all(a is b for a, b in zip(frame._columns(), columns, strict=True))
    assert [c.ctypes.data for c in frame._columns()] == pointers
    assert frame.nbytes == 64 * 28


# -- views ----------------------------------------------------------------------------------------


def test_latest_one_row_per_pair_with_age() -> None:
    """latest() gives each pair's newest row; age runs to the newest received_at or to now_ns."""
    frame = RollingFrame(10)
    put(frame, T0, "A/B", 1.0, ISO, T0 + 5)
    put(frame, T0 + 10, "C/D", 2.0, "BASE_AND_QUOTE_TO_REF", T0 + 20)
    put(frame, T0 + 30, "A/B", 3.0, ISO, T0 + 40)
    out = frame.latest()
    assert out.index.name == "pair" and out.index.tolist() == ["A/B", "C/D"]
    assert list(out.columns) == ["time", "rate", "rate_type", "received_at", "age"]
    assert out["rate"].tolist() == [3.0, 2.0]
    assert pd.DatetimeIndex(out["time"]).asi8.tolist() == [T0 + 30, T0 + 10]
    assert out["rate_type"].astype(str).tolist() == [ISO, "BASE_AND_QUOTE_TO_REF"]
    assert out["age"].tolist() == [pd.Timedelta(10, "ns"), pd.Timedelta(30, "ns")]
    assert frame.latest(now_ns=T0 + 100)["age"].tolist() == [pd.Timedelta(70, "ns"), pd.Timedelta(90, "ns")]
    assert str(out["time"].dtype) == "datetime64[ns, UTC]"
    assert list(RollingFrame(3).latest().columns) == list(out.columns)


def test_latest_drops_pairs_whose_rows_were_evicted() -> None:
    """A pair disappears from latest(), pairs and counts() once its last row is evicted."""
    frame = RollingFrame(max_rows=3)
    put(frame, T0, "A/B", 1.0, ISO, T0)
    for i in range(1, 4):
        put(frame, T0 + i, "C/D", float(i), ISO, T0 + i)
    assert frame.latest().index.tolist() == ["C/D"]
    assert frame.pairs == ("C/D",) and frame.counts() == {"C/D": 3}


def test_wide_on_exact_times_forward_fills() -> None:
    """wide() pivots on exact times (last of duplicates) and carries each pair forward."""
    frame = RollingFrame(10)
    for t, pair, rate in [(0, "A/B", 1.0), (0, "C/D", 10.0), (1, "A/B", 2.0), (1, "A/B", 3.0), (3, "C/D", 11.0)]:
        put(frame, T0 + t * SEC, pair, rate, ISO, 0)
    out = frame.wide()
    assert out.index.asi8.tolist() == [T0, T0 + SEC, T0 + 3 * SEC]
    assert str(out.index.dtype) == "datetime64[ns, UTC]" and out.columns.name == "pair"
    assert out.to_dict("list") == {"A/B": [1.0, 3.0, 3.0], "C/D": [10.0, 10.0, 11.0]}
    assert frame.wide(how="mean")["A/B"].tolist() == [1.0, 2.5, 2.5]
    with pytest.raises(ConfigError):
        frame.wide(how="sum")


def test_wide_resampled_fills_empty_buckets() -> None:
    """wide(freq=) takes the last rate per bucket per pair and forward-fills buckets with no rows."""
    frame = RollingFrame(10)
    for t, pair, rate in [(0, "A/B", 1.0), (1, "A/B", 3.0), (0.5, "C/D", 10.0), (3, "C/D", 11.0), (7, "C/D", 12.0)]:
        put(frame, T0 + int(t * SEC), pair, rate, ISO, 0)
    out = frame.wide(freq="2s")
    assert out.index.asi8.tolist() == [T0 + k * SEC for k in (0, 2, 4, 6)]
    assert out.to_dict("list") == {"A/B": [3.0, 3.0, 3.0, 3.0], "C/D": [10.0, 11.0, 11.0, 12.0]}
    empty = RollingFrame(3).wide(freq="1s")
    assert empty.shape == (0, 0) and str(empty.index.dtype) == "datetime64[ns, UTC]"


def test_ohlc_bars_by_time_with_gaps_left_empty() -> None:
    """ohlc() orders each bucket by time (a late row can open it), leaves empty buckets NaN, counts rows."""
    frame = RollingFrame(20)
    for t, pair, rate in [(10, "A/B", 5.0), (0, "A/B", 1.0), (30, "A/B", 0.5), (59, "A/B", 2.0),
                          (60, "A/B", 3.0), (90, "C/D", 7.0), (200, "A/B", 4.0)]:
        put(frame, T0 + t * SEC, pair, rate, ISO, 0)
    one = frame.ohlc("1min", pair="A/B")
    assert list(one.columns) == ["open", "high", "low", "close", "count"]
    assert one.index.asi8.tolist() == [T0 + m * 60 * SEC for m in range(4)]
    assert str(one.index.dtype) == "datetime64[ns, UTC]"
    expected = {"open": [1.0, 3.0, np.nan, 4.0], "high": [5.0, 3.0, np.nan, 4.0],
                "low": [0.5, 3.0, np.nan, 4.0], "close": [2.0, 3.0, np.nan, 4.0]}
    pd.testing.assert_frame_equal(one[["open", "high", "low", "close"]],
                                  pd.DataFrame(expected, index=one.index), check_freq=False)
    assert one["count"].tolist() == [4, 1, 0, 1]
    both = frame.ohlc("1min")
    assert isinstance(both.columns, pd.MultiIndex)
    assert both.columns.tolist() == [(p, f) for p in ("A/B", "C/D") for f in ("open", "high", "low", "close")]
    pd.testing.assert_frame_equal(both["A/B"], one[["open", "high", "low", "close"]], check_names=False,
                                  check_freq=False)
    assert both[("C/D", "close")].tolist()[1] == 7.0 and both[("C/D", "close")].isna().sum() == 3
    assert frame.ohlc(pair="X/Y").shape == (0, 5)
    assert RollingFrame(3).ohlc().shape == (0, 0)


# -- extend ----------------------------------------------------------------------------------------


def test_large_batches_equal_batches_of_one() -> None:
    """Batches (one larger than capacity, late rows) leave the state that one-row batches (the scalar path) leave."""
    rng = np.random.default_rng(7)
    pairs = ["A/B", "C/D", "E/F", "G/H"]
    rows: list[Row] = []
    t = T0
    for i in range(500):
        t += int(rng.integers(-2 * SEC, 5 * SEC))
        rows.append((t, pairs[int(rng.integers(4))], float(i), RATE_TYPES[i % 3], t + 11))
    for max_rows, window in [(50, None), (50, "60s"), (None, "60s"), (1000, None)]:
        one, batched = RollingFrame(max_rows, window), RollingFrame(max_rows, window)
        for row in rows:
            put(one, *row)
        for lo, hi in [(0, 7), (7, 8), (8, 130), (130, 500)]:
            extend_rows(batched, rows[lo:hi])
        assert rows_of(batched) == rows_of(one)
        assert (batched.appended, batched.evicted, batched.pairs) == (one.appended, one.evicted, one.pairs)
        pd.testing.assert_frame_equal(batched.latest(), one.latest())


def test_extend_rejects_ragged_receive_times() -> None:
    """received_ns is one time or one per row; anything else is a StoreError and stores nothing."""
    frame = RollingFrame(10)
    with pytest.raises(StoreError, match="one per row"):
        frame.extend(rate_batch([(T0, "A/B", 1.0, ISO), (T0 + 1, "A/B", 2.0, ISO)]), np.array([T0, T0, T0]))
    frame.extend(rate_batch([]), 0)
    frame.extend(rate_batch([(T0, "A/B", 1.0, ISO), (T0 + 1, "A/B", 2.0, ISO)]), T0 + 5)
    assert frame.appended == 2 and frame.snapshot()["received_at"].astype("int64").tolist() == [T0 + 5, T0 + 5]


def test_registering_pairs_is_constant_time() -> None:
    """New pairs cost O(1) each: 10,000 pairs are stored in well under a second, views see them all."""
    frame = RollingFrame(20_000)
    rows = [(T0 + i, f"P{i}/USD", 1.0, ISO) for i in range(10_000)]
    started = time.perf_counter()
    for i in range(0, 10_000, 100):
        frame.extend(rate_batch(rows[i:i + 100]), T0)
    elapsed = time.perf_counter() - started
    assert len(frame.pairs) == 10_000 and len(frame.latest()) == 10_000
    assert elapsed < 2.0 * SLOW, f"10,000 new pairs took {elapsed:.2f} s"


# -- threads --------------------------------------------------------------------------------------


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads often so reader and writer interleave finely."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("batched", [False, True], ids=["one", "batch"])
@pytest.mark.usefixtures("fast_switching")
def test_snapshots_are_consistent_while_a_thread_appends(batched: bool) -> None:
    """One thread writes 200k rows while another snapshots: every snapshot is contiguous, ordered, untorn."""
    n, step = 200_000, 100
    pairs = np.array(["A/B", "C/D", "E/F"], dtype=object)
    frame = RollingFrame(max_rows=10_000, window=pd.Timedelta(7_000 * step, "ns"))
    started = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        started.wait()
        try:
            if batched:
                for lo in range(0, n, 1000):
                    extend_rows(frame, [(T0 + i * step, str(pairs[i % 3]), i * 0.25, ISO, T0 + i * step + 7)
                                        for i in range(lo, lo + 1000)])
            else:
                for i in range(n):
                    put(frame, T0 + i * step, pairs[i % 3], i * 0.25, ISO, T0 + i * step + 7)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    def check(df: pd.DataFrame) -> None:
        i = (df.index.asi8 - T0) // step
        assert len(df) <= 10_000
        assert np.all(np.diff(i) == 1), "rows missing or out of order"
        assert np.array_equal(df["rate"].to_numpy(), i * 0.25), "torn row: rate does not match time"
        assert np.array_equal(df["pair"].astype(str).to_numpy(), pairs[i % 3]), "torn row: pair"
        assert np.array_equal(pd.DatetimeIndex(df["received_at"]).asi8 - df.index.asi8, np.full(len(df), 7))

    writer = threading.Thread(target=write, name="frame-writer")
    writer.start()
    started.set()
    snapshots = 0
    while writer.is_alive():
        check(frame.snapshot())
        latest = frame.latest()
        assert np.array_equal(latest["rate"].to_numpy(), (pd.DatetimeIndex(latest["time"]).asi8 - T0) // step * 0.25)
        snapshots += 1
    writer.join()
    assert not errors
    check(frame.snapshot())
    assert frame.appended == n and len(frame) == 7_001
    assert snapshots >= 1


# -- the reference model ------------------------------------------------------------------------


class Model:
    """The eviction rules in plain Python: append, drop the oldest beyond capacity, then the window."""

    def __init__(self, max_rows: int | None, window_ns: int | None) -> None:
        self.rows: list[Row] = []
        self.streamed: list[bool] = []  # per row: a stream row (else history/healed)
        self.max_rows, self.window_ns = max_rows, window_ns
        self.newest: int | None = None
        self.seen: list[str] = []

    def append(self, row: Row, streamed: bool = True) -> None:
        """Apply one append with the documented eviction order."""
        self.rows.append(row)
        self.streamed.append(streamed)
        if row[1] not in self.seen:
            self.seen.append(row[1])
        if self.max_rows is not None and len(self.rows) > self.max_rows:
            self.pop()
        self.newest = row[0] if self.newest is None else max(self.newest, row[0])
        if self.window_ns is not None:
            while self.rows and self.rows[0][0] < self.newest - self.window_ns:
                self.pop()

    def pop(self) -> None:
        self.rows.pop(0)
        self.streamed.pop(0)

    def latest(self) -> dict[str, float]:
        """Each live pair's newest rate: its last stream row, unless a later history/healed row is newer."""
        newest: dict[str, Row] = {}
        for row, streamed in zip(self.rows, self.streamed, strict=True):
            pair = row[1]
            if streamed or pair not in newest or row[0] > newest[pair][0]:
                newest[pair] = row
        return {pair: row[2] for pair, row in newest.items()}


rows_st = st.lists(
    st.tuples(
        st.integers(-5, 12),  # time step from the previous row: mostly forward, sometimes late
        st.sampled_from(["A/B", "C/D", "E/F", "A/D"]),
        st.integers(-1000, 1000).map(float),
        st.sampled_from([*RATE_TYPES, "FUTURE_TYPE"]),
        st.integers(0, 2**40),
    ),
    max_size=12,
)
ops_st = st.lists(st.tuples(st.sampled_from(["append", "extend", "snapshot", "heal", "heal_one"]), rows_st),
                  max_size=30)
bounds_st = st.one_of(
    st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(1, 40))),
    st.tuples(st.none(), st.integers(1, 40)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bounds=bounds_st, ops=ops_st)
def test_matches_reference_model(bounds: tuple[int | None, int | None], ops: list[tuple[str, list[Any]]]) -> None:
    """Random append/extend/snapshot sequences give the same rows, counters and latest as the model."""
    max_rows, window = bounds
    with mock.patch.object(frame_module, "GROWTH_START", 2):  # so the growing ring doubles in small tests
        frame = RollingFrame(max_rows, None if window is None else pd.Timedelta(window, "ns"))
    model = Model(max_rows, window)
    clock, total = T0, 0
    for op, steps in ops:
        if op == "snapshot":
            assert rows_of(frame) == model.rows
            assert frame.latest()["rate"].to_dict() == model.latest()
            continue
        rows: list[Row] = []
        for step, pair, rate, rate_type, received in steps:
            clock += step
            rows.append((clock, pair, rate, rate_type, received))
        if op == "append":
            for row in rows:
                put(frame, *row)
        elif op == "extend":
            extend_rows(frame, rows)
        elif op == "heal" and rows:  # healed rows as one batch (columns), one receive time per row
            b = rate_batch([r[:4] for r in rows])
            frame.extend(RateBatch(b.keys, b.code, b.time_ns, b.rate, HEALED), np.array([r[4] for r in rows]))
        elif op == "heal_one":  # ... and one at a time (the scalar path)
            for row in rows:
                b = rate_batch([row[:4]])
                frame.extend(RateBatch(b.keys, b.code, b.time_ns, b.rate, HEALED), row[4])
        for row in rows:
            model.append(row, streamed=op in ("append", "extend"))
        total += len(rows)
        assert rows_of(frame) == model.rows
    assert (frame.appended, frame.evicted, len(frame)) == (total, total - len(model.rows), len(model.rows))
    assert frame.pairs == tuple(p for p in model.seen if p in model.latest())
    assert frame.latest()["rate"].to_dict() == model.latest()
    if max_rows is not None:
        assert frame.capacity == max_rows


# -- repr -----------------------------------------------------------------------------------------


def test_repr_tells_rows_capacity_pairs_and_window() -> None:
    """The repr shows live/capacity rows with separators, live pairs and the window."""
    frame = RollingFrame(max_rows=100_000, window="15min")
    n = 12_345
    i = np.arange(n)
    names = np.array(["BTC/USD", "ETH/USD", "SOL/EUR"], dtype=object)
    extend_rows(frame, [(T0 + k * 1000, str(names[k % 3]), k * 1.0, ISO, T0 + k * 1000) for k in i.tolist()])
    assert repr(frame) == "<RollingFrame 12,345/100,000 rows | 3 pairs | window 15min>"
    assert repr(RollingFrame(10)) == "<RollingFrame 0/10 rows | 0 pairs | no window>"
    grows = RollingFrame(None, window=pd.Timedelta("90s"))
    put(grows, T0, "A/B", 1.0, ISO, T0)
    assert repr(grows) == "<RollingFrame 1/4,096 rows (grows) | 1 pair | window 90s>"


def test_every_row_says_where_it_came_from() -> None:
    """Rows keep their batch's origin (stream, history, healed) through the scalar and vectorised paths."""
    frame = RollingFrame(100)
    live = rate_batch([(T0 + i, "A/B", 1.0, ISO) for i in range(3)])
    frame.extend(live, T0)
    history = rate_batch([(T0 - 100 + i, "A/B", 2.0, ISO) for i in range(20)])
    frame.extend(RateBatch(history.keys, history.code, history.time_ns, history.rate, HISTORY), T0)
    one = rate_batch([(T0 - 50, "A/B", 3.0, ISO)])
    frame.extend(RateBatch(one.keys, one.code, one.time_ns, one.rate, HEALED), T0)
    origins = frame.snapshot()["origin"]
    assert list(origins.cat.categories) == ["stream", "history", "healed"]
    assert origins.tolist() == ["stream"] * 3 + ["history"] * 20 + ["healed"]


def test_latest_is_the_newest_live_rate_after_a_heal() -> None:
    """Healed rows of a gap arrive after the live row that closed it: latest() keeps the live one."""
    frame = RollingFrame(max_rows=100)
    put(frame, T0 + 100 * SEC, "BTC/USD", 100.0)
    healed = rate_batch([(T0 + t * SEC, "BTC/USD", float(t), ISO) for t in range(80, 92)])
    frame.extend(RateBatch(healed.keys, healed.code, healed.time_ns, healed.rate, HEALED), T0 + 101 * SEC)
    one = rate_batch([(T0 + 95 * SEC, "BTC/USD", 95.0, ISO)])
    frame.extend(RateBatch(one.keys, one.code, one.time_ns, one.rate, HEALED), T0 + 102 * SEC)  # the scalar path
    latest = frame.latest(now_ns=T0 + 102 * SEC)
    assert latest.loc["BTC/USD", "rate"] == 100.0 and latest.loc["BTC/USD", "age"] == pd.Timedelta(seconds=2)
    put(frame, T0 + 103 * SEC, "BTC/USD", 103.0)
    assert frame.latest().loc["BTC/USD", "rate"] == 103.0
