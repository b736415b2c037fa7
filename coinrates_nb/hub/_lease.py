"""The hub's lease in the KV bucket (key ``leader``): one publisher per NATS system and prefix.

Created atomically, renewed every ``lease / 5``; a second hub refuses to start while the lease is
renewed and takes over only once a crashed holder's lease expired (the bucket's max age). A
renewal that finds another holder reports it, and the hub fences itself (:mod:`.hub`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import CollectorError, MessageError
from . import wire

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["Lease"]

KEY = "leader"


class Lease:
    """The ``leader`` key of one hub: its revision and when it was last renewed (monotonic)."""

    def __init__(self, kv: KeyValue, hub_id: str, since_ns: int, lease_s: float) -> None:
        self.kv = kv
        self.hub_id = hub_id
        self.since_ns = since_ns
        self.lease_s = lease_s
        self.rev = 0
        self.at = 0.0

    def _value(self) -> bytes:
        return wire.encode({"hub": self.hub_id, "host": socket.gethostname(), "pid": os.getpid(),
                            "since_ns": self.since_ns, "renewed_ns": time.time_ns()})

    def _took(self, rev: int, sent: float) -> None:
        self.rev, self.at = rev, sent

    async def acquire(self, where: str) -> None:
        """Take the lease, or refuse: a lease renewed meanwhile belongs to a live hub; a stale one is waited out.

        Raises:
            CollectorError: another hub holds it (``where`` names the NATS and stream in the message).
        """
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = self.kv
        every = self.lease_s / 5
        deadline = time.monotonic() + 2 * self.lease_s + 2.0  # a stale lease expires after lease_s (KV max age)
        first: Any = None
        while True:
            try:
                self._took(await kv.create(KEY, self._value()), time.monotonic())
                return
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await kv.get(KEY)
            except KeyNotFoundError:
                continue  # expired or released just now: try again
            if first is None:
                first = entry
            elif entry.revision != first.revision:
                raise CollectorError(f"another hub ({describe_holder(entry.value)}) is already publishing to {where}; "
                                     "stop it first, or give this hub another prefix=")
            if time.monotonic() > deadline:
                raise CollectorError(f"the hub lease held by {describe_holder(entry.value)} did not expire")
            await asyncio.sleep(every / 2)

    def fresh(self) -> bool:
        """True while the last renewal is recent enough that no other hub can have taken over."""
        return time.monotonic() - self.at < self.lease_s * 0.8

    async def renew(self) -> str | None:
        """Renew the lease; ``None`` when it is ours (again), else the id of the hub that holds it now."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv, sent = self.kv, time.monotonic()
        try:
            self._took(await kv.update(KEY, self._value(), last=self.rev), sent)
            return None
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(KEY)
        except KeyNotFoundError:  # it expired while we were cut off: nobody took it
            try:
                self._took(await kv.create(KEY, self._value()), sent)
                return None
            except KeyWrongLastSequenceError:
                entry = await kv.get(KEY)
        holder = wire.decode(entry.value or b"{}").get("hub")
        if holder == self.hub_id and entry.revision is not None:  # our own renewal landed, its answer was lost
            self._took(entry.revision, sent)
            return None
        return str(holder)

    async def release(self) -> None:
        """Delete the lease (only if it is still our revision), so a next hub starts at once."""
        await asyncio.wait_for(self.kv.delete(KEY, last=self.rev), timeout=2.0)


def describe_holder(value: bytes | None) -> str:
    """Who holds a lease, from its value, for an error message."""
    try:
        data = wire.decode(value or b"{}")
        return f"hub {data.get('hub')} on {data.get('host')}, pid {data.get('pid')}"
    except MessageError:
        return "an unknown hub"

