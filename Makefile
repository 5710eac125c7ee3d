PYTHON ?= python3

.PHONY: install test smoke lint

install:
	$(PYTHON) -m pip install -e ".[dev]"

# pytest exit code 5 (no tests collected) is a failure too: a suite that ran nothing proves nothing.
test:
	$(PYTHON) -m pytest -q

smoke:
	dynbench run --mode prefill --mode no-cache --mode kv-cache --prompt-len 16 --gen-len 4

lint:
	$(PYTHON) -m ruff check dynbench tests
