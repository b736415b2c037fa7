"""The public surface: __all__ is exact, importing is cheap and side-effect free, errors share one root."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import coinrates_nb as cr
from coinrates_nb import exceptions


def test_all_is_the_groups() -> None:
    """__all__ is exactly the grouped public API, each name resolves, and every error of the tree is exported."""
    grouped = [name for names in cr.GROUPS.values() for name in names]
    assert cr.__all__ == [*grouped, "__version__"] and len(set(grouped)) == len(grouped)
    for name in cr.__all__:
        assert getattr(cr, name) is not None, name
    tree = {name for name, obj in vars(exceptions).items()
            if inspect.isclass(obj) and issubclass(obj, exceptions.CoinratesError)}
    assert tree <= set(cr.GROUPS["errors"]), "an error of the tree is not exported"
    assert not set(cr.__all__) & {"Hello", "ExchangeRate", "Heartbeat"}, "wire classes stay in coinrates_nb.messages"


def test_import_is_light() -> None:
    """Importing the package loads no plotly/ipywidgets, starts no thread, opens no socket."""
    code = (
        "import sys, threading, coinrates_nb;"
        "bad = [m for m in ('plotly', 'ipywidgets', 'anywidget', 'coinrates_nb.sim', 'websockets.asyncio.server')"
        " if m in sys.modules];"
        "assert not bad, bad;"
        "assert threading.active_count() == 1, threading.enumerate();"
        "print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_one_error_root() -> None:
    """Every exception class the package exports derives from CoinratesError."""
    errors = [obj for name, obj in vars(cr).items() if inspect.isclass(obj) and issubclass(obj, BaseException)]
    assert len(errors) >= 8
    assert all(issubclass(e, cr.CoinratesError) for e in errors)
    assert issubclass(cr.ConfigError, ValueError) and issubclass(cr.TransportError, ConnectionError)


def test_public_callables_documented() -> None:
    """Public functions and classes carry a docstring."""
    for name in ("stream", "Collector", "RollingFrame", "Settings", "SecretKey", "Status", "hub", "Hub", "HubStatus"):
        assert inspect.getdoc(getattr(cr, name)), name


HUB_CHECK = (
    "import inspect, sys, coinrates_nb as cr, coinrates_nb.hub as package;"
    "from coinrates_nb import Hub, HubStatus, hub;"
    "from coinrates_nb.hub.hub import Hub as H, HubStatus as S, hub as fn;"
    "assert hub is cr.hub is package is sys.modules['coinrates_nb.hub'] and cr.hub.links and Hub is cr.Hub is H and HubStatus is cr.HubStatus is S, (hub, Hub);"
    "assert callable(cr.hub) and 'nats_url' in inspect.signature(cr.hub).parameters;"
    "made = cr.hub(['BTC/USD'], nats_url='nats://127.0.0.1:1', start=False);"
    "assert type(made) is H and made.nats_url == 'nats://127.0.0.1:1' and not made.running;"
    "print('ok')"
)
"""``cr.hub``, ``cr.Hub`` and ``from coinrates_nb import hub`` are the same objects however they are reached (no hub starts)."""


@pytest.mark.parametrize("first", [
    "import coinrates_nb as cr; cr.hub",  # the lazy export first ...
    "import coinrates_nb.hub",  # ... or the sub-package (the collector imports it for a nats:// URL)
    "from coinrates_nb import hub",
    "import coinrates_nb as cr; cr.Hub",
    "from coinrates_nb.hub import consumer",
])
def test_hub_exports_in_any_import_order(first: str) -> None:
    """The hub's exports resolve to one callable package, one Hub and one HubStatus, whatever was imported first."""
    out = subprocess.run([sys.executable, "-c", f"{first}\n{HUB_CHECK}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
