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

__all__ = ["DEFAULT_FPS", "Throttle", "check_fps", "data_version"]

DEFAULT_FPS: Final = 4.0
"""Redraws per second a chart allows itself by default: smooth enough, cheap at any message rate."""


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


def data_version(frame: RollingFrame) -> Hashable:
    """Return a value that changes whenever ``frame``'s window changes (rows appended or cleared).

    Cheap (two counters, no copy), so the refresher asks it every tick and takes a snapshot only
    when some view's last drawn version differs.
    """
    return (frame.appended, len(frame))
