"""Status bar and dashboard: pure HTML rendering, live status, controls, errors shown, lifecycle."""

from __future__ import annotations

import gc
import logging
import weakref
from html import unescape
from typing import Any

import pandas as pd
import pytest
from traitlets import All

import coinrates_nb as cr
from coinrates_nb._badge import SIMULATED_COLOR, simulated_annotations, simulated_html
from coinrates_nb.sim.server import Simulator
from coinrates_nb.ui import widgets
from coinrates_nb.ui.refresh import Tick
from coinrates_nb.ui.widgets import STATE_COLORS, Dashboard, PairPicker, render_latest, render_notes, render_status
from tests.helpers import wait_until
from tests.test_plots import PAIRS, SECOND, FakeSource
from tests.test_refresh import make_status

# ------------------------------------------------------------------------------------ pure HTML


@pytest.mark.parametrize("state", sorted(STATE_COLORS))
def test_render_status_shows_state_and_its_colour(state: str) -> None:
    """Each state is named in a badge of its own colour."""
    html = render_status(make_status(state=state))
    assert f">{state}</span>" in html and STATE_COLORS[state] in html


def test_render_status_simulated_badge_only_when_simulated() -> None:
    """The SIMULATED DATA badge appears exactly when the source is the simulator, once."""
    html = render_status(make_status(source="simulated"))
    assert html.count(simulated_html(True)) == 1 and html.count("SIMULATED DATA") == 1
    assert "SIMULATED" not in render_status(make_status(source="live"))


def test_the_badge_is_one_definition() -> None:
    """The status-bar HTML and the chart annotation carry the same words and colour, from coinrates_nb._badge."""
    html = simulated_html(True)
    (note,) = simulated_annotations(True)
    assert html == ('<span class="coinrates-simulated" style="background:#b45309;padding:1px 7px;border-radius:4px;'
                    'font-weight:bold;color:white;margin-right:6px">SIMULATED DATA</span>')
    assert note["text"] == "<b>SIMULATED DATA</b>" and note["bgcolor"] == SIMULATED_COLOR == "#b45309"
    assert simulated_html(False) == "" and simulated_annotations(False) == []


def test_render_status_facts() -> None:
    """msgs/s, lag, reconnect count, stale pairs and the last error are all shown."""
    html = render_status(make_status(msgs_per_s=12.34, lag_ms=42.4, reconnects=3, stale_pairs=("ETH/USD",),
                                     scope=("BTC/USD", "ETH/USD"), last_error="server said no", rates=1234))
    for text in ("12.3 msgs/s", "lag 42 ms", "3 reconnects", "1,234 msgs", "stale: ETH/USD", "server said no"):
        assert text in html, text


def test_render_status_flags_only_subscribed_pairs_stale() -> None:
    """A pair the user removed is never flagged stale, though the collector still remembers it."""
    html = render_status(make_status(stale_pairs=("BTC/EUR", "ETH/USD"), scope=("BTC/USD", "ETH")))
    assert "stale: ETH/USD" in html and "BTC/EUR" not in html


@pytest.mark.parametrize("state", ["stopped", "idle", "error"])
def test_render_status_shows_zero_msgs_per_s_unless_running(state: str) -> None:
    """Stopped (or idle, or failed) shows 0.0 msgs/s, whatever rate the status still carries."""
    assert "0.0 msgs/s" in render_status(make_status(state=state, msgs_per_s=49.4))
    assert "49.4 msgs/s" in render_status(make_status(state="connected", msgs_per_s=49.4))
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
    assert "time (UTC, 2024-05-01)" in html and "text-align:right" in html
    assert "no rates yet" in render_latest(latest.iloc[:0])


def test_render_latest_shows_only_subscribed_pairs() -> None:
    """The table drops a pair removed from the subscription (its rows stay in the buffer) and marks stale ones."""
    latest = pd.DataFrame({"time": pd.to_datetime(["2024-05-01T12:00:01Z"] * 2), "rate": [64012.5, 1.0823],
                           "age": pd.to_timedelta(["1s", "12s"])}, index=pd.Index(["BTC/EUR", "EUR/USD"], name="pair"))
    html = render_latest(latest, scope=("EUR/USD",), stale=("EUR/USD",), colors={"EUR/USD": "#00CC96"})
    assert "BTC/EUR" not in html and 'data-pair="EUR/USD"' in html and "1.08230" in html
    assert "stale" in html and "#00CC96" in html


def test_render_notes_names_silent_and_waiting_pairs() -> None:
    """A pair with no data for 30 s gets "no data for FOO/USD for 30 s"; one just added is "waiting"."""
    html = render_notes(make_status(silent_pairs={"FOO/USD": 31.0}), waiting=("FOO/USD", "XRP/USD"))
    assert "no data for FOO/USD for 31 s" in html and "waiting for the first rate of XRP/USD" in html
    assert render_notes(make_status()) == ""


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


