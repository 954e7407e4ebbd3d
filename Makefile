# `make run` and `make test` set everything up themselves (venv, packages from the lock files, PostgreSQL).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp
LOCK_FLAGS := --generate-hashes --python-version 3.11
# Python keeps its compiled modules (__pycache__, ignored by git) even where the environment says not to: else
# every pgmig process a test starts compiles pgmig anew (0.2 s of CPU each, a hundred processes a run), and
# every test worker rewrites every test module's asserts.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: run test test-unit test-integration lint setup postgres clean bench lock sandbox-down sandbox-reset sandbox-status

# Every machine installs exactly the versions in the lock files (hashes checked), then pgmig itself. pip installs
# uv (its version and hashes locked too), and uv the rest: pip took 15 s of CPU for what uv does in under one
# (resolving, checking and unpacking the same wheels); if uv cannot reach the index pip uses, pip installs them.
UV := $(VENV)/bin/uv pip install -q --python $(VENV)/bin/python
$(STAMP): pyproject.toml requirements.lock requirements-test.lock requirements-uv.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --require-hashes -r requirements-uv.lock
	$(UV) --require-hashes -r requirements-test.lock || $(VENV)/bin/pip install -q --require-hashes -r requirements-test.lock
	$(UV) --no-deps -e . || $(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

postgres:
	@scripts/ensure-postgres.sh

setup: $(STAMP) postgres

run: setup
	$(VENV)/bin/pgmig run

# The fast tier first (lint and types beside the unit tests, one core each: seconds, no clusters), then the
# integration tier.
test: $(STAMP)
	@$(MAKE) --no-print-directory -j2 --output-sync=target lint test-unit
	@$(MAKE) --no-print-directory test-integration

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-unit: $(STAMP)
	$(VENV)/bin/pytest -q tests/unit

# Integration tests run side by side (pytest-xdist, each worker with its own clusters, on /dev/shm when it has
# room), a module at a time per worker, the longest modules first (tests/integration/conftest.py): the suite is
# CPU-bound on two cores, and a worker left with one long module at the end had the machine idle around it.
TEST_JOBS ?= 6
test-integration: setup
	$(VENV)/bin/pytest -q -n $(TEST_JOBS) --dist loadscope --no-loadscope-reorder tests/integration

# After changing dependencies in pyproject.toml, or to move to another uv (UV_VERSION=…).
UV_VERSION ?= $(shell sed -n 's/^uv==\([^ ]*\).*/\1/p' requirements-uv.lock)
lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml $(LOCK_FLAGS) -o requirements.lock
	$(VENV)/bin/uv pip compile pyproject.toml --extra test $(LOCK_FLAGS) -c requirements.lock -o requirements-test.lock
	echo uv==$(UV_VERSION) | $(VENV)/bin/uv pip compile - $(LOCK_FLAGS) -o requirements-uv.lock

# The sandbox `make run` uses: removed (clusters, data and migration history), re-opened after a cutover fenced
# its source, or listed (with a psql line per cluster). down and reset refuse while migrations of the sandbox are
# active, naming them; FORCE=1 (`make sandbox-down FORCE=1`) cancels them first, as `/pgmig cancel` would.
sandbox-down sandbox-reset sandbox-status: $(STAMP)
	$(VENV)/bin/pgmig sandbox $(@:sandbox-%=%) $(if $(FORCE),--force)

clean:
	-test -x $(VENV)/bin/pgmig && $(VENV)/bin/pgmig sandbox down
	rm -rf $(VENV) .pytest_cache *.egg-info

# Copy speed against pg_dump/pg_restore, pgcopydb and a raw parallel COPY pipe (flags: BENCH_ARGS="--scale 2"),
# then online replication lag under pgbench (flags: LAG_ARGS="--rate 500 --seconds 20").
bench: setup
	@bench/ensure-tools.sh
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.lag $(LAG_ARGS)
	$(VENV)/bin/python -m bench.cutover $(CUTOVER_ARGS)
	$(VENV)/bin/python -m bench.plan $(PLAN_ARGS)
	$(VENV)/bin/python -m bench.verify_cost $(VERIFY_COST_ARGS)
