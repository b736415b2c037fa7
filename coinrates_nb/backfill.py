"""Pure rules for putting REST history into the rolling frame: bars as rows, the seam, and what a heal costs.

History comes from CoinAPI's Historical REST API as OHLC bars (``exrates-rest.md``,
"Historical"); the frame holds rows of rates. A bar becomes four rows in its period: its open
at the period start, its high and its low inside it, its close last. Resampled at the bar's own
period, those rows give back exactly the bar's open, high, low and close (``ohlc(freq)`` over
history returns the REST bars themselves); a chart draws the bar's range, never a price that
was not quoted. Empty periods (null rates) give no rows: a gap stays a gap.

The seam between history and the live stream is cut per pair at the start of the period that
holds the pair's first live update: history fills everything before it, the stream everything
from it, so nothing is there twice and, at the bars' resolution, nothing is missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np

from ._types import Pair, TimeNs
from .batch import HISTORY, RateBatch
from .rest import MAX_LIMIT, Bars, period_ns
from .rest import credits_for as rest_credits

__all__ = ["bars_to_batch", "credits_for", "heal_span", "history_period", "seam_ns"]

_RATE_TYPE: Final = "BASE_ALL_CROSSES_TO_REF"
"""The rate type history rows carry: REST bars are rates against the reference, like the stream's."""

_MAX_BARS: Final = 10_000
"""Bars per pair a window fill aims at most: the finest period that keeps within it is chosen."""

_FILL_PERIODS: Final = ("1SEC", "2SEC", "5SEC", "10SEC", "30SEC", "1MIN", "5MIN", "15MIN", "1HRS", "1DAY")


def history_period(span_ns: int) -> str:
    """The finest period whose bars over ``span_ns`` stay within 10,000 per pair (1 h -> 1SEC, 1 day -> 10SEC)."""
    for period in _FILL_PERIODS:
        if span_ns // period_ns(period) <= _MAX_BARS:
            return period
    return _FILL_PERIODS[-1]


def bars_to_batch(bars: Bars, origin: int = HISTORY, rate_type: str = _RATE_TYPE) -> RateBatch:
    """Four rows per non-empty bar, in time order: open at the period start, high, low, close inside it.

    Times sit on the wire's 100 ns grid at 0, 1/4, 1/2 and 3/4 of the period, so every row of a
    bar falls in the bar's own period whatever the bar grid's origin.
    """
    base, quote = bars.base, bars.quote
    step = max(100, period_ns(bars.period) // 4 // 100 * 100)
    full = ~(np.isnan(bars.open) | np.isnan(bars.high) | np.isnan(bars.low) | np.isnan(bars.close))
    starts = bars.start_ns[full]
    n = len(starts)
    times = (starts[:, None] + np.arange(4, dtype=np.int64)[None, :] * step).reshape(-1)
    rates = np.stack([bars.open[full], bars.high[full], bars.low[full], bars.close[full]], axis=1).reshape(-1)
    return RateBatch([(base, quote, rate_type)], np.zeros(4 * n, np.intp), times.astype(np.int64),
                     rates.astype(np.float64), origin)


def seam_ns(first_live_ns: TimeNs | None, period_ns: int, now_ns: TimeNs) -> TimeNs:
    """Where history stops for a pair: the start of the period holding its first live update (or ``now``)."""
    at = now_ns if first_live_ns is None else min(first_live_ns, now_ns)
    return at - at % period_ns


def heal_span(last_before_ns: TimeNs, first_after_ns: TimeNs, period_ns: int) -> tuple[TimeNs, TimeNs] | None:
    """The bar span that fills a gap strictly between two live updates, or ``None`` if no whole bar fits.

    Starts with the period after the one holding the last update before the gap, ends before the
    period holding the first update after it: the live rows keep their periods, history fills
    the whole periods between.
    """
    start = last_before_ns - last_before_ns % period_ns + period_ns
    end = first_after_ns - first_after_ns % period_ns
    return (start, end) if end > start else None


def credits_for(spans: Mapping[Pair, tuple[TimeNs, TimeNs]], period: str, limit: int = MAX_LIMIT) -> int:
    """Credits a set of history requests costs: every 100 bars of a request count as one, rounded up.

    (``exrates-rest.md``, "Rate limits and cost".) Each pair's span is fetched in pages of
    ``limit`` bars; an upper bound, since empty periods may not be returned.
    """
    step = period_ns(period)
    total = 0
    for start, end in spans.values():
        bars = max(0, math.ceil((end - start) / step))
        while bars > 0:
            page = min(bars, limit)
            total += rest_credits(page)
            bars -= page
    return total
