"""Shared fixtures: a clean environment, the loopback simulator, and the wait helper."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coinrates_nb.sim.server import Simulator
from tests import helpers


@pytest.fixture(autouse=True)
def _no_coinapi_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test ever sees a real key from the developer's environment."""
    monkeypatch.delenv("COINAPI_KEY", raising=False)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    """The :func:`tests.helpers.wait_until` helper, as a fixture."""
    return helpers.wait_until


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """A running simulator on 127.0.0.1 (free port, seed 1, 20 updates/pair/s), stopped afterwards."""
    sim = Simulator(port=0, seed=1, rate_hz=20)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def make_simulator() -> Iterator[Callable[..., Simulator]]:
    """A factory for started simulators with custom options; all are stopped afterwards."""
    made: list[Simulator] = []

    def make(**options: Any) -> Simulator:
        options.setdefault("port", 0)
        options.setdefault("seed", 1)
        sim = Simulator(**options).start()
        made.append(sim)
        return sim

    yield make
    for sim in made:
        sim.stop()


# ---------------------------------------------------------------------------------- real kernels
# Used by test_plots (nest_asyncio), test_notebooks and test_browser: every Jupyter process gets
# temp config/data/runtime/IPython dirs, so nothing in ~ is read or written, and a "python3"
# kernelspec that points at this interpreter, so a fresh machine needs no `ipykernel install`.


@pytest.fixture(scope="session")
def jupyter_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment variables for Jupyter processes: temp dirs and a python3 kernel on this venv's python."""
    import json
    import sys

    home = tmp_path_factory.mktemp("jupyter-home")
    spec_dir = home / "data" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    env = {
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "agg",
    }
    for key in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        (home / key.lower()).mkdir(exist_ok=True)
    return env


@pytest.fixture
def kernel_env(jupyter_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Apply :func:`jupyter_env` to this process (nbclient launches kernels with it), undone afterwards."""
    for key, value in jupyter_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    return jupyter_env


@pytest.fixture
def run_cells(kernel_env: dict[str, str], tmp_path: Any) -> Callable[..., str]:
    """Run code cells in a fresh real ipykernel ("python3" kernelspec); return their text output.

    Raises ``nbclient.exceptions.CellExecutionError`` (failing the test) if any cell errors.
    """
    import nbformat
    from nbclient import NotebookClient

    def run(sources: list[str], timeout: int = 120) -> str:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbformat.v4.new_code_cell(source) for source in sources]
        NotebookClient(nb, kernel_name="python3", timeout=timeout, startup_timeout=120,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
        texts = []
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    texts.append(output.get("text", ""))
                elif "data" in output:
                    texts.append(str(output["data"].get("text/plain", "")))
        return "\n".join(texts)

    return run


class KernelSession:
    """A real ipykernel driven message by message, so tests can set what JupyterLab sets (``cellId``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, code: str, cell_id: str | None = None, timeout: float = 120.0) -> str:
        """Execute ``code`` as JupyterLab would (with ``metadata.cellId``); return its stdout and results.

        Raises:
            AssertionError: If the cell raised, with the kernel's traceback.
        """
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        msg = self.client.session.msg("execute_request", content,
                                      metadata={"cellId": cell_id} if cell_id else {})
        self.client.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        texts: list[str] = []
        errors: list[str] = []
        while True:
            reply = self.client.get_iopub_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") != msg_id:
                continue
            kind, body = reply["msg_type"], reply["content"]
            if kind == "stream":
                texts.append(body["text"])
            elif kind in ("execute_result", "display_data"):
                texts.append(str(body["data"].get("text/plain", "")))
            elif kind == "error":
                errors.append("\n".join(body["traceback"]))
            elif kind == "status" and body["execution_state"] == "idle":
                break
        assert not errors, errors[0]
        return "".join(texts)


@pytest.fixture
def kernel(kernel_env: dict[str, str], tmp_path: Any) -> Iterator[KernelSession]:
    """A fresh real ipykernel ("python3" kernelspec, temp Jupyter dirs), shut down afterwards."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(startup_timeout=120, kernel_name="python3", cwd=str(tmp_path))
    try:
        yield KernelSession(client)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Collects widgets made by a test and closes them afterwards, so no refresher outlives it."""
    made: list[Any] = []
    yield made
    for widget in made:
        widget.close()
