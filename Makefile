# flashgate: `make up` runs the local stack, `make test` runs every test.
# Both install what they need: a venv with pinned packages, Debian's redis-server,
# and Apache Kafka's jars from Maven Central.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# FLASHGATE_STACK_REDIS=cluster|sentinel and FLASHGATE_STACK_REDIS_TLS=1 pick the local
# Redis for `make up`: flags of `flashgate up`, not settings, so no command sees them.
unexport FLASHGATE_STACK_REDIS FLASHGATE_STACK_REDIS_TLS

.PHONY: up test test-tools chaos lint typecheck prepare bench bench-quick clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Every dependency is the exact bytes the lock's hashes name; the project itself
	# is then installed editable without resolving anything again.
	$(BIN)/python -m pip install -q --require-hashes -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

prepare: $(STAMP)
	$(BIN)/flashgate prepare

up: prepare
	$(BIN)/flashgate up \
	  --redis $(or $(FLASHGATE_STACK_REDIS),standalone) \
	  $(if $(filter 1 yes true,$(FLASHGATE_STACK_REDIS_TLS)),--redis-tls)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# Test tools: Chromium for the ops page test; Debian's prometheus (promtool too) and
# haproxy for the deploy tests that run the shipped rules and proxy configuration
# (installed without starting their services); kustomize for the deploy tests when
# neither kustomize nor kubectl (which embeds it) is on the machine.
test-tools: $(STAMP)
	$(BIN)/flashgate prepare --tools chromium prometheus promtool haproxy
	@command -v kustomize >/dev/null || command -v kubectl >/dev/null || test -x .cache/bin/kustomize || \
	  GOBIN=$(CURDIR)/.cache/bin go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0

test: prepare test-tools lint typecheck
	$(BIN)/pytest

chaos: prepare
	mkdir -p loadtest/results && rm -f loadtest/results/chaos.jsonl
	CHAOS_RESULTS=loadtest/results/chaos.jsonl $(BIN)/pytest -m chaos tests/test_chaos.py tests/test_chaos_redis_failover.py

bench: $(STAMP)
	$(BIN)/flashgate prepare --tools wrk
	$(BIN)/python -m loadtest.bench

bench-quick: $(STAMP)
	$(BIN)/flashgate prepare --tools wrk
	$(BIN)/python -m loadtest.bench --quick --out .flashgate/bench-quick --report .flashgate/bench-quick/RESULTS.md

clean:
	rm -rf .flashgate .cache .pytest_cache .mypy_cache .ruff_cache
