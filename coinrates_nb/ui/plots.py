"""Live Plotly charts of a collector: rates, candlesticks and rebased performance.

Each function returns a :class:`plotly.graph_objects.FigureWidget` that updates by itself: a
:class:`~coinrates_nb.ui.refresh.Refresher` redraws it at most ``fps`` times a second, whatever the
message rate, and each redraw updates the traces in place inside ``fig.batch_update()`` (one
message per redraw) with at most ``max_points`` points per trace.

Times are sent as float64 epoch milliseconds on an axis with ``type="date"``: a
``datetime64[ns]`` array would be serialised as integer nanoseconds, which plotly.js reads as
milliseconds (``../shared/NOTES.md``, "Plotly"). Times are UTC.

The date type is also set in the figure's *template*, not only on the axis. Measured in
JupyterLab 4.6 + plotly 7.1 (headless Chromium): every restyle of ``x`` that a FigureWidget sends
makes plotly.js clear the axis' explicit ``type`` unless the same update sets it
(``clearAxisTypes`` in plotly.js ``Plotly.update``); plotly.py never resends an unchanged
``xaxis.type``, so after the first live redraw the axis is auto-typed, and numbers auto-type as
``linear``: the ticks read ``1.7955T`` instead of dates. A template value is the default the axis
falls back to when its own ``type`` is cleared, so it survives every redraw.

Closing the widget (``fig.close()``), or losing every reference to it, stops its redraws; while
no browser view shows it (output cleared, cell re-run) redraws are skipped; re-running the cell
that made a chart closes the chart the previous run made.

Thread safety: in the default ``"thread"`` mode the refresher updates the figure from its own
thread, holding the view's lock. To change a live figure from a cell, hold the same lock::

    with fig._coinrates_view.lock:
        fig.layout.title = "BTC"
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from ..exceptions import ConfigError
from ..frame import parse_span
from .refresh import (
    DEFAULT_FPS,
    MAX_POINTS,
    Float64Array,
    Int64Array,
    Mode,
    Refresher,
    Source,
    Tick,
    View,
    downsample_minmax,
    ns_to_ms,
)

__all__ = ["ChartView", "FigureView", "OhlcView", "WidgetView", "close_on_rerun", "date_template", "live_chart", "ohlc_arrays",
           "ohlc_chart", "performance_chart"]

logger = logging.getLogger(__name__)

SIMULATED_BADGE = "SIMULATED DATA"
_BADGE_NAME = "coinrates-simulated"
_ERROR_NAME = "coinrates-error"
_UIREVISION = "coinrates"

Transform = Callable[[Float64Array], Float64Array]


# --------------------------------------------------------------------------------------- helpers


def _pair_list(pairs: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if pairs is None:
        return None
    return (pairs,) if isinstance(pairs, str) else tuple(pairs)


def _since(tick: Tick, window_ns: int | None) -> int | None:
    """The first time (ns) a view with ``window_ns`` shows, measured back from the newest row."""
    newest = tick.newest_ns
    if window_ns is None or newest is None:
        return None
    return newest - window_ns


def _windowed(t: Int64Array, r: Float64Array, since_ns: int | None) -> tuple[Int64Array, Float64Array]:
    if since_ns is None:
        return t, r
    start = int(np.searchsorted(t, since_ns, side="left"))
    return t[start:], r[start:]


def _rebase(r: Float64Array) -> Float64Array:
    """Rebase a rate series to 100 at its first value."""
    if len(r) == 0 or r[0] == 0:
        return r
    rebased: Float64Array = r / float(r[0]) * 100.0  # r0 / r0 is exactly 1: the first point is exactly 100
    return rebased


def _annotations(fig: Any, name: str, replacement: dict[str, Any] | None) -> None:
    """Replace the layout annotation called ``name`` (or remove it when ``replacement`` is None)."""
    kept = [a for a in fig.layout.annotations if a.name != name]
    if replacement is not None:
        kept.append(go.layout.Annotation(name=name, **replacement))
    fig.layout.annotations = kept


def _badge(simulated: bool) -> list[dict[str, Any]]:
    if not simulated:
        return []
    return [dict(name=_BADGE_NAME, text=f"<b>{SIMULATED_BADGE}</b>", xref="paper", yref="paper", x=1.0, y=1.0,
                 xanchor="right", yanchor="bottom", showarrow=False, bgcolor="#b45309",
                 font=dict(color="white", size=12), borderpad=3)]


def _simulated(source: Source) -> bool:
    try:
        return bool(source.status.simulated)
    except Exception:  # noqa: BLE001 - a broken status must not stop a chart from being made
        logger.exception("could not read the source's status")
        return False


def _parent_message() -> dict[str, Any]:
    """The kernel message that is executing now (empty outside a kernel)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return {}
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    get_parent = getattr(kernel, "get_parent", None)
    if get_parent is None:
        return {}
    try:
        parent = get_parent()
    except Exception:  # noqa: BLE001 - best effort: no parent means no re-run tracking
        return {}
    return parent if isinstance(parent, dict) else {}


