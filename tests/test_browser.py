"""JupyterLab in headless Chromium: the first hour of a new user, checked the way the user sees it.

A module fixture starts JupyterLab on 127.0.0.1 with ``--port=0`` (jupyter_server accepts it:
``ServerApp._find_http_port`` binds port 0 and reads back the port the OS chose; the server then
records it in its ``jpserver-<pid>.json`` runtime file, which is where we read it), token auth,
``--no-browser``, a temp root holding a copy of ``notebooks/``, and temp Jupyter config/data/
runtime/IPython dirs (nothing in ``~`` is touched). Playwright drives ``/usr/bin/chromium``.

The dashboard tests share one run of ``02_live_dashboard.ipynb`` (and, beside it in a second
tab, ``03_record_replay.ipynb``), in file order, for about a minute: what a user does in that
minute (Enter a pair, remove one, zoom, double-click, stop and start) and what must be true
throughout. Every page error (``page.on("pageerror")``), every kernel traceback and every
warning the kernel writes to stderr (the cells' and the log console's, read from the kernel's
IOPub channel in the page) is collected from the first cell on; the last test fails if there is
any. Each would-be-fixed defect of issue 11 fails at least one test here.

Every wait is a condition with a timeout scaled by ``tests.helpers.SLOW``. On failure each test
saves a screenshot into its ``tmp_path`` (and ``test-output/browser/``, gitignored).

The launching helpers (:func:`lab_env`, :func:`run_lab`, :func:`launch`, :class:`Watch`) are
also used by ``benchmarks/bench_browser.py`` and ``scripts/screenshots.py``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
import pytest

from tests.helpers import SLOW, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
OUTPUT = ROOT / "test-output" / "browser"
VIEWPORT = {"width": 1280, "height": 800}
LAB_START_S = 120
KERNEL_S = 120
RUN_S = 180
DASHBOARD_RUN_S = 60  # how long the dashboard runs before the no-errors verdict

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make browser-deps) to run the browser tests",
                allow_module_level=True)

from playwright.sync_api import Browser, Page, Playwright, sync_playwright  # noqa: E402 - only with Chromium

# JupyterLab user settings: no news/update pop-ups over the page, every cell rendered (no windowing) so
# charts below the fold are laid out like the ones on screen, and the file browser collapsed.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                       "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


# ------------------------------------------------------------------------------------ launching


def lab_env(home: Path) -> dict[str, str]:
    """Environment for Jupyter processes under ``home``: temp dirs, lab settings and a python3 kernel on this venv.

    The same layout as the ``jupyter_env`` fixture in ``tests/conftest.py``, for scripts that run
    outside pytest.
    """
    spec_dir = home / "data" / "kernels" / "python3"
    spec_dir.mkdir(parents=True, exist_ok=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)", "language": "python", "metadata": {"debugger": False}}))
    env = {"JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTER_PLATFORM_DIRS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "agg"}
    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class Lab:
    """A running JupyterLab: base URL, token, root dir, log file and process."""

    url: str
    token: str
    root: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def notebook_url(self, name: str) -> str:
        """URL opening ``name`` in a fresh, reset workspace of its own (no tabs restored from other runs)."""
        workspace = Path(name).stem.replace("_", "-")
        return f"{self.url}lab/workspaces/{workspace}/tree/{name}?reset&token={self.token}"


@contextlib.contextmanager
def run_lab(root: Path, env: dict[str, str], log: Path, settings: dict[str, Any] | None = None) -> Iterator[Lab]:
    """Run JupyterLab on 127.0.0.1 (a free port, token auth) over ``root``; stop it afterwards.

    ``settings`` are the user settings to write (:data:`LAB_SETTINGS` by default).
    """
    folder = Path(env["JUPYTER_CONFIG_DIR"]) / "lab" / "user-settings"
    for name, values in (LAB_SETTINGS if settings is None else settings).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    runtime = Path(env["JUPYTER_RUNTIME_DIR"])
    runtime.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k not in ("COINAPI_KEY", "JUPYTER_PATH")} | env
    token = secrets.token_hex(16)
    args = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", "--port=0", "--port-retries=0",
            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI often run as root
    with open(log, "w") as out:
        proc = subprocess.Popen(args, env=full_env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
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
        yield Lab(url=info["url"], token=token, root=root, log=log, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def launch(playwright: Playwright) -> Browser:
    """Headless Debian Chromium with the flags CI uses."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


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
JS_COLLAPSE_SIDEBAR = """() => { const shell = window.jupyterapp.shell; if (shell.leftCollapsed === false) shell.collapseLeft(); }"""
# Every IOPub message of the notebook's kernel that carries an error or stderr text, whatever its
# parent: cell outputs and the log console's (comm handlers, threads) alike.
JS_WATCH_KERNEL = """() => {
    window.__kernelProblems = window.__kernelProblems || [];
    const session = window.jupyterapp.shell.currentWidget.sessionContext;
    const hook = (kernel) => {
        if (!kernel || kernel.__coinratesWatched) return;
        kernel.__coinratesWatched = true;
        kernel.iopubMessage.connect((_, msg) => {
            const type = msg.header.msg_type, c = msg.content || {};
            if (type === 'error') window.__kernelProblems.push(`error: ${c.ename}: ${c.evalue}`);
            else if (type === 'stream' && c.name === 'stderr') window.__kernelProblems.push(`stderr: ${c.text}`);
        });
    };
    hook(session.session?.kernel);
    session.kernelChanged.connect((_, change) => hook(change.newValue));
}"""
# JupyterLab's widget manager asks every new kernel for its widgets over a "jupyter.widget.control"
# comm as soon as it connects, before any cell has imported ipywidgets; the kernel answers on stderr
# "No such comm target registered: jupyter.widget.control", then "No such comm: <that comm's id>"
# for the request sent on it (measured: every fresh kernel, JupyterLab 4.6 + ipywidgets 8.1). Not
# ours, and before the first cell: this init script records the ids of those control comms from the
# page's own websocket frames, so exactly those lines (and no other "No such comm") are set aside.
JS_RECORD_CONTROL_COMMS = r"""(() => {
    window.__controlComms = [];
    const send = WebSocket.prototype.send;
    const decoder = new TextDecoder('utf-8');
    WebSocket.prototype.send = function (data) {
        try {
            const text = typeof data === 'string' ? data
                : decoder.decode(data instanceof ArrayBuffer ? new Uint8Array(data) : data);
            if (text.includes('jupyter.widget.control') && text.includes('comm_open')) {
                const id = /"comm_id"\s*:\s*"([^"]+)"/.exec(text);
                if (id) window.__controlComms.push(id[1]);
            }
        } catch (e) { /* a frame we cannot read is not a control comm */ }
        return send.call(this, data);
    };
})()"""
JS_GRAPH = """(selector) => {
    const gd = document.querySelector(selector);
    if (!gd || !gd.data || !gd._fullLayout) return null;
    const xs = gd.data.map(t => t.x || []);
    const ax = gd._fullLayout.xaxis;
    return {
        traces: gd.data.length,
        names: gd.data.map(t => t.name),
        colors: Object.fromEntries((gd._fullData || []).map(t => [t.name, (t.line || {}).color])),  // as drawn
        yaxes: gd.data.map(t => t.yaxis || 'y'),
        points: xs.reduce((n, x) => n + x.length, 0),
        newest: Math.max(0, ...xs.filter(x => x.length).map(x => x[x.length - 1])),
        type: ax.type,
        range: ax.range,
        autorange: ax.autorange,
        ticks: [...gd.querySelectorAll('.xtick text')].map(e => e.textContent),
        annotations: (gd._fullLayout.annotations || []).map(a => a.text),
        title: gd._fullLayout.title.text,
        shapes: (gd.layout.shapes || []).map(s => s.name),
        width: gd.getBoundingClientRect().width,
        area: gd.closest('.jp-OutputArea-output')?.getBoundingClientRect().width,
    };
}"""
JS_ALL_X_AXES = """() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')]
    .flatMap(gd => Object.keys(gd._fullLayout).filter(k => /^xaxis\\d*$/.test(k)).map(k => {
        const ax = gd._fullLayout[k];
        return {axis: k, type: ax.type, range: ax.range, showticklabels: ax.showticklabels,
                ticks: [...gd.querySelectorAll('.xaxislayer-above .' + ax._id + 'tick text')].map(e => e.textContent)};
    }))"""
