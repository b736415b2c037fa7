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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Final, Literal, TypedDict

import msgspec
import numpy as np
import numpy.typing as npt

from ._types import AssetId, FilterItem, Pair, TimeNs
from .exceptions import MessageError

__all__ = [
    "BatchEvent",
    "ClientMessage",
    "ErrorMessage",
    "ExchangeRate",
    "Heartbeat",
    "Hello",
    "RateBatch",
    "RateKey",
    "Reconnect",
    "ServerBatch",
    "ServerMessage",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "format_time",
    "parse_client",
    "parse_server",
    "parse_server_batch",
    "parse_time",
    "parse_time_any",
    "times_ns",
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
    stamp = _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)
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


ClientMessage = Hello | Subscribe | Unsubscribe
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


ServerMessage = ExchangeRate | Heartbeat | ErrorMessage | Reconnect | Unknown


# gc=False: these hold only str/float, so they cannot form cycles; untracked, a batch of a thousand
# decodes ~7% faster and triggers fewer collections.
class _ExrateStruct(msgspec.Struct, tag_field="type", tag="exrate", gc=False):
    asset_id_base: str
    asset_id_quote: str
    time: str
    rate: float
    rate_type: str = UNSPECIFIED_RATE_TYPE


class _HearbeatStruct(msgspec.Struct, tag_field="type", tag="hearbeat", gc=False):
    pass


class _HeartbeatStruct(msgspec.Struct, tag_field="type", tag="heartbeat", gc=False):
    pass


class _ErrorStruct(msgspec.Struct, tag_field="type", tag="error", gc=False):
    message: str = ""


class _ReconnectStruct(msgspec.Struct, tag_field="type", tag="reconnect", gc=False):
    within_seconds: float
    before_time: str = ""


_ServerStruct = _ExrateStruct | _HearbeatStruct | _HeartbeatStruct | _ErrorStruct | _ReconnectStruct
_SERVER: Final = msgspec.json.Decoder(_ServerStruct)
_ERROR_FIELD_RE: Final = re.compile(r"at `\$\.([A-Za-z_]+)`")
_MISSING_FIELD_RE: Final = re.compile(r"missing required field `([A-Za-z_]+)`")
_HEARTBEAT_OF: Final = {"hearbeat": Heartbeat("hearbeat"), "heartbeat": Heartbeat("heartbeat")}


_MIN_TIME_NS: Final = -(1 << 63)
_MAX_TIME_NS: Final = (1 << 63) - 1


def _is_asset(value: str) -> bool:
    return bool(value) and "/" not in value and len(value) <= 32


def _check_asset(value: str, name: str, data: str | bytes) -> None:
    if not _is_asset(value):
        raise MessageError("not an asset id", field=name, payload=data, kind=f"bad_{name}")


def exchange_rate(base: str, quote: str, rate_type: str, time_text: str, rate: float, data: str | bytes = "") -> ExchangeRate:
    """Validate decoded ``exrate`` fields into an :class:`ExchangeRate`; shared by every decoder path."""
    _check_asset(base, "asset_id_base", data)
    _check_asset(quote, "asset_id_quote", data)
    if not (0.0 < rate <= MAX_RATE) or math.isnan(rate):
        raise MessageError(f"rate must be positive and finite, got {rate!r}", field="rate", payload=data, kind="bad_rate")
    time_ns = parse_time(time_text)
    if not (_MIN_TIME_NS < time_ns <= _MAX_TIME_NS):
        # Rows are stored as int64 nanoseconds (datetime64[ns]): years 1677-2262 only.
        raise MessageError("time out of the nanosecond range (years 1677-2262)", field="time", payload=data,
                           kind="bad_time")
    return ExchangeRate(base, quote, rate_type, time_ns, rate)


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
    return _message(msg, data)


def _message(msg: _ServerStruct, data: str | bytes) -> ServerMessage:
    """Validate one decoded server struct into its message; ``data`` is the frame, for errors."""
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


# --------------------------------------------------------------------------- batches of server frames
#
# Receiving a frame with ``websockets`` costs a few µs; parsing each update into a dataclass and
# its time with a per-message ``parse_time`` costs about as much again. When frames queue up,
# the client parses them together instead: one typed msgspec decode per frame, the strings of
# each update factorised, every time string of the batch converted in one NumPy pass, validity
# checked with NumPy, and the updates kept as columns (``benchmarks/bench_parse.py``). Anything the
# vectorised checks cannot vouch for goes through the scalar functions above, so a batch gives
# exactly the messages, values and errors that parsing its frames one by one gives.

_FrameStruct = _ExrateStruct | _HearbeatStruct | _HeartbeatStruct | _ErrorStruct | _ReconnectStruct | list[_ServerStruct]
_FRAME: Final = msgspec.json.Decoder(_FrameStruct)
"""Decodes one frame: a server message, or a JSON array of them (a batching feed, not CoinAPI)."""

_ARRAY: Final = msgspec.json.Decoder(list[object])
_TIME_LEN: Final = 28
"""Length of ``YYYY-MM-DDTHH:MM:SS.fffffffZ``, the only shape the vectorised time path converts."""
_TIME_HEAD: Final = np.dtype([("head", "S19"), ("tail", "S9")])
"""A wire time as its whole-second prefix and the rest, to compare prefixes as fixed-width strings."""
_TIME_FRAC_NS: Final = np.array([10**8, 10**7, 10**6, 10**5, 10**4, 10**3, 10**2], np.int64)
"""Nanoseconds per unit of each of the 7 fractional digits."""


RateKey = tuple[AssetId, AssetId, str]
"""``(base, quote, rate_type)``: what a batch factorises its rows by."""


@dataclass(frozen=True, slots=True, eq=False)
class RateBatch:
    """``exrate`` updates in arrival order, as columns: the batch form of :class:`ExchangeRate`.

    Strings are factorised: row ``i`` is ``ExchangeRate(*keys[code[i]], time_ns[i], rate[i])``,
    where ``keys`` holds each distinct ``(base, quote, rate_type)`` once, so consumers map a
    handful of keys instead of a string per row. Produced by :func:`parse_server_batch`, so
    every row already passed the same checks as :func:`parse_server`. ``keys`` may hold keys no
    row uses (after :meth:`take`).
    """

    keys: list[RateKey]
    code: npt.NDArray[np.intp]
    time_ns: npt.NDArray[np.int64]
    rate: npt.NDArray[np.float64]

    @classmethod
    def empty(cls) -> RateBatch:
        """A batch with no rows."""
        return cls([], np.empty(0, np.intp), np.empty(0, np.int64), np.empty(0, np.float64))

    @classmethod
    def of(cls, updates: Sequence[ExchangeRate]) -> RateBatch:
        """Columns of ``updates`` (for tests, and to batch updates parsed one by one)."""
        keys, code = _factorize([(u.base, u.quote, u.rate_type) for u in updates])
        return cls(keys, code, np.fromiter((u.time_ns for u in updates), np.int64, len(updates)),
                   np.fromiter((u.rate for u in updates), np.float64, len(updates)))

    def __len__(self) -> int:
        return len(self.code)

    def take(self, keep: npt.NDArray[np.bool_]) -> RateBatch:
        """The rows where ``keep`` is true, in order."""
        return RateBatch(self.keys, self.code[keep], self.time_ns[keep], self.rate[keep])

    def head(self, n: int) -> RateBatch:
        """The first ``n`` rows."""
        return RateBatch(self.keys, self.code[:n], self.time_ns[:n], self.rate[:n])

    def pairs(self) -> tuple[list[Pair], npt.NDArray[np.intp]]:
        """Distinct ``BASE/QUOTE`` pairs of the keys (first-seen order), and each row's index in them."""
        names: dict[Pair, int] = {}
        of_key = [names.setdefault(f"{base}/{quote}", len(names)) for base, quote, _ in self.keys]
        if len(names) == len(self.keys):
            return list(names), self.code
        return list(names), np.asarray(of_key, np.intp)[self.code]

    def rate_types(self) -> tuple[list[str], npt.NDArray[np.intp]]:
        """Distinct rate types of the keys (first-seen order), and each row's index in them."""
        names: dict[str, int] = {}
        of_key = [names.setdefault(rate_type, len(names)) for _, _, rate_type in self.keys]
        if len(names) == len(self.keys):
            return list(names), self.code
        return list(names), np.asarray(of_key, np.intp)[self.code]

    @property
    def pair(self) -> list[Pair]:
        """``BASE/QUOTE`` of each row (a string per row: prefer :meth:`pairs`)."""
        names = [f"{base}/{quote}" for base, quote, _ in self.keys]
        return [names[c] for c in self.code.tolist()]

    @property
    def rate_type(self) -> list[str]:
        """``rate_type`` of each row (a string per row)."""
        return [self.keys[c][2] for c in self.code.tolist()]

    def updates(self) -> list[ExchangeRate]:
        """One :class:`ExchangeRate` per row (for per-update listeners; costs a dataclass per row)."""
        rows = zip(map(self.keys.__getitem__, self.code.tolist()), self.time_ns.tolist(), self.rate.tolist(), strict=True)
        return [ExchangeRate(base, quote, rate_type, t, r) for (base, quote, rate_type), t, r in rows]

    def __repr__(self) -> str:
        return f"<RateBatch {len(self):,} rows | {len(self.pairs()[0])} pairs>"


