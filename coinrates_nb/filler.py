"""The collector's REST side: fill the window from history at start, and heal gaps after reconnects.

Runs on the collector's own event loop, beside the WebSocket session, with one
:class:`~coinrates_nb.rest.RestClient` (``history_url``: CoinAPI's historical host for CoinAPI's
WebSocket, otherwise the WebSocket URL's own host over http(s), so the simulator serves both).
The rules (bars as rows, the seam, heal spans, credit estimates) are pure, in
:mod:`coinrates_nb.backfill`; this module only schedules requests, spends the budget and hands
the rows to the collector.

* **Fill** (``stream(..., history=True | "30min")``): live updates that arrive while history is
  fetched are held, then stored after it, so the ring stays in time order; each pair's history
  stops at the period of its first live update (no duplicate, no hole at the bars' resolution).
* **Heal**: when a pair comes back after a disconnect, the whole 1SEC periods strictly inside its
  gap are fetched and stored as ``healed`` rows. Each gap says what happened: ``healed``, or
  ``open`` with the reason (no key, budget spent, REST down, no data).
* **Budget**: ``max_history_credits`` per UTC day, checked with the credit estimate before each
  request; what would exceed it is not fetched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._types import Pair, TimeNs, split_pair
from .backfill import bars_to_batch, credits_for, heal_span, history_period, seam_ns
from .batch import HEALED, HISTORY, RateBatch
from .config import is_loopback
from .exceptions import AuthenticationError, CoinratesError, MessageError, ServerError, TransportError
from .rest import RestClient, RestUsage, period_ns

__all__ = ["HEAL_PERIOD", "Filler", "FillPlan"]

logger = logging.getLogger("coinrates_nb.collector")

HEAL_PERIOD = "1SEC"
"""Gaps are healed with 1-second bars: the finest period CoinAPI serves."""

HOLD_TIMEOUT = 60.0
"""Most seconds live updates are held while the window is filled from history."""

SEAM_WAIT = 5.0
"""Most seconds the fill waits for a pair's first live update, to cut its history there."""


@dataclass(frozen=True, slots=True)
class FillPlan:
    """What a window fill will fetch and its estimated cost, before it starts."""

    span_ns: int
    period: str
    pairs: tuple[Pair, ...]
    credits: int


