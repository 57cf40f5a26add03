# `make train` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/actexp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	touch $@

.PHONY: install train test bench
install: $(BIN)/actexp

train: $(BIN)/actexp
	$(BIN)/actexp train configs/relu_xavier.yaml

test: $(BIN)/actexp
	$(BIN)/python -m pytest -q

bench: $(BIN)/actexp
	$(BIN)/python bench/speed.py
