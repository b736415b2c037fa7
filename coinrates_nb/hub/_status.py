"""The hub's status snapshot (:attr:`Hub.status <coinrates_nb.hub.hub.Hub.status>`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..status import Status

__all__ = ["HubStatus"]


@dataclass(frozen=True)
class HubStatus:
    """A point-in-time view of a hub: its own state, the upstream link, NATS, publishing and demand."""

    state: str
    """``idle``, ``starting``, ``running``, ``fenced`` (another hub took over), ``stopped`` or ``error``."""
    hub_id: str
    nats_url: str | None
    embedded_nats: bool
    upstream: Status | None
    """The upstream collector's status (the hub <-> CoinAPI link)."""
    scope: tuple[str, ...] | None
    requested: dict[str, float]
    """Items added because consumers asked, with the seconds since one last wanted them."""
    consumers: int
    """Consumers heard from within the last two interest periods."""
    published: int
    duplicates: int
    """Updates JetStream had already stored (a re-sent window, a hub restart)."""
    gaps_published: int
    backlog: int
    """Updates queued or in flight, not yet acknowledged."""
    dropped: int
    nats_connected: bool
    nats_reconnects: int
    last_error: str | None
    stream_seq: int | None = None
    """The stream sequence of the last update JetStream acknowledged."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        return self.upstream is not None and self.upstream.simulated

    @property
    def source(self) -> str:
        """``simulated``, ``live``, or ``unknown`` until the upstream first connected (the simulator says so then)."""
        up = self.upstream
        if up is not None and up.simulated:
            return "simulated"
        return "live" if up is not None and up.connections else "unknown"

    @property
    def rates_billed(self) -> int:
        """Rates the hub received from upstream: what CoinAPI bills, once for every consumer."""
        return 0 if self.upstream is None else self.upstream.rates

    def summary(self) -> str:
        """One line for a terminal or a log."""
        up = self.upstream
        parts = [f"hub {self.state}", "SIMULATED" if self.simulated else self.source,
                 f"upstream {up.state if up else 'n/a'}", f"{self.rates_billed:,} rates billed",
                 f"{self.published:,} published", f"{self.consumers} consumer{'s' if self.consumers != 1 else ''}",
                 f"backlog {self.backlog:,}", f"nats {'up' if self.nats_connected else 'DOWN'} ({self.nats_url})"]
        if up is not None and up.reconnects:
            parts.append(f"{up.reconnects} upstream reconnect{'s' if up.reconnects != 1 else ''}")
        if self.last_error:
            parts.append(f"error: {self.last_error}")
        return " | ".join(parts)
