# Freshloop: every target does its own set-up, idempotently. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
INSTALLED_DEV := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup setup-tests venv demo test test-cluster test-unit test-integration bench bench-peers lint up down status logs clean faults soak month

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

# The package alone is what the demo and the stack commands need; the tests, lint and the
# benchmarks add the dev extras (pytest, hypothesis, mypy, ruff, matplotlib, ...).
$(INSTALLED): pyproject.toml
	@echo "[setup] creating the virtualenv $(VENV) with freshloop"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e .
	@touch $@

$(INSTALLED_DEV): $(INSTALLED)
	@echo "[setup] adding the dev extras to $(VENV)"
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(INSTALLED_DEV) ## Create the virtualenv with the package and its extras

setup: $(INSTALLED) ## Virtualenv, system packages (as root) and the pinned Kafka/Debezium jars
	@$(BIN)/freshloop stack setup

setup-tests: $(INSTALLED_DEV) ## setup, plus what only the tests need: the dev extras, a headless browser (as root)
	@$(BIN)/freshloop stack setup --for-tests

demo: setup ## Bring the stack up, apply schema and connector, write sample data, watch it flow
	@$(BIN)/freshloop demo $(DEMO_ARGS)

test: setup-tests ## Run every test but the long fault scenarios and the 10-min soak; starts the stack for them
	@$(BIN)/pytest -m "not slow" $(PYTEST_ARGS)

test-cluster: setup-tests ## The feature, verify and fault tests again, on a Redis Cluster of three primaries
	@FRESHLOOP_TEST_REDIS_LAYOUT=cluster $(BIN)/pytest -m "not slow" tests/feature_pipelines tests/system $(PYTEST_ARGS)

faults: setup $(INSTALLED_DEV) ## Every fault scenario (restarts services, wipes Redis: give it a stack of its own; REDIS_LAYOUT=cluster on a cluster)
	@FRESHLOOP_TEST_REDIS_LAYOUT=$${REDIS_LAYOUT:-single} $(BIN)/pytest tests/system -m fault -s $(PYTEST_ARGS)

soak: setup $(INSTALLED_DEV) ## 10-min soak (SOAK_SECONDS, SOAK_RATE): lag, RSS, Redis bytes per entity, retained WAL
	@SOAK_SECONDS=$${SOAK_SECONDS:-600} SOAK_RATE=$${SOAK_RATE:-120} \
		SOAK_REPORT=$${SOAK_REPORT:-bench/results/soak.json} \
		$(BIN)/pytest tests/system/test_soak.py -m soak -s $(PYTEST_ARGS)

month: setup $(INSTALLED_DEV) ## 30 simulated days at 2,160x (~25 min): state bounded? bench/results/month.json, docs/state.md
	@$(BIN)/freshloop stack up
	@$(BIN)/freshloop db init >/dev/null
	@MONTH_DAYS=$${MONTH_DAYS:-30} $(BIN)/python -m bench.month

test-unit: $(INSTALLED_DEV) ## Fast tests only (no services)
	@$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup-tests ## Tests against the real stack only
	@$(BIN)/pytest -m integration $(PYTEST_ARGS)

BENCH_VENV := .venv-bench
BENCH_PEERS := $(BENCH_VENV)/.installed

# The peers (Quix Streams, Feast) pin older confluent-kafka, redis and pydantic than the
# service: they get a virtualenv of their own, from the pyproject's `bench-peers` group.
$(BENCH_PEERS): pyproject.toml
	@echo "[setup] creating $(BENCH_VENV) with the benchmark peers (Quix Streams, Feast)"
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/pip install -q --upgrade 'pip>=25.1'
	@$(BENCH_VENV)/bin/pip install -q --group bench-peers
	@touch $@

bench-peers: $(BENCH_PEERS) ## The peers' virtualenv .venv-bench (Quix Streams, Feast), never imported by the service

bench: setup $(INSTALLED_DEV) $(BENCH_PEERS) ## Benchmarks with their peers (Quix, Feast, batch SQL), then docs/performance.md
	@$(BIN)/freshloop stack up
	@$(BIN)/freshloop db init >/dev/null
	@$(BIN)/freshloop connectors apply
	@$(BIN)/python -m bench.replay --events $${BENCH_EVENTS:-1000000} --repeat $${BENCH_REPLAY_REPEAT:-1}
	@for layout in $${BENCH_REDIS_LAYOUTS:-single cluster}; do \
		$(BIN)/python -m bench.replay --events $${BENCH_SCALING_EVENTS:-300000} --processes $${BENCH_PROCESSES:-1,2,4} \
			--redis-layout $$layout || exit 1; done
	@$(BIN)/python -m bench.batch_script --events $${BENCH_SCRIPT_EVENTS:-100000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.replay_peers --events $${BENCH_PEER_EVENTS:-30000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.reads --reads $${BENCH_READS:-2000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.learning --payments $${BENCH_PAYMENTS:-20000} --repeat $${BENCH_REPEAT:-3}
	@$(BIN)/python -m bench.freshness --rates $${BENCH_RATES:-200,1000} --seconds $${BENCH_SECONDS:-20} \
		--repeat $${BENCH_REPEAT:-3} --prediction-rate 200,500 --batch-rate 200 --max-rates $${BENCH_MAX_RATES:-300,400,600,800} \
		--load-rates $${BENCH_LOAD_RATES:-100,200,300,400,600}
	@$(BIN)/python -m bench.report

lint: $(INSTALLED_DEV) ## ruff (checks and format), mypy and the import layers (import-linter)
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/lint-imports --no-cache

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
