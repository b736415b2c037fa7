"""What a live dashboard costs where it runs: the kernel, the browser's renderer, the wire, the JS heap.

The Python-side refresh benchmark (``bench_refresh.py``) times one redraw in the kernel; most of
a live chart's cost is elsewhere: plotly.js re-rendering SVG in the browser and the messages in
between. This runs real JupyterLab with headless Chromium (the launching helpers of
``tests/test_browser.py``) and measures, in the same run, one phase after the other:

* **ours**: ``notebooks/02_live_dashboard.ipynb`` run all (dashboard with a row per pair, a
  performance chart, an OHLC chart, status bar and table; the simulator at 10 updates per pair
  per second, 5 pairs);
* **naive**: the same stream into one ``go.FigureWidget`` with a line per pair, every point of
  every line re-sent on every update (a collector listener assigning ``trace.x``/``trace.y``
  from ``rates.df``), what a first attempt at a live chart looks like.

For each phase, over ``--seconds`` after a warm-up, sampled every ``--every`` seconds:

* kernel CPU, % of one core (psutil on the notebook's kernel process);
* renderer CPU, % of one core (psutil, every Chromium renderer process; only the notebook's is busy);
* bytes per second over the kernel's websocket, kernel to browser (Playwright websocket frames);
* JS heap after a forced GC (CDP ``HeapProfiler.collectGarbage`` then ``Performance.getMetrics``
  ``JSHeapUsedSize``), first and last sample, and its slope.

Targets (issue 11): kernel <= 5 % of a core, renderer <= 25 %, heap flat (<= 2 MB/min after GC).
Exits 1 if a target of ours is missed. Skips (exit 0) without Chromium.

Usage::

    python benchmarks/bench_browser.py            # 60 s per phase (~3 min in all)
    python benchmarks/bench_browser.py --quick    # CI smoke: 15 s per phase, no stream-only phase, heap not judged
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing; tests.test_browser holds the launcher

import nbformat  # noqa: E402
from _common import Stat, machine_line, print_table, record_stat  # noqa: E402

logger = logging.getLogger("bench_browser")

TARGET_KERNEL_PCT = 5.0
TARGET_RENDERER_PCT = 25.0
TARGET_HEAP_MB_PER_MIN = 2.0
PAIRS = ["BTC/USD", "ETH/USD", "EUR/USD", "BTC/EUR"]

STREAM = f'''import coinrates_nb as cr

rates = cr.stream({PAIRS!r}, window="15min", rate_hz=10)
rates.wait(timeout=30)
rates.subscribe("SOL/USD")
rates'''
"""The baseline: the same stream (the simulator runs in the kernel too) and no chart."""

NAIVE = f'''import coinrates_nb as cr
import plotly.graph_objects as go

rates = cr.stream({PAIRS!r}, window="15min", rate_hz=10)
rates.wait(timeout=30)
rates.subscribe("SOL/USD")
fig = go.FigureWidget()
for pair in [*{PAIRS!r}, "SOL/USD"]:
    fig.add_scatter(x=[], y=[], name=pair, mode="lines")


def redraw(batch, received_ns):
    """Every update re-sends every point of every line."""
    df = rates.df
    with fig.batch_update():
        for trace in fig.data:
            rows = df[df["pair"] == trace.name]
            trace.x = rows.index
            trace.y = rows["rate"]


rates.add_listener(redraw)
fig'''


@dataclass
class Phase:
    """One measured notebook: its samples."""

    name: str
    kernel_pct: list[float] = field(default_factory=list)
    renderer_pct: list[float] = field(default_factory=list)
    bytes_per_s: list[float] = field(default_factory=list)
    heap_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    redraws_per_s: float = 0.0
    main_thread: dict[str, float] = field(default_factory=dict)  # CDP durations, % of wall time

    def heap_slope(self) -> float:
        """MB per minute of the heap after GC, least squares over the second half of the samples.

        The first half sees the charts' windows fill (a 1-minute chart holds more points each
        second until a minute of data has arrived); flat means flat once they are full.
        """
        samples = self.heap_mb[len(self.heap_mb) // 2 - (len(self.heap_mb) % 2 == 0):]
        if len(samples) < 2:
            return 0.0
        t = [s for s, _ in samples]
        y = [m for _, m in samples]
        mt, my = sum(t) / len(t), sum(y) / len(y)
        var = sum((a - mt) ** 2 for a in t)
        return 60.0 * sum((a - mt) * (b - my) for a, b in zip(t, y, strict=True)) / var if var else 0.0


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def renderers() -> list[psutil.Process]:
    """Chromium renderer processes started (through Playwright's driver) by this process."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "--type=renderer" in " ".join(proc.cmdline()):
                out.append(proc)
        except psutil.Error:
            pass
    return out


def kernel_process(lab: Any, kernel_id: str) -> psutil.Process:
    assert lab.proc is not None
    for proc in psutil.Process(lab.proc.pid).children(recursive=True):
        try:
            if f"kernel-{kernel_id}.json" in " ".join(proc.cmdline()):
                return proc
        except psutil.Error:
            pass
    raise RuntimeError(f"no kernel process for {kernel_id}")


def metrics(cdp: Any) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}


