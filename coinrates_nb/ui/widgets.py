"""ipywidgets controls for a collector: a status bar and a dashboard around a live chart.

:func:`status_bar` shows the stream's state (connected / reconnecting / stale / stopped / error),
messages per second, lag, reconnect count and, whenever the data is simulated, a
**SIMULATED DATA** badge. :func:`dashboard` adds a pair picker that subscribes and unsubscribes
live, start/stop, a window-length choice, the live chart and a latest-rates table.

Widgets are views (STYLE §14): they own no data and no thread. The collector's shared
:class:`~coinrates_nb.ui.refresh.Refresher` redraws them; the HTML is built by the pure functions
:func:`render_status` and :func:`render_latest`. Every callback runs inside a guard that logs
the error and shows it in the dashboard's error line, since errors raised in ``observe``
callbacks are otherwise swallowed by the notebook.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from html import escape
from typing import Any, Final, Literal

import ipywidgets as w
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from .._badge import pill_html, simulated_html
from .._inputs import filter_items, span_ns
from .._types import FilterItem, Pair
from ..exceptions import ConfigError
from ..status import Status
from ._lifecycle import WidgetView, close_on_rerun
from .plots import ChartView, Duration, live_chart, performance_chart, span_label
from .refresh import Mode, Source, Tick, check_mode
from .throttle import DEFAULT_FPS, check_fps

__all__ = ["Dashboard", "StatusView", "dashboard", "render_latest", "render_status", "status_bar"]

logger = logging.getLogger(__name__)

STATE_COLORS: Final[dict[str, str]] = {
    "connected": "#15803d",
    "connecting": "#2563eb",
    "idle": "#64748b",
    "reconnecting": "#d97706",
    "stale": "#ea580c",
    "stopped": "#64748b",
    "error": "#b91c1c",
}
"""Badge colour per collector state."""

WINDOWS: Final[tuple[tuple[str, str | None], ...]] = (
    ("1 min", "1min"), ("5 min", "5min"), ("15 min", "15min"), ("1 h", "1h"), ("all", None))
"""Choices of the dashboard's window picker (the chart's visible span): label and span (``None``: the whole buffer)."""


# --------------------------------------------------------------------------------------- pure HTML


def render_status(status: Status) -> str:
    """Return the status bar's HTML for ``status``: state, SIMULATED badge, throughput, lag, reconnects."""
    color = STATE_COLORS.get(status.state, "#64748b")
    parts = [pill_html(status.state, color, "coinrates-state"), simulated_html(status.simulated)]
    lag = "n/a" if status.lag_ms is None else f"{status.lag_ms:,.0f} ms"
    n_pairs = "all" if status.scope is None else str(len(status.scope))
    facts = [
        f"{status.msgs_per_s:,.1f} msgs/s",
        f"lag {lag}",
        f"{status.reconnects} reconnect{'s' if status.reconnects != 1 else ''}",
        f"{status.rates:,} msgs",
        f"{status.rows:,} rows",
        f"{n_pairs} pairs",
    ]
    parts.append(f'<span class="coinrates-facts">{escape(" · ".join(facts))}</span>')
    if status.stale_pairs:
        parts.append(f'<span style="color:#ea580c;margin-left:6px">stale: {escape(", ".join(status.stale_pairs))}</span>')
    if status.last_error:
        parts.append(f'<span class="coinrates-last-error" style="color:#b91c1c;margin-left:6px">'
                     f'last error: {escape(status.last_error[:300])}</span>')
    return f'<div class="coinrates-status" style="font-family:sans-serif;font-size:13px">{"".join(parts)}</div>'


def render_latest(latest: pd.DataFrame) -> str:
    """Return an HTML table of the newest rate per pair: pair, rate, time (UTC) and age."""
    if latest.empty:
        return '<div class="coinrates-latest" style="color:#64748b">no rates yet</div>'
    rows = []
    for pair, row in latest.iterrows():
        age = row["age"]
        age_s = age.total_seconds() if isinstance(age, pd.Timedelta) else float("nan")
        stamp = row["time"]
        when = stamp.strftime("%H:%M:%S.%f")[:-3] if isinstance(stamp, pd.Timestamp) else str(stamp)
        rate = float(row["rate"])
        rows.append(f"<tr><td>{escape(str(pair))}</td><td style='text-align:right'>{rate:,.6g}</td>"
                    f"<td>{escape(when)}</td><td style='text-align:right'>{age_s:,.1f} s</td></tr>")
    head = "<tr><th>pair</th><th>rate</th><th>time (UTC)</th><th>age</th></tr>"
    return (f'<table class="coinrates-latest" style="font-family:monospace;font-size:12px">'
            f'{head}{"".join(rows)}</table>')


# --------------------------------------------------------------------------------------- views


