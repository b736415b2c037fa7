"""Settings: endpoint, API key, TLS, timeouts; environment lookup and the simulator fallback.

Every setting is checked where it is given (:class:`Settings` itself, so ``Settings(...)``,
:meth:`Settings.resolve` and ``dataclasses.replace`` all check the same way): a wrong value is a
:class:`~coinrates_nb.exceptions.ConfigError` that names the field and the accepted range, not
a socket that retries forever. Durations follow the package rule (``_inputs.span_ns``): a bare
number is seconds, ``"10s"``/``"2min"`` and ``timedelta`` work too; they are stored as float
seconds.

The key lives in :class:`~coinrates_nb._secrets.SecretKey`, whose ``repr``/``str`` is
``"[secure]"`` (the httpx model), so it cannot leak through a repr, a log line, a status or an
exception by accident. It is only ever sent over ``wss://`` or to loopback, and only to the
origin the user named (:func:`key_allowed`, for redirects).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import numbers
import os
import re
import ssl as _ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar, Final
from urllib.parse import urljoin, urlsplit

import numpy as np

from ._inputs import span_ns
from ._secrets import ENV_KEY, SecretKey, redact_url, resolve_key, split_url_key
from .exceptions import ConfigError

__all__ = ["COINAPI_URL", "COMPRESSIONS", "ENV_KEY", "Settings", "is_loopback", "key_allowed"]

COINAPI_URL = "wss://api-realtime.exrates.coinapi.io/"
"""The documented Exchange Rates WebSocket endpoint (protocol notes §1.1); ``/`` path, §1.1 notes."""

SIMULATOR_HEADER = "X-Coinrates-Simulator"
"""Handshake response header by which coinrates_nb's own simulator identifies itself (its data is simulated)."""

"""Environment variable read for the API key."""

COMPRESSIONS: Final = (None, "deflate")
"""Accepted ``compression`` values: none, or permessage-deflate (what websockets supports)."""

MAX_UPDATE_LIMIT_MS: Final = 2**31 - 1
"""``subscribe_update_limit_ms_exrate`` is an int (protocol notes §3.1); no maximum is documented,
so the bound is the 32-bit one a server-side int can hold."""

_DEFAULT_PORTS: Final = {"ws": 80, "wss": 443}

NATS_SCHEMES: Final = ("nats", "tls")
"""URL schemes of a hub's NATS server (``cr.stream(url="nats://host:4222")``): no API key is sent there."""

_HOSTNAME: Final = re.compile(r"(?i)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?")
"""A DNS name after IDNA encoding (underscores tolerated: some private hosts have them)."""


def _host(url: str) -> str | None:
    """The host of ``url``, lower-cased, or ``None`` if it has none or cannot be parsed."""
    try:
        return urlsplit(url).hostname or None
    except ValueError:
        return None


