"""Table data moved by parallel COPY streams between the servers, all under one source snapshot.

This is what `pg_dump | pg_restore` does for data, without writing it to disk or through one stream:
N workers take pieces of work largest first, across all tables; a piece is a whole table or, for a
table larger than the split limit, one of its ranges (ranges.py). Each streams `COPY … TO STDOUT` on
the source straight into `COPY … FROM STDIN` on the target. Indexes and constraints are built
afterwards, which is faster than maintaining them row by row.

A table copied by one stream is truncated in the stream's transaction and loaded with `COPY … FREEZE`:
PostgreSQL then appends its rows page after page, in the order they came, already frozen (no later
hint-bit writes or freezing vacuum on the target), and a digest of the stream (digest.py) can be compared
with one of the table read back. A range of a split table shares its table with other streams and is
loaded plainly. Tables of built-in types stream in binary (NOT_BINARY says which cannot), which spares
both servers rendering and parsing text.

A stream has no time limit: an hour-long table is normal. It fails when it stops moving: no byte for
`stall_seconds`, and the failure says what the stuck session waits for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from migration_core.changes import tables as target_tables
from migration_core.observe import server_progress, waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg.servers import ServerConfig
from migration_core.pg.sql import USER_SCHEMA_FILTER, ident, literal, qualified, readable
from migration_core.state.errors import MigrationError
from migration_core.transfer import ranges
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits
from migration_core.verify.digest import RowDigest

PIPE_DEPTH = 32  # chunks in flight per stream: enough to keep both servers busy, bounded memory
SMALL_CHUNK = 128 << 10  # bytes: a COPY chunk smaller than this means the socket held little…
GATHER_SECONDS = 0.001  # …so the reader pauses this long and lets the next chunk grow
STALL_CHECK_SECONDS = 5.0  # how often a stream is checked for having stopped moving

# Columns a binary COPY could carry wrongly or not at all: a type numbered above the OIDs every version
# fixes (FirstGenbkiObjectId; an array of an enum and a composite name their types by OID, which the
# target numbers its own way), one without a binary form (aclitem), an array of one, or an OID alias
# (regclass and kin: binary carries the source's OID, text a name the target resolves).
NOT_BINARY = (
    "SELECT FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid LEFT JOIN pg_type e ON e.oid = t.typelem "
    "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND (t.oid >= 10000 "
    "OR t.typsend = 0 OR e.typsend = 0 OR t.typname ~ '^_?reg')"
)

# A table's columns with their types (OID and modifier), comparable between the servers for the types
# binary COPY carries, whose OIDs are fixed: binary needs the very same types on both sides. In column
# name order (`name` sorts bytewise on every server).
COLUMN_TYPES = (
    "ARRAY(SELECT format('%s %s %s', a.attname, a.atttypid, a.atttypmod) FROM pg_attribute a "
    "      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attname)::text[] AS types"
)

TABLES = (
    "SELECT n.nspname AS schema, c.relname AS name, pg_relation_size(c.oid) AS size, "
    "ARRAY(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 "
    "      AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum)::text[] AS columns, "
    "NOT EXISTS (" + NOT_BINARY + ") AS binary_safe, " + COLUMN_TYPES + " "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND " + USER_SCHEMA_FILTER + " ORDER BY size DESC, 1, 2"
)


@dataclass
class TableSpec:
    schema: str
    name: str
    size: int
    columns: list[str]
    binary_safe: bool = False  # no column NOT_BINARY names: the table may move in binary…
    types: tuple[str, ...] = ()  # …if the target's table has these very columns (COLUMN_TYPES)

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)

    @property
    def readable(self) -> str:
        return readable(self.schema, self.name)

    def select(self, where: str) -> str:
        """The rows of one range, columns in the order a whole-table COPY gives them."""
        columns = ", ".join(ident(c) for c in self.columns)
        return f"SELECT {columns} FROM ONLY {self.qualified} WHERE {where}"


@dataclass
class TableCopy:
    """A table's copy as its pieces commit, shared by them; what `on_copied` is given at the end."""

    table: TableSpec
    left: int  # pieces still to copy
    whole: bool  # one stream into the table truncated in its transaction: rows land in the order sent
    snapshot_xmin: int  # the oldest transaction running at the copy's snapshot (32-bit xid)
    format: str = "text"  # of the COPY stream, and of the check's read-back
    ranges: tuple[str, ...] = ("",)  # the pieces' conditions on the source ("": the whole table)
    rows: int = 0  # as the target's COPY command tags counted them
    digest: RowDigest | None = None  # of what the source sent, when asked for (`on_copied`)


@dataclass
class Piece:
    """One stream's work: a table, or one range of it."""

    table: TableSpec
    range: ranges.Range
    copy: TableCopy

    @property
    def name(self) -> str:
        return f"{self.table.readable} {self.range.label}".strip()


async def list_tables(conn: asyncpg.Connection) -> list[TableSpec]:
    """Every user table holding rows (partitions, not their parents), largest first."""
    return [
        TableSpec(r["schema"], r["name"], r["size"], list(r["columns"]), r["binary_safe"], tuple(r["types"]))
        for r in await conn.fetch(TABLES)
    ]


