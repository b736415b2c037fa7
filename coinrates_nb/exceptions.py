"""The one error tree of coinrates_nb.

Every error the library raises derives from :class:`CoinratesError`; foreign errors
(websockets, OS, JSON) are translated once, at the edge, with ``raise ... from exc``::

    CoinratesError
    ├── ConfigError            (also ValueError)      bad settings, insecure key transport
    │   └── UnknownAssetError  (also KeyError)        not a CoinAPI asset (REST list), or unknown to the simulator's prices
    ├── MessageError           (also ValueError)      a wire message that breaks the protocol
    ├── TransportError         (also ConnectionError) the socket failed or was refused
    │   └── StaleStreamError   (also TimeoutError)    no frame arrived within the stale timeout
    ├── ServerError                                   the server sent an ``error`` message
    │   ├── AuthenticationError                       the key was rejected: fatal, never retried
    │   └── QuotaExceededError                        REST 429 until a reset too far away: the quota is spent
    ├── StoreError             (also ValueError)      rows that the rolling frame cannot store
    ├── CollectorError         (also RuntimeError)    the collector cannot do what was asked
    ├── WaitTimeoutError       (also TimeoutError)    ``wait()`` saw no data for the pairs in time
    ├── SimulatorError         (also RuntimeError)    the simulator was used wrongly or a scenario timed out
    └── RecordingError         (also OSError)         a recording or replay could not be read/written
"""

from __future__ import annotations

PAYLOAD_PREVIEW = 200
"""How many characters of a bad payload an error message shows."""


def preview(payload: str | bytes, limit: int = PAYLOAD_PREVIEW) -> str:
    """Return a short, printable excerpt of ``payload`` for error messages and logs."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        text = bytes(payload)[: limit * 4].decode("utf-8", errors="replace")
    else:
        text = payload
    return text if len(text) <= limit else text[:limit] + f"... [{len(text)} chars]"


class CoinratesError(Exception):
    """Base class: raised for every failure that coinrates_nb itself reports."""


class ConfigError(CoinratesError, ValueError):
    """Raised when settings are invalid, e.g. a key sent over plain ``ws://`` to a remote host."""


class UnknownAssetError(ConfigError, KeyError):
    """Raised for an asset that does not exist: not in CoinAPI's ``GET /v1/assets`` (``stream()``,
    ``subscribe()``), or unknown to the simulator's price model; ``known`` lists the known ones
    where the list is short enough to help (empty for the REST check, which suggests a close one).

    A ``KeyError`` (a lookup failed) and a ``ConfigError`` (the asset set is configuration).
    """

    def __init__(self, asset: str, known: tuple[str, ...], message: str | None = None) -> None:
        self.asset = asset
        self.known = known
        super().__init__(message or f"unknown asset {asset!r}; known assets: {', '.join(known)}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class MessageError(CoinratesError, ValueError):
    """Raised when a wire message is malformed; names the ``field`` and shows a truncated ``payload``."""

    def __init__(self, reason: str, *, field: str | None = None, payload: str | bytes = "", kind: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.payload = preview(payload)
        self.kind = kind or (f"bad_{field}" if field else "malformed")
        where = f" (field {field!r})" if field else ""
        super().__init__(f"{reason}{where}: {self.payload}")


class TransportError(CoinratesError, ConnectionError):
    """Raised when the WebSocket connection fails, is refused or drops."""


class StaleStreamError(TransportError, TimeoutError):
    """Raised when no frame (data or heartbeat) arrived within the stale timeout."""

    def __init__(self, silent_for: float, timeout: float) -> None:
        self.silent_for = silent_for
        self.timeout = timeout
        super().__init__(f"stream stale: no frame for {silent_for:.1f} s (timeout {timeout:.1f} s)")


class ServerError(CoinratesError):
    """Raised when the server sends an ``error`` message; the server closes the connection after it."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(f"server error: {message}")


class AuthenticationError(ServerError):
    """Raised when the API key is rejected (in-band ``error`` or HTTP 401/403); never retried."""


class QuotaExceededError(ServerError):
    """Raised when CoinAPI answers 429 and ``X-RateLimit-Reset`` is further away than ``max_wait``
    (the daily quota is spent), or 429s persist for every attempt; ``reset_ns`` says when it frees."""

    def __init__(self, message: str, reset_ns: int | None = None) -> None:
        self.reset_ns = reset_ns
        super().__init__(message)


class StoreError(CoinratesError, ValueError):
    """Raised when rows cannot be stored in a rolling frame: a malformed pair, mismatched columns, too many pairs."""


class CollectorError(CoinratesError, RuntimeError):
    """Raised when the collector cannot do what was asked, e.g. it has failed fatally."""


class WaitTimeoutError(CoinratesError, TimeoutError):
    """Raised when ``Collector.wait()`` does not see the rows it waits for within its timeout."""


class SimulatorError(CoinratesError, RuntimeError):
    """Raised when the simulator is used out of order (``url`` before ``start()``) or a scenario times out."""


class RecordingError(CoinratesError, OSError):
    """Raised when a recording cannot be written or a dataset cannot be read for replay."""
