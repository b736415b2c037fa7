"""JupyterLab in headless Chromium: the dashboard notebook renders, keeps updating by itself, shows dates and the badge.

A module fixture starts JupyterLab on 127.0.0.1 with ``--port=0`` (jupyter_server accepts it:
``ServerApp._find_http_port`` binds port 0 and reads back the port the OS chose; the server then
records it in its ``jpserver-<pid>.json`` runtime file, which is where we read it), token auth,
``--no-browser``, a temp root holding a copy of ``notebooks/``, and temp Jupyter config/data/
runtime/IPython dirs (nothing in ``~`` is touched). Playwright drives ``/usr/bin/chromium``.
Every wait is a condition with a timeout; the timeouts are generous for a busy 2-core machine.

Screenshots go to ``test-output/browser/`` at the repository root (gitignored) and to the test's
``tmp_path``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUTPUT = ROOT / "test-output" / "browser"
LAB_START_S = 120
KERNEL_S = 120
RUN_S = 180

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps) to run the browser tests",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402 - only once Chromium is known present

# JupyterLab user settings: no news/update pop-ups over the page, and every cell rendered (no windowing),
# so charts below the fold are laid out like the ones on screen.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


@dataclass
class Lab:
    """A running JupyterLab: base URL, token, root dir and log file."""

    url: str
    token: str
    root: Path
    log: Path

    def notebook_url(self, name: str) -> str:
        """URL opening ``name`` in a fresh, reset workspace of its own (no tabs restored from other tests)."""
        workspace = Path(name).stem.replace("_", "-")
        return f"{self.url}lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}"


def mode_notebook(mode: str) -> Any:
    """A notebook that draws a chart in ``mode`` and then runs an 8 s cell (the thread-vs-loop experiment)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import time\nimport coinrates_nb as cr\n"
        "rates = cr.stream(['BTC/USD', 'ETH/USD', 'BTC/EUR'], rate_hz=20)\nrates.wait(timeout=60)",
        f"fig = cr.live_chart(rates, mode={mode!r}, fps=4)\nfig",
        "time.sleep(8)",
    )]
    return nb


