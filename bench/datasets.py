"""The source datasets, all generated on the server so loading them costs no client round trips:

- pgbench: one big table dominates;
- wide: equal tables, where table-level parallelism pays off;
- onebig: one table of `--onebig-gb` GiB (integer primary key) and a few small ones, where only splitting
  the big table can use more than one core;
- lobs: `--lobs-count` large objects of 1–64 kB and one of `--lob-big-mb` MiB, where memory must stay flat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.common import DATABASE, Deadline, client_env, conn_args, run, tool
from bot.localpg import LocalCluster

DATASETS = ("pgbench", "wide", "onebig", "lobs")
GROUPS = {"both": ("pgbench", "wide"), "all": DATASETS}

# The methods a dataset runs when --methods is not given, in that order.
EVERY_COPY = (
    "dump-restore",
    "dump-dir",
    "pgcopydb",
    "raw-pipe",
    "pgmig",
    "pgmig-online",
    "pgmig-e2e",
    "pgmig-online-e2e",
)
DEFAULT_METHODS = {
    "pgbench": EVERY_COPY,
    "wide": EVERY_COPY,
    "onebig": ("dump-dir", "pgcopydb", "single-stream", "pgmig", "pgmig-online"),
    "lobs": ("dump-restore", "pgmig"),
}
# The two methods every row of a dataset's table is compared with (the columns t/… and rss/…).
BASELINES = {
    "pgbench": ("raw-pipe", "pgcopydb"),
    "wide": ("raw-pipe", "pgcopydb"),
    "onebig": ("single-stream", "pgcopydb"),
    "lobs": ("dump-restore", "pgcopydb"),
}

WIDE_TABLES = 6
# Rows per wide table per unit of scale, calibrated so `wide` at scale S is about as big as `pgbench -s S`.
WIDE_ROWS_PER_SCALE = 8_600
# Rows of `events` per GiB of heap (pg_relation_size): ~142 bytes a row measured on PostgreSQL 15 at
# small ids, a little more at large ones; rounded up so the table is at least --onebig-gb.
ONEBIG_ROWS_PER_GIB = 7_600_000
ONEBIG_BATCH_ROWS = 4_000_000  # one INSERT (transaction) per batch, so a 4 GB load is a few moderate ones
NOISE_BYTES = 1 << 20  # the random block large objects are cut from (incompressible, so sizes are real)


@dataclass(frozen=True)
class Sizes:
    scale: int = 30  # pgbench scale; wide matches it
    onebig_gb: float = 4.0  # GiB of heap in the big table
    lobs_count: int = 20_000  # small large objects (1–64 kB)
    lob_big_mb: float = 1024.0  # MiB of the one big large object

    def describe(self, dataset: str) -> str:
        if dataset == "onebig":
            return f"one {self.onebig_gb:g} GiB table"
        if dataset == "lobs":
            return f"{self.lobs_count} large objects of 1–64 kB and one of {self.lob_big_mb:g} MiB"
        return f"scale {self.scale}"


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
       (i::bigint * 7919) % 100000,
       timestamptz '2024-01-01' + i * interval '1 second',
       (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4],
       'order ' || i || ' for customer ' || (i::bigint * 7919) % 100000,
       repeat(md5((i % 1000)::text), 3) || ' lorem ipsum dolor sit amet, consectetur adipiscing ' || i
FROM generate_series(1, {rows}) AS i;
ALTER TABLE {name} ADD PRIMARY KEY (id);
CREATE INDEX {name}_account_id_idx ON {name} (account_id);
"""