_BY_CELL: dict[str, tuple[str, list[weakref.ReferenceType[Any]]]] = {}


def close_on_rerun(widget: Any) -> None:
    """Remember that the running cell made ``widget``; close widgets made by its earlier runs.

    JupyterLab tags each execute request with the cell's id. When the same cell runs again, its
    old output (and the live widgets in it) is gone from the page, so their redraws would be
    wasted work: they are closed here, which stops their refresh. Outside JupyterLab (no cell
    id) nothing is tracked.
    """
    parent = _parent_message()
    cell_id = (parent.get("metadata") or {}).get("cellId")
    msg_id = (parent.get("header") or {}).get("msg_id")
    if not cell_id or not msg_id:
        return
    entry = _BY_CELL.get(cell_id)
    if entry is not None and entry[0] != msg_id:
        for ref in entry[1]:
            old = ref()
            if old is not None and old is not widget:
                logger.debug("cell %s re-ran: closing %r", cell_id, old)
                old.close()
        entry = None
    if entry is None:
        entry = (msg_id, [])
        _BY_CELL[cell_id] = entry
    entry[1].append(weakref.ref(widget))


# --------------------------------------------------------------------------------------- views


class WidgetView(View):
    """A view drawing into one ipywidget, which it refers to weakly (the widget keeps the view alive).

    Tracks the widget's browser views through ``_view_count``: once shown, a widget with no view
    left is hidden and skipped until shown again, then redrawn in full.
    """

    def __init__(self, widget: Any, fps: float, *, always: bool = False) -> None:
        super().__init__(fps, always=always)
        self._widget = weakref.ref(widget)
        self._shown = False
        widget._coinrates_view = self
        if getattr(widget, "_view_count", None) is None:
            widget._view_count = 0  # ask the front end to count views (ipywidgets' opt-in)
        widget.observe(self._on_view_count, names=["_view_count"])
        widget.observe(self._on_comm, names=["comm"])

    @property
    def widget(self) -> Any:
        """The widget, or ``None`` once collected."""
        return self._widget()

    @property
    def alive(self) -> bool:
        widget = self._widget()
        return widget is not None and widget.comm is not None

    @property
    def visible(self) -> bool:
        widget = self._widget()
        if widget is None:
            return False
        count = widget._view_count
        return not (self._shown and count == 0)

    def _on_view_count(self, change: dict[str, Any]) -> None:
        new = change.get("new")
        if isinstance(new, int) and new > 0:
            came_back = self._shown and change.get("old") == 0
            self._shown = True
            if came_back:
                self.invalidate()
        elif new == 0 and self.refresher is not None:
            self.refresher.wake()

    def _on_comm(self, change: dict[str, Any]) -> None:
        if change.get("new") is not None:
            return
        widget = self._widget()
        if widget is not None:
            self._release(widget)
        if self.refresher is not None:
            self.refresher.wake()  # closed: let the refresher drop this view now

    def _release(self, widget: Any) -> None:
        """Cut the widget's references to this view once it is closed, so the view can be collected.

        A closed FigureWidget itself is never collected with anywidget 0.11 (its class-level
        ``_esm`` file watcher keeps a lambda bound to every instance), so the view must not
        rely on the widget dying to die itself.
        """
        widget.unobserve(self._on_view_count, names=["_view_count"])
        widget.unobserve(self._on_comm, names=["comm"])
        if widget.__dict__.get("_coinrates_view") is self:
            del widget.__dict__["_coinrates_view"]

    def attach(self, source: Source, mode: Mode) -> Refresher:
        """Draw once now, then hand the view to the source's shared refresher."""
        refresher = Refresher.for_source(source, mode)
        self.run(Tick(source), refresher.clock(), None)
        self.drawn = None  # let the refresher draw the next rows too
        self.guard_incoming(self._widget())
        refresher.add(self)
        return refresher

    def __repr__(self) -> str:
        state = "alive" if self.alive else "closed"
        return f"<{type(self).__name__} {state} | {self.throttle.fps:g} fps | {self.redraws:,} redraws>"


