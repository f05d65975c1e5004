# eoflow: `make demo` sets everything up and runs the pipeline on the shipped Slovenia sample;
# `make test` sets everything up and runs the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.eoflow-installed
OUT ?= runs/demo

.PHONY: setup sysdeps demo test lint format bench clean

setup: sysdeps $(STAMP)

# System libraries (installed when missing, as root): SpatiaLite for spatial SQL over GeoPackages;
# jemalloc for `cluster.allocator: jemalloc` (optional: local workers preload it).
sysdeps:
	@missing=""; \
	ls /usr/lib/*/mod_spatialite.so >/dev/null 2>&1 || missing="$$missing libsqlite3-mod-spatialite"; \
	ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 || missing="$$missing libjemalloc2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "warning: could not install$$missing (spatial SQL / jemalloc workers unavailable)"; \
	  else echo "note: install$$missing for spatial SQL and faster local workers (apt-get install$$missing)"; fi; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[vae,sql,cluster,dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/eoflow demo --out $(OUT)

test: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts

format: setup
	$(BIN)/ruff format src tests benchmarks scripts
	$(BIN)/ruff check --fix src tests benchmarks scripts

bench: setup
	$(BIN)/python -m benchmarks.vs_eolearn all

clean:
	rm -rf $(VENV) runs .pytest_cache
