"""Live Plotly charts: traces per pair, float64-ms dates, bounded payloads, lifecycle, errors, real kernel."""

from __future__ import annotations

import gc
import inspect
import threading
import time
import weakref
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import coinrates_nb as cr
from coinrates_nb import _cells
from coinrates_nb._badge import SIMULATED_COLOR
from coinrates_nb.batch import RateBatch
from coinrates_nb.frame import RollingFrame
from coinrates_nb.sim.server import Simulator
from coinrates_nb.status import Status
from coinrates_nb.ui import plots
from coinrates_nb.ui.plots import ChartView, OhlcView
from coinrates_nb.ui.refresh import Tick
from coinrates_nb.ui.series import ns_to_ms, ohlc_arrays
from tests.helpers import wait_until
from tests.test_refresh import make_status

PAIRS = ["BTC/USD", "ETH/USD", "BTC/EUR"]
SECOND = 1_000_000_000


class FakeSource:
    """A collector stand-in: a real RollingFrame and a settable status."""

    def __init__(self, simulated: bool = True, rows: int = 0, pairs: tuple[str, ...] = tuple(PAIRS)) -> None:
        self.frame = RollingFrame(max_rows=100_000)
        self.simulated = simulated
        self.pairs = pairs
        self.state = "connected"
        self.now = time.time_ns() - rows * 10_000_000
        if rows:
            self.fill(rows)

    @property
    def status(self) -> Status:
        return make_status(state=self.state, source="simulated" if self.simulated else "live", scope=self.pairs,
                           rates=len(self.frame), rows=len(self.frame))

    def fill(self, n: int, step_ns: int = 10_000_000, pairs: list[str] | None = None) -> None:
        """Store n rows as one batch, cycling through pairs, 10 ms apart, as a random walk."""
        names = pairs or PAIRS
        times = self.now + step_ns * np.arange(1, n + 1, dtype=np.int64)
        self.now = int(times[-1])
        rng = np.random.default_rng(len(self.frame))
        rates = 100 + np.cumsum(rng.normal(0, 0.1, n))
        keys = [(*name.split("/"), "BASE_QUOTE_ISOLATED") for name in names]
        codes = np.arange(n, dtype=np.intp) % len(names)
        self.frame.extend(RateBatch(keys, codes, times, rates), times)  # type: ignore[arg-type]

    def rows(self, pair: str, window_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The pair's (time ns, rate) rows within ``window_ns`` of the newest row: what a chart should show."""
        df = self.frame.snapshot()
        times = df.index.asi8
        keep = (df["pair"] == pair).to_numpy()
        if window_ns is not None:
            keep = keep & (times >= times.max() - window_ns)
        return times[keep], df["rate"].to_numpy()[keep]


class CommSpy:
    """Records every message a widget sends instead of a kernel comm.

    ipywidgets < 8.0.5 sends nothing while ``comm.kernel`` is None (no kernel under pytest): an
    unstarted ipykernel ``Kernel`` (no sockets; not the singleton) lets those versions send too.
    """

    def __init__(self, widget: Any) -> None:
        self.messages: list[tuple[dict[str, Any], list[Any]]] = []
        widget.comm.send = self.send
        if getattr(widget.comm, "kernel", True) is None:
            from ipykernel.kernelbase import Kernel

            widget.comm.kernel = Kernel()

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        self.messages.append((data, list(buffers or [])))

    def updates(self) -> list[tuple[dict[str, Any], list[Any]]]:
        return [(d, b) for d, b in self.messages if (d.get("state") or {}).get("_py2js_update")]


def view_of(fig: Any) -> Any:
    return fig._coinrates_view


def redraw(fig: Any, source: Any) -> None:
    """Draw a view once, now, on this thread (deterministic; the refresher's thread also may)."""
    view = view_of(fig)
    view.run(Tick(source), time.monotonic(), object())


# ------------------------------------------------------------------------------------ live_chart


def test_live_chart_draws_one_trace_per_pair_with_ms_dates(closing: list[Any]) -> None:
    """One trace per pair; x is float64 epoch ms of today on a date axis, set in the template too."""
    source = FakeSource(rows=3_000)
    fig = cr.live_chart(source)
    closing.append(fig)
    assert isinstance(fig, go.FigureWidget)
    assert [t.name for t in fig.data] == PAIRS
    x = np.asarray(fig.data[0].x)
    assert x.dtype == np.float64 and len(x) == 1_000
    assert pd.Timestamp(x[-1], unit="ms", tz="UTC").date() == pd.Timestamp.now(tz="UTC").date()
    assert fig.layout.xaxis.type == "date" and fig.layout.template.layout.xaxis.type == "date"


def test_a_redraw_sends_one_update_of_float64_buffers_under_64kb_per_trace(closing: list[Any]) -> None:
    """At a 100k-row window one redraw is one update message, float64 binary buffers, <= 2,000 points per trace."""
    source = FakeSource(rows=100_000)
    fig = cr.live_chart(source)
    closing.append(fig)
    spy = CommSpy(fig)
    with view_of(fig).lock:
        source.fill(30)
        redraw(fig, source)
    updates = spy.updates()
    assert len(updates) == 1
    data, buffers = updates[0]
    style = data["state"]["_py2js_update"]["style_data"]
    assert {entry["dtype"] for key in ("x", "y") for entry in style[key]} == {"float64"}
    assert all(entry["shape"][0] <= 2_000 for entry in style["x"])
    sizes = [memoryview(b).nbytes for b in buffers]
    assert len(sizes) == 2 * len(PAIRS)
    per_trace = (sum(sizes) + len(str(data))) / len(PAIRS)
    assert per_trace <= 64_000, per_trace


def test_naive_datetime64_is_what_we_avoid() -> None:
    """Plotly serialises datetime64[ns] x as integer ns lists (read as ms by plotly.js): the reason for float ms."""
    fig = go.FigureWidget(data=[go.Scatter(x=np.array(["2024-01-01T00:00:00"], dtype="datetime64[ns]"), y=[1.0])])
    try:
        spy = CommSpy(fig)
        with fig.batch_update():
            fig.data[0].x = np.array(["2024-01-02T00:00:00"], dtype="datetime64[ns]")
        (data, buffers), = spy.updates()
        assert buffers == [] and data["state"]["_py2js_update"]["style_data"]["x"] == [[1_704_153_600_000_000_000]]
    finally:
        fig.close()


def test_window_shows_only_recent_rows(closing: list[Any]) -> None:
    """window= keeps only rows within that span of the newest row."""
    source = FakeSource(rows=6_000)  # 60 s of rows, 10 ms apart
    fig = cr.live_chart(source, window="10s")
    closing.append(fig)
    for trace in fig.data:
        t, r = source.rows(trace.name, window_ns=10 * SECOND)
        # rows k = 5000..6000 (10 ms apart) are in the 10 s span; pair k % 3 -> 333, 334, 334 of them
        assert len(t) == {"BTC/USD": 333, "ETH/USD": 334, "BTC/EUR": 334}[trace.name]
        assert np.array_equal(np.asarray(trace.x), ns_to_ms(t)) and np.array_equal(np.asarray(trace.y), r)


def test_pairs_filter_and_traces_follow_the_subscription(closing: list[Any]) -> None:
    """pairs= limits the traces; with pairs=None the lines follow the source's subscription, not the buffer."""
    source = FakeSource(rows=300)
    only = cr.live_chart(source, ["ETH/USD"])
    closing.append(only)
    assert [t.name for t in only.data] == ["ETH/USD"]
    fig = cr.live_chart(source, window="2s")
    closing.append(fig)
    with view_of(fig).lock:
        source.fill(30, pairs=["SOL/USD"])  # rows of a pair outside the subscription: not drawn
        redraw(fig, source)
        assert [t.name for t in fig.data] == PAIRS
        source.pairs = (*PAIRS, "SOL/USD")  # subscribed: drawn, in a row of its own
        redraw(fig, source)
        assert [t.name for t in fig.data] == [*PAIRS, "SOL/USD"] and fig.data[3].yaxis == "y4"
        source.pairs = ("ETH/USD", "SOL/USD")  # unsubscribed: gone at once, though their rows stay in the buffer
        redraw(fig, source)
        assert [t.name for t in fig.data] == ["ETH/USD", "SOL/USD"]
        assert [t.yaxis for t in fig.data] == ["y", "y2"] and not fig.layout.to_plotly_json().get("yaxis3")


def test_a_page_that_connects_later_gets_the_figure_as_it_is(closing: list[Any]) -> None:
    """The widget's state (what Voila or a reloaded tab fetches) follows new lines and layout; new points alone leave it."""
    source = FakeSource(rows=300)
    board = cr.dashboard(source, window="2s")  # a chart inside a box: its own _repr_mimebundle_ never runs
    closing.append(board)
    fig = board.chart
    spy = CommSpy(fig)
    state = lambda: ([t["name"] for t in fig._widget_data], fig._widget_layout.get("height"))  # noqa: E731
    assert state() == (PAIRS, fig.layout.height)  # the first draw (before display) is in it
    with view_of(fig).lock:
        source.fill(30)
        redraw(fig, source)  # new points only: the state is not re-sent
        assert not [d for d, _ in spy.messages if "_widget_data" in (d.get("state") or {})]
        source.pairs = (*PAIRS, "SOL/USD")
        source.fill(30, pairs=["SOL/USD"])
        redraw(fig, source)  # a new line and a new row: the state is the figure as it is now
    assert state() == ([*PAIRS, "SOL/USD"], fig.layout.height) and fig.layout.height > 300
    sent = [d["state"] for d, _ in spy.messages if "_widget_data" in (d.get("state") or {})]
    assert len(sent) == 1 and [t["name"] for t in sent[0]["_widget_data"]] == [*PAIRS, "SOL/USD"]
    np.testing.assert_array_equal(fig._widget_data[3]["y"], fig.data[3].y)


def test_a_whole_stream_chart_draws_the_pairs_in_its_window(closing: list[Any]) -> None:
    """With no subscription list (the whole stream) a new pair adds a line and a pair gone from the window drops it."""
    source = FakeSource(rows=300)
    source.pairs = None  # type: ignore[assignment]
    fig = cr.live_chart(source, window="2s")
    closing.append(fig)
    with view_of(fig).lock:
        source.fill(30, pairs=["SOL/USD"])
        redraw(fig, source)
        assert [t.name for t in fig.data] == [*PAIRS, "SOL/USD"]
        source.fill(400, pairs=["SOL/USD"])  # 4 s more of SOL only: the others leave the 2 s window
        redraw(fig, source)
        assert [t.name for t in fig.data] == ["SOL/USD"]


def test_colours_are_fixed_per_pair_for_the_life_of_a_chart(closing: list[Any]) -> None:
    """Removing a pair never recolours the others; a pair that comes back gets its old colour."""
    source = FakeSource(rows=300, pairs=("BTC/USD", "ETH/USD", "BTC/EUR", "SOL/USD"))
    source.fill(40, pairs=["SOL/USD"])
    fig = cr.live_chart(source)
    closing.append(fig)
    first = {t.name: t.line.color for t in fig.data}
    assert len(set(first.values())) == 4
    with view_of(fig).lock:
        source.pairs = ("BTC/USD", "ETH/USD", "SOL/USD")
        redraw(fig, source)
        assert {t.name: t.line.color for t in fig.data} == {p: first[p] for p in source.pairs}
        source.pairs = ("BTC/USD", "ETH/USD", "SOL/USD", "BTC/EUR")
        redraw(fig, source)
        assert {t.name: t.line.color for t in fig.data} == first


def test_rows_give_each_pair_its_own_price_axis(closing: list[Any]) -> None:
    """The default arrangement: a row per pair (own y axis titled with the quote, own label) on one time axis."""
    source = FakeSource(rows=300, pairs=("BTC/USD", "EUR/USD"))
    source.fill(300, pairs=["EUR/USD"])
    fig = cr.live_chart(source)
    closing.append(fig)
    layout = fig.layout
    assert [t.yaxis for t in fig.data] == ["y", "y2"] and {t.xaxis for t in fig.data} == {"x"}
    assert layout.yaxis.domain[0] > layout.yaxis2.domain[1]  # BTC/USD above EUR/USD, with a gap for the label
    assert layout.yaxis.title.text == "USD" and layout.xaxis.anchor == "y2"
    labels = [a.text for a in layout.annotations if a.name == "coinrates-row"]
    assert labels == ["<b>BTC/USD</b>", "<b>EUR/USD</b>"]
    assert layout.height == 70 + 45 + 2 * 100 + 26
    overlay = cr.live_chart(source, arrange="overlay")
    closing.append(overlay)
    assert {t.yaxis for t in overlay.data} == {None} and overlay.layout.showlegend
    with pytest.raises(cr.ConfigError, match="arrange must be 'rows'"):
        cr.live_chart(source, arrange="stacked")  # type: ignore[arg-type]


def test_a_gap_breaks_the_line_and_is_shaded(closing: list[Any]) -> None:
    """A 20 s silence of every pair (a stop/start) puts a NaN in each line there and one shaded span."""
    source = FakeSource(rows=300)
    fig = cr.live_chart(source)
    closing.append(fig)
    silent_from = source.now
    source.now += 20 * SECOND
    with view_of(fig).lock:
        source.fill(300)
        redraw(fig, source)
    for trace in fig.data:
        x, y = np.asarray(trace.x), np.asarray(trace.y)
        (holes,) = np.nonzero(np.isnan(y))
        assert len(holes) == 1, trace.name
        assert x[holes[0] - 1] * 1e6 <= silent_from < x[holes[0] + 1] * 1e6
    (shape,) = [s for s in fig.layout.shapes if s.name == "coinrates-gap"]
    assert shape.x0 * 1e6 <= silent_from + 30_000_000 and shape.x1 * 1e6 >= silent_from + 20 * SECOND


def test_a_zoom_pauses_on_the_users_range_and_autoscale_follows_again(closing: list[Any]) -> None:
    """A relayout with an x range pauses the chart (cue, rows inside that range only); autorange resumes following."""
    source = FakeSource(rows=6_000)  # 60 s, 10 ms apart
    fig = cr.live_chart(source, window="30s")
    closing.append(fig)
    view = view_of(fig)
    lo, hi = source.now - 50 * SECOND, source.now - 40 * SECOND
    stamp = lambda ns: str(pd.Timestamp(ns, unit="ns")).replace("T", " ")  # noqa: E731 - plotly.js sends naive UTC
    with view.lock:
        fig._handler_js2py_relayout({"new": {"relayout_data": {"xaxis.range[0]": stamp(lo), "xaxis.range[1]": stamp(hi)},
                                             "source_view_id": None}})
        assert not view.follow.live and view.follow.range_ns == (lo, hi)
        redraw(fig, source)
        x = np.concatenate([np.asarray(t.x) for t in fig.data]) * 1e6
        assert x.min() >= lo - 2 * SECOND and x.max() <= hi + 2 * SECOND  # the user's range, not the last 30 s
        assert any("paused" in (a.text or "") for a in fig.layout.annotations)
        source.fill(100)
        assert not view.due(time.monotonic() + 60, "new rows")  # the range is in the past: nothing to redraw
        fig._handler_js2py_relayout({"new": {"relayout_data": {"xaxis.autorange": True, "yaxis.autorange": True},
                                             "source_view_id": None}})
        assert view.follow.live and view.due(time.monotonic() + 60, "new rows")
        redraw(fig, source)
        assert any("live" in (a.text or "") for a in fig.layout.annotations)
        assert max(np.asarray(t.x)[-1] for t in fig.data) * 1e6 == source.now


def test_chart_grows_by_itself_from_the_refresher_thread(closing: list[Any]) -> None:
    """New rows reach the figure without any call from the test: the refresher redraws on its own thread."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source, fps=20)
    closing.append(fig)
    before = len(fig.data[0].x)
    source.fill(30)
    wait_until(lambda: len(fig.data[0].x) > before, timeout=30, message="the chart never redrew")
    assert view_of(fig).refresher.running


def test_performance_chart_rebases_each_pair_to_100(closing: list[Any]) -> None:
    """Every line starts at exactly 100 at the start of the window."""
    source = FakeSource(rows=3_000)
    fig = cr.performance_chart(source, window="5s")
    closing.append(fig)
    assert [t.name for t in fig.data] == PAIRS
    for trace in fig.data:
        _, r = source.rows(trace.name, window_ns=5 * SECOND)
        y = np.asarray(trace.y)
        assert y[0] == 100.0 and np.array_equal(y, r / r[0] * 100.0)


def test_simulated_badge_on_charts_only_for_simulated_data(closing: list[Any]) -> None:
    """Every chart of simulated data gets the one badge annotation and title suffix; live charts get neither."""
    for make in (cr.live_chart, cr.performance_chart, lambda s: cr.ohlc_chart(s, freq="1s")):
        sim, live = make(FakeSource(simulated=True, rows=30)), make(FakeSource(simulated=False, rows=30))
        closing.extend([sim, live])
        badges = [(a.name, a.text, a.bgcolor) for a in sim.layout.annotations if a.name == "coinrates-simulated"]
        assert badges == [("coinrates-simulated", "<b>SIMULATED DATA</b>", SIMULATED_COLOR)]
        assert sim.layout.title.text.endswith(" — SIMULATED")
        assert not any("SIMULATED" in (a.text or "") for a in live.layout.annotations)
        assert "SIMULATED" not in live.layout.title.text


def test_redraw_errors_show_on_the_chart_and_clear(closing: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing redraw shows a red error annotation on the chart; the next good redraw removes it."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source)
    closing.append(fig)
    view = view_of(fig)
    with view.lock:
        monkeypatch.setattr(view, "lines", lambda tick: 1 / 0)
        assert not view.run(Tick(source), time.monotonic(), 1)
        texts = [a.text or "" for a in fig.layout.annotations]
        assert any("ZeroDivisionError" in t for t in texts) and view.errors == 1
        monkeypatch.undo()
        assert view.run(Tick(source), time.monotonic(), 2)
        assert not any("error" in (a.text or "") for a in fig.layout.annotations)


CHARTS = {"live_chart": cr.live_chart, "performance_chart": cr.performance_chart, "ohlc_chart": cr.ohlc_chart}


def test_the_three_charts_take_arguments_in_one_order() -> None:
    """source, pairs, window positional in that order; every other option keyword-only, with the same names."""
    shapes = {}
    for name, chart in CHARTS.items():
        params = list(inspect.signature(chart).parameters.values())
        positional = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == ["source", "pairs", "window"], name
        assert all(p.kind is p.KEYWORD_ONLY for p in params[3:]), name
        shapes[name] = {p.name for p in params[3:]}
    assert shapes["live_chart"] == {"fps", "max_points", "height", "title", "arrange", "mode"}
    assert shapes["performance_chart"] == {"fps", "max_points", "height", "title", "mode"}
    assert shapes["ohlc_chart"] == {"freq", "fps", "max_bars", "height", "title", "mode"}


def test_window_means_the_visible_span_in_every_chart(closing: list[Any]) -> None:
    """window (positional or keyword; "10s", a timedelta or seconds) is how far back each chart shows."""
    source = FakeSource(rows=3_000)
    figs = [cr.live_chart(source, None, "10s"), cr.performance_chart(source, window=pd.Timedelta("10s")),
            cr.ohlc_chart(source, None, 10, freq="1s")]
    closing.extend(figs)
    assert [view_of(f).window_ns for f in figs] == [10 * SECOND] * 3
    for name, chart in CHARTS.items():
        assert "visible span" in (chart.__doc__ or ""), name
        assert "cr.stream(window=...)" in (chart.__doc__ or "") or name == "performance_chart", name


@pytest.mark.parametrize("name", list(CHARTS))
def test_a_span_in_the_pairs_slot_says_where_it_goes(name: str) -> None:
    """ohlc_chart(rates, "1min") (the old order) is a ConfigError that shows the keyword to write."""
    keyword = "freq" if name == "ohlc_chart" else "window"
    with pytest.raises(cr.ConfigError, match=f"write {name}\\(source, {keyword}='1min'\\)"):
        CHARTS[name](FakeSource(rows=3), "1min")


def test_chart_pairs_follow_the_package_pair_rules(closing: list[Any]) -> None:
    """Pairs are upper-cased and stripped; pair-shaped mistakes, asset ids and non-strings are ConfigErrors."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source, [" eth/usd ", "BTC/USD", "ETH/USD"])
    closing.append(fig)
    assert view_of(fig).pairs == ("ETH/USD", "BTC/USD") and [t.name for t in fig.data] == ["ETH/USD", "BTC/USD"]
    with pytest.raises(cr.ConfigError, match="did you mean 'BTC/USD'"):
        cr.live_chart(source, ["BTCUSD"])
    with pytest.raises(cr.ConfigError, match="not asset ids \\['BTC'\\]"):
        cr.ohlc_chart(source, "BTC")
    with pytest.raises(cr.ConfigError, match="not int 5"):
        cr.performance_chart(source, 5)  # type: ignore[arg-type]


BAD_OPTIONS = [
    ("window", "soon", "window must be a positive duration"),
    ("window", -5, "window must be a positive duration"),
    ("window", True, "window must be a positive duration"),
    ("fps", 0, "fps must be a positive number"),
    ("fps", "4", "fps must be a positive number"),
    ("height", -1, "height must be a whole number"),
    ("height", "tall", "height must be a whole number"),
    ("title", 5, "title must be a string"),
    ("mode", "gui", "mode must be 'thread'"),
]


@pytest.mark.parametrize("name", list(CHARTS))
@pytest.mark.parametrize(("option", "value", "message"), BAD_OPTIONS)
def test_bad_options_raise_config_errors_before_a_figure_exists(name: str, option: str, value: Any, message: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every bad option is a ConfigError (never TypeError) naming it, raised before any FigureWidget is made."""
    made: list[Any] = []
    monkeypatch.setattr(plots.go, "FigureWidget", lambda *a, **k: made.append(a) or pytest.fail("figure made"))
    with pytest.raises(cr.ConfigError, match=message):
        CHARTS[name](FakeSource(rows=3), **{option: value})
    assert made == []


@pytest.mark.parametrize(("chart", "option", "value", "message"), [
    (cr.live_chart, "max_points", 3, "max_points must be a whole number of points, at least 4"),
    (cr.performance_chart, "max_points", "many", "max_points must be a whole number of points, at least 4"),
    (cr.ohlc_chart, "max_bars", 0, "max_bars must be a whole number, at least 1"),
    (cr.ohlc_chart, "freq", "-1min", "freq must be a positive duration"),
    (cr.ohlc_chart, "freq", None, "freq is required"),
])
def test_chart_specific_options_are_checked(chart: Any, option: str, value: Any, message: str) -> None:
    """max_points, max_bars and freq are ConfigErrors naming the option when out of range or of the wrong type."""
    with pytest.raises(cr.ConfigError, match=message):
        chart(FakeSource(rows=3), **{option: value})


def test_ohlc_chart_needs_pairs() -> None:
    """With no pairs given, subscribed or stored, ohlc_chart says how to give them."""
    with pytest.raises(cr.ConfigError, match="ohlc_chart needs pairs"):
        cr.ohlc_chart(FakeSource(pairs=()), freq="1min")


# ------------------------------------------------------------------------------------ OHLC


@pytest.mark.parametrize("freq", ["1s", "7s", "1min"])
def test_ohlc_arrays_match_the_frames_ohlc(freq: str) -> None:
    """The NumPy candles equal RollingFrame.ohlc for the same pair (empty buckets aside)."""
    source = FakeSource(rows=20_000, pairs=("BTC/USD",))
    t, r = Tick(source).series["BTC/USD"]
    bars = ohlc_arrays(t, r, pd.Timedelta(freq).value)
    expected = source.frame.ohlc(freq, pair="BTC/USD").dropna()
    if freq == "7s":  # resample aligns 7 s on the day, we align on the epoch: compare shapes only
        assert abs(len(bars["x"]) - len(expected)) <= 1
        return
    assert np.array_equal(pd.to_datetime(bars["x"], unit="ms", utc=True).round("ms"),
                          expected.index.round("ms"))
    for key in ("open", "high", "low", "close"):
        assert np.allclose(bars[key], expected[key].to_numpy()), key


def test_ohlc_chart_grows_a_new_candle(closing: list[Any]) -> None:
    """One candlestick subplot per pair; rows in a new bucket add a candle, rows in the same bucket move it."""
    source = FakeSource(rows=0)
    source.now = time.time_ns() // SECOND * SECOND  # on a bucket boundary: rows at +10 ms, +20 ms, ...
    fig = cr.ohlc_chart(source, ["BTC/USD", "ETH/USD"], freq="1s")
    closing.append(fig)
    assert [type(t).__name__ for t in fig.data] == ["Candlestick", "Candlestick"]
    assert fig.layout.template.layout.xaxis.type == "date"
    view = view_of(fig)
    assert isinstance(view, OhlcView)
    with view.lock:
        source.fill(150, pairs=["BTC/USD"])  # +0.01 .. +1.50 s: two candles
        redraw(fig, source)
        assert len(fig.data[0].x) == 2 and len(fig.data[1].x) == 0
        t, r = source.rows("BTC/USD")
        assert list(fig.data[0].close) == [r[98], r[149]] and list(fig.data[0].open) == [r[0], r[99]]
        source.fill(150, pairs=["BTC/USD"])  # +1.51 .. +3.00 s: the second candle grows, two more start
        redraw(fig, source)
        t, r = source.rows("BTC/USD")
        assert len(fig.data[0].x) == 4 and fig.data[0].close[1] == r[198] and fig.data[0].close[3] == r[299]
        assert list(fig.data[0].high) == [r[:99].max(), r[99:199].max(), r[199:299].max(), r[299]]


# ------------------------------------------------------------------------------------ lifecycle


def test_closing_the_chart_stops_its_refresh(closing: list[Any]) -> None:
    """fig.close() drops the view; with no view left the refresher thread ends."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source, fps=20)
    refresher = view_of(fig).refresher
    assert refresher.running
    fig.close()
    refresher.join(10)
    assert not refresher.running and refresher.views() == []


def test_views_are_held_weakly(closing: list[Any]) -> None:
    """Once a closed chart is unreferenced, its view is garbage collected (the refresher kept no strong ref)."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source)
    ref = weakref.ref(view_of(fig))
    refresher = view_of(fig).refresher
    fig.close()
    del fig
    gc.collect()
    assert ref() is None
    refresher.join(10)
    assert not refresher.running


def test_hidden_chart_is_skipped_then_redrawn_when_shown(closing: list[Any]) -> None:
    """After its last browser view goes (_view_count 0) a chart skips redraws; a new view redraws it at once."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source)
    closing.append(fig)
    view = view_of(fig)
    assert view.visible  # never displayed: keep the Python figure current (nbclient, scripts)
    fig._view_count = 1
    fig._view_count = 0
    assert not view.visible and not view.due(time.monotonic() + 10, "new data")
    fig._view_count = 1
    assert view.visible and view.drawn is None and view.throttle.last is None


def test_rerunning_a_cell_closes_the_charts_of_its_previous_run(closing: list[Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The same JupyterLab cell id with a new message id closes what the previous run made."""
    source = FakeSource(rows=30)
    parent = {"metadata": {"cellId": "cell-1"}, "header": {"msg_id": "run-1"}}
    monkeypatch.setattr(_cells, "parent_message", lambda: parent)
    monkeypatch.setattr(_cells, "_BY_CELL", {})
    first = cr.live_chart(source)
    second = cr.performance_chart(source)  # same run: both stay
    closing.extend([first, second])
    assert first.comm is not None and second.comm is not None
    parent = {"metadata": {"cellId": "cell-1"}, "header": {"msg_id": "run-2"}}
    third = cr.live_chart(source)
    closing.append(third)
    assert first.comm is None and second.comm is None and third.comm is not None
    parent = {"metadata": {"cellId": "cell-2"}, "header": {"msg_id": "run-3"}}
    fourth = cr.live_chart(source)
    closing.append(fourth)
    assert third.comm is not None


def test_browser_messages_are_serialised_with_redraws(closing: list[Any]) -> None:
    """The widget's incoming-message handler runs holding the view's lock (no race with the refresher thread)."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source)
    closing.append(fig)
    view = view_of(fig)
    held_elsewhere: list[bool] = []

    def probe() -> None:
        got = view.lock.acquire(blocking=False)
        held_elsewhere.append(not got)
        if got:
            view.lock.release()

    original = fig._handle_msg
    fig._handle_msg = lambda msg: (t := threading.Thread(target=probe), t.start(), t.join())
    try:
        view.guard_incoming(fig)
        fig.comm._msg_callback({"content": {"data": {"method": "custom", "content": {}}}})
    finally:
        fig._handle_msg = original
    assert held_elsewhere == [True]


def test_one_refresher_thread_for_many_charts(closing: list[Any]) -> None:
    """Charts, status bars and dashboards of one collector share one refresher thread."""
    source = FakeSource(rows=30)
    figs = [cr.live_chart(source), cr.performance_chart(source), cr.ohlc_chart(source, freq="1s"),
            cr.status_bar(source)]
    closing.extend(figs)
    refresher = view_of(figs[0]).refresher
    assert all(view_of(f).refresher is refresher for f in figs) and refresher.running
    assert set(refresher.views()) == {view_of(f) for f in figs}
    assert refresher._thread in threading.enumerate() and refresher._thread.name == "coinrates-refresh"
    assert isinstance(view_of(figs[0]), ChartView)


# ------------------------------------------------------------------------------------ real collector


def test_live_chart_on_the_simulator(simulator: Simulator, closing: list[Any]) -> None:
    """Against the real simulator the chart's newest point moves forward by itself, with today's date."""
    rates = cr.stream(PAIRS, url=simulator.url)
    try:
        rates.wait(timeout=30, rows=2)
        fig = cr.live_chart(rates, fps=10)
        closing.append(fig)
        newest = max(np.asarray(t.x)[-1] for t in fig.data)
        wait_until(lambda: max(np.asarray(t.x)[-1] for t in fig.data) > newest, timeout=30,
                   message="no new point reached the chart")
        assert pd.Timestamp(newest, unit="ms", tz="UTC").date() == pd.Timestamp.now(tz="UTC").date()
    finally:
        rates.stop()


@pytest.mark.notebook
@pytest.mark.slow
def test_live_chart_works_after_nest_asyncio_apply(run_cells: Any) -> None:
    """In a real ipykernel, after nest_asyncio.apply() a live chart still redraws by itself and asyncio.run works."""
    out = run_cells([
        "import nest_asyncio, asyncio, time\nnest_asyncio.apply()\nimport coinrates_nb as cr",
        "rates = cr.stream(['BTC/USD', 'ETH/USD'], rate_hz=20)\nrates.wait(timeout=60, rows=2)",
        "fig = cr.live_chart(rates, fps=10)\nbefore = max(t.x[-1] for t in fig.data)",
        # The cell polls the Python figure: only the refresher thread can move it while this cell runs.
        "deadline = time.monotonic() + 60\n"
        "while max(t.x[-1] for t in fig.data) <= before and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('advanced', max(t.x[-1] for t in fig.data) > before)",
        "async def ping():\n    await asyncio.sleep(0)\n    return 'pong'\nprint(asyncio.run(ping()))",
        "print(fig._coinrates_view.refresher.mode, fig._coinrates_view.errors)\nrates.stop()",
    ])
    assert "advanced True" in out and "pong" in out and "thread 0" in out


@pytest.mark.notebook
@pytest.mark.slow
def test_rerunning_cells_leaks_no_threads_sockets_or_refreshers(kernel: Any) -> None:
    """Re-running the stream and chart cells (same JupyterLab cell ids) keeps one collector, one socket, one refresher."""
    kernel.run("import threading, psutil, coinrates_nb as cr\nfigs = []")
    for _ in range(3):
        kernel.run("rates = cr.stream(['BTC/USD', 'ETH/USD'], rate_hz=20)\nrates.wait(timeout=60)", cell_id="stream")
        kernel.run("fig = cr.live_chart(rates, fps=10)\nfigs.append(fig)\nfig", cell_id="chart")
    out = kernel.run(
        "names = [t.name for t in threading.enumerate()]\n"
        "port = int(rates.status.url.rsplit(':', 1)[1].strip('/'))\n"
        "conns = [c for c in psutil.Process().net_connections('tcp') if c.status == 'ESTABLISHED'"
        " and port in (c.laddr.port, getattr(c.raddr, 'port', None))]\n"
        "refresher = fig._coinrates_view.refresher\n"
        "print('collectors', names.count('coinrates-collector'))\n"
        "print('refreshers', names.count('coinrates-refresh'))\n"
        "print('sockets', len(conns))\n"
        "print('views', len(refresher.views()))\n"
        "print('closed', [f.comm is None for f in figs])\n"
        "print('same', rates is cr.stream(['BTC/USD', 'ETH/USD'], rate_hz=20))")
    assert "collectors 1" in out and "refreshers 1" in out and "views 1" in out and "same True" in out
    assert "sockets 2" in out  # the client end and the embedded simulator's end of one connection
    assert "closed [True, True, False]" in out


# ------------------------------------------------------------------------------------ the figure widget


def browser_trace_deltas(fig: Any) -> dict[str, Any]:
    """What JupyterLab sends after a candlestick restyle (captured with plotly 7.1): typed arrays as index-keyed objects."""
    deltas = []
    for trace in fig.data:
        high = {str(i): float(v) for i, v in enumerate(trace.high)}
        deltas.append({"uid": trace.uid, "high": high, "low": dict(high), "line": {"width": 2},
                       "increasing": {"line": {"color": "#3D9970", "width": 2}}, "xaxis": "x", "_length": len(high)})
    return {"trace_deltas": deltas, "trace_edit_id": fig._last_trace_edit_id}


def test_browser_trace_deltas_on_a_candlestick_chart_raise_nothing(closing: list[Any],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """plotly.py's own FigureWidget raises 'truth value of an array' on these deltas; ours merges only the defaults."""
    source = FakeSource(rows=0)
    source.now = time.time_ns() // SECOND * SECOND
    fig = cr.ohlc_chart(source, ["BTC/USD", "ETH/USD"], freq="1s")
    closing.append(fig)
    with view_of(fig).lock:
        source.fill(400)
        redraw(fig, source)
        assert len(fig.data[0].high) > 1
        plain = go.FigureWidget(fig)
        try:
            plain._last_trace_edit_id = fig._last_trace_edit_id = 7
            with pytest.raises(ValueError, match="truth value of an array"):
                plain._handler_js2py_traceDeltas({"new": browser_trace_deltas(plain)})  # the defect, reproduced
        finally:
            plain.close()
        high = np.asarray(fig.data[0].high).copy()
        fig._handler_js2py_traceDeltas({"new": browser_trace_deltas(fig)})
    assert np.array_equal(np.asarray(fig.data[0].high), high)  # our data untouched
    assert fig.data[0]._prop_defaults["increasing"]["line"]["color"] == "#3D9970"  # the real defaults merged
    assert "high" not in fig.data[0]._prop_defaults


def test_defaults_only_drops_what_we_set_as_arrays() -> None:
    """A key we hold as an array (at any depth) is never taken as a default; everything else is kept."""
    from coinrates_nb.ui._figure import defaults_only

    props = {"x": np.arange(3.0), "marker": {"color": np.arange(3.0)}, "line": {"width": 1}}
    delta = {"x": {"0": 1.0}, "marker": {"color": {"0": 1}, "size": 6}, "line": {"color": "red"}, "mode": "lines"}
    assert defaults_only(delta, props) == {"marker": {"size": 6}, "line": {"color": "red"}, "mode": "lines"}


class KernelStandIn:
    """A kernel's comm manager, as ipykernel keeps it: comms by id; get_comm warns about unknown ids."""

    def __init__(self) -> None:
        self.comms: dict[str, Any] = {}
        self.warnings: list[str] = []

    def get_comm(self, comm_id: str) -> Any:
        if comm_id not in self.comms:
            self.warnings.append(f"No such comm: {comm_id}")
        return self.comms.get(comm_id)


def test_closing_a_chart_stops_view_counting_and_swallows_late_messages(closing: list[Any]) -> None:
    """close(): _view_count is turned off first (no page error), and a message the browser sent meanwhile is dropped quietly."""
    source = FakeSource(rows=30)
    fig = cr.live_chart(source)
    manager = KernelStandIn()
    comm = fig.comm
    try:
        comm.kernel = type("Kernel", (), {"comm_manager": manager})()
    except Exception:  # noqa: BLE001 - ipykernel's own Comm (ipywidgets < 8.1) types its kernel trait
        from ipykernel.kernelbase import Kernel

        kernel = Kernel()  # unstarted: no sockets, not the singleton
        kernel.comm_manager = manager
        comm.kernel = kernel
    spy = CommSpy(fig)
    comm_id = comm.comm_id
    fig._view_count = 1
    fig.close()
    assert fig.comm is None
    states = [d.get("state", {}) for d, _ in spy.messages if d.get("method") == "update"]
    assert {"_view_count": None} in states  # the browser stops counting views before the comm closes
    tombstone = manager.get_comm(comm_id)
    assert tombstone is not None and manager.warnings == []  # a late _view_count or trace delta finds it
    tombstone.handle_msg({"content": {"data": {"method": "update", "state": {"_view_count": 0}}}})
