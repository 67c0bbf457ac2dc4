# The README's two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FRONT_STAMP := frontend/node_modules/.installed
DIST := frontend/dist/index.html
FRONT_SRC := $(shell find frontend/src frontend/index.html frontend/vite.config.ts -type f 2>/dev/null)

.PHONY: run test lint install frontend build bench chromium openapi clean

run: install frontend
	$(BIN)/loupe run

test: lint chromium
	$(BIN)/python -m pytest -q

# ruff (lint, format), import-linter's contracts, mypy (strict on core/ and services/); the frontend's
# eslint and tsc --strict
lint: install frontend
	$(BIN)/ruff check backend tests bench
	$(BIN)/ruff format --check backend tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy
	cd frontend && npm run --silent typecheck && npm run --silent lint

install: $(STAMP)

# torch first and pinned: it takes the CPU build on this machine's disk (an unpinned torch pulls a
# multi-GB CUDA build). kronfluence without its dependencies: it declares torchvision, which does
# not import beside this torch and breaks transformers; its real needs are in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,cluster]'
	$(BIN)/pip install -q --no-deps kronfluence==1.0.1
	@if $(BIN)/pip show -q torchvision 2>/dev/null; then $(BIN)/pip uninstall -y -q torchvision; fi
	touch $(STAMP)

frontend: $(DIST)

$(FRONT_STAMP): frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error
	touch $(FRONT_STAMP)

$(DIST): $(FRONT_STAMP) $(FRONT_SRC)
	cd frontend && npm run build

# Browser tests drive Debian's Chromium; never a browser download.
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

build: install
	$(BIN)/loupe build

bench: install
	$(BIN)/python bench/run.py

openapi: install
	$(BIN)/loupe openapi --out frontend/openapi.json
	cd frontend && npm run gen:api

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist
