"""Live Plotly charts of a collector: rates, rebased performance and candlesticks.

The three chart functions take their arguments in one order::

    live_chart(source, pairs=None, window=None, *, fps=..., ...)
    performance_chart(source, pairs=None, window=None, *, fps=..., ...)
    ohlc_chart(source, pairs=None, window=None, *, freq="1min", fps=..., ...)

``window`` is always the chart's **visible span**: how far back from the newest row the chart
shows. It is not the collector's buffer window (``cr.stream(window=...)``, how long rows are
kept before they are evicted): a chart can show less than the buffer holds, never more.

Each function returns a :class:`plotly.graph_objects.FigureWidget` (a
:class:`~coinrates_nb.ui._figure.LiveFigure`) that updates by itself: a
:class:`~coinrates_nb.ui.refresh.Refresher` redraws it at most ``fps`` times a second, whatever the
message rate, and each redraw updates the traces in place inside ``fig.batch_update()`` (one
message per redraw) with at most ``max_points`` points per trace.

What a user of a live price chart expects, and how it is met here:

* **Readable at any mix of magnitudes.** ``live_chart`` draws one row per pair by default
  (``arrange="rows"``): BTC/USD at 95,000 and EUR/USD at 1.08 each get their own price axis on
  one shared time axis, the way multi-asset monitors show prices. Rebasing
  (``performance_chart``) answers a different question (which moved more), and secondary axes
  stop helping after two scales. ``arrange="overlay"`` puts every pair on one axis.
* **A colour per pair for the life of the chart**, chosen when the pair first appears and kept
  when other pairs come and go (:class:`PairColors`).
* **No invented prices.** Where a pair is silent for longer than ``max(5 s, 10 x its median
  spacing)`` (a stop/start, a disconnect) its line breaks; spans where every pair is silent are
  shaded (:func:`~coinrates_nb.ui.series.gap_threshold_ns`).
* **Zoom stays, live is one double-click away.** A zoom or pan pauses the chart on that range
  (shown as ``❚❚ paused``); double-click or Autoscale follows the live edge again (``● live``);
  :mod:`~coinrates_nb.ui.follow`.
* **Pairs follow the subscription.** With ``pairs=None`` the chart draws the source's
  subscription: ``unsubscribe`` removes the line at the next redraw.
* **Fills the width** of the notebook (``autosize``) and labels every axis.
* **Cheap in the browser.** A plotly.js redraw costs the renderer ~100-200 ms of CPU whatever the
  chart's size, so a chart redraws at most ``fps`` times a second (default 1), only when its
  visible part changed and not before it would move by a pixel, and one source's charts share
  :data:`~coinrates_nb.ui.throttle.CHART_BUDGET` redraws a second (``benchmarks/bench_browser.py``).

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
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Final, Literal, cast

import numpy as np
import plotly.colors
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from .._badge import SIMULATED_CLASS, simulated_annotations, simulated_title
from .._display import decimals_for, in_scope
from .._inputs import pair_list, span_ns
from .._types import Pair
from ..exceptions import ConfigError
from ._figure import LiveFigure
from ._lifecycle import WidgetView, close_on_rerun
from .follow import Follow
from .refresh import Mode, Source, Tick, check_mode
from .series import (
    Float64Array,
    Int64Array,
    break_gaps,
    check_max_points,
    common_gaps,
    downsample_minmax,
    gap_threshold_ns,
    gaps_of,
    ns_to_ms,
    ohlc_arrays,
    rebase,
    window_start,
    windowed,
)
from .throttle import DEFAULT_FPS, check_fps

__all__ = ["ARRANGEMENTS", "CHART_POINTS", "ChartView", "Duration", "FigureView", "OhlcView", "PairColors",
           "date_template", "live_chart", "ohlc_chart", "performance_chart", "span_label"]

logger = logging.getLogger(__name__)

Duration = str | dt.timedelta | float
"""A time span as users write it: ``"5min"``, a ``timedelta``/``pd.Timedelta``, or a number of seconds."""

Transform = Callable[[Float64Array], Float64Array]
Arrange = Literal["rows", "overlay"]
ARRANGEMENTS: Final = ("rows", "overlay")

CHART_POINTS: Final = 1_200
"""Points per line a chart sends by default: about one per pixel column of a notebook-wide chart
(min/max pairs over ~2 px buckets), so nothing visible is lost and nothing invisible is sent."""

PIXELS: Final = 1_000
"""The plot width assumed when deciding whether a redraw could move anything by a pixel."""

_ERROR_NAME: Final = "coinrates-error"
_FOLLOW_NAME: Final = "coinrates-follow"
_ROW_NAME: Final = "coinrates-row"
_GAP_NAME: Final = "coinrates-gap"
_UIREVISION: Final = "coinrates"
_MIN_HEIGHT: Final = 10  # plotly's own lower bound for a figure's height, in pixels
_TOP: Final = 70  # top margin: title and badge row, then legend and live/paused row
_BOTTOM: Final = 45
_ROW_PX: Final = 100  # height of one pair's row in an auto-height rows chart
_ROW_GAP_PX: Final = 26  # space between rows, holding the next row's label
_BADGE_SHIFT: Final = _TOP - 28  # raise the badge from the plot's top edge into the title row
_LIVE_COLOR: Final = "#15803d"
_PAUSED_COLOR: Final = "#b45309"
_GAP_FILL: Final = "rgba(100, 116, 139, 0.14)"

PALETTE: Final[tuple[str, ...]] = tuple(plotly.colors.qualitative.Plotly) + tuple(plotly.colors.qualitative.D3)
"""Line colours, given to pairs in the order they first appear (20 before they repeat)."""


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


def _arrange(value: Any) -> Arrange:
    if not isinstance(value, str) or value not in ARRANGEMENTS:
        raise ConfigError(f"arrange must be 'rows' (one price axis per pair, the default) or 'overlay' "
                          f"(every pair on one axis), not {value!r}")
    return cast(Arrange, value)


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


def _quote(pair: str) -> str:
    return pair.partition("/")[2] or pair


# --------------------------------------------------------------------------------------- colours


class PairColors:
    """One colour per pair for the life of a chart: the next palette colour when a pair first appears.

    A pair that leaves and comes back gets its colour back; other pairs never change colour.
    """

    def __init__(self, palette: Sequence[str] = PALETTE) -> None:
        self.palette = tuple(palette)
        self._colors: dict[str, str] = {}

    def __getitem__(self, pair: str) -> str:
        color = self._colors.get(pair)
        if color is None:
            color = self._colors[pair] = self.palette[len(self._colors) % len(self.palette)]
        return color

    def known(self) -> dict[str, str]:
        """Every pair given a colour so far, and its colour."""
        return dict(self._colors)


# --------------------------------------------------------------------------------------- views


_OURS: Final = frozenset({_ERROR_NAME, _FOLLOW_NAME, _ROW_NAME, SIMULATED_CLASS})


def _top_layout(title: str, simulated: bool, legend: bool) -> dict[str, Any]:
    """Title and badge in the top row, legend (overlay charts) and live cue in the row under it."""
    return dict(
        title=dict(text=simulated_title(title, simulated), x=0.0, xref="paper", xanchor="left", y=1.0,
                   yref="container", yanchor="top", pad=dict(t=10), font=dict(size=16)),
        showlegend=legend,
        legend=dict(orientation="h", x=0.0, xanchor="left", y=1.0, yanchor="bottom", yref="paper"),
        autosize=True,
        margin=dict(l=70, r=20, t=_TOP, b=_BOTTOM),
        uirevision=_UIREVISION,
        template=date_template(),
    )


class FigureView(WidgetView):
    """A view drawing into a Plotly FigureWidget: errors as a red note, the badge, and the live/paused cue.

    Charts are :attr:`~coinrates_nb.ui.refresh.View.costly`: a source's charts share one redraw budget.

    Args:
        fig: The figure to draw into.
        fps: Redraws per second at most.
        title: The title as given (" — SIMULATED" is added while the data is simulated).
    """

    costly = True

    def __init__(self, fig: Any, fps: float, title: str | None = None) -> None:
        super().__init__(fig, fps)
        self.follow = Follow()
        self.title = title
        self._simulated: bool | None = None
        self._cue: str | None = None
        self._notes: dict[str, list[dict[str, Any]]] = {}
        self._notes_dirty = False
        if hasattr(fig, "on_relayout"):
            fig.on_relayout(self.on_relayout)

    def set_notes(self, name: str, notes: list[dict[str, Any]]) -> None:
        """Ask for the annotations called ``name`` to be ``notes`` (sent by the next :meth:`flush_notes`)."""
        if self._notes.get(name, []) != notes:
            self._notes[name] = notes
            self._notes_dirty = True

    def flush_notes(self, fig: Any) -> None:
        """Send our annotations, once per redraw, keeping everyone else's (subplot titles, the user's).

        Once per redraw because inside ``batch_update()`` plotly.py reads back stale
        annotations after a first assignment.
        """
        if not self._notes_dirty:
            return
        self._notes_dirty = False
        kept = [a for a in fig.layout.annotations if a.name not in _OURS]
        kept.extend(go.layout.Annotation(name=name, **note) for name, notes in self._notes.items() for note in notes)
        fig.layout.annotations = kept

    @staticmethod
    def sync_state(fig: Any) -> None:
        """After a redraw: let a page that connects later start from the figure as it is (:meth:`LiveFigure.sync_state`)."""
        sync = getattr(fig, "sync_state", None)
        if callable(sync):
            sync()

    def show_error(self, message: str | None) -> None:
        fig = self.widget
        if fig is None:
            return
        self.set_notes(_ERROR_NAME, [] if message is None else [dict(
            text=message[:200], xref="paper", yref="paper", x=0.0, y=0.0, xanchor="left", yanchor="bottom",
            showarrow=False, bgcolor="#b91c1c", font=dict(color="white", size=12))])
        self.flush_notes(fig)
        self.sync_state(fig)

    def on_relayout(self, data: dict[str, Any]) -> None:
        """A zoom, pan or autoscale from the browser: pause on the user's range or follow live again."""
        if self.follow.on_relayout(data):
            self.invalidate()

    def _sync_badge(self, fig: Any, simulated: bool) -> None:
        """Show the SIMULATED badge and title suffix exactly while the data is simulated (it can change on connect)."""
        if simulated == self._simulated:
            return
        self._simulated = simulated
        if self.title is not None:
            fig.layout.title.text = simulated_title(self.title, simulated)
        badge = simulated_annotations(simulated, yshift=_BADGE_SHIFT)
        self.set_notes(SIMULATED_CLASS, [{k: v for k, v in b.items() if k != "name"} for b in badge])

    def _sync_cue(self, fig: Any) -> None:
        cue = self.follow.cue
        if cue == self._cue:
            return
        self._cue = cue
        color = _LIVE_COLOR if self.follow.live else _PAUSED_COLOR
        self.set_notes(_FOLLOW_NAME, [dict(
            text=cue, xref="paper", yref="paper", x=1.0, y=1.0, xanchor="right", yanchor="bottom", yshift=4,
            showarrow=False, font=dict(color=color, size=12))])

    def chrome(self, fig: Any, tick: Tick) -> None:
        """Badge and cue, updated only when they change (called inside the redraw's batch)."""
        self._sync_badge(fig, bool(tick.status.simulated))
        self._sync_cue(fig)


