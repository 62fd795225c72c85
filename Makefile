# perfpulse: `make run` starts the exporter, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test test-external-db lint check-python test-deps bench clean

run: $(VENV)/.run
	$(BIN)/perfpulse serve --port $(PORT)

test: $(VENV)/.dev test-deps lint
	$(BIN)/pytest

# The database tests again, on an external PostgreSQL (the machine's own by default).
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
test-external-db: $(VENV)/.dev test-deps
	PERFPULSE_TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest -m db

lint: $(VENV)/.dev
	$(BIN)/ruff check exporter tests bench
	$(BIN)/ruff format --check exporter tests bench
	$(BIN)/mypy

bench: $(VENV)/.dev test-deps
	$(BIN)/python -m bench

# Debian packages the tests drive for real: Prometheus and promtool, perf, a compose
# parser (docker-compose: no engine needed to validate), and for the comparison
# benchmark prometheus-node-exporter.
test-deps:
	@scripts/ensure-packages.sh promtool:prometheus prometheus:prometheus perf:linux-perf \
		docker-compose:docker-compose prometheus-node-exporter:prometheus-node-exporter

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || \
		{ echo "perfpulse: needs Python 3.11 or newer as '$(PYTHON)'; run: make PYTHON=python3.11 ..." >&2; exit 1; }

$(VENV)/bin/python: | check-python
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@ $(VENV)/.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
