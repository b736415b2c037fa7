"""Pure: how the hub lays updates out on NATS (subjects, stream, headers, message ids, control messages).

The hub and its consumers share this one definition, as the client and the simulator share
:mod:`coinrates_nb.messages`. No I/O here: everything is tested by feeding values.

Layout, for the default prefix ``coinrates``:

* ``coinrates.rates.<BASE>.<QUOTE>``: one subject per pair (NATS subjects cannot hold ``/``);
  the payload is the CoinAPI wire JSON of one update (``ExchangeRate.to_json()``), so a consumer
  feeds it to the same ``ClientProtocol.receive`` as a WebSocket frame.
* ``coinrates.events.gap``: an upstream gap (the hub lost CoinAPI, or stopped), in the stream at
  the place it happened, so a consumer marks its gaps exactly where the hub's are;
  ``coinrates.events.upstream``: before the first update of each upstream connection, whether
  it is simulated, so a consumer labels the data before it stores any.
* stream ``COINRATES`` holds both, bounded by age (``retention``) and bytes.
* ``coinrates.hub.want``: request/reply, a consumer asking the hub to carry pairs.
* KV bucket ``COINRATES_HUB``: key ``leader`` (who publishes) and ``health`` (the upstream link).

Asset ids may hold characters a subject token cannot (``.``, ``*``, ``>``, spaces: CoinAPI's
wire allows anything but ``/``): such characters are escaped as ``~XX`` (hex of each UTF-8 byte),
so the mapping is reversible and ``BTC`` stays ``BTC``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import msgspec

from .._types import AssetId, FilterItem

__all__ = [
    "HEADER_HUB_RECEIVED",
    "HEADER_MSG_ID",
    "HEADER_ORIGIN",
    "MAX_FILTER_SUBJECTS",
    "AckInfo",
    "GapEvent",
    "HealthWire",
    "UpstreamEvent",
    "Layout",
    "WantReply",
    "WantRequest",
    "decode",
    "encode",
    "matcher",
    "msg_id",
    "parse_ack",
    "token",
    "untoken",
]

DEFAULT_PREFIX: Final = "coinrates"

HEADER_MSG_ID: Final = "Nats-Msg-Id"
"""JetStream drops a message whose id it stored within the stream's duplicate window."""

HEADER_HUB_RECEIVED: Final = "Coinrates-Hub-Received"
"""When the hub received the update from CoinAPI (UTC ns): for the hub-to-consumer latency."""

HEADER_ORIGIN: Final = "Coinrates-Origin"
"""Set on rows that are not from the live stream (``history``, ``healed``): ``batch.ORIGINS`` names."""

MAX_FILTER_SUBJECTS: Final = 256
"""Beyond this many pairs a consumer takes the whole rates subject and filters client side."""

_SAFE: Final = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_ESCAPE: Final = re.compile(r"~([0-9A-F]{2})")
_PREFIX_RE: Final = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def token(asset: AssetId) -> str:
    """``asset`` as one subject token: unchanged if it is ``[A-Za-z0-9_-]+``, else ``~XX``-escaped."""
    if _SAFE.fullmatch(asset):
        return asset
    out = []
    for char in asset:
        if _SAFE.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode())
    return "".join(out)


def untoken(text: str) -> AssetId:
    """The asset id a subject token stands for (the inverse of :func:`token`)."""
    if "~" not in text:
        return text
    raw = bytearray()
    pos = 0
    for found in _TOKEN_ESCAPE.finditer(text):
        raw += text[pos:found.start()].encode()
        raw.append(int(found.group(1), 16))
        pos = found.end()
    raw += text[pos:].encode()
    return raw.decode(errors="replace")


def msg_id(base: AssetId, quote: AssetId, time_ns: int) -> str:
    """The ``Nats-Msg-Id`` of one update: pair and wire time, which the protocol's dedupe already makes unique."""
    return f"{base}/{quote}@{time_ns}"