class FigureView(WidgetView):
    """A view drawing into a Plotly FigureWidget; errors appear as a red annotation on the figure."""

    def show_error(self, message: str | None) -> None:
        fig = self.widget
        if fig is None:
            return
        error = None if message is None else dict(
            text=message[:200], xref="paper", yref="paper", x=0.0, y=1.0, xanchor="left", yanchor="bottom",
            showarrow=False, bgcolor="#b91c1c", font=dict(color="white", size=12))
        _annotations(fig, _ERROR_NAME, error)


class ChartView(FigureView):
    """Keeps one line trace per pair of a FigureWidget up to date.

    Args:
        fig: The figure to draw into.
        pairs: Pairs to draw, or ``None`` for every pair in the frame (traces come and go).
        window_ns: Time span shown, back from the newest row; ``None`` for the whole frame.
        fps: Redraws per second at most.
        max_points: Points per trace per redraw at most (min/max decimation above it).
        transform: Applied to each pair's windowed rates before decimation (e.g. rebasing).
    """

    def __init__(self, fig: Any, pairs: Sequence[str] | None, window_ns: int | None, fps: float, max_points: int,
                 transform: Transform | None = None) -> None:
        super().__init__(fig, fps)
        self.pairs = pairs
        self.window_ns = window_ns
        self.max_points = max_points
        self.transform = transform
        self.points_sent = 0

    def set_window(self, window: str | pd.Timedelta | None) -> None:
        """Show ``window`` back from the newest row (``None``: the whole frame) from the next redraw."""
        self.window_ns = parse_span(window)
        self.invalidate()

    def lines(self, tick: Tick) -> dict[str, tuple[Float64Array, Float64Array]]:
        """Each drawn pair's (x ms, y) arrays for ``tick``, windowed, transformed and decimated."""
        since = _since(tick, self.window_ns)
        out: dict[str, tuple[Float64Array, Float64Array]] = {}
        for pair, (t, r) in tick.series.items():
            if self.pairs is not None and pair not in self.pairs:
                continue
            t, r = _windowed(t, r, since)
            if len(t) == 0:
                continue
            y = self.transform(r) if self.transform is not None else r
            out[pair] = downsample_minmax(ns_to_ms(t), y, self.max_points)
        return out

    def draw(self, tick: Tick) -> None:
        fig = self.widget
        if fig is None:
            return
        lines = self.lines(tick)
        wanted = list(self.pairs) if self.pairs is not None else list(lines)
        names = [trace.name for trace in fig.data]
        if any(name not in wanted for name in names):
            fig.data = [trace for trace in fig.data if trace.name in wanted]
        for pair in wanted:
            if pair not in names and (pair in lines or self.pairs is not None):
                fig.add_trace(go.Scatter(x=[], y=[], name=pair, mode="lines", hovertemplate="%{x}<br>%{y:.6g}"))
        with fig.batch_update():
            for trace in fig.data:
                x, y = lines.get(trace.name, (np.empty(0), np.empty(0)))
                trace.x = x
                trace.y = y
                self.points_sent += len(x)



