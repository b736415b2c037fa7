"""The FigureWidget our charts draw into: plotly's own, minus two errors it logs in JupyterLab, plus relayout events.

Measured in JupyterLab 4.6 + plotly 7.1 + ipykernel 7.4 (headless Chromium):

* **Trace deltas.** After every restyle the browser sends back the trace properties plotly.js
  filled in (``_js2py_traceDeltas``). A float64 array that plotly.js copied (a candlestick's
  ``high``/``low``) comes back as an index-keyed object ``{"0": 94971.2, "1": ...}``; plotly.py's
  ``_remove_overlapping_props`` then meets our NumPy array where it expects a dict and evaluates
  ``if not input_val:`` on it: ``ValueError: The truth value of an array ... is ambiguous``, logged
  by the kernel's comm manager about once a second per candlestick chart (plotly.py#4160, still
  open in 7.1). Our arrays are data, never defaults, so :meth:`LiveFigure._handler_js2py_traceDeltas`
  drops from each delta the keys whose value we set as an array before plotly.py merges it.
* **Closing.** ``Widget.close()`` closes the comm at once. The browser then still (a) removes the
  figure's views, and counts them down on the closed comm (``_view_count``): ``Error: no comm
  channel defined`` in the page; (b) delivers messages it sent just before it learned of the close
  (a view count, a trace delta), which the kernel logs as ``No such comm: <id>``.
  :func:`quiet_close` turns view counting off first, then closes, and leaves a tombstone in the
  kernel's comm manager that drops those late messages at DEBUG.

* **Pages that connect later.** plotly.py sends each change as a one-off message (``_py2js_addTraces``,
  ``_py2js_relayout``...) and keeps the widget's *state* (``_widget_data``, ``_widget_layout``, what a
  page fetches when it connects) as it was when the figure was last displayed (``_repr_mimebundle_``)
  or built. A page that connects after the changes starts from that stale state, and later messages
  about traces it never got go nowhere (plotly.py#4933, fixed for changes *before* display by #4956).
  That page is every Voilà page (Voilà runs the notebook, then the page connects), a reloaded
  JupyterLab tab, and any figure inside a box (``Dashboard``), whose own ``_repr_mimebundle_`` is
  never called. Measured under Voilà 0.5.13: lines added after the figure was displayed never
  appeared. :meth:`LiveFigure.sync_state` writes the current figure into that state after every
  change other than new data points (traces added, removed, moved or restyled beyond their data;
  any relayout), so a page that connects at any time starts from the figure as it is.

* **Several charts on a Voilà page.** plotly.py's FigureWidget ships its 5 MB front end as its
  anywidget ``_esm`` source, and anywidget imports that source anew for every figure, from a blob
  URL, while giving each model 2 s to initialise ("[anywidget] Failed to initialize model."; after
  that every message to the model is rejected, silently). Voilà creates all of a page's widget
  models at once when the page connects: with three charts, the later imports ran past 2 s on a
  busy 2-core machine and those charts froze on their first picture (measured: about one page in
  two). LiveFigure's ``_esm`` is a small loader instead (:data:`LOADER`): the first figure of a page
  imports plotly's front end (sent as ``_coinrates_esm``, the same bytes plotly.py sends as
  ``_esm``) and every other figure of the page reuses that one module; a model's initialisation
  only starts the import, and its views wait for it.

Also: :meth:`LiveFigure.on_relayout` tells a view about zooms, pans and autoscale from the browser
(:mod:`~coinrates_nb.ui.follow` decides what they mean).

**Cost.** Each redraw costs the kernel a few messages of its own plus what the browser sends back:
the trace deltas (a few kB per trace: every default plotly.js filled in), which ipywidgets 8 echoes
back to the browser (``echo_update``) and plotly.py merges into the figure's defaults. The
``_js2py_*`` traits are message channels, not state another view must see, so LiveFigure turns
their echo off; and once a trace's defaults are merged, later deltas for the same traces (a redraw
changes only ``x``/``y``) are acknowledged without merging again
(``benchmarks/bench_browser.py`` measures the kernel's share).
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import plotly.basewidget
import plotly.graph_objects as go
from plotly.serializers import custom_serializers
from traitlets import Dict, Unicode, default, observe

__all__ = ["LOADER", "LiveFigure", "QuietClose", "defaults_only", "plotly_front_end", "quiet_close"]

logger = logging.getLogger(__name__)

TOMBSTONE_S: Final = 120.0
"""How long a closed widget's id keeps swallowing late browser messages (they arrive within milliseconds)."""

_TOMBSTONES: collections.deque[tuple[float, Any, str]] = collections.deque()


