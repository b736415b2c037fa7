"""The simulator's clock-to-queue step: advance the price model and queue each connection's updates.

Pure apart from the connections' queues: times come in as arguments (no clock reads), prices
from the seeded :class:`~coinrates_nb.sim.prices.PriceModel`. One :meth:`Ticker.tick` is one
timer wake-up of the server: ``batch`` instants spaced ``1 / rate_hz`` apart, ending at "now",
each giving every streaming connection one update per pair unless a throttle holds it back
(``../shared/protocol/exrates-websocket.md`` §3.2, §4.1). A queue that would grow past
``max_buffered`` is the §5 overflow: it is emptied (never re-sent) and the connection fails.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._types import Pair, TimeNs
from ..messages import ExchangeRate
from ._connection import OVERFLOW_MESSAGE, TIME_QUANTUM, Connection, quantize
from .prices import PriceModel

__all__ = ["Ticker"]


class Ticker:
    """Turns model time into queued ``exrate`` frames, honouring every per-pair throttle.

    Args:
        model: the price model it advances (it is the model's only writer).
        rate_hz: instants per second.
        batch: instants per :meth:`tick`.
        cross_interval: minimum seconds between two updates of a ``BASE_AND_QUOTE_TO_REF`` pair.
        max_buffered: most queued items per connection before the overflow (§5).
    """

    def __init__(self, model: PriceModel, *, rate_hz: float, batch: int, cross_interval: float, max_buffered: int) -> None:
        self.model = model
        self.batch = batch
        self.interval = batch / rate_hz
        """Seconds between two ticks."""
        self.step_ns = round(1e9 / rate_hz)
        self.cross_ns = round(cross_interval * 1e9)
        self.max_buffered = max_buffered
        self.model_ns: TimeNs | None = None
        """The wire time of the model's current prices (``None`` before the first tick)."""

    def tick(self, now_ns: TimeNs, clients: Iterable[Connection]) -> list[Connection]:
        """Queue ``batch`` instants ending at ``now_ns`` for ``clients``; return those that overflowed.

        An instant at or before one already emitted (a wake-up soon after a late one) is
        skipped, so every connection sees one update per instant with the same time, as two
        links to the real server would.
        """
        streaming = [c for c in clients if c.routes and not c.closing]
        overflowed: list[Connection] = []
        cache: dict[Pair, tuple[float, dict[TimeNs, str]]] = {}
        for k in range(self.batch):
            t = quantize(now_ns - (self.batch - 1 - k) * self.step_ns)
            if self.model_ns is None:
                self.model_ns = t
            elif t > self.model_ns:
                self.model.step((t - self.model_ns) / 1e9)
                self.model_ns = t
            else:
                continue
            for client in streaming:
                if not client.closing and not self._emit(client, t, cache):
                    overflowed.append(client)
            cache.clear()
        for client in streaming:
            if client.pending:
                client.wake.set()
        return overflowed

    def _emit(self, client: Connection, t: TimeNs, cache: dict[Pair, tuple[float, dict[TimeNs, str]]]) -> bool:
        """Queue this instant's update of each of the client's pairs; False if its queue overflowed."""
        limit_ms = client.scope.update_limit_ms
        limit_ns = limit_ms * 1_000_000 if limit_ms else 0
        cross_ns = self.cross_ns
        pending = client.pending
        last_time = client.last_time
        for route in client.routes:
            last = last_time.get(route.pair)
            if last is not None:
                gap = t - last
                # §3.2: subscribe_update_limit_ms_exrate is the minimum delay between two updates of a pair.
                if gap < limit_ns or (route.cross and gap < cross_ns):
                    continue
            stamp = t if last is None or t > last else last + TIME_QUANTUM  # strictly increasing per pair
            if len(pending) >= self.max_buffered:
                pending.clear()  # §5: what is buffered is lost, never re-sent
                client.fail(OVERFLOW_MESSAGE)
                return False
            cached = cache.get(route.pair)
            if cached is None:
                cached = cache[route.pair] = (self.model.rate(route.base, route.quote), {})
            rate, texts = cached
            text = texts.get(stamp)
            if text is None:
                text = texts[stamp] = ExchangeRate(route.base, route.quote, route.rate_type, stamp, rate).to_json()
            pending.append((text, (route.pair, stamp, rate)))
            last_time[route.pair] = stamp
        return True
