"""ipywidgets controls for a collector: a status bar and a dashboard around a live chart.

:func:`status_bar` shows the stream's state (connected / reconnecting / stale / stopped / error),
messages per second, lag, reconnect count and, whenever the data is simulated, a
**SIMULATED DATA** badge. :func:`dashboard` adds a pair picker that subscribes and unsubscribes
live, start/stop, a window-length choice, the live chart and a latest-rates table.

The pair picker is a chip per subscribed pair (in its line's colour; × unsubscribes) and a text
box where Enter subscribes. It replaces ipywidgets' ``TagsInput``, which in JupyterLab 4.6 added
a typed tag only on Tab or blur, never on Enter, and hid its text box whenever it held a tag.

Widgets are views (STYLE §14): they own no data and no thread. The collector's shared
:class:`~coinrates_nb.ui.refresh.Refresher` redraws them; the HTML comes from the pure
:mod:`coinrates_nb._display` (the same formatting as ``latest()`` and ``status`` in a notebook).
Everything shown follows the subscription: a pair the user removed leaves the chart, the table
and the stale flags at once, although its rows stay in the buffer. Every callback runs inside a
guard that logs the error and shows it in the dashboard's error line, since errors raised in
``observe`` callbacks are otherwise swallowed by the notebook.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from html import escape
from typing import Any, Final, Literal

import ipywidgets as w
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
from traitlets import List, Unicode

from .._display import STATE_COLORS, latest_html, scoped, status_line
from .._inputs import filter_items, span_ns
from .._types import FilterItem
from ..exceptions import ConfigError
from ..status import Status
from ._figure import QuietClose, quiet_close
from ._lifecycle import WidgetView, close_on_rerun
from .plots import ChartView, Duration, live_chart, performance_chart, span_label
from .refresh import Mode, Source, Tick, check_mode
from .throttle import DEFAULT_FPS, check_fps

__all__ = ["STATE_COLORS", "Dashboard", "PairPicker", "StatusBar", "StatusView", "dashboard", "render_latest", "render_notes",
           "render_status", "status_bar"]

logger = logging.getLogger(__name__)

WINDOWS: Final[tuple[tuple[str, str | None], ...]] = (
    ("1 min", "1min"), ("5 min", "5min"), ("15 min", "15min"), ("1 h", "1h"), ("all", None))
"""Choices of the dashboard's window picker (the chart's visible span): label and span (``None``: the whole buffer)."""


# --------------------------------------------------------------------------------------- pure HTML


def render_status(status: Status) -> str:
    """Return the status bar's HTML: state, SIMULATED badge, msgs/s (0 when stopped), lag, reconnects, stale pairs."""
    return status_line(status)


def render_latest(latest: pd.DataFrame, scope: tuple[str, ...] | None = None,
                  colors: dict[str, str] | None = None, stale: tuple[str, ...] = ()) -> str:
    """Return the latest-rates table: pair (with its line colour), rate, time (UTC, ms) and age, for pairs in ``scope``."""
    return latest_html(latest, scope=scope, colors=colors, stale=stale)


def render_notes(status: Status, waiting: tuple[str, ...] = ()) -> str:
    """Return the dashboard's notes: pairs with no data for a while (a typo? not listed?) and pairs still waiting."""
    lines = [f'<div class="coinrates-no-data" style="color:#b45309">{escape(note)}: is the pair right? '
             f'CoinAPI sends nothing for pairs it does not list</div>' for note in status.no_data_notes()]
    silent = set(status.silent_pairs)
    pending = [p for p in waiting if p not in silent]
    if pending:
        lines.append(f'<div class="coinrates-waiting" style="color:#64748b">waiting for the first rate of '
                     f'{escape(", ".join(pending))}</div>')
    return f'<div class="coinrates-notes" style="font-size:13px">{"".join(lines)}</div>' if lines else ""


# --------------------------------------------------------------------------------------- views


class StatusBar(QuietClose, w.HTML):  # type: ignore[misc]  # ipywidgets is untyped
    """The status bar's HTML widget (closes without late-message errors)."""


class StatusView(WidgetView):
    """Re-renders an HTML widget from the source's status ``fps`` times a second."""

    def __init__(self, widget: Any, fps: float = 2.0) -> None:
        super().__init__(widget, fps, always=True)

    def draw(self, tick: Tick) -> None:
        widget = self.widget
        if widget is not None:
            widget.value = render_status(tick.status)  # unchanged text sends nothing


