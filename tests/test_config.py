"""Settings: key lookup, simulator fallback, strict fields, secure transport, redirects, TLS, pickling."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import logging
import pickle
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from coinrates_nb._secrets import SecretKey, redact_url
from coinrates_nb.config import COINAPI_URL, Settings, key_allowed
from coinrates_nb.exceptions import ConfigError, TransportError
from coinrates_nb.retry import classify
from tests.helpers import SLOW

MARKER = "MARKER-KEY-5f1e2d"


def test_no_key_means_simulated() -> None:
    """Without a key or URL the embedded simulator is used and labelled simulated."""
    s = Settings.resolve(env={})
    assert s.simulated and s.url is None and s.api_key is None and s.source == "simulated"


def test_env_key_means_live() -> None:
    """COINAPI_KEY selects the live endpoint and sends the key in X-CoinAPI-Key."""
    s = Settings.resolve(env={"COINAPI_KEY": MARKER})
    assert not s.simulated and s.url == COINAPI_URL and s.headers() == {"X-CoinAPI-Key": MARKER}


def test_argument_key_wins() -> None:
    """api_key= overrides the environment."""
    s = Settings.resolve(api_key="other", env={"COINAPI_KEY": MARKER})
    assert s.api_key == SecretKey("other")


def test_key_never_shown() -> None:
    """The key is hidden in SecretKey and Settings reprs."""
    s = Settings.resolve(api_key=MARKER, env={})
    assert MARKER not in repr(s) and MARKER not in str(s.api_key) and repr(s.api_key) == "[secure]"


def test_plain_ws_with_key_to_remote_refused() -> None:
    """A key over unencrypted ws:// to a non-loopback host is refused."""
    with pytest.raises(ConfigError) as info:
        Settings.resolve("ws://example.com/", api_key=MARKER, env={})
    assert MARKER not in str(info.value)
    assert Settings.resolve("ws://127.0.0.1:9/", api_key=MARKER, env={}).url == "ws://127.0.0.1:9/"
    assert Settings.resolve("wss://example.com/", api_key=MARKER, env={}).url == "wss://example.com/"
    with pytest.raises(ConfigError, match="unencrypted"):  # built directly, without resolve()
        Settings(url="ws://example.com/", api_key=SecretKey(MARKER))


def test_bad_scheme() -> None:
    """Only ws:// and wss:// URLs are accepted."""
    with pytest.raises(ConfigError):
        Settings.resolve("http://127.0.0.1/", env={})


def test_simulated_never_sends_real_key() -> None:
    """simulated=True with COINAPI_KEY set does not send the real key to the local simulator."""
    s = Settings.resolve(simulated=True, env={"COINAPI_KEY": MARKER})
    assert s.simulated and s.api_key is None


def test_empty_key_rejected() -> None:
    """An empty or whitespace key is a configuration error."""
    with pytest.raises(ConfigError):
        SecretKey("  ")


def test_redact_url() -> None:
    """Query strings and /APIKEY- segments are cut from URLs before they are shown."""
    assert redact_url("wss://h/?apikey=" + MARKER) == "wss://h/"
    assert redact_url("wss://h/APIKEY-" + MARKER) == "wss://h"


# -- every field checked where it is given --------------------------------------------------------

BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"stale_after": 0}, "stale_after"),
    ({"stale_after": -1.0}, "stale_after"),
    ({"stale_after": "soon"}, "stale_after"),
    ({"update_limit_ms": -1}, "update_limit_ms"),
    ({"update_limit_ms": 2.5}, "update_limit_ms"),
    ({"update_limit_ms": True}, "update_limit_ms"),
    ({"update_limit_ms": 2**31}, "update_limit_ms"),
    ({"compression": "gzip"}, "compression"),
    ({"compression": True}, "compression"),
    ({"open_timeout": 0}, "open_timeout"),
    ({"open_timeout": None}, "open_timeout"),
    ({"ping_interval": 0}, "ping_interval"),
    ({"ping_timeout": -5}, "ping_timeout"),
    ({"max_frame_bytes": 0}, "max_frame_bytes"),
    ({"max_frame_bytes": 1.5e6}, "max_frame_bytes"),
    ({"heartbeat": "no"}, "heartbeat"),
    ({"heartbeat": 1}, "heartbeat"),
    ({"simulated": "yes"}, "simulated"),
    ({"backoff_initial": 0}, "backoff_initial"),
    ({"backoff_initial": float("nan")}, "backoff_initial"),
    ({"backoff_initial": 5, "backoff_cap": 1}, "backoff_cap"),
    ({"simulator_rate_hz": 0}, "simulator_rate_hz"),
    ({"simulator_rate_hz": float("inf")}, "simulator_rate_hz"),
    ({"simulator_rate_hz": "fast"}, "simulator_rate_hz"),
    ({"simulator_seed": -1}, "simulator_seed"),
    ({"ssl": 5}, "ssl"),
    ({"api_key": 12345}, "api_key"),
]


