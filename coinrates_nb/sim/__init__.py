"""The server side: a protocol-faithful CoinAPI Exchange Rates simulator with fault scenarios.

Importing :mod:`coinrates_nb` does not import this package; the collector loads it only when it
starts the embedded simulator (no key). Run it alone with ``python -m coinrates_nb.sim``.
"""

from __future__ import annotations

from .prices import DEFAULT_ASSETS, REFERENCE, AssetSpec, PriceModel
from .server import INVALID_KEY_MESSAGE, OVERFLOW_MESSAGE, LedgerEntry, Route, ServerScope, Simulator, routes_for

__all__ = [
    "DEFAULT_ASSETS",
    "INVALID_KEY_MESSAGE",
    "OVERFLOW_MESSAGE",
    "REFERENCE",
    "AssetSpec",
    "LedgerEntry",
    "PriceModel",
    "Route",
    "ServerScope",
    "Simulator",
    "routes_for",
]