def heap_mb(cdp: Any) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return metrics(cdp)["JSHeapUsedSize"] / 1e6


MAIN_THREAD = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")
"""CDP Performance metrics (seconds of the page's main thread) reported as % of wall time."""


def measure(tb: Any, browser: Any, lab: Any, name: str, notebook: str, seconds: float, every: float,
            ready: str, view: str, shots: Path | None = None) -> Phase:
    """Open ``notebook``, run it all, wait for ``ready`` (JS), scroll ``view`` into sight, warm up, sample ``seconds``."""
    context = browser.new_context(viewport=tb.VIEWPORT)
    page = context.new_page()
    received = [0]

    def on_socket(ws: Any) -> None:
        if "/api/kernels/" in ws.url:
            ws.on("framereceived", lambda payload: received.__setitem__(0, received[0] + len(payload)))

    page.on("websocket", on_socket)
    phase = Phase(name)
    try:
        tb.open_notebook(page, lab, notebook)
        kernel_id = page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")
        kernel = kernel_process(lab, kernel_id)
        tb.run_all(page, notebook)
        page.wait_for_function(ready, timeout=120_000, polling=200)
        page.locator(view).first.scroll_into_view_if_needed()  # what the user watches
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        cdp.send("HeapProfiler.enable")
        page.wait_for_timeout(5_000)  # warm-up: first draws, JIT
        count_redraws = "() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.__redraws || 0)"
        page.evaluate("""() => document.querySelectorAll('.js-plotly-plot').forEach(gd => {
            gd.__redraws = 0; gd.on('plotly_afterplot', () => { gd.__redraws += 1; }); })""")
        began = time.monotonic()
        phase.heap_mb.append((0.0, heap_mb(cdp)))
        first = metrics(cdp)
        next_heap = began + seconds / 4
        last_t, last_k, last_r, last_b = time.monotonic(), cpu_seconds([kernel]), cpu_seconds(renderers()), received[0]
        while time.monotonic() - began < seconds:
            page.wait_for_timeout(every * 1000)
            now, k, r, b = time.monotonic(), cpu_seconds([kernel]), cpu_seconds(renderers()), received[0]
            dt = now - last_t
            phase.kernel_pct.append(100 * (k - last_k) / dt)
            phase.renderer_pct.append(100 * (r - last_r) / dt)
            phase.bytes_per_s.append((b - last_b) / dt)
            last_t, last_k, last_r, last_b = now, k, r, b
            if now >= next_heap and now - began < seconds - every / 2:
                phase.heap_mb.append((now - began, heap_mb(cdp)))
                next_heap += seconds / 4
        elapsed = time.monotonic() - began
        per_chart = page.evaluate(count_redraws)
        phase.redraws_per_s = sum(per_chart) / elapsed
        logger.info("%s: redraws per chart %s in %.0f s", name, per_chart, elapsed)
        if shots is not None:
            page.screenshot(path=str(shots / f"bench-{name}.png"))
        last = metrics(cdp)
        phase.main_thread = {k: 100 * (last[k] - first[k]) / elapsed for k in MAIN_THREAD}
        phase.heap_mb.append((time.monotonic() - began, heap_mb(cdp)))
    finally:
        context.close()
    return phase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI smoke: 15 s per phase, no stream-only phase, the heap slope reported but not judged")
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds per phase (default 60)")
    parser.add_argument("--every", type=float, default=5.0, help="sampling interval, s")
    parser.add_argument("--skip-naive", action="store_true", help="do not measure the naive loop")
    parser.add_argument("--skip-baseline", action="store_true", help="do not measure the stream without charts")
    parser.add_argument("--screenshots", type=Path, default=None, help="save the page at the end of each phase here")
    parser.add_argument("--all-rendered", action="store_true",
                        help="render every cell, also those out of sight (JupyterLab windowingMode 'none'): worst case")
    args = parser.parse_args(argv)
    seconds = args.seconds or (15.0 if args.quick else 60.0)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import tests.test_browser as tb
    except BaseException as exc:  # noqa: BLE001 - pytest's module-level skip (no Chromium) is a BaseException
        print(f"bench_browser: skipped ({exc})")
        return 0
    from playwright.sync_api import sync_playwright

    base = Path(tempfile.mkdtemp(prefix="coinrates-bench-browser-"))
    try:
        root = base / "root"
        root.mkdir()
        shutil.copy(ROOT / "notebooks" / "02_live_dashboard.ipynb", root)
        naive = nbformat.v4.new_notebook()
        naive.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        naive.cells = [nbformat.v4.new_code_cell(NAIVE)]
        nbformat.write(naive, root / "naive.ipynb")
        stream = nbformat.v4.new_notebook()
        stream.metadata = naive.metadata
        stream.cells = [nbformat.v4.new_code_cell(STREAM)]
        nbformat.write(stream, root / "stream.ipynb")
        env = tb.lab_env(base / "home")
        phases: list[Phase] = []
        settings = dict(tb.LAB_SETTINGS)
        if not args.all_rendered:  # JupyterLab's default windowing: cells out of sight are not rendered
            settings.pop("@jupyterlab/notebook-extension/tracker.jupyterlab-settings")
        with tb.run_lab(root, env, base / "lab.log", settings) as lab, sync_playwright() as playwright:
            browser = tb.launch(playwright)
            try:
                runs: list[tuple[str, str, str, str]] = [
                    ("ours", "02_live_dashboard.ipynb",
                     "() => document.querySelectorAll('.js-plotly-plot').length === 3", ".coinrates-dashboard")]
                if not (args.skip_baseline or args.quick):
                    runs.append(("stream only", "stream.ipynb", "() => true", ".jp-OutputArea-output"))
                if not args.skip_naive:
                    runs.append(("naive", "naive.ipynb",
                                 "() => { const gd = document.querySelector('.js-plotly-plot');"
                                 " return gd && gd.data && gd.data.some(t => t.x && t.x.length > 0); }",
                                 ".js-plotly-plot"))
                for name, notebook, ready, view in runs:
                    logger.info("measuring %s (%s) for %.0f s", name, notebook, seconds)
                    phases.append(measure(tb, browser, lab, name, notebook, seconds, args.every, ready, view,
                                          args.screenshots))
            finally:
                browser.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return report(phases, seconds, "every chart rendered" if args.all_rendered else "JupyterLab's default windowing",
                  judge_heap=not args.quick)