# Where a trace's line breaks: for each NaN point, the x of the drawn points on either side of it.
JS_BREAKS = """([selector, name]) => {
    const gd = document.querySelector(selector);
    const t = gd && gd.data.find(t => t.name === name);
    if (!t) return null;
    const out = [];
    for (let i = 1; i < t.y.length - 1; i++) if (t.y[i] === null || Number.isNaN(t.y[i])) out.push([t.x[i - 1], t.x[i + 1]]);
    return out;
}"""
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
# What a chart shows around its data, as page boxes [left, top, right, bottom]: title, legend (and
# its entries), our annotations (badge, live/paused cue), y tick labels and the plot areas.
JS_CHROME = """(gd) => {
    const box = (e) => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
    const notes = [...gd.querySelectorAll('g.annotation')].map(g => [g.textContent, box(g.querySelector('rect.bg') || g)]);
    const legend = gd.querySelector('g.legend rect.bg');
    return {
        figure: box(gd),
        title: [...gd.querySelectorAll('text.gtitle')].map(box),
        legend: legend && gd._fullLayout.showlegend ? box(legend) : null,
        entries: [...gd.querySelectorAll('g.legend g.traces')].map(g => [g.textContent, box(g)]),
        traces: gd.data.length,
        badge: notes.filter(([text]) => text.includes('SIMULATED DATA')).map(([, b]) => b),
        cue: notes.filter(([text]) => text === '● live' || text.includes('paused')).map(([, b]) => b),
        yticks: [...gd.querySelectorAll('.yaxislayer-above .ytick text, .yaxislayer-above [class*="ytick"] text')]
            .filter(e => e.textContent).map(e => [e.textContent, box(e)]),
        plots: [...gd.querySelectorAll('.nsewdrag')].map(box),
    };
}"""
# The latest-rates table as the user reads it: each cell's text, alignment, wrapping and font.
JS_TABLE = """(selector) => {
    const table = document.querySelector(selector);
    if (!table) return null;
    const cell = (c) => { const s = getComputedStyle(c); return {text: c.textContent.trim(), align: s.textAlign,
        font: s.fontFamily, size: parseFloat(s.fontSize), lines: Math.round(c.getBoundingClientRect().height
        / (parseFloat(s.lineHeight) || 1.2 * parseFloat(s.fontSize)))}; };
    return {head: [...table.querySelectorAll('thead th')].map(cell),
            rows: [...table.querySelectorAll('tbody tr')].map(r => [...r.querySelectorAll('td')].map(cell))};
}"""
DASHBOARD = ".coinrates-dashboard"
DASHBOARD_PLOT = ".coinrates-dashboard .js-plotly-plot"
PERFORMANCE_CELL = 5  # index of the performance chart's cell in 02_live_dashboard.ipynb


