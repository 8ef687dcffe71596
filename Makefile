# The few commands a newcomer needs. `make help` lists them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: help install serve test lint lock prod-local k8s-manifests sync-policies

help:
	@echo "make install        create $(VENV) and install agent-outbox with its dev tools"
	@echo "make serve          run the embedded service (SQLite, in-process workers) on :8000"
	@echo "make test           run the test suite (PostgreSQL and Redis on 127.0.0.1)"
	@echo "make lint           ruff and mypy"
	@echo "make lock           re-resolve requirements.lock after changing pyproject.toml's ranges"
	@echo "make prod-local     the production topology without containers: api, 2 workers, beat"
	@echo "make k8s-manifests  print the Kubernetes manifests (kustomize, policies included)"

install: $(BIN)/outbox

$(BIN)/outbox: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

serve: install
	$(BIN)/outbox serve

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# The versions CI and `make install` use, resolved within pyproject.toml's ranges.
lock:
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

prod-local: install
	scripts/prod-local.sh

sync-policies:
	@$(PYTHON) deploy/k8s/sync_policies.py

k8s-manifests: sync-policies
	@kubectl kustomize --load-restrictor=LoadRestrictionsNone deploy/k8s