class _PanelView(WidgetView):
    """Keeps a dashboard's status bar, notes, latest-rates table, chips and start/stop label current."""

    def __init__(self, board: Dashboard, fps: float = 1.0) -> None:
        super().__init__(board, fps, always=True)

    def draw(self, tick: Tick) -> None:
        board = self.widget
        if board is None:
            return
        status = tick.status
        scope = status.scope
        colors = board.colors()
        board.status_html.value = render_status(status)  # unchanged text sends nothing
        latest = tick.latest
        board.table.value = render_latest(latest, scope=scope, colors=colors,
                                          stale=scoped(status.stale_pairs, scope))
        have = {str(p) for p in latest.index}
        waiting = tuple(p for p in (scope or ()) if "/" in p and p not in have)
        notes = render_notes(status, waiting)
        board.notes.value = notes
        board.notes.layout.display = "" if notes else "none"
        board.sync_picker()
        board.picker.paint(colors)
        running = bool(getattr(board.source, "running", True))
        board.start_stop.description = "Stop" if running else "Start"
        board.start_stop.icon = "stop" if running else "play"
        board.start_stop.button_style = "" if running else "success"

    def show_error(self, message: str | None) -> None:
        board = self.widget
        if board is not None:
            board.show_error(message)


# --------------------------------------------------------------------------------------- public


def status_bar(source: Source, *, fps: float = 2.0, mode: Mode = "thread") -> StatusBar:
    """Return an HTML widget showing the source's live status, with a SIMULATED DATA badge when simulated.

    Args:
        source: The collector to watch.
        fps: Re-renders per second (the text is only sent when it changes).
        mode: ``"thread"`` or ``"loop"``; see :mod:`coinrates_nb.ui.refresh`.

    Raises:
        ConfigError: If ``fps`` or ``mode`` is invalid (checked before a widget is made).
    """
    fps, mode = check_fps(fps), check_mode(mode)
    bar = StatusBar(value=render_status(source.status))
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


