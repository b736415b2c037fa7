"""The benchmark feed (benchmarks/feed.py): pre-built frames equal the library's own serialisation; the process serves a collector."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

import coinrates_nb as cr
from coinrates_nb.collector import each
from coinrates_nb.messages import ExchangeRate, parse_server
from tests.helpers import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from feed import DEFAULT_PAIRS, FeedProcess, build_payloads, encode_frames  # noqa: E402


def test_payloads_are_the_library_serialisation() -> None:
    """Each pre-built object is byte-identical to ExchangeRate.to_json() of what it parses to."""
    for payload in build_payloads(500):
        msg = parse_server(payload.decode())
        assert isinstance(msg, ExchangeRate)
        assert msg.to_json().encode() == payload


def test_payload_times_grow_per_pair_and_keep_7_digits() -> None:
    """Update i is for pairs[i % n], later than the one before it, with sub-microsecond digits."""
    msgs = [parse_server(p.decode()) for p in build_payloads(1000)]
    assert [m.pair for m in msgs[:5]] == list(DEFAULT_PAIRS)  # type: ignore[union-attr]
    times = [m.time_ns for m in msgs]  # type: ignore[union-attr]
    assert times == sorted(set(times)) and any(t % 1000 for t in times)


def test_payloads_are_one_recent_object_each() -> None:
    """Each frame is one exrate object (CoinAPI sends no arrays), stamped within the last few minutes."""
    frames = build_payloads(25)
    assert all(isinstance(json.loads(f), dict) for f in frames) and len(frames) == 25
    first = parse_server(frames[0].decode())
    assert abs(first.time_ns - time.time_ns()) < 5 * 60 * 10**9  # type: ignore[union-attr]


def test_encode_frames_headers_and_chunks() -> None:
    """Unmasked final text frames with 7-, 16- and 64-bit lengths; chunks hold whole frames."""
    payloads = [b"x" * 10, b"y" * 300, b"z" * 70_000]
    (blob,) = encode_frames(payloads, chunk_bytes=1 << 20)
    assert blob[:2] == bytes((0x81, 10)) and blob[12:16] == bytes((0x81, 126, 1, 44))
    assert blob[316:326] == bytes((0x81, 127)) + (70_000).to_bytes(8, "big")
    assert len(encode_frames(payloads * 10, chunk_bytes=1000)) > 1


def test_collector_stores_every_update() -> None:
    """A collector on the feed stores every update it sends."""
    with FeedProcess(frames=3000) as feed:
        rates = cr.stream(list(feed.pairs), url=feed.url, max_rows=10_000)
        try:
            wait_until(lambda: rates.frame.appended >= feed.updates, timeout=30, message="feed not fully stored")
            status = rates.status
            assert status.rates == feed.updates and status.duplicates == 0 and not status.rejected
            df = rates.df
            assert len(df) == feed.updates and set(df["pair"]) == set(feed.pairs)
            assert df.groupby("pair", observed=True).apply(lambda g: g.index.is_monotonic_increasing).all()
        finally:
            rates.stop()


def test_feed_refuses_a_bad_first_message_and_stops() -> None:
    """A first message that is not a hello gets an error and a close; stop() ends the process."""

    async def talk(url: str) -> tuple[list[str], int | None]:
        got: list[str] = []
        async with connect(url) as ws:
            await ws.send('{"type":"helo"}')
            with pytest.raises(ConnectionClosed):
                while True:
                    got.append(str(await ws.recv()))
            return got, ws.close_code

    feed = FeedProcess(frames=10).start()
    try:
        got, code = asyncio.run(talk(feed.url))
        assert len(got) == 1 and json.loads(got[0])["type"] == "error" and code == 1008
    finally:
        process = feed.process
        feed.stop()
    assert process is not None and process.poll() is not None


def test_listeners_see_every_update_when_batched() -> None:
    """Under load updates are stored in batches; a listener and a per-update adapter each see every update once."""
    with FeedProcess(frames=20_000) as feed:
        rates = cr.stream(list(feed.pairs), url=feed.url, max_rows=50_000, start=False)
        singles: list[ExchangeRate] = []
        batches: list[int] = []
        rates.add_listener(each(lambda msg, received: singles.append(msg)))
        rates.add_listener(lambda batch, received: batches.append(len(batch)))
        rates.start()
        try:
            wait_until(lambda: rates.frame.appended >= feed.updates, timeout=60, message="feed not fully stored")
            # listeners run just after the store, on the collector thread: wait for them too
            wait_until(lambda: len(singles) >= feed.updates and sum(batches) >= feed.updates, timeout=30,
                       message="listeners did not see every stored update")
            assert len(singles) == feed.updates and len({(m.pair, m.time_ns) for m in singles}) == feed.updates
            assert batches and max(batches) >= 64, "the feed never queued enough frames to batch"
            assert min(batches) >= 1 and len(batches) < feed.updates
            assert sum(batches) == feed.updates, "a batch listener must see every stored update"
            df = rates.df
            assert [(m.pair, m.time_ns, m.rate) for m in singles[-3:]] == [
                (p, t.value, r) for p, t, r in zip(df["pair"].iloc[-3:], df.index[-3:], df["rate"].iloc[-3:], strict=True)]
        finally:
            rates.stop()
