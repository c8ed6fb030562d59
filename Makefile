# The two entry points on a fresh machine: `make demo` and `make test` (both set everything up first).
.PHONY: setup demo test unit integration lint bench up clean stress

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

# `make test` 5 times in a row beside a CPU burner; stops at the first failure (RUNS=1 for one round).
stress: setup
	bash scripts/stress-test.sh --runs $(or $(RUNS),5)

lint:
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python -m bench.throughput

up: setup
	.venv/bin/hub up

clean:
	rm -rf .venv *.egg-info .pytest_cache .ruff_cache
