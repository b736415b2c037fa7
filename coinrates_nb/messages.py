"""Pure wire messages of the Exchange Rates WebSocket API: shapes, parsing and serialisation.

Every message is a frozen dataclass with ``to_json()``; ``parse_server`` and ``parse_client``
turn text into them or raise :class:`~coinrates_nb.exceptions.MessageError` naming the field.
The simulator serialises with the same classes, so client and server cannot drift apart.
Facts cite ``../shared/protocol/exrates-websocket.md`` (section numbers as "§").
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from typing import Final, Literal, TypedDict, Union

import msgspec

from ._types import AssetId, FilterItem, Pair, TimeNs
from .exceptions import MessageError

__all__ = [
    "ClientMessage",
    "ErrorMessage",
    "ExchangeRate",
    "Heartbeat",
    "Hello",
    "Reconnect",
    "ServerMessage",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "format_time",
    "parse_client",
    "parse_server",
    "parse_time",
    "parse_time_any",
]

HEARTBEAT_TYPES: Final = frozenset({"hearbeat", "heartbeat"})
"""The docs spell the heartbeat ``hearbeat``; third-party code sees ``heartbeat``: accept both (§4.3)."""

UNSPECIFIED_RATE_TYPE: Final = "UNSPECIFIED"
"""Stored when an ``exrate`` omits ``rate_type`` (the C# and Go SDK models have no such field, §4.1)."""

MAX_RATE: Final = 1e15
"""Rates above this are rejected as corrupt: no real asset pair is quoted anywhere near it."""


# --------------------------------------------------------------------------- raw JSON shapes


class HelloWire(TypedDict, total=False):
    """JSON shape of ``hello`` / ``subscribe`` / ``unsubscribe`` (§3.2)."""

    type: str
    apikey: str
    heartbeat: bool
    subscribe_filter_asset_id: list[str]
    subscribe_update_limit_ms_exrate: int
    subscribe_data_type: list[str]


class ExrateWire(TypedDict):
    """JSON shape of an ``exrate`` update (§4.1)."""

    type: Literal["exrate"]
    asset_id_base: str
    asset_id_quote: str
    rate_type: str
    time: str
    rate: float


class ReconnectWire(TypedDict):
    """JSON shape of a ``reconnect`` notice (§4.2, corrected form)."""

    type: Literal["reconnect"]
    within_seconds: int
    before_time: str


# --------------------------------------------------------------------------- time

_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?"
)
_EPOCH_DAYS: dict[str, int] = {}
_EPOCH_ORDINAL: Final = _dt.date(1970, 1, 1).toordinal()
_NS_PER_S: Final = 1_000_000_000
_PAD = "000000000"


def _epoch_day(date_text: str) -> int:
    """Days since 1970-01-01 for ``YYYY-MM-DD``, cached: a stream sees few distinct dates."""
    day = _EPOCH_DAYS.get(date_text)
    if day is None:
        day = _dt.date.fromisoformat(date_text).toordinal() - _EPOCH_ORDINAL
        if len(_EPOCH_DAYS) > 4096:
            _EPOCH_DAYS.clear()
        _EPOCH_DAYS[date_text] = day
    return day


_SECONDS: dict[str, int] = {}


def parse_time(text: str, field_name: str = "time") -> TimeNs:
    """Parse an ISO-8601 time into UTC integer nanoseconds (fast path for CoinAPI's own form).

    The wire form ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (§7) is split into a cached whole-second
    prefix (a stream repeats it many times a second) and 7 digits of 100 ns; anything else
    goes through :func:`parse_time_any`.
    """
    if len(text) == 28 and text[27] == "Z" and text[19] == "." and isinstance(text, str):
        frac = text[20:27]
        if frac.isdigit() and frac.isascii():
            prefix = text[:19]
            whole = _SECONDS.get(prefix)
            if whole is None:
                whole = parse_time_any(prefix + "Z", field_name)
                if len(_SECONDS) > 4096:
                    _SECONDS.clear()
                _SECONDS[prefix] = whole
            return whole + int(frac) * 100
    return parse_time_any(text, field_name)


def parse_time_any(text: str, field_name: str = "time") -> TimeNs:
    """Parse an ISO-8601 time into UTC integer nanoseconds, keeping every fractional digit.

    CoinAPI sends 7 fractional digits and ``Z`` (§7); ``datetime.fromisoformat`` would drop the
    7th digit, so the arithmetic is done on integers. 0–9 digits and ``±HH:MM`` offsets are
    accepted; a missing zone means UTC (§7, "Without a zone, UTC is assumed").
    """
    match = _TIME_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise MessageError("not an ISO-8601 time", field=field_name, payload=str(text), kind="bad_time")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    try:
        days = _epoch_day(f"{year}-{month}-{day}")
    except ValueError as exc:
        raise MessageError("invalid calendar date", field=field_name, payload=text, kind="bad_time") from exc
    h, m, s = int(hour), int(minute), int(second or 0)
    if h > 23 or m > 59 or s > 60:
        raise MessageError("time of day out of range", field=field_name, payload=text, kind="bad_time")
    ns = ((days * 24 + h) * 60 + m) * 60 * _NS_PER_S + s * _NS_PER_S
    if frac:
        ns += int((frac + _PAD)[:9])
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset_min = int(digits[:2]) * 60 + int(digits[2:])
        ns -= sign * offset_min * 60 * _NS_PER_S
    return ns