class ChartView(FigureView):
    """Keeps one line trace per pair of a FigureWidget up to date.

    Args:
        fig: The figure to draw into.
        pairs: Pairs to draw, or ``None`` for the source's subscription (every pair in the frame
            when it has none): traces come and go with ``subscribe``/``unsubscribe``.
        window_ns: Visible span, back from the newest row; ``None`` for the whole frame.
        fps: Redraws per second at most.
        max_points: Points per trace per redraw at most (min/max decimation above it).
        transform: Applied to each pair's visible rates before decimation (e.g. rebasing).
        arrange: ``"rows"`` (a price axis per pair) or ``"overlay"`` (one axis).
        height: Fixed figure height, or ``None`` to size a rows chart by its number of rows.
        title: The title as given (for the SIMULATED suffix), or ``None`` to leave it alone.
    """

    def __init__(self, fig: Any, pairs: tuple[Pair, ...] | None, window_ns: int | None, fps: float, max_points: int,
                 transform: Transform | None = None, *, arrange: Arrange = "overlay", height: int | None = None,
                 title: str | None = None) -> None:
        super().__init__(fig, fps, title)
        self.pairs = pairs
        self.window_ns = window_ns
        self.max_points = check_max_points(max_points)
        self.transform = transform
        self.arrange = arrange
        self.height = height
        self.colors = PairColors()
        self.points_sent = 0
        self.gaps_ns: dict[str, tuple[Int64Array, Int64Array]] = {}
        self._rows: tuple[str, ...] | None = None
        self._shaded: list[tuple[int, int]] = []
        self._hover: dict[str, int] = {}
        self._span_s = 0.0
        self._newest_drawn: int | None = None
        self._drawn_range: tuple[int, int] | None = None
        for trace in fig.data:  # traces made before the view (benchmarks): keep their names' colours
            if trace.name:
                self.colors[trace.name]

    def set_window(self, window: Duration | None) -> None:
        """Show ``window`` back from the newest row (``None``: the whole frame) from the next redraw, following live.

        Raises:
            ConfigError: If ``window`` is not a positive duration.
        """
        self.window_ns = span_ns(window, "window")
        self.follow.resume()
        self.invalidate()

    def due(self, now: float, version: Hashable) -> bool:
        """Redraw when the visible part can have changed, and not more often than a pixel's worth of time.

        Paused on a range wholly in the past, nothing visible changes: no redraw until the range
        changes. Following, a redraw is due at most every ``span / PIXELS`` seconds (a 15-minute
        window moves less than a pixel in 0.9 s), and at most ``fps`` times a second.
        """
        if self.follow.frozen(self._newest_drawn) and self._drawn_range == self.follow.range_ns:
            return False
        if not super().due(now, version):
            return False
        last = self.throttle.last
        return last is None or self.drawn is None or now - last >= self._span_s / PIXELS

    def wanted(self, tick: Tick, present: Iterable[str]) -> list[str]:
        """The pairs to draw, in a stable order: the named pairs, else the subscription's pairs then those with data."""
        if self.pairs is not None:
            return list(self.pairs)
        scope = tick.status.scope
        named = [p for p in scope if "/" in p] if scope is not None else []
        candidates = [*named, *(p for p in present if p not in named and in_scope(p, scope))]
        order = [p for p in (self._rows or ()) if p in candidates]  # rows stay where they were ...
        order.extend(p for p in candidates if p not in order)  # ... new ones go below
        order.sort(key=lambda p: named.index(p) if p in named else len(named))  # the subscription's order first
        return order

    def lines(self, tick: Tick) -> dict[str, tuple[Float64Array, Float64Array]]:
        """Each drawn pair's (x ms, y) arrays for ``tick``: visible rows, transformed, decimated, broken at gaps."""
        since: int | None
        until: int | None
        if self.follow.range_ns is not None:
            lo, hi = self.follow.range_ns
            margin = (hi - lo) // 10
            since, until = lo - margin, hi + margin
        else:
            since, until = window_start(tick.newest_ns, self.window_ns), None
        out: dict[str, tuple[Float64Array, Float64Array]] = {}
        self.gaps_ns = {}
        wanted = set(self.wanted(tick, tick.series))
        for pair, (t, r) in tick.series.items():
            if pair not in wanted:
                continue
            t, r = windowed(t, r, since, until)
            if len(t) == 0:
                continue
            y = self.transform(r) if self.transform is not None else r
            x, y = downsample_minmax(ns_to_ms(t), y, self.max_points)
            starts, ends = gaps_of(t, gap_threshold_ns(t))
            self.gaps_ns[pair] = (starts, ends)
            out[pair] = break_gaps(x, y, ns_to_ms(starts))
        return out

    def draw(self, tick: Tick) -> None:
        fig = self.widget
        if fig is None:
            return
        lines = self.lines(tick)
        wanted = self.wanted(tick, lines)
        self._sync_traces(fig, wanted, lines)
        if self.arrange == "rows" and tuple(wanted) != self._rows:
            self._add_axes(fig, len(wanted))
        with fig.batch_update():
            self.chrome(fig, tick)
            if self.arrange == "rows" and tuple(wanted) != self._rows:
                self._layout_rows(fig, wanted)
            for trace in fig.data:
                x, y = lines.get(trace.name, (np.empty(0), np.empty(0)))
                trace.x = x
                trace.y = y
                self.points_sent += len(x)
                self._sync_hover(trace, y)
            self._shade(fig, [self.gaps_ns[p] for p in wanted if p in self.gaps_ns])
            self.flush_notes(fig)
        self._rows = tuple(wanted)
        self.sync_state(fig)
        ends = [float(x[-1]) for x, _ in lines.values() if len(x)]
        starts = [float(x[0]) for x, _ in lines.values() if len(x)]
        self._newest_drawn = int(max(ends) * 1e6) if ends else None
        self._span_s = (max(ends) - min(starts)) / 1e3 if ends else 0.0
        self._drawn_range = self.follow.range_ns

    def color(self, pair: str) -> str:
        """The colour of ``pair``'s line (given now if it has none yet)."""
        return self.colors[pair]

    # -- drawing parts -------------------------------------------------------------------------

    def _sync_traces(self, fig: Any, wanted: list[str], lines: dict[str, Any]) -> None:
        """Add and remove traces so there is one per wanted pair, in order, each in its pair's colour."""
        names = [trace.name for trace in fig.data]
        if names == wanted:
            return
        kept = [trace for trace in fig.data if trace.name in wanted]
        if len(kept) != len(fig.data):
            fig.data = kept
        have = {trace.name for trace in fig.data}
        new = [go.Scatter(x=[], y=[], name=pair, mode="lines", connectgaps=False,
                          line=dict(color=self.colors[pair], width=1.5), hovertemplate="%{x}<br>%{y}")
               for pair in wanted if pair not in have]
        if new:
            fig.add_traces(new)
        order = [trace.name for trace in fig.data]
        if order != wanted:
            fig.data = sorted(fig.data, key=lambda trace: wanted.index(trace.name))

    def _sync_hover(self, trace: Any, y: Float64Array) -> None:
        """Hover shows the pair's rate with the same decimals as the tables (set when its magnitude changes)."""
        finite = y[np.isfinite(y)]
        if not len(finite):
            return
        digits = decimals_for(float(np.max(np.abs(finite))))
        if self._hover.get(trace.name) != digits:
            self._hover[trace.name] = digits
            trace.hovertemplate = f"%{{x|%H:%M:%S.%L}}<br>%{{y:,.{digits}f}}<extra>{trace.name}</extra>"

    @staticmethod
    def _add_axes(fig: Any, n: int) -> None:
        """Create missing row axes in a relayout of their own.

        plotly.js refuses an update that sets ``yaxis5`` and ``yaxis5.domain`` together
        ("cannot set yaxis5.domain and a parent attribute simultaneously"), which is what
        plotly.py sends for a new axis whose properties are set in the same batch.
        """
        missing = {key: dict(anchor="x") for key in (f"yaxis{i}" for i in range(2, n + 1))
                   if key not in fig.layout}
        if missing:
            fig.update_layout(missing)

    def _layout_rows(self, fig: Any, wanted: list[str]) -> None:
        """One price axis per pair, stacked top to bottom on the one shared time axis, labelled with the pair."""
        n = max(1, len(wanted))
        height = self.height or max(300, _TOP + _BOTTOM + n * _ROW_PX + (n - 1) * _ROW_GAP_PX)
        plot_px = max(1, height - _TOP - _BOTTOM)
        gap = min(_ROW_GAP_PX / plot_px, 0.5 / n) if n > 1 else 0.0
        row = (1.0 - gap * (n - 1)) / n
        updates: dict[str, Any] = {}
        labels = []
        for i in range(n):
            top = 1.0 - i * (row + gap)
            key = "yaxis" if i == 0 else f"yaxis{i + 1}"
            pair = wanted[i] if i < len(wanted) else ""
            updates[key] = dict(domain=[max(0.0, top - row), min(1.0, top)], anchor="x", automargin=False, nticks=4,
                                title=dict(text=_quote(pair), standoff=6, font=dict(size=11)),
                                ticks="outside", ticklen=3, showgrid=True, fixedrange=False)
            if pair:
                labels.append(dict(text=f"<b>{pair}</b>", xref="paper", yref="paper", x=0.0, y=min(1.0, top),
                                   xanchor="left", yanchor="bottom", yshift=2, showarrow=False,
                                   font=dict(color=self.colors[pair], size=12)))
        for i in range(n, len(self._rows or ())):  # rows that went: their axes go too
            updates[f"yaxis{i + 1}"] = None
        updates["xaxis"] = dict(anchor="y" if n == 1 else f"y{n}", type="date", title=dict(text="time (UTC)"),
                                automargin=False)
        updates["height"] = height
        fig.update_layout(updates)
        for i, trace in enumerate(fig.data):
            trace.yaxis = "y" if i == 0 else f"y{i + 1}"
            trace.xaxis = "x"
        self.set_notes(_ROW_NAME, labels)

    def _shade(self, fig: Any, gaps: list[tuple[Int64Array, Int64Array]]) -> None:
        """Shade the spans in which every drawn pair was silent (a stop/start, a disconnect)."""
        spans = common_gaps(gaps) if gaps else []
        if spans == self._shaded:
            return
        self._shaded = spans
        kept = [s for s in fig.layout.shapes if s.name != _GAP_NAME]
        kept.extend(go.layout.Shape(name=_GAP_NAME, type="rect", xref="x", yref="paper", x0=lo / 1e6, x1=hi / 1e6,
                                    y0=0, y1=1, fillcolor=_GAP_FILL, line=dict(width=0), layer="below")
                    for lo, hi in spans)
        fig.layout.shapes = kept


