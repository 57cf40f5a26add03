# `make train` and `make test` create .venv on first use: `make train` with what training needs
# (and matplotlib, for each run's curves.png), `make test` adds the dev extras (pytest, Ray, TensorBoard, Optuna).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/actexp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[plot]'
	touch $@

$(VENV)/dev-installed: $(BIN)/actexp
	$(BIN)/pip install -e '.[dev]'
	touch $@

.PHONY: install train test test-fast bench
install: $(BIN)/actexp

train: $(BIN)/actexp
	$(BIN)/actexp train configs/relu_xavier.yaml

test: $(VENV)/dev-installed
	$(BIN)/python -m pytest -q

# While iterating: everything but the tests that start processes, signal them or run Ray.
test-fast: $(VENV)/dev-installed
	$(BIN)/python -m pytest -q -n auto -m "not slow"

bench: $(BIN)/actexp
	$(BIN)/python bench/speed.py
