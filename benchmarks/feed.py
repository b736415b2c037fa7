"""A fast, minimal exrate feed for benchmarks: pre-built frames, written as fast as the socket takes them.

The protocol-faithful :mod:`~coinrates_nb.sim` calls ``send()`` per update from a price
model; a Python server like that tops out near 200k frames/s, and one in the client's process
drags the client down through the GIL (``../shared/NOTES.md``, "pandas, parsing, transport").
This feed removes the server from the measurement:

* it runs in **its own process** (``python benchmarks/feed.py`` or :class:`FeedProcess`);
* every WebSocket frame is **built before the port is printed**, header included, and joined
  into ~256 kB chunks, so serving is one ``write`` + ``drain`` per chunk;
* the handshake, the client's ``hello`` and control frames (ping, close) go through the
  ``websockets`` Sans-I/O :class:`~websockets.server.ServerProtocol`, so the stream is a
  conformant RFC 6455 connection without compression.

Protocol subset (``../shared/protocol/exrates-websocket.md``, "§"): the first text frame must be
a ``hello`` (parsed with :func:`~coinrates_nb.messages.parse_client`; anything else is answered
with ``error`` and a close, §4.4). Then every pre-built ``exrate`` frame is sent, then a
``{"type":"hearbeat"}`` after each second of silence if the hello asked for heartbeats (§4.3),
until the client closes. The subscription scope is not applied: the feed streams its own
``pairs`` whatever the filter says, so benchmarks subscribe to exactly those pairs.

One ``exrate`` object per frame, as CoinAPI sends them; times start a minute before the feed
builds its frames, so the client's time sanity check (``protocol.MAX_AHEAD_NS``) accepts them.

Usage::

    python benchmarks/feed.py --port 0 --frames 300000   # prints the port, then serves

    with FeedProcess(frames=300_000) as feed:                        # from Python (benchmarks)
        cr.stream(feed.pairs, url=feed.url)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from coinrates_nb._types import Pair, TimeNs, split_pair
from coinrates_nb.exceptions import MessageError
from coinrates_nb.messages import ErrorMessage, Heartbeat, Hello, parse_client

__all__ = ["DEFAULT_PAIRS", "FeedProcess", "build_payloads", "encode_frames", "main", "serve"]

logger = logging.getLogger("feed")

DEFAULT_PAIRS: Final[tuple[Pair, ...]] = ("BTC/USD", "ETH/USD", "SOL/USD", "BTC/EUR", "ETH/BTC")
"""Pairs the feed streams unless told otherwise (one with a non-USD quote, one crypto quote)."""

def recent_start_ns() -> TimeNs:
    """A start time one minute ago, on the wire's 100 ns grid: the default first update time."""
    return (time.time_ns() - 60 * 1_000_000_000) // 100 * 100


STEP_NS: Final = 1_300
"""Nanoseconds between consecutive updates: a multiple of 100 ns, so all 7 wire digits vary."""

CHUNK_BYTES: Final = 256 * 1024
"""Pre-built frames are joined into writes of about this size."""

_PRICES: Final = {"BTC": 95_000.0, "ETH": 3_400.0, "SOL": 190.0, "XRP": 2.2, "ADA": 0.9, "USD": 1.0, "EUR": 1.08,
                  "USDT": 1.0, "USDC": 1.0}


def _rate_type(quote: str) -> str:
    # §4.1: BASE_AND_QUOTE_TO_REF for a quote that is not the reference asset, as the simulator does.
    return "BASE_ALL_CROSSES_TO_REF" if quote == "USD" else "BASE_AND_QUOTE_TO_REF"


