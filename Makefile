# The two commands a new user needs: `make demo` and `make test`. Both work on a fresh machine
# with nothing but Python 3.11+: they create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
VENV_MIN := .venv-min
PY_MIN   := $(VENV_MIN)/bin/python

.PHONY: demo test test-min bench bench-quick lint typecheck browser-deps dashboard clean

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

# The declared lower bounds, proven: a separate venv with the LOWEST allowed version of every
# runtime dependency (each `>=X` in pyproject's [project].dependencies and its `hub` extra pinned
# to `==X` by scripts/min_requirements.py, so a new dependency is covered without editing this
# file), the test tools at their normal versions (resolved against those pins), and the package
# itself with --no-deps; then the suite without the browser test. Rebuilt from scratch when
# pyproject.toml changes, so nothing newer lingers from an earlier run.
$(VENV_MIN)/.min: pyproject.toml scripts/min_requirements.py
	rm -rf $(VENV_MIN)
	$(PYTHON) -m venv $(VENV_MIN)
	echo '*' > $(VENV_MIN)/.gitignore
	$(PY_MIN) -m pip install --quiet --upgrade pip
	$(PYTHON) scripts/min_requirements.py --with hub > $(VENV_MIN)/min-requirements.txt
	$(PYTHON) scripts/min_requirements.py --extra test > $(VENV_MIN)/test-requirements.txt
	$(PY_MIN) -m pip install --quiet -c $(VENV_MIN)/min-requirements.txt \
		-r $(VENV_MIN)/min-requirements.txt -r $(VENV_MIN)/test-requirements.txt
	$(PY_MIN) -m pip install --quiet --no-deps -e .
	touch $@

test-min: $(VENV_MIN)/.min
	$(PY_MIN) scripts/min_requirements.py --with hub --check
	$(PY_MIN) -m pytest -m "not browser"

# The desk dashboard as a web app: a hub (one upstream connection: CoinAPI with COINAPI_KEY, else the
# simulator) with an embedded nats-server, and Voila serving notebooks/05_desk_dashboard.ipynb on
# 127.0.0.1:$(DASHBOARD_PORT); every viewer's kernel reads from the hub. `make dashboard NATS=nats://host:4222`
# serves it for a hub already running there instead. Ctrl-C stops everything.
DASHBOARD_PAIRS ?= BTC/USD,ETH/USD,BTC/EUR
DASHBOARD_PORT  ?= 8866
dashboard: $(VENV)/.test
	$(PY) -m coinrates_nb hub --pairs $(DASHBOARD_PAIRS) --dashboard-port $(DASHBOARD_PORT) \
		--notebook notebooks/05_desk_dashboard.ipynb $(if $(NATS),--dashboard-only --nats $(NATS),--dashboard)

bench: $(VENV)/.test
	$(PY) benchmarks/run_all.py

bench-quick: $(VENV)/.test
	$(PY) benchmarks/run_all.py --quick

lint: $(VENV)/.test
	$(PY) -m ruff check coinrates_nb tests benchmarks scripts
	$(PY) -m mypy

clean:
	rm -rf $(VENV) $(VENV_MIN) out .pytest_cache .mypy_cache