def report(phases: list[Phase], seconds: float, setting: str, judge_heap: bool = True) -> int:
    """Print the table, record the figures with targets, return 1 if one of ours is missed.

    ``judge_heap=False`` (``--quick``): 15 s cannot tell a leak from the charts' windows filling
    up, so the heap slope is recorded without a verdict.
    """
    by = {p.name: p for p in phases}
    ours = by["ours"]
    naive = by.get("naive")
    base = by.get("stream only")
    rows: list[tuple[str, str]] = []
    missed = False

    def line(label: str, get: Callable[[Phase], list[float]], unit: str, digits: int = 1) -> Stat:
        stat = Stat.of(get(ours))
        other = f"   naive {Stat.of(get(naive)).show(unit, digits)}" if naive is not None else ""
        other += f"   stream only {Stat.of(get(base)).show(unit, digits)}" if base is not None else ""
        rows.append((label, f"{stat.show(unit, digits)}{other}"))
        return stat

    kernel = line("kernel CPU, % of a core", lambda p: p.kernel_pct, "%")
    renderer = line("renderer CPU, % of a core", lambda p: p.renderer_pct, "%")
    wire = line("kernel -> browser, kB/s", lambda p: [b / 1e3 for b in p.bytes_per_s], "kB/s")
    heap = [f"{p.name} {p.heap_mb[0][1]:.1f} -> {p.heap_mb[-1][1]:.1f} MB ({p.heap_slope():+.2f} MB/min)"
            for p in phases]
    rows.append(("JS heap after GC", "; ".join(heap)))
    rows.append(("chart redraws in the browser, /s", "; ".join(f"{p.name} {p.redraws_per_s:.1f}" for p in phases)))
    for p in phases:
        rows.append((f"{p.name}: page main thread, % of wall", ", ".join(
            f"{k.removesuffix('Duration').lower()} {v:.1f}" for k, v in p.main_thread.items())))
    print_table(f"Browser cost of the live dashboard ({seconds:.0f} s per phase, {setting}, viewport 1280x800 on the "
                f"dashboard; {machine_line()})", rows)
    note = ", ".join(part for part in (
        f"naive {Stat.of(naive.kernel_pct).median:.0f} %" if naive else "",
        f"the stream alone (simulator in the kernel) {Stat.of(base.kernel_pct).median:.1f} %" if base else "") if part)
    met_kernel = kernel.median <= TARGET_KERNEL_PCT
    met_renderer = renderer.median <= TARGET_RENDERER_PCT
    slope = ours.heap_slope()
    met_heap: bool | None = abs(slope) <= TARGET_HEAP_MB_PER_MIN if judge_heap else None
    record_stat("dashboard in JupyterLab: kernel CPU", kernel, "% core", target=f"<= {TARGET_KERNEL_PCT:g}",
                met=met_kernel, note=note, script="bench_browser.py")
    record_stat("dashboard in JupyterLab: renderer CPU", renderer, "% core", target=f"<= {TARGET_RENDERER_PCT:g}",
                met=met_renderer, note=(f"naive {Stat.of(naive.renderer_pct).median:.0f} %" if naive else ""),
                script="bench_browser.py")
    record_stat("dashboard in JupyterLab: kernel -> browser", wire, "kB/s",
                note=(f"naive {Stat.of([b / 1e3 for b in naive.bytes_per_s]).median:,.0f} kB/s" if naive else ""),
                script="bench_browser.py")
    record_stat("dashboard in JupyterLab: JS heap slope after GC", Stat.of([slope]), "MB/min",
                target=f"<= {TARGET_HEAP_MB_PER_MIN:g}", met=met_heap,
                note=f"{ours.heap_mb[0][1]:.1f} -> {ours.heap_mb[-1][1]:.1f} MB"
                + ("" if judge_heap else f" in {seconds:.0f} s: too short to judge"), script="bench_browser.py")
    missed = not (met_kernel and met_renderer and met_heap is not False)
    print(json.dumps({p.name: {"kernel_pct": p.kernel_pct, "renderer_pct": p.renderer_pct,
                               "bytes_per_s": p.bytes_per_s, "heap_mb": p.heap_mb,
                               "redraws_per_s": p.redraws_per_s} for p in phases}))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