def defaults_only(delta: Mapping[str, Any], props: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a trace delta from plotly.js that can be defaults: keys whose value we set as an array are dropped.

    Recurses into nested objects (``marker``, ``line``...), so an array set anywhere in the trace
    is protected. Everything else is kept as plotly.py expects it.
    """
    out: dict[str, Any] = {}
    for key, value in delta.items():
        held = props.get(key) if isinstance(props, Mapping) else None
        if isinstance(value, dict):
            if held is not None and not isinstance(held, dict):
                continue  # our array (or scalar), echoed back as an object: never a default
            out[key] = defaults_only(value, held)
        else:
            out[key] = value
    return out


class _Tombstone:
    """Stands in for a closed comm in the kernel's comm manager: late messages for it are dropped quietly."""

    def __init__(self, comm_id: str) -> None:
        self.comm_id = comm_id
        self._closed = True

    def handle_msg(self, msg: Any) -> None:
        logger.debug("dropped a late browser message for closed widget %s", self.comm_id)

    def handle_close(self, msg: Any) -> None:
        return None


def _bury(comm: Any) -> None:
    """Register a tombstone for ``comm``'s id (and forget tombstones older than :data:`TOMBSTONE_S`)."""
    manager = getattr(getattr(comm, "kernel", None), "comm_manager", None)
    comms = getattr(manager, "comms", None)
    comm_id = getattr(comm, "comm_id", None)
    if comms is None or not isinstance(comm_id, str):
        return
    now = time.monotonic()
    while _TOMBSTONES and now - _TOMBSTONES[0][0] > TOMBSTONE_S:
        _, old_comms, old_id = _TOMBSTONES.popleft()
        if isinstance(old_comms.get(old_id), _Tombstone):
            del old_comms[old_id]
    if comm_id not in comms:
        comms[comm_id] = _Tombstone(comm_id)
        _TOMBSTONES.append((now, comms, comm_id))


def quiet_close(widget: Any, close: Callable[[], None] | None = None) -> None:
    """Close ``widget`` without the browser errors a plain ``close()`` causes (see the module docstring).

    Args:
        widget: An ipywidget (duck-typed: ``comm``, ``_view_count``, ``close``).
        close: The close to run (a subclass passes its ``super().close``); ``widget.close`` by default.
    """
    comm = getattr(widget, "comm", None)
    if comm is None:
        return
    try:
        if getattr(widget, "_view_count", None) is not None:
            widget._view_count = None  # the browser stops counting views, so it sends nothing on removal
    except Exception:  # noqa: BLE001 - closing must go on
        logger.debug("could not turn view counting off on %r", widget, exc_info=True)
    (close or widget.close)()
    try:
        _bury(comm)
    except Exception:  # noqa: BLE001 - a missing tombstone only means a logged warning
        logger.debug("could not register a tombstone for %r", widget, exc_info=True)


class QuietClose:
    """Mixin for ipywidgets: ``close()`` is :func:`quiet_close` (put it before the widget class)."""

    def close(self) -> None:
        """Close the widget and its browser views without late-message errors."""
        quiet_close(self, super().close)  # type: ignore[misc]


LOADER: Final = """\
// coinrates_nb: import plotly's widget front end once per page, however many figures show it.
const CACHE = Symbol.for("coinrates_nb.plotly_front_end");

function frontEnd(model) {
  const cache = globalThis[CACHE] || (globalThis[CACHE] = new Map());
  const id = model.get("_coinrates_esm_id");
  let loading = cache.get(id);
  if (!loading) {
    const url = URL.createObjectURL(new Blob([model.get("_coinrates_esm")], { type: "text/javascript" }));
    loading = import(/* webpackIgnore: true */ url).finally(() => URL.revokeObjectURL(url));
    loading.catch(() => cache.delete(id));
    cache.set(id, loading);
  }
  return loading;
}

export default () => {
  let widget = null;
  let ready = null;
  return {
    initialize(context) {
      // Start the import and return: anywidget gives a model 2 s to initialise; views wait below.
      ready = frontEnd(context.model).then((module) => {
        widget = typeof module.default === "function" ? module.default() : module.default;
        return widget.initialize ? widget.initialize(context) : undefined;
      });
      ready.catch((error) => console.error("[coinrates_nb] plotly's widget front end did not load", error));
    },
    async render(context) {
      await ready;
      return widget.render(context);
    },
  };
};
"""
"""The ``_esm`` of every LiveFigure: a loader that imports plotly's front end once per page (see the module docstring)."""


@functools.cache
def plotly_front_end() -> tuple[str, str]:
    """plotly.py's widget front end (what ``FigureWidget._esm`` holds) and a short id of its content."""
    path = Path(plotly.basewidget.__file__).parent / "package_data" / "widgetbundle.js"
    source = path.read_text(encoding="utf-8") if path.is_file() else str(getattr(go.FigureWidget, "_esm", ""))
    return source, hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


DATA_KEYS: Final = frozenset({"x", "y", "open", "high", "low", "close"})
"""Trace properties a redraw sends as new data; a restyle of only these leaves the widget's state as it was."""

_CHANNEL: Final = dict(sync=True, echo_update=False, **custom_serializers)
"""Tags of a browser-to-kernel message trait: synced, never echoed back."""


class LiveFigure(QuietClose, go.FigureWidget):  # type: ignore[misc]  # plotly is untyped
    """A :class:`plotly.graph_objects.FigureWidget` that survives JupyterLab's echoes and reports relayouts."""

    _js2py_traceDeltas = Dict(allow_none=True).tag(**_CHANNEL)
    _js2py_layoutDelta = Dict(allow_none=True).tag(**_CHANNEL)
    _js2py_restyle = Dict(allow_none=True).tag(**_CHANNEL)
    _js2py_relayout = Dict(allow_none=True).tag(**_CHANNEL)
    _js2py_update = Dict(allow_none=True).tag(**_CHANNEL)
    _js2py_pointsCallback = Dict(allow_none=True).tag(**_CHANNEL)

    _esm = LOADER
    _state_stale = False  # class default: plotly.py sends messages during __init__ already
    _coinrates_esm = Unicode().tag(sync=True)
    _coinrates_esm_id = Unicode().tag(sync=True)

    @default("_coinrates_esm")
    def _default_front_end(self) -> str:
        return plotly_front_end()[0]

    @default("_coinrates_esm_id")
    def _default_front_end_id(self) -> str:
        return plotly_front_end()[1]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._relayout_callbacks: list[Callable[[dict[str, Any]], None]] = []
        self._merged_uids: tuple[str, ...] | None = None
        self._state_stale = False

    # -- the state a page that connects later starts from ----------------------------------

    def sync_state(self) -> bool:
        """Write the figure as it is into the widget's state if anything but data changed since; return whether it did.

        Cheap when nothing changed (a flag); otherwise it sends the figure once (what displaying it
        sends). The views call it after each redraw, outside ``batch_update()``.
        """
        if not self._state_stale:
            return False
        self._state_stale = False
        self._widget_layout = copy.deepcopy(self._layout_obj._props)
        self._widget_data = copy.deepcopy(self._data)
        return True

    def _send_addTraces_msg(self, new_traces_data: Any) -> None:
        self._state_stale = True
        super()._send_addTraces_msg(new_traces_data)

    def _send_deleteTraces_msg(self, delete_inds: Any) -> None:
        self._state_stale = True
        super()._send_deleteTraces_msg(delete_inds)

    def _send_moveTraces_msg(self, current_inds: Any, new_inds: Any) -> None:
        self._state_stale = True
        super()._send_moveTraces_msg(current_inds, new_inds)

    def _send_relayout_msg(self, layout_data: Any, source_view_id: Any = None) -> None:
        self._state_stale = self._state_stale or bool(layout_data)
        super()._send_relayout_msg(layout_data, source_view_id)

    def _send_restyle_msg(self, restyle_data: Any, trace_indexes: Any = None, source_view_id: Any = None) -> None:
        self._state_stale = self._state_stale or bool(set(restyle_data or ()) - DATA_KEYS)
        super()._send_restyle_msg(restyle_data, trace_indexes, source_view_id)

    def _send_update_msg(self, restyle_data: Any, relayout_data: Any, trace_indexes: Any = None,
                         source_view_id: Any = None) -> None:
        self._state_stale = self._state_stale or bool(relayout_data) or bool(set(restyle_data or ()) - DATA_KEYS)
        super()._send_update_msg(restyle_data, relayout_data, trace_indexes, source_view_id)

    def _repr_mimebundle_(self, *args: Any, **kwargs: Any) -> Any:
        self._state_stale = False  # plotly.py writes the state itself when the figure is displayed
        return super()._repr_mimebundle_(*args, **kwargs)

    def on_relayout(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(relayout_data)`` after each relayout the browser reports (zoom, pan, autoscale)."""
        self._relayout_callbacks.append(callback)

    @observe("_js2py_traceDeltas")
    def _handler_js2py_traceDeltas(self, change: dict[str, Any]) -> None:
        message = change.get("new")
        if message and isinstance(message.get("trace_deltas"), list):
            uids = tuple(trace.uid for trace in self.data)
            if uids == self._merged_uids and message.get("trace_edit_id") == self._last_trace_edit_id:
                self._edit_done()  # the same traces' defaults again: acknowledge, do not merge
                return
            props = {trace.uid: trace._props for trace in self.data}
            deltas = [defaults_only(delta, props.get(delta.get("uid"))) if isinstance(delta, dict) else delta
                      for delta in message["trace_deltas"]]
            change = {**change, "new": {**message, "trace_deltas": deltas}}
            if message.get("trace_edit_id") == self._last_trace_edit_id:
                self._merged_uids = uids
        super()._handler_js2py_traceDeltas(change)

    def _edit_done(self) -> None:
        """What plotly.py does once a trace edit is acknowledged: run the callbacks waiting for it, clear the channel."""
        self._trace_edit_in_process = False
        if not self._layout_edit_in_process:
            while self._waiting_edit_callbacks:
                self._waiting_edit_callbacks.pop()()
        self.set_trait("_js2py_traceDeltas", None)

    @observe("_js2py_relayout")
    def _handler_js2py_relayout(self, change: dict[str, Any]) -> None:
        message = change.get("new")
        super()._handler_js2py_relayout(change)
        data = message.get("relayout_data") if isinstance(message, dict) else None
        if isinstance(data, dict):
            for callback in list(self._relayout_callbacks):
                try:
                    callback(data)
                except Exception:  # noqa: BLE001 - a comm handler must not raise into the kernel
                    logger.exception("relayout callback %r failed", callback)
