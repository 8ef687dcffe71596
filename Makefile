# The few commands a newcomer needs. `make help` lists them.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: help install hooks serve test test-fast lint lock prod-local k8s-manifests sync-policies

help:
	@echo "make install        create $(VENV) and install agent-outbox with its dev tools"
	@echo "make hooks          run ruff, mypy and import-linter before every commit (pre-commit)"
	@echo "make serve          run the embedded service (SQLite, in-process workers) on :8000"
	@echo "make test           run the test suite (PostgreSQL and Redis on 127.0.0.1)"
	@echo "make test-fast      the suite without the slow tests that start real server processes"
	@echo "make lint           what CI's lint step runs: ruff, ruff format --check, mypy, lint-imports"
	@echo "make lock           re-resolve requirements.lock after changing pyproject.toml's ranges"
	@echo "make prod-local     the production topology without containers: api, 2 workers, beat"
	@echo "make k8s-manifests  print the Kubernetes manifests (kustomize, policies included)"

install: $(BIN)/outbox

$(BIN)/outbox: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $@

# pre-commit itself is not a project dependency; the hooks run the venv's own tools.
hooks: install
	$(BIN)/python -m pip install --quiet pre-commit
	$(BIN)/pre-commit install

serve: install
	$(BIN)/outbox serve

test: install
	$(BIN)/python -m pytest

# The tests marked `slow` start real server processes (uvicorn, Celery workers, the SMTP sink).
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

# Exactly the lint step of .ci/run.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

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
