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
from ._types import AssetId, Pair
from .collector import Collector, stream
from .config import COINAPI_URL, SecretKey, Settings
from .exceptions import (
    AuthenticationError,
    CoinratesError,
    CollectorError,
    ConfigError,
    MessageError,
    RecordingError,
    ServerError,
    StaleStreamError,
    TransportError,
)
from .frame import RollingFrame
from .messages import ErrorMessage, ExchangeRate, Heartbeat, Hello, Reconnect, Subscribe, Unsubscribe
from .status import Status

if TYPE_CHECKING:
    from .sim import Simulator as Simulator

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY: dict[str, str] = {
    "Simulator": "sim",
    "PriceModel": "sim",
    "live_chart": "ui",
    "ohlc_chart": "ui",
    "performance_chart": "ui",
    "dashboard": "ui",
    "status_bar": "ui",
    "record": "store",
    "replay": "store",
    "load": "store",
    "Recorder": "store",
    "Replay": "store",
}

__all__ = [
    "COINAPI_URL",
    "AssetId",
    "AuthenticationError",
    "CoinratesError",
    "Collector",
    "CollectorError",
    "ConfigError",
    "ErrorMessage",
    "ExchangeRate",
    "Heartbeat",
    "Hello",
    "MessageError",
    "Pair",
    "Reconnect",
    "RecordingError",
    "RollingFrame",
    "SecretKey",
    "ServerError",
    "Settings",
    "StaleStreamError",
    "Status",
    "Subscribe",
    "TransportError",
    "Unsubscribe",
    "__version__",
    "stream",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Load UI, simulator and recording helpers on first use, keeping ``import coinrates_nb`` light."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'coinrates_nb' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
