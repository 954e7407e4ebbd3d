"""Verification overlapping the copy: each table compared (rows and checksum, both sides) as soon as its
copy has committed, while other tables still copy and indexes build.

A migration's user waits for the verified result, not for the copy: checking every table only after
the last one arrived (and its indexes were built) made verifying a third of an offline migration. What
is compared here is kept with the import step; the verify step then reads only what is left
(sequences, materialized views, anything not compared here). The source is read as it is when its
table's copy ends, as the verify step would read it: a change made there after the copy is still seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import asyncpg

from migration_core.copy import TableSpec
from migration_core.limits import DataLimits
from migration_core.servers import ServerConfig
from migration_core.verify import SESSION, Known, compare_table


class EarlyChecks:
    """`async with EarlyChecks(…) as early:` copy with `on_copied=early.copied`, then `await early.known()`."""

    def __init__(self, source: ServerConfig, target: ServerConfig, database: str, limits: DataLimits) -> None:
        self.source, self.target, self.database, self.limits = source, target, database, limits
        self._todo: asyncio.Queue[TableSpec | None] = asyncio.Queue()
        self._known: Known = {}
        self._task: asyncio.Task | None = None
        self._pools: list[asyncpg.Pool] = []

    async def __aenter__(self) -> "EarlyChecks":
        # One session a side: the checks fill what the copy leaves idle rather than compete with it.
        self._pools = [await self.source.pool(self.database, 1, SESSION)]
        try:
            self._pools.append(await self.target.pool(self.database, 1, SESSION))
        except BaseException:
            await self._pools[0].close()
            raise
        self._task = asyncio.create_task(self._work())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await asyncio.gather(*(p.close() for p in self._pools), return_exceptions=True)

    def copied(self, table: TableSpec) -> None:
        """The copy of `table` committed: compare it when the checker is free."""
        self._todo.put_nowait(table)

    async def known(self) -> Known:
        """Every table handed over so far, compared."""
        self._todo.put_nowait(None)
        assert self._task is not None
        await self._task
        return self._known

    async def _work(self) -> None:
        src_pool, tgt_pool = self._pools
        while (table := await self._todo.get()) is not None:
            key = (table.schema, table.name)
            size = await tgt_pool.fetchval("SELECT pg_relation_size(to_regclass($1))", table.qualified)
            self._known[key] = await compare_table(
                src_pool, tgt_pool, key, "r", (table.size, size or 0), 1, self.limits
            )


def encode(known: Known) -> list[list]:
    """For a step's JSON data."""
    return [[*key, *values] for key, values in sorted(known.items())]


def decode(rows: list[list] | None) -> Known:
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows or []}
