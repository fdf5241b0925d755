# Two commands for a fresh machine: `make demo` (the end-to-end pipeline) and `make test` (the test suite).
# Both create the virtual environment .venv first, with everything the project needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/hrm demo

test: setup
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) mlflow.db mlruns runs