@pytest.mark.parametrize(("options", "name"), BAD_SETTINGS, ids=[repr(o) for o, _ in BAD_SETTINGS])
def test_every_setting_is_checked_where_it_is_given(options: dict[str, Any], name: str) -> None:
    """A bad value is a ConfigError naming the field, from the constructor and from resolve() alike."""
    with pytest.raises(ConfigError, match=name):
        Settings(**options)
    with pytest.raises(ConfigError, match=name):
        Settings.resolve(env={}, **options)


def test_accepted_ranges_are_stated() -> None:
    """The message says what is accepted, not only that the value is wrong."""
    with pytest.raises(ConfigError, match=r"from 0 to 2147483647 or None"):
        Settings(update_limit_ms=-1)
    with pytest.raises(ConfigError, match=r"'deflate' or None"):
        Settings(compression="zstd")
    with pytest.raises(ConfigError, match=r"positive duration like '15min', '5s' or a number of seconds"):
        Settings(backoff_initial=0)
    with pytest.raises(ConfigError, match=r">= backoff_initial"):
        Settings(backoff_initial=2, backoff_cap=1)


def test_durations_are_seconds_and_strings_work() -> None:
    """Durations take seconds, '10s' strings and timedeltas, and are stored as float seconds."""
    # the fields are typed float (what readers get); strings and timedeltas are accepted and converted
    s = Settings(stale_after="10s", open_timeout=dt.timedelta(milliseconds=2500),  # type: ignore[arg-type]
                 ping_interval="1min", ping_timeout=None, backoff_initial="250ms",  # type: ignore[arg-type]
                 backoff_cap=30)
    assert (s.stale_after, s.open_timeout, s.ping_interval, s.ping_timeout) == (10.0, 2.5, 60.0, None)
    assert (s.backoff_initial, s.backoff_cap) == (0.25, 30.0)
    assert all(type(v) is float for v in (s.stale_after, s.open_timeout, s.ping_interval, s.backoff_cap))
    assert Settings.resolve(env={}, stale_after="2min", update_limit_ms=0).stale_after == 120.0
    assert Settings(compression=None, heartbeat=False).compression is None


def test_unknown_option_is_a_config_error() -> None:
    """A misspelt option is a ConfigError with the likely name, not a TypeError from __init__."""
    with pytest.raises(ConfigError, match="did you mean 'stale_after'"):
        Settings.resolve(env={}, stale_afer=5)


@pytest.mark.parametrize(("url", "why"), [
    ("ws://[::1", "malformed"),
    ("ws://host:99999/", "malformed"),
    ("ws://host:http/", "malformed"),
    ("http://127.0.0.1/", "scheme"),
    ("127.0.0.1:8765", "scheme"),
    ("ws:///path", "no host"),
    ("wss://", "no host"),
    ("ws://exa mple.com/", "invalid host"),
    ("ws://[fe80::zz]/", "malformed|invalid IPv6"),
    ("wss://h/#top", "fragment"),
])
def test_malformed_urls_are_config_errors(url: str, why: str) -> None:
    """URLs urllib cannot parse, or that name no ws(s) host, raise ConfigError (never a bare ValueError)."""
    with pytest.raises(ConfigError, match=why) as info:
        Settings.resolve(url, env={})
    assert type(info.value) is ConfigError
    with pytest.raises(ConfigError, match=why):
        Settings(url=url)


