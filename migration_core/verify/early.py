"""Verification overlapping the copy: each table compared (rows and digest, both sides) as soon as its
copy has committed, while other tables still copy and indexes build.

A migration's user waits for the verified result, not for the copy: checking every table only after
the last one arrived (and its indexes were built) made verifying a third of an offline migration, and
reading the source a second time doubled its cost. So the source side is the digest of what its copy
stream carried (digest.py), and the target side one `COPY … TO STDOUT` of the loaded table, hashed the
same way. The source is then asked, cheaply (no row rendered), whether the table is still as the
copy's snapshot saw it: as many rows, none written by a transaction the snapshot did not see. Writes
the source took after the snapshot, or streams that do not match, are settled as the verify step
would: both sides read now and checksummed (verify.compare_table), so they show as the mismatch they
are. What is compared here is kept with the import step; the verify step then reads only what is
left (sequences, materialized views, anything not compared here).

A table copied as ranges is checked as ranges too, on up to `parallel` sessions a side: the source in
the copy's ranges, the target cut by its own pages or key ranges (verify.check_ranges), which is right
for an unordered digest, a sum over rows however they are grouped: checking a big table then uses the
servers' cores as its copy did.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import asyncpg

from migration_core.pg.servers import ServerConfig
from migration_core.transfer.copy import TableCopy, TableSpec, copy_out, copy_rows, gather_more
from migration_core.transfer.limits import DataLimits
from migration_core.verify.digest import RowDigest
from migration_core.verify.tables import Known, check_ranges, compare_table

# Whether a table still holds exactly the rows a snapshot saw: as many, and none written by a transaction
# that was running or not begun then (xmin at or past the snapshot's xmin: younger, so of smaller age).
# A frozen row far older than 2^31 transactions may look young too; that only costs the full comparison.
UNCHANGED = (
    "SELECT count(*) AS n, coalesce(min(age(t.xmin)) > age($1::text::xid), true) AS unchanged "
    "FROM ONLY {table} t{condition}"
)


class EarlyChecks:
    """`async with EarlyChecks(…) as early:` copy with `on_copied=early.copied`, then `await early.known()`."""

    def __init__(
        self, source: ServerConfig, target: ServerConfig, database: str, parallel: int, limits: DataLimits
    ) -> None:
        self.source, self.target, self.database, self.limits = source, target, database, limits
        self.parallel = max(1, parallel)
        self._todo: asyncio.Queue[TableCopy | None] = asyncio.Queue()
        self._known: Known = {}
        self._task: asyncio.Task | None = None
        self._pools: list[asyncpg.Pool] = []

    async def __aenter__(self) -> "EarlyChecks":
        # A table at a time, on one session a side unless it was split: the checks fill what the copy
        # leaves idle rather than compete with it. The target is read from its first page (no scan
        # synchronized with another one already under way), so a table loaded by one stream reads back
        # in the order it was sent.
        self._pools = [await self.source.pool(self.database, self.parallel)]
        try:
            self._pools.append(await self.target.pool(self.database, self.parallel, {"synchronize_seqscans": "off"}))
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

    def copied(self, table: TableCopy) -> None:
        """The copy of `table` committed (with the digest of what was sent): compare it when free."""
        self._todo.put_nowait(table)

    async def known(self) -> Known:
        """Every table handed over so far, compared."""
        self._todo.put_nowait(None)
        assert self._task is not None
        await self._task
        return self._known

    async def _work(self) -> None:
        while (table := await self._todo.get()) is not None:
            self._known[(table.table.schema, table.table.name)] = await self._compare(table)

    async def _compare(self, copied: TableCopy) -> tuple[int, str, int, str]:
        src_pool, tgt_pool = self._pools
        spec, sent = copied.table, copied.digest
        assert sent is not None, "copy_tables digests what it sends when told of copies"
        key = (spec.schema, spec.name)
        tgt_where = [""]
        if not copied.whole:  # several streams, or a table pgmig could not truncate: no order to rely on
            tgt_where = await check_ranges(tgt_pool, key, await self._target_size(spec), self.parallel, self.limits)
        (now_rows, unchanged), (back_rows, back) = await asyncio.gather(
            self._unchanged(spec, copied.ranges, copied.snapshot_xmin), self._read_back(copied, tgt_where)
        )
        if unchanged and now_rows == copied.rows == back_rows and sent.value == back.value:
            return copied.rows, sent.value, back_rows, back.value
        sizes = (spec.size, await self._target_size(spec))
        return await compare_table(src_pool, tgt_pool, key, "r", sizes, self.parallel, self.limits)

    async def _target_size(self, spec: TableSpec) -> int:
        size = await self._pools[1].fetchval("SELECT pg_relation_size(to_regclass($1))", spec.qualified)
        return int(size or 0)

    async def _unchanged(self, spec: TableSpec, where: tuple[str, ...], snapshot_xmin: int) -> tuple[int, bool]:
        """The source's rows of `spec` now (in the copy's own ranges, open at both ends), and whether all of
        them are older than the copy's snapshot."""
        sqls = [UNCHANGED.format(table=spec.qualified, condition=f" WHERE {w}" if w else "") for w in where]
        found = await asyncio.gather(*(self._pools[0].fetchrow(sql, str(snapshot_xmin)) for sql in sqls))
        return sum(r["n"] for r in found), all(r["unchanged"] for r in found)

    async def _read_back(self, copied: TableCopy, where: list[str]) -> tuple[int, RowDigest]:
        """The target's rows of a table (how many, and their digest), rendered as the copy rendered them,
        read as the ranges `where` (one whole-table read when `[""]`)."""
        parts = await asyncio.gather(*(self._read_range(copied, w) for w in where))
        rows, back = parts[0]
        for more_rows, more in parts[1:]:
            rows += more_rows
            back.add(more)
        return rows, back

    async def _read_range(self, copied: TableCopy, where: str) -> tuple[int, RowDigest]:
        spec, form = copied.table, copied.format
        back = RowDigest(copied.whole)

        async def take(chunk: bytes) -> None:
            back.update(chunk)
            await gather_more(chunk)

        async with self._pools[1].acquire() as conn:
            tag = await copy_out(conn, spec, where, take, form)
        return copy_rows(tag), back


def encode(known: Known) -> list[list]:
    """For a step's JSON data."""
    return [[*key, *values] for key, values in sorted(known.items())]


def decode(rows: list[list] | None) -> Known:
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows or []}
