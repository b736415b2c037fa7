"""The private event loops: each collector and simulator thread owns one, and ends it the same way."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .exceptions import CoinratesError

__all__ = ["close_loop", "run_on"]

T = TypeVar("T")


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float, what: str,
           error: type[CoinratesError], closed: Callable[[], T] | None = None) -> T:
    """Run ``coro`` on another thread's ``loop`` and wait for it: the one way callers reach a private loop.

    A loop that closed in between gives ``closed()`` (or ``error``); a call that takes longer than
    ``timeout`` is cancelled and raises ``error`` naming ``what``: never a bare ``RuntimeError``
    or ``TimeoutError`` from a public call.
    """
    try:
        future = asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop closed in between
        coro.close()
        if closed is not None:
            return closed()
        raise error(f"{what}: the loop has stopped") from None
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise error(f"{what} did not finish within {timeout:g} s (the loop is busy or blocked)") from None


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
