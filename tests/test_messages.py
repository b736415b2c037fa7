"""Wire messages: the documented vectors round-trip, bad input raises a typed error naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coinrates_nb.batch import RateBatch
from coinrates_nb.exceptions import MessageError
from coinrates_nb.messages import (
    ErrorMessage,
    ExchangeRate,
    Heartbeat,
    Hello,
    Reconnect,
    Subscribe,
    Unknown,
    Unsubscribe,
    parse_client,
    parse_server,
    parse_server_batch,
)
from coinrates_nb.times import format_time, parse_time, parse_time_any, times_ns

VECTORS = {v["id"]: v for v in map(json.loads, (Path(__file__).parent / "data" / "vectors.jsonl").read_text().splitlines())}
V19 = '{  "type": "reconnect"  "within_seconds": 10,  "before_time": "2020-08-06T19:19:09.7035429Z",}'


def text(vid: str) -> str:
    return json.dumps(VECTORS[vid]["message"])


@pytest.mark.parametrize("vid", [v for v, d in VECTORS.items() if d["direction"] == "client_to_server" and v != "V08"])
def test_client_vectors_round_trip(vid: str) -> None:
    """Every documented client message parses and re-serialises to the same JSON object."""
    msg = parse_client(text(vid))
    assert json.loads(msg.to_json()) == VECTORS[vid]["message"]


def test_client_vector_types() -> None:
    """hello/subscribe/unsubscribe map to their classes with the documented fields."""
    assert isinstance(parse_client(text("V01")), Hello)
    assert isinstance(parse_client(text("V06")), Subscribe)
    assert isinstance(parse_client(text("V07")), Unsubscribe)
    v02 = parse_client(text("V02"))
    assert v02.assets == ("BTC/USD", "ETH/USD") and v02.update_limit_ms == 1000 and v02.heartbeat
    assert parse_client(text("V04")).assets is None


def test_invalid_client_type_rejected() -> None:
    """V08 (type "helo") raises a MessageError naming the type field."""
    with pytest.raises(MessageError) as info:
        parse_client(text("V08"))
    assert info.value.field == "type"


def test_client_apikey_hidden_from_repr() -> None:
    """A key carried in a hello body never shows in its repr."""
    msg = parse_client(text("V02"))
    assert "THIS-IS-SAMPLE-KEY" not in repr(msg)


@pytest.mark.parametrize("vid", ["V09", "V10", "V11", "V12", "V17"])
def test_server_vectors_round_trip(vid: str) -> None:
    """exrate and reconnect vectors re-serialise to the documented JSON exactly."""
    msg = parse_server(text(vid))
    assert json.loads(msg.to_json()) == VECTORS[vid]["message"]


def test_exrate_fields() -> None:
    """V09 parses to the documented values, time as UTC nanoseconds."""
    msg = parse_server(text("V09"))
    assert msg == ExchangeRate("BTC", "USD", "BASE_ALL_CROSSES_TO_REF", 1560266760_000_000_000, 10065.0319541)
    assert msg.pair == "BTC/USD"


def test_seventh_fraction_digit_kept() -> None:
    """V12's 7th fractional digit survives: 100 ns precision, which fromisoformat would drop."""
    msg = parse_server(text("V12"))
    assert isinstance(msg, ExchangeRate)
    assert msg.time_ns % 1_000_000_000 == 703_542_900


def test_both_heartbeat_spellings() -> None:
    """The documented "hearbeat" and the corrected "heartbeat" are both heartbeats."""
    assert parse_server(text("V13")) == Heartbeat("hearbeat")
    assert parse_server(text("V14")) == Heartbeat("heartbeat")


def test_error_messages() -> None:
    """Errors parse; the invalid key is an auth error, the overflow is not."""
    auth = parse_server(text("V15"))
    overflow = parse_server(text("V16"))
    assert isinstance(auth, ErrorMessage) and auth.is_auth and not auth.is_overflow
    assert isinstance(overflow, ErrorMessage) and overflow.is_overflow and not overflow.is_auth


