"""How the simulator finds and checks an API key: every documented form, compared in constant time.

The documented ways to authenticate are HTTP-level (``../shared/protocol/exrates-websocket.md``
§2.1): ``X-CoinAPI-Key``, ``Authorization`` (raw or Basic), ``?apikey=`` and a ``/APIKEY-<key>``
path segment; official SDKs also put ``apikey`` in the first hello body (§2.2), which the server
checks itself. Pure: no sockets, no logging (a key never reaches a log from here).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers

from .._secrets import PATH_KEY

__all__ = ["INVALID_KEY_MESSAGE", "http_keys", "key_matches"]

INVALID_KEY_MESSAGE: Final = "Invalid API key"
"""The documented text of the bad-key error (§2.3, §4.4)."""

_BEARER = re.compile(r"(?i)bearer\s")
_BASIC = re.compile(r"(?i)basic\s+(\S+)")


def http_keys(path: str, headers: Mapping[str, str] | Headers) -> list[str]:
    """Every API key the upgrade request carries, in any documented form (§2.1).

    ``X-CoinAPI-Key``, ``Authorization: <key>``, ``Authorization: Basic base64(coinapi:<key>)``,
    the ``apikey`` query parameter and a ``/APIKEY-<key>`` path segment. ``Authorization: Bearer``
    is a JWT add-on, not a key, and is ignored.
    """
    keys: list[str] = []
    get = headers.get
    value = get("X-CoinAPI-Key")
    if value:
        keys.append(value.strip())
    auth = (get("Authorization") or "").strip()
    if auth and not _BEARER.match(auth):
        basic = _BASIC.fullmatch(auth)
        if basic is None:
            keys.append(auth)
        else:
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                _, _, password = base64.b64decode(basic.group(1), validate=True).decode().partition(":")
                if password:
                    keys.append(password)
    split = urlsplit(path)
    keys.extend(v for k, v in parse_qsl(split.query) if k.lower() == "apikey" and v)
    found = PATH_KEY.search(split.path)
    if found:
        keys.append(found.group(1))
    return keys


def key_matches(candidate: str | None, key: str) -> bool:
    """Constant-time comparison, so the simulator does not teach timing attacks."""
    return candidate is not None and hmac.compare_digest(candidate.encode(), key.encode())