def _factorize(keys: Iterable[RateKey]) -> tuple[list[RateKey], npt.NDArray[np.intp]]:
    """Distinct keys in first-seen order, and each row's index in them: one dict lookup per row."""
    index: dict[RateKey, int] = {}
    codes = [index.setdefault(key, len(index)) for key in keys]
    return list(index), np.array(codes, np.intp)


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """Anything in a batch that is not a valid ``exrate``: a control message or a rejected frame."""

    frame: int
    """Index of the frame it came from, in the batch."""
    rows_before: int
    """Valid ``exrate`` rows of the batch that arrived before it."""
    outcome: Heartbeat | ErrorMessage | Reconnect | Unknown | MessageError


@dataclass(frozen=True, slots=True)
class ServerBatch:
    """The result of parsing several frames: the updates as columns, everything else in order."""

    rates: RateBatch
    events: list[BatchEvent]
    objects: int
    """Messages seen (one per frame, or one per element of an array frame), rejected ones included."""


def parse_server_batch(frames: Sequence[str | bytes]) -> ServerBatch:
    """Parse frames received together; the same messages and errors as :func:`parse_server` on each.

    A frame may also be a JSON array of server messages (a batching feed); each element counts
    as one message, and a frame that cannot be parsed is one rejected message. Binary frames
    are rejected (kind ``binary_frame``), as :meth:`ClientProtocol.receive` does.
    """
    if set(map(type, frames)) == {str}:
        try:
            decoded: list[Any] = [_FRAME.decode(data) for data in frames]
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            decoded = []
        kinds = set(map(type, decoded))
        if kinds == {_ExrateStruct}:  # the common case: one update per frame
            return _exrate_columns(decoded, frames, [])
        if kinds == {list}:  # a batching feed: arrays of updates
            rows = [row for array in decoded for row in array]
            if set(map(type, rows)) == {_ExrateStruct}:
                lengths = np.fromiter(map(len, decoded), np.intp, len(decoded))
                return _exrate_columns(rows, frames, [], np.repeat(np.arange(len(decoded)), lengths))
    rows = []
    row_frame: list[int] = []
    row_seq: list[int] = []
    events: list[tuple[int, int, Any]] = []  # (sequence number, frame index, outcome)
    seq = 0
    for index, data in enumerate(frames):
        for item in _frame_items(data):
            if type(item) is _ExrateStruct:
                rows.append(item)
                row_frame.append(index)
                row_seq.append(seq)
            else:
                events.append((seq, index, item))
            seq += 1
    return _exrate_columns(rows, frames, events, np.array(row_frame, np.intp), np.array(row_seq, np.intp))


