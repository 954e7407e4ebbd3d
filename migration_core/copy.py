"""Table data moved by parallel COPY streams between the servers, all under one source snapshot.

This is what `pg_dump | pg_restore` does for data, without writing it to disk or through one stream:
N workers take tables largest first; each streams `COPY … TO STDOUT` on the source straight into
`COPY … FROM STDIN` on the target. Indexes and constraints are built afterwards, which is faster
than maintaining them row by row.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from migration_core.progress import DatabaseProgress
from migration_core.servers import ServerConfig
from migration_core.sql import USER_SCHEMA_FILTER, literal, qualified

PIPE_DEPTH = 32  # chunks in flight per stream: enough to keep both servers busy, bounded memory

TABLES = (
    "SELECT n.nspname AS schema, c.relname AS name, pg_relation_size(c.oid) AS size, "
    "ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
    "      AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)::text[] AS columns "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND " + USER_SCHEMA_FILTER + " ORDER BY size DESC, 1, 2"
)


@dataclass
class TableSpec:
    schema: str
    name: str
    size: int
    columns: list[str]

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)


async def list_tables(conn: asyncpg.Connection) -> list[TableSpec]:
    """Every user table holding rows (partitions, not their parents), largest first."""
    return [TableSpec(r["schema"], r["name"], r["size"], list(r["columns"])) for r in await conn.fetch(TABLES)]


class _End:
    """Marks the end of a stream; carries the source's error when it failed mid-way."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


def _put_now(queue: asyncio.Queue, item: object) -> None:
    """Enqueue without waiting, dropping the oldest chunks if full: the stream is failing anyway."""
    while True:
        try:
            queue.put_nowait(item)
            return
        except asyncio.QueueFull:
            queue.get_nowait()


async def _stream(
    src: asyncpg.Connection, tgt: asyncpg.Connection, table: TableSpec, progress: DatabaseProgress
) -> None:
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(PIPE_DEPTH)
    copied = 0

    async def sink(chunk: bytes) -> None:
        nonlocal copied
        step = min(len(chunk), max(0, table.size - copied))  # count toward the on-disk estimate
        copied += len(chunk)
        progress.bytes_done += step
        await queue.put(chunk)

    async def produce() -> None:
        try:
            await src.copy_from_table(table.name, schema_name=table.schema, columns=table.columns, output=sink)
        except BaseException as exc:
            _put_now(queue, _End(exc))  # the consumer may be gone: blocking on a full queue would hang
            raise
        await queue.put(_End())

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise RuntimeError(f"reading {table.qualified} from the source failed") from item.error
                return
            yield item

    async with asyncio.TaskGroup() as group:
        group.create_task(produce())
        group.create_task(
            tgt.copy_to_table(table.name, schema_name=table.schema, columns=table.columns, source=chunks())
        )
    progress.bytes_done += max(0, table.size - copied)


async def copy_tables(
    source: ServerConfig,
    target: ServerConfig,
    database: str,
    parallel: int,
    progress: DatabaseProgress,
    snapshot: str | None = None,
) -> int:
    """Copy every table's rows; returns how many tables were copied. The target tables must exist, empty.

    `snapshot` is one exported elsewhere (a replication slot's); without it, one is exported here.
    """
    coordinator = await source.connect(database)
    try:
        snapshot_tx = coordinator.transaction(isolation="repeatable_read", readonly=True)
        await snapshot_tx.start()
        if snapshot is None:
            snapshot = await coordinator.fetchval("SELECT pg_export_snapshot()")
        tables = await list_tables(coordinator)
        progress.tables_total = len(tables)
        progress.bytes_total = sum(t.size for t in tables)
        todo: asyncio.Queue[TableSpec] = asyncio.Queue()
        for t in tables:
            todo.put_nowait(t)

        async def worker() -> None:
            src, tgt = await asyncio.gather(source.connect(database), target.connect(database))
            try:
                while not todo.empty():
                    table = todo.get_nowait()
                    tx = src.transaction(isolation="repeatable_read", readonly=True)
                    await tx.start()
                    await src.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
                    await _stream(src, tgt, table, progress)
                    await tx.commit()
                    progress.tables_done += 1
            except BaseException:
                # Mid-COPY a connection cannot even roll back: drop both, the servers clean up.
                src.terminate()
                tgt.terminate()
                raise
            await asyncio.gather(src.close(), tgt.close(), return_exceptions=True)

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(parallel, len(tables)))):
                group.create_task(worker())
        await snapshot_tx.commit()
        return len(tables)
    finally:
        await coordinator.close()
