# trackflow developer commands. `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
SDK_DIR := tests/e2e/sdk
SDK_STAMP := $(SDK_DIR)/node_modules/.package-lock.json

.DEFAULT_GOAL := help

.PHONY: help install tools jemalloc demo test test-slow lint format bench soak clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install trackflow with its dev tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

tools: $(SDK_STAMP) ## Install from Debian what tests need if missing (prometheus, chromium, chromium-driver, postgresql, libjemalloc2; needs root), and the npm SDKs of the collector tests
	@missing=""; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	ls /usr/lib/*-linux-gnu/libjemalloc.so.2 >/dev/null 2>&1 || missing="$$missing libjemalloc2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the tests that need them will be skipped"; \
	  else echo "warning:$$missing missing and not root; the tests that need them will be skipped"; fi; \
	fi

jemalloc: ## Install Debian's libjemalloc2 if missing (the image's malloc; the soak's workers run on it)
	@ls /usr/lib/*-linux-gnu/libjemalloc.so.2 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 >/dev/null; \
	  else echo "libjemalloc2 missing and not root: apt-get install libjemalloc2" >&2; exit 1; fi; }

# The npm SDKs the collector's end-to-end tests send with (tests/e2e/sdk/, git-ignored
# node_modules), from the lock file; without npm those tests are skipped.
$(SDK_STAMP): $(SDK_DIR)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(SDK_DIR) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "warning: npm missing; the collector's npm SDK tests will be skipped"; fi

demo: install ## Broker + worker + simulated traffic, then a summary and a queryable lake
	$(VENV)/bin/trackflow demo

TEST_WORKERS ?= 3

test: install tools ## Run the whole test suite (slow soak tests excluded), TEST_WORKERS processes
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-slow: install tools ## Run only the slow soak/stress tests
	$(PY) -m pytest -m slow

lint: install ## ruff (lint + format check), mypy, and the tracking-plan check against HEAD~1
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/trackflow schema check --base $${SCHEMA_BASE:-HEAD~1}

format: install ## Apply ruff fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install ## Throughput, collector and anomaly-detection benchmarks; JSON results in bench/results/
	mkdir -p bench/results
	$(PY) bench/run.py --out bench/results/latest.json
	$(PY) bench/produce_rate.py --out bench/results/latest-produce.json
	$(PY) bench/collector.py --out bench/results/$$(date -u +%F)-collector.json
	$(PY) bench/anomaly/nab.py --seed 11 --out bench/results/latest-nab.json
	$(PY) -m bench.analytics --out bench/results/$$(date -u +%F)-analytics.json
	$(PY) -m bench.lake_maintain --out bench/results/$$(date -u +%F)-lake-maintain.json
	$(PY) bench/privacy_delete.py --out bench/results/$$(date -u +%F)-privacy.json

soak: install jemalloc ## One hour: 2 workers on jemalloc, steady traffic, payment outage, SIGKILL every 10 min (not in test)
	mkdir -p bench/results
	$(PY) -m bench.soak --out bench/results/$$(date +%F)-soak.json

clean: ## Remove the virtualenv, caches and the local lake
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache data $(SDK_DIR)/node_modules
