"""Turning any exception a migration step raises into one readable reason for the channel."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from pathlib import Path

import asyncpg

from migration_core.pg.kept import SessionEnded
from migration_core.pg.secrets import redact
from migration_core.pg.servers import ConnectionProblem, ServerConfig
from migration_core.pg.tools import ToolError
from migration_core.state.errors import MigrationError
from migration_core.state.models import RetryChanges

log = logging.getLogger(__name__)


def first_cause(exc: BaseException) -> BaseException:
    """Parallel work fails as an exception group, whose first cause is the story."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failure_retry(exc: BaseException) -> RetryChanges:
    """The options a retry needs to get past this failure (none when the fix is elsewhere)."""
    cause = first_cause(exc)
    return cause.retry if isinstance(cause, MigrationError) else RetryChanges()


def unreachable(exc: BaseException) -> bool:
    """Whether the failure is a server that did not answer (gone, refused, its password unreadable, no answer
    in time, a connection that broke) rather than one that answered no."""
    cause = first_cause(exc)
    broke = (ConnectionProblem, ConnectionError, TimeoutError, asyncpg.PostgresConnectionError)
    return isinstance(cause, broke) or _closed_under(cause)


def session_ended(exc: BaseException) -> bool:
    """Whether the failure is a session the server ended under pgmig while it was in use (a DBA's
    `pg_terminate_backend`, a restart), rather than a server that does not answer."""
    cause = first_cause(exc)
    ended = (SessionEnded, asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError)
    return isinstance(cause, ended) or _closed_under(cause)


def _closed_under(cause: BaseException) -> bool:
    """A session the server closed, as asyncpg tells it at the next statement: a closed connection or, having
    read the server's goodbye between two statements, an internal error ("cannot switch to state …", its
    issue #1069)."""
    closed = isinstance(cause, asyncpg.InterfaceError) and "connection is closed" in str(cause)
    return closed or isinstance(cause, asyncpg.InternalClientError)


def expected(exc: BaseException) -> bool:
    """Whether `failure_reason` words the failure fully (a traceback would add nothing), as opposed to a bug."""
    cause = first_cause(exc)
    return unreachable(cause) or isinstance(cause, (MigrationError, asyncpg.PostgresError, ToolError))


def failure_reason(exc: BaseException, migration_id: str, servers: Mapping[str, ServerConfig] | None = None) -> str:
    """A cause a person can act on, never an exception's name alone and never a traceback: that goes to
    the log at debug level, under the migration's id (the caller logs the reason). `servers`: the
    migration's, by role ("source", "target"), to say which one a timeout was waiting for."""
    exc = first_cause(exc)
    log.debug("%s failed", migration_id, exc_info=exc)
    if isinstance(exc, MigrationError):
        return str(exc)
    if isinstance(exc, ConnectionProblem):
        return f"{exc}" + (f" — fix: {exc.fix}" if exc.fix else "")
    if isinstance(exc, (ConnectionError, asyncpg.ConnectionDoesNotExistError)) or _closed_under(exc):
        return redact(
            f"a connection to a server broke ({exc or type(exc).__name__}) — fix: check that both servers are up "
            "and reachable from pgmig, then retry"
        )
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server said: {exc}"
    if isinstance(exc, TimeoutError):  # asyncio's too (its alias); before OSError, of which it is one
        return timed_out(exc, servers or {})
    if isinstance(exc, ToolError):
        return f"{exc.program} failed: {exc.summary}"
    if isinstance(exc, OSError):
        on = f" ({exc.filename})" if exc.filename else ""
        return redact(
            f"pgmig's machine refused: {exc.strerror or exc}{on} — fix: free disk space or fix the permission there, "
            "then retry"
        )
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
    said = redact(f"{type(exc).__name__}: {exc}{at}")
    return f"pgmig failed unexpectedly ({said}): a bug — report it with pgmig's log of {migration_id} at debug level"


def timed_out(exc: BaseException, servers: Mapping[str, ServerConfig]) -> str:
    """A control statement that got no answer within `query_timeout`: which server, and what usually
    keeps a quick catalog read waiting that long. The connection is found where the statement ran."""
    conn = None
    tb = exc.__traceback__
    while tb is not None:
        if isinstance(found := tb.tb_frame.f_locals.get("self"), asyncpg.Connection):
            conn = found
        tb = tb.tb_next
    if conn is None:
        return "a server did not answer in time — fix: check both servers are up and reachable from pgmig, then retry"
    addr = conn._addr  # noqa: SLF001 - asyncpg keeps where it connected only there
    host, port = addr if isinstance(addr, tuple) else (str(addr), 0)
    named = [f"{c.name} (the {role})" for role, c in servers.items() if (c.host, c.port) == (host, port)]
    who = named[0] if named else f"{host}:{port}"
    database = conn._params.database  # noqa: SLF001
    limit = conn._config.command_timeout  # noqa: SLF001
    within = f" within {limit:g} s" if limit else ""
    return (
        f"no answer from {who}{within}, database {database}: a catalog read that should take milliseconds waited "
        "that long — usually for a lock another session holds (an `ALTER TABLE`, `LOCK TABLE` or a transaction "
        "left open), or the server is overloaded — fix: on that server, find the holder "
        "(`SELECT pid, state, query FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(…))`), end it or let "
        "it finish, then retry"
    )