class SubscribingSource(FakeSource):
    """A source that records subscribe/unsubscribe calls and keeps its scope as a collector does."""

    running = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[str, list[str]]] = []

    def subscribe(self, items: list[str]) -> None:
        self.calls.append(("subscribe", list(items)))
        self.pairs = (*self.pairs, *items)

    def unsubscribe(self, items: list[str]) -> None:
        self.calls.append(("unsubscribe", list(items)))
        self.pairs = tuple(p for p in self.pairs if p not in items)


@pytest.mark.parametrize(("typed", "message"), [
    ("BTC/USD/EUR", "'BTC/USD/EUR' is neither a pair 'BASE/QUOTE' nor an asset id"),
    ("btcusd", "'btcusd' is not a CoinAPI asset id; did you mean 'BTC/USD'?"),
    ("SOL-USD", "'SOL-USD' is neither a pair 'BASE/QUOTE' nor an asset id; did you mean 'SOL/USD'?"),
])
def test_picker_rejects_malformed_pairs(typed: str, message: str, closing: list[Any]) -> None:
    """A pair-shaped mistake is refused with the package's message, nothing is subscribed, the picker goes back."""
    source = SubscribingSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    board.picker.value = [*PAIRS, typed]
    assert f"ConfigError: {message}" in unescape(board.error.value)
    assert list(board.picker.value) == PAIRS and source.calls == []


def test_picker_entries_are_normalised_then_subscribed(closing: list[Any]) -> None:
    """Typed entries are stripped, upper-cased and deduplicated; only the difference is (un)subscribed."""
    source = SubscribingSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    board.picker.value = ["BTC/USD", "ETH/USD", " sol/usd ", "SOL/USD"]
    assert source.calls == [("subscribe", ["SOL/USD"]), ("unsubscribe", ["BTC/EUR"])]
    assert list(board.picker.value) == ["BTC/USD", "ETH/USD", "SOL/USD"]
    board.picker.value = ["BTC/USD", "ETH/USD", "SOL/USD", "xrp"]  # an asset id: every XRP pair is drawn
    assert source.calls[-1] == ("subscribe", ["XRP"])
    assert board.error.layout.display == "none"


def test_enter_in_the_pair_box_subscribes_and_clears_it(closing: list[Any]) -> None:
    """The text box commits on Enter (continuous_update off): the pair is subscribed, gets a chip, the box empties."""
    source = SubscribingSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    entry = board.picker.entry
    assert entry.continuous_update is False  # the browser sends the value on Enter (or blur), not per key
    entry.value = "sol/usd"
    assert source.calls == [("subscribe", ["SOL/USD"])] and entry.value == ""
    assert [c.description for c in board.picker.chips.children] == [f"{p} ×" for p in [*PAIRS, "SOL/USD"]]
    entry.value = "BTCUSD"  # refused with the package's hint; the text stays to be corrected
    assert "did you mean &#x27;BTC/USD&#x27;" in board.error.value and entry.value == "BTCUSD"
    assert len(source.calls) == 1


def test_a_chip_click_unsubscribes_and_the_chart_and_table_follow(closing: list[Any]) -> None:
    """× on a chip unsubscribes the pair; its line and table row go at the next redraw, other colours stay."""
    source = SubscribingSource(rows=300)
    board = cr.dashboard(source, fps=50)
    closing.append(board)
    view = board.chart._coinrates_view
    colors = {t.name: t.line.color for t in board.chart.data}
    (chip,) = [c for c in board.picker.chips.children if c.description == "BTC/EUR ×"]
    assert chip.style.button_color == colors["BTC/EUR"]  # chips wear their line's colour
    chip.click()
    assert source.calls == [("unsubscribe", ["BTC/EUR"])]
    with view.lock:
        view.run(Tick(source), 0.0, "after")
        board.panel.run(Tick(source), 0.0, "after")
    assert [t.name for t in board.chart.data] == ["BTC/USD", "ETH/USD"]
    assert {t.name: t.line.color for t in board.chart.data} == {p: colors[p] for p in ("BTC/USD", "ETH/USD")}
    assert "BTC/EUR" not in board.table.value and "ETH/USD" in board.table.value


def test_picker_is_its_own_widget_with_an_always_visible_box() -> None:
    """PairPicker holds one chip per entry and the text box; removing an entry removes its chip."""
    picker = PairPicker(["BTC/USD", "ETH"])
    try:
        assert [c.description for c in picker.chips.children] == ["BTC/USD ×", "ETH ×"]
        assert picker.entry in picker.children and picker.entry.layout.display != "none"
        picker.chips.children[1].click()
        assert list(picker.value) == ["BTC/USD"] and len(picker.chips.children) == 1
    finally:
        picker.close()
    assert picker.entry.comm is None and picker.comm is None


