"""Status bar and dashboard: pure HTML rendering, live status, controls, errors shown, lifecycle."""

from __future__ import annotations

import gc
import logging
import weakref
from typing import Any

import pandas as pd
import pytest
from traitlets import All

import coinrates_nb as cr
from coinrates_nb.sim.server import Simulator
from coinrates_nb.ui.refresh import Tick
from coinrates_nb.ui.widgets import STATE_COLORS, Dashboard, render_latest, render_status
from tests.helpers import wait_until
from tests.test_plots import PAIRS, FakeSource
from tests.test_refresh import make_status

# ------------------------------------------------------------------------------------ pure HTML


@pytest.mark.parametrize("state", sorted(STATE_COLORS))
def test_render_status_shows_state_and_its_colour(state: str) -> None:
    """Each state is named in a badge of its own colour."""
    html = render_status(make_status(state=state))
    assert f">{state}</span>" in html and STATE_COLORS[state] in html


def test_render_status_simulated_badge_only_when_simulated() -> None:
    """The SIMULATED DATA badge appears exactly when the source is the simulator."""
    assert "SIMULATED DATA" in render_status(make_status(source="simulated"))
    assert "SIMULATED" not in render_status(make_status(source="live"))


def test_render_status_facts() -> None:
    """msgs/s, lag, reconnect count, stale pairs and the last error are all shown."""
    html = render_status(make_status(msgs_per_s=12.34, lag_ms=42.4, reconnects=3, stale_pairs=("ETH/USD",),
                                     last_error="server said no", rates=1234))
    for text in ("12.3 msgs/s", "lag 42 ms", "3 reconnects", "1,234 msgs", "stale: ETH/USD", "server said no"):
        assert text in html, text
    assert "1 reconnect ·" in render_status(make_status(reconnects=1))
    assert "lag n/a" in render_status(make_status(lag_ms=None))


def test_render_status_escapes_text() -> None:
    """Server-provided text is HTML-escaped, never injected."""
    html = render_status(make_status(last_error="<script>alert(1)</script>"))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_render_latest_table() -> None:
    """One row per pair with rate, UTC time and age; an empty frame says so."""
    latest = pd.DataFrame({
        "time": [pd.Timestamp("2024-05-01T12:00:01.250Z")], "rate": [64012.5],
        "age": [pd.Timedelta("1.5s")]}, index=pd.Index(["BTC/USD"], name="pair"))
    html = render_latest(latest)
    assert "BTC/USD" in html and "64,012.5" in html and "12:00:01.250" in html and "1.5 s" in html
    assert "no rates yet" in render_latest(latest.iloc[:0])


# ------------------------------------------------------------------------------------ status bar


def test_status_bar_follows_the_status(closing: list[Any]) -> None:
    """The bar re-renders by itself when the collector's state changes (no new rows needed)."""
    source = FakeSource(rows=3)
    bar = cr.status_bar(source, fps=20)
    closing.append(bar)
    assert "connected" in bar.value and "SIMULATED DATA" in bar.value
    source.state = "reconnecting"
    wait_until(lambda: ">reconnecting<" in bar.value, timeout=30, message="status bar did not update")


def test_closed_status_bar_is_collected_and_stops_refreshing() -> None:
    """A closed status bar's view is garbage collected and the refresher thread ends."""
    source = FakeSource(rows=3)
    bar = cr.status_bar(source, fps=20)
    view = weakref.ref(bar._coinrates_view)
    refresher = bar._coinrates_view.refresher
    bar.close()
    del bar
    gc.collect()
    assert view() is None
    refresher.join(10)
    assert not refresher.running


# ------------------------------------------------------------------------------------ dashboard


class BrokenSource(FakeSource):
    """A source whose subscribe fails, to check callback errors are shown."""

    running = True

    def subscribe(self, items: Any) -> None:
        raise RuntimeError("subscribe exploded")

    def unsubscribe(self, items: Any) -> None:
        pass


def test_dashboard_parts(closing: list[Any]) -> None:
    """The dashboard holds a status bar with the badge, picker, start/stop, window, chart and table."""
    source = BrokenSource(rows=300)
    board = cr.dashboard(source)
    closing.append(board)
    assert isinstance(board, Dashboard)
    assert "SIMULATED DATA" in board.status_html.value
    assert list(board.picker.value) == PAIRS
    assert board.window.value == "5 min" and board.chart._coinrates_view.window_ns == 300 * 10**9
    assert [t.name for t in board.chart.data] == PAIRS
    assert "BTC/USD" in board.table.value
    assert board.error.layout.display == "none"


