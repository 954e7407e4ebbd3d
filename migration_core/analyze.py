"""Fresh planner statistics after a bulk load, table by table over N connections at once."""

from __future__ import annotations

import asyncio

from migration_core.copy import list_tables
from migration_core.servers import ServerConfig


async def analyze(target: ServerConfig, database: str, parallel: int) -> int:
    """ANALYZE every user table, largest first, `parallel` at a time; returns how many."""
    first = await target.connect(database, data=True)
    try:
        tables = await list_tables(first)
    except BaseException:
        await first.close()
        raise
    todo: asyncio.Queue = asyncio.Queue()
    for t in tables:
        todo.put_nowait(t)

    async def worker(conn) -> None:
        try:
            while not todo.empty():
                await conn.execute(f"ANALYZE {todo.get_nowait().qualified}")
        finally:
            await conn.close()

    extra = [await target.connect(database, data=True) for _ in range(max(0, min(parallel, len(tables)) - 1))]
    await asyncio.gather(*(worker(c) for c in [first, *extra]))
    return len(tables)