class PairPicker(QuietClose, w.HBox):  # type: ignore[misc]  # ipywidgets is untyped
    """The subscribed pairs as chips (× removes one) and a text box where Enter adds one (or several, comma-separated).

    ``value`` is the list of entries; the dashboard observes it. Typed text stays in the box
    when the dashboard refuses it (a malformed pair), so it can be corrected.
    """

    value = List(Unicode())

    def __init__(self, value: list[str]) -> None:
        self.entry = w.Text(value="", placeholder="add a pair, e.g. SOL/USD, and press Enter",
                            continuous_update=False, layout=w.Layout(width="290px"))
        self.entry.add_class("coinrates-pair-entry")
        self.chips = w.HBox([], layout=w.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([self.chips, self.entry], layout=w.Layout(flex_flow="row wrap", align_items="center"))
        self.add_class("coinrates-picker")
        self._colors: dict[str, str] = {}
        self._buttons: dict[str, w.Button] = {}
        self.value = list(value)
        self._render()
        self.observe(self._on_value, names=["value"])
        self.entry.observe(self._on_entry, names=["value"])

    def _on_entry(self, change: dict[str, Any]) -> None:
        typed = [part.strip() for part in str(change["new"]).split(",") if part.strip()]
        if not typed:
            return
        before = list(self.value)
        self.value = [*before, *(t for t in typed if t not in before)]
        if list(self.value) != before:
            self.entry.value = ""  # accepted: clear the box for the next pair

    def _on_value(self, change: dict[str, Any]) -> None:
        self._render()

    def _remove(self, pair: str) -> None:
        self.value = [p for p in self.value if p != pair]

    def _render(self) -> None:
        """One chip per entry, reusing the chips that stay (their colour and clicks are kept)."""
        buttons = {}
        for pair in self.value:
            button = self._buttons.get(pair)
            if button is None:
                button = w.Button(description=f"{pair} ×", tooltip=f"unsubscribe {pair}",
                                  layout=w.Layout(width="auto", margin="1px 4px 1px 0"))
                button.add_class("coinrates-chip")
                button.on_click(functools.partial(self._on_chip, pair))
            buttons[pair] = button
        for pair, button in self._buttons.items():
            if pair not in buttons:
                quiet_close(button)
        self._buttons = buttons
        self.chips.children = list(buttons.values())
        self.paint(self._colors)

    def _on_chip(self, pair: str, _button: Any) -> None:
        self._remove(pair)

    def paint(self, colors: dict[str, str]) -> None:
        """Give each chip its pair's line colour (a chip of an asset id, or a pair not drawn yet, stays grey)."""
        self._colors = dict(colors)
        for pair, button in self._buttons.items():
            color = colors.get(pair, "#64748b")
            if button.style.button_color != color:
                button.style.button_color = color
                button.style.text_color = "white"

    def close(self) -> None:
        """Close the chips, the text box and the box."""
        for part in [*self._buttons.values(), self.entry, self.chips]:
            quiet_close(part)
        super().close()


class Dashboard(QuietClose, w.VBox):  # type: ignore[misc]  # ipywidgets is untyped
    """Status bar, controls, notes, error line, live chart and latest-rates table for one collector.

    Made by :func:`dashboard`. Attributes are the parts: ``status_html``, ``picker``
    (:class:`PairPicker`), ``start_stop``, ``window`` (the chart's visible span), ``notes`` (pairs
    with no data), ``error``, ``chart`` (a FigureWidget) and ``table``. ``close()`` closes every
    part and stops their redraws.
    """

    def __init__(self, source: Source, *, window: Duration | None, fps: float, mode: Mode,
                 chart: ChartKind = "rates") -> None:
        self.source = source
        scope = getattr(source, "pairs", None)
        self._spans, initial = _window_choices(window)
        self.status_html = w.HTML(value=render_status(source.status))
        self.picker = PairPicker(list(scope or ()))
        self.start_stop = w.Button(description="Stop", icon="stop", layout=w.Layout(width="90px"))
        self.start_stop.add_class("coinrates-start-stop")
        self.window = w.Dropdown(options=list(self._spans), value=initial, description="window",
                                 tooltip="how far back the chart shows", layout=w.Layout(width="180px"))
        self.notes = w.HTML(value="", layout=w.Layout(display="none"))
        self.error = w.HTML(value="", layout=w.Layout(display="none"))
        self.chart = CHARTS[chart](source, None, window, fps=fps, mode=mode)  # None: follows the subscription
        self.table = w.HTML(value=render_latest(source.frame.latest(), scope=scope))
        controls = w.HBox([self.start_stop, self.window], layout=w.Layout(align_items="center"))
        pairs_row = w.HBox([w.Label("pairs", layout=w.Layout(margin="0 8px 0 0")), self.picker],
                           layout=w.Layout(align_items="center", flex_flow="row wrap"))
        super().__init__([self.status_html, pairs_row, controls, self.notes, self.error, self.chart, self.table],
                         layout=w.Layout(width="100%"))
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

    def colors(self) -> dict[str, str]:
        """Pair -> line colour on the dashboard's chart (for the chips and the table)."""
        view = getattr(self.chart, "_coinrates_view", None)
        return view.colors.known() if isinstance(view, ChartView) else {}

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
        try:
            if added:
                source.subscribe(added)
            if removed:
                source.unsubscribe(removed)
        except Exception:
            # Refused (an asset the simulator does not know, a closed connection): show what is subscribed.
            scope = getattr(source, "pairs", None)
            self._set_picker(list(scope) if scope is not None else list(old))
            raise
        finally:
            self._last_scope = getattr(source, "pairs", None)
            self._follow_scope()

    def _follow_scope(self) -> None:
        """Redraw the chart and the panel at once after the subscription changed (both follow it)."""
        view = getattr(self.chart, "_coinrates_view", None)
        if isinstance(view, ChartView):
            view.invalidate()
        self.panel.invalidate()

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
        view = getattr(self.chart, "_coinrates_view", None)
        if isinstance(view, ChartView):
            view.invalidate()

    def close(self) -> None:
        """Close every part (stopping their redraws), then the box."""
        for part in (self.chart, self.status_html, self.picker, self.start_stop, self.window, self.notes,
                     self.error, self.table):
            quiet_close(part)
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
        chart: ``"rates"`` (raw rates, a row and price axis per pair) or ``"performance"`` (each
            pair rebased to 100 on one axis: which moved more).

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
