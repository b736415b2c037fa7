"""The optional notebook UI: live Plotly charts and ipywidgets controls that redraw themselves.

The only package that imports plotly or ipywidgets; :mod:`coinrates_nb` loads it on first use.
Its modules, from the pure core out:

* :mod:`~coinrates_nb.ui.throttle`: is a redraw due, and may this source's charts spend one? (pure, fed ``now``)
* :mod:`~coinrates_nb.ui.series`: plot math on NumPy arrays: windowing, rebasing, candles,
  min/max decimation, gaps, times for plotly.js (pure)
* :mod:`~coinrates_nb.ui.follow`: does a chart follow the live edge or the user's zoom? (pure)
* :mod:`~coinrates_nb.ui.refresh`: the refresher thread that redraws every live view of a collector
* :mod:`~coinrates_nb.ui._figure`: the FigureWidget the charts draw into (plotly's, minus the errors
  it logs in JupyterLab)
* :mod:`~coinrates_nb.ui.plots`: the Plotly charts; :mod:`~coinrates_nb.ui.widgets`: status bar
  and dashboard

Tables and statuses are formatted by :mod:`coinrates_nb._display`, which the core's reprs share.
"""

from __future__ import annotations

from .plots import live_chart, ohlc_chart, performance_chart
from .widgets import dashboard, status_bar

__all__ = ["dashboard", "live_chart", "ohlc_chart", "performance_chart", "status_bar"]
