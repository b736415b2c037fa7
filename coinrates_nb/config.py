"""Settings: endpoint, API key wrapper, environment lookup and the simulator fallback.

The key lives in :class:`SecretKey`, whose ``repr``/``str`` is ``"[secure]"`` (the httpx model),
so it cannot leak through a repr, a log line, a status or an exception by accident.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .exceptions import ConfigError

__all__ = ["COINAPI_URL", "ENV_KEY", "SecretKey", "Settings", "is_loopback", "redact_url", "split_url_key"]

COINAPI_URL = "wss://api-realtime.exrates.coinapi.io/"
"""The documented Exchange Rates WebSocket endpoint (protocol notes §1.1); ``/`` path, §1.1 notes."""

ENV_KEY = "COINAPI_KEY"
"""Environment variable read for the API key."""

SECURE = "[secure]"


class SecretKey:
    """An API key that never shows itself: ``repr`` and ``str`` are ``"[secure]"``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not value:
            raise ConfigError("the API key is empty")
        if any(ch in value for ch in "\r\n\0"):
            raise ConfigError("the API key contains control characters")
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that needs it: the connection header."""
        return self._value

    def __repr__(self) -> str:
        return SECURE

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # pragma: no cover - pickling a key is refused on purpose
        raise TypeError("SecretKey cannot be pickled")


def redact_url(url: str) -> str:
    """The URL without a query string or ``/APIKEY-`` path segment, either of which can carry a key (§2.1)."""
    base = url.split("?", 1)[0]
    return base.split("/APIKEY-", 1)[0]


_PATH_KEY = re.compile(r"(?i)/apikey-([^/?#]+)")


def split_url_key(url: str) -> tuple[str, str | None]:
    """``url`` without an API key in its query (``apikey=``) or path (``/APIKEY-<key>``), and that key.

    Both are documented ways to authenticate (protocol notes §2.1). A key found there becomes
    the settings' key, sent in the header like any other, so the URL that is stored, shown and
    logged (websockets logs the request line at DEBUG) never holds it.

    Raises:
        ConfigError: the URL carries two different keys.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [v.strip() for k, v in query if k.lower() == "apikey" and v.strip()]
    path = parts.path
    found = _PATH_KEY.search(path)
    if found is not None:
        keys.append(found.group(1))
        path = (path[: found.start()] + path[found.end():]) or "/"
    if not keys:
        return url, None
    if len(set(keys)) > 1:
        raise ConfigError("the URL carries two different API keys")
    kept = urlencode([(k, v) for k, v in query if k.lower() != "apikey"])
    return urlunsplit(parts._replace(path=path, query=kept)), keys[0]


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """Everything a collector needs to connect; ``url=None`` means "start the embedded simulator".

    Build it with :meth:`resolve`, which reads ``COINAPI_KEY`` and checks the combination.
    """

    url: str | None = None
    api_key: SecretKey | None = field(default=None, repr=False)
    heartbeat: bool = True
    update_limit_ms: int | None = None
    stale_after: float = 10.0
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    compression: str | None = "deflate"
    """permessage-deflate: ~4.6x fewer bytes, and CoinAPI meters WebSocket use by bytes (NOTES.md)."""
    backoff_initial: float = 0.25
    backoff_cap: float = 30.0
    max_frame_bytes: int = 1 << 20
    simulated: bool = False
    simulator_seed: int | None = None
    simulator_rate_hz: float = 5.0

    @property
    def source(self) -> str:
        """``"simulated"`` for the embedded simulator, ``"live"`` otherwise."""
        return "simulated" if self.simulated else "live"

    def headers(self) -> dict[str, str]:
        """Upgrade headers: the key goes in ``X-CoinAPI-Key`` (protocol notes §2.1, §2.2)."""
        return {"X-CoinAPI-Key": self.api_key.reveal()} if self.api_key is not None else {}

    def with_url(self, url: str) -> Settings:
        """A copy pointing at ``url`` (used once the embedded simulator knows its port)."""
        return replace(self, url=url)

    @classmethod
    def resolve(
        cls,
        url: str | None = None,
        api_key: str | SecretKey | None = None,
        *,
        simulated: bool | None = None,
        env: Mapping[str, str] | None = None,
        **options: Any,
    ) -> Settings:
        """Combine arguments and the environment into checked settings.

        With a key (argument or ``COINAPI_KEY``) and no URL, the live CoinAPI endpoint is used;
        with neither, the embedded simulator (``simulated=True``). A key is only ever sent over
        ``wss://`` unless the host is loopback, so it cannot travel in clear text; a key written
        into the URL (``?apikey=``, ``/APIKEY-``) is taken out of it and treated the same way.
        """
        env = os.environ if env is None else env
        if url is not None:
            url, url_key = split_url_key(url)
            if url_key is not None:
                given = api_key.reveal() if isinstance(api_key, SecretKey) else api_key
                if given is not None and given.strip() != url_key:
                    raise ConfigError("two different API keys: one in the URL, one as api_key")
                api_key = url_key
        if api_key is None and not simulated:
            raw = env.get(ENV_KEY, "").strip()
            api_key = raw or None
        key = api_key if isinstance(api_key, SecretKey) or api_key is None else SecretKey(api_key)
        if simulated is None:
            simulated = url is None and key is None
        if simulated and url is None:
            key = None  # the embedded simulator needs no key; never send a real one to it
        elif url is None:
            url = COINAPI_URL
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss"):
                raise ConfigError(f"URL must start with ws:// or wss://, got scheme {parts.scheme!r}")
            if key is not None and parts.scheme == "ws" and not is_loopback(url):
                raise ConfigError(
                    f"refusing to send the API key over unencrypted ws:// to {parts.hostname}; use wss://"
                )
        return cls(url=url, api_key=key, simulated=bool(simulated), **options)