def test_dashboard_performance_chart(closing: list[Any]) -> None:
    """chart="performance" draws each pair rebased to 100; an unknown chart kind is a ConfigError."""
    source = BrokenSource(rows=300)
    board = cr.dashboard(source, chart="performance")
    closing.append(board)
    lines = board.chart._coinrates_view.lines(Tick(source))
    assert set(lines) == set(PAIRS)
    assert all(abs(y[0] - 100.0) < 1e-9 for _, y in lines.values())
    with pytest.raises(cr.ConfigError):
        cr.dashboard(source, chart="candles")  # type: ignore[arg-type]


def test_callback_errors_are_shown_and_logged(closing: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    """An exception inside a widget callback appears in the red error line and in the log, with traceback."""
    source = BrokenSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    with caplog.at_level(logging.ERROR, logger="coinrates_nb.ui.widgets"):
        board.picker.value = [*PAIRS, "SOL/USD"]
    assert "subscribe exploded" in board.error.value and board.error.layout.display == ""
    assert any(r.exc_info for r in caplog.records) and "subscribe exploded" in caplog.text
    board.window.value = "1 min"  # a callback that works clears the error line
    assert board.error.layout.display == "none"


def test_picker_rejects_malformed_pairs(closing: list[Any]) -> None:
    """A malformed pair is reported and the picker goes back to the previous pairs."""
    source = BrokenSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    board.picker.value = [*PAIRS, "BTC/USD/EUR"]
    assert "not a BASE/QUOTE pair" in board.error.value
    assert list(board.picker.value) == PAIRS


def test_callbacks_observe_named_traits_only(closing: list[Any]) -> None:
    """Every observer the dashboard and its chart register names its trait; none listens to all traits."""
    board = cr.dashboard(BrokenSource(rows=3))
    closing.append(board)
    assert "value" in board.picker._trait_notifiers and "value" in board.window._trait_notifiers
    assert {"_view_count", "comm"} <= set(board.chart._trait_notifiers)
    for widget in (board, board.picker, board.window, board.chart, board.status_html, board.table):
        assert All not in widget._trait_notifiers, widget


def test_window_picker_changes_the_chart_window(closing: list[Any]) -> None:
    """Choosing a window resizes what the chart shows at the next redraw."""
    source = BrokenSource(rows=6_000)  # 60 s
    board = cr.dashboard(source, window="1min")
    closing.append(board)
    board.window.value = "all"
    view = board.chart._coinrates_view
    assert view.window_ns is None and view.drawn is None
    board.window.value = "1 min"
    assert view.window_ns == 60 * 10**9


def test_dashboard_close_closes_every_part() -> None:
    """close() closes the chart and every control, so their redraws stop."""
    board = cr.dashboard(BrokenSource(rows=3))
    refresher = board.panel.refresher
    parts = [board.chart, board.status_html, board.picker, board.start_stop, board.window, board.table]
    board.close()
    assert all(part.comm is None for part in parts) and board.comm is None
    refresher.join(10)
    assert not refresher.running


def test_dashboard_on_the_simulator(simulator: Simulator, closing: list[Any]) -> None:
    """Against the real simulator: the picker subscribes/unsubscribes live and start/stop drives the collector."""
    rates = cr.stream(PAIRS, url=simulator.url, simulated=True)
    try:
        rates.wait(timeout=30)
        board = cr.dashboard(rates, fps=10)
        closing.append(board)
        wait_until(lambda: ">connected<" in board.status_html.value, timeout=30)
        board.picker.value = ["BTC/USD", "ETH/USD", "SOL/USD"]
        assert board.error.layout.display == "none", board.error.value
        assert rates.pairs == ("BTC/USD", "ETH/USD", "SOL/USD")
        wait_until(lambda: [t.name for t in board.chart.data] == ["BTC/USD", "ETH/USD", "SOL/USD"], timeout=30,
                   message="the chart did not follow the picker")
        wait_until(lambda: "SOL/USD" in board.table.value, timeout=30)
        rates.unsubscribe("ETH/USD")  # from code: the picker and chart follow
        wait_until(lambda: list(board.picker.value) == ["BTC/USD", "SOL/USD"], timeout=30,
                   message="the picker did not show a subscription made from code")
        wait_until(lambda: [t.name for t in board.chart.data] == ["BTC/USD", "SOL/USD"], timeout=30)
        board.start_stop.click()
        assert not rates.running
        wait_until(lambda: ">stopped<" in board.status_html.value and board.start_stop.description == "Start",
                   timeout=30, message="the status bar did not show the stop")
        board.start_stop.click()
        assert rates.running
        wait_until(lambda: board.start_stop.description == "Stop", timeout=30)
        assert board.error.layout.display == "none", board.error.value
    finally:
        rates.stop()
