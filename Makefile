# Everything a fresh machine needs, from nothing but Python 3.10+ and make:
# a private uv (in .tools/) installs the locked dependencies into .venv/ and the locked Meltano
# into .meltano-venv/; Meltano installs the tap and the targets of meltano.yml into .meltano/.
PYTHON ?= python3
# Meltano and the plugins it installs run on this Python (the tap's own tests on $(PYTHON)).
MELTANO_VENV_PYTHON ?= $(PYTHON)
TOOLS := .tools
VENV := .venv
UV := $(TOOLS)/bin/uv
MELTANO_VENV := .meltano-venv
FAKESNOW_VENV := .fakesnow-venv
export MELTANO := $(abspath $(MELTANO_VENV))/bin/meltano
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never
export MELTANO_SEND_ANONYMOUS_USAGE_STATS := false
# Bytecode compiled at install, as pip does, for .venv, Meltano and the plugins Meltano installs
# (uv reads this from the environment): otherwise wherever PYTHONDONTWRITEBYTECODE is set, every
# run compiles everything again (`meltano --version`: 2.6 s instead of 0.8 s).
export UV_COMPILE_BYTECODE := 1

.PHONY: demo test lint check clean bench

demo: $(VENV)/.synced .meltano/.installed  ## Simulator -> meltano run tap-scale target-duckdb -> report
	$(VENV)/bin/python -m tap_scale.testing.demo

# One worker per core, each test module on one worker (modules share their fixtures): most tests
# wait on subprocesses and sockets, so the suite takes about half as long on two cores.
test: $(VENV)/.synced .meltano/.installed $(FAKESNOW_VENV)/.installed  ## The tests: the tap over real HTTP, Meltano into real targets
	$(VENV)/bin/pytest -n auto --dist loadfile $(ARGS)

lint: $(VENV)/.synced  ## ruff and strict mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy tap_scale tests benchmarks

check: lint test

# Not a test: timings vary by machine. ARGS=--quick for 10,000 tasks only and one project at
# 200 ms (about three minutes).
bench: $(VENV)/.synced  ## tap-scale vs the naive script vs the raw limit, on the simulator: a table
	$(VENV)/bin/python -m benchmarks.bench $(ARGS)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

# python-backoff reinstalled: a .venv that had both it and `backoff` (the tap's own dependency
# until it used the SDK's) loses their shared module when uv removes `backoff`.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --reinstall-package python-backoff --python $(PYTHON)
	touch $@

$(MELTANO): $(UV) requirements-meltano.txt
	$(UV) venv --quiet --allow-existing --python $(MELTANO_VENV_PYTHON) $(MELTANO_VENV)
	$(UV) pip install --quiet --python $(MELTANO_VENV)/bin/python -r requirements-meltano.txt
	touch $@

.meltano/.installed: $(MELTANO) meltano.yml pyproject.toml
	$(MELTANO) install tap-scale target-duckdb target-postgres target-jsonl target-snowflake
	touch $@

# The emulated Snowflake of tests/test_snowflake.py (fakesnow, on DuckDB), in a virtualenv of its
# own: its duckdb is not target-duckdb's. fakesnow needs Python 3.11+: where there is none, say so
# and go on (the test then skips, saying why; under CI=true it fails).
$(FAKESNOW_VENV)/.installed: $(UV) requirements-fakesnow.txt
	@if $(UV) venv --quiet --allow-existing --python ">=3.11" $(FAKESNOW_VENV); then \
	  $(UV) pip install --quiet --python $(FAKESNOW_VENV)/bin/python -r requirements-fakesnow.txt && touch $@; \
	else echo "no Python 3.11+ for fakesnow: tests/test_snowflake.py will skip"; fi

# output/ stays, with its .gitignore: the loaders of meltano.yml write there, also in a fresh clone.
clean:
	rm -rf $(TOOLS) $(VENV) $(MELTANO_VENV) $(FAKESNOW_VENV) .meltano output/* .demo .pytest_cache .mypy_cache .ruff_cache
