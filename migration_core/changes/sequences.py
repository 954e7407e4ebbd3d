"""Sequence values: neither a schema-only dump nor logical replication carries them."""

from __future__ import annotations

import asyncpg

from migration_core.pg.sql import PGMIG_SCHEMA_MARK, literal

# not pgmig's own schema's (schema-change capture numbers its rows with one): no check or sync sees it
LIST = (
    "SELECT format('%I.%I', schemaname, sequencename) AS name, last_value, start_value FROM pg_sequences "
    "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND obj_description("
    f"to_regnamespace(quote_ident(schemaname)), 'pg_namespace') IS DISTINCT FROM {literal(PGMIG_SCHEMA_MARK)}"
)


async def values(conn: asyncpg.Connection) -> dict[str, int | None]:
    """Every sequence's last value (None: never called, or not readable)."""
    return {r["name"]: r["last_value"] for r in await conn.fetch(LIST)}


async def sync(source: asyncpg.Connection, target: asyncpg.Connection) -> int:
    """Give every target sequence the source's exact state; returns how many were set.

    One never called is set back to its own start, not called (`setval(seq, start, false)`): its first
    nextval() then returns the start, as on the source, and a start above 1 stays inside its bounds.
    """
    wanted = {r["name"]: r for r in await source.fetch(LIST)}
    present = set((await values(target)).keys())
    count = 0
    for name, row in wanted.items():
        if name not in present:
            continue
        if row["last_value"] is None:
            await target.execute("SELECT setval($1::regclass, $2, false)", name, row["start_value"])
        else:
            await target.execute("SELECT setval($1::regclass, $2, true)", name, row["last_value"])
        count += 1
    return count
