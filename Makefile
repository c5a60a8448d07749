# Two set-up commands, each working on a fresh clone: `make demo` (the whole chain on the embedded
# synthetic data) and `make test` (the test suite). Both create .venv and install into it when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean-venv

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist load

bench: $(STAMP)
	$(BIN)/python scripts/bench_data.py
	$(BIN)/python scripts/bench_train.py

clean-venv:
	rm -rf $(VENV)
