"""Shared fixtures: a clean environment, the loopback simulator, and the wait helper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coinrates_nb.simulator import Simulator
from tests import helpers


@pytest.fixture(autouse=True)
def _no_coinapi_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever sees a real key from the developer's environment."""
    monkeypatch.delenv("COINAPI_KEY", raising=False)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """The :func:`tests.helpers.wait_until` helper, as a fixture."""
    return helpers.wait_until


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running simulator on 127.0.0.1 (free port, seed 1, 20 updates/pair/s), stopped afterwards."""
    sim = Simulator(port=0, seed=1, rate_hz=20)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """A factory for started simulators with custom options; all are stopped afterwards."""
    made: list[Simulator] = []

    def make(**options: Any) -> Simulator:
        options.setdefault("port", 0)
        options.setdefault("seed", 1)
        sim = Simulator(**options).start()
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()
