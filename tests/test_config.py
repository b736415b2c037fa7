"""Settings: key lookup, simulator fallback, secure transport, secret hiding."""

from __future__ import annotations

import pytest

from coinrates_nb.config import COINAPI_URL, SecretKey, Settings, redact_url
from coinrates_nb.exceptions import ConfigError

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
