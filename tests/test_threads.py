"""The one interpreter-exit hook of every background-thread owner: sources stop before recorders."""

from __future__ import annotations

from typing import Any

from coinrates_nb import _threads
from coinrates_nb._threads import BackgroundThread


def test_exit_stops_in_order_with_each_timeout_and_survives_a_failure() -> None:
    """Hubs, then sources, then recorders, then clients; one failing stop does not stop the others."""
    stopped: list[tuple[str, float]] = []

    class Thing(BackgroundThread):
        def __init__(self, name: str, order: int, timeout: float, fail: bool = False) -> None:
            self.name, self.EXIT_ORDER, self.EXIT_TIMEOUT, self.fail = name, order, timeout, fail
            self._stop_at_exit()

        def stop(self, *args: Any, timeout: float = 0.0, **kwargs: Any) -> None:
            stopped.append((self.name, timeout))
            if self.fail:
                raise RuntimeError("cannot stop")

    things = [Thing("client", 3, 2.0), Thing("recorder", 2, 5.0), Thing("collector", 1, 2.0, fail=True),
              Thing("hub", 0, 5.0)]
    assert all(t in _threads._LIVE for t in things)  # registered for the exit hook
    _threads._stop_in_order(list(things))
    assert stopped == [("hub", 5.0), ("collector", 2.0), ("recorder", 5.0), ("client", 2.0)]
    for thing in things:
        _threads._LIVE.discard(thing)
