"""Reconnect policy: jittered backoff grows to a cap; classify says which errors end the stream; the loop using them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
from typing import Any

import pytest

from coinrates_nb._session import ReconnectingSession
from coinrates_nb.config import Settings
from coinrates_nb.exceptions import (
    AuthenticationError,
    CoinratesError,
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
from coinrates_nb.status import Telemetry


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


# ---------------------------------------------------------------------- the reconnect loop, without sockets


class ScriptedSession(ReconnectingSession[int]):
    """A transport whose attempts follow a script: ``("refused", exc)`` fails to open; ``("served", delivered,
    exc)`` opens, delivers or not, then ends with ``exc`` (``None``: the session is stopped)."""

    _log = logging.getLogger("tests.scripted")
    _STOPPED = "scripted stopped"
    _ENDED = "scripted ended"

    def __init__(self, script: list[tuple[Any, ...]], rng: random.Random) -> None:
        self.settings = Settings(backoff_initial=0.001, backoff_cap=0.004)
        self.telemetry = Telemetry()
        self.rng = rng
        self._stopping = asyncio.Event()
        self._delivered = False
        self.script = list(script)
        self.journal: list[str] = []
        self.opened = 0

    async def _open(self) -> int:
        step = self.script[0]
        if step[0] == "refused":
            self.script.pop(0)
            raise step[1]
        self.opened += 1
        return self.opened

    async def _serve(self, link: int) -> None:
        _, delivered, exc = self.script.pop(0)
        self.journal.append(f"serve {link}")
        self._delivered = delivered
        if exc is None:
            self._stopping.set()
            return
        raise exc

    def _translate(self, exc: BaseException) -> BaseException:
        return exc if isinstance(exc, CoinratesError) else TransportError(f"translated {exc}")

    async def _release(self) -> None:
        self.journal.append("release")

    def _failed(self, err: BaseException) -> None:
        self.journal.append(f"failed {type(err).__name__}")

    def _link_lost(self) -> None:
        self.journal.append("lost")


def test_reconnect_loop_counts_logs_and_restarts_the_backoff_after_a_delivering_link(
        caplog: pytest.LogCaptureFixture) -> None:
    """Refused attempts grow the delay; a link that delivered restarts it; only opened links count as reconnects."""
    script: list[tuple[Any, ...]] = [
        ("refused", OSError("refused")),  # delay #1 (nominal 0.001)
        ("refused", OSError("refused")),  # delay #2 (0.002)
        ("served", True, TransportError("dropped")),  # delivered: restart, delay 0.001
        ("served", False, StaleStreamError(11, 10)),  # nothing delivered: grows, 0.002
        ("served", False, None),  # stopped while serving: no delay, no reconnect
    ]
    session = ScriptedSession(script, random.Random(3))
    caplog.set_level(logging.INFO, logger="tests.scripted")
    asyncio.run(session.run())
    t = session.telemetry
    assert (t.state, t.transport_errors, t.reconnects, t.last_error) == ("stopped", 4, 2, str(StaleStreamError(11, 10)))
    reference = random.Random(3)
    expected = [n * (1.0 - 0.5 * reference.random()) for n in (0.001, 0.002, 0.001, 0.002)]
    assert list(t.retry_delays) == pytest.approx(expected)
    assert session.journal == ["failed TransportError", "release", "lost"] * 2 + [
        "serve 1", "failed TransportError", "release", "lost",
        "serve 2", "failed StaleStreamError", "release", "lost",
        "serve 3", "release"]
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert lines[0] == (logging.INFO, "scripted ended: translated refused; reconnecting (connection lost)")
    assert len(lines) == 4 and all(level == logging.INFO for level, _ in lines)


def test_reconnect_loop_stops_on_a_fatal_error(caplog: pytest.LogCaptureFixture) -> None:
    """A rejected key ends the loop at once: state 'error', one ERROR line, released, no wait, no gap."""
    session = ScriptedSession([("served", True, AuthenticationError("Invalid API key"))], random.Random(1))
    asyncio.run(session.run())
    t = session.telemetry
    assert (t.state, t.transport_errors, t.reconnects, len(t.retry_delays)) == ("error", 1, 0, 0)
    assert session.journal == ["serve 1", "failed AuthenticationError", "release"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"scripted stopped: {AuthenticationError('Invalid API key')} (authentication failed)"]
