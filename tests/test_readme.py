"""The README's own examples work as written (the stream's pairs feed its cross-rate example)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd

import coinrates_nb as cr
from coinrates_nb.sim.server import Simulator

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_cross_rate_example_works_after_its_stream(simulator: Simulator) -> None:
    """The pairs of the README's first cr.stream(...) are enough for its df.rates.cross("BTC", "EUR", via="USD")."""
    found = re.search(r"cr\.stream\((\[[^\]]*\])", README)
    assert found, "the README has no cr.stream([...]) example"
    pairs = ast.literal_eval(found.group(1))
    assert 'df.rates.cross("BTC", "EUR", via="USD", tolerance="5s")' in README
    with cr.stream(pairs, url=simulator.url) as rates:
        rates.wait(timeout=20, rows=5)
        out = rates.df.rates.cross("BTC", "EUR", via="USD", tolerance="5s")
    assert len(out) > 0 and out.notna().any().any()
    assert isinstance(out.index, pd.DatetimeIndex)
