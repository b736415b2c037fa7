"""Rate listeners: what every source (a collector, a replay) offers its recorders and charts, written once."""

from __future__ import annotations

import logging
from collections.abc import Callable

from .batch import RateBatch

__all__ = ["Listener", "Listeners"]

logger = logging.getLogger("coinrates_nb")

Listener = Callable[[RateBatch, int], None]
"""``listener(batch, received_ns)``: a batch of stored updates (columns) and its receive time."""


class Listeners:
    """Mixin: ``add_listener`` and the fan-out to every listener, on the source's own thread."""

    _listeners: list[Listener] = []  # noqa: RUF012 - replaced, never mutated (copy-on-write)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(batch, received_ns)`` on the source's thread for every batch of stored updates.

        The batch is columns (:class:`~coinrates_nb.batch.RateBatch`); wrap a per-update function
        with :func:`coinrates_nb.collector.each`. Returns a function that removes the listener.
        Keep it cheap: it runs on the receiving thread.
        """
        # Copy-on-write: the source's thread iterates the list it loaded, so adding or removing
        # a listener from another thread never makes it skip or repeat one for a batch.
        self._listeners = [*self._listeners, listener]

        def remove() -> None:
            self._listeners = [fn for fn in self._listeners if fn is not listener]

        return remove

    def _notify(self, rates: RateBatch, received_ns: int) -> None:
        """Hand a stored batch to every listener; a broken listener is logged and never stops the source."""
        for listener in self._listeners:
            try:
                listener(rates, received_ns)
            except Exception:  # noqa: BLE001 - a broken listener must not stop the stream
                logger.exception("rate listener %r failed", listener)
