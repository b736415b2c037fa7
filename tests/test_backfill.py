"""Pure history rules: bars as rows give back the bars, the seam, heal spans, and the credit estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd

from coinrates_nb.backfill import bars_to_batch, credits_for, heal_span, history_period, seam_ns
from coinrates_nb.batch import HEALED, HISTORY
from coinrates_nb.frame import RollingFrame
from coinrates_nb.rest import PERIODS, Bars, period_ns

T0 = 1_796_000_000_000_000_000 - 1_796_000_000_000_000_000 % (60 * 10**9)  # a minute boundary
MIN = 60 * 10**9


def bars(n: int, period: str = "1MIN", empty: tuple[int, ...] = ()) -> Bars:
    rng = np.random.default_rng(3)
    o = 100 + rng.normal(0, 1, n)
    c = o + rng.normal(0, 1, n)
    h = np.maximum(o, c) + rng.uniform(0, 1, n)
    low = np.minimum(o, c) - rng.uniform(0, 1, n)
    for i in empty:
        o[i] = h[i] = low[i] = c[i] = np.nan
    starts = T0 + np.arange(n, dtype=np.int64) * period_ns(period)
    nat = np.full(n, np.iinfo(np.int64).min, np.int64)
    return Bars("BTC", "USD", period, starts, starts + period_ns(period), nat, nat.copy(), o, h, low, c)


def test_bars_as_rows_resample_back_to_the_bars() -> None:
    """ohlc(period) of the four rows per bar returns each bar's own open, high, low and close; empty bars stay empty."""
    b = bars(30, empty=(7,))
    frame = RollingFrame(1000)
    batch = bars_to_batch(b)
    assert len(batch) == 4 * 29 and batch.origin == HISTORY
    frame.extend(batch, T0)
    got = frame.ohlc("1min", pair="BTC/USD")
    keep = np.arange(30) != 7
    for field, want in (("open", b.open), ("high", b.high), ("low", b.low), ("close", b.close)):
        np.testing.assert_array_equal(got[field].to_numpy()[keep], want[keep])
    assert got["count"].tolist() == [0 if i == 7 else 4 for i in range(30)]
    assert set(frame.snapshot()["origin"]) == {"history"}


def test_rows_stay_inside_their_period_on_the_wire_grid() -> None:
    """Every row's time is in its bar's period and a multiple of 100 ns, for every period CoinAPI lists."""
    for name in [p.period_id for p in PERIODS]:
        period = period_ns(name)
        b = bars(3, name)
        batch = bars_to_batch(b, origin=HEALED)
        starts = np.repeat(b.start_ns, 4)
        assert ((batch.time_ns >= starts) & (batch.time_ns < starts + period)).all(), name
        assert (batch.time_ns % 100 == 0).all() and (np.diff(batch.time_ns) > 0).all(), name


def test_seam_and_heal_spans_leave_no_overlap() -> None:
    """History stops at the period of the first live update; a heal fills only the whole periods between two updates."""
    assert seam_ns(T0 + MIN + 5, MIN, T0 + 10 * MIN) == T0 + MIN
    assert seam_ns(None, MIN, T0 + 3 * MIN + 7) == T0 + 3 * MIN
    assert heal_span(T0 + 10, T0 + 5 * MIN + 3, MIN) == (T0 + MIN, T0 + 5 * MIN)
    assert heal_span(T0 + 10, T0 + MIN + 3, MIN) is None  # adjacent periods: nothing whole in between
    assert history_period(3_600 * 10**9) == "1SEC" and history_period(86_400 * 10**9) == "10SEC"


def test_credit_estimate_is_per_100_bars_per_request() -> None:
    """One day of 1SEC bars is 86,400 items: 864 credits; pages of 100,000 round up each; 1 bar costs 1."""
    day = 86_400 * 10**9
    assert credits_for({"BTC/USD": (T0, T0 + day)}, "1SEC") == 864
    assert credits_for({"BTC/USD": (T0, T0 + day), "ETH/USD": (T0, T0 + 10**9)}, "1SEC") == 865
    assert credits_for({"A/B": (T0, T0 + 150_001 * 10**9)}, "1SEC") == 1000 + 501
    assert credits_for({"A/B": (T0, T0)}, "1SEC") == 0
    assert pd.Timedelta(period_ns("1HRS"), "ns") == pd.Timedelta("1h")
