"""Does a chart follow the live edge, or show the range the user zoomed or panned to? The pure rule.

A live chart *follows*: its x axis autoranges over the newest ``window`` of data, so it moves as
rates arrive. Once the user zooms or pans, the chart is *paused* on their range: redraws keep
that range (they send the rows inside it, at the detail it allows) and stop entirely while the
range lies wholly in the past, since nothing in it can change. Double-click (plotly's reset) or
the Autoscale button sends ``xaxis.autorange`` and the chart follows again. A cue on the chart
says which it is (``● live`` / ``❚❚ paused — double-click to follow live``).

Fed the relayout data plotly.js reports (``{"xaxis.range[0]": "2026-12-01 22:14:05.12", ...}``),
no clock, no plotly: unit-tested by feeding dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pandas as pd

__all__ = ["LIVE_TEXT", "PAUSED_TEXT", "Follow", "parse_axis_time"]

LIVE_TEXT: Final = "● live"
PAUSED_TEXT: Final = "❚❚ paused: double-click to follow live"

_X_KEY = re.compile(r"^xaxis\d*\.(range\[(?P<end>[01])\]|range|autorange)$")


def parse_axis_time(value: Any) -> int | None:
    """A date-axis value from plotly.js as UTC epoch ns: a date string (naive: UTC) or epoch milliseconds.

    ``None`` if it cannot be read.
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            return int(float(value) * 1e6)
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError, OverflowError):
        return None
    if stamp is pd.NaT:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.as_unit("ns").value)


@dataclass
class Follow:
    """The follow state of one chart: ``range_ns`` is ``None`` while following the live edge.

    Attributes:
        range_ns: The x range the user chose, as UTC epoch ns (start, end), or ``None``.
    """

    range_ns: tuple[int, int] | None = None

    @property
    def live(self) -> bool:
        """True while the chart follows the live edge."""
        return self.range_ns is None

    @property
    def cue(self) -> str:
        """The words shown on the chart for this state."""
        return LIVE_TEXT if self.live else PAUSED_TEXT

    def on_relayout(self, data: Mapping[str, Any]) -> bool:
        """Apply one relayout event from the browser; return True if the state changed.

        ``xaxis*.autorange`` true resumes following; an explicit ``xaxis*.range`` (a zoom or a
        pan, on any of the shared x axes) pauses on it. Keys for other axes (a y-only zoom) and
        unreadable values change nothing.
        """
        ends: dict[int, int] = {}
        resume = False
        for key, value in data.items():
            match = _X_KEY.match(str(key))
            if match is None:
                continue
            if key.endswith("autorange"):
                resume = resume or bool(value)
            elif match.group("end") is not None:
                ns = parse_axis_time(value)
                if ns is not None:
                    ends[int(match.group("end"))] = ns
            elif isinstance(value, (list, tuple)) and len(value) == 2:
                lo, hi = parse_axis_time(value[0]), parse_axis_time(value[1])
                if lo is not None and hi is not None:
                    ends = {0: lo, 1: hi}
        before = self.range_ns
        if len(ends) == 2 and ends[0] != ends[1]:
            lo, hi = sorted((ends[0], ends[1]))
            self.range_ns = (lo, hi)
        elif resume:
            self.range_ns = None
        return self.range_ns != before

    def resume(self) -> bool:
        """Follow the live edge again (e.g. the window was changed); return True if it was paused."""
        was = self.range_ns is not None
        self.range_ns = None
        return was

    def frozen(self, newest_ns: int | None) -> bool:
        """True if nothing visible can change: paused on a range that ends before the newest row drawn."""
        return self.range_ns is not None and newest_ns is not None and self.range_ns[1] < newest_ns
