"""The desk dashboard in headless Chromium: Voilà serves it three times, one hub feeds all three, one upstream connection.

A module fixture runs the simulator, a real nats-server (127.0.0.1, free port, JetStream in a temp
folder) and a hub on them, then Voilà (``coinrates_nb.hub.serve_dashboard``: 127.0.0.1, a free port
found by binding port 0 first, since Voilà cannot listen on port 0) over a temp copy of
``notebooks/05_desk_dashboard.ipynb`` with ``COINRATES_NATS_URL`` pointing at the hub. Three
browser contexts open the page; every Plotly chart on each (the dashboard's, a performance chart
and candles: three per page) must grow by itself, on every page, while the simulator saw exactly
one connection. Voilà creates all of a page's widget models at once; before LiveFigure loaded
plotly's front end once per page, about one page in two had a chart frozen on its first picture
(``coinrates_nb/ui/_figure.py``): each chart growing on each of three pages is what guards that.
Screenshots go to ``test-output/browser/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coinrates_nb.hub import Hub, NatsServer, serve_dashboard
from coinrates_nb.sim.server import Simulator
from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUTPUT = ROOT / "test-output" / "browser"
NOTEBOOK = "05_desk_dashboard.ipynb"
PAIRS = ["BTC/USD", "ETH/USD", "BTC/EUR"]
VIEWERS = 3
START_S = 120
RENDER_S = 180

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps) to run the browser tests",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402 - only once Chromium is known present
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

JS_GRAPHS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => {
    const xs = (gd.data || []).map(t => t.x || []);
    return {traces: xs.length, points: xs.reduce((n, x) => n + x.length, 0),
            newest: Math.max(0, ...xs.filter(x => x.length).map(x => x[x.length - 1]))};
})"""


@dataclass
class Desk:
    """The running stack: simulator, hub, Voilà's URL and log."""

    sim: Simulator
    hub: Hub
    url: str
    log: Path


@pytest.fixture(scope="module")
def desk(jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    """Simulator -> hub -> NATS -> Voilà on 127.0.0.1 over a temp copy of the desk notebook; all stopped afterwards."""
    base = tmp_path_factory.mktemp("desk")
    root = base / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)
    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        Path(jupyter_env[key]).mkdir(parents=True, exist_ok=True)
    sim = Simulator(port=0, seed=3, rate_hz=10).start()
    server = NatsServer(store_dir=base / "nats").start()
    hub = Hub(PAIRS, url=sim.url, nats_url=server.url).start()
    log = base / "voila.log"
    env = {"COINAPI_KEY": "", **jupyter_env}
    proc, url = serve_dashboard(hub.nats_url or "", notebook=root / NOTEBOOK, env=env, log=log)
    try:
        def answers() -> bool:
            assert proc.poll() is None, f"Voila exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{url}coinrates-probe-404", timeout=2):
                    return True
            except urllib.error.HTTPError:
                return True  # the server answers (a 404 for this probe is fine)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answers, timeout=START_S, interval=0.2, message="Voila did not start")
        yield Desk(sim=sim, hub=hub, url=url, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        hub.stop()
        server.stop()
        sim.stop()


@pytest.fixture(scope="module")
def browser(desk: Desk) -> Iterator[Browser]:
    """Headless Chromium (the Debian binary) driven by Playwright."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def graphs(page: Page) -> list[dict[str, Any]]:
    """Every Plotly chart on the page, as the browser has it."""
    return page.evaluate(JS_GRAPHS)  # type: ignore[no-any-return]


CHARTS = 3
"""Charts on the desk dashboard: the dashboard's own (a row per pair), the performance chart and the candles."""

RENDERED = (f"() => {{ const g = [...document.querySelectorAll('.js-plotly-plot')];"
            f" return g.length === {CHARTS} && g.every(gd => gd.data && gd.data.length >= {len(PAIRS)}"
            " && gd.data.every(t => (t.x || []).length > 0)); }")
"""Every chart is on the page with a line (or candles) for every pair, each with data."""
GROWN = (f"(before) => {{ const now = ({JS_GRAPHS})(); return now.length === before.length"
         " && now.every((g, i) => g.points > 0 && g.newest > before[i].newest) && now; }")
"""Every chart drew newer updates (its window slides: after two minutes the point count stays level)."""


def wait_grown(page: Page, timeout_s: float = 60) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every chart on ``page`` before, and once each has drawn a newer update."""
    page.bring_to_front()  # a background page may count as hidden, and hidden charts are not redrawn
    before = graphs(page)
    after = page.wait_for_function(GROWN, arg=before, timeout=timeout_s * 1000).json_value()
    return before, after


def test_three_viewers_one_upstream_connection_all_charts_grow(desk: Desk, browser: Browser, tmp_path: Path) -> None:
    """Voilà opened three times: every chart on each page grows by itself, and the simulator saw one connection."""
    contexts = [browser.new_context(viewport={"width": 1300, "height": 1600}) for _ in range(VIEWERS)]
    try:
        pages = []
        problems: list[str] = []
        for context in contexts:  # one viewer at a time: each page's own kernel runs the notebook
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
            page.on("console", lambda msg: problems.append(f"console: {msg.text}")
                    if msg.type == "error" and any(w in msg.text for w in ("anywidget", "coinrates", "plotly")) else None)
            pages.append(page)
            page.goto(desk.url, timeout=START_S * 1000)
            page.wait_for_function(RENDERED, timeout=RENDER_S * 1000)
            before, after = wait_grown(page)
            assert len(after) == len(before) == CHARTS, (before, after)
            assert all(g["traces"] >= len(PAIRS) for g in after), after
            assert all(a["points"] > 0 and a["newest"] > b["newest"] for b, a in zip(before, after, strict=True)), \
                (before, after)
            text = page.inner_text("body")
            assert "SIMULATED" in text and "Traceback" not in text
            assert desk.sim.total_connections == 1 and desk.sim.connections == 1
        wait_until(lambda: desk.hub.status.consumers >= VIEWERS, timeout=30,
                   message="the hub did not hear from every viewer's kernel")
        assert desk.sim.total_connections == 1
        still = []  # with all three open, every page's charts still grow
        for page in pages:
            try:
                wait_grown(page, timeout_s=30)
                still.append(True)
            except PlaywrightTimeout:
                still.append(False)
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / "05_desk_dashboard.png"
        pages[0].screenshot(path=str(shot), full_page=True)
        shutil.copy(shot, tmp_path / shot.name)
        (OUTPUT / "05_desk_dashboard.json").write_text(json.dumps(
            {"viewers": VIEWERS, "charts_per_page": len(graphs(pages[0])),
             "simulator_connections": desk.sim.total_connections, "hub_consumers": desk.hub.status.consumers,
             "all_charts_still_growing_per_viewer_at_the_end": still, "hub": desk.hub.status.summary()}))
        assert all(still), f"charts stopped growing on viewers {[i for i, ok in enumerate(still) if not ok]}"
        assert problems == [], problems
    finally:
        for context in contexts:
            context.close()
