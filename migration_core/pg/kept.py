"""Sessions a migration keeps open between its scheduled looks.

A look (replication watched, captured schema changes read, ranges verified, the window forecast) asks each
server a few short questions, several times a minute, for as long as a migration streams. Opening a session
for each question cost the servers far more than the questions: a new backend, its catalog caches and a
SCRAM exchange each time, about 80 ms of the servers' CPU per look and database, where the questions
themselves take a few. So a look borrows a session kept from the look before, and gives it back when its
block ends cleanly.

Kept sessions are pgmig's own (`application_name` pgmig, the customer's limits lifted, as any other), so a
fence leaves them be. One that ended meanwhile (a server restart, a DBA's `pg_terminate_backend`) is noticed
when borrowed (a round trip) and replaced by a new login, which fails the look as any login would when the
server does not answer; one whose block failed, or that is left in a transaction, is closed rather than
kept. A session is lent to one block at a time: a second block asking meanwhile (a nested question, another
flow of the migration) opens one of its own, so borrowing never waits. `close()` ends them all: the
migration is no longer watched here, or pgmig stops.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from migration_core.pg.servers import ConnectionProblem, ServerConfig

CLOSE_SECONDS = 2.0  # a session that does not end politely by then is cut


class SessionEnded(ConnectionProblem):
    """A kept session the server ended while a block had it (after its ping): the block's statement found it
    closed, or asyncpg, reading the server's goodbye between two statements, refused the next one
    (InternalClientError "cannot switch to state …", asyncpg issue #1069). The look may simply run again."""


class KeptSessions:
    """One migration's idle sessions, by server, database and kind (control or data)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, str, bool], asyncpg.Connection] = {}
        self._closed = False

    @contextlib.asynccontextmanager
    async def connection(
        self, server: ServerConfig, database: str, *, data: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """`server.connection(database, data=data)`, on a session kept from an earlier block when one is idle."""
        key = (server.name, server.address, database, data)
        conn = self._idle.pop(key, None)
        if conn is not None and not await _answers(conn, server.connect_timeout):
            conn = None
        if conn is None:
            conn = await server.connect(database, data=data)
        try:
            yield conn
        except BaseException as exc:
            ended = isinstance(exc, asyncpg.InternalClientError) or (
                isinstance(exc, asyncpg.InterfaceError) and conn.is_closed()
            )
            await _close(conn)
            if ended:
                raise SessionEnded(server.name, f"a session was ended by the server while in use ({exc})") from exc
            raise
        if self._closed or key in self._idle or conn.is_closed() or conn.is_in_transaction():
            await _close(conn)
        else:
            self._idle[key] = conn

    async def close(self) -> None:
        """End every idle session; blocks still running close theirs when they end."""
        self._closed = True
        idle, self._idle = list(self._idle.values()), {}
        for conn in idle:
            await _close(conn)


async def _answers(conn: asyncpg.Connection, within: float) -> bool:
    """A kept session still answers: one round trip, far cheaper than a login. A session ended while it was
    kept (its FATAL may not even have been read yet) would fail the look's first question instead."""
    if conn.is_closed():
        return False
    try:
        await conn.execute("SELECT 1", timeout=within)
    except Exception:  # noqa: BLE001 - whatever ended it, a new session replaces it
        conn.terminate()
        return False
    return True


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=CLOSE_SECONDS)
    except Exception:  # noqa: BLE001 - broken or slow: cut it
        conn.terminate()