def test_unknown_type_ignored() -> None:
    """An unknown type (V18) yields Unknown, not an error."""
    assert parse_server(text("V18")) == Unknown("asset")


def test_reconnect() -> None:
    """V17 gives within_seconds and the deadline in nanoseconds."""
    msg = parse_server(text("V17"))
    assert msg == Reconnect(10, parse_time("2020-08-06T19:19:09.7035429Z"))


def test_v19_is_rejected() -> None:
    """The reconnect example as printed in the docs is invalid JSON and must be rejected."""
    with pytest.raises(MessageError) as info:
        parse_server(V19)
    assert info.value.kind == "malformed_json"


BASE = {"type": "exrate", "asset_id_base": "BTC", "asset_id_quote": "USD", "rate_type": "BASE_ALL_CROSSES_TO_REF",
        "time": "2019-06-11T15:26:00.0000000Z", "rate": 10065.0}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rate": "10065"}, "rate"),
        ({"rate": -1.0}, "rate"),
        ({"rate": 0}, "rate"),
        ({"rate": 1e300}, "rate"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2019-02-30T00:00:00Z"}, "time"),
        ({"time": 12}, "time"),
        ({"asset_id_base": ""}, "asset_id_base"),
        ({"asset_id_quote": None}, "asset_id_quote"),
    ],
)
def test_bad_exrate_fields_named(change: dict[str, object], field: str) -> None:
    """Each bad exrate field raises a MessageError that names it."""
    with pytest.raises(MessageError) as info:
        parse_server(json.dumps({**BASE, **change}))
    assert info.value.field == field


@pytest.mark.parametrize("missing", ["asset_id_base", "asset_id_quote", "time", "rate"])
def test_missing_exrate_fields_named(missing: str) -> None:
    """A missing required field is named in the error."""
    body = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(MessageError) as info:
        parse_server(json.dumps(body))
    assert info.value.field == missing


def test_missing_rate_type_tolerated() -> None:
    """rate_type is absent from the SDK models; a frame without it is accepted as UNSPECIFIED."""
    body = {k: v for k, v in BASE.items() if k != "rate_type"}
    msg = parse_server(json.dumps(body))
    assert isinstance(msg, ExchangeRate) and msg.rate_type == "UNSPECIFIED"


def test_extra_fields_ignored() -> None:
    """Unknown fields in a known message are ignored (forward compatibility)."""
    msg = parse_server(json.dumps({**BASE, "venue": "x", "extra": [1, 2]}))
    assert isinstance(msg, ExchangeRate)


@pytest.mark.parametrize("bad", ["", "not json", "[1,2]", '"exrate"', "{}", '{"type": 5}', "NaN", b"\xff\xfe\x00"])
def test_malformed_frames(bad: str | bytes) -> None:
    """Malformed or shapeless frames raise MessageError, never another exception."""
    with pytest.raises(MessageError):
        parse_server(bad)


def test_nan_rate_rejected() -> None:
    """A NaN literal in the rate is not JSON; the frame is rejected."""
    with pytest.raises(MessageError):
        parse_server(json.dumps(BASE).replace("10065.0", "NaN"))


def test_error_payload_truncated() -> None:
    """A huge bad payload is truncated in the error text."""
    with pytest.raises(MessageError) as info:
        parse_server("{" + "x" * 100_000)
    assert len(str(info.value)) < 600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-06-11T15:26:00Z", 1560266760_000_000_000),
        ("2019-06-11T15:26:00.5Z", 1560266760_500_000_000),
        ("2019-06-11T15:26:00.123Z", 1560266760_123_000_000),
        ("2019-06-11T15:26:00.1234567Z", 1560266760_123_456_700),
        ("2019-06-11T15:26:00.123456789Z", 1560266760_123_456_789),
        ("2019-06-11T17:26:00.1234567+02:00", 1560266760_123_456_700),
        ("2019-06-11T10:26:00-0500", 1560266760_000_000_000),
        ("2019-06-11T15:26:00", 1560266760_000_000_000),
        ("2019-06-11T15:26", 1560266760_000_000_000),
    ],
)
def test_time_forms(text: str, expected: int) -> None:
    """0-9 fractional digits and zone offsets parse to exact UTC nanoseconds."""
    assert parse_time(text) == expected
    assert parse_time_any(text) == expected