@pytest.fixture(scope="module")
def lab(jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 (free port, token auth) over a temp copy of notebooks/; stopped afterwards."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    shutil.copytree(ROOT / "notebooks", root)
    for mode in ("thread", "loop"):
        nbformat.write(mode_notebook(mode), root / f"mode_{mode}.ipynb")
    settings = Path(jupyter_env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    runtime = Path(jupyter_env["JUPYTER_RUNTIME_DIR"])
    runtime.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("COINAPI_KEY", "JUPYTER_PATH")} | jupyter_env
    token = secrets.token_hex(16)
    log = base / "lab.log"
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0", "--port-retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI often run as root
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    try:
        info_file = runtime / f"jpserver-{proc.pid}.json"

        def started() -> dict[str, Any] | None:
            assert proc.poll() is None, f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                return json.loads(info_file.read_text())  # type: ignore[no-any-return]
            except (FileNotFoundError, ValueError):
                return None

        info = wait_until(started, timeout=LAB_START_S, interval=0.2, message="JupyterLab did not start")
        assert info["port"] != 0 and info["url"].startswith("http://127.0.0.1:")

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{info['url']}api/status?token={token}", timeout=5) as response:
                    return bool(response.status == 200)
            except (urllib.error.URLError, OSError):
                return False

        wait_until(answers, timeout=LAB_START_S, interval=0.2, message="JupyterLab does not answer")
        yield Lab(url=info["url"], token=token, root=root, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Browser]:
    """Headless Chromium (the Debian binary) driven by Playwright."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own context: no cookies or storage shared between tests)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


# ------------------------------------------------------------------------------------ page helpers

JS_KERNEL_IDLE = """(name) => {
    const w = window.jupyterapp?.shell?.currentWidget;
    return !!w && w.context?.path === name && w.sessionContext?.session?.kernel?.status === 'idle';
}"""
JS_RUN_CELL = """async (i) => {
    const notebook = window.jupyterapp.shell.currentWidget.content;
    notebook.activeCellIndex = i;
    await window.jupyterapp.commands.execute('notebook:run-cell');
}"""
JS_PROMPTS = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
    .map(e => e.textContent.trim())"""
JS_ALL_RAN = """() => {
    const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')]
        .map(e => e.textContent.trim());
    return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t));
}"""
JS_GRAPH = """(selector) => {
    const gd = document.querySelector(selector);
    if (!gd || !gd.data || !gd._fullLayout) return null;
    const xs = gd.data.map(t => t.x || []);
    const ax = gd._fullLayout.xaxis;
    return {
        traces: gd.data.length,
        points: xs.reduce((n, x) => n + x.length, 0),
        newest: Math.max(0, ...xs.filter(x => x.length).map(x => x[x.length - 1])),
        type: ax.type,
        range: ax.range,
        ticks: [...gd.querySelectorAll('.xtick text')].map(e => e.textContent),
        annotations: (gd._fullLayout.annotations || []).map(a => a.text),
    };
}"""
JS_ALL_X_AXES = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
    .flatMap(gd => Object.keys(gd._fullLayout).filter(k => /^xaxis\\d*$/.test(k)).map(k => {
        const ax = gd._fullLayout[k];
        return {axis: k, type: ax.type, range: ax.range, showticklabels: ax.showticklabels,
                ticks: [...gd.querySelectorAll('.xaxislayer-above .' + ax._id + 'tick text')].map(e => e.textContent)};
    }))"""
JS_SAMPLER = """(selector) => {
    window.__samples = [];
    window.__sampler = setInterval(() => {
        const gd = document.querySelector(selector);
        if (!gd || !gd.data) return;
        const xs = gd.data.map(t => t.x || []).filter(x => x.length);
        const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());
        window.__samples.push([performance.now(), Math.max(0, ...xs.map(x => x[x.length - 1])), prompts[2]]);
    }, 100);
}"""
DASHBOARD_PLOT = ".coinrates-dashboard .js-plotly-plot"


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.notebook_url(name), timeout=LAB_START_S * 1000)
    page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000)


def graph(page: Page, selector: str) -> dict[str, Any]:
    """The state of the Plotly graph at ``selector`` as the browser has it."""
    state = page.evaluate(JS_GRAPH, selector)
    assert state is not None, f"no Plotly graph at {selector}"
    return state  # type: ignore[no-any-return]


def assert_dates_of_today(state: dict[str, Any], today: dt.date) -> None:
    """The x axis is a date axis whose range and tick labels are today (UTC), not 1970."""
    assert state["type"] == "date", state
    allowed = {str(today), str(today - dt.timedelta(days=1))}  # a run across UTC midnight
    assert str(state["range"][1])[:10] in allowed, state["range"]
    labels = " ".join(state["ticks"])
    assert "1970" not in labels
    if state.get("showticklabels", True):  # shared x axes label only the bottom one
        assert str(today.year) in labels, state


def save_screenshots(page: Page, tmp_path: Path, name: str) -> Path:
    """Screenshot the page to test-output/browser/ and tmp_path; return the test-output path."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"{name}.png"
    page.screenshot(path=str(target))
    shutil.copy(target, tmp_path / target.name)
    return target


# ------------------------------------------------------------------------------------ tests


