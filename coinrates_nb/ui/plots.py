"""Live Plotly charts of a collector: rates, rebased performance and candlesticks.

The three chart functions take their arguments in one order::

    live_chart(source, pairs=None, window=None, *, fps=..., ...)
    performance_chart(source, pairs=None, window=None, *, fps=..., ...)
    ohlc_chart(source, pairs=None, window=None, *, freq="1min", fps=..., ...)

``window`` is always the chart's **visible span**: how far back from the newest row the chart
shows. It is not the collector's buffer window (``cr.stream(window=...)``, how long rows are
kept before they are evicted): a chart can show less than the buffer holds, never more.

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

import datetime as dt
import logging
import operator
from collections.abc import Callable, Iterable
from typing import Any, Final

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .._badge import simulated_annotations, simulated_title
from .._inputs import pair_list, span_ns
from .._types import Pair
from ..exceptions import ConfigError
from ._lifecycle import WidgetView, close_on_rerun
from .refresh import Mode, Source, Tick, check_mode
from .series import (
    MAX_POINTS,
    Float64Array,
    check_max_points,
    downsample_minmax,
    ns_to_ms,
    ohlc_arrays,
    rebase,
    window_start,
    windowed,
)
from .throttle import DEFAULT_FPS, check_fps

__all__ = ["ChartView", "Duration", "FigureView", "OhlcView", "date_template", "live_chart", "ohlc_chart",
           "performance_chart", "span_label"]

logger = logging.getLogger(__name__)

Duration = str | dt.timedelta | float
"""A time span as users write it: ``"5min"``, a ``timedelta``/``pd.Timedelta``, or a number of seconds."""

Transform = Callable[[Float64Array], Float64Array]

_ERROR_NAME: Final = "coinrates-error"
_UIREVISION: Final = "coinrates"
_MIN_HEIGHT: Final = 10  # plotly's own lower bound for a figure's height, in pixels


# --------------------------------------------------------------------------------------- arguments


def _chart_pairs(pairs: Any, function: str) -> tuple[Pair, ...] | None:
    """``pairs`` as canonical ``BASE/QUOTE`` pairs (``None``: every pair), or a ConfigError saying what to write.

    A duration in the pairs slot (``ohlc_chart(rates, "1min")``) gets its own message, since
    the span arguments come after the pairs.
    """
    if pairs is None:
        return None
    if isinstance(pairs, str) and "/" not in pairs:
        try:
            span_ns(pairs)
        except ConfigError:
            pass
        else:
            keyword = "freq" if function == "ohlc_chart" else "window"
            raise ConfigError(f"{function}: {pairs!r} looks like a time span, but the second argument is pairs; "
                              f"write {function}(source, {keyword}={pairs!r})")
    return tuple(pair_list(pairs, "pairs"))


def _whole(value: Any, name: str, minimum: int, example: str) -> int:
    """``value`` if it is a whole number of at least ``minimum``, else a ConfigError naming ``name``."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ConfigError(f"{name} must be a whole number, at least {minimum} (e.g. {example}), not {value!r}")
    return number


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a string, not {type(value).__name__} {value!r}")
    return value


