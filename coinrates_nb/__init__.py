"""coinrates_nb: live CoinAPI exchange rates in Jupyter, as a rolling pandas DataFrame.

    import coinrates_nb as cr
    rates = cr.stream(["BTC/USD", "ETH/USD", "BTC/EUR"], window="15min")
    rates.df; rates.latest(); rates.wide(); rates.ohlc("1min")

Importing the package opens no socket, starts no thread and does not import plotly or
ipywidgets: the UI helpers load on first use (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import analysis as analysis  # registers the DataFrame.rates accessor (pandas/NumPy only)
from ._secrets import SecretKey as SecretKey
from ._types import AssetId as AssetId
from ._types import Pair as Pair
from .batch import RateBatch as RateBatch
from .collector import Collector as Collector
from .collector import each as each
from .collector import stream as stream
from .config import COINAPI_URL as COINAPI_URL
from .config import Settings as Settings
from .exceptions import AuthenticationError as AuthenticationError
from .exceptions import CoinratesError as CoinratesError
from .exceptions import CollectorError as CollectorError
from .exceptions import ConfigError as ConfigError
from .exceptions import MessageError as MessageError
from .exceptions import QuotaExceededError as QuotaExceededError
from .exceptions import RecordingError as RecordingError
from .exceptions import ServerError as ServerError
from .exceptions import SimulatorError as SimulatorError
from .exceptions import StaleStreamError as StaleStreamError
from .exceptions import StoreError as StoreError
from .exceptions import TransportError as TransportError
from .exceptions import UnknownAssetError as UnknownAssetError
from .exceptions import WaitTimeoutError as WaitTimeoutError
from .frame import RollingFrame as RollingFrame
from .status import Status as Status

if TYPE_CHECKING:
    from .historical import HistoryEstimate as HistoryEstimate
    from .historical import history as history
    from .hub.hub import Hub as Hub
    from .hub.hub import HubStatus as HubStatus
    from .hub.hub import hub as hub
    from .rest import Bars as Bars
    from .rest import RestClient as RestClient
    from .rest import RestUsage as RestUsage
    from .rest import SyncRestClient as SyncRestClient
    from .sim import PriceModel as PriceModel
    from .sim import Simulator as Simulator
    from .store import Recorder as Recorder
    from .store import Replay as Replay
    from .store import load as load
    from .store import record as record
    from .store import replay as replay
    from .ui import dashboard as dashboard
    from .ui import live_chart as live_chart
    from .ui import ohlc_chart as ohlc_chart
    from .ui import performance_chart as performance_chart
    from .ui import status_bar as status_bar

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

GROUPS: dict[str, tuple[str, ...]] = {
    "streaming": ("stream", "Collector", "Status", "Settings", "SecretKey", "COINAPI_URL", "RollingFrame",
                  "RateBatch", "each", "Pair", "AssetId"),
    "analysis": ("analysis",),  # and the df.rates accessor, registered on import
    "history": ("history", "HistoryEstimate", "RestClient", "SyncRestClient", "Bars", "RestUsage"),
    "ui": ("live_chart", "performance_chart", "ohlc_chart", "dashboard", "status_bar"),
    "recording": ("record", "load", "replay", "Recorder", "Replay"),
    "simulator": ("Simulator", "PriceModel"),
    "hub": ("hub", "Hub", "HubStatus"),
    "errors": ("CoinratesError", "ConfigError", "UnknownAssetError", "MessageError", "TransportError",
               "StaleStreamError", "ServerError", "AuthenticationError", "QuotaExceededError", "StoreError",
               "CollectorError", "WaitTimeoutError", "RecordingError", "SimulatorError"),
}
"""The public API by use. Wire messages (``Hello``, ``ExchangeRate``, ...) live in :mod:`coinrates_nb.messages`."""

_LAZY: dict[str, str] = {
    **dict.fromkeys(GROUPS["ui"], "ui"),
    **dict.fromkeys(GROUPS["recording"], "store"),
    **dict.fromkeys(GROUPS["simulator"], "sim"),
    **dict.fromkeys(GROUPS["hub"], "hub"),
    "history": "historical",
    "HistoryEstimate": "historical",
    **dict.fromkeys(("RestClient", "SyncRestClient", "Bars", "RestUsage"), "rest"),
}
"""Names loaded on first use (PEP 562), so ``import coinrates_nb`` imports no plotly, pyarrow or server code.

``hub`` is both a function and the sub-package :mod:`coinrates_nb.hub`, and importing the
sub-package binds it as this package's ``hub`` attribute (the import system does that). So
``cr.hub`` is always the sub-package, which is callable as :func:`coinrates_nb.hub.hub`: the same
object whichever of ``cr.hub(...)`` and ``import coinrates_nb.hub`` comes first.
"""

__all__ = [name for group in GROUPS.values() for name in group] + ["__version__"]


def __getattr__(name: str) -> Any:
    """Load UI, simulator and recording helpers on first use, keeping ``import coinrates_nb`` light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coinrates_nb' has no attribute {name!r}")
    loaded = import_module(f".{module}", __name__)
    value = loaded if module == name else getattr(loaded, name)  # cr.hub: the callable sub-package itself
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
