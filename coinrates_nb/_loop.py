"""The private event loops: each collector and simulator thread owns one, and ends it the same way."""

from __future__ import annotations

import asyncio

__all__ = ["close_loop"]


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still pending on ``loop``, let it finish, then close the loop.

    Called at the end of the thread that ran ``loop``, so no task is left half-done and no
    "Task was destroyed but it is pending" warning reaches the notebook.
    """
    try:
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())  # the REST client parses big pages there
    finally:
        loop.close()
