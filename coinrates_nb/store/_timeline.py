"""A recording as arrays in arrival order, the form the replay thread walks through.

Private to :mod:`coinrates_nb.store.replay`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd  # type: ignore[import-untyped, unused-ignore]

from .._types import FilterItem, Pair, TimeNs, split_pair
from ..batch import ORIGINS, STREAM, RateKey
from ..exceptions import ConfigError
from .dataset import _matches

_DEFAULT_RATE_TYPE: Final = "UNSPECIFIED"


def select(frame: pd.DataFrame, since_ns: TimeNs | None, until_ns: TimeNs | None,
           items: tuple[FilterItem, ...] | None) -> pd.DataFrame:
    """The rows of a DataFrame given to ``replay`` that ``since <= time < until`` and the pair filter keep."""
    if since_ns is not None or until_ns is not None:
        stamps = pd.DatetimeIndex(frame["time"] if "time" in frame.columns else frame.index)
        times = (stamps if stamps.tz is not None else stamps.tz_localize("UTC")).as_unit("ns").asi8
        keep = np.ones(len(frame), dtype=bool)
        if since_ns is not None:
            keep &= times >= since_ns
        if until_ns is not None:
            keep &= times < until_ns
        frame = frame[keep]
    if items is not None:
        names = frame["pair"].astype(str)
        frame = frame[names.isin(_matches(items, set(names)))]
    return frame


@dataclass(frozen=True)
class Timeline:
    """A recording as arrays in arrival order: what the replay thread walks through.

    ``code`` indexes ``pair_names`` (the scope works per pair); ``key`` indexes ``keys``, the
    ``(base, quote, rate_type)`` of each row, so a slice becomes a :class:`RateBatch` without
    touching a string. ``origin`` indexes :data:`~coinrates_nb.batch.ORIGINS` (stream, history,
    healed), so a replayed frame says where each row came from, as the recorded one did.
    """

    time: npt.NDArray[np.int64]
    received: npt.NDArray[np.int64]
    code: npt.NDArray[np.intp]
    key: npt.NDArray[np.intp]
    rate: npt.NDArray[np.float64]
    origin: npt.NDArray[np.int8]
    keys: list[RateKey]
    pair_names: tuple[Pair, ...]
    sources: tuple[str, ...]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Timeline:
        """Build from a DataFrame with a ``time`` index (or column), ``pair`` and ``rate``.

        ``received_at`` paces the replay; without it the wire time does. ``rate_type`` defaults
        to ``"UNSPECIFIED"``, ``origin`` to ``"stream"``.

        Raises:
            ConfigError: If a column is missing, a pair is not ``BASE/QUOTE`` or an origin is unknown.
        """
        if "time" in frame.columns:
            frame = frame.set_index("time")
        missing = {"pair", "rate"} - set(frame.columns)
        if missing or not isinstance(frame.index, pd.DatetimeIndex):
            raise ConfigError(f"a replay needs a DatetimeIndex 'time' and columns pair, rate; missing {sorted(missing)}")
        index = frame.index if frame.index.tz is not None else frame.index.tz_localize("UTC")
        times = index.as_unit("ns").asi8.astype(np.int64)
        if "received_at" in frame.columns:
            received = pd.DatetimeIndex(frame["received_at"]).as_unit("ns").asi8.astype(np.int64)
        else:
            received = times
        order = np.lexsort((times, received))  # arrival order, stable on wire time
        codes, names = pd.factorize(np.asarray(frame["pair"], dtype=object)[order])
        types = (np.asarray(frame["rate_type"], dtype=object)[order] if "rate_type" in frame.columns
                 else np.full(len(frame), _DEFAULT_RATE_TYPE, dtype=object))
        type_codes, type_names = pd.factorize(types)
        pair_names = tuple(str(n) for n in names)
        try:
            split = [split_pair(p) for p in pair_names]
        except ValueError as exc:
            raise ConfigError(f"a replay needs BASE/QUOTE pairs: {exc}") from exc
        # One key per (pair, rate type) that occurs: factorised from integer combinations, no strings per row.
        n_types = max(len(type_names), 1)
        key, uniques = pd.factorize(codes.astype(np.int64) * n_types + type_codes)
        keys = [(*split[int(c) // n_types], str(type_names[int(c) % n_types])) for c in uniques]
        sources = (tuple(sorted(map(str, pd.unique(np.asarray(frame["source"], dtype=object)))))
                   if "source" in frame.columns else ())
        return cls(
            origin=_origins(frame, order),
            time=times[order],
            received=received[order],
            code=codes.astype(np.intp),
            key=key.astype(np.intp),
            rate=np.asarray(frame["rate"], dtype=np.float64)[order],
            keys=keys,
            pair_names=pair_names,
            sources=sources,
        )

    def __len__(self) -> int:
        return len(self.time)


def _origins(frame: pd.DataFrame, order: npt.NDArray[np.intp]) -> npt.NDArray[np.int8]:
    """Each row's index into ``ORIGINS``, in arrival order (``stream`` where the column is absent or null)."""
    if "origin" not in frame.columns:
        return np.full(len(order), STREAM, np.int8)
    codes, names = pd.factorize(np.asarray(frame["origin"], dtype=object)[order], use_na_sentinel=True)
    unknown = sorted(str(n) for n in names if n not in ORIGINS)
    if unknown:
        raise ConfigError(f"a replay needs origins among {', '.join(ORIGINS)}; got {', '.join(unknown)}")
    lookup = np.array([ORIGINS.index(str(n)) for n in names] + [STREAM], np.int8)  # -1 (null) -> the last: stream
    origins: npt.NDArray[np.int8] = lookup[codes]
    return origins
