"""Analysis functions and the df.rates accessor, checked against values computed by hand."""

from __future__ import annotations

import datetime as dt
import math
import statistics
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import coinrates_nb as cr
from coinrates_nb import analysis as an
from tests.helpers import put

T0 = pd.Timestamp("2026-11-24 12:00:00", tz="UTC")


def rates_frame(rows: list[tuple[float, str, float]]) -> pd.DataFrame:
    """A collector-shaped frame from ``(seconds after T0, pair, rate)`` rows."""
    index = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=s) for s, _, _ in rows], name="time").as_unit("ns")
    pairs = [p for _, p, _ in rows]
    return pd.DataFrame({
        "pair": pd.Categorical(pairs),
        "base": pd.Categorical([p.split("/")[0] for p in pairs]),
        "quote": pd.Categorical([p.split("/")[1] for p in pairs]),
        "rate": [r for _, _, r in rows],
    }, index=index)


@pytest.fixture
def df() -> pd.DataFrame:
    """BTC/USD with a silence, USD/EUR (the inverted leg) and a streamed BTC/EUR."""
    return rates_frame([
        (0.0, "BTC/USD", 100.0),
        (1.0, "USD/EUR", 0.5),
        (1.5, "BTC/EUR", 49.5),
        (2.0, "BTC/USD", 110.0),
        (10.0, "BTC/USD", 121.0),
    ])


def at(seconds: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=seconds)


def test_age_per_pair_and_staleness(df: pd.DataFrame) -> None:
    """age() gives each pair's newest update and its age at `now`, flagging the stale ones."""
    out = an.age(df, now=at(20), stale_after="15s")
    assert list(out.index) == ["BTC/EUR", "BTC/USD", "USD/EUR"]
    assert out.loc["BTC/USD", "time"] == at(10) and out.loc["BTC/USD", "rate"] == 121.0
    assert out.loc["BTC/USD", "age"] == pd.Timedelta(seconds=10)
    assert out.loc["BTC/EUR", "age"] == pd.Timedelta(seconds=18.5)
    assert out["stale"].to_dict() == {"BTC/EUR": True, "BTC/USD": False, "USD/EUR": True}


def test_gaps_are_strictly_longer_than_threshold(df: pd.DataFrame) -> None:
    """gaps() lists silences longer than the threshold per pair, and trailing ones up to `until`."""
    out = an.gaps(df, "3s")
    assert out[["pair", "start", "end", "duration", "open"]].values.tolist() == [
        ["BTC/USD", at(2), at(10), pd.Timedelta(seconds=8), False]]
    assert an.gaps(df, "8s").empty  # exactly the threshold is not a gap
    trailing = an.gaps(df, "9s", until=at(20))
    assert trailing[["pair", "start", "duration", "open"]].values.tolist() == [
        ["USD/EUR", at(1), pd.Timedelta(seconds=19), True],
        ["BTC/EUR", at(1.5), pd.Timedelta(seconds=18.5), True],
        ["BTC/USD", at(10), pd.Timedelta(seconds=10), True],
    ]
    assert str(out["start"].dtype) == "datetime64[ns, UTC]"


def test_ohlc_bars_never_invent_prices(df: pd.DataFrame) -> None:
    """ohlc() buckets each pair; an empty bucket is NaN with count 0, not the previous close."""
    bars = an.ohlc(df, "5s", pair="BTC/USD")
    assert bars.index.tolist() == [at(0), at(5), at(10)]
    assert bars.loc[at(0)].tolist() == [100.0, 110.0, 100.0, 110.0, 2]
    assert bars.loc[at(5), "count"] == 0 and bars.loc[at(5), ["open", "close"]].isna().all()
    assert bars.loc[at(10), "close"] == 121.0
    every = an.ohlc(df, "5s")
    assert every.columns.names == ["pair", "field"] and every[("BTC/EUR", "open")].iloc[0] == 49.5


