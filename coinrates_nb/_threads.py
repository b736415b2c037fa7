"""What every object that owns a background thread shares: ``with`` support and ``running``.

The collector, the simulator, the recorder and the replay each start one thread in
``start()`` and end it in an idempotent ``stop()``; this mixin gives them the same context
manager and the same ``running`` test, written once.
"""

from __future__ import annotations

import threading
from typing import Any, Self

__all__ = ["BackgroundThread"]


class BackgroundThread:
    """Mixin for objects with ``start() -> Self``, ``stop()`` and a ``_thread`` attribute."""

    _thread: threading.Thread | None = None

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
