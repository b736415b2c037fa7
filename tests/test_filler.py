"""History and live as one frame: the window filled from REST, gaps healed after cuts, the budget, checked per second."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import coinrates_nb as cr
from coinrates_nb.sim.server import Simulator
from tests.helpers import wait_until

PAIRS = ["BTC/USD", "ETH/USD"]
SEC = 1_000_000_000


def seconds(df: pd.DataFrame, pair: str, origins: set[str]) -> set[int]:
    rows = df[(df["pair"] == pair) & df["origin"].isin(origins)]
    return set((rows.index.asi8 // SEC).tolist())


def check_one_frame(rates: cr.Collector, start_s: int, end_s: int) -> None:
    """Every second of [start_s, end_s) holds rows of every pair, from REST or the stream, never from both."""
    df = rates.df
    open_gaps = rates.gaps[~rates.gaps["healed"]]
    for pair in PAIRS:
        rest = seconds(df, pair, {"history", "healed"})
        live = seconds(df, pair, {"stream"})
        assert not rest & live, f"{pair}: seconds from both REST and the stream: {sorted(rest & live)[:5]}"
        holes = set(range(start_s, end_s)) - rest - live
        for gap in open_gaps[open_gaps["pair"] == pair].itertuples():
            holes -= set(range(gap.start.value // SEC, gap.end.value // SEC + 1))
        assert not holes, f"{pair}: seconds with no data that no open gap explains: {sorted(holes)[:5]}"
        stream = df[(df["pair"] == pair) & (df["origin"] == "stream")]
        assert not stream.index.duplicated().any(), f"{pair}: a live update stored twice"


def test_history_fills_the_window_then_the_stream_goes_on(simulator: Simulator) -> None:
    """history=True: the last 2 minutes are there at once, the seam has no duplicate and no hole, one REST call per pair."""
    with cr.stream(PAIRS, url=simulator.url, window="2min", history=True) as rates:
        rates.wait(timeout=20, rows=250)  # 2 min of 1SEC bars = 4 rows x 120 per pair, then live rows
        wait_until(lambda: (rates.df["origin"] == "stream").sum() >= 20, timeout=20)
        df = rates.df
        first_live = df[df["origin"] == "stream"].index.min().value // SEC
        start = max(df[(df["origin"] == "history") & (df["pair"] == p)].index.min().value // SEC for p in PAIRS)
        assert first_live - start >= 110, "the window was not filled"
        check_one_frame(rates, start, int(df.index.max().value // SEC))
        history_calls = [r for r in simulator.rest.ledger if r.path.endswith("/history")]
        assert sorted(r.path for r in history_calls) == ["/v1/exchangerate/BTC/USD/history",
                                                         "/v1/exchangerate/ETH/USD/history"]
        s = rates.status
        assert s.rest_credits == simulator.rest.credits and s.rest_rates == simulator.rest.rates
        assert s.rates >= s.rates_today >= (df["origin"] == "stream").sum()  # held live rows took the live path
        assert set(rates.status.stale_pairs) == set() and rates.latest()["time"].max() >= df.index.max()
        assert s.history_error is None and df.index.is_monotonic_increasing


@pytest.mark.slow
def test_three_cuts_are_healed_and_the_frame_has_no_hole_and_no_duplicate(make_simulator: type[Simulator]) -> None:
    """Three dropped connections: each pair's gap is healed from REST; every second is covered exactly once."""
    sim = make_simulator(rate_hz=5)
    with cr.stream(PAIRS, url=sim.url, window="5min", history="1min", backoff_initial=4.0, backoff_cap=4.0) as rates:
        rates.wait(timeout=20, rows=100)
        for cut in range(1, 4):
            n = rates.status.rates
            wait_until(lambda n=n: rates.status.rates > n + 25, timeout=20)
            sim.drop_connections()
            wait_until(lambda cut=cut: rates.status.reconnects == cut and rates.status.state == "connected",
                       timeout=20)
            wait_until(lambda cut=cut: len(rates.gaps) == cut * len(PAIRS)
                       and not (rates.gaps["heal"] == "pending").any(), timeout=20, message=str(rates.gaps))
        n = rates.status.rates
        wait_until(lambda: rates.status.rates > n + 10, timeout=20)
        gaps = rates.gaps
        assert gaps["healed"].all(), gaps
        assert (gaps["duration"] > pd.Timedelta("2s")).all()  # the backoff (2-4 s) made each gap hold a whole second
        df = rates.df
        healed = df[df["origin"] == "healed"]
        for gap in gaps.itertuples():
            whole = range(gap.start.value // SEC + 1, gap.end.value // SEC)  # the seconds no live row touches
            rows = healed[(healed["pair"] == gap.pair) & (healed.index > gap.start) & (healed.index < gap.end)]
            assert len(whole) >= 1 and len(rows) == 4 * len(whole), f"{gap}: {len(rows)} healed rows"
        start = max(df[(df["origin"] == "history") & (df["pair"] == p)].index.min().value // SEC for p in PAIRS)
        check_one_frame(rates, start, int(df.index.max().value // SEC))
        assert rates.status.rest_credits == sim.rest.credits


def test_healing_within_a_spent_budget_leaves_the_gap_open_and_says_why(make_simulator: type[Simulator]) -> None:
    """max_history_credits=0: no REST request is made; the fill and each gap say the budget is spent."""
    sim = make_simulator(rate_hz=5)
    with cr.stream(PAIRS, url=sim.url, window="1min", history=True, max_history_credits=0,
                   backoff_initial=4.0, backoff_cap=4.0) as rates:
        rates.wait(timeout=20, rows=5)
        assert "budget" in (rates.status.history_error or "")
        sim.drop_connections()
        wait_until(lambda: len(rates.gaps) == len(PAIRS), timeout=20)
        gaps = rates.gaps
        assert (~gaps["healed"]).all() and gaps["heal"].str.contains("budget").all()
        assert [r.path for r in sim.rest.ledger] == ["/v1/assets"]  # the asset check, no history request
        assert set(rates.df["origin"]) == {"stream"}


def test_history_rows_keep_their_bars_and_are_recorded_with_their_origin(simulator: Simulator, tmp_path: object) -> None:
    """ohlc at the history period returns the REST bars themselves; a recording and load() keep the origin."""
    path = f"{tmp_path}/rates"
    with cr.stream(["BTC/USD"], url=simulator.url, window="3min", history=True, start=False) as rates:
        rec = rates.record(path)
        rates.start()
        rates.wait(timeout=20, rows=300)
        wait_until(lambda: (rates.df["origin"] == "stream").sum() >= 5, timeout=20)
        rec.stop()
        bars = rates.ohlc("1s", pair="BTC/USD")
        # the last history bar may be the period still running when it was fetched: its later REST value can differ
        history_seconds = bars.index[bars["count"] == 4][:-1]
        assert len(history_seconds) >= 100
        rest = cr.history("BTC/USD", history_seconds[0], history_seconds[-1] + pd.Timedelta("1s"), period="1SEC",
                          url=simulator.url, progress=False)
        got = bars.loc[history_seconds, ["open", "high", "low", "close"]]
        want = rest.loc[history_seconds, ["open", "high", "low", "close"]]
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=0, atol=0)
    loaded = cr.load(path)
    assert set(loaded["origin"]) == {"history", "stream"}
    recorded = int((loaded["origin"] == "history").sum())  # the frame's window may have evicted the oldest since
    assert recorded % 4 == 0 and recorded >= (rates.df["origin"] == "history").sum()


def test_heals_started_together_share_one_budget() -> None:
    """Three gaps healed at once with 1 credit left: one fetch starts, two stay open (before any response counts)."""
    import asyncio

    from coinrates_nb.filler import Filler
    from coinrates_nb.rest import RestClient

    async def main() -> list[str]:
        filler = Filler(RestClient("http://127.0.0.1:9"), lambda *_: None, lambda *_: None, max_credits=1,
                        simulated=True)
        t0 = 1_700_000_000 * 10**9
        gaps = [{"pair": p, "start": t0, "end": t0 + 10 * 10**9} for p in ("BTC/USD", "ETH/USD", "SOL/USD")]
        for gap in gaps:
            filler.heal(gap, lambda _gap: None)
        states = [str(g["heal"]) for g in gaps]
        await filler.close()
        assert filler._reserved == 0  # the cancelled fetch gave its credit back
        return states

    assert asyncio.run(main()) == ["pending", "open: budget spent (max_history_credits)",
                                   "open: budget spent (max_history_credits)"]


def test_a_restart_keeps_the_days_rates_and_credits(simulator: Simulator) -> None:
    """Stop/Start (the dashboard's button) does not hand out a fresh budget: today's counts carry over."""
    with cr.stream(PAIRS, url=simulator.url, window="1min", history=True, max_history_credits=50) as rates:
        wait_until(lambda: rates.status.rest_credits_today > 0 and rates.status.rates_today > 0, timeout=20)
        before = rates.status
        rates.restart()
        # the server's own count of every request, both runs: nothing forgotten (once the last answer is read)
        wait_until(lambda: rates.status.rest_credits_today == simulator.rest.credits > before.rest_credits_today,
                   timeout=20, message="the restart's history fill was not counted, or the first run's was forgotten")
        assert rates.status.rates_today >= before.rates_today


def test_an_insecure_history_url_is_refused_by_stream() -> None:
    """A key that would go over plain http to a remote REST host: stream() raises, nothing starts."""
    with pytest.raises(cr.ConfigError, match="unencrypted"):
        cr.stream(PAIRS, api_key="0" * 36, history_url="http://10.0.0.5:8080", start=False)


def test_pairs_streaming_while_the_fill_holds_them_are_not_silent(simulator: Simulator,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair whose first live update is held by the history fill is not reported as sending nothing."""
    import coinrates_nb.collector as collector_module

    monkeypatch.setattr(collector_module, "NO_DATA_AFTER", 0.2)
    simulator.pause_data(True)
    with cr.stream(PAIRS, url=simulator.url, heal=True) as rates:
        wait_until(lambda: set(rates.status.silent_pairs) == set(PAIRS), timeout=20,
                   message="the silence rule did not fire for pairs that sent nothing")
        held = {"BTC/USD": 1}  # the fill holds BTC/USD's first live update; ETH/USD really sent nothing
        monkeypatch.setattr(rates._filler, "first_live", held.get)
        assert set(rates.status.silent_pairs) == {"ETH/USD"}