def span_label(value: Duration) -> str:
    """A short label for a span as the user gave it: ``"5min"`` stays, ``90`` becomes ``"90 s"``."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)):
        return f"{value:g} s"
    return str(value)


def _simulated(source: Source) -> bool:
    try:
        return bool(source.status.simulated)
    except Exception:  # noqa: BLE001 - a broken status must not stop a chart from being made
        logger.exception("could not read the source's status")
        return False


# --------------------------------------------------------------------------------------- views


def _annotations(fig: Any, name: str, replacement: dict[str, Any] | None) -> None:
    """Replace the layout annotation called ``name`` (or remove it when ``replacement`` is None)."""
    kept = [a for a in fig.layout.annotations if a.name != name]
    if replacement is not None:
        kept.append(go.layout.Annotation(name=name, **replacement))
    fig.layout.annotations = kept


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
        window_ns: Visible span, back from the newest row; ``None`` for the whole frame.
        fps: Redraws per second at most.
        max_points: Points per trace per redraw at most (min/max decimation above it).
        transform: Applied to each pair's windowed rates before decimation (e.g. rebasing).
    """

    def __init__(self, fig: Any, pairs: tuple[Pair, ...] | None, window_ns: int | None, fps: float, max_points: int,
                 transform: Transform | None = None) -> None:
        super().__init__(fig, fps)
        self.pairs = pairs
        self.window_ns = window_ns
        self.max_points = check_max_points(max_points)
        self.transform = transform
        self.points_sent = 0

    def set_window(self, window: Duration | None) -> None:
        """Show ``window`` back from the newest row (``None``: the whole frame) from the next redraw.

        Raises:
            ConfigError: If ``window`` is not a positive duration.
        """
        self.window_ns = span_ns(window, "window")
        self.invalidate()

    def lines(self, tick: Tick) -> dict[str, tuple[Float64Array, Float64Array]]:
        """Each drawn pair's (x ms, y) arrays for ``tick``, windowed, transformed and decimated."""
        since = window_start(tick.newest_ns, self.window_ns)
        out: dict[str, tuple[Float64Array, Float64Array]] = {}
        for pair, (t, r) in tick.series.items():
            if self.pairs is not None and pair not in self.pairs:
                continue
            t, r = windowed(t, r, since)
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


class OhlcView(FigureView):
    """Keeps one candlestick trace per pair (one subplot row each) up to date."""

    def __init__(self, fig: Any, pairs: tuple[Pair, ...], freq_ns: int, window_ns: int | None, fps: float,
                 max_bars: int) -> None:
        super().__init__(fig, fps)
        self.pairs = pairs
        self.freq_ns = freq_ns
        self.window_ns = window_ns
        self.max_bars = max_bars

    def draw(self, tick: Tick) -> None:
        fig = self.widget
        if fig is None:
            return
        since = window_start(tick.newest_ns, self.window_ns)
        with fig.batch_update():
            for trace, pair in zip(fig.data, self.pairs, strict=True):
                t, r = tick.series.get(pair, (np.empty(0, np.int64), np.empty(0)))
                bars = ohlc_arrays(*windowed(t, r, since), self.freq_ns)
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


def _line_chart(source: Source, pairs: Any, window: Any, *, fps: Any, max_points: Any, height: Any, title: Any,
                mode: Any, function: str, yaxis_title: str, transform: Transform | None) -> Any:
    """Check every argument, then build, attach and return a line chart (what both line charts share)."""
    chosen = _chart_pairs(pairs, function)
    window_ns = span_ns(window, "window")
    fps, mode = check_fps(fps), check_mode(mode)
    max_points = check_max_points(max_points)
    height, title = _whole(height, "height", _MIN_HEIGHT, "400"), _text(title, "title")
    simulated = _simulated(source)
    fig = go.FigureWidget(layout=dict(
        template=date_template(),
        title=dict(text=simulated_title(title, simulated)),
        height=height,
        margin=dict(l=60, r=20, t=80, b=40),
        xaxis=dict(type="date", title="time (UTC)"),
        yaxis=dict(title=yaxis_title),
        uirevision=_UIREVISION,
        legend=dict(orientation="h", x=0.0, xanchor="left", y=1.0, yanchor="bottom"),
        annotations=simulated_annotations(simulated),
    ))
    ChartView(fig, chosen, window_ns, fps, max_points, transform).attach(source, mode)
    close_on_rerun(fig)
    return fig