def test_log_returns_tick_and_bucketed(df: pd.DataFrame) -> None:
    """returns() is ln(r_t / r_t-1): per update, or between bucket closes (0 across a silent bucket)."""
    ticks = an.returns(df, pair="BTC/USD").dropna()
    assert ticks.index.tolist() == [at(2), at(10)]
    assert ticks.tolist() == pytest.approx([math.log(1.1), math.log(1.1)])
    per_s = an.returns(df, freq="1s")["BTC/USD"]
    assert per_s[at(2)] == pytest.approx(math.log(1.1))
    assert (per_s[at(3):at(9)] == 0).all() and per_s[at(10)] == pytest.approx(math.log(1.1))
    assert math.isnan(per_s[at(0)])


def test_rolling_volatility_matches_hand_computation() -> None:
    """volatility() is the sample std of log returns over the trailing window, optionally annualised."""
    frame = rates_frame([(0, "BTC/USD", 100.0), (1, "BTC/USD", 110.0), (2, "BTC/USD", 99.0), (3, "BTC/USD", 108.9)])
    r = [math.log(1.1), math.log(0.9), math.log(1.1)]
    vol = an.volatility(frame, window="3s", freq="1s")["BTC/USD"]
    assert math.isnan(vol[at(1)])  # one return: not enough for a sample std
    assert vol[at(2)] == pytest.approx(statistics.stdev(r[:2]))
    assert vol[at(3)] == pytest.approx(statistics.stdev(r))
    yearly = an.volatility(frame, window="3s", freq="1s", annualize=True)["BTC/USD"]
    assert yearly[at(3)] == pytest.approx(statistics.stdev(r) * math.sqrt(365.25 * 86_400))
    with pytest.raises(cr.ConfigError, match="annualize"):
        an.volatility(frame, freq=None, annualize=True)


def test_cross_inverts_legs_aligns_asof_and_measures_divergence(df: pd.DataFrame) -> None:
    """cross(BTC, EUR, via USD) = BTC/USD / (1 / USD/EUR), as-of aligned, vs the streamed BTC/EUR in bps."""
    out = an.cross(df, "BTC", "EUR", via="USD")
    assert out.attrs["legs"] == {"base_leg": "BTC/USD", "quote_leg": "1/(USD/EUR)", "direct": "BTC/EUR"}
    assert out.index.tolist() == [at(0), at(1), at(1.5), at(2), at(10)]
    assert math.isnan(out.loc[at(0), "cross"]) and pd.isna(out.loc[at(0), "staleness"])  # no EUR leg yet
    assert out.loc[at(1.5), ["base_leg", "quote_leg", "cross", "direct"]].tolist() == [100.0, 2.0, 50.0, 49.5]
    assert out.loc[at(1.5), "divergence_bps"] == pytest.approx((50 / 49.5 - 1) * 1e4)
    assert out.loc[at(2), "cross"] == 55.0 and out.loc[at(2), "staleness"] == pd.Timedelta(seconds=1)
    assert out.loc[at(10), "cross"] == 60.5
    strict = an.cross(df, "BTC", "EUR", via="USD", tolerance="5s")
    assert math.isnan(strict.loc[at(10), "cross"]) and math.isnan(strict.loc[at(10), "direct"])
    assert strict.loc[at(10), "staleness"] == pd.Timedelta(seconds=9)  # reported even when blanked
    assert strict.loc[at(2), "cross"] == 55.0


def test_cross_with_direct_legs_and_errors() -> None:
    """Legs quoted as X/USD need no inversion; a missing leg or repeated asset is a ConfigError."""
    frame = rates_frame([(0, "BTC/USD", 90_000.0), (0, "EUR/USD", 1.08), (0.5, "BTC/EUR", 83_400.0)])
    out = an.cross(frame, "btc", "eur")
    assert out.attrs["legs"]["quote_leg"] == "EUR/USD"
    assert out.loc[at(0.5), "cross"] == pytest.approx(90_000 / 1.08)
    assert out.loc[at(0.5), "divergence_bps"] == pytest.approx((90_000 / 1.08 / 83_400 - 1) * 1e4)
    no_direct = an.cross(frame[frame["pair"] != "BTC/EUR"], "BTC", "EUR")
    assert no_direct.attrs["legs"]["direct"] is None and no_direct["divergence_bps"].isna().all()
    with pytest.raises(cr.ConfigError, match="ETH/USD or USD/ETH"):
        an.cross(frame, "ETH", "EUR")
    with pytest.raises(cr.ConfigError, match="different"):
        an.cross(frame, "BTC", "USD", via="USD")


