"""Reconnect policy: jittered backoff grows to a cap; classify says which errors end the stream."""

from __future__ import annotations

import itertools
import random
import ssl

import pytest

from coinrates_nb.exceptions import (
    AuthenticationError,
    CollectorError,
    ConfigError,
    MessageError,
    RecordingError,
    ServerError,
    StaleStreamError,
    StoreError,
    TransportError,
)
from coinrates_nb.retry import RetryDecision, backoff, classify


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
    """Bad keys and bad settings are fatal; transport, stale, server, protocol and OS faults are retried."""
    assert not classify(AuthenticationError("Invalid API key")).retry
    assert not classify(ConfigError("x")).retry
    for exc in (TransportError("x"), StaleStreamError(11, 10), ServerError("overflow"), MessageError("x"),
                OSError("x"), ConnectionResetError("x"), TimeoutError(), EOFError()):
        assert classify(exc).retry, exc


def cert_error() -> ssl.SSLCertVerificationError:
    """A certificate failure shaped like the one OpenSSL raises for a private CA."""
    exc = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                                          "self-signed certificate in certificate chain (_ssl.c:1006)")
    exc.verify_message = "self-signed certificate in certificate chain"
    exc.verify_code = 19
    return exc


def raised(outer: BaseException, inner: BaseException, *, explicit: bool = True) -> BaseException:
    """``outer`` raised while handling ``inner`` (``from inner`` if explicit, else as context)."""
    try:
        try:
            raise inner
        except BaseException as caught:
            if explicit:
                raise outer from caught
            raise outer  # noqa: B904 - implicit chaining is the case under test
    except BaseException as result:  # noqa: BLE001 - returned for inspection
        return result


def test_certificate_verification_failure_is_fatal_with_advice() -> None:
    """A failed certificate check is fatal, directly or wrapped by the client, and tells to pass ssl=."""
    for exc in (cert_error(), raised(TransportError("SSLCertVerificationError: ..."), cert_error()),
                raised(OSError("connect failed"), cert_error(), explicit=False),
                raised(TransportError("x"), raised(OSError("y"), cert_error()))):
        decision = classify(exc)
        assert not decision.retry, exc
        assert decision.reason.startswith("TLS certificate verification failed: self-signed certificate")
        assert "pass ssl= with your CA bundle" in decision.reason


def test_hidden_context_and_other_tls_errors_stay_retryable() -> None:
    """``raise ... from None`` hides the certificate error on purpose; other TLS errors are network errors."""
    try:
        try:
            raise cert_error()
        except ssl.SSLError:
            raise TransportError("x") from None
    except TransportError as exc:
        assert classify(exc).retry
    assert classify(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")).retry


@pytest.mark.parametrize("exc", [RuntimeError("bug"), KeyError("pair"), TypeError("x"), ValueError("x"),
                                 AttributeError("x"), ZeroDivisionError(), StoreError("x"), CollectorError("x"),
                                 RecordingError("disk full")], ids=lambda e: type(e).__name__)
def test_errors_that_are_not_network_errors_are_not_retried(exc: BaseException) -> None:
    """A bug in our code (a listener, the frame, the recorder) must not turn into reconnects every 0.25 s."""
    assert classify(exc) == RetryDecision(False, "internal error")