class OhlcView(FigureView):
    """Keeps one candlestick trace per pair (one subplot row each) up to date."""

    def __init__(self, fig: Any, pairs: tuple[Pair, ...], freq_ns: int, window_ns: int | None, fps: float,
                 max_bars: int, title: str | None = None) -> None:
        super().__init__(fig, fps, title)
        self.pairs = pairs
        self.freq_ns = freq_ns
        self.window_ns = window_ns
        self.max_bars = max_bars
        self._newest_drawn: int | None = None
        self._drawn_range: tuple[int, int] | None = None

    def due(self, now: float, version: Hashable) -> bool:
        """As for lines: paused on a range wholly in the past, nothing visible can change."""
        if self.follow.frozen(self._newest_drawn) and self._drawn_range == self.follow.range_ns:
            return False
        return super().due(now, version)

    def draw(self, tick: Tick) -> None:
        fig = self.widget
        if fig is None:
            return
        since: int | None
        until: int | None
        if self.follow.range_ns is not None:
            lo, hi = self.follow.range_ns
            since, until = lo - self.freq_ns, hi + self.freq_ns
        else:
            since, until = window_start(tick.newest_ns, self.window_ns), None
        newest = []
        with fig.batch_update():
            self.chrome(fig, tick)
            for trace, pair in zip(fig.data, self.pairs, strict=True):
                t, r = tick.series.get(pair, (np.empty(0, np.int64), np.empty(0)))
                t, r = windowed(t, r, since, until)
                if len(t):
                    newest.append(int(t[-1]))
                bars = ohlc_arrays(t, r, self.freq_ns)
                for key, values in bars.items():
                    trace[key] = values[-self.max_bars:]
            self.flush_notes(fig)
        self.sync_state(fig)
        self._newest_drawn = max(newest) if newest else None
        self._drawn_range = self.follow.range_ns


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
                mode: Any, function: str, yaxis_title: str, transform: Transform | None, arrange: Any) -> Any:
    """Check every argument, then build, attach and return a line chart (what both line charts share)."""
    chosen = _chart_pairs(pairs, function)
    window_ns = span_ns(window, "window")
    fps, mode = check_fps(fps), check_mode(mode)
    max_points = check_max_points(max_points)
    arrange = _arrange(arrange)
    height = None if height is None else _whole(height, "height", _MIN_HEIGHT, "400")
    title = _text(title, "title")
    layout = _top_layout(title, _simulated(source), legend=arrange == "overlay")
    layout.update(
        height=height or (400 if arrange == "overlay" else 300),
        xaxis=dict(type="date", title=dict(text="time (UTC)"), automargin=False),
        yaxis=dict(title=dict(text=yaxis_title, standoff=8), automargin=False, ticks="outside", ticklen=3),
    )
    fig = LiveFigure(layout=layout)
    view = ChartView(fig, chosen, window_ns, fps, max_points, transform, arrange=arrange, height=height, title=title)
    view.attach(source, mode)
    close_on_rerun(fig)
    return fig


