"""Large objects: copied by oid, since COPY of tables and logical replication both skip them."""
from __future__ import annotations

import asyncpg


async def copy(source: asyncpg.Connection, target: asyncpg.Connection) -> int:
    """Create (or replace) every source large object on the target with the same oid and content."""
    oids = [r["oid"] for r in await source.fetch("SELECT oid FROM pg_largeobject_metadata ORDER BY oid")]
    for oid in oids:
        data = await source.fetchval("SELECT lo_get($1::oid)", oid)
        async with target.transaction():
            if await target.fetchval("SELECT 1 FROM pg_largeobject_metadata WHERE oid = $1::oid", oid):
                await target.execute("SELECT lo_unlink($1::oid)", oid)
            await target.execute("SELECT lo_from_bytea($1::oid, $2)", oid, data)
    return len(oids)
