# The two entry points on a fresh machine: `make demo` and `make test` (both set everything up first).
.PHONY: setup demo test unit integration federation lint bench hostile fuzz faults soak stress up clean

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

# `make test` 5 times in a row beside a CPU burner; stops at the first failure (RUNS=1 for one round).
stress: setup
	bash scripts/stress-test.sh --runs $(or $(RUNS),5)

lint:
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python -m bench.throughput

# Hostile input (docs/reliability.md): 100,000 bad records through a hub of its own; ~4 minutes.
hostile: setup
	.venv/bin/python -m bench.hostile --bad 100000 --out bench/results/hostile.json

# API fuzzing on demand: many more examples per route and caller than `make test` runs, then a live `hub up`.
fuzz: setup
	HUB_FUZZ_EXAMPLES=50 .venv/bin/pytest -q -p no:cacheprovider tests/fuzz/test_api_fuzz.py
	HUB_FUZZ_EXAMPLES=5 .venv/bin/pytest -q -p no:cacheprovider tests/fuzz/test_api_fuzz_live.py

# The fault suite (docs/reliability.md): worker SIGKILLs, broker restarts and pauses, rebalances and an API restart
# under steady load; prints the fault table and appends it to bench/results/faults.json; ~8-10 minutes.
faults: setup
	.venv/bin/python -m bench.faults

# Soak (docs/reliability.md): 30 minutes at half the measured maximum rate; RSS of hub up, a worker and the broker
# every 10 s and the consumer lag; writes bench/results/soak.json and soak.png.
soak: setup
	.venv/bin/python -m bench.soak

up: setup
	.venv/bin/hub up

clean:
	rm -rf .venv *.egg-info .pytest_cache .ruff_cache