class Filler:
    """History fill and gap healing for one collector (loop thread only).

    Args:
        client: the collector's REST client (kept across restarts, so today's usage and budget carry over).
        store: ``store(batch, received_ns)``: writes REST rows into the collector (frame and listeners).
        release: ``release(batch, received_ns)``: the collector's live path, for updates held during the fill.
        max_credits: history credits that may be spent per UTC day.
        simulated: the REST server is our simulator (free, no key needed).
    """

    def __init__(self, client: RestClient, store: Callable[[RateBatch, int], None],
                 release: Callable[[RateBatch, int], None], *, max_credits: int, simulated: bool) -> None:
        self.client = client
        self.store = store
        self.release = release
        self._first_live: dict[Pair, TimeNs] = {}
        self.max_credits = max_credits
        self.simulated = simulated
        self.keyed = client.has_key or simulated or is_loopback(client.base_url)
        """A key, or a server that needs none (our simulator, anything on loopback)."""
        self.holding = False
        self._held: list[tuple[RateBatch, int]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reserved = 0
        """Credits of fetches under way: counted in the budget before their responses are."""
        self.fill_error: str | None = None

    # ------------------------------------------------------------------ the budget

    @property
    def usage(self) -> RestUsage:
        """REST usage since start (requests, credits, rates received, 429s, retries, failures)."""
        return self.client.usage

    @property
    def usage_today(self) -> RestUsage:
        """REST usage since 00:00 UTC."""
        return self.client.usage_today()

    def _reserve(self, credits: int) -> bool:
        """Set ``credits`` aside for a fetch if today's budget allows it (fetches under way count too)."""
        if self.usage_today.credits + self._reserved + credits > self.max_credits:
            return False
        self._reserved += credits
        return True

    def _left(self) -> int:
        return self.max_credits - self.usage_today.credits - self._reserved

    # ------------------------------------------------------------------ live updates during the fill

    def hold(self, rates: RateBatch, received_ns: int) -> bool:
        """Keep a live batch back while the fill runs (so history lands first); False when not holding."""
        if not self.holding:
            return False
        self._held.append((rates, received_ns))
        names, index = rates.pairs()
        if any(name not in self._first_live for name in names):
            codes, at = np.unique(index, return_index=True)  # each pair's first row in the batch
            for code, row in zip(codes.tolist(), at.tolist(), strict=True):
                self._first_live.setdefault(names[code], int(rates.time_ns[row]))
        return True

    def first_live(self, pair: Pair) -> TimeNs | None:
        """The time of ``pair``'s first live update held during the fill, or ``None``."""
        return self._first_live.get(pair)

    def _release(self) -> None:
        self.holding = False
        held, self._held = self._held, []
        for rates, received_ns in held:
            self.release(rates, received_ns)

    # ------------------------------------------------------------------ fill

    def plan(self, pairs: tuple[Pair, ...], span_ns: int) -> FillPlan:
        """The fill's period and credit estimate (``ceil(bars / 100)`` per request)."""
        period = history_period(span_ns)
        now = time.time_ns()
        credits = credits_for({p: (now - span_ns, now) for p in pairs}, period)
        return FillPlan(span_ns, period, pairs, credits)

    def start_fill(self, pairs: tuple[Pair, ...], span_ns: int) -> None:
        """Hold live updates and fetch ``span_ns`` of history for ``pairs`` in the background."""
        if not pairs:
            return
        plan = self.plan(pairs, span_ns)
        if not self.keyed:
            self.fill_error = "no API key: history needs one"
            logger.warning("history: %s", self.fill_error)
            return
        if not self._reserve(plan.credits):
            self.fill_error = f"budget: the fill needs ~{plan.credits:,} credits, {self._left():,} left today"
            logger.warning("history not fetched: %s (max_history_credits)", self.fill_error)
            return
        logger.info("history: filling %s of %d pair(s) with %s bars (~%d credits)",
                    _span(span_ns), len(pairs), plan.period, plan.credits)
        self.holding = True
        self._spawn(self._fill(plan), plan.credits)

    async def _fill(self, plan: FillPlan) -> None:
        try:
            async with asyncio.timeout(HOLD_TIMEOUT):
                now = time.time_ns()
                results = await asyncio.gather(
                    *(self.client.history(*split_pair(p), plan.period, now - plan.span_ns, now) for p in plan.pairs),
                    return_exceptions=True)
                step = period_ns(plan.period)
                for _ in range(int(SEAM_WAIT * 10)):  # give each pair a moment to deliver its first live update
                    if all(self.first_live(p) is not None for p in plan.pairs):
                        break
                    await asyncio.sleep(0.1)
                stored = 0
                for pair, bars in zip(plan.pairs, results, strict=True):
                    if isinstance(bars, BaseException):
                        self.fill_error = f"{pair}: {type(bars).__name__}: {bars}"
                        logger.warning("history for %s failed: %s", pair, bars)
                        continue
                    cut = seam_ns(self.first_live(pair), step, time.time_ns())
                    batch = bars_to_batch(bars.take(bars.start_ns < cut), HISTORY)
                    if len(batch):
                        self.store(batch, time.time_ns())
                        stored += len(batch)
                logger.info("history: stored %d row(s) for %d pair(s)", stored, len(plan.pairs))
        except TimeoutError:
            self.fill_error = f"the history fill took more than {HOLD_TIMEOUT:g} s"
            logger.warning("history: %s; live data goes on", self.fill_error)
        except Exception as exc:  # noqa: BLE001 - a failed fill must never stop the stream
            self.fill_error = f"{type(exc).__name__}: {exc}"
            logger.warning("history fill failed: %s", self.fill_error, exc_info=not isinstance(exc, CoinratesError))
        finally:
            self._release()

    # ------------------------------------------------------------------ heal

    def heal(self, gap: dict[str, Any], on_done: Callable[[dict[str, Any]], None]) -> None:
        """Fetch the whole 1SEC periods inside ``gap`` and store them as ``healed``; record the outcome in ``gap``."""
        span = heal_span(int(gap["start"]), int(gap["end"]), period_ns(HEAL_PERIOD))
        if span is None:
            gap["heal"] = "healed"  # no whole second missing
            on_done(gap)
            return
        if not self.keyed:
            gap["heal"] = "open: no API key"
            on_done(gap)
            return
        credits = credits_for({gap["pair"]: span}, HEAL_PERIOD)
        if not self._reserve(credits):
            gap["heal"] = "open: budget spent (max_history_credits)"
            on_done(gap)
            return
        gap["heal"] = "pending"
        self._spawn(self._heal(gap, span, on_done), credits)

    async def _heal(self, gap: dict[str, Any], span: tuple[int, int], on_done: Callable[[dict[str, Any]], None]) -> None:
        try:
            bars = await self.client.history(*split_pair(gap["pair"]), HEAL_PERIOD, span[0], span[1])
            batch = bars_to_batch(bars, HEALED)
            if len(batch) == 0:
                gap["heal"] = "open: no data (550)"
            else:
                self.store(batch, time.time_ns())
                gap["heal"] = "healed"
                gap["healed_rows"] = len(batch)
        except AuthenticationError as exc:
            gap["heal"] = f"open: the key was refused ({exc})"
        except (TransportError, ServerError, MessageError) as exc:  # the REST side failed: the gap stays open
            gap["heal"] = f"open: REST down ({type(exc).__name__}: {exc})"
            logger.info("healing %s failed: %s", gap["pair"], exc)
        except Exception as exc:  # noqa: BLE001 - our own failure (e.g. the frame refused the rows): loud, not fatal
            gap["heal"] = f"open: internal error ({type(exc).__name__}: {exc})"
            logger.error("healing %s failed: %s", gap["pair"], exc, exc_info=True)
        on_done(gap)

    # ------------------------------------------------------------------ lifecycle

    def _spawn(self, coro: Any, reserved: int) -> None:
        """Run ``coro`` as a task; the ``reserved`` credits are given back when it ends (even cancelled unstarted)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            self._reserved -= reserved

        task.add_done_callback(done)

    async def close(self) -> None:
        """Cancel what is in flight and close the HTTP session."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancelled or failed: we are closing
                pass
        await self.client.close()


def _span(ns: int) -> str:
    seconds = ns / 1e9
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"
