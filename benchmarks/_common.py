"""Shared pieces of the benchmark scripts: statistics, machine description, and the figures file.

Each ``bench_*.py`` prints its own table. Figures that answer a target are also handed to
:func:`record`, which appends them as JSON lines to the file named by ``COINRATES_BENCH_RESULTS``
(set by ``run_all.py``) so the runner can print one summary table; run alone, a script just prints.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_ENV = "COINRATES_BENCH_RESULTS"


@dataclass(frozen=True)
class Stat:
    """Median of repeated measurements with their range, in one unit."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(statistics.median(values), min(values), max(values), len(values))

    @classmethod
    def percentiles(cls, values: Sequence[float]) -> Stat:
        """Median with the 10th-90th percentile band, for many single-shot timings."""
        p10, p90 = np.percentile(values, [10, 90])
        return cls(statistics.median(values), float(p10), float(p90), len(values))

    def show(self, unit: str = "", digits: int = 2) -> str:
        unit = f" {unit}" if unit else ""
        return f"{self.median:,.{digits}f}{unit} [{self.low:,.{digits}f}-{self.high:,.{digits}f}]"


def record(figure: str, value: float, unit: str, *, target: str = "", met: bool | None = None,
           low: float | None = None, high: float | None = None, note: str = "", script: str = "") -> None:
    """Append one figure to the results file, if the runner asked for one."""
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    row: dict[str, Any] = {"figure": figure, "value": value, "unit": unit, "target": target, "met": met,
                           "low": low, "high": high, "note": note, "script": script}
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")


def record_stat(figure: str, stat: Stat, unit: str, **kwargs: Any) -> None:
    """:func:`record` a :class:`Stat` (median with its range)."""
    record(figure, stat.median, unit, low=stat.low, high=stat.high, **kwargs)


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """What a figure depends on: cores, CPU, and the versions of the hot-path libraries."""
    import msgspec
    import numpy
    import pandas
    import websockets

    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "msgspec": msgspec.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "os": f"{platform.system()} {platform.release()}",
    }


def machine_line() -> str:
    m = machine()
    return (f"{m['nproc']} cores, {m['cpu']}, Python {m['python']}, websockets {m['websockets']}, "
            f"msgspec {m['msgspec']}, numpy {m['numpy']}, pandas {m['pandas']}")


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """Print ``rows`` of (label, value) under ``title``."""
    width = max((len(label) for label, _ in rows), default=10) + 2
    print(f"\n{title}")
    print("-" * (width + 44))
    for label, value in rows:
        print(f"{label:<{width}}{value}")