def _frame_items(data: str | bytes) -> list[Any]:
    """The messages of one frame: ``_ExrateStruct`` rows (validated later), other messages, or errors."""
    if not isinstance(data, str):
        return [MessageError("binary frame: the API sends JSON text frames", payload=bytes(data), kind="binary_frame")]
    try:
        decoded = _FRAME.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        decoded = None
    if decoded is not None:
        structs: list[_ServerStruct] = decoded if isinstance(decoded, list) else [decoded]
        return [s if type(s) is _ExrateStruct else _outcome(s, data) for s in structs]
    if data.lstrip().startswith("["):
        try:
            elements = _ARRAY.decode(data)
        except msgspec.DecodeError as exc:
            return [MessageError(f"malformed JSON ({exc})", payload=data, kind="malformed_json")]
        out: list[Any] = []
        for element in elements:
            text = msgspec.json.encode(element).decode()
            try:
                struct = _SERVER.decode(text)
            except msgspec.ValidationError:
                out.append(_outcome(None, text))
                continue
            out.append(struct if type(struct) is _ExrateStruct else _outcome(struct, text))
        return out
    return [_outcome(None, data)]


def _outcome(struct: _ServerStruct | None, data: str) -> Any:
    """The non-row result of one message: a control message, ``Unknown``, or the ``MessageError``."""
    try:
        return parse_server(data) if struct is None else _message(struct, data)
    except MessageError as exc:
        return exc


def _exrate_columns(rows: list[_ExrateStruct], frames: Sequence[str | bytes], events: list[tuple[int, int, Any]],
                    row_frame: npt.NDArray[np.intp] | None = None,
                    row_seq: npt.NDArray[np.intp] | None = None) -> ServerBatch:
    """Validate ``rows`` as columns; rows the vectorised checks doubt are re-checked one by one.

    ``row_frame`` maps a row to its frame and ``row_seq`` to its place among all messages;
    ``None`` means row ``i`` is frame ``i`` (resp. message ``i``).
    """
    n = len(rows)
    objects = n + len(events)
    if row_seq is None:
        row_seq = np.arange(n)
    if n == 0:
        return ServerBatch(RateBatch.empty(), _order(events, row_seq), objects)
    index: dict[RateKey, int] = {}  # _factorize(), inlined: this comprehension is the hottest line per row
    code = np.array([index.setdefault((r.asset_id_base, r.asset_id_quote, r.rate_type), len(index)) for r in rows],
                    np.intp)
    keys = list(index)
    time_ns, doubt = times_ns([r.time for r in rows])
    rate = np.fromiter([r.rate for r in rows], np.float64, n)
    doubt |= ~((rate > 0.0) & (rate <= MAX_RATE))  # NaN fails both comparisons
    wrong = [i for i, (base, quote, _) in enumerate(keys) if not _is_asset(base) or not _is_asset(quote)]
    if wrong:
        doubt |= np.isin(code, wrong)
    if doubt.any():
        keep = np.ones(n, bool)
        for i in np.flatnonzero(doubt).tolist():
            r = rows[i]
            frame = i if row_frame is None else int(row_frame[i])
            try:
                time_ns[i] = exchange_rate(r.asset_id_base, r.asset_id_quote, r.rate_type, r.time, r.rate,
                                           frames[frame]).time_ns
            except MessageError as exc:
                keep[i] = False
                events.append((int(row_seq[i]), frame, exc))
        if not keep.all():
            code, time_ns, rate, row_seq = code[keep], time_ns[keep], rate[keep], row_seq[keep]
    return ServerBatch(RateBatch(keys, code, time_ns, rate), _order(events, row_seq), objects)


