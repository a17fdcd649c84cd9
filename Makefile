# One task runner for the README, CI and developers.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build on this kind of machine; on a GPU host install the CUDA build of torch first.
TORCH  ?= torch==2.13.0
PORT   ?= 8000

.PHONY: run test test-fast soak lint typecheck format openapi models bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[worker,dev]"
	touch $@

install: $(VENV)/.installed

models: $(VENV)/.installed
	$(PY) -m workers.demo_models build .models

## The service on its embedded defaults: private Redis, demo models, gateway + one worker.
run: $(VENV)/.installed
	PORT=$(PORT) $(PY) -m devstack

## Lint, types, the OpenAPI drift check and every test, two at a time (stack tests grouped by
## the processes they share).
test: $(VENV)/.installed lint typecheck
	$(PY) -m pytest -n 2 --dist loadgroup -m "not soak" --durations=15

## The edit loop: every test that needs no process of its own (about half a minute).
test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not stack and not soak"

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

## Regenerate openapi/openapi.json from the app.
openapi: $(VENV)/.installed
	$(PY) -m app.openapi > openapi/openapi.json

bench: $(VENV)/.installed
	$(PY) -m bench

clean:
	rm -rf .run .pytest_cache .mypy_cache .ruff_cache