def is_loopback(url: str) -> bool:
    """True when ``url`` points at this machine (127.0.0.0/8, ::1 or ``localhost``)."""
    host = _host(url) or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` with the default port filled in, or ``None`` for a URL that is not ws(s)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname, port or _DEFAULT_PORTS[scheme]


def key_allowed(url_key_was_for: str, redirect_url: str) -> bool:
    """May the ``X-CoinAPI-Key`` header meant for ``url_key_was_for`` be sent to ``redirect_url``?

    Only to the same origin (scheme, host and port, default ports filled in) and only over
    ``wss://`` or to loopback. websockets strips ``Authorization`` and ``Cookie`` on a
    cross-origin redirect but not our header, so the client asks this before following one.
    A relative ``redirect_url`` is resolved against ``url_key_was_for``, as websockets does;
    anything unparsable is ``False``.
    """
    old = _origin(url_key_was_for)
    try:
        target = urljoin(url_key_was_for, redirect_url)
    except ValueError:
        return False
    new = _origin(target)
    if old is None or new is None or old != new:
        return False
    return new[0] == "wss" or is_loopback(target)


def _check_url(url: Any) -> str:
    """``url`` if it is a usable ``ws://``/``wss://`` (or a hub's ``nats://``/``tls://``) URL, else a ``ConfigError``.

    Only called on URLs whose key and user-info :func:`split_url_key` already took out, so the
    URL in a message is safe to show (``redact_url`` applied anyway).
    """
    if not isinstance(url, str):
        raise ConfigError(f"url must be a string like 'wss://host/', not {type(url).__name__}")
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"url is malformed ({exc}): {shown!r}; write it like 'wss://host:port/path'") from None
    if parts.scheme.lower() not in _DEFAULT_PORTS and parts.scheme.lower() not in NATS_SCHEMES:
        raise ConfigError(f"url must start with ws:// or wss:// (CoinAPI, a simulator) or nats:// or tls:// "
                          f"(a hub), got scheme {parts.scheme!r} in {shown!r}")
    host = parts.hostname
    if not host:
        raise ConfigError(f"url has no host: {shown!r}; write it like 'wss://host/'")
    if parts.fragment:
        raise ConfigError(f"url must not have a #fragment (WebSocket and NATS URLs have none): {shown!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ConfigError(f"url has an invalid IPv6 host {host!r}: {shown!r}") from None
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            ascii_host = ""
        if not _HOSTNAME.fullmatch(ascii_host):
            raise ConfigError(f"url has an invalid host {host!r}: {shown!r}")
    return url


def _seconds(value: Any, name: str, *, allow_none: bool = False) -> float | None:
    """A positive duration in float seconds (``_inputs.span_ns``'s rule: a bare number is seconds)."""
    ns = span_ns(value, name, allow_none=allow_none)
    return None if ns is None else ns / 1e9


def _flag(value: Any, name: str) -> bool:
    """``value`` if it is a bool (NumPy's too): ``heartbeat="no"`` would otherwise be truthy."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(f"{name} must be True or False, not {value!r}")


def _integer(value: Any, name: str, low: int, high: int | None = None, *, allow_none: bool = False) -> int | None:
    """``value`` as an int within ``[low, high]``; bools and floats are refused (``2.5`` ms is a typo)."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if ok and low <= int(value) and (high is None or int(value) <= high):
        return int(value)
    span = f"from {low} to {high}" if high is not None else f">= {low}"
    none = " or None" if allow_none else ""
    raise ConfigError(f"{name} must be an integer {span}{none}, not {value!r}")


def _ca_context(path: Any) -> _ssl.SSLContext:
    """A verifying client context that trusts the CA bundle at ``path`` (a PEM file or a hashed directory)."""
    where = os.fsdecode(path)
    if not where:
        raise ConfigError("ssl must be an ssl.SSLContext, a CA bundle path or None, not an empty path")
    if not os.path.exists(where):
        raise ConfigError(f"ssl: CA bundle {where!r} does not exist")
    try:
        if os.path.isdir(where):
            return _ssl.create_default_context(capath=where)
        return _ssl.create_default_context(cafile=where)
    except (_ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"ssl: {where!r} is not a readable PEM CA bundle ({exc})") from None


def _restore(cls: type[Settings], values: dict[str, Any]) -> Settings:
    """Unpickle :class:`Settings`: rebuild through ``__init__`` so the CA bundle is loaded (and checked) again."""
    return cls(**values)


@dataclass(frozen=True)
class Settings:
    """Everything a collector needs to connect; ``url=None`` means "start the embedded simulator".

    Build it with :meth:`resolve`, which reads ``COINAPI_KEY`` and picks the endpoint; every
    field is checked on construction either way (see the module docstring), and a key written
    into ``url`` (``?apikey=``, ``/APIKEY-``, ``user:key@``) is moved into ``api_key``.

    TLS (``ssl``): ``None`` verifies the server against the system's CAs (what OpenSSL uses,
    which ``SSL_CERT_FILE`` can redirect for the whole process); a path to a PEM CA bundle (or
    a hashed CA directory), e.g. the one a corporate TLS-inspecting proxy issues, trusts those
    CAs for this collector only; an ``ssl.SSLContext`` is used as given (client certificates,
    pinned ciphers). It applies to ``wss://`` only; :meth:`ssl_context` is what is passed to
    websockets' ``connect(ssl=...)``. A certificate that fails verification stops the collector
    with a clear error (``retry.classify``) instead of reconnecting forever.

    Settings are immutable, so ``copy``/``deepcopy`` return the same object. They pickle
    (for ``multiprocessing``) with the key, see :class:`~coinrates_nb._secrets.SecretKey`, and
    with a CA bundle path, which the receiving process loads again; an ``ssl.SSLContext``
    cannot be pickled, so such settings refuse with a ``ConfigError`` that says to pass the
    path instead.
    """

    url: str | None = None
    api_key: SecretKey | None = field(default=None, repr=False)
    heartbeat: bool = True
    update_limit_ms: int | None = None
    """Per-pair throttle in ms (``subscribe_update_limit_ms_exrate``), 0 to 2**31-1; ``None`` sends none."""
    stale_after: float = 10.0
    """Seconds without any frame before the stream counts as stale; accepts ``"10s"`` too."""
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
    ssl: _ssl.SSLContext | str | os.PathLike[str] | None = None
    """``None`` (system CAs), a CA bundle path (stored as ``str``) or an ``ssl.SSLContext``; see above."""
    _context: ClassVar[_ssl.SSLContext | None] = None
    """The context :meth:`ssl_context` returns, set per instance; not a field, so ``asdict``, ``==``
    and pickling never see it (declared ``ClassVar`` only so the class default is ``None``)."""

    def __post_init__(self) -> None:
        """Check and normalise every field (durations to float seconds, paths to ``str``)."""
        put = object.__setattr__  # frozen: normalise in place, once, here
        key = self.api_key
        if isinstance(key, str):
            key = SecretKey(key)
        elif key is not None and not isinstance(key, SecretKey):
            raise ConfigError(f"api_key must be a string or SecretKey, not {type(key).__name__}")
        url = self.url
        if url is not None:
            if not isinstance(url, str):
                raise ConfigError(f"url must be a string like 'wss://host/' or None, not {type(url).__name__}")
            url, url_key = split_url_key(url.strip())
            if url_key is not None:
                if key is not None and key != SecretKey(url_key):
                    raise ConfigError("two different API keys: one in the URL, one as api_key")
                key = SecretKey(url_key)
            url = _check_url(url)
            if key is not None and urlsplit(url).scheme.lower() == "ws" and not is_loopback(url):
                raise ConfigError(
                    f"refusing to send the API key over unencrypted ws:// to {_host(url)}; use wss://"
                )
        put(self, "url", url)
        put(self, "api_key", key)
        put(self, "heartbeat", _flag(self.heartbeat, "heartbeat"))
        put(self, "simulated", _flag(self.simulated, "simulated"))
        put(self, "update_limit_ms", _integer(self.update_limit_ms, "update_limit_ms", 0, MAX_UPDATE_LIMIT_MS,
                                               allow_none=True))
        put(self, "max_frame_bytes", _integer(self.max_frame_bytes, "max_frame_bytes", 1))
        put(self, "simulator_seed", _integer(self.simulator_seed, "simulator_seed", 0, allow_none=True))
        put(self, "stale_after", _seconds(self.stale_after, "stale_after"))
        put(self, "open_timeout", _seconds(self.open_timeout, "open_timeout"))
        put(self, "ping_interval", _seconds(self.ping_interval, "ping_interval", allow_none=True))
        put(self, "ping_timeout", _seconds(self.ping_timeout, "ping_timeout", allow_none=True))
        put(self, "backoff_initial", _seconds(self.backoff_initial, "backoff_initial"))
        put(self, "backoff_cap", _seconds(self.backoff_cap, "backoff_cap"))
        if self.backoff_cap < self.backoff_initial:
            raise ConfigError(f"backoff_cap ({self.backoff_cap:g} s) must be >= backoff_initial "
                              f"({self.backoff_initial:g} s)")
        if self.compression not in COMPRESSIONS:
            raise ConfigError(f"compression must be 'deflate' or None, not {self.compression!r}")
        rate = self.simulator_rate_hz
        if (isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real)
                or not math.isfinite(float(rate)) or float(rate) <= 0):
            raise ConfigError(f"simulator_rate_hz must be a positive number of updates per second, not {rate!r}")
        put(self, "simulator_rate_hz", float(rate))
        tls = self.ssl
        if isinstance(tls, _ssl.SSLContext):
            put(self, "_context", tls)
        elif isinstance(tls, (str, bytes, os.PathLike)):
            put(self, "_context", _ca_context(tls))
            put(self, "ssl", os.fsdecode(tls))
        elif tls is not None:
            raise ConfigError(f"ssl must be an ssl.SSLContext, a CA bundle path or None, not {type(tls).__name__}")

    @property
    def source(self) -> str:
        """``"simulated"`` for the embedded simulator, ``"live"`` otherwise."""
        return "simulated" if self.simulated else "live"

    def headers(self) -> dict[str, str]:
        """Upgrade headers: the key goes in ``X-CoinAPI-Key`` (protocol notes §2.1, §2.2)."""
        return {"X-CoinAPI-Key": self.api_key.reveal()} if self.api_key is not None else {}

    def headers_for(self, url: str) -> dict[str, str]:
        """:meth:`headers` if the key may go to ``url`` (a redirect target, see :func:`key_allowed`), else none."""
        if self.url is None or not key_allowed(self.url, url):
            return {}
        return self.headers()

    def ssl_context(self) -> _ssl.SSLContext | None:
        """What to pass as websockets' ``connect(ssl=...)``: ``None`` for ``ws://``, a verifying context for ``wss://``.

        The context is the one given, the one built from the CA bundle, or (``ssl=None``) a
        default context made once and reused by every reconnect.
        """
        if self.url is None or urlsplit(self.url).scheme.lower() != "wss":
            return None
        if self._context is None:
            object.__setattr__(self, "_context", _ssl.create_default_context())
        return self._context

    def with_url(self, url: str) -> Settings:
        """A copy pointing at ``url`` (used once the embedded simulator knows its port)."""
        return replace(self, url=url)

    def __copy__(self) -> Settings:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, Any]) -> Settings:
        return self  # immutable; an SSLContext could not be deep-copied anyway

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the constructor arguments (key and CA path included); an ``SSLContext`` is refused."""
        if isinstance(self.ssl, _ssl.SSLContext):
            raise ConfigError(
                "these Settings cannot be pickled: ssl is an ssl.SSLContext, which has no portable form; "
                "pass ssl='/path/to/ca-bundle.pem' instead (it is loaded again in the other process), "
                "or build the Settings in each process"
            )
        return _restore, (type(self), {f.name: getattr(self, f.name) for f in fields(self) if f.init})

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
        into the URL (``?apikey=``, ``/APIKEY-``, ``user:key@``) is taken out of it and treated
        the same way. ``options`` are the other :class:`Settings` fields (``ssl=``,
        ``stale_after=``, ...), checked like them.
        """
        env = os.environ if env is None else env
        known = {f.name for f in fields(cls) if f.init} - {"url", "api_key", "simulated"}
        unknown = sorted(set(options) - known)
        if unknown:
            hints = {name: difflib.get_close_matches(name, known, n=1) for name in unknown}
            said = ", ".join(f"{n!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for n, h in hints.items())
            raise ConfigError(f"unknown setting {said}; settings are {', '.join(sorted(known))}")
        if simulated is not None and not isinstance(simulated, (bool, np.bool_)):
            raise ConfigError(f"simulated must be True, False or None, not {simulated!r}")
        if url is not None:
            if not isinstance(url, str):
                raise ConfigError(f"url must be a string like 'wss://host/' or None, not {type(url).__name__}")
            url, url_key = split_url_key(url.strip())
            if url_key is not None:
                given = api_key.reveal() if isinstance(api_key, SecretKey) else api_key
                if given is not None and isinstance(given, str) and given.strip() != url_key:
                    raise ConfigError("two different API keys: one in the URL, one as api_key")
                api_key = url_key
        key = resolve_key(api_key, None if simulated else env)
        if simulated is None:
            simulated = url is None and key is None
        if simulated and url is None:
            key = None  # the embedded simulator needs no key; never send a real one to it
        elif url is None:
            url = COINAPI_URL
        return cls(url=url, api_key=key, simulated=bool(simulated), **options)
