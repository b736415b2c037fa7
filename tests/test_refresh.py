"""The pure redraw rule (ui.throttle), the plot math (ui.series), and the refresher that drives views (ui.refresh)."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
import weakref
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coinrates_nb.batch import RateBatch
from coinrates_nb.exceptions import ConfigError
from coinrates_nb.frame import RollingFrame
from coinrates_nb.status import Status
from coinrates_nb.ui.refresh import Refresher, Tick, View
from coinrates_nb.ui.series import downsample_minmax, ns_to_ms
from coinrates_nb.ui.throttle import Throttle, data_version
from tests.helpers import SLOW, put, wait_until

# ------------------------------------------------------------------------------------ doubles


def make_status(**changes: Any) -> Status:
    fields: dict[str, Any] = dict(
        state="connected", source="simulated", url=None, scope=("BTC/USD",), messages=0, rates=0, msgs_per_s=0.0,
        heartbeats=0, unknown=0, rejected={}, duplicates=0, connections=1, reconnects=0, server_errors=0,
        last_error=None, lag_ms=None, stale_pairs=(), rows=0, uptime_s=0.0)
    fields.update(changes)
    return Status(**fields)


class FakeSource:
    """A collector stand-in: a real RollingFrame, a fixed status, and a count of snapshots taken."""

    def __init__(self) -> None:
        self.frame = RollingFrame(max_rows=10_000)
        self.snapshots = 0
        real = self.frame.snapshot

        def counting(*args: Any, **kwargs: Any) -> pd.DataFrame:
            self.snapshots += 1
            return real(*args, **kwargs)

        self.frame.snapshot = counting  # type: ignore[method-assign]
        self._t = 1_700_000_000_000_000_000

    @property
    def status(self) -> Status:
        return make_status(rows=len(self.frame))

    def add(self, n: int = 1, pair: str = "BTC/USD") -> None:
        """Store ``n`` rows of ``pair``, 1 ms apart, as one batch (as the collector stores a burst)."""
        base, _, quote = pair.partition("/")
        times = self._t + 1_000_000 * np.arange(1, n + 1, dtype=np.int64)
        self._t = int(times[-1])
        rates = 100.0 + np.array([random.random() for _ in range(n)])
        batch = RateBatch([(base, quote, "BASE_QUOTE_ISOLATED")], np.zeros(n, np.intp), times, rates)
        self.frame.extend(batch, times)


class RecordingView(View):
    """A view that records each draw: thread, row count seen; can be told to fail or hide."""

    def __init__(self, fps: float = 4.0, *, always: bool = False) -> None:
        super().__init__(fps, always=always)
        self.draws: list[tuple[str, int]] = []
        self.shown: list[str | None] = []
        self.fail: Exception | None = None
        self.hidden = False
        self.closed = False

    @property
    def alive(self) -> bool:
        return not self.closed

    @property
    def visible(self) -> bool:
        return not self.hidden

    def draw(self, tick: Tick) -> None:
        if self.fail is not None:
            raise self.fail
        self.draws.append((threading.current_thread().name, len(tick.df)))

    def show_error(self, message: str | None) -> None:
        self.shown.append(message)


# ------------------------------------------------------------------------------------ Throttle


def test_throttle_first_redraw_is_due_at_once() -> None:
    """A fresh throttle allows a redraw immediately."""
    throttle = Throttle(4)
    assert throttle.due(123.0) and throttle.wait(123.0) == 0.0


def test_throttle_spacing_is_one_interval() -> None:
    """After a redraw, the next is due exactly 1/fps later, not before."""
    throttle = Throttle(4)
    throttle.mark(10.0)
    assert not throttle.due(10.0)
    assert not throttle.due(10.2499)
    assert throttle.wait(10.1) == pytest.approx(0.15)
    assert throttle.due(10.25) and throttle.wait(10.25) == 0.0


def test_throttle_needs_a_change() -> None:
    """Nothing new to draw means not due, however long since the last redraw."""
    throttle = Throttle(2)
    assert not throttle.due(0.0, changed=False)
    throttle.mark(0.0)
    assert not throttle.due(100.0, changed=False) and throttle.due(100.0, changed=True)


def test_throttle_coalesces_any_message_rate() -> None:
    """50,000 messages in 10 s at random instants give at most fps redraws per second."""
    rng = random.Random(7)
    fps = 4
    throttle = Throttle(fps)
    redraws = []
    for now in sorted(rng.uniform(0.0, 10.0) for _ in range(50_000)):
        if throttle.due(now):
            throttle.mark(now)
            redraws.append(now)
    assert len(redraws) == 10 * fps  # dense arrivals: one redraw every 1/fps s, from the first arrival on
    assert min(np.diff(redraws)) >= 1 / fps
    assert [sum(second <= r < second + 1 for r in redraws) for second in range(10)] == [fps] * 10


def test_throttle_reset_allows_an_immediate_redraw() -> None:
    """reset() forgets the last redraw (used when the user changes what a view shows)."""
    throttle = Throttle(1)
    throttle.mark(5.0)
    throttle.reset()
    assert throttle.due(5.01)


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), True, "4"])
def test_throttle_rejects_bad_fps(fps: Any) -> None:
    """fps must be a positive finite number; anything else is a ConfigError naming fps."""
    with pytest.raises(ConfigError, match="fps must be a positive number"):
        Throttle(fps)


# ------------------------------------------------------------------------------------ downsampling


def random_walk(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 1.7e12 + np.cumsum(rng.exponential(10.0, n))
    y = 100 + np.cumsum(rng.normal(0, 1, n))
    return x, y


def reference_minmax(x: np.ndarray, y: np.ndarray, max_points: int) -> np.ndarray:
    """The indices min/max decimation keeps, written the slow, obvious way (one Python loop per bucket)."""
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    buckets = (max_points - 2) // 2
    edges = [x[0] + (x[-1] - x[0]) * (k / buckets) for k in range(buckets)]
    members: dict[int, list[int]] = {}
    for i, xi in enumerate(x):
        k = max(j for j, edge in enumerate(edges) if edge <= xi)  # the last edge at or before xi
        members.setdefault(k, []).append(i)
    keep = {0, n - 1}
    for idx in members.values():
        values = [y[i] for i in idx if not np.isnan(y[i])]
        if values:
            keep.add(next(i for i in idx if y[i] == min(values)))
            keep.add(next(i for i in idx if y[i] == max(values)))
    return np.array(sorted(keep))


@pytest.mark.parametrize("case", ["walk", "spikes", "gap", "nan", "constant-x"])
def test_downsample_keeps_exactly_what_the_reference_keeps(case: str) -> None:
    """The vectorised decimation keeps exactly the reference's points: both ends plus each bucket's first min and max."""
    x, y = random_walk(6_000, seed=11)
    if case == "spikes":
        y = np.zeros(6_000)
        y[4321], y[777] = 50.0, -50.0
    elif case == "gap":
        x = np.concatenate([np.arange(3_000.0), 1e6 + np.arange(3_000.0)])
    elif case == "nan":
        y = y.copy()
        y[::7] = np.nan
    elif case == "constant-x":
        x = np.full(6_000, 3.0)
    dx, dy = downsample_minmax(x, y, 200)
    idx = reference_minmax(x, y, 200)
    assert np.array_equal(dx, x[idx]) and np.array_equal(dy, y[idx], equal_nan=True)
    assert len(dx) <= 200


def test_downsample_leaves_short_lines_alone() -> None:
    """A line already within max_points is returned unchanged (as float64)."""
    x, y = random_walk(1500)
    dx, dy = downsample_minmax(x, y, 2000)
    assert np.array_equal(dx, x) and np.array_equal(dy, y) and dx.dtype == np.float64


def test_downsample_bounds_points_and_keeps_extremes_and_ends() -> None:
    """100k points become at most max_points, including both ends and the global min and max."""
    x, y = random_walk(100_000)
    dx, dy = downsample_minmax(x, y, 2000)
    assert len(dx) == 2_000  # 999 buckets x (min, max), distinct here, plus both ends
    assert dx[0] == x[0] and dx[-1] == x[-1] and dy[-1] == y[-1]
    assert dy.max() == y.max() and dy.min() == y.min()
    assert np.all(np.diff(dx) >= 0)


def test_downsample_returns_only_input_points() -> None:
    """Every returned (x, y) pair exists in the input: nothing is interpolated."""
    x, y = random_walk(20_000)
    dx, dy = downsample_minmax(x, y, 500)
    idx = np.searchsorted(x, dx)
    assert np.array_equal(x[idx], dx) and np.array_equal(y[idx], dy)


def test_downsample_keeps_every_bucket_extreme() -> None:
    """Each equal-width bucket's min and max survive, so a one-point spike is never lost."""
    x = np.arange(10_000, dtype=float)
    y = np.zeros(10_000)
    y[4321], y[777] = 50.0, -50.0
    dx, _ = downsample_minmax(x, y, 100)
    assert 4321.0 in dx and 777.0 in dx and len(dx) <= 100
    _, walk = random_walk(10_000, seed=9)
    wx, wy = downsample_minmax(x, walk, 100)
    edges = np.linspace(0, 9999, (100 - 2) // 2 + 1)  # the function's buckets for max_points=100
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = k == len(edges) - 2
        inside = (x >= lo) & ((x <= hi) if last else (x < hi))
        kept = wy[(wx >= lo) & ((wx <= hi) if last else (wx < hi))]
        assert walk[inside].max() in kept and walk[inside].min() in kept, k


def test_downsample_keeps_gaps() -> None:
    """Buckets are equal-width in x, so a gap in time stays a gap (no bucket straddles it with many points)."""
    x = np.concatenate([np.arange(5000.0), 1e6 + np.arange(5000.0)])
    y = np.sin(x)
    dx, _ = downsample_minmax(x, y, 200)
    assert ((dx >= 5000) & (dx < 1e6)).sum() == 0  # no point in the gap (there is none to keep)
    # ~10,150-wide buckets: each run falls in one bucket, kept as its min and max plus the line's end there.
    assert (dx < 5000).sum() == 3 and (dx >= 1e6).sum() == 3


def test_downsample_constant_x_and_nan() -> None:
    """Identical x values collapse into one bucket; NaNs are skipped when finding extremes."""
    x = np.full(5000, 3.0)
    y = np.arange(5000.0)
    dx, dy = downsample_minmax(x, y, 100)
    assert set(dy) == {0.0, 4999.0}
    y = np.arange(5000.0)
    y[10] = np.nan
    _, dy = downsample_minmax(np.arange(5000.0), y, 100)
    assert np.nanmax(dy) == 4999.0 and np.nanmin(dy) == 0.0


def test_downsample_rejects_bad_input() -> None:
    """Mismatched lengths, 2-D input and a max_points that is not a whole number >= 4 are ConfigErrors."""
    with pytest.raises(ConfigError, match="equal length"):
        downsample_minmax([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="1-D"):
        downsample_minmax(np.zeros((2, 2)), np.zeros((2, 2)))
    for bad in (3, "100", 2.5, True, None):
        with pytest.raises(ConfigError, match="at least 4"):
            downsample_minmax(np.arange(10), np.arange(10), bad)  # type: ignore[arg-type]


def test_ns_to_ms_matches_the_calendar() -> None:
    """Epoch ns become float64 epoch ms, the unit plotly.js reads on a date axis."""
    stamp = pd.Timestamp("2024-01-01T00:00:00.123456789Z")
    ms = ns_to_ms(np.array([stamp.value], dtype=np.int64))
    assert ms.dtype == np.float64
    assert ms[0] == pytest.approx(1_704_067_200_123.456789, abs=1e-3)
    assert ns_to_ms(np.array([stamp.value], dtype="datetime64[ns]"))[0] == ms[0]
    assert pd.Timestamp(ms[0], unit="ms").strftime("%Y-%m-%d") == "2024-01-01"


# ------------------------------------------------------------------------------------ Tick


def test_tick_series_is_time_sorted_per_pair_and_shared() -> None:
    """A tick splits the snapshot per pair in time order, taking the snapshot once for all readers."""
    source = FakeSource()
    base = 1_700_000_000_000_000_000
    for i, t in enumerate([5, 3, 4, 1]):
        put(source.frame, base + t, "BTC/USD" if i % 2 == 0 else "ETH/USD", float(t), received_ns=base)
    tick = Tick(source)
    series = tick.series
    assert list(series) == ["BTC/USD", "ETH/USD"]
    assert series["BTC/USD"][0].tolist() == [base + 4, base + 5] and series["BTC/USD"][1].tolist() == [4.0, 5.0]
    assert tick.newest_ns == base + 5
    _ = tick.df, tick.series
    assert source.snapshots == 1


def test_data_version_changes_with_rows() -> None:
    """The data version moves on every stored batch and on clear, and stays put otherwise."""
    source = FakeSource()
    v0 = data_version(source.frame)
    source.add()
    v1 = data_version(source.frame)
    assert data_version(source.frame) == v1  # no new rows: same version
    source.frame.clear()
    assert len({v0, v1, data_version(source.frame)}) == 3


# ------------------------------------------------------------------------------------ Refresher.tick


def test_tick_redraws_due_views_from_one_snapshot() -> None:
    """Several due views redraw from one shared snapshot; unchanged data redraws nothing."""
    source = FakeSource()
    refresher = Refresher(source)
    views = [RecordingView(4) for _ in range(3)]
    refresher._views = [weakref.ref(v) for v in views]  # drive by hand: no thread
    source.add(5)
    assert refresher.tick(now=0.0) == 3 and source.snapshots == 1
    assert refresher.tick(now=1.0) == 0 and source.snapshots == 1  # nothing new
    source.add()
    assert refresher.tick(now=1.1) == 3 and source.snapshots == 2
    assert all(v.draws[-1][1] == 6 for v in views)


def test_tick_coalesces_bursts_between_redraws() -> None:
    """Rows arriving between two due instants produce one redraw, not one per row."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(2)
    refresher._views = [weakref.ref(view)]
    for k in range(40):  # 40 ticks 0.1 s apart = 4 s, 25 rows between ticks
        source.add(25)
        refresher.tick(now=k / 10)
    # 2 fps: redraws at ticks 0, 5, 10, ... 35 (0.5 s apart), each showing every row stored by then.
    assert [rows for _, rows in view.draws] == [25 * (k + 1) for k in range(0, 40, 5)]


def test_tick_skips_hidden_and_drops_closed_views() -> None:
    """Hidden views are skipped (and redrawn once shown); closed views are forgotten."""
    source = FakeSource()
    refresher = Refresher(source)
    shown, hidden, closed = RecordingView(), RecordingView(), RecordingView()
    hidden.hidden = True
    closed.closed = True
    refresher._views = [weakref.ref(v) for v in (shown, hidden, closed)]
    source.add()
    refresher.tick(now=0.0)
    assert len(shown.draws) == 1 and hidden.draws == [] and closed.draws == []
    assert refresher.views() == [shown, hidden]
    hidden.hidden = False
    refresher.tick(now=0.01)
    assert len(hidden.draws) == 1 and len(shown.draws) == 1


def test_always_views_redraw_without_new_rows() -> None:
    """A status-style view (always=True) redraws at its fps even when no rows arrive."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(2, always=True)
    refresher._views = [weakref.ref(view)]
    for k in range(10):
        refresher.tick(now=k * 0.5)
    assert len(view.draws) == 10


def test_errors_are_counted_shown_logged_then_cleared(caplog: pytest.LogCaptureFixture) -> None:
    """A failing draw is logged with its traceback, shown on the view, and cleared by the next success."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(10)
    refresher._views = [weakref.ref(view)]
    view.fail = RuntimeError("boom")
    source.add()
    with caplog.at_level(logging.ERROR, logger="coinrates_nb.ui.refresh"):
        assert refresher.tick(now=0.0) == 0
    assert view.errors == 1 and view.last_error == "RuntimeError: boom"
    assert view.shown == ["refresh error: RuntimeError: boom"]
    assert any(r.exc_info for r in caplog.records) and "boom" in caplog.text
    view.fail = None
    source.add()
    assert refresher.tick(now=1.0) == 1
    assert view.shown[-1] is None and view.last_error is None


def test_invalidate_forces_a_redraw() -> None:
    """invalidate() makes an unchanged view due again at once."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(1)
    refresher._views = [weakref.ref(view)]
    source.add()
    refresher.tick(now=0.0)
    assert refresher.tick(now=0.1) == 0
    view.invalidate()
    assert refresher.tick(now=0.2) == 1


def test_next_wait_polls_at_fps_not_in_a_busy_loop() -> None:
    """With nothing new, the refresher sleeps one interval of its fastest view, never zero."""
    source = FakeSource()
    refresher = Refresher(source)
    fast, slow = RecordingView(5), RecordingView(1)
    refresher._views = [weakref.ref(v) for v in (fast, slow)]
    source.add()
    refresher.tick(now=0.0)
    assert refresher.next_wait(0.05) == pytest.approx(0.15)
    assert refresher.next_wait(10.0) == pytest.approx(0.2)
    refresher._views = []
    assert refresher.next_wait(10.0) == 1.0


# ------------------------------------------------------------------------------------ Refresher thread


def test_one_refresher_per_source_and_mode() -> None:
    """Views of one collector share one refresher; another collector gets its own."""
    a, b = FakeSource(), FakeSource()
    assert Refresher.for_source(a) is Refresher.for_source(a)
    assert Refresher.for_source(a) is not Refresher.for_source(b)


def test_thread_redraws_at_most_fps_and_stops_when_views_are_gone() -> None:
    """The thread redraws a busy source at most fps times a second, then ends once its views are collected."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(5)
    draws = view.draws
    refresher.add(view)
    assert refresher.running
    stop = threading.Event()

    def feed() -> None:
        while not stop.is_set():
            source.add(10)
            time.sleep(0.001)

    feeder = threading.Thread(target=feed, daemon=True)
    started = time.monotonic()
    feeder.start()
    try:
        wait_until(lambda: len(draws) >= 4, timeout=30, message="the refresher never redrew")
    finally:
        stop.set()
        feeder.join(10)
    elapsed = time.monotonic() - started
    assert len(draws) <= 5 * elapsed + 2
    assert {name for name, _ in draws} == {"coinrates-refresh"}
    del view
    gc.collect()
    refresher.join(10)
    assert not refresher.running and refresher.views() == []


def test_thread_stops_when_the_last_view_closes() -> None:
    """A closed (not yet collected) view is dropped and the thread ends; adding a view starts it again."""
    source = FakeSource()
    refresher = Refresher(source)
    view = RecordingView(20)
    refresher.add(view)
    source.add()
    wait_until(lambda: view.draws, timeout=30)
    view.closed = True
    refresher.wake()
    refresher.join(10)
    assert not refresher.running
    again = RecordingView(20)
    refresher.add(again)
    source.add()
    wait_until(lambda: again.draws, timeout=30, message="a new view did not restart the refresher")
    refresher.stop()
    assert not refresher.running


def test_loop_mode_draws_on_the_captured_event_loop() -> None:
    """mode="loop" hands ticks to the event loop running where the refresher was made, via call_soon_threadsafe."""
    source = FakeSource()
    source.add()
    view = RecordingView(20)

    async def main() -> tuple[Refresher, int]:
        refresher = Refresher(source, mode="loop")
        refresher.add(view)
        deadline = time.monotonic() + 30 * SLOW
        while not view.draws and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return refresher, threading.get_ident()

    refresher, loop_thread = asyncio.run(main())
    refresher.stop()
    assert refresher.mode == "loop"
    assert view.draws and {name for name, _ in view.draws} == {threading.current_thread().name}
    assert loop_thread == threading.get_ident()


def test_loop_mode_without_a_running_loop_falls_back_to_the_thread() -> None:
    """Outside an event loop (a plain script) "loop" mode falls back to redrawing from the thread."""
    assert Refresher(FakeSource(), mode="loop").mode == "thread"


@pytest.mark.parametrize("mode", ["gui", "", None, 1])
def test_refresher_rejects_an_unknown_mode(mode: Any) -> None:
    """A mode other than "thread" or "loop" is a ConfigError that names both."""
    with pytest.raises(ConfigError, match="mode must be 'thread'.*'loop'"):
        Refresher(FakeSource(), mode=mode)


# ------------------------------------------------------------------------------------ gaps (series)


def test_gap_threshold_is_five_seconds_or_ten_spacings() -> None:
    """A 10 Hz pair has a gap after 5 s of silence; a pair updating every 2 s after 20 s."""
    from coinrates_nb.ui.series import gap_threshold_ns

    fast = np.arange(100, dtype=np.int64) * 100_000_000
    slow = np.arange(100, dtype=np.int64) * 2_000_000_000
    assert gap_threshold_ns(fast) == 5_000_000_000 and gap_threshold_ns(slow) == 20_000_000_000
    assert gap_threshold_ns(fast[:2]) == 5_000_000_000


def test_gaps_of_matches_the_accessor() -> None:
    """gaps_of finds the same silences as df.rates.gaps (strictly longer than the threshold)."""
    from coinrates_nb.ui.series import gaps_of

    frame = RollingFrame()
    times = [0, 1, 2, 9, 10, 20]
    for second in times:
        put(frame, 1_700_000_000_000_000_000 + second * 1_000_000_000, "BTC/USD", 100.0 + second)
    t = np.asarray(frame.snapshot().index.asi8)
    starts, ends = gaps_of(t, 5_000_000_000)
    expected = frame.snapshot().rates.gaps("5s")
    assert list(starts) == list(expected["start"].astype("int64")) and list(ends) == list(expected["end"].astype("int64"))


def test_break_gaps_puts_a_nan_between_the_points_around_each_gap() -> None:
    """One NaN per gap, at the middle of the hole; nothing else changes (decimated lines too)."""
    from coinrates_nb.ui.series import break_gaps

    x = np.array([0.0, 1.0, 2.0, 10.0, 11.0, 30.0])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    bx, by = break_gaps(x, y, np.array([2.0, 11.0]))
    assert list(bx) == [0.0, 1.0, 2.0, 6.0, 10.0, 11.0, 20.5, 30.0]
    assert np.isnan(by[[3, 6]]).all() and list(by[~np.isnan(by)]) == list(y)
    bx, _ = break_gaps(x[[0, 4, 5]], y[[0, 4, 5]], np.array([2.0]))  # decimated: the gap start itself was dropped
    assert list(bx) == [0.0, 5.5, 11.0, 30.0]
    assert break_gaps(x, y, np.empty(0))[0] is x


def test_common_gaps_are_where_every_pair_was_silent() -> None:
    """Shading covers only the spans all pairs share (a stop/start), not one quiet pair's silence."""
    from coinrates_nb.ui.series import common_gaps

    a = (np.array([10, 50]), np.array([30, 60]))
    b = (np.array([15, 70]), np.array([40, 80]))
    assert common_gaps([a, b]) == [(15, 30)]
    assert common_gaps([a]) == [(10, 30), (50, 60)] and common_gaps([]) == []


def test_windowed_cuts_both_ends() -> None:
    """windowed keeps [since, until] of a sorted series; None leaves an end open."""
    from coinrates_nb.ui.series import windowed

    t = np.arange(10, dtype=np.int64)
    r = t.astype(np.float64)
    assert list(windowed(t, r, 3, 6)[0]) == [3, 4, 5, 6] and list(windowed(t, r, None, 2)[0]) == [0, 1, 2]
    assert windowed(t, r, None, None)[0] is t


# ------------------------------------------------------------------------------------ follow


def test_a_zoom_pauses_and_autorange_follows_again() -> None:
    """xaxis.range[0/1] pauses on that range; xaxis.autorange resumes; y-only zooms change nothing."""
    from coinrates_nb.ui.follow import LIVE_TEXT, PAUSED_TEXT, Follow

    follow = Follow()
    assert follow.live and follow.cue == LIVE_TEXT
    assert not follow.on_relayout({"yaxis.range[0]": 1, "yaxis.range[1]": 2})
    assert follow.on_relayout({"xaxis.range[0]": "2026-12-01 22:14:05.5", "xaxis.range[1]": "2026-12-01 22:15:05"})
    lo = pd.Timestamp("2026-12-01T22:14:05.5Z").value
    assert follow.range_ns == (lo, lo + 59_500_000_000) and follow.cue == PAUSED_TEXT
    assert follow.frozen(lo + 60 * 10**9) and not follow.frozen(lo)
    assert follow.on_relayout({"xaxis2.range": [1_700_000_000_000, 1_700_000_060_000]})  # a shared OHLC axis, in ms
    assert follow.range_ns == (1_700_000_000_000_000_000, 1_700_000_060_000_000_000)
    assert follow.on_relayout({"xaxis.autorange": True, "yaxis.autorange": True}) and follow.live
    assert not follow.on_relayout({"xaxis.range[0]": "not a time", "xaxis.range[1]": None})
    assert follow.live and not follow.resume()


# ------------------------------------------------------------------------------------ the chart budget


def test_budget_allows_rate_per_second_on_average() -> None:
    """A 2/s budget gives one redraw at once, then one every 0.5 s, however often it is asked."""
    from coinrates_nb.ui.throttle import Budget

    budget = Budget(2.0)
    asked = [i * 0.05 for i in range(41)]  # 2 s of asking at 20 Hz
    granted = [t for t in asked if budget.take(t)]
    assert len(granted) == 5 and granted[0] == 0.0
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(granted, granted[1:], strict=False))
    assert budget.wait(2.0) == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ConfigError):
        Budget(0)


