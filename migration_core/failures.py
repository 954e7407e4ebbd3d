"""Turning any exception a migration step raises into one readable reason for the channel."""

from __future__ import annotations

import logging

import asyncpg

from migration_core.errors import MigrationError
from migration_core.secrets import redact
from migration_core.servers import ConnectionProblem

log = logging.getLogger(__name__)


def failure_reason(exc: BaseException, migration_id: str) -> str:
    """Parallel work fails as an exception group, whose first cause is the story."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, MigrationError):
        return str(exc)
    if isinstance(exc, ConnectionProblem):
        return f"{exc}" + (f" — fix: {exc.fix}" if exc.fix else "")
    if isinstance(exc, asyncpg.PostgresError):
        return f"the server said: {exc}"
    log.error("migration %s failed unexpectedly", migration_id, exc_info=exc)
    return redact(f"{type(exc).__name__}: {exc}")
