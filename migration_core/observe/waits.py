"""What a long statement is waiting for, in words for the live message: its wait event and who blocks it.

Work on data has no time limit (it may rightly run for hours), so when it seems stuck pgmig says why:
a lock held by an idle transaction, old transactions a new slot must outlive. Where the work is also
under the stall rule (`stall`: the export's and import's client programs, as a COPY stream is), work
that other sessions have kept blocked for `[migration] stall_seconds` without a break fails, naming
them: a person ends them (pgmig never ends a customer's session) and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NamedTuple

import asyncpg

from migration_core.observe.progress import DatabaseProgress
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.state.errors import MigrationError

WATCH_SECONDS = 5.0  # how often a long statement is looked at
_watchers = itertools.count()  # each watcher's own line in the progress (several may watch one database)

ACTIVITY = (
    "SELECT a.state, a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid) AS blockers, "
    "EXISTS (SELECT FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)) "
    "        AND b.application_name IS DISTINCT FROM 'pgmig') AS by_others, "
    "ARRAY(SELECT format('pid %s (%s%s, user %s%s)', b.pid, coalesce(b.state, b.backend_type), "
    "        CASE WHEN b.xact_start IS NOT NULL "
    "             THEN ', transaction open ' || date_trunc('second', now() - b.xact_start)::text ELSE '' END, "
    "        coalesce(b.usename, '?'), "
    "        CASE WHEN b.application_name <> '' THEN ', app ' || quote_literal(b.application_name) ELSE '' END) "
    "      FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid)) ORDER BY b.pid)::text[] AS who "
    "FROM pg_stat_activity a WHERE a.pid = $1"
)


# pgmig's other sessions in the database: those of the client programs it runs (pg_dump, pg_restore, psql),
# which go by its application name too, and its own data sessions
PGMIG_SESSIONS = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'pgmig' "
    "AND backend_type = 'client backend' AND pid <> pg_backend_pid() ORDER BY pid"
)


class Wait(NamedTuple):
    words: str  # what the backend waits for and who holds it; "" when it is simply working
    blocked: bool  # by a session that is not pgmig's own: what the stall rule counts


async def look_at(conn: asyncpg.Connection, pid: int) -> Wait:
    """What backend `pid` waits for, and whether someone else's session keeps it waiting."""
    row = await conn.fetchrow(ACTIVITY, pid)
    if row is None or row["wait_event_type"] in (None, "CPU", "IO", "IPC") and not row["blockers"]:
        return Wait("", False)
    event = f"{row['wait_event_type']}/{row['wait_event']}"
    if row["who"]:
        return Wait(f"waiting for {event} held by " + "; ".join(row["who"]), row["by_others"])
    if row["wait_event_type"] == "Client" or row["state"] == "idle":
        return Wait("", False)
    return Wait(f"waiting for {event}", False)


async def describe(conn: asyncpg.Connection, pid: int) -> str:
    """One line on what backend `pid` waits for; empty when it is simply working."""
    return (await look_at(conn, pid)).words


async def pgmig_sessions(conn: asyncpg.Connection) -> list[int]:
    """A Finder for work pgmig hands to a client program: the program's sessions are found anew each look."""
    return [r["pid"] for r in await conn.fetch(PGMIG_SESSIONS)]


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
    stall: float | None = None,
) -> AsyncIterator[None]:
    """While the block runs a statement on backend `pids` (or on those `pids(conn)` finds: sessions pgmig
    did not open itself, a walsender, pg_restore's), keep `progress.waiting` saying what they wait for
    (`what`: the statement, in words) and, with `report`, `progress.working` how far the work is; both
    are cleared afterwards. With `stall`, work other sessions keep blocked that long without a break is
    stopped (the block is cancelled: a client program is terminated) and fails with a MigrationError
    naming them."""
    if progress is None and stall is None:
        yield
        return
    shown = progress or DatabaseProgress(database)
    owner = asyncio.current_task()
    assert owner is not None
    stalled, key = "", next(_watchers)

    async def look() -> None:
        nonlocal stalled
        every = min(WATCH_SECONDS, stall) if stall else WATCH_SECONDS
        started = time.monotonic()
        await asyncio.sleep(every)  # most work is done by then: its session is never opened
        async with server.connection(database) as conn:
            blocked_since: float | None = None
            while True:
                backends = [pids] if isinstance(pids, int) else await pids(conn)
                async with conn.transaction():  # one now() and one view of the sessions for all of them:
                    # else one transaction's age read a second apart made two waits alike say it twice
                    found = [w for b in backends if (w := await look_at(conn, b)).words]
                now = time.monotonic()
                whys = "; ".join(dict.fromkeys(w.words for w in found))  # sessions waiting alike: said once
                shown.says(key, f"{what}: {whys} ({now - started:.0f} s)" if whys else "", await _report(conn))
                if not any(w.blocked for w in found):
                    blocked_since = None
                elif blocked_since is None:
                    blocked_since = now
                elif stall is not None and now - blocked_since >= stall:
                    stalled = whys
                    owner.cancel()
                    return
                await asyncio.sleep(every)

    async def _report(conn: asyncpg.Connection) -> str:
        return await report(conn) if report is not None else ""

    watcher = asyncio.create_task(look())
    try:
        yield
    except asyncio.CancelledError:
        if stalled and owner.uncancel() == 0:  # the cancel was the watcher's: the work stalled
            raise MigrationError(
                f"{database}: {what} stalled — blocked for more than {stall:g} s, {stalled}",
                "end that session (or let it finish), then retry the migration; `[migration] stall_seconds` "
                "sets how long pgmig waits",
            ) from None
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        shown.unwatch(key)
