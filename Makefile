# amosync — the usual targets. `make test` / `make dev` install into .venv first when needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install fmt lint typecheck test test-unit test-integration test-e2e test-reliability dev up up-prod down migrate bench widget check-compose demo modules

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed once, again when pyproject.toml changes, so `make test` works on a fresh clone.
STAMP := $(VENV)/.installed
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/python  ## Create .venv and install amosync with its dev tools
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

fmt:  ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint:  ## Lint (ruff) without changing files
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:  ## mypy: strict on shared/, default rules elsewhere; each function on its own
	$(BIN)/mypy shared cli scheduler sandbox devstack testing
	@# Every function is a module named `main` (functions-framework's layout): one run each.
	@rc=0; for f in functions/*/main.py; do echo "mypy $$f"; $(BIN)/mypy $$f || rc=1; done; exit $$rc

test: $(STAMP)  ## The whole default suite: unit, integration, e2e, reliability, hostile
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration: $(STAMP)
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e: $(STAMP)
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test-reliability: $(STAMP)
	$(BIN)/pytest -m reliability $(PYTEST_ARGS)

dev: $(STAMP)  ## The whole stack without Docker (needs beanstalkd, nginx, MySQL); Ctrl-C stops it
	$(BIN)/amosync dev

demo:  ## Against a running `make dev` (SANDBOX_MODE=true): install, connect, sync a few contacts
	$(BIN)/amosync demo

migrate:
	$(BIN)/amosync migrate

modules:  ## Regenerate docs/modules.md (every module, one line each; a test keeps it current)
	$(BIN)/python -m devstack.module_map

SANDBOX_COMPOSE := docker compose -f docker-compose.yml -f docker-compose.sandbox.yml --profile sandbox

up:  ## The whole stack with Docker Compose against the amoCRM and Unisender emulators
	$(SANDBOX_COMPOSE) up --build -d

up-prod:  ## The whole stack with Docker Compose against the real amoCRM and Unisender
	docker compose up --build -d

down:  ## Stop either (`make up` or `make up-prod`)
	$(SANDBOX_COMPOSE) down

check-compose:  ## Static validation of both compose setups (no engine needed)
	docker-compose -f docker-compose.yml config --quiet
	docker-compose -f docker-compose.yml -f docker-compose.sandbox.yml --profile sandbox config --quiet

bench:  ## Benchmarks (minutes; not part of `make test`; needs wrk), figures go to BENCHMARKS.md
	@# The ingest benchmark drives the gateway with wrk: fail now, not minutes into the run.
	@command -v wrk >/dev/null 2>&1 || { echo "make bench needs wrk, the HTTP load generator: sudo apt-get install wrk" >&2; exit 1; }
	$(BIN)/python -m bench.run_all