async def copy_out(
    conn: asyncpg.Connection, table: TableSpec, where: str, output: Callable[[bytes], Awaitable[None]], form: str
) -> str:
    """`COPY … TO STDOUT` of a table, or of the rows `where` names ("": all), into `output`; its tag."""
    if where:
        return await conn.copy_from_query(table.select(where), output=output, format=form)
    return await conn.copy_from_table(
        table.name, schema_name=table.schema, columns=table.columns, output=output, format=form
    )


async def gather_more(chunk: bytes) -> None:
    """After a small chunk of a `COPY … TO STDOUT` stream, wait a moment before reading on. asyncpg hands
    over whatever the socket holds, and each hand-over costs pgmig ~0.1 ms however small: read as soon
    as data arrives, a fast server's stream comes in ~50 kB pieces and pgmig spends more CPU on them
    than the server does producing them. Meanwhile the kernel keeps receiving (nothing slows down)."""
    if len(chunk) < SMALL_CHUNK:
        await asyncio.sleep(GATHER_SECONDS)


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


def copy_rows(status: str) -> int:
    """The row count of a `COPY n` command tag."""
    return int(status.rsplit(" ", 1)[-1]) if status and status.startswith("COPY") else 0


class Stalled(Exception):
    """A stream moved no byte for the stall limit; `why` is what the servers said it waits for."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


async def _stream(
    src: asyncpg.Connection,
    tgt: asyncpg.Connection,
    piece: Piece,
    progress: DatabaseProgress,
    stall: float,
    why: Callable[[], Awaitable[str]],
    digest: RowDigest | None,
) -> int:
    """Pipe one piece from source to target, into `digest` too if given; returns the rows the target
    took. Raises Stalled when no byte moved for `stall` seconds, with `why()` asked while the sessions
    still wait."""
    queue: asyncio.Queue[bytes | _End] = asyncio.Queue(PIPE_DEPTH)
    table = piece.table
    whole, form = piece.copy.whole, piece.copy.format
    copied = 0
    loop = asyncio.get_running_loop()
    moved = loop.time()

    async def sink(chunk: bytes) -> None:
        nonlocal copied, moved
        step = min(len(chunk), max(0, piece.range.size - copied))  # count toward the on-disk estimate
        copied += len(chunk)
        progress.bytes_done += step
        moved = loop.time()
        if digest is not None:
            digest.update(chunk)
        await queue.put(chunk)
        await gather_more(chunk)

    async def produce() -> None:
        try:
            await copy_out(src, table, piece.range.where, sink, form)
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

    async def pipe() -> str:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            consumed = group.create_task(
                tgt.copy_to_table(
                    table.name,
                    schema_name=table.schema,
                    columns=table.columns,
                    source=chunks(),
                    freeze=whole,
                    format=form,
                )
            )
        return consumed.result()

    async def load() -> str:
        if not whole:
            return await pipe()
        async with tgt.transaction():
            await target_tables.empty(tgt, table.qualified)
            return await pipe()

    work = asyncio.ensure_future(load())
    try:
        while not (await asyncio.wait({work}, timeout=min(stall, STALL_CHECK_SECONDS)))[0]:
            if loop.time() - moved >= stall:
                raise Stalled(await why())  # asked now, while the sessions still wait: a cancel ends the wait
    finally:
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    progress.bytes_done += max(0, piece.range.size - copied)
    return copy_rows(work.result())


async def _waits(source: ServerConfig, target: ServerConfig, database: str, pids: tuple[int, int]) -> str:
    """Why a stream stopped moving, as far as the servers can tell."""
    src_why, tgt_why = await asyncio.gather(
        waits.about(source, database, pids[0]), waits.about(target, database, pids[1])
    )
    why = "; ".join(f"{side} session {w}" for side, w in (("the source", src_why), ("the target", tgt_why)) if w)
    return why or "neither server reports a wait: check the network between pgmig and the servers"


# The target's tables: whether the login may truncate them (TRUNCATE privilege, e.g. as a member of the
# owner role), and their columns' types.
TARGET_TABLES = (
    "SELECT n.nspname AS schema, c.relname AS name, has_table_privilege(c.oid, 'TRUNCATE') AS truncatable, "
    + COLUMN_TYPES
    + " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND "
    + USER_SCHEMA_FILTER
)


@dataclass(frozen=True)
class TargetTable:
    """What the copy needs to know of a table on the target."""

    truncatable: bool
    types: tuple[str, ...]  # as TableSpec.types


async def _plan(
    conn: asyncpg.Connection,
    tables: list[TableSpec],
    targets: dict[tuple[str, str], TargetTable],
    parallel: int,
    limits: DataLimits,
    digests: bool,
) -> list[Piece]:
    """Every table's pieces, largest first across tables. Tables split by page are locked against a
    rewrite (VACUUM FULL, CLUSTER) for the rest of the copy, which would move rows between pages."""
    version = int(await conn.fetchval("SHOW server_version_num"))
    xmin = int(await conn.fetchval("SELECT txid_snapshot_xmin(txid_current_snapshot())")) & 0xFFFFFFFF
    pieces: list[Piece] = []
    for t in tables:
        parts = await ranges.split(conn, t.schema, t.name, t.size, limits.split_table_bytes, parallel, version)
        if len(parts) > 1 and not ranges.by_key_condition(parts[0].where):
            await conn.execute(f"LOCK TABLE ONLY {t.qualified} IN ACCESS SHARE MODE")
        there = targets.get((t.schema, t.name), TargetTable(False, ()))
        whole = len(parts) == 1 and there.truncatable
        # Binary saves both servers rendering and parsing text. Ranges to digest stay text, a row a
        # line, which an unordered digest needs.
        form = "binary" if t.binary_safe and there.types == t.types and (whole or not digests) else "text"
        table = TableCopy(
            t,
            len(parts),
            whole,
            xmin,
            form,
            tuple(r.where for r in parts),
            digest=RowDigest(whole) if digests else None,
        )
        pieces += [Piece(t, r, table) for r in parts]
    pieces.sort(key=lambda p: p.range.size, reverse=True)
    return pieces


async def copy_tables(
    source: ServerConfig,
    target: ServerConfig,
    database: str,
    parallel: int,
    progress: DatabaseProgress,
    snapshot: str | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
    on_copied: Callable[[TableCopy], None] | None = None,
) -> int:
    """Copy every table's rows; returns how many tables were copied. The target tables must exist, empty.

    `snapshot` is one exported elsewhere (a replication slot's); without it, one is exported here.
    `on_copied(table)` is told as each table's copy (every range of it) has committed, with the digest
    of the rows the source sent.
    """
    coordinator = await source.connect(database, data=True)
    try:
        snapshot_tx = coordinator.transaction(isolation="repeatable_read", readonly=True)
        await snapshot_tx.start()
        if snapshot is None:
            snapshot = await coordinator.fetchval("SELECT pg_export_snapshot()")
        else:  # ranges are measured under the snapshot they are copied under
            await coordinator.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
        tables = await list_tables(coordinator)
        async with target.connection(database) as tgt:
            targets = {
                (r["schema"], r["name"]): TargetTable(r["truncatable"], tuple(r["types"]))
                for r in await tgt.fetch(TARGET_TABLES)
            }
        async with waits.watched(source, database, coordinator.get_server_pid(), progress, "planning the copy"):
            pieces = await _plan(coordinator, tables, targets, parallel, limits, on_copied is not None)
        progress.tables_total = len(tables)
        progress.bytes_total = sum(t.size for t in tables)
        progress.ranges_total = sum(1 for p in pieces if p.range.of > 1)
        todo: asyncio.Queue[Piece] = asyncio.Queue()
        for p in pieces:
            todo.put_nowait(p)

        async def worker() -> None:
            src, tgt = await asyncio.gather(source.connect(database, data=True), target.connect(database, data=True))
            piece: Piece | None = None
            pids = (src.get_server_pid(), tgt.get_server_pid())

            async def why() -> str:
                return await _waits(source, target, database, pids)

            try:
                while not todo.empty():
                    piece = todo.get_nowait()
                    tx = src.transaction(isolation="repeatable_read", readonly=True)
                    await tx.start()
                    await src.execute(f"SET TRANSACTION SNAPSHOT {literal(snapshot)}")
                    table = piece.copy
                    # A range's rows count toward its table's digest once they are committed.
                    part = RowDigest(False) if table.digest is not None and not table.whole else None
                    digest = part or table.digest
                    rows = await _stream(src, tgt, piece, progress, limits.stall_seconds, why, digest)
                    progress.rows_copied += rows  # not `+= await`: that reads the total before the stream
                    progress.rows_copying.pop(pids[1], None)  # counted now: no longer as a COPY under way
                    await tx.commit()
                    table.rows += rows
                    if part is not None and table.digest is not None:
                        table.digest.add(part)
                    table.left -= 1
                    progress.ranges_done += piece.range.of > 1
                    if table.left == 0:
                        progress.tables_done += 1
                        if on_copied is not None:
                            on_copied(table)
            except Stalled as stalled:
                assert piece is not None
                src.terminate()
                tgt.terminate()
                raise MigrationError(
                    f"copying {piece.name} of {database} stalled: no data moved for {limits.stall_seconds:g} s; "
                    + stalled.why,
                    "end what blocks it and retry the migration (`[migration] stall_seconds` sets the limit)",
                ) from None
            except BaseException:
                # Mid-COPY a connection cannot even roll back: drop both, the servers clean up.
                src.terminate()
                tgt.terminate()
                raise
            await asyncio.gather(src.close(), tgt.close(), return_exceptions=True)

        async with (
            waits.watched(source, database, waits.pgmig_sessions, progress, "copying data"),
            server_progress.copying(target, database, progress),
            asyncio.TaskGroup() as group,
        ):
            for _ in range(max(1, min(parallel, len(pieces)))):
                group.create_task(worker())
        await snapshot_tx.commit()
        return len(tables)
    finally:
        await coordinator.close()
