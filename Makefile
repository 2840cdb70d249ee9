# grok_flax — the two commands of the README:
#   make demo       set up .venv, run the demo model (generation + routing figure, runs/demo/)
#                   and execute the walkthrough notebooks (executed copies in runs/notebooks/)
#   make test       set up .venv and run the linters + the whole test suite (what CI runs)
# and, while working:
#   make test-fast  all but the slow tiers (notebooks, browser, multihost, slow): ~2.5 min cold
#   make lint       ruff check + ruff format --check;  make format  applies ruff format
#   make lab        set up .venv and open the walkthrough notebooks in JupyterLab
#   make book       build the course website into runs/book/ (strict: a warning fails it)
# a Python >= 3.12 (python3.13 / python3.12 / python3 on PATH, else a pyenv-installed one);
# override with `make PYTHON=/path/to/python3.12 ...`
PYTHON ?= $(shell sh tools/find_python.sh 2>/dev/null)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export JAX_PLATFORMS ?= cpu

.PHONY: setup demo test test-fast lint format notebooks lab book bench clean

setup: $(STAMP) $(LAB_OVERRIDES)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || sh tools/find_python.sh >/dev/null
	@if [ -x $(BIN)/python ] && ! $(BIN)/python -c 'import sys; sys.exit(sys.version_info < (3, 12))'; \
	then echo "$(VENV) has Python < 3.12: rebuilding it"; rm -rf $(VENV); fi
	@echo "setting up $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

# JupyterLab's defaults for this venv: never ask about the Jupyter news feed (tests/test_browser.py
# gives its own server the same overrides)
$(LAB_OVERRIDES): $(STAMP)
	mkdir -p $(dir $@)
	printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

demo: setup
	$(BIN)/python -m grok_flax demo

# the suite in 2 worker processes (pytest-xdist), a test file per worker at a time: most tests
# are single-threaded XLA compiles, so 2 cores run two of them at once. -rs says why a test
# skipped (e.g. the released tokenizer in ../shared/ is absent).
PYTEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile -rs
test: setup lint
	$(PYTEST) --durations=15

# the quick loop: the tiers marked in pyproject.toml (notebooks, browser, multihost, book, slow) left
# out, and JAX's persistent compilation cache in .cache/jax: most of a run is XLA compiling
# small programs, which a second run reads back (make test, what CI runs, compiles afresh)
test-fast: setup lint
	JAX_COMPILATION_CACHE_DIR=$(CURDIR)/.cache/jax JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
	$(PYTEST) -m "not (slow or notebooks or browser or multihost or book)" --durations=5

LINTED := grok_flax tests benchmarks notebooks/run_all.py docs/conf.py
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: setup
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

notebooks: setup
	$(BIN)/python notebooks/run_all.py

# JupyterLab refuses to start as root unless told (containers often run as root)
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
# the shipped notebooks open trusted: signed for this user (the signatures live in a per-user
# database, ~/.local/share/jupyter/nbsignatures.db), again each time as their content changes
lab: setup $(LAB_OVERRIDES)
	$(BIN)/jupyter trust notebooks/*.ipynb
	$(BIN)/jupyter lab notebooks/01_tour.ipynb $(LAB_FLAGS)

# the course website, from what is committed (notebooks as executed, never re-run), strict:
# any warning fails the build; docs/conf.py says how and why
BOOK ?= runs/book
book: setup
	$(BIN)/sphinx-build -W --keep-going -n -q -b html -c docs -d $(BOOK)/.doctrees . $(BOOK)
	@echo "built $(BOOK)/index.html: serve it with  $(BIN)/python -m http.server -d $(BOOK) 8000"

bench: setup
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .cache
