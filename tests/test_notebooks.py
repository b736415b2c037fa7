"""Every notebook in notebooks/ runs top to bottom in a real ipykernel, on the simulator, in under a minute."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
"""Found when the tests are collected, so a notebook added later is run without touching this file."""

BUDGET_S = 60.0
"""Wall-clock limit per notebook, kernel start included ("well under a minute" on an idle machine)."""


def test_the_notebooks_are_found() -> None:
    """The glob finds the quickstart and the dashboard notebooks (and whatever else is there)."""
    names = {path.name for path in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_live_dashboard.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    """Notebooks are stored clean: no outputs, no execution counts, valid nbformat 4."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells)
             if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.notebook
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, kernel_env: dict[str, str], tmp_path: Path) -> None:
    """The notebook executes without error in a fresh "python3" kernel, in a copy of notebooks/, within budget."""
    workdir = tmp_path / "notebooks"
    shutil.copytree(path.parent, workdir)
    nb = nbformat.read(workdir / path.name, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=120,
                            resources={"metadata": {"path": str(workdir)}})
    started = time.monotonic()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET_S, f"{path.name} took {elapsed:.0f} s"
    stderr = [out.get("text", "") for cell in nb.cells for out in cell.get("outputs", [])
              if out.get("output_type") == "stream" and out.get("name") == "stderr"]
    assert not any("Traceback" in text for text in stderr), stderr
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells)
    if path.name == "01_quickstart.ipynb":
        assert_status_readable(nb)
        assert_latest_readable(nb)


def html_outputs(nb: nbformat.NotebookNode, source_end: str) -> list[str]:
    """The HTML results of the code cells whose source ends with ``source_end``."""
    return [out["data"]["text/html"] for cell in nb.cells if cell.cell_type == "code"
            and cell.source.strip().endswith(source_end) for out in cell.outputs
            if out.get("output_type") == "execute_result" and "text/html" in out.get("data", {})]


def assert_latest_readable(nb: nbformat.NotebookNode) -> None:
    """Notebook 01 shows ``rates.latest()`` as the dashboard's table: ms times, human ages, no ns or ``+00:00``."""
    tables = html_outputs(nb, "rates.latest()")
    assert len(tables) == 1, "rates.latest() is not shown as HTML"
    table = tables[0]
    assert 'class="coinrates-latest"' in table and "0 days" not in table and "+00:00" not in table, table
    assert re.search(r">\d\d:\d\d:\d\d\.\d{3}</td>", table) and re.search(r">(\d+ ms|\d\.\d s)</td>", table), table


def assert_status_readable(nb: nbformat.NotebookNode) -> None:
    """Notebook 01 shows ``rates.status`` as the readable card: lag and uptime in human units, never ``0 days ...``."""
    cards = html_outputs(nb, "rates.status")
    assert len(cards) == 1, "rates.status is not shown as HTML"
    card = cards[0]
    assert 'class="coinrates-status-card"' in card and "0 days" not in card, card
    assert re.search(r">lag</th><td[^>]*>(\d+ ms|\d\.\d s)</td>", card), card
    assert re.search(r">throughput</th><td[^>]*>[\d,.]+ msgs/s", card), card