def ohlc_arrays(t: Int64Array, r: Float64Array, freq_ns: int) -> dict[str, Float64Array]:
    """Open/high/low/close of ``r`` per ``freq_ns`` bucket of ``t`` (sorted int64 ns), left-labelled.

    Buckets are aligned on the Unix epoch, as ``resample`` aligns frequencies that divide a day.
    Empty buckets are left out. Returns ``x`` (bucket start, epoch ms) and the four prices.
    """
    if len(t) == 0:
        empty = np.empty(0, dtype=np.float64)
        return {"x": empty, "open": empty, "high": empty, "low": empty, "close": empty}
    bucket = t // freq_ns
    starts = np.flatnonzero(np.diff(bucket, prepend=bucket[0] - 1))
    ends = np.append(starts[1:], len(t)) - 1
    return {
        "x": ns_to_ms(bucket[starts] * freq_ns),
        "open": r[starts],
        "high": np.maximum.reduceat(r, starts),
        "low": np.minimum.reduceat(r, starts),
        "close": r[ends],
    }


class OhlcView(FigureView):
    """Keeps one candlestick trace per pair (one subplot row each) up to date."""

    def __init__(self, fig: Any, pairs: Sequence[str], freq_ns: int, window_ns: int | None, fps: float,
                 max_bars: int) -> None:
        super().__init__(fig, fps)
        self.pairs = tuple(pairs)
        self.freq_ns = freq_ns
        self.window_ns = window_ns
        self.max_bars = max_bars

    def draw(self, tick: Tick) -> None:
        fig = self.widget
        if fig is None:
            return
        since = _since(tick, self.window_ns)
        with fig.batch_update():
            for trace, pair in zip(fig.data, self.pairs, strict=True):
                t, r = tick.series.get(pair, (np.empty(0, np.int64), np.empty(0)))
                bars = ohlc_arrays(*_windowed(t, r, since), self.freq_ns)
                for key, values in bars.items():
                    trace[key] = values[-self.max_bars:]



# --------------------------------------------------------------------------------------- public


def date_template() -> Any:
    """Return the default Plotly template with ``xaxis.type="date"`` added (see the module docstring).

    Template axis settings apply to every x axis (``xaxis2``... in subplots too) and are what
    plotly.js falls back to when a restyle clears an axis' own ``type``.
    """
    name = pio.templates.default
    try:
        base = pio.templates[name] if name else None
    except (KeyError, ValueError):  # a user default we cannot resolve: start from plotly.js defaults
        base = None
    template = go.layout.Template(base) if base is not None else go.layout.Template()
    template.layout.xaxis.type = "date"
    return template


def _figure(title: str, simulated: bool, height: int, yaxis_title: str) -> Any:
    return go.FigureWidget(layout=dict(
        template=date_template(),
        title=dict(text=title + (" — SIMULATED" if simulated else "")),
        height=height,
        margin=dict(l=60, r=20, t=80, b=40),
        xaxis=dict(type="date", title="time (UTC)"),
        yaxis=dict(title=yaxis_title),
        uirevision=_UIREVISION,
        legend=dict(orientation="h", x=0.0, xanchor="left", y=1.0, yanchor="bottom"),
        annotations=_badge(simulated),
    ))


