"""Shared test helpers: wait on conditions with a timeout instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, message: str = "") -> T:
    """Poll ``predicate`` until it returns something truthy and return that value.

    Raises:
        AssertionError: still falsy after ``timeout`` seconds (with ``message`` and the last value).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f": {message}" if message else ""
            raise AssertionError(f"condition not met within {timeout:g} s{detail} (last value {value!r})")
        time.sleep(interval)
