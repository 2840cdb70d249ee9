# grok_flax — the two commands of the README:
#   make demo   set up .venv, run the demo model (generation + routing figure, runs/demo/) and
#               execute the walkthrough notebooks (executed copies in runs/notebooks/)
#   make test   set up .venv and run ruff + the whole test suite (what CI runs)
#   make lab    set up .venv and open the walkthrough notebooks in JupyterLab
# a Python >= 3.12 (python3.13 / python3.12 / python3 on PATH, else a pyenv-installed one);
# override with `make PYTHON=/path/to/python3.12 ...`
PYTHON ?= $(shell sh tools/find_python.sh 2>/dev/null)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export JAX_PLATFORMS ?= cpu

.PHONY: setup demo test lint notebooks lab bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || sh tools/find_python.sh >/dev/null
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; \
	then echo "$(VENV) has Python < 3.12: rebuilding it"; rm -rf $(VENV); fi
	@echo "setting up $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m grok_flax demo

# the suite in 2 worker processes (pytest-xdist), a test file per worker at a time: most tests
# are single-threaded XLA compiles, so 2 cores run two of them at once
PYTEST_WORKERS ?= 2
test: setup lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check grok_flax tests benchmarks

notebooks: setup
	$(BIN)/python notebooks/run_all.py

# JupyterLab refuses to start as root unless told (containers often run as root)
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: setup
	$(BIN)/jupyter lab notebooks/01_tour.ipynb $(LAB_FLAGS)

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