def build_payloads(objects: int, pairs: Sequence[Pair] = DEFAULT_PAIRS, seed: int = 0,
                   start_ns: TimeNs | None = None, step_ns: int = STEP_NS) -> list[bytes]:
    """Build the JSON text of ``objects`` frames, one update each, vectorised.

    Update ``i`` is for ``pairs[i % len(pairs)]`` at ``start_ns + i * step_ns``, so times grow
    strictly per pair and the client's dedupe keeps every update. Rates follow a seeded random
    walk. Each object is byte-identical to ``ExchangeRate.to_json()`` for the same values (times
    have the wire's 7 digits and ``Z``; floats are encoded by msgspec, as the library does).
    ``start_ns`` defaults to :func:`recent_start_ns`.
    """
    if objects < 1 or not pairs:
        raise ValueError("objects must be positive and pairs non-empty")
    if start_ns is None:
        start_ns = recent_start_ns()
    if step_ns % 100:
        raise ValueError("step_ns must be a multiple of 100 ns: the wire has 7 fractional digits")
    rng = np.random.default_rng(seed)
    n_pairs = len(pairs)
    index = np.arange(objects)
    times = (np.int64(start_ns) + index.astype(np.int64) * np.int64(step_ns)).view("datetime64[ns]")
    stamps = np.datetime_as_string(times, unit="ns").tolist()  # 'YYYY-MM-DDTHH:MM:SS.fffffffff'
    walk = np.exp(np.cumsum(rng.normal(0.0, 1e-5, objects)))
    prices = []
    for pair in pairs:
        base, quote = split_pair(pair)
        prices.append(_PRICES.get(base, 10.0) / _PRICES.get(quote, 1.0))
    rates = np.round(np.asarray(prices)[index % n_pairs] * walk, 6)
    rate_text = msgspec.json.encode(rates.tolist())[1:-1].decode().split(",")
    heads = []
    for pair in pairs:
        base, quote = split_pair(pair)
        heads.append(f'{{"type":"exrate","asset_id_base":"{base}","asset_id_quote":"{quote}",'
                     f'"rate_type":"{_rate_type(quote)}","time":"')
    objs = [f'{heads[i % n_pairs]}{stamp[:27]}Z","rate":{rate}}}'
            for i, (stamp, rate) in enumerate(zip(stamps, rate_text, strict=True))]
    return [o.encode() for o in objs]