def test_views_match_the_rolling_frame() -> None:
    """ohlc() and wide() on a snapshot equal the RollingFrame's own views."""
    frame = cr.RollingFrame(max_rows=1000)
    rng = np.random.default_rng(3)
    start = T0.value
    for i in range(300):
        pair = ("BTC/USD", "ETH/USD", "BTC/EUR")[i % 3]
        put(frame, start + int(i * 37e6) + 100, pair, float(rng.uniform(1, 2)), "BASE_ALL_CROSSES_TO_REF", start + i)
    snap = frame.snapshot()
    pd.testing.assert_frame_equal(an.ohlc(snap, "1s"), frame.ohlc("1s"))
    pd.testing.assert_frame_equal(an.ohlc(snap, "1s", pair="ETH/USD"), frame.ohlc("1s", pair="ETH/USD"))
    loose = {"check_column_type": False, "check_names": False, "check_freq": False}  # names/freq are cosmetic
    pd.testing.assert_frame_equal(an.wide(snap), frame.wide(), **loose)
    pd.testing.assert_frame_equal(an.wide(snap, freq="500ms"), frame.wide(freq="500ms"), **loose)


def test_accessor_delegates_and_validates(df: pd.DataFrame) -> None:
    """df.rates.* returns the same as the functions; frames without pair/rate get an AttributeError."""
    pd.testing.assert_frame_equal(df.rates.ohlc("5s"), an.ohlc(df, "5s"))
    pd.testing.assert_frame_equal(df.rates.cross("BTC", "EUR", via="USD"), an.cross(df, "BTC", "EUR"))
    pd.testing.assert_frame_equal(df.rates.gaps("3s"), an.gaps(df, "3s"))
    pd.testing.assert_frame_equal(df.rates.age(now=at(20)), an.age(df, now=at(20)))
    pd.testing.assert_frame_equal(df.rates.returns("1s"), an.returns(df, "1s"))
    pd.testing.assert_frame_equal(df.rates.volatility("3s"), an.volatility(df, "3s"))
    pd.testing.assert_frame_equal(df.rates.wide(), an.wide(df))
    assert df.rates.pairs == ["BTC/EUR", "BTC/USD", "USD/EUR"]
    with pytest.raises(AttributeError, match="pair"):
        pd.DataFrame({"x": [1]}).rates  # noqa: B018 - the attribute access is the test


def test_inputs_time_column_naive_index_and_df_holders(df: pd.DataFrame) -> None:
    """A 'time' column, a naive (UTC) index, a microsecond index, or an object with .df all work."""
    expected = an.gaps(df, "3s")
    pd.testing.assert_frame_equal(an.gaps(df.reset_index(), "3s"), expected)
    pd.testing.assert_frame_equal(an.gaps(df.tz_localize(None), "3s"), expected)
    pd.testing.assert_frame_equal(an.gaps(df.set_axis(df.index.as_unit("us")), "3s"), expected)
    pd.testing.assert_frame_equal(an.gaps(SimpleNamespace(df=df), "3s"), expected)
    with pytest.raises(cr.ConfigError):
        an.gaps(SimpleNamespace(), "3s")
    assert an.gaps(df.iloc[:0], "3s").empty and an.age(df.iloc[:0]).empty


