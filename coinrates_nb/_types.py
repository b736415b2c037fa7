"""Named aliases shared across the package, so signatures read in domain terms."""

from __future__ import annotations

from typing import Final, Literal

AssetId = str
"""An asset id as CoinAPI spells it, e.g. ``"BTC"`` or ``"USD"``."""

Pair = str
"""A pair written ``BASE/QUOTE``, e.g. ``"BTC/USD"``."""

FilterItem = str
"""One entry of ``subscribe_filter_asset_id``: an asset id or a pair."""

RateType = Literal["BASE_QUOTE_ISOLATED", "BASE_ALL_CROSSES_TO_REF", "BASE_AND_QUOTE_TO_REF"]
"""The documented ``rate_type`` values (protocol notes, section 4.1)."""

RATE_TYPES: tuple[str, ...] = (
    "BASE_QUOTE_ISOLATED",
    "BASE_ALL_CROSSES_TO_REF",
    "BASE_AND_QUOTE_TO_REF",
)

TimeNs = int
"""A UTC instant as integer nanoseconds since the Unix epoch."""

SECONDS_PER_YEAR: Final = 365.25 * 86_400
"""One year for annualising (volatility, the simulator's drift): a Julian year, since crypto never closes."""

State = Literal["idle", "connecting", "connected", "reconnecting", "stale", "stopped", "error"]
"""Lifecycle states a collector reports in its status."""


def split_pair(pair: Pair) -> tuple[AssetId, AssetId]:
    """Split ``"BTC/USD"`` into ``("BTC", "USD")``; raise ``ValueError`` if it is not a pair."""
    base, sep, quote = pair.partition("/")
    if not sep or not base or not quote or "/" in quote:
        raise ValueError(f"not a BASE/QUOTE pair: {pair!r}")
    return base, quote
