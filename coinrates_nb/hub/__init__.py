"""The hub: one CoinAPI connection for a team, shared over NATS JetStream (``pip install 'coinrates-nb[hub]'``).

    hub = cr.hub(["BTC/USD", "ETH/USD"])              # one upstream connection; embedded nats-server
    rates = cr.stream(["BTC/USD"], url=hub.nats_url)  # any number of notebooks, each a Collector

:mod:`.hub` publishes, :mod:`.consumer` is the collector's session for ``nats://`` URLs,
:mod:`.wire` is the layout both share, :mod:`._server` runs the embedded ``nats-server``.
Importing this package imports no NATS client: ``nats-py`` loads when a hub or consumer connects.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any

from ._server import NatsServer, find_binary
from ._voila import NATS_URL_ENV, serve_dashboard
from .consumer import NatsSession, links
from .hub import Hub, HubStatus, hub
from .wire import Layout

__all__ = ["NATS_URL_ENV", "Hub", "HubStatus", "Layout", "NatsServer", "NatsSession", "find_binary", "hub", "links",
           "serve_dashboard"]


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`hub`: ``cr.hub(...)`` and ``coinrates_nb.hub(...)`` are one call.

    Importing this package (the collector does, for a ``nats://`` URL) binds it as
    ``coinrates_nb.hub``, where the root's lazy export of :func:`hub` would be; so the root
    exports the package itself (``coinrates_nb.__getattr__``), callable, with :func:`hub`'s
    signature (``inspect.signature(cr.hub)``), whichever is imported first.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Hub:
        return hub(*args, **kwargs)


__signature__ = inspect.signature(hub)
"""What ``inspect.signature(cr.hub)`` (and so Jupyter's Shift-Tab) shows: :func:`hub`'s arguments."""

sys.modules[__name__].__class__ = _CallableModule
