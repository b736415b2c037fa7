"""Exchange-rate updates as columns: what the parser produces, the frame stores and listeners receive.

One frame from the wire is a batch of one; a burst of queued frames is one batch. Every stage
of the data path (parse, dedupe, store, record, chart) takes a :class:`RateBatch`, so each
behaviour is written once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ._types import AssetId, Pair

if TYPE_CHECKING:
    from .messages import ExchangeRate

__all__ = ["HEALED", "HISTORY", "ORIGINS", "STREAM", "RateBatch", "RateKey"]

ORIGINS: tuple[str, ...] = ("stream", "history", "healed")
"""Where rows come from, by code: the live stream, REST history backfill, a gap healed from REST."""
STREAM, HISTORY, HEALED = 0, 1, 2

RateKey = tuple[AssetId, AssetId, str]
"""``(base, quote, rate_type)``: what a batch factorises its rows by."""


@dataclass(frozen=True, slots=True, eq=False)
class RateBatch:
    """``exrate`` updates in arrival order, as columns: the batch form of :class:`~coinrates_nb.messages.ExchangeRate`.

    Strings are factorised: row ``i`` is ``ExchangeRate(*keys[code[i]], time_ns[i], rate[i])``,
    where ``keys`` holds each distinct ``(base, quote, rate_type)`` once, so consumers map a
    handful of keys instead of a string per row. Produced by :func:`~coinrates_nb.messages.parse_server_batch`,
    so every row already passed the wire checks. ``keys`` may hold keys no
    row uses (after :meth:`take`).
    """

    keys: list[RateKey]
    code: npt.NDArray[np.intp]
    time_ns: npt.NDArray[np.int64]
    rate: npt.NDArray[np.float64]
    origin: int = STREAM
    """Where every row of the batch came from: an index into :data:`ORIGINS`."""

    @classmethod
    def empty(cls) -> RateBatch:
        """A batch with no rows."""
        return cls([], np.empty(0, np.intp), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def of(cls, updates: Sequence[ExchangeRate]) -> RateBatch:
        """Columns of ``updates`` (for tests, and to batch updates parsed one by one)."""
        keys, code = _factorize([(u.base, u.quote, u.rate_type) for u in updates])
        return cls(keys, code, np.fromiter((u.time_ns for u in updates), np.int64, len(updates)),
                   np.fromiter((u.rate for u in updates), np.float64, len(updates)))

    def __len__(self) -> int:
        return len(self.code)

    def take(self, keep: npt.NDArray[Any] | slice) -> RateBatch:
        """The rows ``keep`` selects (a boolean mask, indices or a slice), in order."""
        return RateBatch(self.keys, self.code[keep], self.time_ns[keep], self.rate[keep], self.origin)

    def head(self, n: int) -> RateBatch:
        """The first ``n`` rows."""
        return RateBatch(self.keys, self.code[:n], self.time_ns[:n], self.rate[:n], self.origin)

    def pairs(self) -> tuple[list[Pair], npt.NDArray[np.intp]]:
        """Distinct ``BASE/QUOTE`` pairs of the keys (first-seen order), and each row's index in them."""
        names: dict[Pair, int] = {}
        of_key = [names.setdefault(f"{base}/{quote}", len(names)) for base, quote, _ in self.keys]
        if len(names) == len(self.keys):
            return list(names), self.code
        return list(names), np.asarray(of_key, np.intp)[self.code]

    def rate_types(self) -> tuple[list[str], npt.NDArray[np.intp]]:
        """Distinct rate types of the keys (first-seen order), and each row's index in them."""
        names: dict[str, int] = {}
        of_key = [names.setdefault(rate_type, len(names)) for _, _, rate_type in self.keys]
        if len(names) == len(self.keys):
            return list(names), self.code
        return list(names), np.asarray(of_key, np.intp)[self.code]

    @property
    def pair(self) -> list[Pair]:
        """``BASE/QUOTE`` of each row (a string per row: prefer :meth:`pairs`)."""
        names = [f"{base}/{quote}" for base, quote, _ in self.keys]
        return [names[c] for c in self.code.tolist()]

    @property
    def rate_type(self) -> list[str]:
        """``rate_type`` of each row (a string per row)."""
        return [self.keys[c][2] for c in self.code.tolist()]

    def updates(self) -> list[ExchangeRate]:
        """One :class:`ExchangeRate` per row (for per-update listeners; costs a dataclass per row)."""
        from .messages import ExchangeRate

        rows = zip(map(self.keys.__getitem__, self.code.tolist()), self.time_ns.tolist(), self.rate.tolist(), strict=True)
        return [ExchangeRate(base, quote, rate_type, t, r) for (base, quote, rate_type), t, r in rows]

    def __repr__(self) -> str:
        return f"<RateBatch {len(self):,} rows | {len(self.pairs()[0])} pairs>"


def _factorize(keys: Iterable[RateKey]) -> tuple[list[RateKey], npt.NDArray[np.intp]]:
    """Distinct keys in first-seen order, and each row's index in them: one dict lookup per row."""
    index: dict[RateKey, int] = {}
    codes = [index.setdefault(key, len(index)) for key in keys]
    return list(index), np.array(codes, np.intp)