class ChartLike(RecordingView):
    """A costly view (a chart) that records its draws."""

    costly = True


def test_charts_share_the_budget_oldest_first_and_text_views_do_not_wait() -> None:
    """Three 1 fps charts share one redraw a second, the longest-waiting first; a status view is never held back."""
    source = FakeSource()
    refresher = Refresher(source, clock=lambda: 0.0)
    charts = [ChartLike(fps=1.0) for _ in range(3)]
    status = RecordingView(fps=1.0, always=True)
    for view in [*charts, status]:
        refresher._views.append(weakref.ref(view))
    drawn_at: dict[int, list[float]] = {i: [] for i in range(3)}
    for step in range(41):  # 10 s at 4 ticks a second, new rows each tick
        now = step * 0.25
        source.add(1)
        before = [len(c.draws) for c in charts]
        refresher.tick(now)
        for i, chart in enumerate(charts):
            if len(chart.draws) > before[i]:
                drawn_at[i].append(now)
    total = sum(len(times) for times in drawn_at.values())
    assert 10 <= total <= 11  # 1/s over 10 s, not 3/s
    assert all(len(times) >= 3 for times in drawn_at.values())  # fair: each gets its share
    assert len(status.draws) >= 10 and refresher.deferred > 0
    one = Refresher(source, clock=lambda: 0.0)
    fast = ChartLike(fps=4.0)
    one._views.append(weakref.ref(fast))
    for step in range(40):
        source.add(1)
        one.tick(step * 0.25)
    assert len(fast.draws) >= 39  # a chart alone that asked for 4 fps gets 4 fps


def test_a_chart_held_back_by_the_budget_is_looked_at_again_when_a_redraw_is_available() -> None:
    """next_wait after a deferral is the budget's wait (1 s at 1/s), not the chart's whole 2 s interval."""
    source = FakeSource()
    refresher = Refresher(source, clock=lambda: 0.0)
    charts = [ChartLike(fps=0.5) for _ in range(2)]
    for view in charts:
        refresher._views.append(weakref.ref(view))
    source.add(1)
    refresher.tick(0.0)  # one draws, the other is deferred
    assert sum(len(c.draws) for c in charts) == 1 and refresher.deferred == 1
    assert refresher.next_wait(0.0) == pytest.approx(1.0)