def _order(events: list[tuple[int, int, Any]], row_seq: npt.NDArray[np.intp]) -> list[BatchEvent]:
    """Events in arrival order, each knowing how many valid rows came before it."""
    if not events:
        return []
    events.sort(key=lambda e: e[0])
    before = np.searchsorted(row_seq, [e[0] for e in events]).tolist()
    return [BatchEvent(frame, rows, outcome) for (_, frame, outcome), rows in zip(events, before, strict=True)]


def times_ns(texts: Sequence[str]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Wire times to UTC nanoseconds in one pass; returns the values and a mask of rows not converted.

    Only CoinAPI's own shape ``YYYY-MM-DDTHH:MM:SS.fffffffZ`` (§7) is converted here, exactly as
    :func:`parse_time` does it: the 7 digits with NumPy, and the whole-second prefix once per
    run of rows that share it (a stream repeats it many times a second), through the same
    parser and cache. Every other row is flagged in the mask, with value 0, for
    :func:`parse_time` to decide. On this shape it is faster than a pyarrow cast of the strings
    (about 1.5x on a batch of 256, more on small batches), which must also be told the shape.
    """
    n = len(texts)
    values = np.zeros(n, np.int64)
    doubt = np.ones(n, bool)
    if n == 0:
        return values, doubt
    joined = "".join(texts)
    rows: npt.NDArray[np.intp] | None = None
    if len(joined) != _TIME_LEN * n or set(map(len, texts)) != {_TIME_LEN} or not joined.isascii():
        shaped = np.fromiter(map(len, texts), np.intp, n) == _TIME_LEN
        shaped &= np.fromiter(map(str.isascii, texts), bool, n)  # byte and character offsets must agree
        rows = np.flatnonzero(shaped)
        if len(rows) == 0:
            return values, doubt
        joined = "".join(compress(texts, shaped.tolist()))
    raw = joined.encode("ascii")
    chars = np.frombuffer(raw, np.uint8).reshape(-1, _TIME_LEN)
    # The prefix (bytes 0-18) is checked by parse_time_any once per run of equal prefixes; each
    # row's own tail must be ".", 7 digits, "Z".
    digits = chars[:, 20:27] - np.uint8(48)  # uint8: anything below "0" wraps above 9
    ok = (digits <= 9).all(axis=1) & (chars[:, 19] == 46) & (chars[:, 27] == 90)
    frac = digits.astype(np.int64) @ _TIME_FRAC_NS
    heads = np.frombuffer(raw, _TIME_HEAD)["head"]
    change = np.flatnonzero(heads[1:] != heads[:-1]) + 1
    firsts = [0, *change.tolist()]
    seconds = []
    for i in firsts:
        head = joined[i * _TIME_LEN:i * _TIME_LEN + 19]
        whole = _SECONDS.get(head)
        if whole is None:
            try:
                whole = parse_time_any(head + "Z")
            except MessageError:
                whole = None
            else:
                if len(_SECONDS) > 4096:
                    _SECONDS.clear()
                _SECONDS[head] = whole
        # Out of int64 range (or unparsable): exchange_rate explains the rejection.
        seconds.append(whole if whole is not None and _MIN_TIME_NS < whole <= _MAX_TIME_NS - _NS_PER_S else None)
    if len(firsts) == 1:
        if seconds[0] is None:
            return values, doubt
        converted = frac + np.int64(seconds[0])
    else:
        lengths = np.diff([*firsts, len(heads)])
        good = np.array([s is not None for s in seconds])
        ok &= np.repeat(good, lengths)
        converted = frac + np.repeat(np.array([s or 0 for s in seconds], np.int64), lengths)
    if rows is None:
        values = np.where(ok, converted, 0)
        return values, ~ok
    values[rows] = np.where(ok, converted, 0)
    doubt[rows] = ~ok
    return values, doubt
