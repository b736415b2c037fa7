"""Secrets: the key wrapper and the one redaction helper every log, repr and error goes through.

The key lives in :class:`SecretKey`, whose ``repr``/``str`` is ``"[secure]"`` (the httpx model).
:func:`redact` replaces every form a key can take in text (headers, query, path, JSON body,
URL user-info, and the literal values given); :class:`RedactingLogger` applies it to a logger
that third-party code (websockets) writes to.
"""

from __future__ import annotations

import hmac
import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from .exceptions import ConfigError

__all__ = ["ENV_KEY", "PATH_KEY", "SECURE", "RedactingLogger", "SecretKey", "resolve_key", "redact", "redact_url", "split_url_key"]

SECURE: Final = "[secure]"
"""What a secret looks like wherever it would be shown."""


ENV_KEY: Final = "COINAPI_KEY"
"""The environment variable a key is read from when none is given."""


class SecretKey:
    """An API key that never shows itself: ``repr`` and ``str`` are ``"[secure]"``.

    The key is checked when it is wrapped: it must be printable ASCII without spaces, the only
    characters a key can have and that an HTTP header can carry. A character pasted with it
    (a zero-width space, a non-breaking space, a line break) is a ``ConfigError`` naming the
    character and its position, never the key, instead of an error from the connection that
    quotes the header (and the key) and is retried forever.

    Pickling (and ``copy``/``deepcopy``) keeps the key: a ``Settings`` sent to a worker process
    with ``multiprocessing`` must still authenticate there. The pickle *bytes* therefore hold
    the key, like any other credential handed to another process: do not store or share them.
    What the unpickled object shows stays ``"[secure]"`` in every repr, log and error.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise ConfigError(f"the API key must be a string, not {type(value).__name__}")
        value = value.strip()
        if not value:
            raise ConfigError("the API key is empty")
        bad = next((i for i, ch in enumerate(value) if not _KEY_CHAR.fullmatch(ch)), None)
        if bad is not None:
            raise ConfigError(
                f"the API key contains {_describe(value[bad])} at position {bad + 1} of {len(value)}; "
                "a key is printable ASCII without spaces (it travels in an HTTP header), "
                "so copy it again without that character"
            )
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one place that needs it: the connection header."""
        return self._value

    def __repr__(self) -> str:
        return SECURE

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretKey) and hmac.compare_digest(other._value.encode(), self._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[type[SecretKey], tuple[str]]:
        """Pickle as ``SecretKey(value)``: the key travels (see the class docstring), its repr does not."""
        return SecretKey, (self._value,)


def resolve_key(api_key: object, env: Mapping[str, str] | None = None) -> SecretKey | None:
    """The key to use: ``api_key`` (a string or :class:`SecretKey`) or, when it is ``None`` and ``env``
    is given, ``COINAPI_KEY`` from it; ``None`` when there is neither.

    Raises:
        ConfigError: If the key is not a string, or not a valid key (the message never echoes it).
    """
    if isinstance(api_key, SecretKey):
        return api_key
    if api_key is not None:
        if not isinstance(api_key, str):
            raise ConfigError(f"api_key must be a string or SecretKey, not {type(api_key).__name__}")
        return SecretKey(api_key)
    raw = "" if env is None else env.get(ENV_KEY, "").strip()
    if not raw:
        return None
    try:
        return SecretKey(raw)
    except ConfigError as exc:
        raise ConfigError(f"{ENV_KEY}: {exc}") from None


_KEY_CHAR: Final = re.compile(r"[\x21-\x7e]")
"""One character an API key may hold: printable ASCII, no space (RFC 9110 field-value, minus whitespace)."""


def _describe(ch: str) -> str:
    """``U+200B (ZERO WIDTH SPACE)``: a character named without showing the key around it."""
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, 'a control character')})"


def redact_url(url: str) -> str:
    """The URL to show: no query string, ``/APIKEY-`` path segment or user-info, any of which can carry a key (§2.1)."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    base = re.split(r"(?i)/apikey-", base, maxsplit=1)[0]
    scheme, sep, rest = base.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        host_part, slash, path = rest.partition("/")
        base = f"{scheme}://{host_part.rsplit('@', 1)[1]}{slash}{path}"
    return base


PATH_KEY = re.compile(r"(?i)/apikey-([^/?#]+)")
"""A ``/APIKEY-<key>`` path segment (a documented way to authenticate); group 1 is the key."""


def split_url_key(url: str) -> tuple[str, str | None]:
    """``url`` without an API key in its query, path or user-info, and that key.

    ``?apikey=<key>`` and ``/APIKEY-<key>`` are documented ways to authenticate (protocol notes
    §2.1); ``ws://user:<key>@host/`` (or ``ws://<key>@host/``) is not, and websockets would
    send it as HTTP Basic credentials, in clear text over ``ws://``. A key found in any of
    these becomes the settings' key, sent in the ``X-CoinAPI-Key`` header like any other, so
    the URL that is stored, shown and logged (websockets logs the request line at DEBUG)
    never holds it. User-info without a key in it is dropped as well.

    Raises:
        ConfigError: the URL is malformed (e.g. ``ws://[::1``) or carries two different keys.
    """
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError as exc:  # urllib: "Invalid IPv6 URL", a bad port...
        raise ConfigError(f"url is malformed ({exc}): {redact_url(url)!r}; write it like 'wss://host/'") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    keys = [v.strip() for k, v in query if k.lower() == "apikey" and v.strip()]
    path = parts.path
    found = PATH_KEY.search(path)
    if found is not None:
        keys.append(found.group(1))
        path = (path[: found.start()] + path[found.end():]) or "/"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rpartition("@")[2]
        secret = unquote(password or user or "").strip()
        if secret:
            keys.append(secret)
    if not keys and netloc == parts.netloc:
        return url, None
    if len(set(keys)) > 1:
        raise ConfigError("the URL carries two different API keys")
    kept = urlencode([(k, v) for k, v in query if k.lower() != "apikey"]) if keys else parts.query
    return urlunsplit(parts._replace(netloc=netloc, path=path, query=kept)), (keys[0] if keys else None)


_SECRET_PATTERNS: Final = (
    (re.compile(r"(?im)^((?:[<>] )?(?:x-coinapi-key|authorization):\s*).*$"), r"\1[secure]"),
    (re.compile(r"(?i)(apikey=)[^&\s#]*"), r"\1[secure]"),
    (re.compile(r"(?i)(/apikey-)[^/?#\s]*"), r"\1[secure]"),
    (re.compile(r"""(?i)(["']apikey["']\s*:\s*["'])[^"']*"""), r"\1[secure]"),
    (re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/@\s]*@"), r"\1[secure]@"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every API key form replaced by ``[secure]``: headers, query, path, JSON body, user-info.

    ``secrets`` are literal values replaced wherever they appear (the key itself, whatever
    shape a foreign library prints it in).
    """
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, SECURE)
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for third-party code that replaces every key before the record is made.

    websockets logs request headers at DEBUG (``> X-CoinAPI-Key: ...``) on both sides; a user
    who turns DEBUG on must still never see the key.
    """

    def __init__(self, logger: logging.Logger, secrets: Iterable[str] = ()) -> None:
        super().__init__(logger, {})
        self.secrets = tuple(s for s in secrets if s)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, "%s", redact(text, self.secrets), **kwargs)