def live_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    fps: float = DEFAULT_FPS,
    max_points: int = CHART_POINTS,
    height: int | None = None,
    title: str = "Exchange rates",
    arrange: Arrange = "rows",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with one line per pair that updates by itself, one price axis per pair by default.

    Args:
        source: The collector (``cr.stream(...)``) or replay to draw.
        pairs: ``BASE/QUOTE`` pairs to draw; ``None`` draws the source's subscription, adding
            and removing lines as pairs come and go (``subscribe``/``unsubscribe``).
        window: The chart's visible span, back from the newest row: ``"5min"``, a
            ``timedelta`` or a number of seconds. ``None`` shows everything the collector's
            buffer holds. This is not the buffer's own window (``cr.stream(window=...)``, how
            long rows are kept): the chart shows at most what the buffer still holds.
        fps: Redraws per second at most, whatever the message rate.
        max_points: Points per line per redraw at most (at least 4); longer lines are
            decimated keeping each bucket's minimum and maximum.
        height: Figure height in pixels; by default 100 px per row (rows) or 400 (overlay).
        title: Figure title (" — SIMULATED" is appended for simulated data).
        arrange: ``"rows"``: a row and price axis per pair on one time axis, readable whatever
            the pairs' magnitudes (BTC/USD 95,000 beside EUR/USD 1.08); ``"overlay"``: every
            pair on one axis.
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
                       function="live_chart", yaxis_title="rate", transform=None, arrange=arrange)