def mode_notebook(mode: str) -> Any:
    """A notebook that draws a chart in ``mode`` and then runs an 8 s cell (the thread-vs-loop experiment)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "import time\nimport coinrates_nb as cr\n"
        "rates = cr.stream(['BTC/USD', 'ETH/USD', 'BTC/EUR'], rate_hz=20)\nrates.wait(timeout=60)",
        f"fig = cr.live_chart(rates, mode={mode!r}, fps=4, arrange='overlay')\nfig",
        "time.sleep(8)",
    )]
    return nb


@dataclass
class Watch:
    """Everything that went wrong in a page: page errors, console errors about comms, and the kernel's stderr/errors."""

    page: Page
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)
        self.page.add_init_script(JS_RECORD_CONTROL_COMMS)

    def watch_kernel(self) -> None:
        """Start collecting the notebook kernel's errors and stderr (call once the notebook is open)."""
        self.page.evaluate(JS_WATCH_KERNEL)

    def kernel_problems(self) -> list[str]:
        """Errors and stderr lines the kernel sent so far, less JupyterLab's own control-comm lines at kernel start."""
        problems, control = self.page.evaluate("() => [window.__kernelProblems || [], window.__controlComms || []]")
        startup = {"No such comm target registered: jupyter.widget.control"}
        startup.update(f"No such comm: {comm_id}" for comm_id in control)
        kept = []
        for problem in problems:
            if problem.startswith("stderr: "):  # one stream message can carry several lines
                lines = [line for line in problem[len("stderr: "):].splitlines() if line.strip() not in startup]
                if not any(line.strip() for line in lines):
                    continue
                problem = "stderr: " + "\n".join(lines)
            kept.append(problem)
        return kept

    def problems(self) -> list[str]:
        """Page errors, comm or Plotly errors in the console, and everything the kernel wrote to stderr."""
        console = [m for m in self.console_errors if any(w in m.lower() for w in ("comm", "plotly", "widget"))]
        return ([f"pageerror: {e}" for e in self.page_errors] + [f"console: {m}" for m in console]
                + [f"kernel {p}" for p in self.kernel_problems()])


def open_notebook(page: Page, lab: Lab, name: str) -> None:
    """Open ``name`` in JupyterLab and wait until its kernel is idle."""
    page.goto(lab.notebook_url(name), timeout=LAB_START_S * 1000)
    page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000 * SLOW)
    page.evaluate(JS_COLLAPSE_SIDEBAR)


def run_all(page: Page, name: str) -> None:
    """Run every cell of the open notebook and wait until each has run and the kernel is idle."""
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_function(JS_ALL_RAN, timeout=RUN_S * 1000 * SLOW)
    page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000 * SLOW)


JS_EXECUTE = """async (code) => {
    const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    const future = kernel.requestExecute({code, store_history: false});
    const errors = [];
    future.onIOPub = (msg) => { if (msg.header.msg_type === 'error') errors.push(msg.content.ename + ': ' + msg.content.evalue); };
    await future.done;
    return errors;
}"""


def execute(page: Page, code: str) -> None:
    """Run ``code`` in the open notebook's kernel, as a user would in a new cell, and wait until it ran.

    Comm messages from the browser and execute requests are handled in order, and the flush at the end makes
    the kernel send what its handlers wrote to stderr meanwhile: once this returns, the kernel's complaints
    about anything the page sent before are in :class:`Watch`.
    """
    errors = page.evaluate(JS_EXECUTE, f"{code}\nimport sys as _sys\n_sys.stdout.flush(); _sys.stderr.flush()")
    assert errors == [], errors


