PYTHON ?= python3

.PHONY: install test test-processes test-all test-fast test-floor smoke lint figures docs gpu-wheels

install:
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m pip install -e examples/dynbench-pdrop

# pytest exit code 5 (no tests collected) is a failure too: a suite that ran nothing proves nothing.
# Two pytest-xdist workers, one torch thread each (tests/conftest.py); a file's tests, and the files
# sharing a costly session fixture, stay on one worker (conftest's scheduler). TEST_WORKERS=0: serial.
# `make test` is every test but the `processes` tier (≤ 2 min on 2 idle cores): the tests that start
# dynbench processes and local job arrays, seconds of imports each, run by `make test-processes`.
# CI (.ci/run) runs both: `make test-all`.
TEST_WORKERS ?= 2
test:
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not processes"

test-processes:
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m processes

test-all: test test-processes

# the quick loop while developing: everything but the tests marked slow (a few seconds each)
test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

# the fast tier on the declared floor (Python 3.12, torch 2.11.0, transformers 5.17.0) in .floor-venv/
test-floor:
	scripts/ci-floor.sh

smoke:
	dynbench run --mode prefill --mode no-cache --mode kv-cache --prompt-len 16 --gen-len 4

lint:
	$(PYTHON) -m ruff check dynbench tests

# The chart set of docs/reports.md without a GPU: 7B counts on the meta device + measured tiny-preset CPU runs.
figures:
	rm -rf results/figures-meta results/figures-cpu
	dynbench run --suite suites/figures-meta.yaml --gpu h100-sxm --out results/figures-meta
	dynbench run --suite suites/smoke.yaml --out results/figures-cpu
	dynbench plot results/figures-meta results/figures-cpu --out docs/figures

# docs/records.md's column list, generated from the record schema (dynbench/records.py); a test checks it.
docs:
	$(PYTHON) -m dynbench.report.columns

# Wheels the GPU machine lacks (no package index there), for scripts/gpu-check.sh: carry `.whl`.
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) -m pip wheel -q --no-deps -w .whl fvcore==0.1.5.post20221221 iopath==0.1.10 yacs==0.1.8 termcolor==3.2.0
