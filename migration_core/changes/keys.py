"""Primary keys and unique constraints of the copied tables, built by pgmig before pg_restore's post-data:
a `CREATE UNIQUE INDEX`, then `ALTER TABLE … ADD CONSTRAINT … USING INDEX`.

pg_restore adds a key with `ALTER TABLE … ADD CONSTRAINT … PRIMARY KEY (…)`, which holds an ACCESS
EXCLUSIVE lock on the table for as long as the index takes to build: nothing may read the table
meanwhile, so verifying a table as soon as it is copied (early_checks.py) and building its key ran one
after the other. `CREATE INDEX` holds a SHARE lock, which readers pass; attaching the constraint to the
finished index takes an instant. The result is the same constraint on the same index (name, columns,
operator classes, storage parameters, deferrability), and pg_restore is then told to leave those
entries out (`pg_restore -L`), so comments and foreign keys on them still come from the archive.

Only keys of plain tables are built here: those of partitioned tables are made by attaching the
partitions' indexes, which pg_restore does.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, qualified, readable
from migration_core.state.errors import MigrationError

KEYS = (
    "SELECT k.oid, n.nspname AS schema, c.relname AS table, k.conname AS name, k.contype::text AS kind, "
    "k.condeferrable AS deferrable, k.condeferred AS deferred, i.relname AS index, "
    "pg_get_indexdef(k.conindid) AS definition "
    "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_class i ON i.oid = k.conindid "
    "WHERE k.oid = ANY($1::oid[]) AND k.contype IN ('p', 'u') AND c.relkind = 'r' AND NOT c.relispartition "
    "AND " + USER_SCHEMA_FILTER + " "
    "ORDER BY pg_relation_size(c.oid) DESC, k.oid"
)

CONSTRAINT_CLASS = 2606  # pg_constraint's OID: the catalog of a CONSTRAINT entry in pg_restore's list
_ENTRY = re.compile(r"^\s*\d+;\s+(\d+)\s+(\d+)\s")


@dataclass(frozen=True)
class Key:
    oid: int  # on the source: names the archive's entry
    schema: str
    table: str
    name: str
    kind: str  # 'p' | 'u'
    deferrable: bool
    deferred: bool
    index: str
    definition: str  # CREATE UNIQUE INDEX …, every name qualified and quoted by the server

    @property
    def described(self) -> str:
        what = "primary key" if self.kind == "p" else "unique constraint"
        return f"the {what} {self.name} of {readable(self.schema, self.table)}"

    def attach(self) -> str:
        what = "PRIMARY KEY" if self.kind == "p" else "UNIQUE"
        timing = " DEFERRABLE" + (" INITIALLY DEFERRED" if self.deferred else "") if self.deferrable else ""
        return (
            f"ALTER TABLE ONLY {qualified(self.schema, self.table)} ADD CONSTRAINT {ident(self.name)} "
            f"{what} USING INDEX {ident(self.index)}{timing}"
        )


def constraints_in(listing: str) -> list[int]:
    """The source OIDs of the constraints in pg_restore's list (`pg_restore -l`)."""
    entries = (_ENTRY.match(line) for line in listing.splitlines())
    return [int(e.group(2)) for e in entries if e and int(e.group(1)) == CONSTRAINT_CLASS]


async def plain_keys(conn: asyncpg.Connection, listing: str) -> list[Key]:
    """The keys of the source database's plain tables that the archive holds, largest table first."""
    async with conn.transaction(readonly=True):
        await conn.execute("SET LOCAL search_path = pg_catalog")  # indexdef qualifies every name
        return [Key(**dict(r)) for r in await conn.fetch(KEYS, constraints_in(listing))]


async def build(target: ServerConfig, database: str, keys: list[Key], parallel: int) -> None:
    """Each key's index, `parallel` at a time, then its constraint (waiting for readers of the table)."""
    todo: asyncio.Queue[Key] = asyncio.Queue()
    for k in keys:
        todo.put_nowait(k)

    async def worker() -> None:
        async with target.connection(database, data=True) as conn:
            while not todo.empty():
                key = todo.get_nowait()
                try:
                    await conn.execute(key.definition)
                    await conn.execute(key.attach())
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"building {key.described} failed: {exc}") from None

    await asyncio.gather(*(worker() for _ in range(max(1, min(parallel, len(keys))))))


def leave_out(listing: str, keys: list[Key]) -> str:
    """pg_restore's list (`pg_restore -l`) without the entries of `keys`, for `pg_restore -L`."""
    built = {k.oid for k in keys}

    def kept(line: str) -> bool:
        entry = _ENTRY.match(line)
        return not (entry and int(entry.group(1)) == CONSTRAINT_CLASS and int(entry.group(2)) in built)

    return "".join(line for line in listing.splitlines(keepends=True) if kept(line))
