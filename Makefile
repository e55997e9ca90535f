# Everything a fresh machine needs, from nothing but Python 3.10+ and make:
# a private uv (in .tools/) installs the locked dependencies into .venv/.
PYTHON ?= python3
TOOLS := .tools
VENV := .venv
UV := $(TOOLS)/bin/uv
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test lint check clean

demo: $(VENV)/.synced  ## Simulator -> tap-scale -> a local file; prints records per stream and state
	$(VENV)/bin/python -m tap_scale.testing.demo

test: $(VENV)/.synced  ## The test suite, over real HTTP against the simulator
	$(VENV)/bin/pytest

lint: $(VENV)/.synced  ## ruff and strict mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy tap_scale tests

check: lint test

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --python $(PYTHON)
	touch $@

clean:
	rm -rf $(TOOLS) $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
