"""Counters a collector keeps while it runs, and the typed :class:`Status` snapshot users read.

``Telemetry`` is written only on the collector's loop thread; other threads read a ``Status``
copy, so no lock is needed for plain int/float fields under the GIL.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ._types import State

__all__ = ["NO_DATA_AFTER", "Status", "Telemetry"]

NO_DATA_AFTER = 30.0
"""Seconds a subscribed pair may deliver nothing on a healthy connection before ``status`` reports it."""

logger = logging.getLogger("coinrates_nb.collector")


@dataclass(frozen=True)
class Status:
    """A point-in-time view of a collector: state, throughput, faults and freshness."""

    state: State
    source: str
    url: str | None
    scope: tuple[str, ...] | None
    messages: int
    rates: int
    msgs_per_s: float
    heartbeats: int
    unknown: int
    rejected: dict[str, int]
    duplicates: int
    connections: int
    reconnects: int
    server_errors: int
    last_error: str | None
    lag_ms: float | None
    stale_pairs: tuple[str, ...]
    rows: int
    uptime_s: float
    silent_pairs: dict[str, float] = field(default_factory=dict)
    """Subscribed pairs that delivered nothing for ``NO_DATA_AFTER`` s while connected, with those seconds:
    a typo'd or unknown pair, told apart from connection health ("no data for FOO/USD for 30 s")."""
    internal_errors: int = 0
    """Errors of our own code on the data path, caught at the collector boundary (see ``last_error``)."""
    replay: bool = False
    """True for a Replay: recorded data played back (``source`` says where it came from)."""
    rates_today: int = 0
    """Rates received over the WebSocket since 00:00 UTC: what CoinAPI bills (per rate delivered)."""
    rest_requests: int = 0
    """REST requests sent for history and healing (retries included)."""
    rest_credits: int = 0
    """REST credits charged since start (``X-RateLimit-Request-Cost``, else ceil(items / 100))."""
    rest_credits_today: int = 0
    """REST credits charged since 00:00 UTC: what ``max_history_credits`` bounds."""
    rest_rates: int = 0
    """Rates received over REST (history bars): billed like WebSocket rates."""
    history_error: str | None = None
    """Why the history fill did not (fully) happen, if it did not."""
    recorders: tuple[Any, ...] = ()
    """The status of each recorder attached with ``record()`` (``coinrates_nb.store.RecorderStatus``)."""
    upstream: dict[str, Any] | None = None
    """A hub consumer's other link, the hub <-> CoinAPI one, from the hub's health (read every second):
    ``state``, ``source``, ``connections``, ``reconnects``, ``lag_ms``, ``last_error``, ``rates_billed``
    (what CoinAPI bills, once for every consumer; this collector's ``rates_today`` stays 0), ...
    ``None`` for a direct connection. ``state``, ``reconnects`` and ``connections`` above are the
    consumer <-> NATS link."""

    @property
    def simulated(self) -> bool:
        """True when the data comes from the embedded simulator, not CoinAPI."""
        return self.source == "simulated"

    @property
    def ok(self) -> bool:
        """True while the stream is connected and fresh."""
        return self.state == "connected"

    def no_data_notes(self) -> list[str]:
        """One human line per silent pair: ``"no data for FOO/USD for 30 s"``."""
        return [f"no data for {pair} for {seconds:,.0f} s" for pair, seconds in sorted(self.silent_pairs.items())]

    def summary(self) -> str:
        """One line for a status bar or a repr."""
        lag = f"lag {self.lag_ms:,.0f} ms" if self.lag_ms is not None else "lag n/a"
        parts = [self.state, self.source, f"{len(self.scope) if self.scope is not None else 'all'} pairs",
                 f"{self.rates:,} msgs", f"{self.msgs_per_s:,.1f}/s",
                 f"{self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}", lag]
        up = self.upstream
        if up is not None:
            parts.append(f"hub upstream {up.get('state', 'unknown')} ({int(up.get('rates_billed') or 0):,} rates billed)")
        if self.last_error:
            parts.append(f"error: {self.last_error}")
        parts.extend(self.no_data_notes())
        parts.extend(f"recorder {r.state}: {r.last_error}" for r in self.recorders if not r.ok)
        return " | ".join(parts)

    def _repr_html_(self) -> str:
        """A readable card in notebooks: state, badge, throughput, lag, stale and silent pairs, errors."""
        from ._display import status_html  # pure formatting, no plotly/ipywidgets

        return status_html(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-friendly) for widgets and logs."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Telemetry:
    """Mutable counters behind :class:`Status`; one instance per collector."""

    state: State = "idle"
    connections: int = 0
    reconnects: int = 0
    transport_errors: int = 0
    last_error: str | None = None
    lag_ns: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    rejected: Counter[str] = field(default_factory=Counter)
    server_simulated: bool = False
    """True once the server identified itself as coinrates_nb's simulator in the handshake."""
    internal_errors: int = 0
    """Errors of our own code on the data path (the frame, a sink) caught at the collector boundary."""
    rates_by_day: dict[int, int] = field(default_factory=dict)
    """Rates stored per UTC day (days since the epoch): the billing view of the WebSocket stream."""

    def count_rates(self, n: int, received_ns: int) -> None:
        """Add ``n`` rates received at ``received_ns`` to their UTC day (loop thread)."""
        day = received_ns // 86_400_000_000_000
        self.rates_by_day[day] = self.rates_by_day.get(day, 0) + n
    retry_delays: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    """The most recent reconnect delays chosen by the backoff, oldest first (seconds)."""
    _logged: set[str] = field(default_factory=set)
    _rate_window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=64))

    connected_since: float | None = None
    """Monotonic time the current connection opened (``None`` while not connected)."""

    def set_state(self, state: State) -> None:
        """Move to ``state``, logging transitions at INFO (connect/reconnect policy, STYLE §10)."""
        if state != self.state:
            logger.debug("state %s -> %s", self.state, state)
            self.state = state
            self.connected_since = time.monotonic() if state == "connected" else None

    def reject(self, kind: str, detail: str) -> None:
        """Count a rejected frame; log the first of each kind at WARNING, the rest at DEBUG."""
        self.rejected[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            logger.warning("rejected frame (%s): %s; further frames of this kind are logged at DEBUG", kind, detail)
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("rejected frame (%s): %s", kind, detail)

    def sample(self, now: float, total: int) -> None:
        """Record the message total at ``now``; called by the session's watchdog tick."""
        window = self._rate_window
        window.append((now, total))
        while len(window) > 2 and now - window[0][0] > 10.0:
            window.popleft()

    def throughput(self) -> float:
        """Messages per second over roughly the last 10 s of samples."""
        window = self._rate_window
        if len(window) < 2:
            return 0.0
        (t0, n0), (t1, n1) = window[0], window[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 > 1e-3 else 0.0