@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**7).map(lambda t: t * 100))
def test_time_round_trip(ns: int) -> None:
    """format_time and parse_time are inverse at 100 ns resolution."""
    assert parse_time(format_time(ns)) == ns


@given(st.text(max_size=40))
def test_parse_time_total(garbage: str) -> None:
    """parse_time either returns an int or raises MessageError for any string."""
    try:
        assert isinstance(parse_time(garbage), int)
    except MessageError:
        pass


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_parse_server_total(data: str | bytes) -> None:
    """parse_server never raises anything but MessageError, whatever it is fed."""
    try:
        parse_server(data)
    except MessageError:
        pass


def test_bad_filter_items() -> None:
    """Filter entries must be asset ids or BASE/QUOTE pairs."""
    for bad in (["BTC/USD/EUR"], [""], ["/USD"], "BTC", [3]):
        with pytest.raises(MessageError) as info:
            Hello(assets=bad)  # type: ignore[arg-type]
        assert info.value.field == "subscribe_filter_asset_id"
    assert Hello(assets=("btc/usd", "BTC/USD", "eth")).assets == ("BTC/USD", "ETH")


# -- batches ---------------------------------------------------------------------------------------


def exrate_text(base: str = "BTC", quote: str = "USD", time: str = "2019-06-11T15:26:00.1234567Z",
                rate: object = 10065.0, **extra: object) -> str:
    return json.dumps({**BASE, "asset_id_base": base, "asset_id_quote": quote, "time": time, "rate": rate, **extra})


def one_by_one(frames: list[str | bytes]) -> list[object]:
    """What parse_server says of each frame: the message, or ("error", kind, field)."""
    out: list[object] = []
    for data in frames:
        if isinstance(data, bytes):
            out.append(("error", "binary_frame", None))
            continue
        try:
            out.append(parse_server(data))
        except MessageError as exc:
            out.append(("error", exc.kind, exc.field))
    return out


def batched(frames: list[str | bytes]) -> list[object]:
    """The same, from parse_server_batch, rows and events merged back into arrival order."""
    parsed = parse_server_batch(frames)
    rows = parsed.rates.updates()
    out: list[object] = []
    taken = 0
    for event in parsed.events:
        out += rows[taken:event.rows_before]
        taken = event.rows_before
        outcome = event.outcome
        out.append(("error", outcome.kind, outcome.field) if isinstance(outcome, MessageError) else outcome)
    return out + rows[taken:]


def test_batch_of_valid_updates_equals_parse_server() -> None:
    """A batch of exrate frames gives the same updates, as columns, as parsing each frame."""
    frames = [exrate_text(time=f"2019-06-11T15:26:{s:02d}.{f:07d}Z", rate=1.0 + s) for s in range(6) for f in (0, 5, 9999999)]
    parsed = parse_server_batch(frames)
    assert parsed.events == [] and len(frames) >= 16  # the vectorised path
    assert parsed.rates.updates() == one_by_one(frames)
    assert parsed.rates.pair == ["BTC/USD"] * len(frames)
    assert parsed.rates.time_ns.dtype == np.int64 and parsed.rates.rate.dtype == np.float64


def test_batch_mixed_frames_keep_order_kinds_and_fields() -> None:
    """Control messages, unknown types and every kind of bad frame come out in order, as parse_server says."""
    frames: list[str | bytes] = [
        exrate_text(),
        '{"type":"hearbeat"}',
        exrate_text(base=""),
        "{oops",
        b'{"type":"hearbeat"}',
        '{"type":"asset"}',
        exrate_text(rate=-1),
        exrate_text(time="2019-02-30T00:00:00.0000000Z"),
        exrate_text(time="2019-06-11 15:26:00.1234567Z"),  # valid, not the wire shape: the scalar parser decides
        exrate_text(time="2019-06-11T15:26:00Z"),
        exrate_text(time="2019-06-11T15:26:00.1234567+01:00"),
        exrate_text(time="0001-01-01T00:00:00.0000000Z"),  # outside int64 nanoseconds
        exrate_text(quote="U/SD"),
        '{"type":"reconnect","within_seconds":10,"before_time":"2020-08-06T19:19:09.7035429Z"}',
        '{"type":"exrate","asset_id_base":"BTC"}',
        exrate_text(rate=1e300),
        '{"type":"error","message":"Invalid API key"}',
        exrate_text(base="ETH"),
    ]
    assert batched(frames) == one_by_one(frames)
    assert len(parse_server_batch(frames).rates) == 5


