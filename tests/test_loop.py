"""_loop.run_on: how callers on other threads reach a private loop, with errors in the tree."""

from __future__ import annotations

import asyncio
import threading

import pytest

from coinrates_nb._loop import run_on
from coinrates_nb.exceptions import CollectorError


def test_run_on_returns_times_out_in_the_tree_and_handles_a_closed_loop() -> None:
    """A result comes back; a blocked loop is a CollectorError (the call cancelled); a closed loop calls closed()."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def answer() -> int:
        return 42

    assert run_on(loop, answer(), 5.0, "the answer", CollectorError) == 42
    release = threading.Event()
    cancelled = threading.Event()

    async def stuck() -> int:
        try:
            while not release.is_set():
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    with pytest.raises(CollectorError, match="the stuck call did not finish within 0.2 s"):
        run_on(loop, stuck(), 0.2, "the stuck call", CollectorError)
    assert cancelled.wait(5.0), "the timed-out call was left running on the loop"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5.0)
    loop.close()
    assert run_on(loop, answer(), 1.0, "late", CollectorError, closed=lambda: -1) == -1
    with pytest.raises(CollectorError, match="late: the loop has stopped"):
        run_on(loop, answer(), 1.0, "late", CollectorError)
