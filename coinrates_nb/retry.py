"""Pure reconnect policy: a seedable jittered backoff and a ``classify`` that says retry or give up.

The I/O loop that uses them stays short; the policy is tested without sockets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from .exceptions import AuthenticationError, ConfigError, MessageError, ServerError, TransportError

__all__ = ["RetryDecision", "backoff", "classify"]


def backoff(
    initial: float = 0.25,
    factor: float = 2.0,
    cap: float = 30.0,
    jitter: float = 0.5,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Yield reconnect delays: exponential growth up to ``cap``, each shortened by up to ``jitter``.

    Jitter spreads many clients apart after a server restart; the cap bounds the wait. CoinAPI
    limits upgrades per IP to stop loops without backoff (protocol notes §5, "Connection limits").
    """
    rng = rng or random.Random()
    delay = initial
    while True:
        yield delay * (1.0 - jitter * rng.random())
        delay = min(cap, delay * factor)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Whether to reconnect after ``exc`` and a short reason for the status/logs."""

    retry: bool
    reason: str


def classify(exc: BaseException) -> RetryDecision:
    """Decide whether an error ends the stream: a bad key or bad settings do, transport faults do not."""
    if isinstance(exc, AuthenticationError):
        return RetryDecision(False, "authentication failed")
    if isinstance(exc, ConfigError):
        return RetryDecision(False, "invalid configuration")
    if isinstance(exc, ServerError):
        return RetryDecision(True, "server error")
    if isinstance(exc, TransportError):
        return RetryDecision(True, "connection lost")
    if isinstance(exc, MessageError):
        return RetryDecision(True, "protocol violation")
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return RetryDecision(True, "network error")
    return RetryDecision(True, f"unexpected {type(exc).__name__}")
