"""Pure reconnect policy: a seedable jittered backoff and a ``classify`` that says retry or give up.

The I/O loop that uses them stays short; the policy is tested without sockets.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from .exceptions import (
    AuthenticationError,
    CoinratesError,
    ConfigError,
    MessageError,
    ServerError,
    TransportError,
)

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


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the errors behind it, as a traceback would show them (``__cause__``, else ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        # ``raise X from None`` hides the context on purpose: follow it only where Python would show it
        current = current.__cause__ if current.__cause__ is not None else (
            None if current.__suppress_context__ else current.__context__)


def _certificate_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``exc`` (the client wraps it in a ``TransportError``)."""
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLCertVerificationError)), None)


def classify(exc: BaseException) -> RetryDecision:
    """Decide whether an error ends the stream; only network and server faults are retried.

    Fatal (``retry=False``), because reconnecting cannot help and CoinAPI limits connections
    per IP (protocol notes §5): a rejected key, invalid settings, a server certificate that
    fails verification (anywhere in the ``__cause__`` chain: a corporate proxy's CA needs
    ``ssl=``), and every error that is not a network or server error, i.e. a bug or a local
    failure in our own code (a listener, the frame, the recorder), reported as
    ``"internal error"``. Retried: ``ServerError``, ``TransportError`` (stale streams
    included), ``MessageError`` and the ``OSError``/``TimeoutError``/``EOFError`` family.

    Errors are expected translated at the edge (``client.Session._translate``); a foreign
    library error that was not translated counts as internal.
    """
    if isinstance(exc, AuthenticationError):
        return RetryDecision(False, "authentication failed")
    if isinstance(exc, ConfigError):
        return RetryDecision(False, "invalid configuration")
    cert = _certificate_failure(exc)
    if cert is not None:
        detail = cert.verify_message or cert.reason or str(cert)
        return RetryDecision(False, f"TLS certificate verification failed: {detail}; if a proxy or private CA "
                                    "signs the server's certificate, pass ssl= with your CA bundle "
                                    "(a path or an ssl.SSLContext)")
    if isinstance(exc, ServerError):
        return RetryDecision(True, "server error")
    if isinstance(exc, TransportError):
        return RetryDecision(True, "connection lost")
    if isinstance(exc, MessageError):
        return RetryDecision(True, "protocol violation")
    if isinstance(exc, CoinratesError):  # StoreError, RecordingError (an OSError!), CollectorError: ours
        return RetryDecision(False, "internal error")
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return RetryDecision(True, "network error")
    return RetryDecision(False, "internal error")
