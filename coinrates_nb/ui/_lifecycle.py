"""How a live widget's redraws start and stop: the view tied to one ipywidget, and closing on cell re-run.

Shared by the charts (:mod:`~coinrates_nb.ui.plots`) and the controls
(:mod:`~coinrates_nb.ui.widgets`). A :class:`WidgetView` refers to its widget weakly while the
widget keeps the view alive, so closing the widget (or losing it) ends its redraws; a widget no
browser view shows is skipped; :func:`close_on_rerun` closes what an earlier run of the same
JupyterLab cell made. Duck-typed on the widget: nothing here imports plotly or ipywidgets.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from .. import _cells
from .refresh import Mode, Refresher, Source, Tick, View

__all__ = ["WidgetView", "close_on_rerun"]

logger = logging.getLogger(__name__)


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

        A closed plain FigureWidget is never collected with anywidget 0.11 (its class-level
        ``_esm`` file watcher keeps a lambda bound to every instance; a LiveFigure, whose ``_esm``
        is a string, is), so the view must not rely on the widget dying to die itself.
        """
        widget.unobserve(self._on_view_count, names=["_view_count"])
        widget.unobserve(self._on_comm, names=["comm"])
        callbacks = widget.__dict__.get("_relayout_callbacks")
        if isinstance(callbacks, list):  # LiveFigure.on_relayout holds bound methods of this view
            callbacks[:] = [fn for fn in callbacks if getattr(fn, "__self__", None) is not self]
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


def close_on_rerun(widget: Any) -> None:
    """Remember that the running cell made ``widget``; close the widgets its earlier runs made.

    When a cell runs again its old output (and the live widgets in it) is gone from the page,
    so their redraws would be wasted work: closing them stops their refresh
    (:func:`coinrates_nb._cells.close_on_rerun`, which the collector uses too).
    """
    _cells.close_on_rerun(widget)