def live_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    *,
    window: str | pd.Timedelta | None = None,
    fps: float = DEFAULT_FPS,
    max_points: int = MAX_POINTS,
    height: int = 400,
    title: str = "Exchange rates",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with one line per pair that updates by itself.

    Args:
        source: The collector (``cr.stream(...)``) to draw.
        pairs: Pairs to draw; ``None`` draws every pair in the window, adding and removing
            traces as pairs come and go (after ``subscribe``/``unsubscribe``).
        window: Time span shown, back from the newest row (e.g. ``"5min"``); ``None`` shows
            the collector's whole rolling window.
        fps: Redraws per second at most, whatever the message rate.
        max_points: Points per trace per redraw at most; longer lines are decimated keeping
            each bucket's minimum and maximum.
        height: Figure height in pixels.
        title: Figure title (" — SIMULATED" is appended for simulated data).
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Returns:
        A :class:`plotly.graph_objects.FigureWidget`. ``fig.close()`` stops its redraws.

    Example::

        rates = cr.stream(["BTC/USD", "ETH/USD"])
        cr.live_chart(rates, window="5min")
    """
    simulated = _simulated(source)
    fig = _figure(title, simulated, height, "rate")
    view = ChartView(fig, _pair_list(pairs), parse_span(window), fps, max_points)
    view.attach(source, mode)
    close_on_rerun(fig)
    return fig


def performance_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    *,
    window: str | pd.Timedelta | None = None,
    fps: float = DEFAULT_FPS,
    max_points: int = MAX_POINTS,
    height: int = 400,
    title: str = "Performance (rebased to 100)",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with each pair rebased to 100 at the start of the window, updating by itself.

    Pairs on very different price scales become comparable: each line is
    ``100 * rate / first rate in the window``. Arguments as for :func:`live_chart`.
    """
    simulated = _simulated(source)
    fig = _figure(title, simulated, height, "index (window start = 100)")
    view = ChartView(fig, _pair_list(pairs), parse_span(window), fps, max_points, transform=_rebase)
    view.attach(source, mode)
    close_on_rerun(fig)
    return fig


def ohlc_chart(
    source: Source,
    freq: str = "1min",
    pairs: str | Iterable[str] | None = None,
    *,
    window: str | pd.Timedelta | None = None,
    fps: float = 1.0,
    max_bars: int = 500,
    height: int | None = None,
    title: str | None = None,
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget of live candlesticks per ``freq`` bucket, one subplot row per pair.

    The newest candle grows as rates arrive and a new one starts at each bucket boundary.
    The pairs are fixed when the chart is made.

    Args:
        source: The collector to draw.
        freq: Bucket length, e.g. ``"1s"``, ``"1min"``; buckets are aligned on the epoch.
        pairs: Pairs to draw; ``None`` means the subscribed pairs (or, for a whole-stream
            subscription, the pairs already in the frame).
        window: Time span shown, back from the newest row; ``None`` for the whole frame.
        fps: Redraws per second at most (candles change slowly; 1 is plenty).
        max_bars: Newest candles kept per pair.
        height: Figure height; by default 250 px per pair.
        title: Figure title; by default ``"OHLC <freq>"``.
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Raises:
        ConfigError: If ``freq`` is not a positive time span or no pair can be chosen.
    """
    freq_ns = parse_span(freq, "freq")
    assert freq_ns is not None
    chosen = _pair_list(pairs)
    if chosen is None:
        scope = getattr(source, "pairs", None)
        chosen = tuple(p for p in scope if "/" in p) if scope else tuple(source.frame.pairs)
    if not chosen:
        raise ConfigError("ohlc_chart needs pairs: pass pairs=[...] or wait until rates arrive")
    simulated = _simulated(source)
    layout = make_subplots(rows=len(chosen), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           subplot_titles=list(chosen))
    for row, pair in enumerate(chosen, start=1):
        layout.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], name=pair), row=row, col=1)
        layout.update_xaxes(type="date", rangeslider_visible=False, row=row, col=1)
    layout.update_layout(
        title=dict(text=(title or f"OHLC {freq}") + (" — SIMULATED" if simulated else "")),
        height=height or max(300, 250 * len(chosen)),
        margin=dict(l=60, r=20, t=70, b=40),
        showlegend=False,
        uirevision=_UIREVISION,
        template=date_template(),
    )
    for badge in _badge(simulated):
        layout.add_annotation(**badge)
    fig = go.FigureWidget(layout)
    view = OhlcView(fig, chosen, freq_ns, parse_span(window), fps, max_bars)
    view.attach(source, mode)
    close_on_rerun(fig)
    return fig