def format_time(ns: TimeNs) -> str:
    """Format UTC nanoseconds the way CoinAPI does: ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (§7)."""
    seconds, rem = divmod(ns, _NS_PER_S)
    stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{rem // 100:07d}Z"


# --------------------------------------------------------------------------- client -> server


def _check_items(items: object, payload: str | bytes = "") -> tuple[FilterItem, ...]:
    """Validate and normalise ``subscribe_filter_asset_id``: non-empty ids or ``BASE/QUOTE`` pairs."""
    if isinstance(items, str) or not isinstance(items, (list, tuple, set, frozenset)):
        raise MessageError("expected a list of asset ids or pairs", field="subscribe_filter_asset_id", payload=payload)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise MessageError("filter entries must be non-empty strings", field="subscribe_filter_asset_id",
                               payload=payload or repr(items))
        norm = item.strip().upper()
        parts = norm.split("/")
        if len(parts) > 2 or not all(parts):
            raise MessageError(f"{item!r} is neither an asset id nor a BASE/QUOTE pair",
                               field="subscribe_filter_asset_id", payload=payload or repr(items))
        if norm not in out:
            out.append(norm)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class _ScopeMessage:
    """Common shape of the three client messages (§3.1, §3.2)."""

    assets: tuple[FilterItem, ...] | None = None
    """``subscribe_filter_asset_id``; ``None`` omits the field (an unfiltered stream on ``hello``)."""
    heartbeat: bool = True
    update_limit_ms: int | None = None
    """``subscribe_update_limit_ms_exrate``: minimum ms between two updates of one pair."""
    data_types: tuple[str, ...] | None = None
    """``subscribe_data_type``, used by the Market Data host; the exrates host ignores it (§3.2)."""
    apikey: str | None = field(default=None, repr=False)
    """A key in the body, as older servers and the SDKs send it (§2.2); never shown in a repr."""

    type: str = "hello"  # overridden per subclass

    def __post_init__(self) -> None:
        if self.assets is not None:
            object.__setattr__(self, "assets", _check_items(self.assets))
        if self.update_limit_ms is not None and (
            isinstance(self.update_limit_ms, bool) or not isinstance(self.update_limit_ms, int) or self.update_limit_ms < 0
        ):
            raise MessageError("must be a non-negative integer", field="subscribe_update_limit_ms_exrate",
                               payload=repr(self.update_limit_ms))

    def to_wire(self) -> HelloWire:
        """The JSON object, with only the fields that are set."""
        wire: HelloWire = {"type": self.type, "heartbeat": self.heartbeat}
        if self.apikey is not None:
            wire["apikey"] = self.apikey
        if self.data_types is not None:
            wire["subscribe_data_type"] = list(self.data_types)
        if self.assets is not None:
            wire["subscribe_filter_asset_id"] = list(self.assets)
        if self.update_limit_ms is not None:
            wire["subscribe_update_limit_ms_exrate"] = self.update_limit_ms
        return wire

    def to_json(self) -> str:
        """Serialise to the JSON text frame sent on the wire."""
        return msgspec.json.encode(self.to_wire()).decode()


@dataclass(frozen=True, slots=True)
class Hello(_ScopeMessage):
    """``hello``: start or replace the whole subscription scope (§3.1)."""

    type: str = "hello"


@dataclass(frozen=True, slots=True)
class Subscribe(_ScopeMessage):
    """``subscribe``: add filters to the current scope (§3.1)."""

    type: str = "subscribe"


@dataclass(frozen=True, slots=True)
class Unsubscribe(_ScopeMessage):
    """``unsubscribe``: remove filters from the current scope (§3.1)."""

    type: str = "unsubscribe"


ClientMessage = Union[Hello, Subscribe, Unsubscribe]
_CLIENT_TYPES: Final[dict[str, type[_ScopeMessage]]] = {"hello": Hello, "subscribe": Subscribe, "unsubscribe": Unsubscribe}
_JSON: Final = msgspec.json.Decoder()


def _decode_object(data: str | bytes) -> dict[str, object]:
    """Decode JSON text into a dict, mapping every failure to a ``MessageError``."""
    try:
        obj = _JSON.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MessageError(f"malformed JSON ({exc})", payload=data, kind="malformed_json") from exc
    if not isinstance(obj, dict):
        raise MessageError("expected a JSON object", payload=data, kind="not_object")
    if not isinstance(obj.get("type"), str):
        raise MessageError("missing or non-string type", field="type", payload=data, kind="bad_type")
    return obj


_BODY_KEY_RE: Final = re.compile(r'("apikey"\s*:\s*")(?:[^"\\]|\\.)*')


def parse_client(data: str | bytes) -> ClientMessage:
    """Parse a client frame (used by the simulator); unknown types raise (§3.1: the server errors).

    A frame may carry ``apikey`` (§2.2): the error's payload preview shows it as ``[secure]``.
    """
    try:
        return _parse_client(data)
    except MessageError as exc:
        if "apikey" not in exc.payload:
            raise
        shown = _BODY_KEY_RE.sub(r"\1[secure]", exc.payload)
        error = MessageError(exc.reason, field=exc.field, payload=shown, kind=exc.kind)
    raise error  # outside the except block, so no __context__ keeps the unredacted error alive


def _parse_client(data: str | bytes) -> ClientMessage:
    obj = _decode_object(data)
    cls = _CLIENT_TYPES.get(str(obj["type"]))
    if cls is None:
        raise MessageError(f"unknown message type {obj['type']!r}", field="type", payload=data, kind="bad_type")
    heartbeat = obj.get("heartbeat", False)
    if not isinstance(heartbeat, bool):
        raise MessageError("must be a boolean", field="heartbeat", payload=data)
    assets = obj.get("subscribe_filter_asset_id")
    limit = obj.get("subscribe_update_limit_ms_exrate")
    data_types = obj.get("subscribe_data_type")
    apikey = obj.get("apikey")
    if data_types is not None and not (isinstance(data_types, list) and all(isinstance(t, str) for t in data_types)):
        raise MessageError("must be a list of strings", field="subscribe_data_type", payload=data)
    if apikey is not None and not isinstance(apikey, str):
        raise MessageError("must be a string", field="apikey", payload="[secure]")
    try:
        return cls(  # type: ignore[return-value]
            assets=None if assets is None else _check_items(assets, data),
            heartbeat=heartbeat,
            update_limit_ms=limit,  # type: ignore[arg-type]
            data_types=None if data_types is None else tuple(data_types),
            apikey=apikey,
        )
    except MessageError as exc:
        raise MessageError(exc.reason, field=exc.field, payload=data, kind=exc.kind) from None


# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True, slots=True)
class ExchangeRate:
    """``exrate``: one rate update; ``time_ns`` keeps all 7 wire digits as UTC nanoseconds (§4.1)."""

    base: AssetId
    quote: AssetId
    rate_type: str
    time_ns: TimeNs
    rate: float

    type = "exrate"

    @property
    def pair(self) -> Pair:
        """The pair as ``BASE/QUOTE``."""
        return f"{self.base}/{self.quote}"

    def to_wire(self) -> ExrateWire:
        """The JSON object, exactly as the docs show it."""
        return {"type": "exrate", "asset_id_base": self.base, "asset_id_quote": self.quote,
                "rate_type": self.rate_type, "time": format_time(self.time_ns), "rate": self.rate}

    def to_json(self) -> str:
        """Serialise to a JSON text frame."""
        return msgspec.json.encode(self.to_wire()).decode()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Heartbeat sent after 1 s of silence when ``heartbeat: true``; ``spelling`` keeps the wire type (§4.3)."""

    spelling: str = "hearbeat"

    type = "heartbeat"

    def to_json(self) -> str:
        """Serialise with the documented spelling (or the one given)."""
        return f'{{"type":"{self.spelling}"}}'


@dataclass(frozen=True, slots=True)
class ErrorMessage:
    """``error``: the server closes the connection after it; all errors are permanent (§4.4)."""

    message: str

    type = "error"

    @property
    def is_auth(self) -> bool:
        """True when the error says the key is invalid (§2.3): such errors must not be retried."""
        text = self.message.lower()
        return "api key" in text or "apikey" in text or "unauthori" in text

    @property
    def is_overflow(self) -> bool:
        """True for the server-side buffer overflow of a slow consumer (§5)."""
        return "buffered messages" in self.message.lower()

    def to_json(self) -> str:
        """Serialise to a JSON text frame."""
        return msgspec.json.encode({"type": "error", "message": self.message}).decode()


@dataclass(frozen=True, slots=True)
class Reconnect:
    """``reconnect``: the server will close within ``within_seconds``; reconnect before ``before_time`` (§4.2)."""

    within_seconds: float
    before_time_ns: TimeNs

    type = "reconnect"

    def to_wire(self) -> ReconnectWire:
        """The JSON object in its corrected, valid form (§4.2)."""
        within = int(self.within_seconds) if float(self.within_seconds).is_integer() else self.within_seconds
        return {"type": "reconnect", "within_seconds": within,  # type: ignore[typeddict-item]
                "before_time": format_time(self.before_time_ns)}

    def to_json(self) -> str:
        """Serialise to a JSON text frame."""
        return msgspec.json.encode(self.to_wire()).decode()


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a type this client does not know; ignored and counted (§4.5)."""

    message_type: str

    type = "unknown"


ServerMessage = Union[ExchangeRate, Heartbeat, ErrorMessage, Reconnect, Unknown]


class _ExrateStruct(msgspec.Struct, tag_field="type", tag="exrate"):
    asset_id_base: str
    asset_id_quote: str
    time: str
    rate: float
    rate_type: str = UNSPECIFIED_RATE_TYPE


class _HearbeatStruct(msgspec.Struct, tag_field="type", tag="hearbeat"):
    pass


class _HeartbeatStruct(msgspec.Struct, tag_field="type", tag="heartbeat"):
    pass


class _ErrorStruct(msgspec.Struct, tag_field="type", tag="error"):
    message: str = ""


class _ReconnectStruct(msgspec.Struct, tag_field="type", tag="reconnect"):
    within_seconds: float
    before_time: str = ""


_ServerStruct = Union[_ExrateStruct, _HearbeatStruct, _HeartbeatStruct, _ErrorStruct, _ReconnectStruct]
_SERVER: Final = msgspec.json.Decoder(_ServerStruct)
_ERROR_FIELD_RE: Final = re.compile(r"at `\$\.([A-Za-z_]+)`")
_MISSING_FIELD_RE: Final = re.compile(r"missing required field `([A-Za-z_]+)`")
_HEARTBEAT_OF: Final = {"hearbeat": Heartbeat("hearbeat"), "heartbeat": Heartbeat("heartbeat")}


def _check_asset(value: str, name: str, data: str | bytes) -> None:
    if not value or "/" in value or len(value) > 32:
        raise MessageError("not an asset id", field=name, payload=data, kind=f"bad_{name}")


def exchange_rate(base: str, quote: str, rate_type: str, time_text: str, rate: float, data: str | bytes = "") -> ExchangeRate:
    """Validate decoded ``exrate`` fields into an :class:`ExchangeRate`; shared by every decoder path."""
    _check_asset(base, "asset_id_base", data)
    _check_asset(quote, "asset_id_quote", data)
    if not (0.0 < rate <= MAX_RATE) or math.isnan(rate):
        raise MessageError(f"rate must be positive and finite, got {rate!r}", field="rate", payload=data, kind="bad_rate")
    return ExchangeRate(base, quote, rate_type, parse_time(time_text), rate)


def parse_server(data: str | bytes) -> ServerMessage:
    """Parse one server frame; raise ``MessageError`` (naming the field) if it breaks the protocol.

    Unknown ``type`` values give :class:`Unknown` (§4.5); unknown extra fields are ignored.
    """
    try:
        msg = _SERVER.decode(data)
    except msgspec.ValidationError as exc:
        return _parse_slow(data, exc)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise MessageError(f"malformed JSON ({exc})", payload=data, kind="malformed_json") from exc
    if type(msg) is _ExrateStruct:
        return exchange_rate(msg.asset_id_base, msg.asset_id_quote, msg.rate_type, msg.time, msg.rate, data)
    if isinstance(msg, (_HearbeatStruct, _HeartbeatStruct)):
        return _HEARTBEAT_OF["hearbeat" if isinstance(msg, _HearbeatStruct) else "heartbeat"]
    if isinstance(msg, _ErrorStruct):
        return ErrorMessage(msg.message)
    assert isinstance(msg, _ReconnectStruct)
    if not (msg.within_seconds >= 0) or math.isinf(msg.within_seconds):
        raise MessageError("must be a non-negative number", field="within_seconds", payload=data)
    before = parse_time(msg.before_time, "before_time") if msg.before_time else 0
    return Reconnect(msg.within_seconds, before)


def _parse_slow(data: str | bytes, exc: msgspec.ValidationError) -> ServerMessage:
    """Explain a frame the typed decoder refused: an unknown type, or a named bad field."""
    obj = _decode_object(data)
    kind = str(obj["type"])
    if kind not in ("exrate", "error", "reconnect") and kind not in HEARTBEAT_TYPES:
        return Unknown(kind)
    text = str(exc)
    found = _ERROR_FIELD_RE.search(text) or _MISSING_FIELD_RE.search(text)
    name = found.group(1) if found else None
    raise MessageError(f"invalid {kind} message ({text})", field=name, payload=data,
                       kind=f"bad_{name}" if name else "bad_shape") from exc
