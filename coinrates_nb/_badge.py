"""The SIMULATED DATA badge, defined once for every place that labels simulated data.

Reprs (``Collector._repr_html_``, ``Replay._repr_html_``), the status bar and the charts all
show the same words in the same colour, so a user never mistakes simulated rates for CoinAPI's.
Pure: it builds an HTML string and a Plotly annotation as a plain ``dict``, and imports neither
plotly nor ipywidgets, so the core can use it without loading the optional UI.
"""

from __future__ import annotations

from html import escape
from typing import Any, Final

__all__ = ["SIMULATED_COLOR", "SIMULATED_TEXT", "pill_html", "simulated_annotations", "simulated_html",
           "simulated_title"]

SIMULATED_TEXT: Final = "SIMULATED DATA"
"""The badge's words."""

SIMULATED_COLOR: Final = "#b45309"
"""The badge's background (amber 700: readable with white text, distinct from every state colour)."""

SIMULATED_CLASS: Final = "coinrates-simulated"
"""CSS class of the HTML badge and name of the chart annotation (the browser test finds it by this)."""

_TITLE_SUFFIX: Final = " — SIMULATED"

_PILL_STYLE: Final = "padding:1px 7px;border-radius:4px;font-weight:bold;color:white;margin-right:6px"


def pill_html(text: str, background: str, css_class: str) -> str:
    """Return a coloured label (``<span>``) in the one pill style the status bar and reprs share."""
    return f'<span class="{escape(css_class)}" style="background:{escape(background)};{_PILL_STYLE}">{escape(text)}</span>'


def simulated_html(simulated: bool) -> str:
    """Return the HTML badge when ``simulated`` is true, else ``""`` (so callers need no branch)."""
    return pill_html(SIMULATED_TEXT, SIMULATED_COLOR, SIMULATED_CLASS) if simulated else ""


def simulated_annotations(simulated: bool, yshift: int = 0) -> list[dict[str, Any]]:
    """Return the badge as Plotly layout annotations: one, or none when live.

    It sits at the right end of the plot area's top edge, raised ``yshift`` pixels: charts raise
    it into the title row, so a long legend (which sits right above the plot area) never runs
    under it.
    """
    if not simulated:
        return []
    return [dict(name=SIMULATED_CLASS, text=f"<b>{SIMULATED_TEXT}</b>", xref="paper", yref="paper", x=1.0, y=1.0,
                 xanchor="right", yanchor="bottom", yshift=yshift, showarrow=False, bgcolor=SIMULATED_COLOR,
                 font=dict(color="white", size=12), borderpad=3)]


def simulated_title(title: str, simulated: bool) -> str:
    """Return ``title`` with " — SIMULATED" appended when ``simulated`` is true."""
    return title + _TITLE_SUFFIX if simulated else title