# -- the key ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["\u200b", "\u00a0", "\t", "\u00e9", " ", "\x00", "\x7f", "\u2028"])
def test_key_with_a_character_no_header_can_carry_is_refused_without_echo(bad: str) -> None:
    """A pasted invisible or non-ASCII character is a ConfigError naming the character, never the key."""
    for build in (lambda: SecretKey(MARKER[:6] + bad + MARKER[6:]),
                  lambda: Settings.resolve(api_key=MARKER + bad + "x", env={}),
                  lambda: Settings.resolve(env={"COINAPI_KEY": MARKER + bad + "x"})):
        with pytest.raises(ConfigError) as info:
            build()
        text = str(info.value) + repr(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
        assert MARKER not in text and MARKER[:6] not in text
        assert f"U+{ord(bad):04X}" in text


def test_env_key_error_says_where_the_key_came_from() -> None:
    """A bad COINAPI_KEY is reported as coming from the environment variable."""
    with pytest.raises(ConfigError, match="^COINAPI_KEY: "):
        Settings.resolve(env={"COINAPI_KEY": MARKER + "\u200b"})


@pytest.mark.parametrize("url", [f"wss://user:{MARKER}@example.com/v1", f"wss://{MARKER}@example.com/v1",
                                 f"wss://:{MARKER}@example.com/v1"])
def test_key_in_user_info_moves_to_the_header(url: str) -> None:
    """wss://user:KEY@host/ sends KEY in X-CoinAPI-Key and keeps no user-info in the URL."""
    s = Settings.resolve(url, env={})
    assert s.url == "wss://example.com/v1" and s.headers() == {"X-CoinAPI-Key": MARKER}
    assert MARKER not in repr(s) and "@" not in s.url
    assert Settings(url=url).url == "wss://example.com/v1"


def test_key_in_user_info_over_plain_ws_is_refused() -> None:
    """ws://user:KEY@remote/ is refused like any key over plain ws://, without showing it."""
    with pytest.raises(ConfigError, match="unencrypted") as info:
        Settings.resolve(f"ws://user:{MARKER}@example.com/", env={})
    assert MARKER not in str(info.value)
    assert Settings.resolve(f"ws://u:{MARKER}@127.0.0.1:9/", env={}).url == "ws://127.0.0.1:9/"


def test_two_different_keys_are_refused() -> None:
    """A URL key that differs from api_key is a ConfigError (either could be the mistake)."""
    with pytest.raises(ConfigError, match="two different"):
        Settings.resolve(f"wss://u:{MARKER}@h/", api_key="other", env={})
    with pytest.raises(ConfigError, match="two different"):
        Settings(url=f"wss://u:{MARKER}@h/", api_key=SecretKey("other"))
    assert Settings.resolve(f"wss://u:{MARKER}@h/?apikey={MARKER}", api_key=MARKER, env={}).api_key == SecretKey(MARKER)


def test_user_info_is_redacted_everywhere() -> None:
    """redact_url drops user-info, with or without a password."""
    assert redact_url(f"wss://user:{MARKER}@h:1/p?x=1") == "wss://h:1/p"
    assert redact_url(f"wss://{MARKER}@h/") == "wss://h/"


# -- redirects -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ("wss://api.example.com/", "wss://api.example.com/v2", True),
    ("wss://api.example.com/", "/elsewhere", True),  # relative: same origin
    ("wss://api.example.com/", "wss://API.example.com:443/x", True),  # case and default port
    ("wss://api.example.com/", "wss://evil.example.net/", False),
    ("wss://api.example.com/", "wss://api.example.com:8443/", False),
    ("wss://api.example.com/", "ws://api.example.com/", False),
    ("ws://api.example.com/", "ws://api.example.com/", False),  # plain text to a remote host
    ("ws://127.0.0.1:9/", "ws://127.0.0.1:9/other", True),
    ("ws://127.0.0.1:9/", "ws://127.0.0.1:10/", False),
    ("ws://127.0.0.1:9/", "ws://localhost:9/", False),
    ("ws://127.0.0.1:9/", "wss://127.0.0.1:9/", False),
    ("ws://[::1]:9/", "ws://[::1]:9/x", True),
    ("wss://api.example.com/", "wss://[::1", False),
    ("wss://api.example.com/", "https://api.example.com/", False),
    ("wss://api.example.com/", "//evil.example.net/", False),  # scheme-relative
])
def test_key_allowed_only_to_the_same_origin_and_securely(old: str, new: str, allowed: bool) -> None:
    """The key may follow a redirect only to the same scheme, host and port, and only over wss:// or loopback."""
    assert key_allowed(old, new) is allowed


def test_headers_for_a_redirect_target() -> None:
    """headers_for() gives the key header for the named origin and nothing for another one."""
    s = Settings.resolve("wss://api.example.com/", api_key=MARKER, env={})
    assert s.headers_for("wss://api.example.com/v2") == {"X-CoinAPI-Key": MARKER}
    assert s.headers_for("wss://evil.example.net/") == {}
    assert Settings.resolve(env={}).headers_for("ws://127.0.0.1:1/") == {}


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1 (it is its own CA) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "ca.pem", where / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60 * SLOW)
    return cert, key


def test_ssl_accepts_a_ca_bundle_path(tls_files: tuple[Path, Path]) -> None:
    """ssl=<path> (str or Path) builds a verifying context that trusts that CA; ws:// gets None."""
    cert, _ = tls_files
    for given in (cert, str(cert)):
        s = Settings.resolve("wss://localhost:1/", api_key=MARKER, env={}, ssl=given)
        ctx = s.ssl_context()
        assert s.ssl == str(cert) and isinstance(ctx, ssl.SSLContext)
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "localhost"),),)]
        assert s.ssl_context() is ctx  # built once, reused by every reconnect
    assert Settings(url="ws://127.0.0.1:1/", ssl=cert).ssl_context() is None
    assert Settings(ssl=cert).ssl_context() is None  # the embedded simulator speaks ws://