class StatusView(WidgetView):
    """Re-renders an HTML widget from the source's status ``fps`` times a second."""

    def __init__(self, widget: Any, fps: float = 2.0) -> None:
        super().__init__(widget, fps, always=True)

    def draw(self, tick: Tick) -> None:
        widget = self.widget
        if widget is not None:
            widget.value = render_status(tick.status)  # unchanged text sends nothing


class _PanelView(WidgetView):
    """Keeps a dashboard's status bar, latest-rates table and start/stop label current."""

    def __init__(self, board: Dashboard, fps: float = 2.0) -> None:
        super().__init__(board, fps, always=True)

    def draw(self, tick: Tick) -> None:
        board = self.widget
        if board is None:
            return
        board.status_html.value = render_status(tick.status)
        board.table.value = render_latest(tick.latest)
        board.sync_picker()
        running = bool(getattr(board.source, "running", True))
        board.start_stop.description = "Stop" if running else "Start"
        board.start_stop.icon = "stop" if running else "play"
        board.start_stop.button_style = "" if running else "success"

    def show_error(self, message: str | None) -> None:
        board = self.widget
        if board is not None:
            board.show_error(message)


# --------------------------------------------------------------------------------------- public


def status_bar(source: Source, *, fps: float = 2.0, mode: Mode = "thread") -> w.HTML:
    """Return an HTML widget showing the source's live status, with a SIMULATED DATA badge when simulated.

    Args:
        source: The collector to watch.
        fps: Re-renders per second (the text is only sent when it changes).
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Raises:
        ConfigError: If ``fps`` or ``mode`` is invalid (checked before a widget is made).
    """
    fps, mode = check_fps(fps), check_mode(mode)
    bar = w.HTML(value=render_status(source.status))
    StatusView(bar, fps).attach(source, mode)
    close_on_rerun(bar)
    return bar


ChartKind = Literal["rates", "performance"]
CHARTS: Final[dict[str, Callable[..., Any]]] = {"rates": live_chart, "performance": performance_chart}


def _window_choices(window: Duration | None) -> tuple[dict[str, Duration | None], str]:
    """The window picker's options (label -> span) and the label of ``window``, added if it is not a preset."""
    spans: dict[str, Duration | None] = dict(WINDOWS)
    wanted = span_ns(window, "window")
    initial = next((label for label, span in WINDOWS if span_ns(span) == wanted), None)
    if initial is None:
        assert window is not None  # None is the "all" preset
        initial = span_label(window)
        spans[initial] = window
    return spans, initial


