"""The reconnect loop shared by the WebSocket ``Session`` and the hub's ``NatsSession``, written once.

Connect, serve until the link ends, translate and classify the error (``retry.classify``),
count it, log it, wait a jittered delay (``retry.backoff``) and go again, until ``stop()`` or an
error that must not be retried. The transports differ only in the hooks: how a link is opened
and served, which foreign errors they translate, what is released when a link ends, and the
log lines. The loop itself is tested without sockets (``tests/test_retry.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from abc import ABC, abstractmethod
from typing import ClassVar, Generic, TypeVar

from .config import Settings
from .exceptions import CoinratesError
from .retry import backoff, classify
from .status import Telemetry

__all__ = ["ReconnectingSession"]

LinkT = TypeVar("LinkT")


class ReconnectingSession(ABC, Generic[LinkT]):
    """One logical stream over successive links: :meth:`run` until :meth:`_stopping` is set.

    A subclass sets ``settings``, ``telemetry``, ``rng``, ``_stopping`` and ``_delivered`` (True once
    the current link delivered an update, which restarts the backoff), the class attributes
    ``_log`` (its logger), ``_STOPPED`` and ``_ENDED`` (the log lines' labels), and implements
    :meth:`_open`, :meth:`_serve` and :meth:`_translate`.
    """

    settings: Settings
    telemetry: Telemetry
    rng: random.Random
    _stopping: asyncio.Event
    _delivered: bool

    _log: ClassVar[logging.Logger]
    _STOPPED: ClassVar[str]
    """Label of the ERROR line when an error ends the stream: ``"<label>: <error> (<reason>)"``."""
    _ENDED: ClassVar[str]
    """Label of the line when a link ended and the loop reconnects: ``"<label>: <error>; reconnecting (<reason>)"``."""

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    async def _open(self) -> LinkT:
        """Open a link (counted as established, for ``reconnects``, once this returns)."""

    @abstractmethod
    async def _serve(self, link: LinkT) -> None:
        """Use ``link`` until it ends: return when the session stops, else raise why it ended."""

    @abstractmethod
    def _translate(self, exc: BaseException) -> BaseException:
        """Map a foreign error into the ``CoinratesError`` tree (ours pass through)."""

    async def _release(self) -> None:
        """Forget (or close) what the last attempt opened; runs after every attempt, failed or not."""

    def _failed(self, err: BaseException) -> None:
        """Told of every error that ended an attempt, before it is counted and logged."""

    def _link_lost(self) -> None:
        """Told when an attempt ended without a stop (before the wait), e.g. to record a gap in the data."""

    def _retry_level(self, err: BaseException) -> int:
        """The log level of a retried error (STYLE §10: an ordinary drop is INFO)."""
        return logging.INFO

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Connect and serve until stop, or until an error that must not be retried.

        Between attempts it waits a jittered, capped, growing delay (``retry.backoff``). A
        link that delivered updates restarts that sequence from its initial delay, so a
        one-off drop is retried within ``backoff_initial`` while a server that accepts and then
        fails, or refuses, is retried ever more slowly. ``reconnects`` counts links lost, not
        attempts; every delay chosen is kept in ``telemetry.retry_delays``.
        """
        settings, telemetry = self.settings, self.telemetry
        delays = backoff(settings.backoff_initial, cap=settings.backoff_cap, rng=self.rng)
        first = True
        while not self._stopping.is_set():
            telemetry.set_state("connecting" if first else "reconnecting")
            self._delivered = established = False
            try:
                link = await self._open()
                first = False
                established = True
                await self._serve(link)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - top of the task: classify, count, never die
                err = self._translate(exc)
                decision = classify(err)
                self._failed(err)
                telemetry.last_error = str(err)
                telemetry.transport_errors += 1
                if not decision.retry:
                    self._log.error("%s: %s (%s)", self._STOPPED, err, decision.reason)
                    telemetry.set_state("error")
                    return
                self._log.log(self._retry_level(err), "%s: %s; reconnecting (%s)", self._ENDED, err,
                              decision.reason, exc_info=not isinstance(err, CoinratesError))
            finally:
                await self._release()
            if self._stopping.is_set():
                break
            self._link_lost()
            if established:
                telemetry.reconnects += 1
            telemetry.set_state("reconnecting")
            if self._delivered:  # a link that worked restarts the backoff
                delays = backoff(settings.backoff_initial, cap=settings.backoff_cap, rng=self.rng)
            delay = next(delays)
            telemetry.retry_delays.append(delay)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        telemetry.set_state("stopped")
