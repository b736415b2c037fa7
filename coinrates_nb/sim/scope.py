"""The server side of a subscription: what one connection asked for, and the pairs that streams.

Pure: :class:`ServerScope` is fed parsed client messages (hello/subscribe/unsubscribe,
``../shared/protocol/exrates-websocket.md`` §3), and :func:`routes_for` answers which pairs a
scope streams and how each is typed (§4.1). No sockets, clocks or randomness.

Choices where the protocol notes say UNCONFIRMED (§3.3):

* an asset id ``X`` selects ``X/USD`` (if ``X`` is known) plus every unfiltered pair with ``X`` as
  base or quote; a ``BASE/QUOTE`` item matches exactly; unknown assets select nothing, silently;
* the unfiltered stream (a hello without ``subscribe_filter_asset_id``) is every known asset vs
  USD, crypto and fiat alike, so it carries every pair a single-asset filter can select;
* only ``hello`` sets ``heartbeat``; ``subscribe`` may change the throttle; a first ``subscribe``
  acts as a ``hello`` (§3.1); unsubscribe removes exactly the listed items and cannot carve an
  asset out of an unfiltered stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from .._types import AssetId, FilterItem, Pair, split_pair
from ..messages import ClientMessage, Hello, Subscribe, Unsubscribe
from .prices import REFERENCE

__all__ = ["BASE_ALL_CROSSES_TO_REF", "BASE_AND_QUOTE_TO_REF", "Route", "ServerScope", "routes_for"]

BASE_ALL_CROSSES_TO_REF: Final = "BASE_ALL_CROSSES_TO_REF"
"""The rate type of a pair quoted in the reference asset (§4.1)."""

BASE_AND_QUOTE_TO_REF: Final = "BASE_AND_QUOTE_TO_REF"
"""The rate type of a subscribed pair with a non-USD quote, composed through USD (§4.1)."""


@dataclass
class ServerScope:
    """What one connection asked for: the server side of hello/subscribe/unsubscribe (§3.1).

    Pure: fed parsed client messages, it answers which pairs to stream (see :func:`routes_for`).
    """

    started: bool = False
    """True once a ``hello`` or ``subscribe`` opened the stream."""
    unfiltered: bool = False
    """True when a ``hello`` omitted ``subscribe_filter_asset_id``: stream every asset vs USD."""
    items: list[FilterItem] = field(default_factory=list)
    heartbeat: bool = False
    update_limit_ms: int | None = None

    def apply(self, msg: ClientMessage) -> None:
        """Apply one client message: ``hello`` replaces, ``subscribe`` adds, ``unsubscribe`` removes."""
        if isinstance(msg, Hello) or (isinstance(msg, Subscribe) and not self.started):
            # A first subscribe opens the stream like a hello (§3.1: "hello or subscribe").
            self.started = True
            self.unfiltered = msg.assets is None
            self.items = list(msg.assets or ())
            self.heartbeat = msg.heartbeat
            self.update_limit_ms = msg.update_limit_ms
        elif isinstance(msg, Subscribe):
            # UNCONFIRMED (§3.3): heartbeat inside subscribe is ignored; a throttle given is applied.
            self.items.extend(i for i in (msg.assets or ()) if i not in self.items)
            if msg.update_limit_ms is not None:
                self.update_limit_ms = msg.update_limit_ms
        elif isinstance(msg, Unsubscribe):
            # Exact item removal only (§3.3: overlap handling UNCONFIRMED).
            gone = set(msg.assets or ())
            self.items = [i for i in self.items if i not in gone]


@dataclass(frozen=True, slots=True)
class Route:
    """One pair a connection streams, with how its rate is typed (§4.1)."""

    pair: Pair
    base: AssetId
    quote: AssetId
    rate_type: str
    cross: bool
    """True for a non-USD quote: composed as ``BASE/USD * USD/QUOTE`` (``BASE_AND_QUOTE_TO_REF``)."""


def _route(base: AssetId, quote: AssetId) -> Route:
    cross = quote != REFERENCE
    return Route(f"{base}/{quote}", base, quote, BASE_AND_QUOTE_TO_REF if cross else BASE_ALL_CROSSES_TO_REF, cross)


def routes_for(scope: ServerScope, known: Iterable[AssetId], crypto: Iterable[AssetId] | None = None) -> tuple[Route, ...]:
    """The pairs a scope streams, in a stable order (``known``'s, then the items').

    The unfiltered stream is every known asset vs USD (crypto and fiat: a filter on ``EUR``
    selects ``EUR/USD``, so the whole stream must carry it too). An asset id ``X`` selects
    ``X/USD`` (if ``X`` is known) and every unfiltered pair with ``X`` as base or quote (so
    ``"USD"`` selects them all); a ``BASE/QUOTE`` item selects exactly that pair when both legs
    are known. Unknown assets select nothing: the server filters, it does not complain (§3.3).

    Args:
        scope: the connection's scope.
        known: every asset the price model quotes (``USD`` may be among them).
        crypto: no longer used: the unfiltered stream is ``known`` vs USD. Accepted so callers
            of the earlier three-argument form keep working.
    """
    del crypto
    if not scope.started:
        return ()
    known_list = list(dict.fromkeys(known))
    known_set = set(known_list)
    universe = [_route(a, REFERENCE) for a in known_list if a != REFERENCE]
    chosen: dict[Pair, Route] = {}
    if scope.unfiltered:
        chosen.update((r.pair, r) for r in universe)
    for item in scope.items:
        if "/" in item:
            base, quote = split_pair(item)
            if base in known_set and quote in known_set and base != quote:
                chosen.setdefault(item, _route(base, quote))
            continue
        for r in universe:  # X/USD is in the universe when X is known
            if item in (r.base, r.quote):
                chosen.setdefault(r.pair, r)
    return tuple(chosen.values())