def graph(page: Page, selector: str) -> dict[str, Any]:
    """The state of the Plotly graph at ``selector`` as the browser has it."""
    state = page.evaluate(JS_GRAPH, selector)
    assert state is not None, f"no Plotly graph at {selector}"
    return state  # type: ignore[no-any-return]


def wait_graph(page: Page, selector: str, condition: str, arg: Any = None, timeout: float = 60) -> dict[str, Any]:
    """Wait until ``condition`` (a JS expression over ``s``, the graph state, and ``arg``) holds; return the state."""
    page.wait_for_function(f"(arg) => {{ const s = ({JS_GRAPH})({json.dumps(selector)}); return !!s && ({condition}); }}",
                           arg=arg, timeout=timeout * 1000 * SLOW, polling=100)
    return graph(page, selector)


def assert_dates_of_today(state: dict[str, Any], today: dt.date) -> None:
    """The x axis is a date axis whose range and tick labels are today (UTC), not 1970."""
    assert state["type"] == "date", state
    allowed = {str(today), str(today - dt.timedelta(days=1))}  # a run across UTC midnight
    assert str(state["range"][1])[:10] in allowed, state["range"]
    labels = " ".join(state["ticks"])
    assert "1970" not in labels
    if state.get("showticklabels", True):  # shared x axes label only the bottom one
        assert str(today.year) in labels, state


def _overlap(a: list[float], b: list[float]) -> bool:
    """True if two page boxes [left, top, right, bottom] share more than a pixel each way."""
    return min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1


def assert_chrome_clear(page: Page, selector: str) -> None:
    """Every chart at ``selector``: the badge clears the legend, title and cue; every legend entry shows; y ticks sit outside the plot."""
    charts = page.locator(selector)
    assert charts.count() > 0, selector
    for i in range(charts.count()):
        c = charts.nth(i).evaluate(JS_CHROME)
        name = f"chart {i} of {selector}"
        assert len(c["badge"]) == 1, (name, "every chart here shows simulated data: one badge", c)
        for badge in c["badge"]:
            for other in [*c["title"], *c["cue"], *([c["legend"]] if c["legend"] else []),
                          *(b for _, b in c["entries"])]:
                assert not _overlap(badge, other), (name, "the SIMULATED badge covers", badge, other, c)
        for cue in c["cue"]:
            for _, entry in c["entries"]:
                assert not _overlap(cue, entry), (name, "the live/paused cue covers a legend entry", cue, entry)
        if c["legend"] is not None:  # every pair has a legend entry, inside the figure
            assert len(c["entries"]) == c["traces"], (name, c["entries"], c["traces"])
            assert all(b[0] >= c["figure"][0] - 1 and b[2] <= c["figure"][2] + 1 for _, b in c["entries"]), (name, c)
        left = min(p[0] for p in c["plots"])
        inside = [(text, b) for text, b in c["yticks"] if b[2] > left + 1]
        assert c["yticks"] and not inside, (name, "y tick labels run into the plot", inside)


def assert_table_readable(page: Page, selector: str) -> dict[str, int]:
    """The latest-rates table: ms times, human ages, 6 significant digits, numbers right-aligned under right-aligned
    headers, one line per cell, the notebook's UI font (not 12 px monospace). Returns each pair's decimals."""
    table = page.evaluate(JS_TABLE, selector)
    assert table is not None and table["rows"], selector
    heads = [h["text"] for h in table["head"]]
    assert heads[0] == "pair" and heads[1] == "rate" and heads[2].startswith("time (UTC") and heads[3] == "age", heads
    decimals = {}
    for row in table["rows"]:
        pair, rate, clock, age = row
        assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d\.\d{3}", clock["text"]), clock["text"]
        assert re.fullmatch(r"\d+ ms|\d\.\d s|\d+ s|\d+ min \d\d s", age["text"]), age["text"]
        digits = rate["text"].replace(",", "").replace(".", "").lstrip("0")
        assert re.fullmatch(r"[\d,]+(\.\d+)?", rate["text"]) and len(digits) == 6, rate["text"]
        decimals[pair["text"].split()[0]] = len(rate["text"].partition(".")[2])
        for head, cell in zip(table["head"][1:], row[1:], strict=True):
            assert cell["align"] == "right" and head["align"] == "right", (head, cell)
        for cell in row:
            assert cell["lines"] == 1, ("a cell wraps", cell)
            assert "monospace" not in cell["font"] and cell["size"] >= 13, cell
    return decimals


def save_screenshots(page: Page, tmp_path: Path, name: str) -> Path:
    """Screenshot the page to test-output/browser/ and tmp_path; return the test-output path."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    target = OUTPUT / f"{name}.png"
    page.screenshot(path=str(target))
    shutil.copy(target, tmp_path / target.name)
    return target


@contextlib.contextmanager
def shot_on_failure(page: Page, tmp_path: Path, name: str) -> Iterator[None]:
    """On any failure inside, save a screenshot (tmp_path and test-output/browser/) before re-raising."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            save_screenshots(page, tmp_path, f"FAILED-{name}")
        raise


