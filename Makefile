# Two commands do everything on a fresh machine (see README):
#   make repro   create .venv if needed, then run the DVC pipeline (default CPU tier)
#   make test    create .venv if needed, then run the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin

# One torch thread: on 2-core machines two threads under contention run ~250x slower.
export OMP_NUM_THREADS ?= 1
export PATH := $(BIN):$(PATH)

.PHONY: repro test env clean-env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[dev]'
	touch $@

repro: env
	dvc repro

test: env
	python -m pytest

clean-env:
	rm -rf $(VENV)
