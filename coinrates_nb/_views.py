"""The pandas views every frame holder shares (a collector, a replay): written once, over ``self.frame``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from ._inputs import pair_list, utc_ns
from ._types import Pair

if TYPE_CHECKING:
    from .frame import RollingFrame

__all__ = ["FrameViews"]


class FrameViews:
    """Mixin: ``df``, ``snapshot()``, ``wide()`` and ``ohlc()`` of the rolling ``frame`` (see :mod:`coinrates_nb.analysis`)."""

    frame: RollingFrame

    @property
    def df(self) -> pd.DataFrame:
        """Snapshot of the rolling window: UTC ``DatetimeIndex`` named ``time``, one row per update, in time order.

        Rows from REST (``origin`` ``history``/``healed``) arrive after newer live rows; the
        snapshot is sorted (stably) whenever they made it out of order.
        """
        return self.snapshot()

    def snapshot(self, pairs: str | Iterable[str] | None = None, since: Any = None) -> pd.DataFrame:
        """``df`` of some pairs only (``BASE/QUOTE``) and/or since a time (naive means UTC), in time order.

        Raises:
            ConfigError: If ``pairs`` or ``since`` is malformed.
        """
        df = self.frame.snapshot(pairs=None if pairs is None else pair_list(pairs, "pairs"),
                                 since_ns=None if since is None else utc_ns(since, "since"))
        return df if df.index.is_monotonic_increasing else df.sort_index(kind="stable")

    def wide(self, freq: str | None = None) -> pd.DataFrame:
        """Time x pair table, one column per pair, forward-filled."""
        return self.frame.wide(freq=freq)

    def ohlc(self, freq: str = "1min", pair: Pair | None = None) -> pd.DataFrame:
        """OHLC bars per pair resampled at ``freq`` (one grid for every pair)."""
        return self.frame.ohlc(freq, pair=pair)
