"""The pandas views every frame holder shares (a collector, a replay): written once, over ``self.frame``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._types import Pair

if TYPE_CHECKING:
    from .frame import RollingFrame

__all__ = ["FrameViews"]


class FrameViews:
    """Mixin: ``wide()`` and ``ohlc()`` of the rolling ``frame`` (see :mod:`coinrates_nb.analysis`)."""

    frame: RollingFrame

    def wide(self, freq: str | None = None) -> pd.DataFrame:
        """Time x pair table, one column per pair, forward-filled."""
        return self.frame.wide(freq=freq)

    def ohlc(self, freq: str = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """OHLC bars per pair resampled at ``freq`` (one grid for every pair)."""
        return self.frame.ohlc(freq, pair=pair)
