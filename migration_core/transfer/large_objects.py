"""Large objects: copied by oid, since COPY of tables and logical replication both skip them, with
their comment, owner and privileges (pg_dump's BLOB entries carry the same three).

Memory stays bounded whatever the objects' sizes: an object of `CHUNK` bytes or more streams through
in chunks (`lo_get` with an offset on the source, `lo_put` on the target) in a transaction of its own;
smaller ones are read many per query (about `CHUNK` bytes at a time) and created many per target
transaction (`BATCH_OBJECTS` or `BATCH_BYTES`). `parallel` connection pairs share the work, largest
objects first. Each read and write must move within `stall_seconds`: a stream is bounded by its
progress, never by the clock."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TypeAlias, TypeVar

import asyncpg

from migration_core.changes import large_objects as written
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg.servers import ServerConfig
from migration_core.state.errors import MigrationError
from migration_core.transfer.limits import DEFAULT_LIMITS, DataLimits

CHUNK = 1 << 20  # bytes per read and write of one object; objects this size or larger are streamed
BATCH_OBJECTS = 1000  # small objects per target transaction…
BATCH_BYTES = 64 << 20  # …and their bytes
INV_READ = 0x40000

# Each object's size comes from a seek to its end (no read of its pages; needs only SELECT on it, as
# reading it does). Each descriptor is closed in its own row (OFFSET 0 keeps open, seek and close in that
# order): leaving 100,000 open until the commit makes the listing quadratic.
METADATA = (
    "SELECT oid, owner, comment, grants, size, lo_close(fd) FROM ("
    " SELECT oid, owner, comment, grants, fd, lo_lseek64(fd, 0, 2) AS size FROM ("
    "  SELECT m.oid, pg_get_userbyid(m.lomowner) AS owner, "
    "  obj_description(m.oid, 'pg_largeobject') AS comment, "
    "  ARRAY(SELECT (CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END) || '=' || "
    "        a.privilege_type || CASE WHEN a.is_grantable THEN '*' ELSE '' END "
    "        FROM aclexplode(m.lomacl) a WHERE a.grantee <> m.lomowner ORDER BY 1)::text[] AS grants, "
    f"  lo_open(m.oid, {INV_READ}) AS fd "
    "  FROM pg_largeobject_metadata m OFFSET 0) opened OFFSET 0) sized"
)
READ_CHUNK = "SELECT lo_get($1::oid, $2::bigint, $3::int)"
# One byte more than the object had: a longer answer means it grew since it was listed.
READ_MANY = "SELECT u.o, lo_get(u.o, 0, u.n) AS data FROM unnest($1::oid[], $2::int[]) AS u(o, n)"

T = TypeVar("T")
Unit: TypeAlias = "asyncpg.Record | list[asyncpg.Record]"  # one object to stream, or a batch of small ones


async def copy(
    source: ServerConfig,
    target: ServerConfig,
    database: str,
    *,
    keep_owners: bool = True,
    parallel: int = 2,
    progress: DatabaseProgress | None = None,
    limits: DataLimits = DEFAULT_LIMITS,
) -> int:
    """Create (or replace) every source large object on the target with the same oid, content and comment;
    with `keep_owners` (the roles exist on the target) also its owner and privileges. Returns how many."""
    conns: list[asyncpg.Connection] = []
    ok = False
    try:
        first = await source.connect(database, data=True)
        conns.append(first)
        rows = await _bounded(_listing(first), limits, f"large objects of {database}", "listing them on the source")
        if not rows:
            ok = True
            return 0
        wanted = max(1, parallel)
        units = _plan(rows, wanted)
        workers = min(wanted, len(units))
        others = await _open([source] * (workers - 1) + [target] * workers, database, conns)
        pairs = list(zip([first, *others[: workers - 1]], others[workers - 1 :], strict=True))
        tally = _Tally(len(rows), progress)
        queue: deque[Unit] = deque(units)
        await _run([_Worker(src, tgt, source, target, keep_owners, limits, tally).run(queue) for src, tgt in pairs])
        ok = True
        return len(rows)
    finally:
        await _release(conns, ok, limits)


async def _listing(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await conn.fetch(METADATA)


def _plan(rows: list[asyncpg.Record], workers: int) -> list[Unit]:
    """Largest first: each large object alone, then the small ones in batches (split so every worker
    gets one when there are few)."""
    by_size = sorted(rows, key=lambda r: (-r["size"], r["oid"]))
    units: list[Unit] = [r for r in by_size if r["size"] >= CHUNK]
    small = [r for r in by_size if r["size"] < CHUNK]
    per_batch = max(1, min(BATCH_OBJECTS, -(-len(small) // workers)))
    batch: list[asyncpg.Record] = []
    size = 0
    for r in small:
        if batch and (len(batch) >= per_batch or size + r["size"] > BATCH_BYTES):
            units.append(batch)
            batch, size = [], 0
        batch.append(r)
        size += r["size"]
    if batch:
        units.append(batch)
    return units


def _groups(rows: list[asyncpg.Record]) -> list[list[asyncpg.Record]]:
    """Small objects in reads of about CHUNK bytes."""
    groups: list[list[asyncpg.Record]] = []
    group: list[asyncpg.Record] = []
    size = 0
    for r in rows:
        if group and size + r["size"] + 1 > CHUNK:
            groups.append(group)
            group, size = [], 0
        group.append(r)
        size += r["size"] + 1
    if group:
        groups.append(group)
    return groups


async def _open(servers: list[ServerConfig], database: str, conns: list[asyncpg.Connection]) -> list:
    """Data connections to `servers`, all at once; every one that opened is in `conns`, to be released."""
    tasks = [asyncio.ensure_future(s.connect(database, data=True)) for s in servers]
    try:
        await asyncio.wait(tasks)
    finally:  # also when cancelled meanwhile: what opened is released with the rest
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conns.extend(t.result() for t in tasks if not t.cancelled() and t.exception() is None)
    for t in tasks:
        if (exc := t.exception()) is not None:
            raise exc
    return [t.result() for t in tasks]


async def _run(jobs: list[Awaitable[None]]) -> None:
    """All workers to the end, or the first failure, the others cancelled."""
    tasks = [asyncio.ensure_future(j) for j in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if not t.cancelled() and (exc := t.exception()) is not None:
            raise exc


async def _release(conns: list[asyncpg.Connection], ok: bool, limits: DataLimits) -> None:
    """Close the connections after success; on failure end them at once (a stream may be stuck on one)."""
    for conn in conns:
        if not ok:
            conn.terminate()
            continue
        try:
            await conn.close(timeout=limits.stall_seconds)
        except Exception:
            conn.terminate()


async def _bounded(aw: Awaitable[T], limits: DataLimits, what: str, doing: str, server: str = "") -> T:
    try:
        return await asyncio.wait_for(aw, limits.stall_seconds)
    except TimeoutError:
        where = f"the {server} server" if server else "the server"
        raise MigrationError(
            f"{what}: no progress for {limits.stall_seconds:g} s {doing}",
            f"check {where}: a session holding a lock (pg_stat_activity), or a network path that stopped; then retry",
        ) from None


class _Tally:
    def __init__(self, total: int, progress: DatabaseProgress | None) -> None:
        self.done, self.total, self.progress = 0, total, progress
        self.show()

    def add(self, n: int) -> None:
        self.done += n
        self.show()

    def show(self) -> None:
        if self.progress is not None:
            self.progress.phase = f"large objects {self.done}/{self.total}"


class _Worker:
    """One source and one target connection, taking units off the shared queue."""

    def __init__(
        self,
        src: asyncpg.Connection,
        tgt: asyncpg.Connection,
        source: ServerConfig,
        target: ServerConfig,
        keep_owners: bool,
        limits: DataLimits,
        tally: _Tally,
    ) -> None:
        self.src, self.tgt, self.source, self.target = src, tgt, source, target
        self.keep_owners, self.limits, self.tally = keep_owners, limits, tally

    async def run(self, queue: deque[Unit]) -> None:
        while queue:
            unit = queue.popleft()
            if isinstance(unit, list):
                await self._batch(unit)
            else:
                await self._stream(unit)

    def _read(self, aw: Awaitable[T], what: str) -> Awaitable[T]:
        return _bounded(aw, self.limits, what, "reading from the source", self.source.name)

    def _write(self, aw: Awaitable[T], what: str) -> Awaitable[T]:
        return _bounded(aw, self.limits, what, "writing to the target", self.target.name)

    async def _stream(self, r: asyncpg.Record) -> None:
        """One large object in a transaction of its own on each side (one snapshot of it on the source)."""
        oid = r["oid"]
        what = f"large object {oid}"
        read_tx = self.src.transaction(isolation="repeatable_read", readonly=True)
        write_tx = self.tgt.transaction()
        await self._read(read_tx.start(), what)
        await self._write(write_tx.start(), what)
        await self._write(written.unlink(self.tgt, [oid]), what)
        await self._write(written.create(self.tgt, oid), what)
        await self._rest(oid, 0)
        await self._metadata([r])
        await self._read(read_tx.commit(), what)
        await self._write(write_tx.commit(), what)
        self.tally.add(1)

    async def _rest(self, oid: int, offset: int) -> None:
        """Copy the object from `offset` on, a chunk at a time, reading the next while writing one."""
        what = f"large object {oid}"
        chunk = CHUNK
        data = await self._read(self.src.fetchval(READ_CHUNK, oid, offset, chunk), what)
        while data:
            writing = self._write(written.write(self.tgt, oid, offset, data), what)
            if len(data) < chunk:
                await writing
                return
            offset += len(data)
            _, data = await asyncio.gather(writing, self._read(self.src.fetchval(READ_CHUNK, oid, offset, chunk), what))

    async def _batch(self, rows: list[asyncpg.Record]) -> None:
        """Small objects, all in one target transaction, read about CHUNK bytes per query."""
        oids = [r["oid"] for r in rows]
        what = f"large object {oids[0]}" + (f" (and {len(oids) - 1} more in its batch)" if len(oids) > 1 else "")
        tx = self.tgt.transaction()
        await self._write(tx.start(), what)
        await self._write(written.unlink(self.tgt, oids), what)
        for group in _groups(rows):
            await self._group(group)
        await self._write(tx.commit(), what)
        self.tally.add(len(rows))

    async def _group(self, rows: list[asyncpg.Record]) -> None:
        oids = [r["oid"] for r in rows]
        asked = [r["size"] + 1 for r in rows]
        what = f"large object {oids[0]}" + (f" (and {len(oids) - 1} more read with it)" if len(oids) > 1 else "")
        found = {x["o"]: x["data"] for x in await self._read(self.src.fetch(READ_MANY, oids, asked), what)}
        contents = [found[o] for o in oids]
        del found
        await self._write(written.create_many(self.tgt, oids, contents), what)
        grown = [(o, len(c)) for o, c, n in zip(oids, contents, asked, strict=True) if len(c) >= n]
        del contents
        for oid, offset in grown:  # it grew since it was listed: the rest streams
            await self._rest(oid, offset)
        await self._metadata(rows)

    async def _metadata(self, rows: list[asyncpg.Record]) -> None:
        """Comments, owners and grants of objects just created: all in one round trip under a savepoint
        when nothing is refused, else statement by statement."""
        statements = [sql for r in rows for sql in written.metadata(r, self.keep_owners)]
        if not statements:
            return
        what = f"large object {rows[0]['oid']}"
        try:
            await self._write(written.apply_together(self.tgt, statements), what)
            return
        except written.REFUSED:
            await self._write(written.roll_back_together(self.tgt), what)
        for r in rows:
            await self._write(written.apply_each(self.tgt, r, self.keep_owners), f"large object {r['oid']}")