def live_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    fps: float = DEFAULT_FPS,
    max_points: int = MAX_POINTS,
    height: int = 400,
    title: str = "Exchange rates",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with one line per pair that updates by itself.

    Args:
        source: The collector (``cr.stream(...)``) or replay to draw.
        pairs: ``BASE/QUOTE`` pairs to draw; ``None`` draws every pair in the collector's
            buffer, adding and removing traces as pairs come and go (after
            ``subscribe``/``unsubscribe``).
        window: The chart's visible span, back from the newest row: ``"5min"``, a
            ``timedelta`` or a number of seconds. ``None`` shows everything the collector's
            buffer holds. This is not the buffer's own window (``cr.stream(window=...)``, how
            long rows are kept): the chart shows at most what the buffer still holds.
        fps: Redraws per second at most, whatever the message rate.
        max_points: Points per trace per redraw at most (at least 4); longer lines are
            decimated keeping each bucket's minimum and maximum.
        height: Figure height in pixels.
        title: Figure title (" — SIMULATED" is appended for simulated data).
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Returns:
        A :class:`plotly.graph_objects.FigureWidget`. ``fig.close()`` stops its redraws.

    Raises:
        ConfigError: If any argument is invalid (checked before a figure is made).

    Example::

        rates = cr.stream(["BTC/USD", "ETH/USD"], window="1h")   # the buffer keeps 1 h
        cr.live_chart(rates, window="5min")                      # the chart shows the last 5 min
    """
    return _line_chart(source, pairs, window, fps=fps, max_points=max_points, height=height, title=title, mode=mode,
                       function="live_chart", yaxis_title="rate", transform=None)


def performance_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    fps: float = DEFAULT_FPS,
    max_points: int = MAX_POINTS,
    height: int = 400,
    title: str = "Performance (rebased to 100)",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with each pair rebased to 100 at the start of the visible span, updating by itself.

    Pairs on very different price scales become comparable: each line is
    ``100 * rate / first rate in the window``. Arguments as for :func:`live_chart`; ``window``
    is the chart's visible span (``None``: everything the collector's buffer holds), so the
    base moves forward as the span slides.

    Raises:
        ConfigError: If any argument is invalid (checked before a figure is made).
    """
    return _line_chart(source, pairs, window, fps=fps, max_points=max_points, height=height, title=title, mode=mode,
                       function="performance_chart", yaxis_title="index (window start = 100)", transform=rebase)


def ohlc_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    freq: Duration = "1min",
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
        source: The collector or replay to draw.
        pairs: ``BASE/QUOTE`` pairs to draw; ``None`` means the subscribed pairs (or, for a
            whole-stream subscription, the pairs already in the collector's buffer).
        window: The chart's visible span, back from the newest row (``"30min"``, a
            ``timedelta`` or seconds); ``None`` shows everything the collector's buffer holds
            (``cr.stream(window=...)`` is how long the buffer keeps rows).
        freq: Candle length, e.g. ``"1s"``, ``"1min"``; candles are aligned on the epoch.
        fps: Redraws per second at most (candles change slowly; 1 is plenty).
        max_bars: Newest candles kept per pair.
        height: Figure height in pixels; by default 250 px per pair.
        title: Figure title; by default ``"OHLC <freq>"``.
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Raises:
        ConfigError: If any argument is invalid or no pair can be chosen (checked before a
            figure is made).

    Example::

        cr.ohlc_chart(rates, ["BTC/USD"], "30min", freq="1min")
    """
    chosen = _chart_pairs(pairs, "ohlc_chart")
    window_ns = span_ns(window, "window")
    freq_ns = span_ns(freq, "freq", allow_none=False)
    assert freq_ns is not None
    fps, mode = check_fps(fps), check_mode(mode)
    max_bars = _whole(max_bars, "max_bars", 1, "500")
    height = None if height is None else _whole(height, "height", _MIN_HEIGHT, "480")
    title = f"OHLC {span_label(freq)}" if title is None else _text(title, "title")
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
        title=dict(text=simulated_title(title, simulated)),
        height=height or max(300, 250 * len(chosen)),
        margin=dict(l=60, r=20, t=70, b=40),
        showlegend=False,
        uirevision=_UIREVISION,
        template=date_template(),
    )
    for badge in simulated_annotations(simulated):
        layout.add_annotation(**badge)
    fig = go.FigureWidget(layout)
    OhlcView(fig, chosen, freq_ns, window_ns, fps, max_bars).attach(source, mode)
    close_on_rerun(fig)
    return fig
