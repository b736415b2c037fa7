"""Regenerate the README's screenshots: notebook 01 and the live dashboard of notebook 02, in real JupyterLab.

Runs JupyterLab (temp config, token auth, 127.0.0.1) over a temp copy of ``notebooks/`` with the
launching helpers of ``tests/test_browser.py``, runs each notebook in headless Chromium at
1280 px wide with the file browser collapsed, and writes PNGs into ``docs/``:

* ``docs/quickstart.png``: notebook 01 from the top, every cell run (status card, DataFrame,
  latest-rates table, analysis);
* ``docs/dashboard.png``: the dashboard of notebook 02 after ~20 s of simulated data;
* ``docs/charts.png``: the performance and OHLC charts below it.

Usage::

    .venv/bin/python scripts/screenshots.py            # writes docs/*.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("screenshots")

WIDTH = 1280
LIVE_S = 20.0
"""Seconds of live data the dashboard shows before its picture is taken."""

JS_NOTEBOOK_HEIGHT = """() => {
    const panel = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer');
    return panel ? panel.scrollHeight : 0;
}"""


def clip(page: Any, top: Any, bottom: Any, target: Path) -> None:
    """Save the page from the top of ``top`` to the bottom of ``bottom``, the viewport made tall enough to hold both.

    JupyterLab scrolls inside its notebook panel, so an element taller than the window cannot be
    captured from a normal window: the window grows instead.
    """
    first, last = top.bounding_box(), bottom.bounding_box()
    assert first is not None and last is not None
    height = last["y"] + last["height"] - first["y"]
    page.set_viewport_size({"width": WIDTH, "height": int(height + 260)})
    top.scroll_into_view_if_needed()
    page.evaluate("(el) => el.scrollIntoView({block: 'start'})", top.element_handle())
    page.wait_for_timeout(1500)
    first, last = top.bounding_box(), bottom.bounding_box()
    assert first is not None and last is not None
    page.screenshot(path=str(target), clip={"x": first["x"] - 4, "y": first["y"] - 4, "width": first["width"] + 8,
                                            "height": last["y"] + last["height"] - first["y"] + 8})


def quickstart(tb: Any, browser: Any, lab: Any, out: Path) -> Path:
    """Run notebook 01 and take the whole notebook in one picture (the viewport made as tall as it)."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    page = context.new_page()
    try:
        tb.open_notebook(page, lab, "01_quickstart.ipynb")
        tb.run_all(page, "01_quickstart.ipynb")
        height = int(page.evaluate(JS_NOTEBOOK_HEIGHT))
        page.set_viewport_size({"width": WIDTH, "height": min(max(height + 160, 900), 6000)})
        page.evaluate("() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) "
                      ".jp-WindowedPanel-outer').scrollTo(0, 0)")
        page.wait_for_timeout(1000)
        target = out / "quickstart.png"
        cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell")
        clip(page, cells.first, cells.last, target)
        return target
    finally:
        context.close()


def dashboard(tb: Any, browser: Any, lab: Any, out: Path) -> list[Path]:
    """Run notebook 02, let it stream for :data:`LIVE_S`, then take the dashboard and the charts below it."""
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    page = context.new_page()
    try:
        tb.open_notebook(page, lab, "02_live_dashboard.ipynb")
        tb.run_all(page, "02_live_dashboard.ipynb")
        page.wait_for_timeout(LIVE_S * 1000)
        shots = [out / "dashboard.png"]
        clip(page, page.locator(".coinrates-dashboard"), page.locator(".coinrates-dashboard"), shots[0])
        plots = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .js-plotly-plot")
        if plots.count() >= 3:
            shots.append(out / "charts.png")
            clip(page, plots.nth(1), plots.nth(2), shots[1])
        return shots
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the PNGs (default docs/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        import tests.test_browser as tb
    except BaseException as exc:  # noqa: BLE001 - pytest's module-level skip (no Chromium) is a BaseException
        logger.error("cannot take screenshots: %s", exc)
        return 1
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="coinrates-screenshots-"))
    try:
        root = base / "root"
        shutil.copytree(ROOT / "notebooks", root)
        with tb.run_lab(root, tb.lab_env(base / "home"), base / "lab.log") as lab, sync_playwright() as playwright:
            browser = tb.launch(playwright)
            try:
                made = [quickstart(tb, browser, lab, args.out), *dashboard(tb, browser, lab, args.out)]
            finally:
                browser.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    for path in made:
        logger.info("wrote %s (%s bytes)", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path,
                    f"{path.stat().st_size:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