def test_package_import_registers_accessor_cheaply() -> None:
    """`import coinrates_nb` alone registers df.rates without loading recording or plotting modules."""
    code = ("import sys, pandas as pd, coinrates_nb;"
            "assert hasattr(pd.DataFrame, 'rates');"
            "bad = [m for m in ('coinrates_nb.store', 'plotly', 'tqdm') if m in sys.modules];"
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# -- one grid for every pair -----------------------------------------------------------------------

EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def bucket(t: pd.Timestamp, minutes: int) -> pd.Timestamp:
    """The start of the ``minutes``-long bar holding ``t``, counted from the epoch (by hand, no resample)."""
    width = minutes * 60 * 10**9
    return EPOCH + pd.Timedelta((t - EPOCH).value // width * width, unit="ns")


@pytest.fixture
def two_days() -> pd.DataFrame:
    """BTC/USD first seen before midnight, ETH/USD only after it: their own-day 7-minute grids differ."""
    rows = [("2026-11-23 23:50:10", "BTC/USD", 100.0), ("2026-11-23 23:58:00", "BTC/USD", 101.0),
            ("2026-11-24 00:03:30", "ETH/USD", 10.0), ("2026-11-24 00:05:00", "BTC/USD", 99.0),
            ("2026-11-24 00:06:59", "ETH/USD", 11.0), ("2026-11-24 00:12:00", "ETH/USD", 9.0)]
    index = pd.DatetimeIndex([pd.Timestamp(t, tz="UTC") for t, _, _ in rows], name="time").as_unit("ns")
    return pd.DataFrame({"pair": pd.Categorical([p for _, p, _ in rows]), "rate": [r for _, _, r in rows]}, index=index)


def test_bars_of_every_pair_share_one_grid(two_days: pd.DataFrame) -> None:
    """freq='7min' with pairs first seen on different UTC days keeps both pairs, on one epoch grid."""
    bars = an.ohlc(two_days, "7min")
    expected: dict[tuple[str, pd.Timestamp], list[float]] = {}
    for t, row in two_days.iterrows():
        expected.setdefault((row["pair"], bucket(t, 7)), []).append(row["rate"])
    for (pair, start), rates in expected.items():
        assert bars.loc[start, pair].tolist() == [rates[0], max(rates), min(rates), rates[-1]], (pair, start)
    assert bars[("ETH/USD", "close")].notna().sum() == 2  # the whole pair used to be NaN
    steps = np.diff(bars.index.asi8)
    assert (steps == 7 * 60 * 10**9).all() and all(bucket(t, 7) == t for t in bars.index)
    for pair in ("BTC/USD", "ETH/USD"):  # one pair alone lies on the same grid
        alone = an.ohlc(two_days, "7min", pair=pair).dropna()
        assert alone.index.tolist() == sorted(s for p, s in expected if p == pair)


def test_wide_returns_and_volatility_share_the_grid(two_days: pd.DataFrame) -> None:
    """wide/returns/volatility with freq='7min' keep every pair, with last rates per epoch-aligned bucket."""
    table = an.wide(two_days, freq="7min")
    last: dict[tuple[str, pd.Timestamp], float] = {}
    for t, row in two_days.iterrows():
        last[(row["pair"], bucket(t, 7))] = row["rate"]
    for (pair, start), rate in last.items():
        assert table.loc[start, pair] == rate
    eth = bucket(pd.Timestamp("2026-11-24 00:12:00", tz="UTC"), 7)
    assert table.loc[eth, "ETH/USD"] == 9.0 and table.loc[eth, "BTC/USD"] == 99.0  # forward-filled
    per_bar = an.returns(two_days, freq="7min")
    assert per_bar.loc[eth, "ETH/USD"] == pytest.approx(math.log(9.0 / 11.0))
    vol = an.volatility(two_days, window="1h", freq="7min", min_periods=1)
    assert set(vol.columns) == {"BTC/USD", "ETH/USD"}
    # BTC/USD closes per bar: 100 (23:49), 101 (23:56), 99 (00:03), 99 carried (00:10)
    assert vol.loc[eth, "BTC/USD"] == pytest.approx(statistics.stdev([math.log(1.01), math.log(99 / 101), 0.0]))
    two = an.wide(two_days, freq="2D")  # whole days: pandas would anchor each pair on its own day
    assert two.notna().all().all() and len(two) == 1


# -- one rule for durations, times and the other arguments ----------------------------------------


def test_bare_numbers_are_seconds_everywhere(df: pd.DataFrame) -> None:
    """gaps(3), age(stale_after=15), cross(tolerance=5) and volatility(window=3) read numbers as seconds."""
    pd.testing.assert_frame_equal(an.gaps(df, 3), an.gaps(df, "3s"))
    assert len(an.gaps(df, 3)) == 1  # 3 ns would list every interval
    pd.testing.assert_frame_equal(an.age(df, now=at(20), stale_after=15), an.age(df, now=at(20), stale_after="15s"))
    pd.testing.assert_frame_equal(an.cross(df, "BTC", "EUR", tolerance=5), an.cross(df, "BTC", "EUR", tolerance="5s"))
    frame = rates_frame([(0, "BTC/USD", 100.0), (1, "BTC/USD", 110.0), (2, "BTC/USD", 99.0), (3, "BTC/USD", 108.9)])
    pd.testing.assert_frame_equal(an.volatility(frame, window=3), an.volatility(frame, window="3s"))
    pd.testing.assert_frame_equal(an.wide(df, freq=1), an.wide(df, freq="1s"), check_freq=False)
    pd.testing.assert_frame_equal(an.gaps(df, dt.timedelta(seconds=3)), an.gaps(df, "3s"))


def test_times_follow_the_input_rule(df: pd.DataFrame) -> None:
    """now/until accept naive (UTC) and zoned times; a bare number is refused, not read as nanoseconds."""
    naive = an.age(df, now="2026-11-24 12:00:20")
    zoned = an.age(df, now="2026-11-24 13:00:20+01:00")
    pd.testing.assert_frame_equal(naive, zoned)
    assert naive.loc["BTC/USD", "age"] == pd.Timedelta(seconds=10)
    until = an.gaps(df, "9s", until="2026-11-24 12:00:20")
    assert until["open"].sum() == 3
    with pytest.raises(cr.ConfigError, match="now must be a time"):
        an.age(df, now=5)
    with pytest.raises(cr.ConfigError, match="until must be a time"):
        an.gaps(df, "3s", until="yesterday-ish")


@pytest.mark.parametrize(("call", "match"), [
    (lambda d: an.gaps(d, 0), "threshold"),
    (lambda d: an.gaps(d, "-1s"), "threshold"),
    (lambda d: an.gaps(d, "abc"), "threshold"),
    (lambda d: an.age(d, stale_after=True), "stale_after"),
    (lambda d: an.age(d, now="not a time"), "now"),
    (lambda d: an.cross(d, "BTC", "EUR", tolerance=-5), "tolerance"),
    (lambda d: an.cross(d, "BTC", None), "quote"),  # type: ignore[arg-type]
    (lambda d: an.cross(d, "BTC/USD", "EUR"), "base"),
    (lambda d: an.ohlc(d, "bogus"), "freq"),
    (lambda d: an.ohlc(d, "-1min"), "freq"),
    (lambda d: an.ohlc(d, 0), "freq"),
    (lambda d: an.ohlc(d, "1min", pair=5), "pair"),  # type: ignore[arg-type]
    (lambda d: an.ohlc(d, "1min", pair="BTCUSD"), "did you mean 'BTC/USD'"),
    (lambda d: an.wide(d, freq="soon"), "freq"),
    (lambda d: an.wide(d, how=["last"]), "how"),  # type: ignore[arg-type]
    (lambda d: an.returns(d, freq="1s", pair=["BTC/USD"]), "pair"),  # type: ignore[arg-type]
    (lambda d: an.volatility(d, window="0s"), "window"),
    (lambda d: an.volatility(d, window="3s", min_periods=0), "min_periods"),
    (lambda d: an.volatility(d, window="3s", freq="MS", annualize=True), "annualize"),
    (lambda d: an.gaps(d.assign(rate="x"), "3s"), "numeric"),
])
def test_public_calls_raise_config_errors_not_bare_value_errors(df: pd.DataFrame, call: object, match: str) -> None:
    """Every bad argument is a ConfigError that names it, never a bare ValueError/TypeError from pandas."""
    with pytest.raises(cr.ConfigError, match=match):
        call(df)  # type: ignore[operator]


def test_pair_arguments_are_normalised(df: pd.DataFrame) -> None:
    """pair='btc/usd' means BTC/USD, as everywhere else in the package."""
    pd.testing.assert_frame_equal(an.ohlc(df, "5s", pair="btc/usd"), an.ohlc(df, "5s", pair="BTC/USD"))
    pd.testing.assert_series_equal(an.returns(df, pair=" btc/usd "), an.returns(df, pair="BTC/USD"))


def test_one_seconds_per_year_constant() -> None:
    """analysis annualises with the package's one SECONDS_PER_YEAR (365.25 days, in _types), not its own copy."""
    from coinrates_nb import _types

    assert an.SECONDS_PER_YEAR == 365.25 * 86_400
    assert an.SECONDS_PER_YEAR is getattr(_types, "SECONDS_PER_YEAR", None)
