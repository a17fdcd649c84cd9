# One task runner for the README, CI and developers.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Every install (this Makefile, CI, both Dockerfiles) takes its versions from one constraints
# file; torch's pin matches whichever build the host has (2.13.0+cpu here, 2.13.0+cu130 on PyPI).
LOCK   := constraints.txt
TORCH  ?= $(shell grep '^torch==' $(LOCK))
PORT   ?= 8000

.PHONY: run test test-fast soak lint typecheck format lock openapi models deploy-check bench clean npm-clients clients

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c $(LOCK) -e ".[worker,dev]"
	$(PY) -m pip install -q -c $(LOCK) --no-deps spandrel  # see pyproject.toml
	touch $@

install: $(VENV)/.installed

# The npm clients the stack tests drive (the openai SDK), at the versions tests/npm pins.
NPM_CLIENTS := tests/npm/node_modules/.installed
$(NPM_CLIENTS): tests/npm/package.json tests/npm/package-lock.json
	cd tests/npm && npm ci --no-audit --no-fund --loglevel=error
	touch $@

npm-clients: $(NPM_CLIENTS)

## Open WebUI's own image code (PyPI open-webui, ~7 GB in .clients-venv: not in CI) against the
## service, with its default settings.
clients: $(VENV)/.installed
	$(PY) -m tests.clients.open_webui

models: $(VENV)/.installed
	$(PY) -m demo.models build .models

## The service on its embedded defaults: private Redis, demo models, gateway + one worker.
run: $(VENV)/.installed
	PORT=$(PORT) $(PY) -m devstack

## Lint, types, the OpenAPI drift check and every test, two at a time (stack tests grouped by
## the processes they share).
test: $(VENV)/.installed $(NPM_CLIENTS) lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup -m "not soak" --durations=15

## The edit loop: every test that needs no process of its own and compiles nothing (under a
## minute on two cores).
test-fast: $(VENV)/.installed $(NPM_CLIENTS)
	$(PY) -m pytest -n 2 -m "not stack and not soak and not slow"

## The reliability suite at full strength: ten kills, 500-job burst, a ten-minute fuzz, and a kill
## with the default heartbeat settings.
soak: $(VENV)/.installed
	IMAGEGEN_TEST_KILLS=10 IMAGEGEN_TEST_FUZZ_SECONDS=600 IMAGEGEN_TEST_BURST_JOBS=500 $(PY) -m pytest tests/stack/reliability tests/stack/test_crash_recovery.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

format: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## Re-pin constraints.txt to what the venv holds (after changing pyproject.toml and testing).
lock: $(VENV)/.installed
	{ echo "# Every version CI tested; make, CI and both Dockerfiles install with -c $(LOCK)."; \
	  echo "# Regenerate with \`make lock\`. torch has no build label: the CPU and CUDA builds both match."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^imagegen' | sed -E 's/^(torch==[^+]*)\+.*/\1/'; \
	} > $(LOCK)

## Regenerate openapi/openapi.json from the app.
openapi: $(VENV)/.installed
	$(PY) -m app.openapi > openapi/openapi.json

## Build both images with podman (a local Debian base stands in for python:3.11-slim) and run
## docker-compose.yml through a whole job life, a worker crash and a SIGTERM stop.
deploy-check: $(VENV)/.installed models
	$(PY) -m devstack.deploy_check

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
