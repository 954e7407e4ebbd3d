"""What a long statement is waiting for, in words for the live message: its wait event and who blocks it.

Work on data has no time limit (it may rightly run for hours), so when it seems stuck pgmig says why
instead of failing: a lock held by an idle transaction, old transactions a new slot must outlive.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from migration_core.progress import DatabaseProgress
from migration_core.servers import ConnectionProblem, ServerConfig

WATCH_SECONDS = 5.0  # how often a long statement is looked at

ACTIVITY = (
    "SELECT a.state, a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid) AS blockers, "
    "ARRAY(SELECT format('pid %s (%s%s, user %s%s)', b.pid, coalesce(b.state, b.backend_type), "
    "        CASE WHEN b.xact_start IS NOT NULL "
    "             THEN ', transaction open ' || date_trunc('second', now() - b.xact_start)::text ELSE '' END, "
    "        coalesce(b.usename, '?'), "
    "        CASE WHEN b.application_name <> '' THEN ', app ' || quote_literal(b.application_name) ELSE '' END) "
    "      FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)) ORDER BY b.pid)::text[] AS who "
    "FROM pg_stat_activity a WHERE a.pid = $1"
)


async def describe(conn: asyncpg.Connection, pid: int) -> str:
    """One line on what backend `pid` waits for; empty when it is simply working."""
    row = await conn.fetchrow(ACTIVITY, pid)
    if row is None or row["wait_event_type"] in (None, "CPU", "IO", "IPC") and not row["blockers"]:
        return ""
    event = f"{row['wait_event_type']}/{row['wait_event']}"
    if row["who"]:
        return f"waiting for {event} held by " + "; ".join(row["who"])
    if row["wait_event_type"] == "Client" or row["state"] == "idle":
        return ""
    return f"waiting for {event}"


async def about(server: ServerConfig, database: str, pid: int) -> str:
    """`describe` over a connection of its own; empty if the server cannot even say (it is the problem)."""
    try:
        async with server.connection(database) as conn:
            return await describe(conn, pid)
    except ConnectionProblem as exc:  # the server is what blocks: say so
        return str(exc)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
        return ""


Finder = Callable[[asyncpg.Connection], Awaitable[list[int]]]  # the backends to look at, found anew each time
Report = Callable[[asyncpg.Connection], Awaitable[str]]  # what the server says of the work, asked after the Finder


@contextlib.asynccontextmanager
async def watched(
    server: ServerConfig,
    database: str,
    pids: int | Finder,
    progress: DatabaseProgress | None,
    what: str,
    report: Report | None = None,
) -> AsyncIterator[None]:
    """While the block runs a statement on backend `pids` (or on those `pids(conn)` finds: sessions pgmig
    did not open itself, a walsender, pg_restore's), keep `progress.waiting` saying what they wait for
    (`what`: the statement, in words) and, with `report`, `progress.working` how far the work is; both
    are cleared afterwards."""
    if progress is None:
        yield
        return

    async def look() -> None:
        async with server.connection(database) as conn:
            started = time.monotonic()
            while True:
                await asyncio.sleep(WATCH_SECONDS)
                backends = [pids] if isinstance(pids, int) else await pids(conn)
                whys = [why for b in backends if (why := await describe(conn, b))]
                since = f"({time.monotonic() - started:.0f} s)"
                progress.waiting = f"{what}: {'; '.join(whys)} {since}" if whys else ""
                if report is not None:
                    progress.working = await report(conn)

    watcher = asyncio.create_task(look())
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        progress.waiting = progress.working = ""
