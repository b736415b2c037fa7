"""What a notebook cell made on its last run, so re-running it replaces those things instead of leaking them.

JupyterLab tags each execute request with the cell's id. When the same cell runs again, what its
previous run made (a collector, a chart) is usually replaced by what this run makes: the old
ones are closed here. Outside a kernel, or in a front end that sends no cell id, nothing is
tracked. Pure Python (IPython is imported lazily), so the core can use it without the UI.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["close_on_rerun", "parent_message"]

logger = logging.getLogger("coinrates_nb")

_BY_CELL: dict[str, tuple[str, list[tuple[weakref.ReferenceType[Any], Callable[[Any], None]]]]] = {}
"""Cell id -> (the execute request that last ran it, what that run made and how to close each)."""


def parent_message() -> dict[str, Any]:
    """The kernel message that is executing now (empty outside a kernel)."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return {}
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    get_parent = getattr(kernel, "get_parent", None)
    if get_parent is None:
        return {}
    try:
        parent = get_parent()
    except Exception:  # noqa: BLE001 - best effort: no parent means no re-run tracking
        return {}
    return parent if isinstance(parent, dict) else {}


def close_on_rerun(obj: Any, close: Callable[[Any], None] | None = None) -> None:
    """Remember that the running cell made ``obj``; close what the cell's earlier runs made.

    ``close(old)`` closes one old object (default: ``old.close()``). The object being
    registered is never closed, so a cell that gets back the object it made last time (the
    same arguments) keeps it.
    """
    parent = parent_message()
    cell_id = (parent.get("metadata") or {}).get("cellId")
    msg_id = (parent.get("header") or {}).get("msg_id")
    if not cell_id or not msg_id:
        return
    entry = _BY_CELL.get(cell_id)
    if entry is not None and entry[0] != msg_id:
        for ref, closer in entry[1]:
            old = ref()
            if old is not None and old is not obj:
                logger.debug("cell %s re-ran: closing %r", cell_id, old)
                try:
                    closer(old)
                except Exception:  # noqa: BLE001 - closing a stale object must not break the new run
                    logger.warning("closing %r after its cell re-ran failed", old, exc_info=True)
        entry = None
    if entry is None:
        entry = (msg_id, [])
        _BY_CELL[cell_id] = entry
    if not any(ref() is obj for ref, _ in entry[1]):
        entry[1].append((weakref.ref(obj), close or (lambda old: old.close())))