def test_lab_requires_the_token(lab: Lab) -> None:
    """The server refuses API calls without the token (token auth is on)."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{lab.url}api/contents", timeout=30)
    assert info.value.code == 403


def test_dashboard_notebook_renders_and_keeps_updating(lab: Lab, page: Page, tmp_path: Path) -> None:
    """Run all of 02_live_dashboard: chart drawn, points grow with no more cells run, dates are today, badge shows."""
    name = "02_live_dashboard.ipynb"
    open_notebook(page, lab, name)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(JS_ALL_RAN, timeout=RUN_S * 1000)
    page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000)
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    assert "Traceback" not in " ".join(errors.all_inner_texts())
    prompts = page.evaluate(JS_PROMPTS)

    # The chart is drawn: every subscribed pair has a line with points.
    page.wait_for_function(f"() => {{ const s = ({JS_GRAPH})({json.dumps(DASHBOARD_PLOT)});"
                           " return s && s.traces >= 3 && s.points > 0; }", timeout=RUN_S * 1000)
    first = graph(page, DASHBOARD_PLOT)

    # It grows by itself: more points and a newer newest point, while no cell runs.
    page.wait_for_function(
        f"([points, newest]) => {{ const s = ({JS_GRAPH})({json.dumps(DASHBOARD_PLOT)});"
        " return s && s.points > points && s.newest > newest; }",
        arg=[first["points"], first["newest"]], timeout=60_000)
    later = graph(page, DASHBOARD_PLOT)
    assert later["points"] > first["points"] and later["newest"] > first["newest"]
    assert page.evaluate(JS_PROMPTS) == prompts, "a cell ran again"

    # Dates are right in the browser, on every chart of the notebook.
    today = dt.datetime.now(dt.UTC).date()
    plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
    assert plots.count() == 3  # dashboard chart, performance, OHLC
    states = page.evaluate(JS_ALL_X_AXES)
    assert len(states) == 3 + 2  # the OHLC chart has one x axis per pair (3)
    for state in states:
        assert_dates_of_today(state, today)

    # The SIMULATED DATA badge is visible in the status bar, and on the chart.
    badge = page.locator(".coinrates-dashboard .coinrates-simulated")
    badge.wait_for(state="visible", timeout=30_000)
    assert badge.inner_text().strip() == "SIMULATED DATA"
    assert any("SIMULATED DATA" in text for text in later["annotations"])
    assert page.locator(".coinrates-dashboard .coinrates-state").inner_text().strip() == "connected"

    page.locator(".coinrates-dashboard").scroll_into_view_if_needed()
    shot = save_screenshots(page, tmp_path, "02_live_dashboard")
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_redraws_during_a_long_cell(lab: Lab, page: Page, tmp_path: Path, mode: str) -> None:
    """While another cell runs 8 s, a "thread" chart keeps redrawing in the browser; a "loop" chart freezes, then resumes."""
    name = f"mode_{mode}.ipynb"
    open_notebook(page, lab, name)
    page.evaluate(JS_RUN_CELL, 0)
    page.evaluate(JS_RUN_CELL, 1)
    plot = ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot"
    page.wait_for_function(f"() => {{ const s = ({JS_GRAPH})({json.dumps(plot)}); return s && s.traces === 3; }}",
                           timeout=RUN_S * 1000)
    page.evaluate(JS_SAMPLER, plot)
    page.wait_for_function("() => window.__samples.length >= 10", timeout=60_000)
    page.evaluate(JS_RUN_CELL, 2)  # resolves when the 8 s cell has finished
    page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000)
    busy = page.evaluate("() => window.__samples.filter(s => s[2] === '[*]:')")
    assert len(busy) >= 20, f"sampled only {len(busy)} times during the cell"
    distinct = len({s[1] for s in busy})
    advance_s = (max(s[1] for s in busy) - min(s[1] for s in busy)) / 1000
    if mode == "thread":
        assert distinct >= 8 and advance_s >= 4, (distinct, advance_s)
    else:
        assert distinct <= 3 and advance_s <= 1.5, (distinct, advance_s)
    last_busy = max(s[1] for s in busy)
    page.wait_for_function(  # both modes redraw again once the cell is done
        f"(x) => {{ const s = ({JS_GRAPH})({json.dumps(plot)}); return s && s.newest > x; }}",
        arg=last_busy, timeout=60_000)
    page.evaluate("() => clearInterval(window.__sampler)")
    save_screenshots(page, tmp_path, f"mode_{mode}")
    evidence = {"mode": mode, "samples_during_cell": len(busy), "distinct_newest_x": distinct,
                "newest_x_advance_s": round(advance_s, 2)}
    (OUTPUT / f"mode_{mode}.json").write_text(json.dumps(evidence))  # the refresh.py docstring quotes these
