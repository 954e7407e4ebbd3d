"""How far the index builds and ANALYZEs pgmig started on a server are, as the server reports them
(`pg_stat_progress_create_index`, `pg_stat_progress_analyze`).

They have no stream pgmig could count bytes of: pg_restore builds the indexes and constraints after the
data, and on a table of tens of gigabytes one primary key takes many minutes. The live message then
says which table, which phase and how much of it is done, instead of a phase name that does not move.
Only pgmig's own sessions (application_name `pgmig`, which pg_restore is given too) in the database
are reported.
"""

from __future__ import annotations

import contextlib

import asyncpg

from migration_core import waits
from migration_core.progress import DatabaseProgress
from migration_core.servers import ServerConfig

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
ORDER BY 1
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
    server: ServerConfig, database: str, progress: DatabaseProgress, what: str
) -> contextlib.AbstractAsyncContextManager[None]:
    """While the block runs (pg_restore's post-data, ANALYZE), `progress.working` says how far each of
    pgmig's index builds and ANALYZEs in `database` is, and `progress.waiting` what they wait for. One
    query a look answers both: the watcher asks for the backends, then for the report, each time."""
    seen: list[asyncpg.Record] = []

    async def backends(conn: asyncpg.Connection) -> list[int]:
        seen[:] = await _statements(conn)
        return [r["pid"] for r in seen]

    async def report(conn: asyncpg.Connection) -> str:
        return "; ".join(words(r) for r in seen)

    return waits.watched(server, database, backends, progress, what, report)
