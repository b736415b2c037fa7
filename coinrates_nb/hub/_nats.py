"""What the hub and its consumers both need of a NATS connection: TLS for ``tls://``, and its errors translated."""

from __future__ import annotations

import ssl
from typing import Any

from .._secrets import redact_url
from ..config import Settings
from ..exceptions import CoinratesError, ConfigError, TransportError

__all__ = ["check_url", "tls_context", "translate"]


def tls_context(settings: Settings, url: str) -> ssl.SSLContext | None:
    """A verifying TLS context for ``tls://`` URLs (the settings' CA bundle or context if given), else ``None``."""
    if not url.lower().startswith("tls://"):
        return None
    if isinstance(settings.ssl, ssl.SSLContext):
        return settings.ssl
    if isinstance(settings.ssl, str):
        return ssl.create_default_context(cafile=settings.ssl)
    return ssl.create_default_context()


def translate(exc: BaseException) -> BaseException:
    """NATS client errors as ``TransportError`` (retried); ours, and cancellation or exit, pass through."""
    if isinstance(exc, CoinratesError) or not isinstance(exc, Exception):
        return exc
    return TransportError(f"NATS: {type(exc).__name__}: {exc}" if str(exc) else f"NATS: {type(exc).__name__}")


def check_url(url: Any) -> str:
    """A NATS URL (or a comma-separated list): ``nats://`` or ``tls://`` with a host, else a ``ConfigError``."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"nats_url must be a string like 'nats://127.0.0.1:4222', not {url!r}")
    for part in url.split(","):
        scheme, sep, rest = part.strip().partition("://")
        if not sep or scheme.lower() not in ("nats", "tls") or not rest.split("/", 1)[0]:
            raise ConfigError(f"nats_url must look like 'nats://host:4222' (or tls://), not {redact_url(part.strip())!r}")
    return url.strip()
