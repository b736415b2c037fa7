"""Secrets: the key wrapper's checks and pickling, key extraction from URLs, and redaction."""

from __future__ import annotations

import copy
import logging
import pickle

import pytest

from coinrates_nb._secrets import SECURE, RedactingLogger, SecretKey, redact, redact_url, split_url_key
from coinrates_nb.exceptions import ConfigError

MARKER = "MARKER-KEY-9c3a7b"


def test_key_is_hidden_and_compares_by_value() -> None:
    """repr/str are [secure]; equal keys compare and hash equal; surrounding spaces are dropped."""
    key = SecretKey(f"  {MARKER}\n")
    assert repr(key) == str(key) == SECURE and key.reveal() == MARKER
    assert key == SecretKey(MARKER) and hash(key) == hash(SecretKey(MARKER)) and key != SecretKey("other")
    assert key != MARKER  # a key is not a string


@pytest.mark.parametrize(("bad", "named"), [
    ("\u200b", "U+200B (ZERO WIDTH SPACE)"),
    ("\ufeff", "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"),
    ("\u00a0", "U+00A0 (NO-BREAK SPACE)"),
    (" ", "U+0020 (SPACE)"),
    ("\r", "U+000D (a control character)"),
    ("\u00e9", "U+00E9 (LATIN SMALL LETTER E WITH ACUTE)"),
])
def test_invalid_header_characters_are_named_not_echoed(bad: str, named: str) -> None:
    """A character an HTTP header cannot carry is refused with its code point and position, not the key."""
    with pytest.raises(ConfigError) as info:
        SecretKey(MARKER + bad + "tail")
    message = str(info.value)
    assert named in message and f"position {len(MARKER) + 1} of {len(MARKER) + 5}" in message
    assert MARKER not in message and "tail" not in message
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_non_string_key_is_a_config_error() -> None:
    """A key that is not a string is a ConfigError, not an AttributeError from .strip()."""
    with pytest.raises(ConfigError, match="must be a string"):
        SecretKey(12345)  # type: ignore[arg-type]


def test_key_pickles_and_copies_without_showing_itself() -> None:
    """SecretKey survives pickle/copy/deepcopy with its value (documented), and still shows [secure]."""
    key = SecretKey(MARKER)
    data = pickle.dumps(key)
    back = pickle.loads(data)
    assert back == key and back.reveal() == MARKER and repr(back) == SECURE
    assert MARKER.encode() in data  # the key travels: multiprocessing workers must authenticate
    assert copy.copy(key) == key and copy.deepcopy(key) == key and repr(copy.deepcopy(key)) == SECURE


@pytest.mark.parametrize(("url", "clean"), [
    (f"wss://h/?apikey={MARKER}", "wss://h/"),
    (f"wss://h/?a=1&apikey={MARKER}&b=2", "wss://h/?a=1&b=2"),
    (f"wss://h/APIKEY-{MARKER}", "wss://h/"),
    (f"wss://user:{MARKER}@h:9/p?x=1", "wss://h:9/p?x=1"),
    (f"wss://{MARKER}@h/", "wss://h/"),
    (f"wss://:{MARKER}@h/", "wss://h/"),
    ("wss://user:MARKER%2DKEY%2D9c3a7b@h/", "wss://h/"),  # percent-encoded in user-info
])
def test_split_url_key_takes_the_key_out_of_query_path_and_user_info(url: str, clean: str) -> None:
    """Every place a URL can carry a key gives the key and a URL without it."""
    assert split_url_key(url) == (clean, MARKER)


def test_split_url_key_leaves_clean_urls_and_drops_empty_user_info() -> None:
    """A URL without a key is unchanged; user-info without a key in it is still dropped."""
    assert split_url_key("wss://h:9/p?x=1") == ("wss://h:9/p?x=1", None)
    assert split_url_key("ws://[::1]:9/") == ("ws://[::1]:9/", None)
    assert split_url_key("wss://@h/") == ("wss://h/", None)


def test_split_url_key_errors() -> None:
    """Two different keys, or a URL urllib cannot parse, are ConfigErrors (the latter not a bare ValueError)."""
    with pytest.raises(ConfigError, match="two different"):
        split_url_key(f"wss://u:{MARKER}@h/?apikey=other")
    with pytest.raises(ConfigError, match="malformed") as info:
        split_url_key(f"ws://u:{MARKER}@[::1")
    assert MARKER not in str(info.value)


def test_redact_url_drops_user_info_query_and_path_key() -> None:
    """redact_url shows no user-info, query, fragment or /APIKEY- segment."""
    assert redact_url(f"wss://user:{MARKER}@h:1/p?x=1#f") == "wss://h:1/p"
    assert redact_url(f"wss://{MARKER}@h/") == "wss://h/"
    assert redact_url(f"wss://h/APIKEY-{MARKER}/more") == "wss://h"
    assert redact_url("wss://h/path") == "wss://h/path"


def test_redact_text_hides_user_info_and_literal_keys() -> None:
    """redact() hides user-info in any URL of a message, the header line, the query and the literal key."""
    text = (f"connecting to ws://user:{MARKER}@example.com/ then wss://{MARKER}@h/\n"
            f"> X-CoinAPI-Key: {MARKER}\nGET /?apikey={MARKER} and {{\"apikey\": \"{MARKER}\"}} raw {MARKER}")
    out = redact(text, [MARKER])
    assert MARKER not in out and "user" not in out and "ws://[secure]@example.com/" in out


def test_redacting_logger_hides_user_info(caplog: pytest.LogCaptureFixture) -> None:
    """A foreign library's log line with a user-info URL is redacted before the record is made."""
    log = RedactingLogger(logging.getLogger("coinrates_nb.test.secrets"), [MARKER])
    with caplog.at_level(logging.DEBUG, logger="coinrates_nb.test.secrets"):
        log.debug("opening %s", f"wss://user:{MARKER}@h/")
    assert caplog.records and MARKER not in caplog.text and "[secure]@h/" in caplog.text


def test_resolve_key_is_the_one_rule_for_keys() -> None:
    """A string or SecretKey, else COINAPI_KEY from the given environment; wrong types and bad keys are ConfigError."""
    from coinrates_nb._secrets import SecretKey, resolve_key

    key = SecretKey("A" * 36)
    assert resolve_key(key) is key and resolve_key(" " + "B" * 36 + " ") == SecretKey("B" * 36)
    assert resolve_key(None) is None and resolve_key(None, {}) is None
    assert resolve_key(None, {"COINAPI_KEY": "C" * 36}) == SecretKey("C" * 36)
    with pytest.raises(ConfigError, match="api_key must be a string"):
        resolve_key(1234)
    with pytest.raises(ConfigError, match="COINAPI_KEY: the API key contains") as err:
        resolve_key(None, {"COINAPI_KEY": "D" * 10 + "\u200b" + "D" * 10})
    assert "D" * 10 not in str(err.value)
