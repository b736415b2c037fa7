"""The optional notebook UI: throttled redraws, Plotly charts and the ipywidgets dashboard.

The only package that imports plotly or ipywidgets; :mod:`coinrates_nb` loads it on first use.
"""

from __future__ import annotations

from .plots import live_chart, ohlc_chart, performance_chart
from .widgets import dashboard, status_bar

__all__ = ["dashboard", "live_chart", "ohlc_chart", "performance_chart", "status_bar"]
