"""Fresh planner statistics on the target after a bulk load, table by table over N connections at once:
every table holding rows, then every partitioned table (its statistics over all its partitions), which
autovacuum never analyzes on its own, and every populated materialized view. An online migration's views
are filled only at cutover, so they are analyzed after the release (cutover.check), by name."""

from __future__ import annotations

import asyncio

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER
from migration_core.transfer.copy import list_tables

PARTITIONED_AND_VIEWS = (
    "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE (c.relkind = 'p' OR c.relkind = 'm' AND c.relispopulated) "
    "AND " + USER_SCHEMA_FILTER + " ORDER BY c.relkind DESC, 1"
)


async def analyze(target: ServerConfig, database: str, parallel: int, only: list[str] | None = None) -> int:
    """ANALYZE every user table, largest first, then the partitioned ones and the populated views (or
    only the relations named, SQL-quoted), `parallel` at a time; returns how many."""
    first = await target.connect(database, data=True)
    try:
        if only is not None:
            tables = list(only)
        else:
            tables = [t.qualified for t in await list_tables(first)]
            tables += [r["name"] for r in await first.fetch(PARTITIONED_AND_VIEWS)]
    except BaseException:
        await first.close()
        raise
    todo: asyncio.Queue[str] = asyncio.Queue()
    for t in tables:
        todo.put_nowait(t)

    async def worker(conn: asyncpg.Connection) -> None:
        try:
            while not todo.empty():
                await conn.execute(f"ANALYZE {todo.get_nowait()}")
        finally:
            await conn.close()

    extra = [await target.connect(database, data=True) for _ in range(max(0, min(parallel, len(tables)) - 1))]
    await asyncio.gather(*(worker(c) for c in [first, *extra]))
    return len(tables)
