# tdg — every CI step is a target here; `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

TOOLS   := .tools
UV_VER  := 0.13.9
UV      := $(TOOLS)/uv/bin/uv
PY      := .venv/bin/python
OPA     := $(TOOLS)/bin/opa
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := .venv

.PHONY: help setup venv kafka opa postgres kustomize proto proto-check lint fmt policy-test unit integration test bench bench-quick demo up down status k8s-validate policy-bundle clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(UV):
	python3 -m venv $(TOOLS)/uv
	$(TOOLS)/uv/bin/pip install --quiet "uv==$(UV_VER)"

venv: $(UV) ## Python 3.11 environment in .venv from uv.lock
	$(UV) sync --frozen --python python3.11 --quiet

kafka: ## Apache Kafka (KRaft) from Maven Central into .tools/
	bash scripts/provision_kafka.sh

opa: ## OPA from its Go module into .tools/bin
	bash scripts/provision_opa.sh

kustomize: ## kustomize from its Go module into .tools/bin
	bash scripts/provision_kustomize.sh

postgres: ## PostgreSQL server binaries (Debian package) for the store tests
	bash scripts/provision_postgres.sh

setup: venv kafka opa postgres kustomize ## everything the stack and the tests need (idempotent)

proto: venv ## regenerate libs/proto from proto/
	$(PY) scripts/gen_protos.py

proto-check: venv ## fail when the committed stubs are stale
	$(PY) scripts/gen_protos.py --check

fmt: venv ## format Python and Rego
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .
	$(OPA) fmt -w policies/

lint: venv opa proto-check ## ruff, mypy, opa fmt/check
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	$(OPA) fmt --fail --diff policies/ >/dev/null
	$(OPA) check --strict policies/

policy-test: opa ## Rego unit tests
	$(OPA) test policies/ -v

unit: venv ## unit tests (pure logic): no Kafka, OPA or PostgreSQL needed
	$(PY) -m pytest -q -m "not integration"

integration: setup ## user stories on the real stack (Kafka, OPA, PostgreSQL)
	$(PY) -m pytest -q -m integration

test: setup lint policy-test ## every test: lint, types, policies, unit, integration, bench smoke
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory bench-quick

bench: setup ## benchmarks (full size), JSON figures on the last line of each
	$(PY) bench/catalog_bench.py
	$(PY) bench/policy_bench.py
	$(PY) bench/ingest_bench.py
	$(PY) bench/query_bench.py

bench-quick: setup ## every benchmark in --quick mode (smoke test)
	$(PY) bench/catalog_bench.py --quick
	$(PY) bench/policy_bench.py --quick
	$(PY) bench/ingest_bench.py --quick
	$(PY) bench/query_bench.py --quick

up: setup ## start the local stack in the background (Kafka, OPA, services)
	.venv/bin/tdg dev up

down: ## stop the local stack
	.venv/bin/tdg dev down

status: ## state of the local stack
	.venv/bin/tdg dev status

demo: setup ## set up, start the local stack and run the demo (catalog to governed queries)
	.venv/bin/tdg dev up
	bash scripts/demo.sh

k8s-validate: venv kustomize ## validate deploy/k8s offline
	$(PY) scripts/validate_k8s.py

policy-bundle: opa ## the policies as an OPA bundle for the Kubernetes sidecars (var/policies.tar.gz)
	OPA=$(OPA) bash deploy/k8s/build-policy-bundle.sh var/policies.tar.gz

clean: ## remove local state (var/), keep the tool cache (.tools/)
	-.venv/bin/tdg dev down
	rm -rf var/