def encode_frames(payloads: Sequence[bytes], chunk_bytes: int = CHUNK_BYTES) -> list[bytes]:
    """Wrap each payload in an unmasked, final text-frame header (RFC 6455 §5.2) and join into chunks.

    Server-to-client frames are never masked, so the wire bytes are header + payload; every
    chunk holds whole frames, which lets control frames be written between two chunks.
    """
    chunks: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for payload in payloads:
        n = len(payload)
        if n < 126:
            header = bytes((0x81, n))
        elif n < 1 << 16:
            header = bytes((0x81, 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((0x81, 127)) + n.to_bytes(8, "big")
        parts.append(header)
        parts.append(payload)
        size += len(header) + n
        if size >= chunk_bytes:
            chunks.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        chunks.append(b"".join(parts))
    return chunks


class _Connection:
    """One client connection: handshake, hello, then the pre-built chunks, then heartbeats."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, chunks: Sequence[bytes]) -> None:
        self.reader, self.writer, self.chunks = reader, writer, chunks
        self.protocol = ServerProtocol(max_size=1 << 20)
        self.last_sent = 0.0

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
            elif self.writer.can_write_eof():
                self.writer.write_eof()

    async def _events(self) -> list[object]:
        data = await self.reader.read(65536)
        if not data:
            self.protocol.receive_eof()
        else:
            self.protocol.receive_data(data)
        events: list[object] = list(self.protocol.events_received())
        self._flush()  # pongs and close replies
        if not data and not events:
            raise ConnectionError("client went away")
        return events

    async def run(self) -> None:
        try:
            hello = await self._handshake()
            if hello is None:
                return
            sender = asyncio.ensure_future(self._send(hello.heartbeat))
            try:
                while self.protocol.state is State.OPEN:
                    for event in await self._events():
                        if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                            with contextlib.suppress(MessageError):
                                parse_client(bytes(event.data))  # subscribe/unsubscribe: accepted, scope not applied
            finally:
                sender.cancel()
                with contextlib.suppress(BaseException):
                    await sender
        except (ConnectionError, InvalidHandshake, asyncio.IncompleteReadError):
            pass
        finally:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def _handshake(self) -> Hello | None:
        while True:
            for event in await self._events():
                if isinstance(event, Request):
                    response = self.protocol.accept(event)
                    self.protocol.send_response(response)
                    self._flush()
                    if response.status_code != 101:
                        return None
                elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                    try:
                        msg = parse_client(bytes(event.data))
                    except MessageError as exc:
                        msg = None
                        reason = exc.reason
                    if isinstance(msg, Hello):
                        return msg
                    # §4.4: the server answers a bad first message with an error, then closes.
                    self.protocol.send_text(ErrorMessage(reason if msg is None else "expected hello").to_json().encode())
                    self.protocol.send_close(1008)
                    self._flush()
                    return None
            if self.protocol.state is not State.OPEN and self.protocol.state is not State.CONNECTING:
                return None

    async def _send(self, heartbeat: bool) -> None:
        loop = asyncio.get_running_loop()
        for chunk in self.chunks:
            if self.protocol.state is not State.OPEN:
                return
            self.writer.write(chunk)
            await self.writer.drain()
        self.last_sent = loop.time()
        beat = Heartbeat().to_json().encode()
        while heartbeat and self.protocol.state is State.OPEN:
            await asyncio.sleep(1.0)  # §4.3: one heartbeat per second of silence
            self.protocol.send_text(beat)
            self._flush()


async def serve(chunks: Sequence[bytes], host: str = "127.0.0.1", port: int = 0,
                ready: asyncio.Future[int] | None = None) -> None:
    """Serve ``chunks`` to every client that says hello, until cancelled; ``ready`` gets the bound port."""
    connections: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await _Connection(reader, writer, chunks).run()
        finally:
            connections.discard(task)

    server = await asyncio.start_server(handle, host, port)
    async with server:
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set_result(bound)
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: build the frames, print the port on stdout, serve until killed."""
    parser = argparse.ArgumentParser(prog="python benchmarks/feed.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (printed on stdout)")
    parser.add_argument("--frames", type=int, default=100_000, help="frames sent per connection")
    parser.add_argument("--pairs", default=",".join(DEFAULT_PAIRS), help="comma-separated BASE/QUOTE pairs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pairs = [p.strip().upper() for p in args.pairs.split(",") if p.strip()]
    chunks = encode_frames(build_payloads(args.frames, pairs, args.seed))

    async def run() -> None:
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(serve(chunks, args.host, args.port, ready))
        port = await asyncio.wait_for(asyncio.shield(ready), 30)  # fails fast if the bind failed
        print(port, flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
    return 0


class FeedProcess:
    """Run the feed in its own process; a context manager that always terminates it.

    Args:
        frames: frames sent per connection.
        pairs: pairs streamed.
        timeout: seconds to wait for the port (building 1M frames takes about a second).
    """

    def __init__(self, frames: int, pairs: Sequence[Pair] = DEFAULT_PAIRS, seed: int = 0,
                 timeout: float = 120.0) -> None:
        self.frames, self.pairs, self.seed, self.timeout = frames, tuple(pairs), seed, timeout
        self.process: subprocess.Popen[str] | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>`` once started."""
        if self.port is None:
            raise RuntimeError("feed not started")
        return f"ws://127.0.0.1:{self.port}"

    @property
    def updates(self) -> int:
        """Exrate updates sent per connection."""
        return self.frames

    def start(self) -> FeedProcess:
        """Start the process and wait for it to print its port."""
        cmd = [sys.executable, str(Path(__file__).resolve()), "--port", "0", "--frames", str(self.frames),
               "--pairs", ",".join(self.pairs), "--seed", str(self.seed)]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            line = _readline(self.process, self.timeout)
            self.port = int(line)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Terminate the process (kill it if it does not exit within 5 s); idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> FeedProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self.port}" if self.port is not None else "not started"
        return f"<FeedProcess {where} | {self.frames:,} frames>"


def _readline(process: subprocess.Popen[str], timeout: float) -> str:
    """Read the first stdout line of ``process`` within ``timeout`` seconds."""
    import threading

    out: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: out.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not out or not out[0].strip():
        code = process.poll()
        raise RuntimeError(f"feed did not print its port within {timeout:g} s (exit code {code})")
    return out[0].strip()


if __name__ == "__main__":
    raise SystemExit(main())