def test_dashboard_has_no_pair_normaliser_of_its_own() -> None:
    """The picker uses coinrates_nb._inputs (one pair rule for the package), not a local copy."""
    assert not hasattr(widgets, "_normalise_pairs") and widgets.filter_items.__module__ == "coinrates_nb._inputs"


def test_callbacks_observe_named_traits_only(closing: list[Any]) -> None:
    """Every observer the dashboard and its chart register names its trait; none listens to all traits."""
    board = cr.dashboard(BrokenSource(rows=3))
    closing.append(board)
    assert "value" in board.picker._trait_notifiers and "value" in board.window._trait_notifiers
    assert "value" in board.picker.entry._trait_notifiers
    assert {"_view_count", "comm"} <= set(board.chart._trait_notifiers)
    for widget in (board, board.picker, board.picker.entry, board.window, board.chart, board.status_html, board.table):
        assert All not in widget._trait_notifiers, widget


@pytest.mark.parametrize(("window", "label", "window_ns"), [
    ("1min", "1 min", 60 * SECOND),
    (300, "5 min", 300 * SECOND),          # seconds, the package's rule for bare numbers; a preset
    ("90s", "90s", 90 * SECOND),           # not a preset: added to the choices as written
    (45, "45 s", 45 * SECOND),
    (None, "all", None),
])
def test_dashboard_window_is_the_charts_visible_span(window: Any, label: str, window_ns: int | None,
                                                     closing: list[Any]) -> None:
    """window= picks (or adds) the picker's choice and sets the chart's visible span."""
    board = cr.dashboard(BrokenSource(rows=3), window=window)
    closing.append(board)
    assert board.window.value == label and board.chart._coinrates_view.window_ns == window_ns
    assert len(board.window.options) == 5 + (label not in ("1 min", "5 min", "15 min", "1 h", "all"))


@pytest.mark.parametrize(("options", "message"), [
    ({"window": "soon"}, "window must be a positive duration"),
    ({"window": 0}, "window must be a positive duration"),
    ({"fps": -1}, "fps must be a positive number"),
    ({"mode": "gui"}, "mode must be 'thread'"),
    ({"chart": "candles"}, "chart must be one of"),
])
def test_dashboard_rejects_bad_options_before_any_widget(options: dict[str, Any], message: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad dashboard options are ConfigErrors, raised before any widget exists (nothing half-built to close)."""
    monkeypatch.setattr(widgets.w, "HTML", lambda *a, **k: pytest.fail("a widget was made"))
    with pytest.raises(cr.ConfigError, match=message):
        cr.dashboard(BrokenSource(rows=3), **options)


@pytest.mark.parametrize(("options", "message"), [
    ({"fps": 0}, "fps must be a positive number"),
    ({"fps": "2"}, "fps must be a positive number"),
    ({"mode": None}, "mode must be 'thread'"),
])
def test_status_bar_rejects_bad_options(options: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad status_bar options are ConfigErrors raised before the widget is made."""
    monkeypatch.setattr(widgets.w, "HTML", lambda *a, **k: pytest.fail("a widget was made"))
    with pytest.raises(cr.ConfigError, match=message):
        cr.status_bar(BrokenSource(rows=3), **options)


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
    parts = [board.chart, board.status_html, board.picker, board.picker.entry, board.start_stop, board.window,
             board.notes, board.table]
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
        board.picker.entry.value = "SOL/USD"  # what Enter in the box sends
        assert board.error.layout.display == "none", board.error.value
        board.picker.value = ["BTC/USD", "ETH/USD", "SOL/USD"]
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


class RefusingSource(SubscribingSource):
    """A source whose subscribe refuses an unknown asset, as the simulated collector does."""

    def subscribe(self, items: list[str]) -> None:
        if any(i.startswith("FOO") for i in items):
            raise cr.ConfigError("FOO is not a CoinAPI asset; a stream of it would stay silent")
        super().subscribe(items)


def test_a_refused_subscription_is_shown_and_leaves_no_chip(closing: list[Any]) -> None:
    """FOO/USD refused by the source: the error says why, the picker shows what is subscribed, the text stays."""
    source = RefusingSource(rows=30)
    board = cr.dashboard(source)
    closing.append(board)
    board.picker.entry.value = "FOO/USD"
    assert "not a CoinAPI asset" in board.error.value and board.error.layout.display == ""
    assert list(board.picker.value) == PAIRS and board.picker.entry.value == "FOO/USD"
    assert [c.description for c in board.picker.chips.children] == [f"{p} ×" for p in PAIRS]
