"""The optional notebook UI: live Plotly charts and ipywidgets controls that redraw themselves.

The only package that imports plotly or ipywidgets; :mod:`coinrates_nb` loads it on first use.
Its modules, from the pure core out:

* :mod:`~coinrates_nb.ui.throttle`: is a redraw due? (pure, fed ``now``)
* :mod:`~coinrates_nb.ui.series`: plot math on NumPy arrays: windowing, rebasing, candles,
  min/max decimation, times for plotly.js (pure)
* :mod:`~coinrates_nb.ui.refresh`: the refresher thread that redraws every live view of a collector
* :mod:`~coinrates_nb.ui.plots`: the Plotly charts; :mod:`~coinrates_nb.ui.widgets`: status bar
  and dashboard
"""

from __future__ import annotations

from .plots import live_chart, ohlc_chart, performance_chart
from .widgets import dashboard, status_bar

__all__ = ["dashboard", "live_chart", "ohlc_chart", "performance_chart", "status_bar"]