def test_ssl_accepts_a_context_and_defaults_to_system_cas() -> None:
    """An SSLContext is passed on as given; ssl=None gives one default verifying context for wss://."""
    mine = ssl.create_default_context()
    assert Settings(url="wss://h/", ssl=mine).ssl_context() is mine
    plain = Settings(url="wss://h/")
    default = plain.ssl_context()
    assert isinstance(default, ssl.SSLContext) and default.verify_mode == ssl.CERT_REQUIRED
    assert plain.ssl_context() is default and dataclasses.asdict(plain)["ssl"] is None  # the cache is no field
    assert Settings(url="ws://127.0.0.1:1/").ssl_context() is None


def test_ssl_with_a_missing_or_invalid_bundle_is_a_config_error(tmp_path: Path) -> None:
    """A CA path that does not exist or holds no certificate is refused when the settings are made."""
    with pytest.raises(ConfigError, match="does not exist"):
        Settings(url="wss://h/", ssl=tmp_path / "missing.pem")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="not a readable PEM CA bundle"):
        Settings(url="wss://h/", ssl=junk)
    with pytest.raises(ConfigError, match="empty path"):
        Settings(url="wss://h/", ssl="")


def test_ssl_context_verifies_a_real_handshake(tls_files: tuple[Path, Path]) -> None:
    """Against a server with a private CA: the CA bundle connects; the default fails, fatally, with advice."""
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async def scenario() -> tuple[str, BaseException]:
        async with serve(echo, "127.0.0.1", 0, ssl=server_ctx) as server:
            port = server.sockets[0].getsockname()[1]
            url = f"wss://localhost:{port}/"
            trusted = Settings(url=url, ssl=str(cert))
            async with connect(url, ssl=trusted.ssl_context(), proxy=None, open_timeout=10 * SLOW) as ws:
                await ws.send("ping")
                answer = str(await ws.recv())
            try:
                await connect(url, ssl=Settings(url=url).ssl_context(), proxy=None, open_timeout=10 * SLOW)
            except ssl.SSLCertVerificationError as exc:
                try:  # what client.Session does at its edge
                    raise TransportError(f"{type(exc).__name__}: {exc}") from exc
                except TransportError as wrapped:
                    return answer, wrapped
            raise AssertionError("the default context trusted a private CA")

    answer, error = asyncio.run(scenario())
    decision = classify(error)
    assert answer == "ping"
    assert not decision.retry and "TLS certificate verification failed" in decision.reason
    assert "ssl=" in decision.reason


# -- copy and pickle -------------------------------------------------------------------------------


def test_settings_pickle_with_the_key_but_never_show_it(caplog: pytest.LogCaptureFixture) -> None:
    """Pickled settings keep the key (documented) and unpickled ones still show only [secure]."""
    s = Settings.resolve("wss://h/", api_key=MARKER, env={}, stale_after="3s")
    data = pickle.dumps(s)
    back = pickle.loads(data)
    assert back == s and back.api_key is not None and back.api_key.reveal() == MARKER
    assert back.stale_after == 3.0 and back.headers() == {"X-CoinAPI-Key": MARKER}
    assert MARKER.encode() in data  # the decision: the key travels, for multiprocessing workers
    assert MARKER not in repr(back) and MARKER not in str(back) and repr(back.api_key) == "[secure]"
    with caplog.at_level(logging.DEBUG, logger="coinrates_nb.test"):
        logging.getLogger("coinrates_nb.test").info("settings %s %r", back, back.api_key)
    assert caplog.records and MARKER not in caplog.text


def test_settings_copy_and_deepcopy() -> None:
    """copy and deepcopy work (immutable: the same object), with or without an SSLContext."""
    s = Settings.resolve("wss://h/", api_key=MARKER, env={}, ssl=ssl.create_default_context())
    assert copy.copy(s) is s and copy.deepcopy(s) is s
    assert copy.deepcopy({"s": s})["s"] == s


def test_pickle_keeps_a_ca_path_and_refuses_a_context(tls_files: tuple[Path, Path]) -> None:
    """A CA bundle path travels and is loaded again; an SSLContext is refused with a ConfigError that says why."""
    cert, _ = tls_files
    back = pickle.loads(pickle.dumps(Settings(url="wss://h/", ssl=cert)))
    ctx = back.ssl_context()
    assert back.ssl == str(cert) and ctx is not None and len(ctx.get_ca_certs()) == 1
    with pytest.raises(ConfigError, match="ssl='/path/to/ca-bundle.pem'"):
        pickle.dumps(Settings(url="wss://h/", ssl=ssl.create_default_context()))
