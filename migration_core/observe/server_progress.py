"""How far the index builds, ANALYZEs and COPYs pgmig started on a server are, as the server reports them
(`pg_stat_progress_create_index`, `pg_stat_progress_analyze`, `pg_stat_progress_copy`).

Index builds and ANALYZE have no stream pgmig could count bytes of: pg_restore builds the indexes and
constraints after the data, and on a table of tens of gigabytes one primary key takes many minutes. The
live message then says which table, which phase and how much of it is done, instead of a phase name
that does not move. A COPY's rows are counted by its command tag only once it ends: meanwhile the
target's count of the rows it took keeps the rows shown moving with the bytes. Only pgmig's own
sessions (application_name `pgmig`, which its client programs are given too) in the database are
reported; what any of them waits for is shown too (waits.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from migration_core.observe import waits
from migration_core.observe.progress import DatabaseProgress
from migration_core.pg.servers import ServerConfig

STATEMENTS = """
SELECT p.pid, 'index' AS work, p.relid::regclass::text AS relation, p.phase,
       CASE WHEN p.phase LIKE '%scanning%' THEN p.blocks_done ELSE p.tuples_done END AS done,
       CASE WHEN p.phase LIKE '%scanning%' THEN p.blocks_total ELSE p.tuples_total END AS total
FROM pg_stat_progress_create_index p JOIN pg_stat_activity a ON a.pid = p.pid
WHERE p.datname = current_database() AND a.application_name = 'pgmig'
UNION ALL
SELECT p.pid, 'analyze', p.relid::regclass::text, p.phase,
       CASE WHEN p.phase LIKE 'acquiring%' THEN p.sample_blks_scanned END,
       CASE WHEN p.phase LIKE 'acquiring%' THEN p.sample_blks_total END
FROM pg_stat_progress_analyze p JOIN pg_stat_activity a ON a.pid = p.pid
WHERE p.datname = current_database() AND a.application_name = 'pgmig'
UNION ALL
SELECT a.pid, NULL, NULL, NULL, NULL, NULL FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.application_name = 'pgmig' AND a.backend_type = 'client backend'
  AND a.pid <> pg_backend_pid()
  AND a.pid NOT IN (SELECT pid FROM pg_stat_progress_create_index UNION ALL SELECT pid FROM pg_stat_progress_analyze)
ORDER BY 1
"""

# The rows each of pgmig's COPY … FROM STDIN sessions took so far (PostgreSQL 14+)
COPYING = """
SELECT p.pid, p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid
WHERE p.datname = current_database() AND p.command = 'COPY FROM' AND a.application_name = 'pgmig'
"""


async def _statements(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    try:
        return await conn.fetch(STATEMENTS)
    except asyncpg.UndefinedTableError:  # before PostgreSQL 13: nothing to report
        return []


def words(row: asyncpg.Record | dict) -> str:
    """One statement's clause: `index on public.t: building index: scanning table 45%`."""
    what = "index on" if row["work"] == "index" else "ANALYZE of"
    share = f" {100 * row['done'] // row['total']}%" if row["total"] else ""
    return f"{what} {row['relation']}: {row['phase']}{share}"


def watched(
    server: ServerConfig, database: str, progress: DatabaseProgress, what: str, stall: float | None = None
) -> contextlib.AbstractAsyncContextManager[None]:
    """While the block runs (pg_restore's post-data, ANALYZE), `progress.working` says how far each of
    pgmig's index builds and ANALYZEs in `database` is, and `progress.waiting` what any of pgmig's
    sessions there waits for (a constraint pg_restore adds builds no index, yet waits for locks). One
    query a look answers both: the watcher asks for the backends, then for the report, each time.
    `stall`: the stall rule (waits.watched)."""
    seen: list[asyncpg.Record] = []

    async def backends(conn: asyncpg.Connection) -> list[int]:
        seen[:] = await _statements(conn)
        return [r["pid"] for r in seen]

    async def report(conn: asyncpg.Connection) -> str:
        return "; ".join(words(r) for r in seen if r["work"])

    return waits.watched(server, database, backends, progress, what, report, stall)


@contextlib.asynccontextmanager
async def copying(server: ServerConfig, database: str, progress: DatabaseProgress) -> AsyncIterator[None]:
    """While the block copies rows into `database` on `server` (the target), `progress.rows_copying` holds
    how many rows each COPY under way took so far, and `progress.waiting` what pgmig's sessions there wait
    for. Before PostgreSQL 14 the server cannot say: rows then count as each COPY ends."""

    async def report(conn: asyncpg.Connection) -> str:
        with contextlib.suppress(asyncpg.UndefinedTableError):
            progress.rows_copying = {r["pid"]: r["tuples_processed"] for r in await conn.fetch(COPYING)}
        return ""

    try:
        async with waits.watched(server, database, waits.pgmig_sessions, progress, "copying data", report):
            yield
    finally:
        progress.rows_copying = {}