class Dashboard(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """Status bar, controls, error line, live chart and latest-rates table for one collector.

    Made by :func:`dashboard`. Attributes are the parts: ``status_html``, ``picker``,
    ``start_stop``, ``window`` (the chart's visible span), ``error``, ``chart`` (a FigureWidget)
    and ``table``. ``close()`` closes every part and stops their redraws.
    """

    def __init__(self, source: Source, *, window: Duration | None, fps: float, mode: Mode,
                 chart: ChartKind = "rates") -> None:
        self.source = source
        scope = getattr(source, "pairs", None)
        self._spans, initial = _window_choices(window)
        self.status_html = w.HTML(value=render_status(source.status))
        self.picker = w.TagsInput(value=list(scope or ()), allow_duplicates=False,
                                  layout=w.Layout(width="420px"), tooltip="pairs: BASE/QUOTE, or an asset id")
        self.start_stop = w.Button(description="Stop", icon="stop", layout=w.Layout(width="90px"))
        self.window = w.Dropdown(options=list(self._spans), value=initial, description="window",
                                 tooltip="how far back the chart shows", layout=w.Layout(width="180px"))
        self.error = w.HTML(value="", layout=w.Layout(display="none"))
        self.chart = CHARTS[chart](source, self._chart_pairs(), window, fps=fps, mode=mode)
        self.table = w.HTML(value=render_latest(source.frame.latest()))
        controls = w.HBox([w.Label("pairs"), self.picker, self.start_stop, self.window])
        super().__init__([self.status_html, controls, self.error, self.chart, self.table])
        self.add_class("coinrates-dashboard")
        self._syncing = False
        self._last_scope = scope
        self.picker.observe(self._guard(self._on_pairs), names=["value"])
        self.window.observe(self._guard(self._on_window), names=["value"])
        self.start_stop.on_click(self._guard(self._on_start_stop))
        self.panel = _PanelView(self)
        self.panel.attach(source, mode)

    # -- errors ------------------------------------------------------------------------------

    def show_error(self, message: str | None) -> None:
        """Show ``message`` in the red error line (``None`` hides it)."""
        if message is None:
            self.error.value = ""
            self.error.layout.display = "none"
        else:
            self.error.value = (f'<div class="coinrates-error" style="color:#b91c1c;font-weight:bold">'
                                f'{escape(message[:500])}</div>')
            self.error.layout.display = ""

    def _guard(self, fn: Callable[..., None]) -> Callable[..., None]:
        """Wrap a widget callback so its errors are logged and shown, never swallowed."""

        @functools.wraps(fn)
        def guarded(*args: Any) -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - top of a widget callback
                logger.error("dashboard callback %s failed: %s", fn.__name__, exc, exc_info=True)
                self.show_error(f"{fn.__name__.lstrip('_')}: {type(exc).__name__}: {exc}")
            else:
                self.show_error(None)

        return guarded

    # -- callbacks (kernel thread) -------------------------------------------------------------

    def _chart_pairs(self) -> tuple[Pair, ...] | None:
        """Pairs the chart draws: the subscribed pairs, or all when the scope has asset ids or is everything."""
        scope = getattr(self.source, "pairs", None)
        if scope is None or not all("/" in item for item in scope):
            return None
        return tuple(scope)

    def _on_pairs(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        old: tuple[FilterItem, ...] = filter_items(change["old"] or (), "pairs")
        try:
            new: tuple[FilterItem, ...] = filter_items(change["new"] or (), "pairs")
        except ConfigError:
            self._set_picker(list(old))
            raise
        if list(new) != list(change["new"]):
            self._set_picker(list(new))
        added = [p for p in new if p not in old]
        removed = [p for p in old if p not in new]
        source: Any = self.source
        if added:
            source.subscribe(added)
        if removed:
            source.unsubscribe(removed)
        self._last_scope = getattr(source, "pairs", None)
        self._follow_scope()

    def _follow_scope(self) -> None:
        """Point the chart at the current subscription (when it changed) and redraw it at once."""
        view = self.chart._coinrates_view
        assert isinstance(view, ChartView)
        pairs = self._chart_pairs()
        if view.pairs != pairs:
            with view.lock:
                view.pairs = pairs
            view.invalidate()

    def sync_picker(self) -> None:
        """Show the subscription in the picker after code changed it (``rates.subscribe(...)``).

        Only a change of the source's scope since the last look moves the picker, so an edit the
        user is making in the picker is never overwritten.
        """
        scope = getattr(self.source, "pairs", None)
        if scope == self._last_scope:
            return
        self._last_scope = scope
        if scope is not None and list(scope) != list(self.picker.value):
            self._set_picker(list(scope))
            self._follow_scope()

    def _set_picker(self, values: list[str]) -> None:
        self._syncing = True
        try:
            self.picker.value = values
        finally:
            self._syncing = False

    def _on_window(self, change: dict[str, Any]) -> None:
        view = self.chart._coinrates_view
        assert isinstance(view, ChartView)
        with view.lock:
            view.set_window(self._spans[change["new"]])

    def _on_start_stop(self, _button: Any) -> None:
        source: Any = self.source
        if source.running:
            source.stop()
        else:
            source.start()
        self.panel.invalidate()

    def close(self) -> None:
        """Close every part (stopping their redraws), then the box."""
        for part in (self.chart, self.status_html, self.picker, self.start_stop, self.window, self.error,
                     self.table):
            part.close()
        super().close()


def dashboard(
    source: Source,
    *,
    window: Duration | None = "5min",
    fps: float = DEFAULT_FPS,
    mode: Mode = "thread",
    chart: ChartKind = "rates",
) -> Dashboard:
    """Return a live dashboard for ``source``: status, pair picker, start/stop, window, chart, table.

    The pair picker subscribes and unsubscribes over the open connection (entries follow the
    package's pair rules: ``BASE/QUOTE`` or an asset id; a mistake like ``BTCUSD`` is refused
    with the pair it probably meant); start/stop controls the collector; the window picker sets
    the chart's visible span.

    Args:
        source: The collector (``cr.stream(...)``).
        window: The chart's initial visible span, back from the newest row (``"5min"``, a
            ``timedelta`` or seconds); ``None`` shows everything the collector's buffer holds.
            Not the buffer's own window (``cr.stream(window=...)``, how long rows are kept).
        fps: Chart redraws per second at most.
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.
        chart: ``"rates"`` (raw rates, one axis) or ``"performance"`` (each pair rebased to 100,
            so pairs of very different price levels stay readable on one axis).

    Raises:
        ConfigError: If any argument is invalid (checked before any widget is made).
    """
    # Checked before any widget exists, so nothing half-built is left to close.
    if not isinstance(chart, str) or chart not in CHARTS:
        raise ConfigError(f"chart must be one of {sorted(CHARTS)}, not {chart!r}")
    span_ns(window, "window")
    fps, mode = check_fps(fps), check_mode(mode)
    board = Dashboard(source, window=window, fps=fps, mode=mode, chart=chart)
    close_on_rerun(board)
    return board
