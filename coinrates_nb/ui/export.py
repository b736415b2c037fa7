"""A static, standalone HTML chart of a rate frame (the demo's ``out/demo.html``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped, unused-ignore]
import plotly.graph_objects as go  # type: ignore[import-untyped, unused-ignore]

from .._badge import simulated_title
from .series import rebase

__all__ = ["write_html"]


def write_html(frame: pd.DataFrame, path: str | Path, *, simulated: bool, title: str = "coinrates_nb") -> None:
    """Write ``frame`` (shaped like ``rates.df``) as one line per pair, each rebased to 100, to a standalone HTML file.

    Rebased, pairs of very different magnitudes (BTC/USD and EUR/USD) share one readable axis.
    """
    fig: Any = go.Figure()
    for pair, group in frame.groupby("pair", observed=True):
        values = group["rate"].to_numpy(np.float64)
        # epoch milliseconds on a date axis plot at the true wall-clock time (NOTES.md, Plotly)
        fig.add_scatter(x=pd.DatetimeIndex(group.index).as_unit("ns").asi8 / 1e6, y=rebase(values), mode="lines", name=str(pair))
    fig.update_layout(
        title=simulated_title(f"{title}: each pair rebased to 100", simulated),
        xaxis={"type": "date", "title": "time (UTC)"},
        yaxis={"title": "rebased (first = 100)"},
        template="plotly_white",
    )
    fig.write_html(path, include_plotlyjs=True, full_html=True)
