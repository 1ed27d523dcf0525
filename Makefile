# amosync — the usual targets. `make install` once, then `make test` / `make dev`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install fmt lint typecheck test test-unit test-integration test-e2e test-reliability dev up down migrate bench widget check-compose

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python  ## Create .venv and install amosync with its dev tools
	$(BIN)/pip install --quiet -e '.[dev]'

fmt:  ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lint:  ## Lint (ruff) without changing files
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:  ## mypy (strict on shared/)
	$(BIN)/mypy shared cli scheduler

test:  ## The whole default suite: unit, integration, e2e (starts its own services)
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit:
	$(BIN)/pytest -m unit $(PYTEST_ARGS)

test-integration:
	$(BIN)/pytest -m integration $(PYTEST_ARGS)

test-e2e:
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

dev:  ## The whole stack without Docker (needs beanstalkd, nginx, MySQL); Ctrl-C stops it
	$(BIN)/amosync dev

migrate:
	$(BIN)/amosync migrate

up:  ## The whole stack with Docker Compose, sandbox emulators included
	docker compose --profile sandbox up --build -d

down:
	docker compose --profile sandbox down

check-compose:  ## Static validation of docker-compose.yml (no engine needed)
	docker-compose -f docker-compose.yml --profile sandbox config --quiet

bench:  ## Benchmarks (minutes; not part of `make test`), figures go to BENCHMARKS.md
	$(BIN)/python -m bench.run_all
