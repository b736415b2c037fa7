# The two commands a new user needs: `make demo` and `make test`. Both work on a fresh machine
# with nothing but Python 3.11+: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: demo test bench bench-quick lint typecheck browser-deps clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.base
	$(PY) -m coinrates_nb demo

browser-deps:
	bash scripts/install-browser-deps.sh

test: $(VENV)/.test browser-deps
	$(PY) -m pytest

bench: $(VENV)/.test
	$(PY) benchmarks/run_all.py

bench-quick: $(VENV)/.test
	$(PY) benchmarks/run_all.py --quick

lint: $(VENV)/.test
	$(PY) -m ruff check coinrates_nb tests benchmarks
	$(PY) -m mypy

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
