# The two entry points on a fresh machine: `make demo` and `make test` (both set everything up first).
.PHONY: setup demo test unit integration federation lint bench up clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/hub demo

test: setup
	.venv/bin/ruff check .
	.venv/bin/pytest -q

unit: setup
	.venv/bin/pytest -q tests/unit

integration: setup
	.venv/bin/pytest -q tests/integration

federation: setup
	.venv/bin/pytest -q -m federation tests/integration/test_federation.py

lint:
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python -m bench.throughput

up: setup
	.venv/bin/hub up

clean:
	rm -rf .venv *.egg-info .pytest_cache .ruff_cache
