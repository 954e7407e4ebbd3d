# `make run` and `make test` set everything up themselves (venv, packages, PostgreSQL server).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: run test setup postgres clean bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $(STAMP)

postgres:
	@scripts/ensure-postgres.sh

setup: $(STAMP) postgres

run: setup
	$(VENV)/bin/pgmig run

test: setup
	$(VENV)/bin/pytest -q

clean:
	-$(VENV)/bin/pgmig sandbox down
	rm -rf $(VENV) .pytest_cache *.egg-info

# Copy speed against pg_dump/pg_restore, pgcopydb and a raw parallel COPY pipe (flags: BENCH_ARGS="--scale 2"),
# then online replication lag under pgbench (flags: LAG_ARGS="--rate 500 --seconds 20").
bench: setup
	@bench/ensure-tools.sh
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)
	$(VENV)/bin/python -m bench.lag $(LAG_ARGS)
	$(VENV)/bin/python -m bench.cutover $(CUTOVER_ARGS)
