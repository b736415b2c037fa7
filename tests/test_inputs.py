"""The input rules: pairs and asset ids, durations (numbers are seconds) and times (naive means UTC)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from coinrates_nb._inputs import filter_items, pair_list, span_ns, utc, utc_ns
from coinrates_nb.exceptions import ConfigError

S = 1_000_000_000


# -- pairs and asset ids ---------------------------------------------------------------------------


def test_pairs_and_asset_ids_are_upper_cased_and_deduplicated() -> None:
    """'btc/usd', ' ETH ' and repeats give canonical, ordered, unique items; a string is one item."""
    assert filter_items(["btc/usd", " ETH ", "BTC/USD", "usdc.e"]) == ("BTC/USD", "ETH", "USDC.E")
    assert filter_items("eth/usd") == ("ETH/USD",)
    assert filter_items(x for x in ("SOL", "sol")) == ("SOL",)
    assert filter_items(np.array(["BTC/USD", "ETH"])) == ("BTC/USD", "ETH")
    assert filter_items([]) == ()


@pytest.mark.parametrize("typo", ["BTCUSD", "BTC-USD", "BTC USD", " BTC / USD ", "btc_usd", "btc:usd", "BTC|USD",
                                  "BTC,USD", "btcusd"])
def test_pair_shaped_mistakes_name_the_pair_meant(typo: str) -> None:
    """A run-together or wrongly separated pair is refused with "did you mean 'BTC/USD'"."""
    with pytest.raises(ConfigError, match="did you mean 'BTC/USD'"):
        filter_items(typo)
    with pytest.raises(ConfigError, match="did you mean 'BTC/USD'"):
        filter_items(["ETH/USD", typo])


def test_longest_quote_wins_and_real_asset_ids_pass() -> None:
    """BTCUSDT suggests BTC/USDT; ids that merely end like a quote (WBTC, BUSD, STETH) or hold '_' pass."""
    with pytest.raises(ConfigError, match="did you mean 'BTC/USDT'"):
        filter_items("BTCUSDT")
    with pytest.raises(ConfigError, match="did you mean 'ETH/BTC'"):
        filter_items("ethbtc")
    assert filter_items(["WBTC", "BUSD", "STETH", "USDT", "FOO_BAR", "ETH2.S"]) == (
        "WBTC", "BUSD", "STETH", "USDT", "FOO_BAR", "ETH2.S")


@pytest.mark.parametrize("bad", [5, None, "", "  ", ["BTC/USD", 5], ["BTC/USD", None], b"BTC/USD", {"BTC/USD": 1},
                                 ["BTC/USD", ""], "BTC/USD/EUR", "/USD", "BTC/", 3.5, True])
def test_non_pairs_are_config_errors(bad: Any) -> None:
    """Numbers, None, empty strings, bytes, dicts and malformed entries are ConfigErrors, not TypeErrors."""
    with pytest.raises(ConfigError) as info:
        filter_items(bad)
    assert type(info.value) is ConfigError and "pair" in str(info.value)


def test_error_names_the_argument() -> None:
    """The message starts from the argument name the caller passes."""
    with pytest.raises(ConfigError, match="^subscribe entries must be strings"):
        filter_items([5], "subscribe")


def test_pair_list_refuses_asset_ids() -> None:
    """pair_list takes only BASE/QUOTE pairs (charts and cross rates need pairs)."""
    assert pair_list(["btc/usd", "ETH/USD"]) == ["BTC/USD", "ETH/USD"]
    with pytest.raises(ConfigError, match="not asset ids"):
        pair_list(["BTC/USD", "ETH"])
    with pytest.raises(ConfigError, match="did you mean 'ETH/USD'"):
        pair_list("ETH-USD")


# -- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ns"), [
    (15, 15 * S),
    (2.5, 2_500_000_000),
    (np.int64(3), 3 * S),
    (np.float32(0.5), S // 2),
    ("15", 15 * S),  # a number written as a string is still seconds, not 15 ns
    ("0.25", S // 4),
    ("15min", 900 * S),
    (" 5s ", 5 * S),
    ("1 day", 86_400 * S),
    ("250ms", S // 4),
    (dt.timedelta(minutes=2), 120 * S),
    (pd.Timedelta("1h"), 3_600 * S),
    (np.timedelta64(7, "s"), 7 * S),
    (pd.offsets.Minute(3), 180 * S),
])
def test_durations(value: Any, ns: int) -> None:
    """A pandas span, a timedelta, or a bare number of seconds; the result is integer nanoseconds."""
    assert span_ns(value) == ns and isinstance(span_ns(value), int)


@pytest.mark.parametrize("bad", [0, -1, 0.0, -0.5, True, False, "abc", "", "0s", "-5s", "1M", float("nan"),
                                 float("inf"), 1e300, 1e-12, np.timedelta64("NaT"), pd.NaT, dt.timedelta(0),
                                 [5], "5 parsecs", b"5s", object()])
def test_bad_durations_are_config_errors(bad: Any) -> None:
    """Zero, negative, bools, NaN, overflowing and unparsable values say what to write."""
    with pytest.raises(ConfigError, match=r"^window must be a positive duration like '15min', '5s' or a number"):
        span_ns(bad, "window")


def test_none_duration() -> None:
    """None passes through by default and is refused, by name, when a duration is required."""
    assert span_ns(None) is None
    with pytest.raises(ConfigError, match="threshold is required"):
        span_ns(None, "threshold", allow_none=False)


# -- times -----------------------------------------------------------------------------------------


def test_naive_time_means_utc() -> None:
    """A naive time is UTC; a zoned time is converted to UTC; datetime and numpy times work."""
    want = pd.Timestamp("2026-11-24 09:00", tz="UTC")
    for value in ("2026-11-24 09:00", " 2026-11-24T09:00:00 ", "2026-11-24 10:00+01:00", dt.datetime(2026, 11, 24, 9),
                  dt.datetime(2026, 11, 24, 4, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
                  np.datetime64("2026-11-24T09:00"), pd.Timestamp("2026-11-24 09:00")):
        got = utc(value)
        assert got == want and str(got.tz) == "UTC", value
    assert utc(dt.date(2026, 11, 24)) == pd.Timestamp("2026-11-24", tz="UTC")
    assert utc_ns("2026-11-24 09:00") == want.value


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with the process time zone at UTC-10 (restored after), so local wall time differs from UTC."""
    if not hasattr(time, "tzset"):
        pytest.skip("time.tzset is POSIX-only")
    monkeypatch.setenv("TZ", "Pacific/Honolulu")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_now_and_today_are_utc(far_from_utc: None) -> None:
    """'now' and 'today' are the UTC instant and UTC midnight, not local wall time read as UTC."""
    assert pd.Timestamp("now").tzinfo is None  # what pandas alone gives: local wall time, naive
    before = pd.Timestamp.now(tz="UTC")
    now = utc("now")
    after = pd.Timestamp.now(tz="UTC")
    assert before <= now <= after
    assert utc(" Today ") in (before.normalize(), after.normalize())


@pytest.mark.parametrize("bad", [None, True, 5, 1_732_438_800, 1.5e18, "", "not a time", "2026-13-45", [1], np.nan,
                                 pd.NaT, np.datetime64("NaT")])
def test_bad_times_are_config_errors(bad: Any) -> None:
    """None, bools, bare numbers (pandas would read them as nanoseconds), NaT and junk are ConfigErrors."""
    with pytest.raises(ConfigError, match="^until must be a time"):
        utc(bad, "until")
    with pytest.raises(ConfigError, match="^until must be a time"):
        utc_ns(bad, "until")


def test_number_hint_and_out_of_range() -> None:
    """A bare number says how to write epoch seconds; a year beyond 2262 is a ConfigError from utc_ns."""
    with pytest.raises(ConfigError, match="unit='s'"):
        utc(1_732_438_800)
    assert utc("3000-01-01").year == 3000
    with pytest.raises(ConfigError, match="1677-2262"):
        utc_ns("3000-01-01")
