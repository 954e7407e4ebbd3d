"""Sequence values: neither a schema-only dump nor logical replication carries them."""
from __future__ import annotations

import asyncpg

LIST = ("SELECT format('%I.%I', schemaname, sequencename) AS name, last_value FROM pg_sequences "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')")


async def values(conn: asyncpg.Connection) -> dict[str, int | None]:
    """Every sequence's last value (None: never called, or not readable)."""
    return {r["name"]: r["last_value"] for r in await conn.fetch(LIST)}


async def sync(source: asyncpg.Connection, target: asyncpg.Connection) -> int:
    """Set every target sequence to the source's value; returns how many were set."""
    wanted = await values(source)
    present = set((await values(target)).keys())
    count = 0
    for name, value in wanted.items():
        if name not in present:
            continue
        if value is None:
            await target.execute("SELECT setval($1::regclass, 1, false)", name)
        else:
            await target.execute("SELECT setval($1::regclass, $2, true)", name, value)
        count += 1
    return count
