# grok_flax — the two commands of the README:
#   make demo   set up .venv, run the demo model (generation + routing figure, runs/demo/) and
#               execute the walkthrough notebooks (executed copies in runs/notebooks/)
#   make test   set up .venv and run ruff + the whole test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export JAX_PLATFORMS ?= cpu

.PHONY: setup demo test lint notebooks bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m grok_flax demo

test: setup lint
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check grok_flax tests benchmarks

notebooks: setup
	$(BIN)/python notebooks/run_all.py

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
