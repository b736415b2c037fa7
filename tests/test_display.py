"""The one formatting of rates, times, ages and statuses (coinrates_nb._display): readable, consistent, data untouched."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys

import pandas as pd
import pytest

from coinrates_nb._display import (
    LatestFrame,
    decimals_for,
    format_age,
    format_clock,
    format_rate,
    format_timestamp,
    in_scope,
    latest_html,
    shown_msgs_per_s,
    status_html,
    status_line,
)
from coinrates_nb.frame import RollingFrame
from coinrates_nb.sim import Simulator
from tests.helpers import put
from tests.test_refresh import make_status

NOW = int(pd.Timestamp("2025-12-01T22:34:05.123456789Z").value)


@pytest.mark.parametrize(("seconds", "text"), [
    (0.034432787, "34 ms"), (0.0004, "0 ms"), (2.13, "2.1 s"), (48.2, "48 s"), (245, "4 min 05 s"),
    (7_400, "2 h 03 min"), (200_000, "2 d 7 h"), (-0.012, "-12 ms"),
])
def test_ages_read_as_a_person_says_them(seconds: float, text: str) -> None:
    """Ages are "34 ms", "2.1 s", "4 min 05 s", never "0 days 00:00:00.034432787"."""
    assert format_age(seconds) == text
    assert format_age(pd.Timedelta(seconds=seconds)) == text
    assert format_age(dt.timedelta(seconds=seconds)) == text


def test_missing_values_show_a_dash() -> None:
    """NaT, None and NaN read as "–" rather than "NaT" or "nan"."""
    assert format_age(pd.NaT) == format_clock(pd.NaT) == format_timestamp(None) == format_rate(float("nan"), 2) == "–"


def test_times_are_utc_to_the_millisecond_without_an_offset() -> None:
    """A ns timestamp shows as 22:34:05.123 (or with its date), truncated to ms, no "+00:00" to wrap."""
    stamp = pd.Timestamp(NOW, unit="ns", tz="UTC")
    assert format_clock(stamp) == format_clock(NOW) == "22:34:05.123"
    assert format_timestamp(stamp) == "2025-12-01 22:34:05.123"
    assert format_clock(stamp.tz_convert("Europe/Paris")) == "22:34:05.123"  # always shown in UTC
    assert format_clock(pd.Timestamp("2025-12-01 22:34:05.9999")) == "22:34:05.999"  # naive means UTC


@pytest.mark.parametrize(("values", "shown"), [
    ([95_039.0, 94_984.5, 95_039.1234], ["95,039.0", "94,984.5", "95,039.1"]),
    ([1.08, 1.082345], ["1.08000", "1.08234"]),
    ([3398.94, 3400.0], ["3,398.94", "3,400.00"]),
    ([190.0, 189.5], ["190.000", "189.500"]),
    ([0.000123456], ["0.000123456"]),
])
def test_a_pair_keeps_one_number_of_decimals(values: list[float], shown: list[str]) -> None:
    """Six significant digits from the pair's magnitude, trailing zeros kept: no more 95,039 then 94,984.5."""
    digits = decimals_for(max(values))
    assert [format_rate(v, digits) for v in values] == shown
    assert len({len(s.split(".")[-1]) for s in shown}) == 1


def test_scope_matches_pairs_and_asset_ids() -> None:
    """A pair is in scope by name or through one of its assets; None means everything."""
    assert in_scope("BTC/EUR", None) and in_scope("BTC/EUR", ("BTC/EUR",)) and in_scope("BTC/EUR", ("EUR",))
    assert not in_scope("BTC/EUR", ("BTC/USD", "ETH"))


def latest_frame() -> pd.DataFrame:
    frame = RollingFrame()
    put(frame, NOW - 34_000_000, "BTC/USD", 95_039.123456789)
    put(frame, NOW - 2_100_000_000, "EUR/USD", 1.0823456)
    put(frame, NOW - 1_000_000, "SOL/USD", 190.0)
    return frame.latest(now_ns=NOW)


