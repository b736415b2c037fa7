"""Shared test helpers: wait on conditions with a timeout instead of sleeping; build rows for a frame."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from coinrates_nb.batch import RateBatch
from coinrates_nb.frame import RollingFrame
from coinrates_nb.messages import ExchangeRate

T = TypeVar("T")

SLOW = float(os.environ.get("COINRATES_TEST_SLOW", "1") or 1)
"""One factor for every wall-clock bound in the tests (the way websockets' suite scales ``MS``):
set ``COINRATES_TEST_SLOW=3`` on a slow or busy machine."""


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    ``timeout`` is scaled by :data:`SLOW`.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds (with ``message`` and the last value).
    """
    timeout *= SLOW
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {message}" if message else ""
            raise AssertionError(f"condition not met within {timeout:g} s{detail} (last value {value!r})")
        time.sleep(interval)


def rate_batch(rows: Iterable[tuple[int, str, float, str]]) -> RateBatch:
    """A batch from ``(time_ns, "BASE/QUOTE", rate, rate_type)`` rows."""
    updates = []
    for time_ns, pair, rate, rate_type in rows:
        base, _, quote = pair.partition("/")
        updates.append(ExchangeRate(base, quote, rate_type, int(time_ns), float(rate)))
    return RateBatch.of(updates)


def put(frame: RollingFrame, time_ns: int, pair: str, rate: float, rate_type: str = "BASE_QUOTE_ISOLATED",
        received_ns: int | None = None) -> None:
    """Store one row (a batch of one), as the collector does for a frame received alone."""
    frame.extend(rate_batch([(time_ns, pair, rate, rate_type)]), int(time_ns if received_ns is None else received_ns))
