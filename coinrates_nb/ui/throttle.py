"""When may a view redraw? The pure rule the refresher applies, separate from any clock or thread.

A redraw is *due* when the view's :class:`Throttle` allows one (at most ``fps`` a second) and
the data changed since the view last drew, which :func:`data_version` tells. Both take their
inputs as arguments (``now``, the frame) and read no clock, so they are unit-tested by feeding
times (STYLE §14).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any, Final

from ..exceptions import ConfigError
from ..frame import RollingFrame

__all__ = ["CHART_BUDGET", "DEFAULT_FPS", "Budget", "Throttle", "check_fps", "data_version"]

DEFAULT_FPS: Final = 1.0
"""Redraws per second a line chart allows itself by default, whatever the message rate.

Measured in JupyterLab 4.6, headless Chromium (``benchmarks/bench_browser.py``): one redraw of a
notebook-wide Plotly chart costs the browser's renderer ~100-200 ms of CPU however few points it
has (60 or 3,000, SVG or WebGL, 170 or 680 px high alike: plotly.js redraws its axes and
measures their labels every time), and the kernel ~3 ms of its own plus the messages. At 4
redraws/s a dashboard with three charts kept the renderer at ~60 % of a core. Charts also wait at
least one pixel's worth of time between redraws (a 15-minute window moves by a pixel every
~0.9 s), share :data:`CHART_BUDGET`, and ``fps=`` raises the rate when wanted."""


def check_fps(fps: Any, name: str = "fps") -> float:
    """Return ``fps`` as a float if it is a positive finite number of redraws per second.

    Raises:
        ConfigError: If it is not (a bool, a string, zero, negative, NaN or infinite).
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"{name} must be a positive number of redraws per second, like 4 or 0.5, not {fps!r}")
    return float(fps)


class Throttle:
    """Decide when a view may redraw: at most ``fps`` times a second, and only when something changed.

    Pure: the caller passes ``now`` (any monotonic clock, in seconds) and calls :meth:`mark`
    after redrawing. Changes that arrive between two due instants coalesce into one redraw,
    so the redraw rate never exceeds ``fps`` whatever the message rate.

    Args:
        fps: Redraws per second at most; must be positive.

    Raises:
        ConfigError: If ``fps`` is not a positive finite number.
    """

    __slots__ = ("fps", "interval", "last")

    def __init__(self, fps: float) -> None:
        self.fps = check_fps(fps)
        self.interval = 1.0 / self.fps
        self.last: float | None = None

    def due(self, now: float, changed: bool = True) -> bool:
        """Return True if a redraw at ``now`` is allowed and useful.

        Args:
            now: The current time in seconds.
            changed: Whether there is anything new to draw since the last redraw.
        """
        if not changed:
            return False
        return self.last is None or now - self.last >= self.interval

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until a redraw would be allowed (0 if it already is)."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.interval - now)

    def mark(self, now: float) -> None:
        """Record that a redraw happened at ``now``."""
        self.last = now

    def reset(self) -> None:
        """Forget the last redraw, so the next change is drawn at once."""
        self.last = None

    def __repr__(self) -> str:
        return f"<Throttle {self.fps:g} fps | last {self.last!r}>"


CHART_BUDGET: Final = 1.0
"""Chart redraws per second one source's charts share, however many there are.

Each chart keeps its own ``fps``; together they never redraw more often than this (or than the
fastest chart's ``fps``, if a chart asked for more), so the browser's cost of a notebook stays
bounded as charts are added: a plotly.js redraw costs the renderer ~100-200 ms of CPU whatever
the chart's size or number of points (``benchmarks/bench_browser.py``). One chart redraws at its
``fps``; three at 1 fps take turns, one redraw a second between them, the one waiting longest
first. Ask a chart for ``fps=2`` and the budget rises to 2."""


class Budget:
    """A token bucket of redraws: at most ``rate`` a second on average, ``burst`` at once.

    Pure like :class:`Throttle`: the caller passes ``now``.

    Args:
        rate: Redraws per second; must be positive.
        burst: How many redraws may go at once after a quiet spell (at least 1).
    """

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float = CHART_BUDGET, burst: float = 1.0) -> None:
        self.rate = check_fps(rate, "rate")
        self.burst = max(1.0, float(burst))
        self.tokens = self.burst
        self.last: float | None = None

    def _fill(self, now: float) -> None:
        if self.last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def take(self, now: float) -> bool:
        """Spend one redraw at ``now`` if the budget has one; return whether it did."""
        self._fill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until one redraw is available (0 if it is)."""
        self._fill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def __repr__(self) -> str:
        return f"<Budget {self.rate:g}/s | {self.tokens:.2f} left>"


def data_version(frame: RollingFrame) -> Hashable:
    """Return a value that changes whenever ``frame``'s window changes (rows appended or cleared).

    Cheap (two counters, no copy), so the refresher asks it every tick and takes a snapshot only
    when some view's last drawn version differs.
    """
    return (frame.appended, len(frame))
