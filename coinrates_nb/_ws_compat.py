"""The one place that reads a ``websockets`` internal: how many frames a connection has queued.

``websockets`` has no public "frames waiting" count. Knowing it lets the client take every
queued frame as one batch without a cancelled ``recv()`` per read. The attribute path is the
asyncio implementation's (``ClientConnection.recv_messages.frames``, websockets 13-17);
``tests/test_ws_compat.py`` checks it on the installed version (``make test`` at the newest,
``make test-min`` at the ``pyproject.toml`` floor), so an upgrade that moves it fails a test
instead of silently falling back. When it is missing the client still works:
``asyncio.timeout(0)`` bounds the drain instead.
"""

from __future__ import annotations

from typing import Any

__all__ = ["queued_frames"]


def queued_frames(ws: Any) -> int | None:
    """Frames waiting in ``ws``'s receive queue, or ``None`` if this websockets version hides them."""
    try:
        return len(ws.recv_messages.frames)
    except (AttributeError, TypeError):
        return None