@dataclass(frozen=True, slots=True)
class Layout:
    """Subject, stream and bucket names under one prefix (one hub per prefix on a NATS system)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not _PREFIX_RE.fullmatch(self.prefix):
            from ..exceptions import ConfigError

            raise ConfigError(f"hub prefix must be lower-case subject tokens like 'coinrates' or 'desk.fx', "
                              f"not {self.prefix!r}")

    @property
    def rates(self) -> str:
        """Subjects of the updates: ``<prefix>.rates.<BASE>.<QUOTE>``."""
        return f"{self.prefix}.rates"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def gap(self) -> str:
        """Subject of an upstream gap marker."""
        return f"{self.events}.gap"

    @property
    def upstream(self) -> str:
        """Subject of an upstream (re)connect marker: says ``source`` before the first update of each connection."""
        return f"{self.events}.upstream"

    @property
    def want(self) -> str:
        """Request subject: a consumer asks the hub to carry filter items."""
        return f"{self.prefix}.hub.want"

    @property
    def stream(self) -> str:
        """The JetStream stream holding rates and events."""
        return self.prefix.upper().replace(".", "_").replace("-", "_")

    @property
    def bucket(self) -> str:
        """The KV bucket holding ``leader`` and ``health``."""
        return f"{self.stream}_HUB"

    @property
    def stream_subjects(self) -> list[str]:
        return [f"{self.rates}.>", f"{self.events}.>"]

    def subject(self, base: AssetId, quote: AssetId) -> str:
        """The subject of pair ``base/quote``."""
        return f"{self.rates}.{token(base)}.{token(quote)}"

    def pair_of(self, subject: str) -> tuple[AssetId, AssetId] | None:
        """``(base, quote)`` of a rates subject, or ``None`` for any other subject."""
        head = self.rates + "."
        if not subject.startswith(head):
            return None
        base, sep, quote = subject[len(head):].partition(".")
        if not sep or not base or not quote or "." in quote:
            return None
        return untoken(base), untoken(quote)

    def filter_subjects(self, items: tuple[FilterItem, ...] | None, *, events: bool = True) -> tuple[list[str], bool]:
        """JetStream filter subjects for a scope, and whether the client must filter further.

        Pairs map to their subjects exactly. An asset id matches both ``<id>.*`` and ``*.<id>``,
        and JetStream refuses overlapping filters, so a scope with an asset id (or the whole
        stream, ``None``) takes every rates subject and filters on the client (:func:`matcher`).
        """
        extra = [f"{self.events}.>"] if events else []
        if items is not None and all("/" in item for item in items) and len(items) <= MAX_FILTER_SUBJECTS:
            subjects = sorted({self.subject(*item.split("/", 1)) for item in items})
            return subjects + extra, False
        return [f"{self.rates}.>", *extra], items is not None


def matcher(items: tuple[FilterItem, ...] | None) -> Callable[[AssetId, AssetId], bool]:
    """A test of ``(base, quote)`` against a scope: the pair, either of its assets, or everything (``None``)."""
    if items is None:
        return lambda base, quote: True
    pairs = {item for item in items if "/" in item}
    assets = {item for item in items if "/" not in item}

    def match(base: AssetId, quote: AssetId) -> bool:
        return f"{base}/{quote}" in pairs or base in assets or quote in assets

    return match


@dataclass(frozen=True, slots=True)
class AckInfo:
    """What a JetStream delivery's reply subject says about the message."""

    stream_seq: int
    consumer_seq: int
    pending: int
    """Messages left for this consumer after this one: the backlog."""
    timestamp_ns: int
    """When the stream stored it (UTC ns)."""


def parse_ack(reply: str) -> AckInfo | None:
    """Parse a ``$JS.ACK.…`` reply subject (v1: 9 tokens; v2 with domain and account hash: 12), else ``None``.

    ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>`` (v1), or
    ``$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>.<token>`` (v2).
    """
    if not reply.startswith("$JS.ACK."):
        return None
    tokens = reply.split(".")
    if len(tokens) == 9:
        at = 5
    elif len(tokens) >= 11:
        at = 7
    else:
        return None
    try:
        return AckInfo(int(tokens[at]), int(tokens[at + 1]), int(tokens[at + 3]), int(tokens[at + 2]))
    except ValueError:
        return None


# ---------------------------------------------------------------------------- control messages (JSON)


class GapEvent(TypedDict):
    """An upstream gap marker: ``reason`` is ``"disconnect"`` (CoinAPI link lost) or ``"hub stopped"``."""

    type: str
    hub: str
    at_ns: int
    reason: str


class UpstreamEvent(TypedDict):
    """An upstream (re)connect marker: the data after it comes from ``source`` (``simulated`` or ``live``)."""

    type: str
    hub: str
    at_ns: int
    source: str
    connections: int


class WantRequest(TypedDict):
    """A consumer's request: carry these filter items (``None``: the whole stream)."""

    consumer: str
    items: list[str] | None


class WantReply(TypedDict, total=False):
    """The hub's answer: ``ok``, what it carries now, what it added for this request, or an ``error``."""

    ok: bool
    carried: list[str] | None
    added: list[str]
    error: str


class HealthWire(TypedDict, total=False):
    """The hub's health (KV key ``health``): the hub <-> CoinAPI link, as consumers show it."""

    hub: str
    host: str
    pid: int
    state: str
    """The upstream collector's state (``connected``, ``reconnecting``, ...) or ``stopped``/``fenced``."""
    source: str
    """``simulated``, ``live``, or ``unknown`` (the upstream has not connected yet: the simulator says so then)."""
    url: str | None
    scope: list[str] | None
    connections: int
    reconnects: int
    lag_ms: float | None
    last_error: str | None
    rates_billed: int
    """Rates the hub received from CoinAPI: what CoinAPI bills, once for every consumer."""
    published: int
    backlog: int
    interest_s: float
    """How often consumers should repeat what they want, so the hub keeps carrying it."""
    updated_ns: int
    since_ns: int


def encode(value: Any) -> bytes:
    """JSON bytes of a control message."""
    return msgspec.json.encode(value)


def decode(data: bytes) -> Any:
    """A control message from JSON bytes (``MessageError`` if it is not JSON)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        from ..exceptions import MessageError

        raise MessageError(f"not JSON: {exc}", payload=data, kind="hub_message") from None


def unique(items: Iterable[str]) -> list[str]:
    """``items`` without repeats, in first-seen order."""
    return list(dict.fromkeys(items))
