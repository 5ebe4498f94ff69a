# Freshloop: every target does its own set-up, idempotently. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup venv demo test test-unit test-integration bench lint up down status logs clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml
	@echo "[setup] creating the virtualenv $(VENV) with freshloop and its dev extras"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(INSTALLED) ## Create the virtualenv with the package and its extras

setup: $(INSTALLED) ## Virtualenv, system packages (as root) and the pinned Kafka/Debezium jars
	@$(BIN)/freshloop stack setup

demo: setup ## Bring the stack up, apply schema and connector, write sample data, watch it flow
	@$(BIN)/freshloop demo $(DEMO_ARGS)

test: setup ## Run every test; starts the stack for them and stops what it started
	@$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(INSTALLED) ## Fast tests only (no services)
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup ## Tests against the real stack only
	@$(BIN)/pytest -m integration $(PYTEST_ARGS)

bench: setup ## Benchmarks: replay throughput vs raw consume+decode, commit->feature lag by rate
	@$(BIN)/freshloop stack up
	@$(BIN)/freshloop db init >/dev/null
	@$(BIN)/freshloop connectors apply
	@$(BIN)/python -m bench.replay --events $${BENCH_EVENTS:-200000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.learning --payments $${BENCH_PAYMENTS:-50000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.freshness --rates $${BENCH_RATES:-200,500,1000} --seconds $${BENCH_SECONDS:-30}

lint: $(INSTALLED) ## ruff and mypy
	@$(BIN)/ruff check .
	@$(BIN)/mypy

up: setup ## Start the local stack (no-op when it is up)
	@$(BIN)/freshloop stack up

down: $(INSTALLED) ## Stop the local stack
	@$(BIN)/freshloop stack down

status: $(INSTALLED) ## Show each service, its port, pid and health
	@$(BIN)/freshloop stack status

logs: $(INSTALLED) ## Tail every service's log
	@$(BIN)/freshloop stack logs

clean: ## Stop the stack and remove the state folder (data, logs, jars) and the virtualenv
	@if [ -x $(BIN)/freshloop ]; then $(BIN)/freshloop stack down; fi
	rm -rf .freshloop $(VENV)
