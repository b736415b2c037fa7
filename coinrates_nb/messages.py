"""Pure wire messages of the Exchange Rates WebSocket API: shapes, parsing and serialisation.

Every message is a frozen dataclass with ``to_json()``; ``parse_server`` and ``parse_client``
turn text into them or raise :class:`~coinrates_nb.exceptions.MessageError` naming the field.
The simulator serialises with the same classes, so client and server cannot drift apart.
Facts cite ``../shared/protocol/exrates-websocket.md`` (section numbers as "§").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypedDict

import msgspec
import numpy as np
import numpy.typing as npt

from ._types import AssetId, FilterItem, Pair, TimeNs
from .batch import RateBatch, RateKey
from .exceptions import MessageError
from .times import MAX_TIME_NS, MIN_TIME_NS, format_time, parse_time, times_ns

__all__ = [
    "BatchEvent",
    "ClientMessage",
    "ErrorMessage",
    "ExchangeRate",
    "Heartbeat",
    "Hello",
    "Reconnect",
    "ServerBatch",
    "ServerMessage",
    "Subscribe",
    "Unknown",
    "Unsubscribe",
    "parse_client",
    "parse_server",
    "parse_server_batch",
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


# --------------------------------------------------------------------------- client -> server


def _check_items(items: object, payload: str | bytes = "") -> tuple[FilterItem, ...]:
    """Validate and normalise ``subscribe_filter_asset_id``: non-empty ids or ``BASE/QUOTE`` pairs."""
    if isinstance(items, str) or not isinstance(items, (list, tuple, set, frozenset)):
        raise MessageError("expected a list of asset ids or pairs", field="subscribe_filter_asset_id", payload=payload)
    out: dict[str, None] = {}  # ordered set: O(1) membership for scopes of thousands of pairs
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise MessageError("filter entries must be non-empty strings", field="subscribe_filter_asset_id",
                               payload=payload or repr(items))
        norm = item.strip().upper()
        parts = norm.split("/")
        if len(parts) > 2 or not all(parts):
            raise MessageError(f"{item!r} is neither an asset id nor a BASE/QUOTE pair",
                               field="subscribe_filter_asset_id", payload=payload or repr(items))
        out.setdefault(norm)
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




def _is_asset(value: str) -> bool:
    return bool(value) and "/" not in value and len(value) <= 32


def _check_asset(value: str, name: str, data: str | bytes) -> None:
    if not _is_asset(value):
        raise MessageError("not an asset id", field=name, payload=data, kind=f"bad_{name}")


def exchange_rate(base: str, quote: str, rate_type: str, time_text: str, rate: float, data: str | bytes = "") -> ExchangeRate:
    """Validate decoded ``exrate`` fields into an :class:`ExchangeRate`; shared by every decoder path."""
    _check_asset(base, "asset_id_base", data)
    _check_asset(quote, "asset_id_quote", data)
    if not 0.0 < rate <= MAX_RATE:  # NaN fails it too
        raise MessageError(f"rate must be positive and finite, got {rate!r}", field="rate", payload=data, kind="bad_rate")
    time_ns = parse_time(time_text)
    if not (MIN_TIME_NS < time_ns <= MAX_TIME_NS):
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
# its time with a per-message ``parse_time`` costs about as much again. The client parses every
# read as a batch (one frame alone is a batch of one): one typed msgspec decode per frame, the
# strings of each update factorised, every time string of the batch converted in one NumPy pass,
# validity checked with NumPy, and the updates kept as columns (``benchmarks/bench_parse.py``).
# A few frames are parsed one at a time instead, where a dozen NumPy calls would cost more than
# they save. Anything the vectorised checks cannot vouch for goes through the scalar functions
# above, so a batch gives exactly the messages, values and errors of its frames one by one.

_VECTOR_MIN: Final = 16
"""Frames from which a batch is parsed with the vectorised path (below, one at a time is cheaper)."""


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
    """The result of parsing frames received together: the updates as columns, everything else in order."""

    rates: RateBatch
    events: list[BatchEvent]


def parse_server_batch(frames: Sequence[str | bytes]) -> ServerBatch:
    """Parse frames received together (one frame is a batch of one): what :func:`parse_server` gives on each.

    Valid ``exrate`` updates come back as columns; control messages and rejected frames
    (a ``MessageError`` each, binary frames as kind ``binary_frame``) as events in order.
    """
    if len(frames) < _VECTOR_MIN:
        return _parse_few(frames)
    if set(map(type, frames)) == {str}:
        try:
            decoded: list[Any] = [_SERVER.decode(data) for data in frames]
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            decoded = []
        if set(map(type, decoded)) == {_ExrateStruct}:  # the common case: updates only
            return _exrate_columns(decoded, frames, [])
    rows: list[_ExrateStruct] = []
    row_frame: list[int] = []
    events: list[tuple[int, Any]] = []  # (frame index, outcome)
    for index, data in enumerate(frames):
        item = _frame_item(data)
        if type(item) is _ExrateStruct:
            rows.append(item)
            row_frame.append(index)
        else:
            events.append((index, item))
    return _exrate_columns(rows, frames, events, np.array(row_frame, np.intp))


def _parse_few(frames: Sequence[str | bytes]) -> ServerBatch:
    """:func:`parse_server_batch` for a few frames: each through :func:`parse_server`, rows gathered as columns."""
    index: dict[RateKey, int] = {}
    codes: list[int] = []
    times: list[int] = []
    values: list[float] = []
    events: list[BatchEvent] = []
    for position, data in enumerate(frames):
        try:
            if not isinstance(data, str):
                raise MessageError("binary frame: the API sends JSON text frames", payload=bytes(data),
                                   kind="binary_frame")
            msg = parse_server(data)
        except MessageError as exc:
            events.append(BatchEvent(position, len(codes), exc))
            continue
        if isinstance(msg, ExchangeRate):
            codes.append(index.setdefault((msg.base, msg.quote, msg.rate_type), len(index)))
            times.append(msg.time_ns)
            values.append(msg.rate)
        else:
            events.append(BatchEvent(position, len(codes), msg))
    if not codes:
        return ServerBatch(_EMPTY, events)
    return ServerBatch(RateBatch(list(index), np.array(codes, np.intp), np.array(times, np.int64),
                                 np.array(values, np.float64)), events)


_EMPTY: Final = RateBatch.empty()


def _frame_item(data: str | bytes) -> Any:
    """The message of one frame: an ``_ExrateStruct`` row (validated later), another message, or the error."""
    if not isinstance(data, str):
        return MessageError("binary frame: the API sends JSON text frames", payload=bytes(data), kind="binary_frame")
    try:
        struct = _SERVER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return _outcome(None, data)
    return struct if type(struct) is _ExrateStruct else _outcome(struct, data)


def _outcome(struct: _ServerStruct | None, data: str) -> Any:
    """The non-row result of one message: a control message, ``Unknown``, or the ``MessageError``."""
    try:
        return parse_server(data) if struct is None else _message(struct, data)
    except MessageError as exc:
        return exc


def _exrate_columns(rows: list[_ExrateStruct], frames: Sequence[str | bytes], events: list[tuple[int, Any]],
                    row_frame: npt.NDArray[np.intp] | None = None) -> ServerBatch:
    """Validate ``rows`` as columns; rows the vectorised checks doubt are re-checked one by one.

    ``row_frame`` maps a row to its frame; ``None`` means row ``i`` is frame ``i``.
    """
    n = len(rows)
    if row_frame is None:
        row_frame = np.arange(n)
    if n == 0:
        return ServerBatch(RateBatch.empty(), _order(events, row_frame))
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
            frame = int(row_frame[i])
            try:
                time_ns[i] = exchange_rate(r.asset_id_base, r.asset_id_quote, r.rate_type, r.time, r.rate,
                                           frames[frame]).time_ns
            except MessageError as exc:
                keep[i] = False
                events.append((frame, exc))
        if not keep.all():
            code, time_ns, rate, row_frame = code[keep], time_ns[keep], rate[keep], row_frame[keep]
    return ServerBatch(RateBatch(keys, code, time_ns, rate), _order(events, row_frame))


def _order(events: list[tuple[int, Any]], row_frame: npt.NDArray[np.intp]) -> list[BatchEvent]:
    """Events in arrival order, each knowing how many valid rows came before it."""
    if not events:
        return []
    events.sort(key=lambda e: e[0])
    before = np.searchsorted(row_frame, [e[0] for e in events]).tolist()
    return [BatchEvent(frame, rows, outcome) for (frame, outcome), rows in zip(events, before, strict=True)]
