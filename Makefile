# perfpulse: `make run` starts the exporter, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000

.PHONY: run test test-external-db lint check-python test-deps bench clean dashboard frontend-test check-npm dist

run: $(VENV)/.run dashboard
	$(BIN)/perfpulse serve --port $(PORT)

test: $(VENV)/.dev test-deps lint frontend-test
	$(BIN)/pytest

# --- the Vue dashboard (frontend/) ---------------------------------------------------
FRONTEND_SRC := $(shell find frontend/src exporter/spec -type f -not -path '*/__tests__/*' 2>/dev/null) \
	frontend/index.html frontend/vite.config.js

frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json | check-npm
	cd frontend && npm ci --no-audit --no-fund
	@touch $@

# Vite builds the dashboard into the package (exporter/dashboard): the wheel carries it.
exporter/dashboard/index.html: frontend/node_modules/.installed $(FRONTEND_SRC)
	cd frontend && npm run build

# `make run` builds the dashboard when it can; without npm the API and /metrics still run.
dashboard:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory exporter/dashboard/index.html; \
	else echo "perfpulse: npm not found, so the dashboard is not built (install Node.js 20 and npm); the API and /metrics run without it"; fi

frontend-test: frontend/node_modules/.installed
	cd frontend && npm test
	@$(MAKE) --no-print-directory exporter/dashboard/index.html
	cd frontend && npm run size

# A wheel and an sdist in dist/, the built dashboard inside: the whole product, no Node.js
# needed where it is installed.
dist: $(VENV)/.dev exporter/dashboard/index.html
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	@ls dist

check-npm:
	@command -v npm >/dev/null 2>&1 || { echo "perfpulse: npm is needed to build and test the dashboard; install Node.js 20 and npm (Debian: apt-get install nodejs npm)" >&2; exit 1; }

# The database tests again, on an external PostgreSQL (the machine's own by default):
# what depends on the server's version and setup. The attack and fault suites (abuse,
# hardening, faults) are about perfpulse's handling of clients and failures; they ran
# against the embedded server in `make test` and are not repeated here.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
test-external-db: $(VENV)/.dev test-deps
	PERFPULSE_TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest -m "db and not browser" \
		-k "not test_abuse and not test_hardening and not test_faults"

lint: $(VENV)/.dev
	$(BIN)/ruff check exporter tests bench
	$(BIN)/ruff format --check exporter tests bench
	$(BIN)/mypy

bench: $(VENV)/.dev test-deps
	$(BIN)/python -m bench

# Debian packages the tests drive for real: Prometheus and promtool, Alertmanager,
# VictoriaMetrics, perf,
# a compose parser (docker-compose: no engine needed to validate), systemd-analyze for the
# unit, PgBouncer, and for the comparison benchmark prometheus-node-exporter.
test-deps:
	@scripts/ensure-packages.sh promtool:prometheus prometheus:prometheus perf:linux-perf \
		docker-compose:docker-compose chromium:chromium systemd-analyze:systemd \
		prometheus-node-exporter:prometheus-node-exporter pgbouncer:pgbouncer \
		victoria-metrics:victoria-metrics prometheus-alertmanager:prometheus-alertmanager

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info frontend/node_modules frontend/dist exporter/dashboard dist build artifacts
