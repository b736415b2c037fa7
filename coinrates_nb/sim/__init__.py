"""The server side: a protocol-faithful CoinAPI Exchange Rates simulator with fault scenarios.

Importing :mod:`coinrates_nb` does not import this package; the collector loads it only when it
starts the embedded simulator (no key). Run it alone with ``python -m coinrates_nb.sim``.

Modules: :mod:`.server` (the :class:`Simulator`: serving, shutdown, the ledger), :mod:`.scope`
(what a connection asked for and the pairs that streams), :mod:`.scenarios` (fault scenarios as
methods), :mod:`.ticker` (model time to queued updates), :mod:`.prices` (the seeded price model),
:mod:`.cli` (``python -m coinrates_nb.sim``); private: ``_auth`` (keys), ``_connection`` (one
connection's queue and tasks).
"""

from __future__ import annotations

from ._auth import INVALID_KEY_MESSAGE, http_keys
from ._connection import OVERFLOW_MESSAGE, LedgerEntry
from .prices import DEFAULT_ASSETS, REFERENCE, AssetSpec, PriceModel
from .scope import Route, ServerScope, routes_for
from .server import SIMULATOR_HEADER, Simulator

__all__ = [
    "DEFAULT_ASSETS",
    "INVALID_KEY_MESSAGE",
    "OVERFLOW_MESSAGE",
    "REFERENCE",
    "SIMULATOR_HEADER",
    "AssetSpec",
    "LedgerEntry",
    "PriceModel",
    "Route",
    "ServerScope",
    "Simulator",
    "http_keys",
    "routes_for",
]
