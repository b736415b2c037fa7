"""What every object that owns a background thread shares: ``with`` support, ``running``, the stop at exit.

The collector, the simulator, the recorder, the replay, the hub and the sync REST client each
start one thread in ``start()`` and end it in an idempotent ``stop()``; this mixin gives them
the same context manager, the same ``running`` test and one interpreter-exit hook, written once.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from typing import Any, ClassVar, Self

__all__ = ["BackgroundThread"]

logger = logging.getLogger("coinrates_nb")

_LIVE: weakref.WeakSet[BackgroundThread] = weakref.WeakSet()


class BackgroundThread:
    """Mixin for objects with ``start() -> Self``, ``stop(timeout=...)`` and a ``_thread`` attribute."""

    _thread: threading.Thread | None = None
    EXIT_ORDER: ClassVar[int] = 1
    """At interpreter exit, lower stops first: hubs (0), then sources (1), recorders (2), clients (3)."""
    EXIT_TIMEOUT: ClassVar[float] = 2.0
    """Seconds ``stop`` may take at interpreter exit."""

    def _stop_at_exit(self) -> None:
        """Have :func:`_stop_all` stop this object at interpreter exit (if it is still alive then)."""
        _LIVE.add(self)

    def start(self) -> Self:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def stop(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the background thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()


@atexit.register
def _stop_all() -> None:
    """Interpreter exit: stop what is still running, sources before the recorders that flush them."""
    _stop_in_order(list(_LIVE))


def _stop_in_order(objs: list[BackgroundThread]) -> None:
    """Stop each of ``objs`` by ``EXIT_ORDER`` with its ``EXIT_TIMEOUT``; a failure is logged, the rest go on."""
    for obj in sorted(objs, key=lambda o: o.EXIT_ORDER):
        try:
            obj.stop(timeout=obj.EXIT_TIMEOUT)
        except Exception:  # noqa: BLE001 - interpreter exit: log and go on with the others
            logger.warning("could not stop %r at exit", obj, exc_info=True)