def test_array_frames_are_rejected_like_any_non_object() -> None:
    """CoinAPI sends one JSON object per frame; an array frame is one rejected message, on either path."""
    array = "[" + ",".join([exrate_text(), exrate_text(base="ETH")]) + "]"
    for frames in ([array], [array] + [exrate_text(time=f"2019-06-11T15:26:{s:02d}.0000000Z") for s in range(20)]):
        parsed = parse_server_batch(frames)
        kinds = [e.outcome.kind for e in parsed.events if isinstance(e.outcome, MessageError)]
        assert kinds == ["not_object"] and len(parsed.rates) == len(frames) - 1


def test_batch_error_payload_names_the_frame() -> None:
    """A rejected row in a batch carries its own frame as payload, as parse_server does."""
    bad = exrate_text(rate=-5)
    parsed = parse_server_batch([exrate_text(), bad])
    (event,) = parsed.events
    assert event.frame == 1 and event.rows_before == 1
    assert isinstance(event.outcome, MessageError) and '"rate": -5' in event.outcome.payload


def test_rate_batch_take_head_updates_round_trip() -> None:
    """RateBatch.of / updates / take / head agree with the rows they hold."""
    rows = [ExchangeRate("BTC", "USD", "X", 10 + i, 1.0 + i) for i in range(4)]
    batch = RateBatch.of(rows)
    assert batch.updates() == rows and len(batch) == 4 and batch.pair[0] == "BTC/USD"
    assert batch.take(np.array([True, False, True, False])).updates() == rows[::2]
    assert batch.head(1).updates() == rows[:1] and len(RateBatch.empty()) == 0


wire_times = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, tail: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{tail}",
    st.integers(1, 2400), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
    st.integers(0, 61), st.one_of(st.just(".1234567"), st.text("0123456789", min_size=0, max_size=9).map(lambda f: "." + f),
                                  st.just(",1234567"), st.just(".12a4567")),
    st.sampled_from(["T", " ", "t"]), st.sampled_from(["Z", "", "+01:00", "z"]),
)


@given(st.lists(st.one_of(wire_times, st.text(max_size=30)), max_size=40))
def test_times_ns_agrees_with_parse_time(texts: list[str]) -> None:
    """Every row times_ns converts has parse_time's value; the rest are flagged for parse_time."""
    values, doubt = times_ns(texts)
    assert len(values) == len(doubt) == len(texts)
    for text_, value, flagged in zip(texts, values.tolist(), doubt.tolist(), strict=True):
        if not flagged:
            assert value == parse_time(text_)


def test_times_ns_converts_the_wire_shape() -> None:
    """CoinAPI's own shape is converted in bulk (nothing flagged), across second boundaries."""
    texts = [f"2026-01-01T00:00:{s:02d}.{f:07d}Z" for s in (58, 59) for f in (0, 1, 9999999)] + ["2026-01-01T00:01:00.0000000Z"]
    values, doubt = times_ns(texts)
    assert not doubt.any()
    assert values.tolist() == [parse_time(t) for t in texts]


@given(st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=60),
                          st.builds(exrate_text, time=wire_times, rate=st.floats(allow_nan=False))), max_size=40))
def test_parse_server_batch_total_and_equal(frames: list[str | bytes]) -> None:
    """Whatever the frames (few: one at a time; many: vectorised), a batch never raises and says what parse_server says of each."""
    assert batched(frames) == one_by_one(frames)