ONEBIG_SMALL_SQL = """
CREATE TABLE accounts (id integer PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO accounts
SELECT i, 'account ' || i, timestamptz '2020-01-01' + i * interval '1 hour' FROM generate_series(1, 10000) AS i;
CREATE TABLE event_kinds (id smallint PRIMARY KEY, name text NOT NULL UNIQUE);
INSERT INTO event_kinds
SELECT i, (ARRAY['view', 'click', 'cart', 'order', 'pay', 'ship', 'return', 'refund'])[i + 1]
FROM generate_series(0, 7) AS i;
CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL);
INSERT INTO settings SELECT 'setting_' || i, md5(i::text) FROM generate_series(1, 20) AS i;
CREATE TABLE events (
    id integer NOT NULL,
    account_id integer NOT NULL,
    kind smallint NOT NULL,
    created_at timestamptz NOT NULL,
    amount numeric(12, 2) NOT NULL,
    payload text NOT NULL
);
"""

ONEBIG_BATCH_SQL = """
INSERT INTO events
SELECT i,
       (i::bigint * 7919) % 10000 + 1,
       i % 8,
       timestamptz '2024-01-01' + i * interval '1 second',
       ((i::bigint * 104729) % 10000000) / 100.0,
       'event ' || i || ' ' || md5(i::text) || ' ' || repeat(chr(97 + i % 26), 10 + i % 40)
FROM generate_series({first}, {last}) AS i;
"""

# One random 1 MiB block (16 bytes per md5, seeded so every run has the same bytes), kept in a table
# for the load only; each large object is a slice of it, the big one that block over and over (2 kB
# pages of random bytes do not compress, so pg_largeobject holds the full size).
LOBS_SQL = """
SELECT setseed(0.15);
CREATE TABLE lob_noise AS
SELECT string_agg(decode(md5(random()::text), 'hex'), ''::bytea ORDER BY i) AS b
FROM generate_series(1, {noise} / 16) AS i;
CREATE TABLE documents (id integer PRIMARY KEY, name text NOT NULL, content oid NOT NULL);
INSERT INTO documents
SELECT i, 'document ' || i,
       lo_from_bytea(0, substr(b, 1 + (i * 104729) % ({noise} - 65536), 1024 + (i * 7919) % (63 * 1024 + 1)))
FROM lob_noise, generate_series(1, {count}) AS i;
INSERT INTO documents VALUES ({count} + 1, 'big document', lo_create(0));
SELECT count(lo_put(d.content, k * {noise}::bigint, substr(n.b, 1, least({noise}, {big} - k * {noise}::bigint)::int)))
FROM documents d, lob_noise n, generate_series(0, {chunks} - 1) AS k
WHERE d.id = {count} + 1;
DROP TABLE lob_noise;
"""


def create(source: LocalCluster, dataset: str, sizes: Sizes) -> None:
    """(Re)create the source database with `dataset`, then VACUUM ANALYZE and CHECKPOINT it so every
    method reads the same settled, all-visible tables."""
    source.psql(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
    source.psql(f"CREATE DATABASE {DATABASE}")
    if dataset == "pgbench":
        _load_pgbench(source, sizes.scale)
    elif dataset == "wide":
        _load_wide(source, sizes.scale)
    elif dataset == "onebig":
        _load_onebig(source, sizes.onebig_gb)
    elif dataset == "lobs":
        _load_lobs(source, sizes.lobs_count, sizes.lob_big_mb)
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


def _load_onebig(source: LocalCluster, gib: float) -> None:
    rows = max(10_000, round(gib * ONEBIG_ROWS_PER_GIB))
    source.psql(ONEBIG_SMALL_SQL, database=DATABASE)
    for first in range(1, rows + 1, ONEBIG_BATCH_ROWS):
        last = min(rows, first + ONEBIG_BATCH_ROWS - 1)
        source.psql(ONEBIG_BATCH_SQL.format(first=first, last=last), database=DATABASE)
    source.psql("ALTER TABLE events ADD PRIMARY KEY (id)", database=DATABASE)


def _load_lobs(source: LocalCluster, count: int, big_mib: float) -> None:
    big = max(1, round(big_mib * 2**20))
    sql = LOBS_SQL.format(noise=NOISE_BYTES, count=count, big=big, chunks=math.ceil(big / NOISE_BYTES))
    source.psql(sql, database=DATABASE)
