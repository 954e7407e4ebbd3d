"""The two source datasets: pgbench (one big table dominates) and "wide" (equal tables, where table-level
parallelism pays off). Both are generated on the server so loading them costs no client round trips."""

from __future__ import annotations

from bench.common import DATABASE, Deadline, client_env, conn_args, run, tool
from bot.localpg import LocalCluster

DATASETS = ("pgbench", "wide")
WIDE_TABLES = 6
# Rows per wide table per unit of scale, calibrated so `wide` at scale S is about as big as `pgbench -s S`.
WIDE_ROWS_PER_SCALE = 8_600

WIDE_TABLE_SQL = """
CREATE TABLE {name} (
    id bigint NOT NULL,
    account_id integer NOT NULL,
    created_at timestamptz NOT NULL,
    status text NOT NULL,
    title text NOT NULL,
    body text NOT NULL
);
INSERT INTO {name}
SELECT i,
       (i * 7919) % 100000,
       timestamptz '2024-01-01' + i * interval '1 second',
       (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4],
       'order ' || i || ' for customer ' || (i * 7919) % 100000,
       repeat(md5((i % 1000)::text), 3) || ' lorem ipsum dolor sit amet, consectetur adipiscing ' || i
FROM generate_series(1, {rows}) AS i;
ALTER TABLE {name} ADD PRIMARY KEY (id);
CREATE INDEX {name}_account_id_idx ON {name} (account_id);
"""


def create(source: LocalCluster, dataset: str, scale: int) -> None:
    """(Re)create the source database with `dataset`, then VACUUM ANALYZE and CHECKPOINT it so every
    method reads the same settled, all-visible tables."""
    source.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    source.psql(f"CREATE DATABASE {DATABASE}")
    if dataset == "pgbench":
        _load_pgbench(source, scale)
    elif dataset == "wide":
        _load_wide(source, scale)
    else:
        raise ValueError(f"unknown dataset {dataset!r}")
    source.psql("VACUUM ANALYZE", database=DATABASE)
    source.psql("CHECKPOINT")


def _load_pgbench(source: LocalCluster, scale: int) -> None:
    # d: drop, t: tables, G: server-side generate, v: vacuum, p: primary keys.
    run(
        [tool(source, "pgbench"), "-i", "-q", "-s", str(scale), "-I", "dtGvp", *conn_args(source)],
        env=client_env(source),
        deadline=Deadline.after(3600),
    )


def _load_wide(source: LocalCluster, scale: int) -> None:
    rows = max(1000, scale * WIDE_ROWS_PER_SCALE)
    for i in range(1, WIDE_TABLES + 1):
        source.psql(WIDE_TABLE_SQL.format(name=f"wide_{i}", rows=rows), database=DATABASE)