def test_latest_frame_is_a_dataframe_with_full_precision_and_a_readable_repr() -> None:
    """LatestFrame keeps every digit and ns; its HTML and text show ms times, human ages, right-aligned per-pair decimals."""
    latest = latest_frame()
    table = LatestFrame(latest)
    pd.testing.assert_frame_equal(pd.DataFrame(table), latest)
    assert table.loc["BTC/USD", "rate"] == 95_039.123456789 and table["time"].dt.nanosecond.iloc[0] == 789
    html = table._repr_html_()
    for text in ("95,039.1", "1.08235", "190.000", "34 ms", "2.1 s", "22:34:05.089", "time (UTC, 2025-12-01)"):
        assert text in html, text
    assert "+00:00" not in html and "0 days" not in html and "white-space:nowrap" in html
    assert re.search(r'text-align:right">95,039\.1<', html)
    text = repr(table)
    assert "34 ms" in text and "2025-12-01 22:34:05.089" in text and "0 days" not in text
    assert type(table.copy()) is pd.DataFrame and type(table[["rate"]]) is pd.DataFrame  # derived: plain frames
    assert "no rates yet" in LatestFrame(latest.iloc[:0])._repr_html_()


def test_latest_html_is_the_dashboard_table() -> None:
    """The dashboard's table: pair with its colour, rate, time, age; headers aligned with their values."""
    html = latest_html(latest_frame(), scope=("BTC/USD", "EUR"), colors={"BTC/USD": "#636EFA"}, stale=("EUR/USD",))
    assert 'data-pair="SOL/USD"' not in html and 'data-pair="EUR/USD"' in html and "#636EFA" in html
    headers = re.findall(r"<th style=\"[^\"]*(text-align:\w+)[^\"]*\">([^<]*)</th>", html)
    assert headers == [("text-align:left", "pair"), ("text-align:right", "rate"),
                       ("text-align:right", "time (UTC, 2025-12-01)"), ("text-align:right", "age")]
    assert "rate type" not in html and "received" not in html


def test_status_line_and_card() -> None:
    """The status bar and Status._repr_html_ share one formatting: state, badge, msgs/s (0 when stopped), notes."""
    status = make_status(state="stopped", msgs_per_s=49.4, lag_ms=34.4, silent_pairs={"FOO/USD": 31.0},
                         scope=("BTC/USD", "FOO/USD"), stale_pairs=("BTC/EUR", "BTC/USD"), last_error="boom <b>")
    assert shown_msgs_per_s(status) == 0.0
    line = status_line(status)
    assert "0.0 msgs/s" in line and "lag 34 ms" in line and "stale: BTC/USD" in line and "BTC/EUR" not in line
    card = status_html(status)
    assert card == status._repr_html_()
    for text in ("stopped", "SIMULATED DATA", "0.0 msgs/s", "no data for FOO/USD for 31 s", "boom &lt;b&gt;",
                 "BTC/USD, FOO/USD"):
        assert text in card, text
    assert "BTC/EUR" not in card


def test_display_imports_neither_plotly_nor_ipywidgets() -> None:
    """The formatting module is pure: the core's reprs use it without loading the optional UI."""
    code = ("import sys, coinrates_nb._display, coinrates_nb.status as s; "
            "print(sorted(m for m in ('plotly', 'ipywidgets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_status_bar_and_card_show_what_today_costs(simulator: Simulator) -> None:
    """Rates billed today and REST credits (the cost CoinAPI bills) are in the dashboard's status bar and the card."""
    import coinrates_nb as cr
    from coinrates_nb._display import status_html, status_line
    from tests.helpers import wait_until

    with cr.stream(["BTC/USD"], url=simulator.url, window="1min", history=True) as rates:
        wait_until(lambda: rates.status.rates_today > 0 and rates.status.rest_credits_today > 0, timeout=20)
        s = rates.status
        line, card = status_line(s), status_html(s)
        for text in (line, card):
            assert f"{s.rates_today:,} rates billed today" in text
            credits = s.rest_credits_today
            assert f"REST {credits:,} credit{'' if credits == 1 else 's'} today" in text


def test_latest_is_a_plain_dataframe_shown_as_a_readable_table(simulator: Simulator) -> None:
    """latest() keeps full precision as a DataFrame; its notebook display has ms times and human ages."""
    import coinrates_nb as cr

    with cr.stream(["BTC/USD", "ETH/USD"], url=simulator.url) as rates:
        rates.wait(timeout=20, rows=3)
        latest = rates.latest()
    assert isinstance(latest, pd.DataFrame) and latest["age"].dtype.kind == "m"
    assert type(latest[["rate"]]) is pd.DataFrame  # what is derived from it is plain pandas
    html = latest._repr_html_()
    assert "coinrates-latest" in html and "0 days" not in html and "+00:00" not in html
    assert re.search(r">\d+ ms<|>\d+(\.\d)? s<", html), html[:500]
