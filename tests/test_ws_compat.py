"""The websockets surface we rely on exists on the installed version (``make test-min`` runs this at the floor).

``_ws_compat.queued_frames`` is the one read of a websockets internal: it is checked against a
real loopback connection, so a release that moves ``recv_messages.frames`` fails here instead of
the client silently falling back to a cancelled ``recv()`` per drain. The public names are
checked too, each with the release that brought it, so a too-low bound in ``pyproject.toml``
fails with the feature's name rather than as a collector that retries forever.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import pytest
import websockets.http11
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.version import version as websockets_version

from coinrates_nb._ws_compat import queued_frames
from tests.helpers import SLOW

FRAMES = 5


async def _poll(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``predicate()`` is true; fail after ``timeout`` (scaled by SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout * SLOW:g} s")
        await asyncio.sleep(0.005)


def test_queued_frames_counts_what_the_connection_received() -> None:
    """``queued_frames`` is an int on a real connection: 0 before, N once N frames arrived, N-1 after a recv."""

    async def handler(conn: ServerConnection) -> None:
        await conn.recv()  # "go": the client has read its count of an empty queue
        for i in range(FRAMES):
            await conn.send(f"frame {i}")
        await conn.wait_closed()

    async def main() -> tuple[int | None, int | None, int | None]:
        async with serve(handler, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/", proxy=None) as ws:
                assert isinstance(ws, ClientConnection)
                empty = queued_frames(ws)
                await ws.send("go")
                await _poll(lambda: queued_frames(ws) == FRAMES)
                full = queued_frames(ws)
                assert await ws.recv() == "frame 0"
                return empty, full, queued_frames(ws)

    empty, full, after = asyncio.run(main())
    assert (empty, full, after) == (0, FRAMES, FRAMES - 1), f"websockets {websockets_version}"


def test_queued_frames_is_none_where_the_internal_is_missing() -> None:
    """Without ``recv_messages.frames`` the count is unknown (``None``), never an exception."""

    class Bare:
        recv_messages = object()

    assert queued_frames(object()) is None
    assert queued_frames(Bare()) is None


@pytest.mark.parametrize(
    ("since", "feature", "present"),
    [
        ("15.0", "connect(proxy=...)", lambda: "proxy" in inspect.signature(connect).parameters),
        ("13.1", "connect.process_redirect", lambda: callable(getattr(connect, "process_redirect", None))),
        ("13.0", "ServerConnection.respond", lambda: callable(getattr(ServerConnection, "respond", None))),
        ("13.0", "serve(process_request=, process_response=, server_header=)",
         lambda: {"process_request", "process_response", "server_header"} <= set(inspect.signature(serve).parameters)),
        ("13.0", "connect(user_agent_header=, additional_headers=, logger=)",
         lambda: {"user_agent_header", "additional_headers", "logger"} <= set(inspect.signature(connect).parameters)),
        ("13.0", "websockets.http11.Request/Response",
         lambda: all(hasattr(websockets.http11, name) for name in ("Request", "Response"))),
    ],
)
def test_websockets_api_we_use_exists(since: str, feature: str, present: Callable[[], bool]) -> None:
    """Each websockets feature the package uses is there (the ``websockets>=`` bound must be >= ``since``)."""
    assert present(), f"websockets {websockets_version} lacks {feature} (added in {since})"
