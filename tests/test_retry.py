"""Reconnect policy: jittered backoff grows to a cap; classify says which errors end the stream."""

from __future__ import annotations

import itertools
import random

from coinrates_nb.exceptions import (
    AuthenticationError,
    ConfigError,
    MessageError,
    ServerError,
    StaleStreamError,
    TransportError,
)
from coinrates_nb.retry import backoff, classify


def test_backoff_grows_with_jitter_and_cap() -> None:
    """Delays grow geometrically, each within [50%, 100%] of its nominal value, never above the cap."""
    delays = list(itertools.islice(backoff(0.5, 2.0, cap=8.0, jitter=0.5, rng=random.Random(1)), 10))
    nominal = [min(8.0, 0.5 * 2**i) for i in range(10)]
    for d, n in zip(delays, nominal, strict=True):
        assert 0.5 * n <= d <= n
    assert max(delays) <= 8.0
    assert len(set(delays)) == len(delays)  # jittered, not constant


def test_backoff_seedable() -> None:
    """The same seed gives the same delays."""
    a = list(itertools.islice(backoff(rng=random.Random(7)), 6))
    b = list(itertools.islice(backoff(rng=random.Random(7)), 6))
    assert a == b


def test_classify() -> None:
    """Bad keys and bad settings are fatal; transport, stale, server and protocol faults are retried."""
    assert not classify(AuthenticationError("Invalid API key")).retry
    assert not classify(ConfigError("x")).retry
    for exc in (TransportError("x"), StaleStreamError(11, 10), ServerError("overflow"), MessageError("x"),
                OSError("x"), RuntimeError("bug")):
        assert classify(exc).retry
