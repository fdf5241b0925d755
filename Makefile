# Two commands for a fresh machine: `make demo` (the end-to-end pipeline) and `make test` (the test suite).
# Both create the virtual environment .venv first, with everything the project needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup bytecode clean postgres lab
setup: $(VENV)/.installed

# pip's own output (setuptools' editable-install banner among it) goes to .venv/setup.log, shown only when a step fails.
# --no-compile: Python compiles only the modules a job imports, when it first imports them (the set-up took 88 s
# with every module compiled up front, 46 s without, on a 2-core Xeon). Except where PYTHONDONTWRITEBYTECODE is set
# (a common container setting): Python then never writes bytecode, and every process (each Ray worker) would compile
# torch, Ray and MLflow again (tests/pipeline/train/test_train.py took 317 s instead of 122 s so); there compileall
# compiles the venv once, on every core (30 s). A few files of the packages are not Python 3 (test data): its
# complaint about them is no failure.
$(VENV)/.installed: pyproject.toml
	@echo "setting up $(VENV) (torch 2.13 CPU, Ray, MLflow, ...; pip's log: $(VENV)/setup.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --quiet --upgrade pip && \
	   $(BIN)/pip install --quiet --no-compile "torch==2.13.0" && \
	   $(BIN)/pip install --quiet --no-compile -e ".[test]"; } > $(VENV)/setup.log 2>&1 || \
	 { cat $(VENV)/setup.log; echo "setting up $(VENV) failed (the log above: $(VENV)/setup.log)"; exit 1; }
	@[ -z "$$PYTHONDONTWRITEBYTECODE" ] || $(BIN)/python -m compileall -q -j 0 $(VENV)/lib >> $(VENV)/setup.log 2>&1 \
	 || true
	@touch $@

# The project's own modules, likewise, before a run (under a second; only what changed since).
bytecode: setup
	@[ -z "$$PYTHONDONTWRITEBYTECODE" ] || $(BIN)/python -m compileall -q -j 0 hrm pipeline tests bench > /dev/null

demo: setup bytecode
	$(BIN)/hrm demo

test: setup bytecode postgres
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# The notebooks in JupyterLab: installs it into the venv the first time (the project's `notebooks` extra), then opens
# notebooks/ (run `make demo` first: notebooks 02 and 03 read its model and runs). As root (a container), JupyterLab
# wants --allow-root.
lab: setup $(VENV)/.lab
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/

$(VENV)/.lab: pyproject.toml
	@echo "installing JupyterLab into $(VENV) (pip's log: $(VENV)/setup.log)"
	@$(BIN)/pip install --quiet -e ".[notebooks]" >> $(VENV)/setup.log 2>&1 || \
	 { tail -30 $(VENV)/setup.log; echo "installing JupyterLab failed (the log: $(VENV)/setup.log)"; exit 1; }
	@touch $@

# PostgreSQL (Debian's package) for tests/cluster/test_mlflow_postgres.py: installed when missing if we are root and
# have apt-get, quietly; never fails the run (without it that test is skipped, saying why).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || command -v initdb > /dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	   postgresql) > /dev/null 2>&1 && echo "installed PostgreSQL for tests/cluster/test_mlflow_postgres.py"; } || \
	echo "PostgreSQL not installed: tests/cluster/test_mlflow_postgres.py will be skipped"

clean:
	rm -rf $(VENV) mlflow.db mlruns runs