def performance_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    fps: float = DEFAULT_FPS,
    max_points: int = CHART_POINTS,
    height: int | None = None,
    title: str = "Performance (rebased to 100)",
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget with each pair rebased to 100 at the start of the visible span, updating by itself.

    Pairs on very different price scales become comparable on one axis: each line is
    ``100 * rate / first rate in the window``. Arguments as for :func:`live_chart`; ``window``
    is the chart's visible span (``None``: everything the collector's buffer holds), so the
    base moves forward as the span slides.

    Raises:
        ConfigError: If any argument is invalid (checked before a figure is made).
    """
    return _line_chart(source, pairs, window, fps=fps, max_points=max_points, height=height, title=title, mode=mode,
                       function="performance_chart", yaxis_title="index (window start = 100)", transform=rebase,
                       arrange="overlay")


def ohlc_chart(
    source: Source,
    pairs: str | Iterable[str] | None = None,
    window: Duration | None = None,
    *,
    freq: Duration = "1min",
    fps: float = 0.5,
    max_bars: int = 500,
    height: int | None = None,
    title: str | None = None,
    mode: Mode = "thread",
) -> Any:
    """Return a FigureWidget of live candlesticks per ``freq`` bucket, one subplot row per pair.

    The newest candle grows as rates arrive and a new one starts at each bucket boundary.
    The pairs are fixed when the chart is made. Each row's price axis is titled with the
    pair's quote currency.

    Args:
        source: The collector or replay to draw.
        pairs: ``BASE/QUOTE`` pairs to draw; ``None`` means the subscribed pairs (or, for a
            whole-stream subscription, the pairs already in the collector's buffer).
        window: The chart's visible span, back from the newest row (``"30min"``, a
            ``timedelta`` or seconds); ``None`` shows everything the collector's buffer holds
            (``cr.stream(window=...)`` is how long the buffer keeps rows).
        freq: Candle length, e.g. ``"1s"``, ``"1min"``; candles are aligned on the epoch.
        fps: Redraws per second at most (candles change slowly: one redraw every 2 s by default).
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
    layout = make_subplots(rows=len(chosen), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=list(chosen))
    for row, pair in enumerate(chosen, start=1):
        layout.add_trace(go.Candlestick(x=[], open=[], high=[], low=[], close=[], name=pair), row=row, col=1)
        layout.update_xaxes(type="date", rangeslider_visible=False, row=row, col=1)
        layout.update_yaxes(title=dict(text=_quote(pair), standoff=6, font=dict(size=11)), automargin=False, nticks=4,
                            ticks="outside", ticklen=3, row=row, col=1)
    layout.update_xaxes(title=dict(text="time (UTC)"), row=len(chosen), col=1)
    for note in layout.layout.annotations:  # the subplot titles: left-aligned like the line charts' row labels
        note.update(x=0.0, xanchor="left", font=dict(size=12))
    top = _top_layout(title, _simulated(source), legend=False)
    top["height"] = height or max(300, 250 * len(chosen))
    layout.update_layout(top)
    fig = LiveFigure(layout)
    OhlcView(fig, chosen, freq_ns, window_ns, fps, max_bars, title=title).attach(source, mode)
    close_on_rerun(fig)
    return fig