def status_text(page: Page) -> str:
    return page.locator(f"{DASHBOARD} .coinrates-status").inner_text()


def table_pairs(page: Page) -> list[str]:
    return page.eval_on_selector_all(f"{DASHBOARD} table.coinrates-latest tbody tr",
                                     "rows => rows.map(r => r.dataset.pair)")


def table_text(page: Page) -> str:
    return page.locator(f"{DASHBOARD} table.coinrates-latest").inner_text()


def chip(page: Page, pair: str) -> Any:
    return page.locator(f"{DASHBOARD} .coinrates-chip", has_text=f"{pair} ×")


def plot_box(page: Page, selector: str) -> dict[str, float]:
    """The plot area (inside the axes) of the top row of the graph, in page pixels."""
    box = page.evaluate("""(selector) => {
        const gd = document.querySelector(selector);
        const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
        return {x: r.x, y: r.y, width: r.width, height: r.height};
    }""", selector)
    return box  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def lab(jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 (free port, token auth) over a temp copy of notebooks/; stopped afterwards."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    shutil.copytree(ROOT / "notebooks", root)
    for mode in ("thread", "loop"):
        nbformat.write(mode_notebook(mode), root / f"mode_{mode}.ipynb")
    with run_lab(root, jupyter_env, base / "lab.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser(lab: Lab) -> Iterator[Browser]:
    """Headless Chromium (the Debian binary) driven by Playwright."""
    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page (own context: no cookies or storage shared between tests)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


@dataclass
class Run:
    """The shared dashboard run: the dashboard page, the replay page, their watches, and when it began."""

    page: Page
    replay: Page
    watch: Watch
    replay_watch: Watch
    began: float
    notes: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def run(browser: Browser, lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Notebook 02 run all in one tab and notebook 03 in another, watched for errors from before the first cell."""
    # One context (window) each: a background tab gets no animation frames, so it would neither draw nor poll.
    context, replay_context = browser.new_context(viewport=VIEWPORT), browser.new_context(viewport=VIEWPORT)
    page, replay = context.new_page(), replay_context.new_page()
    watch, replay_watch = Watch(page), Watch(replay)
    try:
        for tab, tab_watch, name in ((replay, replay_watch, "03_record_replay.ipynb"),
                                     (page, watch, "02_live_dashboard.ipynb")):
            open_notebook(tab, lab, name)
            tab_watch.watch_kernel()
            tab.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")  # both run at once
        began = time.monotonic()
        try:
            page.wait_for_function(JS_ALL_RAN, timeout=RUN_S * 1000 * SLOW)
            page.wait_for_function(JS_KERNEL_IDLE, arg="02_live_dashboard.ipynb", timeout=KERNEL_S * 1000 * SLOW)
            wait_graph(page, DASHBOARD_PLOT, "s.traces >= 5 && s.points > 0", timeout=RUN_S)
        except BaseException:
            with contextlib.suppress(Exception):
                save_screenshots(page, tmp_path_factory.mktemp("run"), "FAILED-dashboard-run")
            raise
        yield Run(page, replay, watch, replay_watch, began)
    finally:
        context.close()
        replay_context.close()


# ------------------------------------------------------------------------------------ tests


def test_lab_requires_the_token(lab: Lab) -> None:
    """The server refuses API calls without the token (token auth is on)."""
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{lab.url}api/contents", timeout=30)
    assert info.value.code == 403


def test_dashboard_renders_keeps_updating_fills_the_width(run: Run, tmp_path: Path) -> None:
    """All of 02 ran: the charts grow by themselves, show today's dates, fill the width, one price axis per pair."""
    page = run.page
    with shot_on_failure(page, tmp_path, "dashboard"):
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        assert "Traceback" not in " ".join(errors.all_inner_texts())
        prompts = page.evaluate(JS_PROMPTS)
        first = graph(page, DASHBOARD_PLOT)
        later = wait_graph(page, DASHBOARD_PLOT, "s.points > arg[0] && s.newest > arg[1]",
                           [first["points"], first["newest"]])
        assert page.evaluate(JS_PROMPTS) == prompts, "a cell ran again"

        # Mixed magnitudes stay readable: each pair on its own price axis (BTC/USD 95k, EUR/USD 1.08).
        assert later["names"][:4] == ["BTC/USD", "ETH/USD", "EUR/USD", "BTC/EUR"], later["names"]
        assert len(set(later["yaxes"])) == later["traces"], later["yaxes"]

        # Dates are right in the browser, on every chart of the notebook.
        today = dt.datetime.now(dt.UTC).date()
        plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")
        assert plots.count() == 3  # dashboard (rates), performance, OHLC
        states = page.evaluate(JS_ALL_X_AXES)
        assert len(states) == 1 + 1 + 2  # the OHLC chart has one x axis per pair (2)
        for state in states:
            assert_dates_of_today(state, today)

        # Every chart fills its output area (no fixed 700 px), and every OHLC row has a price-axis title.
        widths = page.evaluate("""() => [...document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot')].map(gd => [gd._fullLayout.width,
            gd.closest('.jp-OutputArea-output').getBoundingClientRect().width])""")
        assert all(w >= 0.95 * area and w > 900 for w, area in widths), widths
        ohlc_titles = page.evaluate("""() => { const gd = [...document.querySelectorAll('.js-plotly-plot')].pop();
            return Object.keys(gd._fullLayout).filter(k => /^yaxis\\d*$/.test(k))
                .map(k => gd._fullLayout[k].title.text); }""")
        assert ohlc_titles == ["USD", "USD"], ohlc_titles

        # Around the data: the badge clears legend, title and cue; each pair has its legend entry; y ticks sit outside.
        assert_chrome_clear(page, ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")

        # The latest-rates table reads at a glance, and each pair keeps its decimals from one redraw to the next.
        decimals = assert_table_readable(page, f"{DASHBOARD} table.coinrates-latest")
        seen = table_text(page)
        wait_until(lambda: table_text(page) != seen, timeout=30, message="the table stopped updating")
        assert assert_table_readable(page, f"{DASHBOARD} table.coinrates-latest") == decimals

        # The SIMULATED DATA badge is visible in the status bar, and on the chart.
        badge = page.locator(f"{DASHBOARD} .coinrates-simulated")
        badge.wait_for(state="visible", timeout=30_000 * SLOW)
        assert badge.inner_text().strip() == "SIMULATED DATA"
        assert any("SIMULATED DATA" in text for text in later["annotations"])
        assert page.locator(f"{DASHBOARD} .coinrates-state").inner_text().strip() == "connected"
        page.locator(DASHBOARD).scroll_into_view_if_needed()
        shot = save_screenshots(page, tmp_path, "02_live_dashboard")
        assert shot.stat().st_size > 10_000


def test_enter_in_the_pair_box_subscribes(run: Run, tmp_path: Path) -> None:
    """Typing XRP/USD and pressing Enter adds its chip, its line and its table row."""
    page = run.page
    with shot_on_failure(page, tmp_path, "enter"):
        entry = page.locator(f"{DASHBOARD} .coinrates-pair-entry input")
        assert entry.is_visible()  # always visible, however many pairs there are
        entry.fill("XRP/USD")
        entry.press("Enter")
        chip(page, "XRP/USD").wait_for(state="visible", timeout=30_000 * SLOW)
        wait_graph(page, DASHBOARD_PLOT, "s.names.includes('XRP/USD') && s.points > 0")
        wait_until(lambda: "XRP/USD" in table_pairs(page), timeout=30, message="no XRP/USD row in the table")
        assert entry.input_value() == ""


def test_removing_a_pair_removes_its_line_and_row_and_keeps_the_colours(run: Run, tmp_path: Path) -> None:
    """× on BTC/EUR removes its line and table row at once; every other line keeps its colour."""
    page = run.page
    with shot_on_failure(page, tmp_path, "remove"):
        before = graph(page, DASHBOARD_PLOT)
        assert "BTC/EUR" in before["names"] and "BTC/EUR" in table_pairs(page)
        assert all(before["colors"].values()), before["colors"]
        chip(page, "BTC/EUR").click()
        after = wait_graph(page, DASHBOARD_PLOT, "!s.names.includes('BTC/EUR')")
        wait_until(lambda: "BTC/EUR" not in table_pairs(page), timeout=30, message="BTC/EUR stayed in the table")
        moved = {n: (before["colors"][n], c) for n, c in after["colors"].items()
                 if n in before["colors"] and c != before["colors"][n]}
        assert moved == {}, f"lines changed colour: {moved}"
        run.notes["removed"] = time.monotonic()


def test_rerunning_a_chart_cell_replaces_the_chart(run: Run, tmp_path: Path) -> None:
    """Re-running the performance chart's cell closes the old chart (no comm errors, checked at the end) and draws anew."""
    page = run.page
    with shot_on_failure(page, tmp_path, "rerun"):
        plots = ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot"
        before = page.locator(plots).count()
        page.evaluate(JS_RUN_CELL, PERFORMANCE_CELL)
        page.wait_for_function(JS_KERNEL_IDLE, arg="02_live_dashboard.ipynb", timeout=KERNEL_S * 1000 * SLOW)
        page.wait_for_function(f"(n) => document.querySelectorAll({json.dumps(plots)}).length === n", arg=before,
                               timeout=30_000 * SLOW, polling=100)
        wait_graph(page, f".jp-Cell:nth-child({PERFORMANCE_CELL + 1}) .js-plotly-plot", "s.points > 0")


def test_zoom_pauses_and_double_click_follows_live(run: Run, tmp_path: Path) -> None:
    """A box zoom pauses the chart on that range (cue "paused"); a double-click follows the live edge again."""
    page = run.page
    with shot_on_failure(page, tmp_path, "zoom"):
        page.locator(DASHBOARD_PLOT).scroll_into_view_if_needed()
        box = plot_box(page, DASHBOARD_PLOT)
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y + 2, steps=8)
        page.mouse.up()
        paused = wait_graph(page, DASHBOARD_PLOT, "s.annotations.some(a => a.includes('paused'))")
        held = list(paused["range"])
        for _ in range(2):  # new rates arrive and the dashboard redraws meanwhile ...
            seen = table_text(page)
            wait_until(lambda seen=seen: table_text(page) != seen, timeout=30, message="the table stopped updating")
        assert graph(page, DASHBOARD_PLOT)["range"] == held  # ... and the user's range stays
        page.mouse.dblclick(box["x"] + box["width"] * 0.5, y)
        live = wait_graph(page, DASHBOARD_PLOT, "s.annotations.includes('● live')")  # the paused cue also says "live"
        assert live["range"] != held
        # Following again: rates newer than the held range are drawn, and the x axis ends at the newest of them.
        wait_graph(page, DASHBOARD_PLOT, "s.newest > Date.parse(arg.replace(' ', 'T') + 'Z') + 5000 && "
                   "Date.parse(s.range[1].replace(' ', 'T') + 'Z') >= s.newest - 2000", str(held[1]), timeout=30)


def test_an_unknown_pair_is_told(run: Run, tmp_path: Path) -> None:
    """FOO/USD is refused up front (the simulator knows it is no asset) or, if accepted, noted after 30 s without data."""
    page = run.page
    with shot_on_failure(page, tmp_path, "unknown-pair"):
        entry = page.locator(f"{DASHBOARD} .coinrates-pair-entry input")
        entry.fill("FOO/USD")
        entry.press("Enter")
        added = time.monotonic()
        told = page.locator(f"{DASHBOARD} .coinrates-no-data, {DASHBOARD} .coinrates-error")
        told.first.wait_for(state="visible", timeout=(max(5.0, 45 - (time.monotonic() - added))) * 1000 * SLOW)
        text = told.first.inner_text()
        if "no data for" in text:  # accepted (CoinAPI accepts any pair): silent for 30 s, then said so
            assert "no data for FOO/USD" in text, text
        else:  # refused: the error says why, no chip pretends it is subscribed, the text stays to be fixed
            assert "FOO" in text and "not a CoinAPI asset" in text, text
            assert chip(page, "FOO/USD").count() == 0
            assert page.locator(f"{DASHBOARD} .coinrates-pair-entry input").input_value() == "FOO/USD"


def test_stop_start_shows_zero_and_breaks_the_line(run: Run, tmp_path: Path) -> None:
    """Stopped, the status bar shows 0.0 msgs/s; after Start the line breaks across the pause (and it is shaded)."""
    page = run.page
    with shot_on_failure(page, tmp_path, "stop-start"):
        button = page.locator(f"{DASHBOARD} .coinrates-start-stop")
        button.click()
        wait_until(lambda: "stopped" in status_text(page), timeout=30, message="the status bar did not show stopped")
        stopped_ms = time.time() * 1000  # the simulator stamps rates with this machine's wall clock
        assert "0.0 msgs/s" in status_text(page), status_text(page)
        paused_at = time.monotonic()
        while time.monotonic() - paused_at < 6.5:  # the pause under test: longer than a 10 Hz pair's 5 s gap threshold
            assert "0.0 msgs/s" in status_text(page), status_text(page)  # ... and it shows 0 all along
            page.wait_for_timeout(250)
        started_ms = time.time() * 1000
        button.click()
        wait_until(lambda: "connected" in status_text(page), timeout=60, message="no reconnect after Start")
        # The chart has drawn rates that arrived after the restart (it redraws every few seconds: wait for them) ...
        wait_graph(page, DASHBOARD_PLOT, "s.newest > arg", started_ms, timeout=60)
        # ... and BTC/USD's line breaks exactly across the pause: the last point before it, then the first after it.
        breaks = page.evaluate(JS_BREAKS, [DASHBOARD_PLOT, "BTC/USD"])
        assert breaks and any(before <= stopped_ms and after >= started_ms for before, after in breaks), \
            (stopped_ms, started_ms, breaks)
        assert "coinrates-gap" in graph(page, DASHBOARD_PLOT)["shapes"]


def test_replay_chart_carries_the_badge_and_the_notebook_ends_visible(run: Run, tmp_path: Path) -> None:
    """Notebook 03 (run beside the dashboard): its replay chart says SIMULATED, stays open, and the last cell shows a chart."""
    replay = run.replay
    with shot_on_failure(replay, tmp_path, "replay"):
        replay.wait_for_function(JS_ALL_RAN, timeout=RUN_S * 1000 * SLOW)
        replay.wait_for_function(JS_KERNEL_IDLE, arg="03_record_replay.ipynb", timeout=KERNEL_S * 1000 * SLOW)
        selector = ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot"
        charts = replay.locator(selector)
        assert charts.count() == 2, "the replay chart and the last cell's chart"
        first = graph(replay, selector)
        assert first["title"].endswith("— SIMULATED"), first["title"]
        assert any("SIMULATED DATA" in text for text in first["annotations"]), first["annotations"]
        assert first["points"] > 0, "the replay chart is blank"
        assert_chrome_clear(replay, selector)
        last = replay.evaluate(f"() => ({JS_GRAPH})('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell:last-child "
                               f".js-plotly-plot')")
        assert last is not None and last["points"] > 0, "the notebook does not end with a visible chart"

        # Closing a chart that is on screen (what 03's last cell used to do) leaves no comm error behind.
        execute(replay, "chart.close()")
        replay.wait_for_function(f"(n) => document.querySelectorAll({json.dumps(selector)}).length === n", arg=1,
                                 timeout=30_000 * SLOW, polling=100)
        execute(replay, "pass")  # the browser's messages about the removed view have been handled
        assert run.replay_watch.problems() == [], run.replay_watch.problems()


def test_a_minute_of_use_leaves_no_errors_and_no_stale_flag_for_a_removed_pair(run: Run, tmp_path: Path) -> None:
    """After a minute of use: no page error, no kernel traceback or stderr (log console), removed BTC/EUR never stale."""
    page = run.page
    with shot_on_failure(page, tmp_path, "minute"):
        wait_until(lambda: time.monotonic() - run.began >= DASHBOARD_RUN_S, timeout=DASHBOARD_RUN_S * 2, interval=0.5)
        removed = run.notes.get("removed")
        if removed is not None:  # stale_after is 10 s: a removed pair must still not be flagged after it
            wait_until(lambda: time.monotonic() - removed >= 12, timeout=30, interval=0.5)
            assert "BTC/EUR" not in status_text(page), status_text(page)
        assert_chrome_clear(page, ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot")  # XRP/USD added since
        save_screenshots(page, tmp_path, "02_after_a_minute")
        # Last, the user closes the dashboard while it is on screen: no comm error either.
        execute(page, "board.close()")
        page.locator(DASHBOARD).wait_for(state="detached", timeout=30_000 * SLOW)
        execute(page, "pass")  # the browser's messages about the removed views have been handled
        problems = run.watch.problems() + [f"[03] {p}" for p in run.replay_watch.problems()]
        assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("mode", ["thread", "loop"])
def test_redraws_during_a_long_cell(lab: Lab, page: Page, tmp_path: Path, mode: str) -> None:
    """While another cell runs 8 s, a "thread" chart keeps redrawing in the browser; a "loop" chart freezes, then resumes."""
    name = f"mode_{mode}.ipynb"
    watch = Watch(page)
    with shot_on_failure(page, tmp_path, f"mode-{mode}"):
        open_notebook(page, lab, name)
        watch.watch_kernel()
        page.evaluate(JS_RUN_CELL, 0)
        page.evaluate(JS_RUN_CELL, 1)
        plot = ".jp-NotebookPanel:not(.lm-mod-hidden) .js-plotly-plot"
        wait_graph(page, plot, "s.traces === 3", timeout=RUN_S)
        page.evaluate(JS_SAMPLER, plot)
        page.wait_for_function("() => window.__samples.length >= 10", timeout=60_000 * SLOW)
        page.evaluate(JS_RUN_CELL, 2)  # resolves when the 8 s cell has finished
        page.wait_for_function(JS_KERNEL_IDLE, arg=name, timeout=KERNEL_S * 1000 * SLOW)
        busy = page.evaluate("() => window.__samples.filter(s => s[2] === '[*]:')")
        assert len(busy) >= 20, f"sampled only {len(busy)} times during the cell"
        distinct = len({s[1] for s in busy})
        advance_s = (max(s[1] for s in busy) - min(s[1] for s in busy)) / 1000
        if mode == "thread":
            assert distinct >= 8 and advance_s >= 4, (distinct, advance_s)
        else:
            assert distinct <= 3 and advance_s <= 1.5, (distinct, advance_s)
        last_busy = max(s[1] for s in busy)
        wait_graph(page, plot, "s.newest > arg", last_busy)  # both modes redraw again once the cell is done
        page.evaluate("() => clearInterval(window.__sampler)")
        assert watch.problems() == []
        save_screenshots(page, tmp_path, f"mode_{mode}")
    evidence = {"mode": mode, "samples_during_cell": len(busy), "distinct_newest_x": distinct,
                "newest_x_advance_s": round(advance_s, 2)}
    (OUTPUT / f"mode_{mode}.json").write_text(json.dumps(evidence))  # the refresh.py docstring quotes these
